// DaemonProcess: a real cachetd started by a test on its own unique segment,
// ipc path and ephemeral loopback tcp port, read back from its log. Stopped
// (and its segment, socket and log removed) when the object goes away.
//
// cachetd runs as a ChildProcess (child_process.h): every stop is checked.
// Stop() (and the destructor) expect a clean exit with code 0 within the
// deadline and no sanitizer report in its stderr; anything else fails the
// test. Kill() (SIGKILL) is the explicit opt-out for kill tests.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "cachet/cache.h"
#include "cachet/client.h"
#include "cachet/counter_table.h"
#include "child_process.h"
#include "test_util.h"

namespace cachet::testing {

// For clients of a daemon that runs: time for a loaded machine to answer.
inline ClientOptions Patient() {
  ClientOptions o;
  o.timeout = std::chrono::seconds(5);
  return o;
}

// One STATS counter from the daemon, or -1 (with a test failure) if absent.
inline int64_t StatOf(Client& client, const std::string& name) {
  auto stats = client.Stats();
  if (!stats) {
    ADD_FAILURE() << "STATS failed: " << stats.error().ToString();
    return -1;
  }
  for (const auto& [k, v] : *stats) {
    if (k == name) return v;
  }
  ADD_FAILURE() << "no stat " << name;
  return -1;
}

// Waits (with a deadline) until a same-host client reads through shared
// memory. It attaches at Connect only if the daemon answers its INFO within
// 100 ms; otherwise it reads over the socket and tries again, at most once a
// second, as it reads: a loaded machine makes the first try miss.
inline bool WaitUntilAttached(Client& client, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  return WaitUntil(
      [&] {
        (void)client.Exists("cachet-test-attach");
        return client.ReadsSharedMemory();
      },
      limit, std::chrono::milliseconds(10));
}

// Removes what a cachetd on `segment` leaves in /dev/shm: the cache segment,
// its rate-limit counter table and its instance lock file (kept after kill -9).
inline void RemoveDaemonFiles(const std::string& segment) {
  (void)Cache::RemoveNamed(segment);
  (void)CounterTable::Remove(segment + "-ratelimit");
  unlink(("/dev/shm/" + segment + ".lock").c_str());
}

// Runs cachetd with `args` to completion (up to `limit`): for tests of
// options it must refuse. It always runs on names of its own (a unique
// segment and ipc path, no tcp endpoint) unless `args` set them, so a
// regression that lets it start touches nothing a real cachetd uses; a
// cachetd that does start is killed at the deadline (a test failure) and its
// segment removed.
inline ProgramResult RunCachetd(std::vector<std::string> args,
                                std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const std::string id = UniqueSegmentName("run");
  const std::string socket = "/tmp/" + id + ".sock";
  const auto has = [&](const char* flag) { return std::find(args.begin(), args.end(), flag) != args.end(); };
  std::vector<std::string> command = {CACHETD_PATH};
  if (!has("--segment")) command.insert(command.end(), {"--segment", id});
  if (!has("--ipc")) command.insert(command.end(), {"--ipc", "ipc://" + socket});
  if (!has("--tcp")) command.insert(command.end(), {"--tcp", ""});
  if (!has("--huge-pages") && !has("--huge-pages-dir")) command.insert(command.end(), {"--huge-pages", "off"});
  command.insert(command.end(), args.begin(), args.end());
  ProgramResult r = RunProgram(command, limit);
  RemoveDaemonFiles(id);
  unlink(socket.c_str());
  return r;
}

class DaemonProcess {
 public:
  explicit DaemonProcess(std::vector<std::string> extra_args = {}) : extra_(std::move(extra_args)) {
    const std::string id = UniqueSegmentName("d");
    segment_ = id;
    ipc_ = "ipc:///tmp/" + id + ".sock";
    log_path_ = "/tmp/" + id + ".log";
  }
  ~DaemonProcess() {
    Stop();
    RemoveDaemonFiles(segment_);
    unlink(("/tmp/" + segment_ + ".sock").c_str());
    unlink(log_path_.c_str());
  }

  // Starts cachetd and waits until it logs "ready". `tcp` may name a fixed
  // endpoint to reuse one from an earlier run (restart tests). A cachetd
  // that exits during start fails the start (its output is still checked).
  ::testing::AssertionResult Start(const std::string& tcp = "tcp://127.0.0.1:*") {
    if (auto launched = Launch(tcp); !launched) return launched;
    return WaitUntilReady();
  }

