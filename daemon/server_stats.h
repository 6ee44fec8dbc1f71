// What cachetd counts for its metrics endpoint (docs/operations.md,
// "Monitor"), and how the count reaches the HTTP thread.
//
// RequestStats is kept by the serving loop alone, with plain integers: no
// lock or atomic on the request path. Every ~100 ms the loop copies it, with
// the cache's and the limiter's figures, into a MetricsSnapshot and
// publishes that on a SnapshotBoard; the metrics endpoint's thread takes the
// latest snapshot from the board and renders it (prometheus.h). The board is
// the only thing the two threads share.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cachet::daemon {

// Rows of the per-op tables: each wire op (wire::Op, by its number), then
// one for requests that were not decoded (malformed, an unknown op, or
// refused before decoding: BUSY, FRAME_TOO_LARGE). server_stats.cc checks
// the counts against wire::Op and ErrorCode.
inline constexpr size_t kOpRows = 22;
inline constexpr size_t kInvalidOpRow = kOpRows - 1;
// Columns: each ErrorCode, by its number.
inline constexpr size_t kStatusColumns = 27;

// "GET", ..., "INVALID" for the last row.
const char* OpRowName(size_t row);
// "OK", "NOT_FOUND", ... (ErrorCodeName).
const char* StatusColumnName(size_t column);

// Upper bounds of the latency buckets, in microseconds: 10 us to 1 s.
inline constexpr std::array<uint32_t, 16> kLatencyBoundsUs = {
    10, 25, 50, 100, 250, 500, 1'000, 2'500, 5'000, 10'000, 25'000, 50'000, 100'000, 250'000, 500'000, 1'000'000};

// A latency histogram with fixed buckets. counts[i] holds the requests that
// took at most kLatencyBoundsUs[i] (and more than the bound before);
// the last entry those over 1 s. Not cumulative.
struct LatencyHistogram {
  std::array<uint64_t, kLatencyBoundsUs.size() + 1> counts{};
  uint64_t sum_ns = 0;

  void Record(std::chrono::nanoseconds took) {
    const uint64_t ns = took.count() > 0 ? static_cast<uint64_t>(took.count()) : 0;
    sum_ns += ns;
    size_t i = 0;
    while (i < kLatencyBoundsUs.size() && ns > uint64_t{kLatencyBoundsUs[i]} * 1000) ++i;
    ++counts[i];
  }
  uint64_t count() const {
    uint64_t n = 0;
    for (uint64_t c : counts) n += c;
    return n;
  }
};

// RATELIMIT decisions of one tier.
struct TierDecisions {
  uint64_t allowed = 0;
  uint64_t denied = 0;
};

// Counted by the serving loop for each request answered.
struct RequestStats {
  // [op row][status column]: replies.
  std::array<std::array<uint64_t, kStatusColumns>, kOpRows> replies{};
  // Per op row: the time from when the loop started on the request
  // (received it) to when its reply was handed to ZeroMQ.
  std::array<LatencyHistogram, kOpRows> latency{};
  // RATELIMIT decisions by tier. Only tiers of the policy get here (an
  // unknown tier is an error, not a decision), so the map stays small.
  std::map<std::string, TierDecisions, std::less<>> tiers;

  void Count(size_t op_row, uint16_t status, std::chrono::nanoseconds took) {
    const size_t column = status < kStatusColumns ? status : kStatusColumns - 1;
    ++replies[op_row][column];
    latency[op_row].Record(took);
  }
  void CountDecision(std::string_view tier, bool allowed) {
    auto it = tiers.find(tier);
    if (it == tiers.end()) it = tiers.emplace(std::string(tier), TierDecisions{}).first;
    ++(allowed ? it->second.allowed : it->second.denied);
  }
};

// Everything the metrics endpoint shows, as of `taken`. Built by the serving
// loop; read-only once published.
struct MetricsSnapshot {
  RequestStats requests;
  // The cache (CacheStats): counters since the segment was made, and gauges.
  uint64_t hits = 0, misses = 0, sets = 0, deletes = 0, evictions = 0, expirations = 0, repairs = 0;
  uint64_t entries = 0, bytes = 0, capacity_bytes = 0, max_entries = 0, memory_bytes = 0, generation = 0;
  uint64_t page_bytes = 0;        // of the memory behind the segment: 4096, or a huge page's size
  uint64_t same_host_writes = 0;  // 1 while same-host clients may write the segment
  // The daemon since it started.
  uint64_t connected_clients = 0, refused_connections = 0, denied_requests = 0, dropped_frames = 0, dropped_replies = 0,
           busy_replies = 0, reply_backlog_bytes = 0, reloads = 0;
  uint64_t uptime_ms = 0;
  // RATELIMIT, when a policy is configured.
  bool limiter = false;
  uint64_t ratelimit_counters = 0, ratelimit_capacity = 0;
  // Cluster nodes only.
  bool cluster = false;
  uint64_t cluster_epoch = 0, cluster_members = 0, cluster_owned_slots = 0, cluster_importing_slots = 0,
           cluster_redirects = 0, cluster_primary_shards = 0, cluster_replica_shards = 0, cluster_max_lag = 0;
  bool cluster_registered = false;
  // Follower node -> entries behind, for the shards this node leads; -1
  // while the follower's copy is being made.
  std::vector<std::pair<std::string, int64_t>> cluster_follower_lag;
};

// The latest snapshot, passed from the serving loop to the HTTP thread.
// Publish and Latest are safe from any thread; each holds the lock for a
// pointer swap or copy only.
class SnapshotBoard {
 public:
  void Publish(std::shared_ptr<const MetricsSnapshot> snapshot) {
    std::lock_guard<std::mutex> lock(mu_);
    latest_.swap(snapshot);  // the previous one is freed with `snapshot`, after the lock is released
  }
  // Null until the first Publish.
  std::shared_ptr<const MetricsSnapshot> Latest() const {
    std::lock_guard<std::mutex> lock(mu_);
    return latest_;
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const MetricsSnapshot> latest_;  // GUARDED_BY(mu_)
};

}  // namespace cachet::daemon
