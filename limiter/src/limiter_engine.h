// LimiterEngine: the decision path every local store shares. Policies are
// compiled once (counter seeds, lookups); counters live in a CounterTable,
// private to the process (RateLimiter) or shared by the host
// (ShmRateLimiter); sliding logs, which do not fit 16 bytes, live beside it
// in process.
//
// A counter's id is a hash of (key, rule owner, rule name, algorithm,
// window): a new policy keeps every counter whose rule still counts the same
// way, and a rule that changes its window or algorithm starts afresh.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cachet/clock.h"
#include "cachet/counter_table.h"
#include "cachet/rate_limiter.h"
#include "decide.h"

namespace cachet::detail {

constexpr size_t kMaxRulesPerSet = 16;  // rules in one tier or override

// A rule ready for counting.
struct CountedRule {
  Rule rule;
  uint64_t seed;  // mixed with the key's hash into the counter id
  uint64_t meta;  // algorithm | window << 8: how the table's idle check reads the counter
  // An admission counts `weight` times in this host's table (1 but for
  // gossip's share_remaining, where the extra stands for what the peers are
  // presumed to admit meanwhile, until Retract takes it back).
  uint32_t weight = 1;
};
using RuleSet = std::vector<CountedRule>;

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

struct CompiledPolicy {
  std::vector<std::pair<std::string, RuleSet>> tiers;  // few: a linear search beats hashing
  std::unordered_map<std::string, RuleSet, StringHash, std::equal_to<>> overrides;
};

// Sliding logs by counter id, under striped locks (in-process stores only).
class SlidingLogs {
 public:
  Verdict Decide(uint64_t id, const Rule& rule, int64_t now, uint64_t cost, bool commit);
  // Takes back a request admitted at `at_ms` (a later rule denied it).
  void Uncommit(uint64_t id, int64_t at_ms, uint64_t cost);
  uint64_t Reclaim(int64_t now);
  uint64_t size() const;

 private:
  struct Log {
    SlidingLog log;
    int64_t window_ms;
  };
  struct alignas(64) Stripe {
    mutable std::mutex mu;
    std::unordered_map<uint64_t, Log> logs;  // guarded by mu
  };
  Stripe& StripeFor(uint64_t id) { return stripes_[id % kStripes]; }
  static constexpr size_t kStripes = 16;
  Stripe stripes_[kStripes];
};

class LimiterEngine {
 public:
  LimiterEngine(std::unique_ptr<CounterTable> table, const Clock& clock);
  ~LimiterEngine();

  // Compiles and publishes a policy. REQUIRES: it passed the store's checks.
  void Install(const RateLimitPolicy& policy);
  // Install in two steps, for a limiter that switches among a few variants
  // of one policy (gossip's local shares, by the hosts alive): a compiled
  // policy lives as long as the engine, and Activate makes it the one
  // decisions use.
  // `shared_weight`: the CountedRule::weight of the shared (not local)
  // window rules.
  const CompiledPolicy* CompilePolicy(const RateLimitPolicy& policy, uint32_t shared_weight = 1);
  void Activate(const CompiledPolicy* policy);
  Result<Decision> Check(std::string_view key, std::string_view tier, uint64_t cost);
  uint64_t ReclaimIdle(uint64_t max_slots);
  RateLimiterStats Stats() const;

  // The journal, for limiters that share counts with other hosts (gossip).
  // When enabled, every count a shared (not local) fixed- or sliding-window rule takes or
  // gives back is also recorded, by the deciding thread in a queue of its
  // own (no lock, no shared cache line), for DrainJournal to collect.
  struct Counted {
    uint64_t id = 0;
    uint64_t meta = 0;         // how the counter counts (algorithm, window)
    int64_t window_start = 0;  // the window the count fell in
    int64_t cost = 0;          // negative: given back
    int64_t extra = 0;         // counted beyond `cost` by a rule's weight (negative: given back)
  };
  // REQUIRES: before the first Check.
  void EnableJournal() { journal_ = true; }
  // Hands every count recorded since the last call to `fn`. From one
  // thread at a time.
  void DrainJournal(const std::function<void(const Counted&)>& fn);
  // Adds `count` that other hosts took in the window starting at
  // `window_start` to counter `id` (placed with `meta` if new). A count for
  // a window the counter has left behind is dropped (sliding windows still
  // take one for the window before theirs).
  Result<void> AddCounted(uint64_t id, uint64_t meta, int64_t window_start, uint64_t count);
  // Takes back `count` of what counter `id` holds for the window starting
  // at `window_start` (a weight's extra whose time is over), down to 0; a
  // counter gone, or past the window, is left alone.
  void Retract(uint64_t id, uint64_t meta, int64_t window_start, uint64_t count);
  // Whether an algorithm's counts add up across hosts (fixed and sliding
  // windows do; a token bucket's arrival time and a sliding log do not).
  static bool Additive(Algorithm a) { return a == Algorithm::kFixedWindow || a == Algorithm::kSlidingWindow; }
  // The window length, in ms, of a counter placed with `meta`.
  static int64_t WindowOf(uint64_t meta) { return static_cast<int64_t>(meta >> 8); }
  // How the counters of `policy`'s shared (not local) rules are placed
  // (algorithm, window): a peer's count must name one of these.
  static std::set<uint64_t> MetasOf(const RateLimitPolicy& policy);

