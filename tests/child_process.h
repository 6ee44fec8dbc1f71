// ChildProcess: a program, or a function, that a test runs in a child
// process, with its stdout and stderr captured to files of its own.
//
// Every way of ending a child is checked, so that a child that fails cannot
// pass unnoticed:
//  - Stop() sends SIGTERM and waits (with a deadline) for a clean exit;
//  - Wait() waits (with a deadline) for the child to exit by itself;
//  - the destructor Stop()s a child still running.
// Each records a test failure (ADD_FAILURE, with the tail of the child's
// output) when the exit code is not the one expected, when the deadline
// passes (the child is then killed with SIGKILL), or when the output holds a
// sanitizer report ("Sanitizer" or "runtime error"). Kill() (SIGKILL) is the
// explicit opt-out for tests whose point is killing: it checks only that the
// child was still running and that its output holds no sanitizer report.
//
// A forked function ends cleanly on SIGTERM by polling StopRequested() and
// returning; its return value is its exit code.
//
// Not thread-safe: one thread of the test owns a ChildProcess. A child dies
// with the test process (PR_SET_PDEATHSIG), so a crashed or timed-out test
// leaves no server behind.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "test_util.h"

namespace cachet::testing {

class ChildProcess {
 public:
  // Long enough for a sanitizer build on a loaded machine to exit cleanly.
  static constexpr std::chrono::milliseconds kDeadline{20'000};
  // For Wait()/Stop(): any exit code passes (the output is still checked).
  static constexpr int kAnyExit = -1;

  // Runs the program args[0] with `args`; `name` names it in failures.
  static ChildProcess Exec(std::vector<std::string> args) {
    ChildProcess child(args.empty() ? "?" : args[0]);
    child.pid_ = child.Spawn([&args] {
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      std::fprintf(stderr, "cannot exec %s: %s\n", argv[0], std::strerror(errno));
      return 127;
    });
    return child;
  }

  // Runs `body` in a forked child; its return value is the exit code.
  static ChildProcess Fork(std::function<int()> body, std::string name = "forked child") {
    ChildProcess child(std::move(name));
    child.pid_ = child.Spawn([&body] {
      StopFlag() = 0;
      signal(SIGTERM, [](int) { StopFlag() = 1; });
      return body();
    });
    return child;
  }

  // In a forked function: true once the test asked it to stop (SIGTERM).
  static bool StopRequested() { return StopFlag() != 0; }

  ChildProcess(ChildProcess&& other) noexcept { *this = std::move(other); }
  ChildProcess& operator=(ChildProcess&& other) noexcept {
    if (this != &other) {
      Release();
      name_ = std::move(other.name_);
      out_path_ = std::move(other.out_path_);
      err_path_ = std::move(other.err_path_);
      pid_ = std::exchange(other.pid_, -1);
      exit_code_ = other.exit_code_;
      other.out_path_.clear();
      other.err_path_.clear();
    }
    return *this;
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() { Release(); }

  // SIGTERM (and SIGCONT, should a test have stopped it), then waits up to
  // `deadline` for exit code `expected`. Returns the exit code, or 128 + the
  // signal that ended it.
  int Stop(int expected = 0, std::chrono::milliseconds deadline = kDeadline) {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      kill(pid_, SIGCONT);
    }
    return Wait(expected, deadline);
  }

  // Waits up to `deadline` for the child to exit by itself with `expected`.
  int Wait(int expected = 0, std::chrono::milliseconds deadline = kDeadline) {
    if (pid_ <= 0) return exit_code_;
    if (!WaitUntil([this] { return Exited(); }, deadline, std::chrono::milliseconds(2))) {
      kill(pid_, SIGKILL);
      Reap(0);
      ADD_FAILURE() << name_ << " did not exit within " << deadline.count() << " ms; killed" << Tail();
      return exit_code_;
    }
    if (expected != kAnyExit && exit_code_ != expected) {
      ADD_FAILURE() << name_ << " exited with " << Describe(exit_code_) << ", expected " << expected << Tail();
    }
    CheckOutput();
    return exit_code_;
  }

  // SIGKILL and reap, without expecting a clean exit. Returns 128 + 9.
  int Kill() {
    if (pid_ <= 0) return exit_code_;
    const bool was_running = !Exited();
    if (was_running) {
      kill(pid_, SIGKILL);
      Reap(0);
    }
    if (!was_running || exit_code_ != 128 + SIGKILL) {
      ADD_FAILURE() << name_ << " had already ended (" << Describe(exit_code_) << ") when the test killed it" << Tail();
    }
    CheckOutput();
    return exit_code_;
  }

  void Signal(int sig) const {
    if (pid_ > 0) kill(pid_, sig);
  }

  // True once the child has exited (it is then reaped; see exit_code()).
  bool Exited() { return pid_ <= 0 || Reap(WNOHANG); }
  bool running() { return !Exited(); }

  pid_t pid() const { return pid_; }
  // The exit code, 128 + signal, or -1 while it runs.
  int exit_code() const { return exit_code_; }
  std::string out() const { return ReadFile(out_path_); }
  std::string err() const { return ReadFile(err_path_); }

 private:
  explicit ChildProcess(std::string name) : name_(std::move(name)) {
    const std::string base = "/tmp/" + UniqueSegmentName("child");
    out_path_ = base + ".out";
    err_path_ = base + ".err";
  }

  static volatile sig_atomic_t& StopFlag() {
    static volatile sig_atomic_t flag = 0;
    return flag;
  }

  template <typename Body>
  pid_t Spawn(Body&& body) {
    std::fflush(nullptr);  // the child must not write the parent's buffered output again
    const pid_t pid = fork();
    if (pid != 0) {
      if (pid < 0) ADD_FAILURE() << "fork for " << name_ << ": " << std::strerror(errno);
      return pid;
    }
    DieWithParent();
    const int out = open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const int err = open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0 || err < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) _exit(126);
    const int code = body();
    std::fflush(nullptr);
    _exit(code);
  }

