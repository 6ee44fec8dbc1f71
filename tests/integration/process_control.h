// Deterministic control of a running server for contract tests: suspend it
// (SIGSTOP) for a scope, so that replies become late or never come.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "test_util.h"

namespace cachet::testing {

// SIGSTOPs a process for the lifetime of the object (or until Resume), and
// waits until the kernel reports it stopped, so that nothing it does can
// race the test's next step. Every thread of the process stops, ZeroMQ's I/O
// threads included: requests sent meanwhile wait in the kernel's buffers.
class Suspended {
 public:
  explicit Suspended(pid_t pid) : pid_(pid) {
    kill(pid_, SIGSTOP);
    stopped_ = WaitUntil([&] { return AllThreadsStopped(pid_); }, std::chrono::seconds(5));
  }
  ~Suspended() { Resume(); }
  Suspended(const Suspended&) = delete;
  Suspended& operator=(const Suspended&) = delete;

  bool stopped() const { return stopped_; }
  void Resume() {
    if (pid_ > 0) kill(pid_, SIGCONT);
    pid_ = -1;
  }

 private:
  pid_t pid_;
  bool stopped_ = false;
};

}  // namespace cachet::testing
