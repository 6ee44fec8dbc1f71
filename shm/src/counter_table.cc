#include "cachet/counter_table.h"

#include <type_traits>

#include "atomics.h"
#include "segment.h"

namespace cachet {

using namespace detail;

namespace {

// A GCC/Clang extension type (hence __extension__, for -Wpedantic).
__extension__ typedef unsigned __int128 U128;

constexpr uint64_t kTableMagic = 0x3174726574636321ull;  // "!cctrt1"
constexpr uint32_t kTableVersion = 1;

struct alignas(64) TableHeader {
  uint64_t magic;  // published last, with release
  uint32_t version;
  uint32_t reserved;
  uint64_t capacity;
  uint64_t used;  // atomic relaxed: ids claimed
};

// 32 bytes: the id, then the 16-byte counter (16-byte aligned for CAS).
struct alignas(32) Slot {
  uint64_t id;  // atomic: 0 = free; claimed once by CAS, never released
  uint64_t reserved;
  U128 value;  // atomic: 16-byte loads and CAS only
};
static_assert(sizeof(Slot) == 32 && std::is_trivially_copyable_v<Slot>);

constexpr uint64_t kHeaderBytes = 4096;

uint64_t Mix(uint64_t x) {  // splitmix64 finalizer: spreads ids over the table
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

U128 Pack(const CounterTable::Value& v) { return static_cast<U128>(v.hi) << 64 | v.lo; }
CounterTable::Value Unpack(U128 x) { return {static_cast<uint64_t>(x), static_cast<uint64_t>(x >> 64)}; }

// The 16-byte compare-and-swap, written as the instruction itself. Compiler
// builtins would do in a plain build, but sanitizers replace them with
// runtime calls that lock per process, which would silently stop the table
// being atomic between processes. On success returns true; on failure
// `expected` receives the current value.
bool Cas16(U128* p, U128& expected, U128 desired) {
#if defined(__x86_64__)
  uint64_t lo = static_cast<uint64_t>(expected);
  uint64_t hi = static_cast<uint64_t>(expected >> 64);
  bool ok;
  __asm__ __volatile__("lock cmpxchg16b %1"
                       : "=@ccz"(ok), "+m"(*p), "+a"(lo), "+d"(hi)
                       : "b"(static_cast<uint64_t>(desired)), "c"(static_cast<uint64_t>(desired >> 64))
                       : "memory");
  expected = static_cast<U128>(hi) << 64 | lo;
  return ok;
#else
  return __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
#endif
}

// An atomic 16-byte read: a compare-and-swap that writes back what it finds.
U128 Load16(U128* p) {
  U128 current = 0;
  (void)Cas16(p, current, 0);
  return current;
}

}  // namespace

class CounterTable::Impl {
 public:
  explicit Impl(std::unique_ptr<Segment> segment)
      : segment_(std::move(segment)),
        header_(reinterpret_cast<TableHeader*>(segment_->base())),
        slots_(reinterpret_cast<Slot*>(segment_->base() + kHeaderBytes)) {}

  static uint64_t BytesFor(uint64_t capacity) { return kHeaderBytes + capacity * sizeof(Slot); }

  void Format(uint64_t capacity) {
    header_->version = kTableVersion;
    header_->capacity = capacity;
    StoreRelease(header_->magic, kTableMagic);
  }

  Result<void> Validate(const std::string& name) const {
    if (segment_->size() < kHeaderBytes || LoadAcquire(header_->magic) != kTableMagic) {
      return MakeError(ErrorCode::kCorrupt, "'" + name + "' is not a cachet counter table (or is still being made)");
    }
    if (header_->version != kTableVersion) {
      return MakeError(ErrorCode::kVersionMismatch, "counter table '" + name + "' has layout version " +
                                                        std::to_string(header_->version) + ", this library reads " +
                                                        std::to_string(kTableVersion));
    }
    if (BytesFor(header_->capacity) != segment_->size()) {
      return MakeError(ErrorCode::kCorrupt, "counter table '" + name + "' size does not match its capacity");
    }
    return {};
  }

