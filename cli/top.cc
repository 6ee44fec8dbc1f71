#include "top.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <ctime>
#include <thread>

namespace cachet::cli {

namespace {

using SteadyClock = std::chrono::steady_clock;
using Json = nlohmann::ordered_json;

constexpr std::chrono::milliseconds kShortestInterval{10};

// What one STATS says, by name; fields the daemon did not send stay 0.
struct Sample {
  SteadyClock::time_point taken;
  int64_t requests = 0, errors = 0, hits = 0, misses = 0, sets = 0, evictions = 0, entries = 0, bytes = 0,
          capacity_bytes = 0, memory_bytes = 0, connected_clients = 0, uptime_seconds = 0;
};

Result<Sample> TakeSample(Client& client) {
  auto stats = client.Stats();
  if (!stats) return tl::unexpected(stats.error());
  Sample s;
  s.taken = SteadyClock::now();
  const std::pair<const char*, int64_t*> fields[] = {
      {"requests", &s.requests},
      {"errors", &s.errors},
      {"hits", &s.hits},
      {"misses", &s.misses},
      {"sets", &s.sets},
      {"evictions", &s.evictions},
      {"entries", &s.entries},
      {"bytes", &s.bytes},
      {"capacity_bytes", &s.capacity_bytes},
      {"memory_bytes", &s.memory_bytes},
      {"connected_clients", &s.connected_clients},
      {"uptime_seconds", &s.uptime_seconds},
  };
  for (const auto& [name, value] : *stats) {
    for (const auto& [field, into] : fields) {
      if (name == field) *into = value;
    }
  }
  return s;
}

// The figures of one refresh: rates over the interval since `before`.
struct Row {
  double seconds = 0;
  double ops = 0, hits = 0, misses = 0, sets = 0, evictions = 0, errors = 0;  // per second
  std::optional<double> hit_ratio, hit_ratio_total;                           // none without lookups
  Sample now;
};

Row Compare(const Sample& before, const Sample& now) {
  Row r;
  r.now = now;
  r.seconds = std::chrono::duration<double>(now.taken - before.taken).count();
  const double dt = r.seconds > 0 ? r.seconds : 1;
  // Counters only grow while the daemon runs; a restart between samples
  // starts them again, and the rate is then taken from zero.
  auto rate = [&](int64_t b, int64_t n) { return static_cast<double>(n >= b ? n - b : n) / dt; };
  // The daemon counts the STATS it answers, so each interval holds one of
  // ours: not shown.
  r.ops = std::max(0.0, rate(before.requests, now.requests) - 1 / dt);
  r.hits = rate(before.hits, now.hits);
  r.misses = rate(before.misses, now.misses);
  r.sets = rate(before.sets, now.sets);
  r.evictions = rate(before.evictions, now.evictions);
  r.errors = rate(before.errors, now.errors);
  if (r.hits + r.misses > 0) r.hit_ratio = r.hits / (r.hits + r.misses);
  if (now.hits + now.misses > 0) {
    r.hit_ratio_total = static_cast<double>(now.hits) / static_cast<double>(now.hits + now.misses);
  }
  return r;
}

double Round(double v, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(v * scale) / scale;
}

Json ToJson(const Row& r) {
  const int64_t unix_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  Json j;
  j["unix_time_ms"] = unix_ms;
  j["interval_seconds"] = Round(r.seconds, 3);
  j["ops_per_second"] = Round(r.ops, 1);
  j["hits_per_second"] = Round(r.hits, 1);
  j["misses_per_second"] = Round(r.misses, 1);
  j["hit_ratio"] = r.hit_ratio ? Json(Round(*r.hit_ratio, 4)) : Json(nullptr);
  j["hit_ratio_total"] = r.hit_ratio_total ? Json(Round(*r.hit_ratio_total, 4)) : Json(nullptr);
  j["sets_per_second"] = Round(r.sets, 1);
  j["evictions_per_second"] = Round(r.evictions, 1);
  j["errors_per_second"] = Round(r.errors, 1);
  j["entries"] = r.now.entries;
  j["bytes"] = r.now.bytes;
  j["capacity_bytes"] = r.now.capacity_bytes;
  j["memory_bytes"] = r.now.memory_bytes;
  j["connected_clients"] = r.now.connected_clients;
  return j;
}

std::string Percent(const std::optional<double>& ratio) {
  if (!ratio) return "-";
  char text[16];
  std::snprintf(text, sizeof text, "%.1f%%", *ratio * 100);
  return text;
}

std::string Mib(int64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return text;
}

std::string Clock() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char text[16];
  std::strftime(text, sizeof text, "%H:%M:%S", &local);
  return text;
}

void PrintLine(FILE* out, const Row& r, bool header) {
  if (header) {
    std::fprintf(out, "%-8s %10s %7s %7s %9s %9s %8s %11s %21s %7s\n", "time", "ops/s", "hit%", "hit%all", "sets/s",
                 "evict/s", "errors/s", "entries", "memory (items/cap)", "clients");
  }
  const std::string memory = Mib(r.now.bytes) + "/" + Mib(r.now.capacity_bytes);
  std::fprintf(out, "%-8s %10.0f %7s %7s %9.0f %9.0f %8.0f %11lld %21s %7lld\n", Clock().c_str(), r.ops,
               Percent(r.hit_ratio).c_str(), Percent(r.hit_ratio_total).c_str(), r.sets, r.evictions, r.errors,
               static_cast<long long>(r.now.entries), memory.c_str(), static_cast<long long>(r.now.connected_clients));
}

void Redraw(FILE* out, const Row& r, const TopOptions& options) {
  const double used = r.now.capacity_bytes > 0
                          ? 100.0 * static_cast<double>(r.now.bytes) / static_cast<double>(r.now.capacity_bytes)
                          : 0;
  const int64_t up = r.now.uptime_seconds;
  std::fprintf(out, "\x1b[H\x1b[2J");  // home, clear
  std::fprintf(out, "cachetd %s   up %lldd %02lld:%02lld:%02lld   %s, every %.2g s (Ctrl-C quits)\n\n",
               options.endpoint.c_str(), static_cast<long long>(up / 86400), static_cast<long long>(up / 3600 % 24),
               static_cast<long long>(up / 60 % 60), static_cast<long long>(up % 60), Clock().c_str(),
               static_cast<double>(options.interval.count()) / 1000);
  std::fprintf(out, "  ops/s        %12.0f     errors/s     %12.0f\n", r.ops, r.errors);
  std::fprintf(out, "  hit ratio    %12s     since start  %12s\n", Percent(r.hit_ratio).c_str(),
               Percent(r.hit_ratio_total).c_str());
  std::fprintf(out, "  hits/s       %12.0f     misses/s     %12.0f\n", r.hits, r.misses);
  std::fprintf(out, "  sets/s       %12.0f     evictions/s  %12.0f\n", r.sets, r.evictions);
  std::fprintf(out, "  entries      %12lld     clients      %12lld\n", static_cast<long long>(r.now.entries),
               static_cast<long long>(r.now.connected_clients));
  std::fprintf(out, "  memory       %s of %s in items (%.0f%%), segment %s\n", Mib(r.now.bytes).c_str(),
               Mib(r.now.capacity_bytes).c_str(), used, Mib(r.now.memory_bytes).c_str());
}

}  // namespace

