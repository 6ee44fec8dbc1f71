// Helpers shared by the tests.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <vector>

namespace cachet::testing {

// A shared-memory name unique to this process and call, so tests never
// collide with each other or with a running cachetd.
inline std::string UniqueSegmentName(const std::string& what) {
  static std::atomic<int> counter{0};
  return "cachet-test-" + what + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
}

// In a forked child about to exec a server: if the test process dies (a
// crash, a timeout kill), the server dies too instead of running on.
inline void DieWithParent() { prctl(PR_SET_PDEATHSIG, SIGKILL); }

// Starts `args` (args[0] is the program's path) as a child that dies with
// the test; its stdout and stderr go to `output` when given.
inline pid_t Launch(std::vector<std::string> args, const std::string& output = "") {
  const pid_t pid = fork();
  if (pid != 0) return pid;
  if (!output.empty()) {
    const int fd = open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  DieWithParent();
  execv(argv[0], argv.data());
  _exit(127);
}

}  // namespace cachet::testing
