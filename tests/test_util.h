// Helpers shared by the tests.
#pragma once

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <string>

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

}  // namespace cachet::testing