std::optional<std::chrono::milliseconds> ParseInterval(const std::string& text) {
  std::string number = text;
  double scale = 1000;  // a bare number is seconds
  auto ends_with = [&](const char* suffix) {
    const std::string s = suffix;
    return number.size() > s.size() && number.compare(number.size() - s.size(), s.size(), s) == 0;
  };
  if (ends_with("ms")) {
    number.resize(number.size() - 2);
    scale = 1;
  } else if (ends_with("s")) {
    number.resize(number.size() - 1);
  }
  if (number.empty() || number.find_first_not_of("0123456789.") != std::string::npos) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(number.c_str(), &end);
  if (end == nullptr || *end != '\0' || !std::isfinite(v) || v * scale > 86'400'000) return std::nullopt;
  const std::chrono::milliseconds ms(static_cast<int64_t>(std::llround(v * scale)));
  if (ms < kShortestInterval) return std::nullopt;
  return ms;
}

int RunTop(Client& client, const TopOptions& options, FILE* out, const std::function<int(const Error&)>& fail) {
  auto first = TakeSample(client);
  if (!first) return fail(first.error());
  Sample before = *first;
  const SteadyClock::time_point start = before.taken;
  for (int64_t i = 1; options.count == 0 || i <= options.count; ++i) {
    std::this_thread::sleep_until(start + i * options.interval);
    auto now = TakeSample(client);
    if (!now) return fail(now.error());
    const Row row = Compare(before, *now);
    if (options.json) {
      std::fprintf(out, "%s\n", ToJson(row).dump().c_str());
    } else if (options.redraw) {
      Redraw(out, row, options);
    } else {
      PrintLine(out, row, i == 1);
    }
    std::fflush(out);
    before = *now;
  }
  return 0;
}

}  // namespace cachet::cli
