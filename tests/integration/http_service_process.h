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
#include <regex>
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
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return ::testing::AssertionFailure() << "http_service exited (status " << status << "): " << out;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling its output, with a deadline
    }
    return ::testing::AssertionFailure() << "http_service did not start: " << output();
  }

  // SIGTERM, then its exit: 0 within 10 s, with no sanitizer report.
  ::testing::AssertionResult Stop() {
    if (pid_ <= 0) return ::testing::AssertionFailure() << "http_service is not running";
    kill(pid_, SIGTERM);
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        pid_ = -1;
        return ::testing::AssertionFailure() << "http_service ignored SIGTERM for 10 s: " << output();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    pid_ = -1;
    const std::string out = output();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return ::testing::AssertionFailure() << "http_service stopped with status " << status << ": " << out;
    }
    if (std::regex_search(out, std::regex("Sanitizer|runtime error"))) {
      return ::testing::AssertionFailure() << "sanitizer report from http_service: " << out;
    }
    return ::testing::AssertionSuccess();
  }

  void Signal(int sig) const { kill(pid_, sig); }
  // True while the process has not exited (reaps it if it has).
  bool Running() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return true;
    pid_ = -1;
    return false;
  }
  int port() const { return port_; }
  std::string output() const { return ReadFile(out_); }

 private:
  const std::string out_ = "/tmp/" + UniqueSegmentName("http") + ".out";
  pid_t pid_ = -1;
  int port_ = 0;
};

// Runs http_service to completion with `args` (no --port added): its exit
// status and its output.
struct RunResult {
  int status = -1;
  std::string output;
};
inline RunResult RunService(const std::vector<std::string>& args) {
  const std::string out = "/tmp/" + UniqueSegmentName("http-run") + ".out";
  std::vector<std::string> argv = {HTTP_SERVICE_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  const pid_t pid = Launch(argv, out);
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  RunResult r{WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), ReadFile(out)};
  unlink(out.c_str());
  return r;
}

}  // namespace cachet::testing
