// cachectl: the operators' command line for cachetd.
//
// Exit codes (stable, for scripts):
//   0  success
//   1  the key was not found (get, ttl, del, expire)
//   2  usage error, or the daemon refused the input (too large, not an integer, ...)
//   3  cannot reach the daemon (unavailable or timed out)
//   4  any other error reported by the daemon
//
// --json prints one JSON document per command. Keys and values are bytes: one
// that is valid UTF-8 is printed as a JSON string ("key", "value"); one that
// is not is printed in base64 under the name with "_base64" appended
// ("key_base64", "value_base64"), so every byte comes back as it was.
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cachet/client.h"

namespace {

using cachet::Error;
using cachet::ErrorCode;

constexpr int kOk = 0, kNotFound = 1, kUsage = 2, kUnreachable = 3, kServerError = 4;

struct Command {
  const char* name;
  const char* args;
  const char* summary;
};

const Command kCommands[] = {
    {"ping", "", "check that the daemon answers"},
    {"get", "KEY", "print the value of KEY"},
    {"set", "KEY VALUE [--ttl MS] [--nx | --xx]", "store VALUE at KEY (--nx: only if absent, --xx: only if present)"},
    {"del", "KEY", "delete KEY"},
    {"ttl", "KEY", "print the remaining time to live of KEY in ms (-1: none)"},
    {"expire", "KEY MS", "set the time to live of KEY (MS <= 0 deletes it)"},
    {"incr", "KEY [--by N] [--ttl MS]", "add N (default 1) to the integer at KEY; --ttl applies when KEY is created"},
    {"keys", "[PATTERN]", "list keys matching a glob PATTERN (default *), walking the whole cache"},
    {"stats", "", "print the daemon's counters"},
    {"reload", "", "make the daemon re-read its configuration file (like SIGHUP)"},
    {"flush", "", "delete every key"},
};

void PrintUsage(FILE* out) {
  std::fprintf(out,
               "usage: cachectl [--endpoint E] [--json] [--timeout MS] COMMAND [ARGS]\n\n"
               "  --endpoint E   daemon endpoint (default $CACHET_ENDPOINT or ipc:///tmp/cachetd.sock)\n"
               "  --json         machine-readable output\n"
               "  --timeout MS   per-request timeout (default 1000)\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-7s %-36s %s\n", c.name, c.args, c.summary);
  std::fprintf(out,
               "\n'cachectl COMMAND --help' shows one command. Exit codes: 0 ok, 1 not found, 2 usage or\n"
               "refused input, 3 daemon unreachable, 4 other daemon error.\n");
}

const Command* FindCommand(const std::string& name) {
  for (const Command& c : kCommands) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "cachectl: %s (see cachectl --help)\n", message.c_str());
  return kUsage;
}

int Fail(const Error& e) {
  std::fprintf(stderr, "cachectl: %s\n", e.ToString().c_str());
  switch (e.code) {
    case ErrorCode::kTimeout:
    case ErrorCode::kUnavailable: return kUnreachable;
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kKeyTooLarge:
    case ErrorCode::kValueTooLarge:
    case ErrorCode::kNotInteger:
    case ErrorCode::kOverflow:
    case ErrorCode::kWrongArity:
    case ErrorCode::kWrongType:
    case ErrorCode::kFrameTooLarge: return kUsage;
    default: return kServerError;
  }
}

using Json = nlohmann::ordered_json;

std::string Base64(const std::string& bytes) {
  static constexpr char kDigits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t group = 0;
    for (size_t j = 0; j < 3; ++j) group = group << 8 | (j < n ? static_cast<unsigned char>(bytes[i + j]) : 0u);
    for (size_t j = 0; j < 4; ++j) out += j <= n ? kDigits[(group >> (18 - 6 * j)) & 63] : '=';
  }
  return out;
}