  // The slot of `id`, claiming a free one if needed; nullptr when full.
  Slot* Find(uint64_t id, bool claim) {
    const uint64_t capacity = header_->capacity;
    uint64_t i = Mix(id) % capacity;
    for (uint64_t n = 0; n < capacity; ++n, i = i + 1 == capacity ? 0 : i + 1) {
      Slot& s = slots_[i];
      uint64_t current = LoadAcquire(s.id);
      if (current == id) return &s;
      if (current == 0) {
        if (!claim) return nullptr;  // ids are never released: a free slot ends the probe
        if (__atomic_compare_exchange_n(&s.id, &current, id, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
          AddRelaxed(header_->used, uint64_t{1});
          return &s;
        }
        if (current == id) return &s;  // another process claimed it for the same id
      }
    }
    return nullptr;
  }

  Result<void> Update(uint64_t id, const UpdateFn& fn) {
    if (id == 0) return MakeError(ErrorCode::kInvalidArgument, "counter id 0 is reserved");
    Slot* s = Find(id, true);
    if (s == nullptr) {
      return MakeError(ErrorCode::kNoSpace, "counter table is full (" + std::to_string(header_->capacity) + " ids)");
    }
    U128 current = Load16(&s->value);
    for (;;) {
      const std::optional<Value> next = fn(Unpack(current));
      if (!next) return {};
      if (Cas16(&s->value, current, Pack(*next))) return {};
      // Someone else won: `current` now holds what they wrote; recompute.
    }
  }

  Value Load(uint64_t id) {
    Slot* s = id == 0 ? nullptr : Find(id, false);
    return s == nullptr ? Value{} : Unpack(Load16(&s->value));
  }

  uint64_t capacity() const { return header_->capacity; }
  uint64_t used() const { return LoadRelaxed(header_->used); }

 private:
  std::unique_ptr<Segment> segment_;
  TableHeader* header_;
  Slot* slots_;
};

CounterTable::CounterTable(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CounterTable::~CounterTable() = default;

Result<std::unique_ptr<CounterTable>> CounterTable::Open(const std::string& name, uint64_t capacity) {
  if (capacity == 0 || capacity > (1ull << 28)) {
    return MakeError(ErrorCode::kInvalidArgument, "counter table capacity must be 1 to 2^28 ids");
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto existing = Segment::OpenNamed(name);
    if (existing) {
      auto impl = std::make_unique<Impl>(std::move(*existing));
      if (auto ok = impl->Validate(name); !ok) return tl::unexpected(ok.error());
      return std::unique_ptr<CounterTable>(new CounterTable(std::move(impl)));
    }
    if (existing.error().code != ErrorCode::kNotFound) return tl::unexpected(existing.error());
    auto created = Segment::CreateNamed(name, Impl::BytesFor(capacity));
    if (created) {
      auto impl = std::make_unique<Impl>(std::move(*created));
      impl->Format(capacity);
      return std::unique_ptr<CounterTable>(new CounterTable(std::move(impl)));
    }
    if (created.error().code != ErrorCode::kAlreadyExists) return tl::unexpected(created.error());
    // Another process created it between our open and create: open it.
  }
  return MakeError(ErrorCode::kIo, "counter table '" + name + "' could be neither opened nor created");
}

Result<void> CounterTable::Remove(const std::string& name) { return Segment::RemoveNamed(name); }

Result<void> CounterTable::Update(uint64_t id, const UpdateFn& fn) { return impl_->Update(id, fn); }
CounterTable::Value CounterTable::Load(uint64_t id) const { return impl_->Load(id); }
uint64_t CounterTable::capacity() const { return impl_->capacity(); }
uint64_t CounterTable::used() const { return impl_->used(); }

}  // namespace cachet
