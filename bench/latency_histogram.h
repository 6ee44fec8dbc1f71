// LatencyHistogram: the latency record of the load tools (cachet-load,
// cachet-soak). Log-linear buckets over nanoseconds, 32 sub-buckets per
// power of two, so a value is known within about 3%; fixed size, no
// allocation on Add. Not thread-safe: each thread keeps its own and the
// owner merges them.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>

namespace cachet::bench {

class LatencyHistogram {
 public:
  static constexpr int kSub = 32;
  static constexpr int kBuckets = 64 * kSub;

  void Add(int64_t ns) {
    ++counts_[static_cast<size_t>(Index(std::max<int64_t>(ns, 1)))];
    ++total_;
  }
  void Merge(const LatencyHistogram& o) {
    for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += o.counts_[i];
    total_ += o.total_;
  }
  uint64_t total() const { return total_; }
  // The value below which `q` of the samples fall (the bucket's midpoint).
  double Quantile(double q) const {
    if (total_ == 0) return 0;
    const uint64_t rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(total_)));
    uint64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += counts_[static_cast<size_t>(i)];
      if (seen >= std::max<uint64_t>(rank, 1)) return Midpoint(i);
    }
    return Midpoint(kBuckets - 1);
  }

 private:
  static int Index(int64_t v) {
    const int msb = 63 - __builtin_clzll(static_cast<unsigned long long>(v));
    if (msb < 5) return static_cast<int>(v);  // exact below 32
    const int sub = static_cast<int>((v >> (msb - 5)) & (kSub - 1));
    return msb * kSub + sub;
  }
  static double Midpoint(int i) {
    if (i < kSub) return i;
    const int msb = i / kSub, sub = i % kSub;
    const double low = std::ldexp(1.0 + sub / static_cast<double>(kSub), msb);
    return low * (1.0 + 0.5 / kSub);
  }

  std::array<uint64_t, kBuckets> counts_{};
  uint64_t total_ = 0;
};

}  // namespace cachet::bench
