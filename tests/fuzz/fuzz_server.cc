// Fuzz target: cachetd's request handler (Server::Answer, daemon/server.h)
// answering request frames against a private cache, as its loop answers
// a client, with a rate-limit policy so RATELIMIT decides too. The server
// is made and bound once per process, on an ipc endpoint, segment and
// policy file named by the pid (never tcp, never the default names); each
// input gets a fresh cache, so an input replays alone.
//
// Input: up to kMaxFrames request frames separated by the byte 0xc1
// (msgpack's one unused byte). Every reply must decode as a reply to the
// same request id.
#include <unistd.h>

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "cachet/counter_table.h"
#include "config.h"
#include "protocol.h"
#include "server.h"

namespace {

using namespace cachet;

constexpr char kSeparator = '\xc1';
constexpr size_t kMaxFrames = 16;
constexpr const char* kPolicy =
    "[tier.free]\n"
    "per_second = 5/1s fixed_window\n"
    "per_minute = 20/1m sliding_window\n"
    "[tier.paid]\n"
    "burst = 10/1s token_bucket burst=20\n"
    "exact = 30/1m sliding_log\n"
    "[override.vip]\n"
    "per_second = 1000/1s\n";

[[noreturn]] void Fail(const std::string& why) {
  std::fprintf(stderr, "fuzz_server: %s\n", why.c_str());
  std::abort();
}

struct Daemon {
  const std::string tag = "cachet-fuzz-" + std::to_string(getpid());
  const std::string policy_path = "/tmp/" + tag + ".policy";
  const std::string ipc_path = "/tmp/" + tag + ".sock";
  daemon::DaemonConfig config;
  daemon::Signals signals;
  std::unique_ptr<daemon::Server> server;

  Daemon() {
    std::ofstream(policy_path) << kPolicy;
    // The command line a Reload re-reads, one flag and its value a line.
    // clang-format off
    const std::vector<std::string> args = {"--segment", tag,
                                           "--ipc", "ipc://" + ipc_path,
                                           "--tcp", "",
                                           "--rate-limit-policy", policy_path,
                                           "--capacity", "64KiB",
                                           "--max-entries", "512",
                                           "--max-value-size", "4KiB",
                                           "--rate-limit-capacity", "1024",
                                           "--log-level", "off"};
    // clang-format on
    auto parsed = daemon::ParseConfig(args);
    if (!parsed) Fail(parsed.error().ToString());
    config = parsed->config;
    auto log = std::make_shared<spdlog::logger>("cachetd-fuzz", std::make_shared<spdlog::sinks::null_sink_mt>());
    server = std::make_unique<daemon::Server>(config, args, log, signals);
    if (auto bound = server->Bind(); !bound) Fail(bound.error().ToString());
  }
  ~Daemon() {
    server.reset();
    (void)CounterTable::Remove(config.RateLimitSegment());
    unlink(policy_path.c_str());
    unlink(ipc_path.c_str());
  }
};

// What the handler wrote must be one whole reply to `request`.
void CheckReply(std::string_view request, const wire::Writer& out) {
  auto reply = wire::DecodeReply(out.data(), out.size());
  if (!reply) Fail("a reply that does not decode: " + reply.error().ToString());
  const auto id = wire::PeekRequestId(request.data(), request.size());
  if (id && reply->id != *id) {
    Fail("reply to request " + std::to_string(*id) + " carries id " + std::to_string(reply->id));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Daemon daemon;
  static wire::Writer out;
  auto cache = Cache::CreatePrivate(daemon.config.CacheOptionsFor());
  if (!cache) Fail(cache.error().ToString());
  daemon.server->ServeInProcess(std::move(*cache));
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  for (size_t n = 0; n < kMaxFrames && !rest.empty(); ++n) {
    const size_t end = std::min(rest.find(kSeparator), rest.size());
    const std::string_view frame = rest.substr(0, end);
    rest.remove_prefix(std::min(end + 1, rest.size()));
    if (frame.size() > daemon.config.EffectiveMaxFrame()) continue;
    daemon.server->Answer(frame.data(), frame.size(), out);
    CheckReply(frame, out);
  }
  return 0;
}
