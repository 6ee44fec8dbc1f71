// CounterTable: 16-byte counters keyed by 64-bit ids, in a named
// shared-memory segment that every process on the host may update.
//
// Updates are lock-free: a 16-byte compare-and-swap on the counter, retried
// on contention. A process killed at any instruction leaves each counter as
// it was or as it was written, never in between, and holds nothing another
// process waits on. Ids are claimed by compare-and-swap too; a slot, once
// claimed, keeps its id for the life of the segment (capacity bounds the
// number of distinct ids).
//
// Thread and process safety: every method, from any thread of any process.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "cachet/result.h"

namespace cachet {

class CounterTable {
 public:
  struct Value {
    uint64_t lo = 0;
    uint64_t hi = 0;
  };
  // Computes the new value from the current one; nullopt leaves it as is.
  using UpdateFn = std::function<std::optional<Value>(const Value& current)>;

  // Opens the named table, creating it with room for `capacity` ids if it
  // does not exist; an existing table keeps the capacity it was made with.
  static Result<std::unique_ptr<CounterTable>> Open(const std::string& name, uint64_t capacity);
  static Result<void> Remove(const std::string& name);
  ~CounterTable();
  CounterTable(const CounterTable&) = delete;
  CounterTable& operator=(const CounterTable&) = delete;

  // Applies `fn` atomically to the counter of `id` (not 0; a new id starts at
  // zero). NO_SPACE when the table has no free slot for a new id.
  Result<void> Update(uint64_t id, const UpdateFn& fn);
  // The current value, zero for an id never updated.
  Value Load(uint64_t id) const;

  uint64_t capacity() const;
  uint64_t used() const;

  class Impl;

 private:
  explicit CounterTable(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachet
