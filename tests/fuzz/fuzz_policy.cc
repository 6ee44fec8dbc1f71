// Fuzz target: the rate-limit policy file (ParsePolicy, limiter/
// include/cachet/policy_file.h), then the policy it gives run by a limiter:
// every tier and override decides a few requests, on a fake clock moved by
// a window, so rules with extreme limits, windows and bursts reach the
// algorithms' arithmetic. Parsing must refuse bad text with an error; a
// policy it accepts must run without a crash or an overflow.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "cachet/clock.h"
#include "cachet/policy_file.h"
#include "cachet/rate_limiter.h"

namespace {

using namespace cachet;

constexpr size_t kMaxChecked = 8;  // tiers and overrides run per input

void Run(const PolicyFile& file) {
  FakeClock clock;
  auto limiter = RateLimiter::Create(file.policy, RateLimiterOptions{256}, clock);
  if (!limiter) return;
  const RateLimitPolicy& policy = file.policy;
  for (int round = 0; round < 3; ++round) {
    size_t n = 0;
    for (const Tier& tier : policy.tiers) {
      if (n++ == kMaxChecked) break;
      (void)(*limiter)->Check("key", tier.name, 1);
      (void)(*limiter)->Check("key", tier.name, uint64_t{1} << 40);
    }
    n = 0;
    for (const auto& [key, rules] : policy.overrides) {
      if (n++ == kMaxChecked || policy.tiers.empty()) break;
      (void)(*limiter)->Check(key, policy.tiers.front().name, 2);
    }
    clock.Advance(std::chrono::milliseconds(round == 0 ? 999 : 3'600'000));
  }
  (void)(*limiter)->ReclaimIdle(512);
  (void)(*limiter)->Stats();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = ParsePolicy(text, "fuzz.ini");
  if (!parsed) return 0;
  (void)parsed->TierOf("key", "fallback");
  if (!parsed->policy.Validate()) return 0;
  Run(*parsed);
  return 0;
}
