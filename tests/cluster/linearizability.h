// A linearizability checker for histories of single-key registers, and the
// recorder the cluster tests fill while they run.
//
// A history is what clients saw: for each operation, when it was invoked,
// when it returned, and what it returned. It is linearizable when every
// operation can be given one instant inside its [invoke, return] interval
// such that, in the order of those instants, each register behaves as a
// plain sequential register (a read returns the last value written).
//
// The check is Wing & Gong's search with Lowe's memoization, as Porcupine
// does it: the history is split by key (linearizability is compositional,
// so each register is checked alone), then a depth-first search tries, at
// each point, every pending operation that could come next, undoing when an
// operation's return is reached without it having been placed. A set of
// (operations placed so far, register value) pairs already explored prunes
// the search. Work is bounded by `CheckOptions::max_steps` (model steps
// tried, summed over keys): a history too large to decide within it gets
// CheckOutcome::kTooLarge, never a hang.
//
// Statuses: `kOk` took effect and its output is known; `kFail` certainly did
// not take effect (it is dropped); `kUnknown` may or may not have taken
// effect (a timeout): its return time is kNever and its output is ignored, so
// it may be placed anywhere after its invocation, or nowhere.
//
// Thread safety: CheckLinearizable is a pure function. HistoryRecorder may be
// called from any number of threads at once.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace cachet::testing {

enum class OpKind {
  kRead,       // output: the value read, nullopt for a miss
  kWrite,      // input: the value written, nullopt for a delete
  kIncrement,  // input: the decimal delta; output: the decimal value after it.
               // An absent register counts as 0 (as INCR does).
};

enum class OpStatus { kOk, kFail, kUnknown };

struct Operation {
  // Times in nanoseconds on one monotonic clock (any origin).
  static constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

  int client = 0;
  std::string key;
  OpKind kind = OpKind::kRead;
  std::optional<std::string> input;
  std::optional<std::string> output;
  int64_t invoke_ns = 0;
  int64_t return_ns = kNever;  // kNever when status is kUnknown
  OpStatus status = OpStatus::kOk;
};

// "#12 client 3 read k -> \"v7\" [1.204 ms, 1.530 ms]", times relative to `origin_ns`.
std::string Describe(const Operation& op, size_t index, int64_t origin_ns = 0);

struct CheckOptions {
  // Model steps tried, over all keys, before giving up with kTooLarge.
  uint64_t max_steps = 5'000'000;
  // A key's value before the history; absent unless listed.
  std::map<std::string, std::optional<std::string>> initial;
};

enum class CheckOutcome {
  kLinearizable,
  kNotLinearizable,
  kTooLarge,        // not decided within max_steps
  kInvalidHistory,  // an operation returns before its invocation, or an increment is not decimal
};

struct CheckResult {
  CheckOutcome outcome = CheckOutcome::kLinearizable;
  // Unless kLinearizable: the key concerned, and for
  // kNotLinearizable the longest order of that key's operations the search
  // could build, the operation whose return it could not get past, and the
  // operations that were pending there.
  std::string key;
  std::string explanation;
  uint64_t steps = 0;  // model steps tried, over all keys

  bool linearizable() const { return outcome == CheckOutcome::kLinearizable; }
};

CheckResult CheckLinearizable(const std::vector<Operation>& history, const CheckOptions& options = {});

// Collects a history from many client threads: Invoke just before sending an
// operation, Complete just after its reply (or its failure). Times come from
// std::chrono::steady_clock. An operation never completed is kUnknown in
// History().
class HistoryRecorder {
 public:
  HistoryRecorder() = default;
  HistoryRecorder(const HistoryRecorder&) = delete;
  HistoryRecorder& operator=(const HistoryRecorder&) = delete;

  // Returns the operation's index, for Complete.
  size_t Invoke(int client, std::string key, OpKind kind, std::optional<std::string> input = std::nullopt);
  // kOk: `output` is what it returned (a read's value, nullopt for a miss;
  // an increment's result). kFail: it certainly did not take effect.
  // kUnknown: it may have (its return time becomes kNever).
  // REQUIRES: `index` came from Invoke and was not completed yet.
  void Complete(size_t index, OpStatus status, std::optional<std::string> output = std::nullopt);

  // A copy of the history so far.
  std::vector<Operation> History() const;
  size_t size() const;

 private:
  static int64_t Now();

  mutable std::mutex mu_;
  std::vector<Operation> ops_;   // GUARDED_BY(mu_)
  std::vector<bool> completed_;  // GUARDED_BY(mu_)
};

}  // namespace cachet::testing