  // Collects the child's status; true if it has exited.
  bool Reap(int flags) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, flags);
    if (r != pid_) return false;
    pid_ = -1;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return true;
  }

  void CheckOutput() const {
    for (const std::string& path : {err_path_, out_path_}) {
      const std::string text = ReadFile(path);
      if (text.find("Sanitizer") != std::string::npos || text.find("runtime error") != std::string::npos) {
        ADD_FAILURE() << name_ << " reported a sanitizer error:\n" << text;
      }
    }
  }

  static std::string Describe(int code) {
    return code > 128 ? "signal " + std::to_string(code - 128) : "code " + std::to_string(code);
  }

  std::string Tail() const {
    std::string text = "\n--- stderr of " + name_ + " ---\n" + err();
    constexpr size_t kMax = 4096;
    return text.size() > kMax ? "..." + text.substr(text.size() - kMax) : text;
  }

  void Release() {
    if (pid_ > 0) Stop();
    if (!out_path_.empty()) unlink(out_path_.c_str());
    if (!err_path_.empty()) unlink(err_path_.c_str());
  }

  std::string name_;
  std::string out_path_, err_path_;
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

// What a program run to completion did.
struct ProgramResult {
  int code = -1;  // exit code, or 128 + signal
  std::string out, err;
};

// Runs args[0] with `args` and waits (up to `limit`) for it to exit by
// itself. Any exit code is returned for the caller to check; a program still
// running at the deadline, or reporting a sanitizer error, fails the test.
inline ProgramResult RunProgram(std::vector<std::string> args,
                                std::chrono::milliseconds limit = ChildProcess::kDeadline) {
  ChildProcess child = ChildProcess::Exec(std::move(args));
  ProgramResult r;
  r.code = child.Wait(ChildProcess::kAnyExit, limit);
  r.out = child.out();
  r.err = child.err();
  return r;
}

}  // namespace cachet::testing
