#include "cachet/counter_table.h"

#include <pthread.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <type_traits>

#include "atomics.h"
#include "segment.h"

#if defined(__SANITIZE_THREAD__)
#define CACHET_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CACHET_TSAN 1
#endif
#endif
#if defined(CACHET_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

namespace cachet {

using namespace detail;

namespace {

constexpr uint64_t kTableMagic = 0x3274726574636321ull;  // "!cctrt2"
constexpr uint32_t kTableVersion = 2;
// An id may be placed in kWindows windows of kProbe slots, each starting
// at a home of its own; a window takes the ids whose earlier windows are
// full. One window alone refuses ids at half load (linear probing makes
// clusters); six refused none of 1,000,000 ids at 80% load. Most ids sit
// in their first window, so a lookup reads one or two cache lines.
constexpr uint64_t kProbe = 32;
constexpr int kWindows = 6;
constexpr uint64_t kLocks = 64;                    // placement locks, striped by id
constexpr std::chrono::seconds kMakingTimeout{2};  // how long an opener waits for a table being made

// The low word of a counter: the caller's kLoBits bits, the slot's state
// and a generation. The generation changes whenever the slot is freed, so a
// compare-and-swap prepared against one owner can never land on the next.
// A slot never used has a low word of 0 (generations skip 0), and ends
// every probe: nothing is placed past a slot that was free at the time.
enum SlotState : uint64_t { kFree = 0, kPlacing = 1, kLive = 2 };
constexpr int kStateShift = 16;
constexpr uint64_t GenOf(uint64_t lo) { return lo & 0xffff; }
constexpr uint64_t StateOf(uint64_t lo) { return (lo >> kStateShift) & 3; }
constexpr uint64_t UserOf(uint64_t lo) { return lo >> (64 - CounterTable::kLoBits); }
constexpr uint64_t MakeLo(uint64_t user, uint64_t state, uint64_t gen) {
  return user << (64 - CounterTable::kLoBits) | state << kStateShift | gen;
}
constexpr uint64_t NextGen(uint64_t gen) { return (gen + 1) & 0xffff ? (gen + 1) & 0xffff : 1; }

struct alignas(16) Word {
  uint64_t lo;  // atomic; see MakeLo
  uint64_t hi;  // atomic
};

// 32 bytes. `id` and `meta` are written by the placer before the slot goes
// live and stay until it is freed; `value` changes only by 16-byte CAS.
struct alignas(32) Slot {
  uint64_t id;
  uint64_t meta;
  Word value;
};
static_assert(sizeof(Slot) == 32 && std::is_trivially_copyable_v<Slot>);

struct TableHeader {
  uint64_t magic;  // published last, with release
  uint32_t version;
  uint32_t reserved;
  uint64_t capacity;
  uint64_t used;                              // atomic relaxed
  uint64_t reclaim_cursor;                    // atomic relaxed
  uint64_t repairs;                           // atomic relaxed; was padding (zero) in tables made before it
  alignas(64) pthread_mutex_t locks[kLocks];  // process-shared, robust
};
constexpr uint64_t kHeaderBytes = 4096;
static_assert(sizeof(TableHeader) <= kHeaderBytes);
constexpr uint64_t kMaxCapacity = uint64_t{1} << 28;  // ids; the bound Open and Validate check

uint64_t Mix(uint64_t x) {  // splitmix64 finalizer: spreads ids over the table
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The 16-byte compare-and-swap, written as the instruction itself. Compiler
// builtins would do in a plain build, but sanitizers replace them with
// runtime calls that lock per process, which would silently stop the table
// being atomic between processes. On failure `expected` receives the
// current value, read atomically.
//
// ThreadSanitizer cannot see inside the assembly, so under it the CAS tells
// it what the instruction does: a sequentially consistent read-modify-write
// of the word, which releases what this thread wrote before it (a success)
// and acquires what the word's last writer released (always). The
// annotations use the low word's address, where the table's atomic loads of
// the word synchronize too.
bool Cas16(Word* p, Word& expected, Word desired) {
#if defined(__x86_64__)
#if defined(CACHET_TSAN)
  // Before the instruction, so no thread can see the new value without the
  // release. After a failure it is one too many: it may hide a race on
  // this thread's earlier writes, never report a false one.
  __tsan_release(&p->lo);
#endif
  bool ok;
  __asm__ __volatile__("lock cmpxchg16b %1"
                       : "=@ccz"(ok), "+m"(*p), "+a"(expected.lo), "+d"(expected.hi)
                       : "b"(desired.lo), "c"(desired.hi)
                       : "memory");
#if defined(CACHET_TSAN)
  __tsan_acquire(&p->lo);
#endif
  return ok;
#else
  __extension__ typedef unsigned __int128 U128;
  U128 e = static_cast<U128>(expected.hi) << 64 | expected.lo;
  const U128 d = static_cast<U128>(desired.hi) << 64 | desired.lo;
  const bool ok =
      __atomic_compare_exchange_n(reinterpret_cast<U128*>(p), &e, d, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  expected = {static_cast<uint64_t>(e), static_cast<uint64_t>(e >> 64)};
  return ok;
#endif
}

// The low word first, then the high one: the pair may be torn, but a CAS
// that expects it succeeds only if it is the current value, and FindLive
// reads the low word again around the id.
Word LoadWord(const Word& w) { return {LoadAcquire(w.lo), LoadAcquire(w.hi)}; }

CounterTable::Value ToValue(const Word& w) { return {UserOf(w.lo), w.hi}; }

}  // namespace

class CounterTable::Impl {
 public:
  explicit Impl(std::unique_ptr<Segment> segment)
      : segment_(std::move(segment)),
        header_(reinterpret_cast<TableHeader*>(segment_->base())),
        slots_(reinterpret_cast<Slot*>(segment_->base() + kHeaderBytes)),
        capacity_(header_->capacity) {}

  static uint64_t BytesFor(uint64_t capacity) { return kHeaderBytes + capacity * sizeof(Slot); }

  static void Format(TableHeader* h, uint64_t capacity) {
    h->version = kTableVersion;
    h->capacity = capacity;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    for (pthread_mutex_t& m : h->locks) pthread_mutex_init(&m, &attr);
    pthread_mutexattr_destroy(&attr);
    StoreRelease(h->magic, kTableMagic);
  }

  // Made but not yet formatted: its maker is still at it, or died.
  static bool Unfinished(const Segment& segment) {
    return segment.size() < kHeaderBytes ||
           LoadAcquire(reinterpret_cast<const TableHeader*>(segment.base())->magic) == 0;
  }

  static Result<void> Validate(const Segment& segment, const std::string& name) {
    const auto* h = reinterpret_cast<const TableHeader*>(segment.base());
    const bool ours = segment.size() >= kHeaderBytes && LoadAcquire(h->magic) == kTableMagic;
    // Another layout's table (its magic differs too, or only its version).
    if (segment.size() >= kHeaderBytes && h->version != kTableVersion && (ours || h->version != 0)) {
      return MakeError(ErrorCode::kVersionMismatch, "counter table '" + name + "' has layout version " +
                                                        std::to_string(h->version) + ", this library reads " +
                                                        std::to_string(kTableVersion) + "; remove it to rebuild");
    }
    if (!ours) {
      return MakeError(ErrorCode::kCorrupt, "'" + name + "' is not a cachet counter table (or is still being made)");
    }
    // The capacity's bounds first: for a forged one BytesFor's product wraps
    // and could match the mapping's size, naming slots far past it (found
    // by fuzzing: 2^59 + 256 passed for a table of 256).
    if (h->capacity == 0 || h->capacity > kMaxCapacity || BytesFor(h->capacity) != segment.size()) {
      return MakeError(ErrorCode::kCorrupt, "counter table '" + name + "' size does not match its capacity");
    }
    return {};
  }

  Result<bool> Update(uint64_t id, uint64_t meta, UpdateFn fn, IdleFn idle) {
    if (id == 0) return MakeError(ErrorCode::kInvalidArgument, "counter id 0 is reserved");
    for (;;) {
      Word current;
      Slot* s = FindLive(id, current);
      if (s == nullptr) {
        // A new id goes live with its first value, never with an empty one a
        // sweep could take for idle in the instant before the first update.
        const std::optional<Value> first = fn(Value{});
        bool placed_now = false;
        auto placed = Place(id, meta, idle, first.value_or(Value{}), current, &placed_now);
        if (!placed) return tl::unexpected(placed.error());
        if (placed_now) return first.has_value();
        s = *placed;  // another thread or process placed it meanwhile: update its value
      }
      // The slot stays id's while its generation does; a freed slot sends
      // us back to find (or place) the id again.
      const uint64_t gen = GenOf(current.lo);
      while (StateOf(current.lo) == kLive && GenOf(current.lo) == gen) {
        const std::optional<Value> next = fn(ToValue(current));
        if (!next) {
          // Declined on what was read: confirm it was the value, not a torn
          // pair (a CAS of the value onto itself changes nothing).
          Word seen = current;
          if (Cas16(&s->value, seen, current)) return false;
          current = seen;
          continue;
        }
        if (Cas16(&s->value, current, Word{MakeLo(next->lo & kMaxLo, kLive, gen), next->hi})) return true;
      }
    }
  }

  Value Load(uint64_t id) const {
    for (;;) {
      Word current;
      Slot* s = id == 0 ? nullptr : FindLive(id, current);
      if (s == nullptr) return Value{};
      Word seen = current;
      if (Cas16(&s->value, seen, current)) return ToValue(current);  // confirmed whole
      if (StateOf(seen.lo) == kLive && GenOf(seen.lo) == GenOf(current.lo)) return ToValue(seen);
      // Freed meanwhile: look again.
    }
  }

  uint64_t Reclaim(uint64_t max_slots, IdleFn idle) {
    uint64_t dropped = 0;
    const uint64_t n = std::min(max_slots, capacity_);
    uint64_t i = __atomic_fetch_add(&header_->reclaim_cursor, n, __ATOMIC_RELAXED) % capacity_;
    for (uint64_t k = 0; k < n; ++k, i = Next(i)) dropped += TryFree(slots_[i], idle) ? 1 : 0;
    return dropped;
  }

  uint64_t capacity() const { return capacity_; }
  uint64_t repairs() const { return LoadRelaxed(header_->repairs); }
  // A process killed between changing a slot and counting it leaves the
  // count off by one: never report below zero or above the capacity.
  uint64_t used() const {
    const auto n = static_cast<int64_t>(LoadRelaxed(header_->used));
    return n < 0 ? 0 : std::min(static_cast<uint64_t>(n), capacity_);
  }

 private:
  uint64_t Home(uint64_t id, int window) const {
    __extension__ typedef unsigned __int128 U128;
    const uint64_t h = Mix(id ^ 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(window));
    return static_cast<uint64_t>((static_cast<U128>(h) * capacity_) >> 64);
  }
  uint64_t Next(uint64_t i) const { return i + 1 == capacity_ ? 0 : i + 1; }

  // The live slot of `id` and its value, or nullptr. Lock-free.
  Slot* FindLive(uint64_t id, Word& value) const {
    for (int window = 0; window < kWindows; ++window) {
      uint64_t i = Home(id, window);
      for (uint64_t n = 0; n < kProbe; ++n, i = Next(i)) {
        Slot& s = slots_[i];
        for (;;) {
          const Word w = LoadWord(s.value);
          // Never used: id was not placed past it, nor in a later window
          // (a placer moves on only from a window with no free slot).
          if (w.lo == 0) return nullptr;
          if (StateOf(w.lo) != kLive) break;
          // The id read between two equal reads of the low word belongs to
          // that owner: a new owner stores its id before going live, and
          // freeing changes the generation.
          const uint64_t owner = LoadAcquire(s.id);
          if (LoadAcquire(s.value.lo) != w.lo) continue;  // changed while read: again
          if (owner != id) break;
          value = w;
          return &s;
        }
      }
    }
    return nullptr;
  }

  // Frees `s` if it is live and idle. A concurrent update wins the CAS and
  // keeps the slot. Sweeps and full windows only: the snapshot is a locked
  // instruction.
  bool TryFree(Slot& s, IdleFn idle) {
    if (StateOf(LoadAcquire(s.value.lo)) != kLive) return false;
    Word w{0, 0};
    (void)Cas16(&s.value, w, w);  // an atomic snapshot (a live value is never zero): `idle` judges no torn pair
    if (StateOf(w.lo) != kLive) return false;
    // The meta read between two reads of the same generation is this
    // owner's (a new owner writes its meta before going live).
    const uint64_t meta = LoadAcquire(s.meta);
    if (GenOf(LoadAcquire(s.value.lo)) != GenOf(w.lo) || !idle(meta, ToValue(w))) return false;
    if (!Cas16(&s.value, w, Word{MakeLo(0, kFree, NextGen(GenOf(w.lo))), 0})) return false;
    __atomic_fetch_sub(&header_->used, uint64_t{1}, __ATOMIC_RELAXED);
    return true;
  }

  // Places `id` under its stripe's lock: the first free slot of its window,
  // after dropping idle ones if none is free. Out of line: Update's fast
  // path stays small.
  // `*placed_now` tells whether we placed it (live with `initial`) or found
  // it placed by another (its value in `value`).
  __attribute__((noinline, cold)) Result<Slot*> Place(uint64_t id, uint64_t meta, IdleFn idle, const Value& initial,
                                                      Word& value, bool* placed_now) {
    const uint64_t stripe = (Mix(id) >> 7) % kLocks;
    StripeLock lock(*this, stripe);
    if (Slot* s = FindLive(id, value)) return s;  // placed while we waited
    *placed_now = true;
    // First any free slot, window by window; then idle ones, dropped.
    for (int pass = 0; pass < 2; ++pass) {
      for (int window = 0; window < kWindows; ++window) {
        uint64_t i = Home(id, window);
        for (uint64_t n = 0; n < kProbe; ++n, i = Next(i)) {
          if (pass == 1) (void)TryFree(slots_[i], idle);
          if (Claim(slots_[i], id, meta, stripe, initial)) return &slots_[i];
        }
      }
    }
    *placed_now = false;
    return MakeError(ErrorCode::kNoSpace, "counter table has no room for this id (" + std::to_string(capacity_) +
                                              " slots, " + std::to_string(used()) +
                                              " in use); give it a larger capacity");
  }

  // Makes a free `s` id's, live with `initial`. REQUIRES: the stripe's lock.
  bool Claim(Slot& s, uint64_t id, uint64_t meta, uint64_t stripe, const Value& initial) {
    Word w = LoadWord(s.value);
    uint64_t gen = 0;
    bool claimed = false;
    // A failed CAS refreshes `w`: the slot may have gone to a placer of
    // another id (another stripe), or have been torn when read.
    while (!claimed && StateOf(w.lo) == kFree) {
      gen = GenOf(w.lo) == 0 ? 1 : GenOf(w.lo);
      claimed = Cas16(&s.value, w, Word{MakeLo(stripe, kPlacing, gen), 0});
    }
    if (!claimed) return false;
    StoreRelaxed(s.meta, meta);
    StoreRelease(s.id, id);
    Word expected{MakeLo(stripe, kPlacing, gen), 0};
    (void)Cas16(&s.value, expected,
                Word{MakeLo(initial.lo & kMaxLo, kLive, gen), initial.hi});  // only we move it out of placing
    __atomic_fetch_add(&header_->used, uint64_t{1}, __ATOMIC_RELAXED);
    return true;
  }

  // A placer that died between claiming a slot and making it live left it
  // "placing" under its stripe: free those. REQUIRES: the stripe's lock.
  void RepairStripe(uint64_t stripe) {
    for (uint64_t i = 0; i < capacity_; ++i) {
      Word w = LoadWord(slots_[i].value);
      if (StateOf(w.lo) == kPlacing && UserOf(w.lo) == stripe) {
        (void)Cas16(&slots_[i].value, w, Word{MakeLo(0, kFree, NextGen(GenOf(w.lo))), 0});
      }
    }
  }

  class StripeLock {
   public:
    StripeLock(Impl& impl, uint64_t stripe) : mutex_(&impl.header_->locks[stripe]) {
      const int rc = pthread_mutex_lock(mutex_);
      if (rc == EOWNERDEAD) {
        impl.RepairStripe(stripe);
        pthread_mutex_consistent(mutex_);
        AddRelaxed(impl.header_->repairs, uint64_t{1});
      } else if (rc != 0) {
        std::fprintf(stderr, "cachet: cannot lock a counter table stripe: %s\n", std::strerror(rc));
        std::abort();
      }
    }
    ~StripeLock() { pthread_mutex_unlock(mutex_); }
    StripeLock(const StripeLock&) = delete;
    StripeLock& operator=(const StripeLock&) = delete;

   private:
    pthread_mutex_t* mutex_;
  };

  std::unique_ptr<Segment> segment_;
  TableHeader* header_;
  Slot* slots_;
  uint64_t capacity_;
};

CounterTable::CounterTable(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CounterTable::~CounterTable() = default;

namespace {
Result<void> CheckCapacity(uint64_t capacity) {
  if (capacity == 0 || capacity > kMaxCapacity) {
    return MakeError(ErrorCode::kInvalidArgument, "counter table capacity must be 1 to 2^28 ids");
  }
  return {};
}
}  // namespace

Result<std::unique_ptr<CounterTable>> CounterTable::Open(const std::string& name, uint64_t capacity) {
  if (auto ok = CheckCapacity(capacity); !ok) return tl::unexpected(ok.error());
  // Processes starting together race to make the table: the losers open
  // it, waiting a moment for the winner to finish it.
  const auto deadline = std::chrono::steady_clock::now() + kMakingTimeout;
  for (;;) {
    const bool late = std::chrono::steady_clock::now() > deadline;
    auto existing = Segment::OpenNamed(name);
    if (existing) {
      if (Impl::Unfinished(**existing)) {
        if (late) {
          return MakeError(ErrorCode::kCorrupt, "counter table '" + name +
                                                    "' was never finished (its maker died?); remove /dev/shm/" + name);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      if (auto ok = Impl::Validate(**existing, name); !ok) return tl::unexpected(ok.error());
      return std::unique_ptr<CounterTable>(new CounterTable(std::make_unique<Impl>(std::move(*existing))));
    }
    if (existing.error().code != ErrorCode::kNotFound) {
      if (late) return tl::unexpected(existing.error());
      std::this_thread::sleep_for(std::chrono::milliseconds(1));  // not sized yet by its maker
      continue;
    }
    auto created = Segment::CreateNamed(name, Impl::BytesFor(capacity));
    if (created) {
      Impl::Format(reinterpret_cast<TableHeader*>((*created)->base()), capacity);
      return std::unique_ptr<CounterTable>(new CounterTable(std::make_unique<Impl>(std::move(*created))));
    }
    if (created.error().code != ErrorCode::kAlreadyExists) return tl::unexpected(created.error());
    // Another process made it between our open and create: open it.
  }
}

Result<std::unique_ptr<CounterTable>> CounterTable::CreatePrivate(uint64_t capacity) {
  if (auto ok = CheckCapacity(capacity); !ok) return tl::unexpected(ok.error());
  auto segment = Segment::CreatePrivate(Impl::BytesFor(capacity));
  if (!segment) return tl::unexpected(segment.error());
  Impl::Format(reinterpret_cast<TableHeader*>((*segment)->base()), capacity);
  return std::unique_ptr<CounterTable>(new CounterTable(std::make_unique<Impl>(std::move(*segment))));
}

Result<void> CounterTable::Remove(const std::string& name) { return Segment::RemoveNamed(name); }

Result<bool> CounterTable::Update(uint64_t id, uint64_t meta, UpdateFn fn, IdleFn idle) {
  return impl_->Update(id, meta, fn, idle);
}
CounterTable::Value CounterTable::Load(uint64_t id) const { return impl_->Load(id); }
uint64_t CounterTable::Reclaim(uint64_t max_slots, IdleFn idle) { return impl_->Reclaim(max_slots, idle); }
uint64_t CounterTable::capacity() const { return impl_->capacity(); }
uint64_t CounterTable::used() const { return impl_->used(); }
uint64_t CounterTable::repairs() const { return impl_->repairs(); }

}  // namespace cachet