  // A seam for tests: runs on the deciding thread after a multi-rule
  // decision has looked at every rule and before it counts, so a test can
  // put another decision exactly there. REQUIRES: no Check in flight.
  void SetBetweenLookAndCountForTesting(std::function<void()> hook) { between_look_and_count_ = std::move(hook); }

 private:
  Result<void> CheckOne(const CountedRule& r, uint64_t key_hash, int64_t now, uint64_t cost, Verdict& out);
  // `reported`: the index of the rule the verdict reports.
  Result<void> CheckAll(const RuleSet& rules, uint64_t key_hash, int64_t now, uint64_t cost, Verdict& out,
                        size_t& reported);
  // Counts the request against one rule if it passes; `out` says how it
  // went. Sets `written` when the count changed (a denied request changes
  // nothing).
  Result<void> Commit(const CountedRule& r, uint64_t id, int64_t now, uint64_t cost, Verdict& out, bool& written);
  Verdict Peek(const CountedRule& r, uint64_t id, int64_t now, uint64_t cost);
  void Uncommit(const CountedRule& r, uint64_t id, int64_t now, uint64_t cost);
  void Count(bool allowed, bool shadow_denied);
  void CountGivenBack();

  std::function<void()> between_look_and_count_;
  std::unique_ptr<CounterTable> table_;
  const Clock& clock_;
  SlidingLogs logs_;
  std::mutex install_mu_;
  // Every policy installed stays alive until the engine goes: a check in
  // flight may still read one (policies change rarely; each is small).
  std::vector<std::unique_ptr<CompiledPolicy>> policies_;  // guarded by install_mu_
  std::atomic<const CompiledPolicy*> current_{nullptr};
  // A single-producer, single-consumer ring of counts (the deciding thread
  // and DrainJournal); a full ring spills into `overflow`, under its lock.
  // A count for the same counter and window as the last one published is
  // added to that entry's cost, unless the consumer has taken it already
  // (its cost is then kTaken): a hot key costs one entry per interval, not
  // one per request, and the ring does not fill.
  struct Journal {
    static constexpr size_t kSize = 4096;
    static constexpr int64_t kTaken = INT64_MIN;
    struct Entry {
      uint64_t id = 0;
      uint64_t meta = 0;
      int64_t window_start = 0;
      int64_t extra = 0;
      std::atomic<int64_t> cost{kTaken};  // the producer adds to it (CAS) until the consumer swaps in kTaken
    };
    Entry ring[kSize];
    alignas(64) std::atomic<uint64_t> head{0};  // written by the producer
    alignas(64) std::atomic<uint64_t> tail{0};  // written by the consumer
    std::mutex overflow_mu;
    std::vector<Counted> overflow;  // guarded by overflow_mu
    void Push(const Counted& c);
    // Hands the entries published since the last call to `fn`.
    template <typename Fn>
    void Drain(Fn&& fn);
  };
  // Decision counts, one tally per thread: each has a single writer, so
  // counting takes no locked instruction. A thread finds its tally through
  // a small thread-local cache keyed by the engine's serial number.
  struct alignas(64) Tally {
    std::atomic<uint64_t> allowed{0}, denied{0}, shadow_denied{0}, given_back{0};
    std::unique_ptr<Journal> journal;  // when the engine keeps one; set before the thread's first count
  };
  void Record(const CountedRule& r, uint64_t id, int64_t window_start, int64_t cost, int64_t extra);
  bool journal_ = false;
  Tally& MyTally();
  const uint64_t serial_;
  mutable std::mutex tallies_mu_;
  std::unordered_map<std::thread::id, std::unique_ptr<Tally>> tallies_;  // guarded by tallies_mu_
};

}  // namespace cachet::detail