  // The two halves of Start, for tests that act while cachetd starts.
  ::testing::AssertionResult Launch(const std::string& tcp = "tcp://127.0.0.1:*") {
    if (child_) return ::testing::AssertionFailure() << "cachetd is already running (pid " << pid() << ")";
    log_before_ = ReadFile(log_path_).size();
    std::vector<std::string> args = prefix_;
    args.insert(args.end(),
                {CACHETD_PATH, "--segment", segment_, "--ipc", ipc_, "--tcp", tcp, "--log-file", log_path_});
    // Small defaults for tests, unless the test sets its own.
    for (const auto& [flag, value] :
         {std::pair<const char*, const char*>{"--capacity", "8MiB"}, {"--max-value-size", "64KiB"}}) {
      if (std::find(extra_.begin(), extra_.end(), flag) == extra_.end()) {
        args.push_back(flag);
        args.push_back(value);
      }
    }
    // No huge pages unless the test asks: a host's hugetlbfs mount would
    // otherwise take the segment, out of the files these tests clean up.
    const auto asks = [&](const char* flag) { return std::find(extra_.begin(), extra_.end(), flag) != extra_.end(); };
    if (!asks("--huge-pages") && !asks("--huge-pages-dir")) args.insert(args.end(), {"--huge-pages", "off"});
    args.insert(args.end(), extra_.begin(), extra_.end());
    child_.emplace(ChildProcess::Exec(args));
    return ::testing::AssertionSuccess();
  }
  ::testing::AssertionResult WaitUntilReady() {
    if (!child_) return ::testing::AssertionFailure() << "cachetd was not launched";
    bool ready = false;
    const bool ended = WaitUntil(
        [&] {
          const std::string all = ReadFile(log_path_);
          const std::string log = all.substr(std::min(log_before_, all.size()));
          const size_t at = log.find("listening on tcp://");
          if (log.find(" ready: ") != std::string::npos && at != std::string::npos) {
            const size_t begin = at + std::string("listening on ").size();
            tcp_ = log.substr(begin, log.find_first_of(" \n\"", begin) - begin);  // text or json lines
            if (const size_t s = log.find("listening on stream://"); s != std::string::npos) {
              const size_t from = s + std::string("listening on ").size();
              stream_ = log.substr(from, log.find_first_of(" \n\"", from) - from);
            }
            ready = true;
          }
          return ready || child_->Exited();
        },
        kStartDeadline);
    if (ready) return ::testing::AssertionSuccess();
    const std::string why = ended ? "exited during start" : "not ready in time";
    const int code = ended ? child_->Wait(ChildProcess::kAnyExit) : child_->Stop(ChildProcess::kAnyExit);
    const std::string err = child_->err();
    child_.reset();
    return ::testing::AssertionFailure() << "cachetd " << why << " (exit " << code << "); stderr:\n"
                                         << err << "\nlog:\n"
                                         << ReadFile(log_path_);
  }

  // Everything cachetd logged so far.
  std::string Log() const { return ReadFile(log_path_); }

  // Arguments for the next Start (a restart with another configuration).
  void SetExtraArgs(std::vector<std::string> args) { extra_ = std::move(args); }
  // Words put before cachetd's command line, for a wrapper that execs it
  // (`ip netns exec <ns>`: cachetd in a network namespace).
  void SetCommandPrefix(std::vector<std::string> prefix) { prefix_ = std::move(prefix); }

  // SIGTERM and wait; returns the exit status (or -1 if not running). Fails
  // the test unless cachetd exits with 0 in time and reports no sanitizer
  // error.
  int Stop() {
    return End([](ChildProcess& c) { return c.Stop(); });
  }
  // Waits for an exit the test already asked for (a SIGTERM it sent), with
  // the same checks as Stop(). No second signal: one that lands during a
  // sanitizer's exit-time leak check (it ptraces the process) could stall
  // it past the deadline.
  int WaitForExit() {
    return End([](ChildProcess& c) { return c.Wait(); });
  }
  // SIGKILL: the opt-out from the exit check, for kill tests. Fails the test
  // if cachetd had already died by itself.
  int Kill() {
    return End([](ChildProcess& c) { return c.Kill(); });
  }
  void Hup() const { Signal(SIGHUP); }
  // Any other signal (SIGSTOP/SIGCONT to stall it); Stop() resumes a stopped daemon.
  void Signal(int sig) const {
    if (child_) child_->Signal(sig);
  }

  // Waits (with a deadline) until the log contains `text` after `from` bytes.
  bool WaitForLog(const std::string& text, size_t from = 0, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    return WaitUntil(
        [&] {
          const std::string log = ReadFile(log_path_);
          return log.size() > from && log.find(text, from) != std::string::npos;
        },
        limit);
  }

  const std::string& ipc() const { return ipc_; }
  const std::string& tcp() const { return tcp_; }
  // The stream endpoint (stream://host:port) when started with --stream.
  const std::string& stream() const { return stream_; }
  const std::string& segment() const { return segment_; }
  const std::string& log_path() const { return log_path_; }
  pid_t pid() const { return child_ ? child_->pid() : -1; }
  std::string log() const { return ReadFile(log_path_); }
  // What cachetd wrote to stderr in this run (empty when it logs to a file).
  std::string stderr_text() const { return child_ ? child_->err() : ""; }

 private:
  static constexpr std::chrono::milliseconds kStartDeadline{20'000};

  template <typename How>
  int End(How how) {
    if (!child_) return -1;
    const int code = how(*child_);
    child_.reset();
    return code;
  }

  std::vector<std::string> extra_, prefix_;
  std::string segment_, ipc_, tcp_, stream_, log_path_;
  size_t log_before_ = 0;  // the log's size at Launch: WaitUntilReady reads after it
  std::optional<ChildProcess> child_;
};

}  // namespace cachet::testing