bool IsUtf8(const std::string& bytes) {
  try {
    (void)Json(bytes).dump();  // the strict handler refuses what is not UTF-8
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

// Sets obj[name] to the bytes as a string, or obj[name + "_base64"].
void PutBytes(Json& obj, const std::string& name, const std::string& bytes) {
  if (IsUtf8(bytes)) {
    obj[name] = bytes;
  } else {
    obj[name + "_base64"] = Base64(bytes);
  }
}

// A key in a list: the string itself, or {"key_base64": ...}.
Json KeyItem(const std::string& key) {
  if (IsUtf8(key)) return key;
  return Json{{"key_base64", Base64(key)}};
}

// Keys and values went through PutBytes; anything else that is not UTF-8 (a
// stat name from a confused daemon) is printed with U+FFFD, never thrown.
void PrintJson(const Json& j) { std::puts(j.dump(-1, ' ', false, Json::error_handler_t::replace).c_str()); }

std::optional<int64_t> ParseInt(const std::string& s) {
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return std::nullopt;
  return v;
}

struct Invocation {
  std::string endpoint;
  bool json = false;
  int64_t timeout_ms = 1000;
  std::string command;
  std::vector<std::string> args;               // positional
  std::map<std::string, std::string> options;  // --ttl, --by
  std::vector<std::string> flags;              // --nx, --xx
  bool help = false;
};

int Run(const Invocation& in) {
  cachet::ClientOptions options;
  options.timeout = std::chrono::milliseconds(in.timeout_ms);
  auto connected = cachet::Client::Connect(in.endpoint, options);
  if (!connected) return Fail(connected.error());
  cachet::Client& client = **connected;
  const auto& a = in.args;
  auto need = [&](size_t n) { return a.size() == n; };
  auto option_ms = [&](const char* name) -> std::optional<int64_t> {
    auto it = in.options.find(name);
    if (it == in.options.end()) return int64_t{0};
    return ParseInt(it->second);
  };
  const std::string& cmd = in.command;

  if (cmd == "ping") {
    if (!need(0)) return UsageError("ping takes no arguments");
    if (auto r = client.Ping(); !r) return Fail(r.error());
    if (in.json) {
      PrintJson({{"ok", true}});
    } else {
      std::puts("PONG");
    }
    return kOk;
  }
  if (cmd == "get") {
    if (!need(1)) return UsageError("get takes KEY");
    auto r = client.Get(a[0]);
    if (!r) return Fail(r.error());
    if (in.json) {
      Json j;
      PutBytes(j, "key", a[0]);
      j["found"] = r->has_value();
      if (*r) PutBytes(j, "value", **r);
      PrintJson(j);
    } else if (*r) {
      std::fwrite((*r)->data(), 1, (*r)->size(), stdout);
      std::fputc('\n', stdout);
    }
    return *r ? kOk : kNotFound;
  }
  if (cmd == "set") {
    if (!need(2)) return UsageError("set takes KEY VALUE");
    cachet::SetOptions so;
    const auto ttl = option_ms("--ttl");
    if (!ttl) return UsageError("--ttl takes milliseconds");
    so.ttl = std::chrono::milliseconds(*ttl);
    for (const std::string& f : in.flags) {
      if (f == "--nx") so.condition = cachet::SetCondition::kIfAbsent;
      if (f == "--xx") so.condition = cachet::SetCondition::kIfPresent;
    }
    auto r = client.Set(a[0], a[1], so);
    if (!r) return Fail(r.error());
    if (in.json) {
      PrintJson({{"stored", *r}});
    } else {
      std::puts(*r ? "OK" : "NOT STORED");
    }
    return *r ? kOk : kNotFound;
  }
  if (cmd == "del") {
    if (!need(1)) return UsageError("del takes KEY");
    auto r = client.Del(a[0]);
    if (!r) return Fail(r.error());
    if (in.json) {
      PrintJson({{"deleted", *r}});
    } else {
      std::puts(*r ? "1" : "0");
    }
    return *r ? kOk : kNotFound;
  }
  if (cmd == "ttl") {
    if (!need(1)) return UsageError("ttl takes KEY");
    auto r = client.Ttl(a[0]);
    if (!r) return Fail(r.error());
    Json j;
    PutBytes(j, "key", a[0]);
    j["found"] = r->has_value();
    if (!*r) {
      if (in.json) PrintJson(j);
      return kNotFound;
    }
    const long long ms = **r == cachet::Cache::kNoExpiry ? -1 : static_cast<long long>((*r)->count());
    if (in.json) {
      j["ttl_ms"] = ms;
      PrintJson(j);
    } else {
      std::printf("%lld\n", ms);
    }
    return kOk;
  }
  if (cmd == "expire") {
    if (!need(2)) return UsageError("expire takes KEY MS");
    const auto ms = ParseInt(a[1]);
    if (!ms) return UsageError("expire: MS must be an integer");
    auto r = client.Expire(a[0], std::chrono::milliseconds(*ms));
    if (!r) return Fail(r.error());
    if (in.json) {
      PrintJson({{"found", *r}});
    } else {
      std::puts(*r ? "1" : "0");
    }
    return *r ? kOk : kNotFound;
  }
  if (cmd == "incr") {
    if (!need(1)) return UsageError("incr takes KEY");
    const auto by = in.options.count("--by") ? ParseInt(in.options.at("--by")) : std::optional<int64_t>(1);
    if (!by) return UsageError("--by takes an integer");
    const auto ttl = option_ms("--ttl");
    if (!ttl) return UsageError("--ttl takes milliseconds");
    auto r = client.Incr(a[0], *by, std::chrono::milliseconds(*ttl));
    if (!r) return Fail(r.error());
    if (in.json) {
      Json j;
      PutBytes(j, "key", a[0]);
      j["value"] = *r;
      PrintJson(j);
    } else {
      std::printf("%lld\n", static_cast<long long>(*r));
    }
    return kOk;
  }
  if (cmd == "keys") {
    if (a.size() > 1) return UsageError("keys takes at most one PATTERN");
    const std::string pattern = a.empty() ? "*" : a[0];
    uint64_t cursor = 0;
    Json keys = Json::array();
    do {
      auto page = client.Scan(cursor, pattern, 16384);
      if (!page) return Fail(page.error());
      for (const std::string& k : page->keys) {
        if (in.json) {
          keys.push_back(KeyItem(k));
        } else {
          std::fwrite(k.data(), 1, k.size(), stdout);
          std::fputc('\n', stdout);
        }
      }
      cursor = page->cursor;
    } while (cursor != 0);
    if (in.json) PrintJson(keys);
    return kOk;
  }
  if (cmd == "stats") {
    if (!need(0)) return UsageError("stats takes no arguments");
    auto r = client.Stats();
    if (!r) return Fail(r.error());
    Json j = Json::object();
    for (const auto& [name, v] : *r) {
      if (in.json) {
        j[name] = v;
      } else {
        std::printf("%-18s %lld\n", name.c_str(), static_cast<long long>(v));
      }
    }
    if (in.json) PrintJson(j);
    return kOk;
  }
  if (cmd == "reload" || cmd == "flush") {
    if (!need(0)) return UsageError(cmd + " takes no arguments");
    auto r = cmd == "reload" ? client.Reload() : client.Flush();
    if (!r) return Fail(r.error());
    if (in.json) {
      PrintJson({{"ok", true}});
    } else {
      std::puts("OK");
    }
    return kOk;
  }
  return UsageError("unknown command '" + cmd + "'");
}

}  // namespace

int main(int argc, char** argv) {
  Invocation in;
  const char* env = std::getenv("CACHET_ENDPOINT");
  in.endpoint = env && *env ? env : "ipc:///tmp/cachetd.sock";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const std::string& name) -> std::optional<std::string> {
      if (i + 1 >= argc) return std::nullopt;
      (void)name;
      return std::string(argv[++i]);
    };
    if (arg == "--help" || arg == "-h") {
      in.help = true;
    } else if (arg == "--json") {
      in.json = true;
    } else if (arg == "--endpoint" || arg == "--timeout" || arg == "--ttl" || arg == "--by") {
      auto v = value(arg);
      if (!v) return UsageError(arg + " needs a value");
      if (arg == "--endpoint") {
        in.endpoint = *v;
      } else if (arg == "--timeout") {
        auto ms = ParseInt(*v);
        if (!ms || *ms <= 0) return UsageError("--timeout takes a positive number of milliseconds");
        in.timeout_ms = *ms;
      } else {
        in.options[arg] = *v;
      }
    } else if (arg == "--nx" || arg == "--xx") {
      in.flags.push_back(arg);
    } else if (arg.size() > 1 && arg[0] == '-' && !ParseInt(arg)) {
      return UsageError("unknown option '" + arg + "'");
    } else if (in.command.empty()) {
      in.command = arg;
    } else {
      in.args.push_back(arg);
    }
  }
  if (in.command.empty()) {
    if (in.help) {
      PrintUsage(stdout);
      return kOk;
    }
    PrintUsage(stderr);
    return kUsage;
  }
  const Command* command = FindCommand(in.command);
  if (command == nullptr) return UsageError("unknown command '" + in.command + "'");
  if (in.help) {
    std::printf("usage: cachectl [--endpoint E] [--json] %s %s\n  %s\n", command->name, command->args,
                command->summary);
    return kOk;
  }
  // Options belong to particular commands.
  for (const auto& [name, v] : in.options) {
    const bool allowed =
        (name == "--ttl" && (in.command == "set" || in.command == "incr")) || (name == "--by" && in.command == "incr");
    if (!allowed) return UsageError(name + " does not apply to " + in.command);
  }
  if (!in.flags.empty() && in.command != "set") return UsageError(in.flags[0] + " applies only to set");
  if (in.flags.size() > 1) return UsageError("--nx and --xx exclude each other");
  return Run(in);
}
