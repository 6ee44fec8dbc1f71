// CounterTable: 16-byte counters keyed by 64-bit ids, in memory private to
// this process or in a named shared-memory segment that every process on
// the host may update.
//
// Updates are lock-free: one 16-byte compare-and-swap on the counter,
// retried on contention. A process killed at any instruction leaves each
// counter as it was or as it was written, never in between. Ids are placed
// by open addressing within a short probe window; placing a new id takes a
// robust process-shared lock striped by id (so two processes never place
// one id twice), and a lock left by a dead process is repaired by the next
// holder. Counters whose owner says they are idle are reclaimed, by a sweep
// (Reclaim) or by a new id that finds its window full, so the capacity
// bounds the ids alive at once, not the ids ever seen.
//
// Thread and process safety: every method, from any thread of any process.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "cachet/result.h"

namespace cachet {

// A non-owning reference to a callable, for callbacks that run inside a
// call and are not kept (cheaper than std::function: no allocation, one
// indirect call).
template <typename Signature>
class FunctionRef;
template <typename R, typename... Args>
class FunctionRef<R(Args...)> {
 public:
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(F&& f)  // NOLINT(google-explicit-constructor): passed like a lambda
      : object_(const_cast<void*>(static_cast<const void*>(&f))), call_([](void* o, Args... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<Args>(args)...);
        }) {}
  R operator()(Args... args) const { return call_(object_, std::forward<Args>(args)...); }

 private:
  void* object_;
  R (*call_)(void*, Args...);
};

class CounterTable {
 public:
  // A counter's value. `lo` carries at most kLoBits bits (the table keeps
  // the slot's state and generation beside them); `hi` is all the caller's.
  struct Value {
    uint64_t lo = 0;
    uint64_t hi = 0;
  };
  static constexpr int kLoBits = 46;
  static constexpr uint64_t kMaxLo = (uint64_t{1} << kLoBits) - 1;

  // Computes the new value from the current one; nullopt leaves it as is.
  using UpdateFn = FunctionRef<std::optional<Value>(const Value& current)>;
  // True when a counter may be dropped. `meta` is what its id was placed
  // with (for instance how to read the value).
  using IdleFn = FunctionRef<bool(uint64_t meta, const Value& value)>;

  // Opens the named table, creating it with room for `capacity` ids if it
  // does not exist; an existing table keeps the capacity it was made with.
  static Result<std::unique_ptr<CounterTable>> Open(const std::string& name, uint64_t capacity);
  // A table in this process's own memory (pages are touched as ids arrive).
  static Result<std::unique_ptr<CounterTable>> CreatePrivate(uint64_t capacity);
  static Result<void> Remove(const std::string& name);
  ~CounterTable();
  CounterTable(const CounterTable&) = delete;
  CounterTable& operator=(const CounterTable&) = delete;

  // Applies `fn` atomically to the counter of `id` (not 0). A new id is
  // placed with `meta` and goes live with `fn`'s value from zero (zero if
  // `fn` declines); if its probe window is full, counters `idle` approves
  // there are dropped to make room. `fn` may run more than once (on
  // contention): only its last call's value is written. Returns whether
  // `fn`'s value was written. NO_SPACE when the window holds no free or idle slot.
  Result<bool> Update(uint64_t id, uint64_t meta, UpdateFn fn, IdleFn idle);
  // The current value, zero for an id not in the table.
  Value Load(uint64_t id) const;
  // Drops the counters `idle` approves among the next `max_slots` slots (a
  // cursor shared by every process moves on); returns how many it dropped.
  uint64_t Reclaim(uint64_t max_slots, IdleFn idle);

  uint64_t capacity() const;
  uint64_t used() const;  // ids placed and not yet dropped
  // Placement locks taken over from processes that died holding them (each
  // time, the slots that process left half-placed were freed), since the
  // table was made.
  uint64_t repairs() const;

  class Impl;

 private:
  explicit CounterTable(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachet
