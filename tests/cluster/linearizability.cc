#include "cluster/linearizability.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <unordered_map>
#include <utility>

namespace cachet::testing {
namespace {

std::optional<int64_t> ParseInt(const std::string& text) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end || text.empty()) return std::nullopt;
  return value;
}

std::string Quote(const std::optional<std::string>& value) {
  if (!value) return "(none)";
  std::string out = "\"";
  for (const char c : value->substr(0, 40)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (value->size() > 40) out += "...";
  return out + "\"";
}

std::string Millis(int64_t ns) {
  if (ns == Operation::kNever) return "never";
  char text[32];
  std::snprintf(text, sizeof text, "%.3f ms", static_cast<double>(ns) / 1e6);
  return text;
}

// Values of one register, interned so that a state is an int.
class ValueTable {
 public:
  static constexpr int kAbsent = 0;
  ValueTable() { values_.emplace_back(std::nullopt); }
  int Intern(const std::optional<std::string>& value) {
    if (!value) return kAbsent;
    const auto [it, added] = ids_.emplace(*value, static_cast<int>(values_.size()));
    if (added) values_.push_back(value);
    return it->second;
  }
  const std::optional<std::string>& Value(int id) const { return values_[id]; }

 private:
  std::vector<std::optional<std::string>> values_;
  std::unordered_map<std::string, int> ids_;
};

// One operation of a key, prepared for the register model.
struct KeyOp {
  size_t index = 0;  // in the caller's history
  OpKind kind = OpKind::kRead;
  bool output_known = true;          // false for kUnknown
  int input = ValueTable::kAbsent;   // write: the value id
  int output = ValueTable::kAbsent;  // read: the value id
  int64_t delta = 0;                 // increment
  int64_t result = 0;                // increment, when output_known
  int64_t invoke_ns = 0, return_ns = 0;
};

// The state after `op` from `state`, or nullopt if a register cannot do it.
std::optional<int> Step(ValueTable& values, int state, const KeyOp& op) {
  switch (op.kind) {
    case OpKind::kRead:
      if (state != op.output) return std::nullopt;
      return state;
    case OpKind::kWrite: return op.input;
    case OpKind::kIncrement: {
      int64_t current = 0;
      if (state != ValueTable::kAbsent) {
        const std::optional<int64_t> parsed = ParseInt(*values.Value(state));
        if (!parsed) return std::nullopt;
        current = *parsed;
      }
      int64_t next = 0;
      if (__builtin_add_overflow(current, op.delta, &next)) return std::nullopt;
      if (op.output_known && next != op.result) return std::nullopt;
      return values.Intern(std::to_string(next));
    }
  }
  return std::nullopt;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The search's memo: the (set of operations placed, register state) pairs
// seen. The sets are stored end to end in one arena and found by a Zobrist
// hash (an XOR of one random word per operation placed), which the search
// keeps up to date as it places and takes back operations.
class Memo {
 public:
  explicit Memo(size_t ops) {
    for (size_t i = 0; i < ops; ++i) keys_.push_back(SplitMix64(i));
  }
  uint64_t Key(int op) const { return keys_[static_cast<size_t>(op)]; }

  // Records (placed, state); false if it was seen before.
  bool Insert(const std::vector<uint64_t>& placed, uint64_t placed_hash, int state) {
    const uint64_t hash = placed_hash ^ SplitMix64(~static_cast<uint64_t>(state));
    const auto [first, last] = index_.equal_range(hash);
    for (auto it = first; it != last; ++it) {
      if (it->second.state == state && std::equal(placed.begin(), placed.end(), arena_.begin() + it->second.offset)) {
        return false;
      }
    }
    index_.emplace(hash, Slot{static_cast<ptrdiff_t>(arena_.size()), state});
    arena_.insert(arena_.end(), placed.begin(), placed.end());
    return true;
  }

 private:
  struct Slot {
    ptrdiff_t offset;  // of the set's words in arena_
    int state;
  };
  std::vector<uint64_t> keys_;
  std::vector<uint64_t> arena_;
  std::unordered_multimap<uint64_t, Slot> index_;
};

// The outcome for one key: linearizable, not (with the explanation), or out of budget.
struct KeyVerdict {
  CheckOutcome outcome = CheckOutcome::kLinearizable;
  std::string explanation;
};

// Wing & Gong / Lowe over one key's operations.
class KeySearch {
 public:
  KeySearch(std::vector<KeyOp> ops, ValueTable& values, int initial, const std::vector<Operation>& history,
            int64_t origin_ns)
      : ops_(std::move(ops)), values_(values), initial_(initial), history_(history), origin_ns_(origin_ns) {
    BuildEntries();
  }

  KeyVerdict Run(uint64_t budget, uint64_t* steps) {
    const size_t n = ops_.size();
    std::vector<uint64_t> placed((n + 63) / 64, 0);
    uint64_t placed_hash = 0;
    Memo seen(n);
    struct Frame {
      int entry;
      int state_before;
    };
    std::vector<Frame> stack;
    int state = initial_;
    int entry = entries_[head_].next;
    size_t deepest = 0;
    std::string deepest_explanation;
    while (entries_[head_].next != kNil) {
      Entry& e = entries_[entry];
      if (e.is_call) {
        if (*steps >= budget) {
          return {CheckOutcome::kTooLarge, "gave up after " + std::to_string(*steps) + " steps with " +
                                               std::to_string(stack.size()) + " of " + std::to_string(n) +
                                               " operations of this key placed"};
        }
        ++*steps;
        const std::optional<int> next = Step(values_, state, ops_[e.op]);
        if (next) {
          placed[e.op / 64] |= uint64_t{1} << (e.op % 64);
          if (seen.Insert(placed, placed_hash ^ seen.Key(e.op), *next)) {
            placed_hash ^= seen.Key(e.op);
            stack.push_back({entry, state});
            state = *next;
            Lift(entry);
            entry = entries_[head_].next;
            continue;
          }
          placed[e.op / 64] &= ~(uint64_t{1} << (e.op % 64));
        }
        entry = e.next;
        continue;
      }
      // A return: this operation had to be placed before here, and no
      // pending one can be placed next. Back up.
      if (deepest_explanation.empty() || stack.size() > deepest) {
        deepest = stack.size();
        deepest_explanation = Explain(stack.size(), entry, stack, state);
      }
      if (stack.empty()) return {CheckOutcome::kNotLinearizable, deepest_explanation};
      const Frame frame = stack.back();
      stack.pop_back();
      state = frame.state_before;
      const int op = entries_[frame.entry].op;
      placed[op / 64] &= ~(uint64_t{1} << (op % 64));
      placed_hash ^= seen.Key(op);
      Unlift(frame.entry);
      entry = entries_[frame.entry].next;
    }
    return {};
  }

 private:
  static constexpr int kNil = -1;
  struct Entry {
    bool is_call = false;
    int op = 0;
    int match = kNil;  // a call's return entry
    int prev = kNil, next = kNil;
  };

  void BuildEntries() {
    struct Event {
      int64_t time;
      bool is_call;
      int op;
    };
    std::vector<Event> events;
    for (size_t i = 0; i < ops_.size(); ++i) {
      events.push_back({ops_[i].invoke_ns, true, static_cast<int>(i)});
      events.push_back({ops_[i].return_ns, false, static_cast<int>(i)});
    }
    // At equal times a call comes first: the two operations overlap.
    std::stable_sort(events.begin(), events.end(), [](const Event& a, const Event& b) {
      if (a.time != b.time) return a.time < b.time;
      return a.is_call && !b.is_call;
    });
    entries_.resize(events.size() + 1);
    head_ = static_cast<int>(events.size());
    std::vector<int> call_of(ops_.size(), kNil);
    int prev = head_;
    for (size_t i = 0; i < events.size(); ++i) {
      Entry& e = entries_[i];
      e.is_call = events[i].is_call;
      e.op = events[i].op;
      if (e.is_call) {
        call_of[e.op] = static_cast<int>(i);
      } else {
        entries_[call_of[e.op]].match = static_cast<int>(i);
      }
      e.prev = prev;
      entries_[prev].next = static_cast<int>(i);
      prev = static_cast<int>(i);
    }
    entries_[prev].next = kNil;
  }

  void Unlink(int i) {
    Entry& e = entries_[i];
    entries_[e.prev].next = e.next;
    if (e.next != kNil) entries_[e.next].prev = e.prev;
  }
  void Relink(int i) {
    Entry& e = entries_[i];
    entries_[e.prev].next = i;
    if (e.next != kNil) entries_[e.next].prev = i;
  }
  void Lift(int call) {
    Unlink(call);
    Unlink(entries_[call].match);
  }
  void Unlift(int call) {
    Relink(entries_[call].match);
    Relink(call);
  }

  std::string DescribeOp(int op) const { return Describe(history_[ops_[op].index], ops_[op].index, origin_ns_); }

  // Why the search stopped at return entry `blocked`: what it had placed
  // (the last few), the value then, and what was pending.
  template <typename Stack>
  std::string Explain(size_t depth, int blocked, const Stack& stack, int state) const {
    constexpr size_t kShown = 8;
    std::string text =
        "longest order found places " + std::to_string(depth) + " of " + std::to_string(ops_.size()) + " operations";
    if (depth > 0) {
      text += depth > kShown ? ", ending ..." : ":";
      for (size_t i = depth > kShown ? depth - kShown : 0; i < depth; ++i) {
        text += "\n    " + DescribeOp(entries_[stack[i].entry].op);
      }
    }
    text += "\n  register then holds " + Quote(values_.Value(state));
    text += "\n  cannot place " + DescribeOp(entries_[blocked].op) +
            " before it returns: no pending operation fits next. Pending:";
    size_t shown = 0;
    for (int i = entries_[head_].next; i != kNil && i != blocked; i = entries_[i].next) {
      if (!entries_[i].is_call) continue;
      if (++shown > kShown) {
        text += "\n    ...";
        break;
      }
      text += "\n    " + DescribeOp(entries_[i].op);
    }
    return text;
  }

  std::vector<KeyOp> ops_;
  ValueTable& values_;
  const int initial_;
  const std::vector<Operation>& history_;
  const int64_t origin_ns_;
  std::vector<Entry> entries_;
  int head_ = 0;
};

// An unknown write stays pending to the end of the history, and each one
// doubles the orders to try. On a key without increments (the only ops
// that make a value other than by writing it) two rewrites keep exactly the
// same answer:
//  - an unknown write whose value no read returned is dropped: in any order
//    that places it, nothing reads its value before the next write, so the
//    order without it fits too;
//  - an unknown write that is the only source of its value (no other write,
//    not the initial value) and is read must come before the first read of
//    that value returns: that becomes its return time.
void BoundUnknownWrites(int initial_state, std::vector<KeyOp>* ops) {
  std::unordered_map<int, int> writers{{initial_state, 1}};
  std::unordered_map<int, int64_t> first_read_return;
  for (const KeyOp& op : *ops) {
    if (op.kind == OpKind::kIncrement) return;
    if (op.kind == OpKind::kWrite) ++writers[op.input];
    if (op.kind == OpKind::kRead) {
      const auto [it, added] = first_read_return.emplace(op.output, op.return_ns);
      if (!added) it->second = std::min(it->second, op.return_ns);
    }
  }
  std::vector<KeyOp> kept;
  kept.reserve(ops->size());
  for (KeyOp& op : *ops) {
    if (op.kind == OpKind::kWrite && !op.output_known) {
      const auto read = first_read_return.find(op.input);
      if (read == first_read_return.end()) continue;
      if (writers[op.input] == 1) op.return_ns = std::max(op.invoke_ns, read->second);
    }
    kept.push_back(op);
  }
  *ops = std::move(kept);
}

const char* KindName(OpKind kind) {
  switch (kind) {
    case OpKind::kRead: return "read";
    case OpKind::kWrite: return "write";
    case OpKind::kIncrement: return "increment";
  }
  return "?";
}

}  // namespace

std::string Describe(const Operation& op, size_t index, int64_t origin_ns) {
  std::string text =
      "#" + std::to_string(index) + " client " + std::to_string(op.client) + " " + KindName(op.kind) + " " + op.key;
  if (op.kind != OpKind::kRead) text += " " + Quote(op.input);
  switch (op.status) {
    case OpStatus::kOk:
      if (op.kind != OpKind::kWrite) text += " -> " + Quote(op.output);
      break;
    case OpStatus::kFail: text += " (failed)"; break;
    case OpStatus::kUnknown: text += " (unknown)"; break;
  }
  const int64_t ret = op.status == OpStatus::kUnknown ? Operation::kNever : op.return_ns;
  text +=
      " [" + Millis(op.invoke_ns - origin_ns) + ", " + Millis(ret == Operation::kNever ? ret : ret - origin_ns) + "]";
  return text;
}

CheckResult CheckLinearizable(const std::vector<Operation>& history, const CheckOptions& options) {
  CheckResult result;
  int64_t origin_ns = Operation::kNever;
  for (const Operation& op : history) origin_ns = std::min(origin_ns, op.invoke_ns);

  std::map<std::string, std::vector<KeyOp>> by_key;
  std::map<std::string, ValueTable> values;
  for (size_t i = 0; i < history.size(); ++i) {
    const Operation& op = history[i];
    if (op.status == OpStatus::kFail) continue;  // never took effect
    // A read that may not have happened, with no known output, constrains nothing.
    if (op.status == OpStatus::kUnknown && op.kind == OpKind::kRead) continue;
    const auto invalid = [&](const std::string& why) {
      result.outcome = CheckOutcome::kInvalidHistory;
      result.key = op.key;
      result.explanation = Describe(op, i, origin_ns) + ": " + why;
      return result;
    };
    KeyOp k;
    k.index = i;
    k.kind = op.kind;
    k.output_known = op.status == OpStatus::kOk;
    k.invoke_ns = op.invoke_ns;
    k.return_ns = op.status == OpStatus::kUnknown ? Operation::kNever : op.return_ns;
    if (k.return_ns < k.invoke_ns) return invalid("returns before it is invoked");
    ValueTable& table = values[op.key];
    switch (op.kind) {
      case OpKind::kRead: k.output = table.Intern(op.output); break;
      case OpKind::kWrite: k.input = table.Intern(op.input); break;
      case OpKind::kIncrement: {
        const std::optional<int64_t> delta = op.input ? ParseInt(*op.input) : std::nullopt;
        if (!delta) return invalid("the delta is not a decimal integer");
        k.delta = *delta;
        if (k.output_known) {
          const std::optional<int64_t> value = op.output ? ParseInt(*op.output) : std::nullopt;
          if (!value) return invalid("the result is not a decimal integer");
          k.result = *value;
        }
        break;
      }
    }
    by_key[op.key].push_back(k);
  }

  for (auto& [key, ops] : by_key) {
    ValueTable& table = values[key];
    const auto initial = options.initial.find(key);
    const int initial_state = initial == options.initial.end() ? ValueTable::kAbsent : table.Intern(initial->second);
    BoundUnknownWrites(initial_state, &ops);
    KeySearch search(std::move(ops), table, initial_state, history, origin_ns);
    const KeyVerdict verdict = search.Run(options.max_steps, &result.steps);
    if (verdict.outcome == CheckOutcome::kLinearizable) continue;
    result.outcome = verdict.outcome;
    result.key = key;
    result.explanation = "key " + key + ": " + verdict.explanation;
    // A definite "no" on a later key outranks running out of budget here,
    // but there is no budget left to look for one.
    return result;
  }
  return result;
}

int64_t HistoryRecorder::Now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

size_t HistoryRecorder::Invoke(int client, std::string key, OpKind kind, std::optional<std::string> input) {
  Operation op;
  op.client = client;
  op.key = std::move(key);
  op.kind = kind;
  op.input = std::move(input);
  op.status = OpStatus::kUnknown;
  std::lock_guard<std::mutex> lock(mu_);
  // Read under the lock: an operation invoked after another was completed
  // (as its recording order shows) never gets an earlier time.
  op.invoke_ns = Now();
  ops_.push_back(std::move(op));
  completed_.push_back(false);
  return ops_.size() - 1;
}

void HistoryRecorder::Complete(size_t index, OpStatus status, std::optional<std::string> output) {
  const int64_t now = Now();
  std::lock_guard<std::mutex> lock(mu_);
  if (index >= ops_.size() || completed_[index]) {
    std::fprintf(stderr, "HistoryRecorder::Complete(%zu): no such pending operation\n", index);
    std::abort();
  }
  completed_[index] = true;
  Operation& op = ops_[index];
  op.status = status;
  op.output = std::move(output);
  op.return_ns = status == OpStatus::kUnknown ? Operation::kNever : std::max(now, op.invoke_ns);
}

std::vector<Operation> HistoryRecorder::History() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ops_;
}

size_t HistoryRecorder::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ops_.size();
}

}  // namespace cachet::testing
