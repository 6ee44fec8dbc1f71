// Helpers shared by the tests.
#pragma once

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

}  // namespace cachet::testing
