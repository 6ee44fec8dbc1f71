#include "limiter_engine.h"

#include <algorithm>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "decide.h"
#include "decision_combiner.h"

namespace cachet::detail {

namespace {

uint64_t Mix(uint64_t x) {  // splitmix64 finalizer: a bijection, so keys never share a counter by it
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t CounterId(uint64_t key_hash, uint64_t seed) {
  const uint64_t id = Mix(key_hash ^ seed);
  return id == 0 ? 1 : id;
}

// Stable across processes and builds (XXH3 is), unlike std::hash.
uint64_t SeedOf(const std::string& owner, const Rule& r) {
  std::string text = owner;
  text += '\0';
  text += r.name;
  text += '\0';
  text += static_cast<char>(r.algorithm);
  const int64_t window = r.window.count();
  text.append(reinterpret_cast<const char*>(&window), sizeof(window));
  return XXH3_64bits(text.data(), text.size());
}

uint64_t MetaOf(const Rule& r) {
  return static_cast<uint64_t>(r.window.count()) << 8 | static_cast<uint8_t>(r.algorithm);
}
Algorithm AlgorithmOf(uint64_t meta) { return static_cast<Algorithm>(meta & 0xff); }

// LimiterState <-> a table value (`lo` holds CounterTable::kLoBits bits).
// Fixed and sliding window: lo = window start (ms); hi = count, or the
// current and previous counts (32 bits each). GCRA: hi = TAT (us).
CounterTable::Value Pack(Algorithm a, const LimiterState& s) {
  switch (a) {
    case Algorithm::kFixedWindow: return {static_cast<uint64_t>(s.a), static_cast<uint64_t>(s.b)};
    case Algorithm::kSlidingWindow:
      return {static_cast<uint64_t>(s.a), static_cast<uint64_t>(s.b) << 32 | static_cast<uint32_t>(s.c)};
    default: return {0, static_cast<uint64_t>(s.a)};
  }
}

LimiterState Unpack(Algorithm a, const CounterTable::Value& v) {
  switch (a) {
    case Algorithm::kFixedWindow: return {static_cast<int64_t>(v.lo), static_cast<int64_t>(v.hi), 0};
    case Algorithm::kSlidingWindow:
      return {static_cast<int64_t>(v.lo), static_cast<int64_t>(v.hi >> 32), static_cast<int64_t>(v.hi & 0xffffffff)};
    default: return {static_cast<int64_t>(v.hi), 0, 0};
  }
}

// A counter is dropped only once nothing in it limits a request made
// kIdleMarginMs before `now`. Requests carry the time their process read a
// moment earlier (another process's clock, a tick behind, or a thread
// preempted between reading the time and counting): one that still falls
// in the window a sweep has just dropped would start that window again from
// zero, admitting a second limit's worth in it.
constexpr int64_t kIdleMarginMs = 1000;

// The table's idle check: nothing in the counter limits a request at
// `now` - kIdleMarginMs or later.
struct IdleAt {
  explicit IdleAt(int64_t now) : before(now - kIdleMarginMs) {}
  int64_t before;
  bool operator()(uint64_t meta, const CounterTable::Value& v) const {
    return IsIdle(AlgorithmOf(meta), LimiterEngine::WindowOf(meta), Unpack(AlgorithmOf(meta), v), before);
  }
};

// Takes back an admitted request of `cost` (a later rule denied it). Fixed
// and sliding windows give it back only while the counter is still in the
// window of `now`; past that the count may sit in a window this cannot
// tell, and leaving it over-counts (stricter), never under-counts.
void Uncount(const Rule& rule, LimiterState& s, int64_t now, uint64_t cost) {
  const int64_t w = rule.window.count();
  const auto c = static_cast<int64_t>(cost);
  switch (rule.algorithm) {
    case Algorithm::kFixedWindow:
    case Algorithm::kSlidingWindow:
      if (s.a == now - now % w) s.b = std::max<int64_t>(0, s.b - c);
      break;
    case Algorithm::kTokenBucket: s.a -= GcraInterval(rule.window, rule.limit) * c; break;
    case Algorithm::kSlidingLog: break;
  }
}

RuleSet Compile(const std::string& owner, const std::vector<Rule>& rules, uint32_t shared_weight) {
  RuleSet set;
  for (const Rule& r : rules) {
    const bool weighed = LimiterEngine::Additive(r.algorithm) && !r.local;
    set.push_back({r, SeedOf(owner, r), MetaOf(r), weighed ? shared_weight : 1});
  }
  return set;
}

// The count a sliding window can hold (32 bits of its value).
constexpr int64_t kMaxSlidingCount = 0xffffffff;

}  // namespace

Verdict SlidingLogs::Decide(uint64_t id, const Rule& rule, int64_t now, uint64_t cost, bool commit) {
  Stripe& stripe = StripeFor(id);
  std::lock_guard<std::mutex> lock(stripe.mu);
  auto it = stripe.logs.find(id);
  if (it == stripe.logs.end()) {
    if (!commit) {
      SlidingLog empty;
      return detail::Decide(rule, empty, now, cost, false);
    }
    it = stripe.logs.emplace(id, Log{SlidingLog{}, rule.window.count()}).first;
  }
  return detail::Decide(rule, it->second.log, now, cost, commit);
}

void SlidingLogs::Uncommit(uint64_t id, int64_t at_ms, uint64_t cost) {
  Stripe& stripe = StripeFor(id);
  std::lock_guard<std::mutex> lock(stripe.mu);
  auto it = stripe.logs.find(id);
  if (it == stripe.logs.end()) return;
  SlidingLog& log = it->second.log;
  for (auto e = log.entries.rbegin(); e != log.entries.rend(); ++e) {
    if (e->at_ms == at_ms && e->cost == cost) {
      log.entries.erase(std::next(e).base());
      log.total -= cost;
      return;
    }
  }
}

uint64_t SlidingLogs::Reclaim(int64_t now) {
  now -= kIdleMarginMs;  // as for the table's counters
  uint64_t dropped = 0;
  for (Stripe& stripe : stripes_) {
    std::lock_guard<std::mutex> lock(stripe.mu);
    dropped +=
        std::erase_if(stripe.logs, [&](const auto& kv) { return IsIdle(kv.second.log, kv.second.window_ms, now); });
  }
  return dropped;
}

uint64_t SlidingLogs::size() const {
  uint64_t n = 0;
  for (const Stripe& stripe : stripes_) {
    std::lock_guard<std::mutex> lock(stripe.mu);
    n += stripe.logs.size();
  }
  return n;
}

namespace {
std::atomic<uint64_t> next_serial{1};
}

LimiterEngine::LimiterEngine(std::unique_ptr<CounterTable> table, const Clock& clock)
    : table_(std::move(table)), clock_(clock), serial_(next_serial.fetch_add(1, std::memory_order_relaxed)) {}

LimiterEngine::~LimiterEngine() = default;

void LimiterEngine::Install(const RateLimitPolicy& policy) { Activate(CompilePolicy(policy)); }

const CompiledPolicy* LimiterEngine::CompilePolicy(const RateLimitPolicy& policy, uint32_t shared_weight) {
  auto compiled = std::make_unique<CompiledPolicy>();
  for (const Tier& t : policy.tiers) compiled->tiers.emplace_back(t.name, Compile(t.name, t.rules, shared_weight));
  for (const auto& [key, rules] : policy.overrides) {
    compiled->overrides.emplace(key, Compile("override", rules, shared_weight));
  }
  std::lock_guard<std::mutex> lock(install_mu_);
  policies_.push_back(std::move(compiled));
  return policies_.back().get();
}

void LimiterEngine::Activate(const CompiledPolicy* policy) { current_.store(policy, std::memory_order_release); }

Verdict LimiterEngine::Peek(const CountedRule& r, uint64_t id, int64_t now, uint64_t cost) {
  if (r.rule.algorithm == Algorithm::kSlidingLog) return logs_.Decide(id, r.rule, now, cost, false);
  LimiterState s = Unpack(r.rule.algorithm, table_->Load(id));
  return detail::Decide(r.rule, s, now, cost, false);
}

Result<void> LimiterEngine::Commit(const CountedRule& r, uint64_t id, int64_t now, uint64_t cost, Verdict& out,
                                   bool& written) {
  if (r.rule.algorithm == Algorithm::kSlidingLog) {
    out = logs_.Decide(id, r.rule, now, cost, true);
    written = out.allowed;
    return {};
  }
  const Algorithm a = r.rule.algorithm;
  int64_t window_start = 0;
  // A weight's extra is counted, not checked: a request passes on its own
  // cost, so the quota's last units stay usable.
  const int64_t extra = static_cast<int64_t>(r.weight - 1) * static_cast<int64_t>(cost);
  auto updated = table_->Update(
      id, r.meta,
      [&](const CounterTable::Value& v) -> std::optional<CounterTable::Value> {
        LimiterState s = Unpack(a, v);
        out = detail::Decide(r.rule, s, now, cost, true);
        if (!out.allowed) return std::nullopt;
        if (extra != 0) s.b = a == Algorithm::kSlidingWindow ? std::min(s.b + extra, kMaxSlidingCount) : s.b + extra;
        window_start = s.a;
        return Pack(a, s);
      },
      IdleAt{now});
  if (!updated) return tl::unexpected(std::move(updated.error()));
  written = *updated;
  if (journal_ && written) Record(r, id, window_start, static_cast<int64_t>(cost), extra);
  return {};
}

void LimiterEngine::Uncommit(const CountedRule& r, uint64_t id, int64_t now, uint64_t cost) {
  if (r.rule.algorithm == Algorithm::kSlidingLog) return logs_.Uncommit(id, now, cost);
  const Algorithm a = r.rule.algorithm;
  bool gave_back = false;
  int64_t window_start = 0;
  (void)table_->Update(
      id, r.meta,
      [&](const CounterTable::Value& v) -> std::optional<CounterTable::Value> {
        LimiterState s = Unpack(a, v);
        const LimiterState before = s;
        Uncount(r.rule, s, now, cost * r.weight);
        gave_back = s.b != before.b;
        window_start = s.a;
        return Pack(a, s);
      },
      [](uint64_t, const CounterTable::Value&) { return false; });  // it was just counted: present
  if (journal_ && gave_back) {
    Record(r, id, window_start, -static_cast<int64_t>(cost), -static_cast<int64_t>((r.weight - 1) * cost));
  }
}

void LimiterEngine::Record(const CountedRule& r, uint64_t id, int64_t window_start, int64_t cost, int64_t extra) {
  if (!Additive(r.rule.algorithm) || r.rule.local) return;
  MyTally().journal->Push(Counted{id, r.meta, window_start, cost, extra});
}

void LimiterEngine::Journal::Push(const Counted& c) {
  const uint64_t h = head.load(std::memory_order_relaxed);
  if (h != 0 && c.cost > 0 && c.extra == 0) {
    // The entry this thread published last: its fields are ours and never
    // change once published; only its cost is shared with the consumer.
    Entry& last = ring[(h - 1) % kSize];
    if (last.id == c.id && last.meta == c.meta && last.window_start == c.window_start && last.extra == 0) {
      int64_t cost = last.cost.load(std::memory_order_relaxed);
      while (cost != kTaken && cost > 0) {
        if (last.cost.compare_exchange_weak(cost, cost + c.cost, std::memory_order_relaxed)) return;
      }
    }
  }
  if (h - tail.load(std::memory_order_acquire) < kSize) {
    Entry& e = ring[h % kSize];
    e.id = c.id;
    e.meta = c.meta;
    e.window_start = c.window_start;
    e.extra = c.extra;
    e.cost.store(c.cost, std::memory_order_relaxed);
    head.store(h + 1, std::memory_order_release);
    return;
  }
  std::lock_guard<std::mutex> lock(overflow_mu);
  overflow.push_back(c);
}

template <typename Fn>
void LimiterEngine::Journal::Drain(Fn&& fn) {
  const uint64_t t = tail.load(std::memory_order_relaxed);
  const uint64_t h = head.load(std::memory_order_acquire);
  for (uint64_t i = t; i < h; ++i) {
    Entry& e = ring[i % kSize];
    // After the swap the producer adds nothing more here: it sees kTaken
    // and publishes a new entry instead.
    const int64_t cost = e.cost.exchange(kTaken, std::memory_order_relaxed);
    fn(Counted{e.id, e.meta, e.window_start, cost, e.extra});
  }
  tail.store(h, std::memory_order_release);
}

void LimiterEngine::DrainJournal(const std::function<void(const Counted&)>& fn) {
  std::vector<Journal*> journals;
  {
    std::lock_guard<std::mutex> lock(tallies_mu_);
    for (const auto& [thread, t] : tallies_) {
      if (t->journal) journals.push_back(t->journal.get());
    }
  }
  std::vector<Counted> spilled;
  for (Journal* j : journals) {
    j->Drain(fn);
    {
      std::lock_guard<std::mutex> lock(j->overflow_mu);
      spilled.swap(j->overflow);
    }
    for (const Counted& c : spilled) fn(c);
    spilled.clear();
  }
}

std::set<uint64_t> LimiterEngine::MetasOf(const RateLimitPolicy& policy) {
  std::set<uint64_t> metas;
  for (const Tier& t : policy.tiers) {
    for (const Rule& r : t.rules) {
      if (!r.local) metas.insert(MetaOf(r));
    }
  }
  for (const auto& [key, rules] : policy.overrides) {
    for (const Rule& r : rules) {
      if (!r.local) metas.insert(MetaOf(r));
    }
  }
  return metas;
}

Result<void> LimiterEngine::AddCounted(uint64_t id, uint64_t meta, int64_t window_start, uint64_t count) {
  const Algorithm a = AlgorithmOf(meta);
  const int64_t w = WindowOf(meta);
  if (!Additive(a) || w <= 0 || window_start % w != 0 || count == 0) {
    return MakeError(ErrorCode::kInvalidArgument, "not a count that adds up: algorithm " +
                                                      std::to_string(static_cast<int>(a)) + ", window " +
                                                      std::to_string(w) + " ms, start " + std::to_string(window_start));
  }
  const auto n = static_cast<int64_t>(std::min<uint64_t>(count, 0xffffffffu));
  auto updated = table_->Update(
      id, meta,
      [&](const CounterTable::Value& v) -> std::optional<CounterTable::Value> {
        LimiterState s = Unpack(a, v);
        if (s.a == window_start) {
          s.b += n;
        } else if (s.a < window_start) {  // the first count of a newer window
          const int64_t previous = a == Algorithm::kSlidingWindow && s.a == window_start - w ? s.b : 0;
          s = LimiterState{window_start, n, previous};
        } else if (a == Algorithm::kSlidingWindow && s.a == window_start + w) {
          s.c += n;  // the window before the counter's still weighs in
        } else {
          return std::nullopt;  // a window already behind this counter
        }
        if (a == Algorithm::kSlidingWindow) {  // 32 bits each in the table
          s.b = std::min(s.b, kMaxSlidingCount);
          s.c = std::min(s.c, kMaxSlidingCount);
        }
        return Pack(a, s);
      },
      IdleAt{clock_.NowMs()});
  if (!updated) return tl::unexpected(std::move(updated.error()));
  return {};
}

void LimiterEngine::Retract(uint64_t id, uint64_t meta, int64_t window_start, uint64_t count) {
  const Algorithm a = AlgorithmOf(meta);
  const int64_t w = WindowOf(meta);
  if (!Additive(a) || count == 0) return;
  const CounterTable::Value current = table_->Load(id);
  if (current.lo == 0 && current.hi == 0) return;  // gone (reclaimed): nothing to take back
  const auto n = static_cast<int64_t>(std::min<uint64_t>(count, uint64_t{1} << 62));
  (void)table_->Update(
      id, meta,
      [&](const CounterTable::Value& v) -> std::optional<CounterTable::Value> {
        LimiterState s = Unpack(a, v);
        if (s.a == window_start) {
          s.b = std::max<int64_t>(0, s.b - n);
        } else if (a == Algorithm::kSlidingWindow && s.a == window_start + w) {
          s.c = std::max<int64_t>(0, s.c - n);  // now the previous window
        } else {
          return std::nullopt;  // a window this counter has left behind
        }
        return Pack(a, s);
      },
      IdleAt{clock_.NowMs()});
}

Result<Decision> LimiterEngine::Check(std::string_view key, std::string_view tier_name, uint64_t cost) {
  if (cost == 0) return MakeError(ErrorCode::kInvalidArgument, "cost must be at least 1");
  const CompiledPolicy* policy = current_.load(std::memory_order_acquire);
  const RuleSet* rules = nullptr;
  if (!policy->overrides.empty()) {
    if (auto o = policy->overrides.find(key); o != policy->overrides.end()) rules = &o->second;
  }
  for (size_t i = 0; rules == nullptr && i < policy->tiers.size(); ++i) {
    if (policy->tiers[i].first == tier_name) rules = &policy->tiers[i].second;
  }
  if (rules == nullptr) return MakeError(ErrorCode::kInvalidArgument, "unknown tier '" + std::string(tier_name) + "'");

  const int64_t now = clock_.NowMs();
  const uint64_t key_hash = XXH3_64bits(key.data(), key.size());
  Verdict verdict;
  size_t reported = 0;  // the rule the decision reports
  Result<void> ok = rules->size() == 1 ? CheckOne(rules->front(), key_hash, now, cost, verdict)
                                       : CheckAll(*rules, key_hash, now, cost, verdict, reported);
  if (!ok) return tl::unexpected(std::move(ok.error()));
  Count(verdict.allowed, verdict.shadow_denied);
  // Built in place, field by field: a Decision is costly to move or zero.
  const Verdict& v = verdict;
#ifdef __cpp_aggregate_paren_init
  return Result<Decision>(tl::in_place, v.allowed, v.limit, v.window, v.remaining, v.reset, v.retry_after,
                          (*rules)[reported].rule.name, v.shadow_denied);
#else  // clang before 16 cannot initialize an aggregate from parentheses: one move
  return Result<Decision>(tl::in_place, Decision{v.allowed, v.limit, v.window, v.remaining, v.reset, v.retry_after,
                                                 (*rules)[reported].rule.name, v.shadow_denied});
#endif
}

// The common case, one rule: one compare-and-swap, no peek.
Result<void> LimiterEngine::CheckOne(const CountedRule& r, uint64_t key_hash, int64_t now, uint64_t cost,
                                     Verdict& out) {
  bool written = false;
  if (auto ok = Commit(r, CounterId(key_hash, r.seed), now, cost, out, written); !ok) return ok;
  if (r.rule.shadow && !out.allowed) {
    out.allowed = true;
    out.shadow_denied = true;
    out.retry_after = std::chrono::milliseconds(0);
  }
  return {};
}

Result<void> LimiterEngine::CheckAll(const RuleSet& rules, uint64_t key_hash, int64_t now, uint64_t cost, Verdict& out,
                                     size_t& reported) {
  const size_t n = rules.size();
  uint64_t ids[kMaxRulesPerSet];
  for (size_t i = 0; i < n; ++i) ids[i] = CounterId(key_hash, rules[i].seed);

  // Peek at every rule first: a request one rule denies counts against none.
  DecisionCombiner result;
  for (size_t i = 0; i < n; ++i) result.Add(Peek(rules[i], ids[i], now, cost), rules[i].rule.shadow, i);
  if (result.allowed()) {
    if (between_look_and_count_) between_look_and_count_();
    // Count rule by rule. A rule that a concurrent request filled since the
    // peek denies now, and the rules already counted give the cost back.
    bool written[kMaxRulesPerSet] = {};
    for (size_t i = 0; i < n; ++i) {
      const CountedRule& r = rules[i];
      Verdict d;
      auto ok = Commit(r, ids[i], now, cost, d, written[i]);
      const bool denies = ok && !d.allowed && !r.rule.shadow;
      if (!ok || denies) {
        bool gave_back = false;
        for (size_t j = 0; j < i; ++j) {
          if (written[j]) Uncommit(rules[j], ids[j], now, cost);
          gave_back |= written[j];
        }
        if (!ok) return ok;
        if (gave_back) CountGivenBack();
        result = DecisionCombiner();
      }
      result.Add(d, r.rule.shadow, i);
      if (denies) break;
    }
  }
  if (result.any_enforced()) {
    out = result.tightest();
  } else {  // only shadow rules: report the first, never deny
    out = Peek(rules[0], ids[0], now, cost);
    out.allowed = true;
    out.retry_after = std::chrono::milliseconds(0);
  }
  out.shadow_denied = result.shadow_denied();
  reported = result.tightest_index();
  return {};
}

namespace {
// A tally has one writer: no locked instruction.
void Bump(std::atomic<uint64_t>& n) { n.store(n.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); }
}  // namespace

void LimiterEngine::Count(bool allowed, bool shadow_denied) {
  Tally& t = MyTally();
  Bump(allowed ? t.allowed : t.denied);
  if (shadow_denied) Bump(t.shadow_denied);
}

void LimiterEngine::CountGivenBack() { Bump(MyTally().given_back); }

LimiterEngine::Tally& LimiterEngine::MyTally() {
  struct Entry {
    uint64_t serial;
    Tally* tally;
  };
  // Initial-exec: a plain %fs-relative load, not a call, from this library.
  static thread_local Entry cache[4] __attribute__((tls_model("initial-exec")));
  static thread_local unsigned next __attribute__((tls_model("initial-exec")));
  for (const Entry& e : cache) {
    if (e.serial == serial_) return *e.tally;
  }
  std::lock_guard<std::mutex> lock(tallies_mu_);
  // A thread id is reused only after its thread ended: the tally keeps one writer.
  std::unique_ptr<Tally>& mine = tallies_[std::this_thread::get_id()];
  if (!mine) {
    mine = std::make_unique<Tally>();
    if (journal_) mine->journal = std::make_unique<Journal>();
  }
  cache[next++ % std::size(cache)] = Entry{serial_, mine.get()};
  return *mine;
}

uint64_t LimiterEngine::ReclaimIdle(uint64_t max_slots) {
  const int64_t now = clock_.NowMs();
  uint64_t dropped = table_->Reclaim(max_slots, IdleAt{now});
  return dropped + logs_.Reclaim(now);
}

RateLimiterStats LimiterEngine::Stats() const {
  RateLimiterStats s;
  {
    std::lock_guard<std::mutex> lock(tallies_mu_);
    for (const auto& [thread, t] : tallies_) {
      s.allowed += t->allowed.load(std::memory_order_relaxed);
      s.denied += t->denied.load(std::memory_order_relaxed);
      s.shadow_denied += t->shadow_denied.load(std::memory_order_relaxed);
      s.given_back += t->given_back.load(std::memory_order_relaxed);
    }
  }
  s.counters = table_->used() + logs_.size();
  s.capacity = table_->capacity();
  return s;
}

}  // namespace cachet::detail
