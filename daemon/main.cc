// cachetd: the cachet daemon. Owns the shared-memory cache and serves it
// over ZeroMQ (docs/protocol.md); operations are in docs/operations.md.
#include <signal.h>
#include <unistd.h>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>

#include "cachet/policy_file.h"
#include "config.h"
#include "instance_lock.h"
#include "log_format.h"
#include "segment_place.h"
#include "server.h"

namespace {

using cachet::Cache;
using cachet::Result;
using cachet::daemon::DaemonConfig;

constexpr const char* kVersion = "0.1.0";

// Exit codes (docs/operations.md).
constexpr int kExitFailed = 1;   // a failure while starting or serving
constexpr int kExitRefused = 2;  // the configuration cannot be used: bad value, file, endpoint
constexpr int kExitInUse = 3;    // another cachetd serves this segment

// Refusals before the daemon runs are one line on stderr.
int Refuse(int code, const std::string& message) {
  std::fprintf(stderr, "cachetd: %s\n", message.c_str());
  return code;
}

cachet::daemon::Signals g_signals;

extern "C" void OnStop(int) { g_signals.stop = 1; }
extern "C" void OnReload(int) { g_signals.reload = 1; }

void InstallSignalHandlers() {
  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  // Reads and writes during the start (a policy file on a slow disk or a
  // pipe) go on after a signal; poll, which the serving loop waits in, is
  // never restarted, so the loop still wakes to take the signal up.
  sa.sa_flags = SA_RESTART;
  sa.sa_handler = OnStop;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sa.sa_handler = OnReload;
  sigaction(SIGHUP, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

Result<std::shared_ptr<spdlog::logger>> MakeLogger(const DaemonConfig& config) {
  try {
    std::shared_ptr<spdlog::logger> log;
    if (config.log_file.empty()) {
      log = spdlog::stderr_color_mt("cachetd");
    } else {
      log = spdlog::basic_logger_mt("cachetd", config.log_file);
    }
    cachet::daemon::SetLogFormat(*log, config.log_format);
    log->set_level(spdlog::level::from_str(config.log_level));
    log->flush_on(spdlog::level::info);
    return log;
  } catch (const spdlog::spdlog_ex& e) {
    return cachet::MakeError(cachet::ErrorCode::kIo, "cannot open log '" + config.log_file + "': " + e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  // First: a SIGHUP (a reload sent by a service manager) or SIGTERM that
  // arrives while the daemon starts must not kill it with the default
  // action. A reload or stop asked for before Run is taken up by Run.
  InstallSignalHandlers();
  const std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = cachet::daemon::ParseConfig(args);
  if (!parsed) return Refuse(kExitRefused, parsed.error().message);
  if (parsed->action == cachet::daemon::Action::kHelp) {
    std::fputs(parsed->help_text.c_str(), stdout);
    return 0;
  }
  if (parsed->action == cachet::daemon::Action::kVersion) {
    std::printf("cachetd %s\n", kVersion);
    return 0;
  }
  const DaemonConfig& config = parsed->config;
  if (!config.rate_limit_policy.empty()) {
    if (auto policy = cachet::LoadPolicyFile(config.rate_limit_policy); !policy) {
      return Refuse(kExitRefused, policy.error().message);
    }
  }
  // Before anything touches the segment: a second daemon must neither
  // serve beside the first nor rebuild the segment under it.
  auto lock = cachet::daemon::InstanceLock::Acquire(config.segment);
  if (!lock) {
    return Refuse(lock.error().code == cachet::ErrorCode::kAlreadyExists ? kExitInUse : kExitFailed,
                  lock.error().message);
  }
  for (const std::string& endpoint : {config.ipc, config.pub}) {
    if (auto taken = cachet::daemon::InstanceLock::WhyIpcPathIsTaken(endpoint)) {
      return Refuse(kExitRefused, "cannot bind " + endpoint + ": " + *taken);
    }
  }
  auto log = MakeLogger(config);
  if (!log) return Refuse(kExitRefused, log.error().message);
  // Endpoints first: one that cannot be bound leaves no segment behind.
  cachet::daemon::Server server(config, args, *log, g_signals);
  if (auto bound = server.Bind(); !bound) return Refuse(kExitRefused, bound.error().message);
  auto cache = cachet::daemon::OpenSegment(config, **log);
  if (!cache) {
    (*log)->error("{}", cache.error().ToString());
    return kExitFailed;
  }
  if (auto secured = server.SecureSegment((*cache)->Name()); !secured) {
    (*log)->error("{}", secured.error().ToString());
    return kExitFailed;
  }
  if (auto joined = server.JoinCluster(**cache); !joined) {
    (*log)->error("cannot join cluster '{}': {}", config.cluster.name, joined.error().ToString());
    return kExitFailed;
  }
  const cachet::CacheStats s = (*cache)->Stats();
  (*log)->info("cachetd {} ready: pid {}, segment {}, capacity {} MiB, {} eviction, {} entries", kVersion, getpid(),
               cachet::daemon::SegmentLabel((*cache)->Name()), s.capacity_bytes >> 20,
               cachet::EvictionPolicyName(config.policy), s.entries);
  return server.Run(std::move(*cache));
}
