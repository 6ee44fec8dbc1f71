// ServiceProcess: the example http_service, started by a test on an
// ephemeral loopback port read back from its output, and stopped with
// SIGTERM: a clean stop must exit 0 and leave no sanitizer report in its
// output (stdout and stderr, kept in one file).
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.h"

namespace cachet::testing {

class ServiceProcess {
 public:
  ServiceProcess() = default;
  ServiceProcess(const ServiceProcess&) = delete;
  ServiceProcess& operator=(const ServiceProcess&) = delete;
  ~ServiceProcess() {
    if (pid_ > 0) {  // a test that failed before stopping it: no verdict to give
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    unlink(out_.c_str());
  }

  // Starts http_service with `args` (after --host 127.0.0.1 --port 0) and
  // waits until it listens.
  ::testing::AssertionResult Start(const std::vector<std::string>& args) {
    started_ = true;
    std::vector<std::string> argv = {HTTP_SERVICE_PATH, "--host", "127.0.0.1", "--port", "0"};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_ = Launch(argv, out_);
    const std::string prefix = "listening on http://127.0.0.1:";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string out = output();
      const size_t at = out.find(prefix);
      if (at != std::string::npos && out.find('\n', at) != std::string::npos) {
        port_ = std::stoi(out.substr(at + prefix.size()));
        return ::testing::AssertionSuccess();
      }
      if (!Running()) {
        stopped_ = true;  // nothing left to stop; Start's failure is the verdict
        return ::testing::AssertionFailure() << "http_service exited (status " << status_ << "): " << out;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling its output, with a deadline
    }
    return ::testing::AssertionFailure() << "http_service did not start: " << output();
  }

  // SIGTERM, then its exit: 0 within 10 s, with no sanitizer report. A
  // second call repeats the first one's verdict; a service that exited by
  // itself (a crash) fails.
  ::testing::AssertionResult Stop() {
    if (stopped_) return verdict_;
    stopped_ = true;
    verdict_ = StopNow();
    return verdict_;
  }

  void Signal(int sig) const { kill(pid_, sig); }
  bool started() const { return started_; }
  // True while the process has not exited (reaps it if it has).
  bool Running() {
    if (pid_ <= 0) return false;
    if (waitpid(pid_, &status_, WNOHANG) != pid_) return true;
    pid_ = -1;
    return false;
  }
  int port() const { return port_; }
  std::string output() const { return ReadFile(out_); }

 private:
  ::testing::AssertionResult StopNow() {
    if (!started_) return ::testing::AssertionFailure() << "http_service was never started";
    if (Running()) {
      kill(pid_, SIGTERM);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (waitpid(pid_, &status_, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
          kill(pid_, SIGKILL);
          waitpid(pid_, &status_, 0);
          pid_ = -1;
          return ::testing::AssertionFailure() << "http_service ignored SIGTERM for 10 s: " << output();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      pid_ = -1;
    } else {
      return ::testing::AssertionFailure()
             << "http_service exited by itself (status " << status_ << ") before SIGTERM: " << output();
    }
    const std::string out = output();
    if (!WIFEXITED(status_) || WEXITSTATUS(status_) != 0) {
      return ::testing::AssertionFailure() << "http_service stopped with status " << status_ << ": " << out;
    }
    if (out.find("Sanitizer") != std::string::npos || out.find("runtime error") != std::string::npos) {
      return ::testing::AssertionFailure() << "sanitizer report from http_service: " << out;
    }
    return ::testing::AssertionSuccess();
  }

  const std::string out_ = "/tmp/" + UniqueSegmentName("http") + ".out";
  pid_t pid_ = -1;
  int port_ = 0;
  int status_ = 0;
  bool started_ = false, stopped_ = false;
  ::testing::AssertionResult verdict_ = ::testing::AssertionSuccess();
};

// Runs http_service to completion with `args` (no --port added): its exit
// status and its output.
struct RunResult {
  int status = -1;
  std::string output;
};
inline RunResult RunService(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {HTTP_SERVICE_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  const ProgramResult r = RunProgram(std::move(argv), std::chrono::seconds(10));
  return {r.code, r.out + r.err};
}

}  // namespace cachet::testing
