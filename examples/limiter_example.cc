// limiter_example: a program that only rate-limits, linked against
// cachet::limiter alone (no cache client). It reads a policy file, makes
// COUNT decisions for KEY in TIER in this process, and prints how many
// were allowed.
//
//   limiter_example POLICY_FILE TIER KEY COUNT
//   limiter_example --help
#include <cachet/policy_file.h>
#include <cachet/rate_limiter.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

constexpr const char* kUsage =
    "usage: limiter_example POLICY_FILE TIER KEY COUNT\n"
    "Makes COUNT rate-limit decisions for KEY in TIER with the policy file's limits (in this\n"
    "process) and prints allowed=N denied=M.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (argc != 5) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  char* end = nullptr;
  const unsigned long long count = std::strtoull(argv[4], &end, 10);
  if (*argv[4] == '\0' || *end != '\0' || count > 1000000000ULL) {
    std::fprintf(stderr, "limiter_example: COUNT must be a number up to 1000000000, not '%s'\n", argv[4]);
    return 2;
  }
  auto file = cachet::LoadPolicyFile(argv[1]);
  if (!file) {
    std::fprintf(stderr, "limiter_example: %s\n", file.error().message.c_str());
    return 2;
  }
  auto limiter = cachet::RateLimiter::Create(file->policy);
  if (!limiter) {
    std::fprintf(stderr, "limiter_example: %s\n", limiter.error().ToString().c_str());
    return 1;
  }
  unsigned long long allowed = 0, denied = 0;
  for (unsigned long long i = 0; i < count; ++i) {
    auto d = (*limiter)->Check(argv[3], argv[2]);
    if (!d) {
      std::fprintf(stderr, "limiter_example: %s\n", d.error().ToString().c_str());
      return 1;
    }
    ++(d->allowed ? allowed : denied);
  }
  std::printf("allowed=%llu denied=%llu\n", allowed, denied);
  return 0;
}
