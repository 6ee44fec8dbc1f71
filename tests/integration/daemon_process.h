// DaemonProcess: a real cachetd started by a test on its own unique segment,
// ipc path and ephemeral loopback tcp port, read back from its log. Stopped
// (and its segment, socket and log removed) when the object goes away.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cachet/cache.h"
#include "cachet/client.h"
#include "test_util.h"

namespace cachet::testing {

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
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
    (void)Cache::RemoveNamed(segment_);
    unlink(("/tmp/" + segment_ + ".sock").c_str());
    unlink(log_path_.c_str());
  }

  // Starts cachetd and waits until it logs "ready". `tcp` may name a fixed
  // endpoint to reuse one from an earlier run (restart tests).
  ::testing::AssertionResult Start(const std::string& tcp = "tcp://127.0.0.1:*") {
    const size_t log_before = ReadFile(log_path_).size();
    std::vector<std::string> args = {CACHETD_PATH, "--segment", segment_,     "--ipc",  ipc_,
                                     "--tcp",      tcp,         "--log-file", log_path_};
    // Small defaults for tests, unless the test sets its own.
    for (const auto& [flag, value] :
         {std::pair<const char*, const char*>{"--capacity", "8MiB"}, {"--max-value-size", "64KiB"}}) {
      if (std::find(extra_.begin(), extra_.end(), flag) == extra_.end()) {
        args.push_back(flag);
        args.push_back(value);
      }
    }
    args.insert(args.end(), extra_.begin(), extra_.end());
    pid_ = testing::Launch(args);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string log = ReadFile(log_path_).substr(std::min(log_before, ReadFile(log_path_).size()));
      const size_t at = log.find("listening on tcp://");
      if (log.find(" ready: ") != std::string::npos && at != std::string::npos) {
        const size_t begin = at + std::string("listening on ").size();
        tcp_ = log.substr(begin, log.find_first_of(" \n", begin) - begin);
        return ::testing::AssertionSuccess();
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return ::testing::AssertionFailure() << "cachetd exited during start; log:\n" << ReadFile(log_path_);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling a log file with a deadline
    }
    return ::testing::AssertionFailure() << "cachetd not ready in 10 s; log:\n" << ReadFile(log_path_);
  }

  // Arguments for the next Start (a restart with another configuration).
  void SetExtraArgs(std::vector<std::string> args) { extra_ = std::move(args); }

  // SIGTERM and wait; returns the exit status (or -1 if not running).
  int Stop() { return Signal(SIGTERM, true); }
  int Kill() { return Signal(SIGKILL, true); }
  void Hup() const { kill(pid_, SIGHUP); }

  // Waits (with a deadline) until the log contains `text` after `from` bytes.
  bool WaitForLog(const std::string& text, size_t from = 0, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string log = ReadFile(log_path_);
      if (log.size() > from && log.find(text, from) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

  const std::string& ipc() const { return ipc_; }
  const std::string& tcp() const { return tcp_; }
  const std::string& segment() const { return segment_; }
  const std::string& log_path() const { return log_path_; }
  pid_t pid() const { return pid_; }
  std::string log() const { return ReadFile(log_path_); }

 private:
  int Signal(int sig, bool wait) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    int status = 0;
    if (wait) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (waitpid(pid_, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
          kill(pid_, SIGKILL);
          waitpid(pid_, &status, 0);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  std::vector<std::string> extra_;
  std::string segment_, ipc_, tcp_, log_path_;
  pid_t pid_ = -1;
};

}  // namespace cachet::testing
