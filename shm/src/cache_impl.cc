// The read path, the write operations and the hash index of Cache::Impl.
// Log management and eviction live in eviction.cc; recovery in recovery.cc.
#include "cache_impl.h"

#include <errno.h>

#include <fnmatch.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <thread>

#include "atomics.h"
#include "byte_copy.h"
#include "hashing.h"

namespace cachet {

using namespace detail;

namespace {

// A reader that keeps seeing items reclaimed under it retries this often,
// then reports a miss rather than spin behind a writer that may have died.
constexpr int kMaxReadAttempts = 1000;
// Index buckets that each write sweeps for expired items.
constexpr size_t kSweepBucketsPerWrite = 2;

// This thread's hit and miss counter stripe, kCounterStripes until first
// use. Every GET reads it, so it is initial-exec and constant-initialized:
// one %fs-relative load, where the default model for a shared library
// calls __tls_get_addr and checks a guard. (glibc keeps static TLS room
// for a dlopen'ed library's few bytes.)
__attribute__((tls_model("initial-exec"))) thread_local uint32_t thread_stripe = kCounterStripes;

uint32_t ThreadStripe() {
  uint32_t stripe = thread_stripe;
  if (__builtin_expect(stripe == kCounterStripes, 0)) {
    stripe = static_cast<uint32_t>(std::hash<std::thread::id>{}(std::this_thread::get_id()) % kCounterStripes);
    thread_stripe = stripe;
  }
  return stripe;
}

void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// The cache whose writer lock this thread holds through a WriterLease, if any.
thread_local const Cache::Impl* leased_by_this_thread = nullptr;

// pthread_mutex_timedlock's deadline: `wait` from now, by CLOCK_REALTIME.
timespec DeadlineIn(std::chrono::milliseconds wait) {
  timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  const int64_t ns = t.tv_nsec + (wait.count() % 1000) * 1'000'000;
  t.tv_sec += static_cast<time_t>(wait.count() / 1000 + ns / 1'000'000'000);
  t.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  return t;
}
}  // namespace

// Holds the segment's writer mutex. A previous holder that died leaves the
// mutex "owner dead": we take it over and repair what it may have half done.
// An exception escaping the critical section (allocation, a user clock) is
// treated the same way: the segment is repaired before the lock is released.
// Within a WriterLease of this thread the mutex is already held: the lock
// is then only the exception guard. With a `wait`, it gives up after that
// long (held() is false) rather than wait on a holder that may never go on.
class Cache::Impl::WriterLock {
 public:
  explicit WriterLock(Impl& impl, std::optional<std::chrono::milliseconds> wait = std::nullopt)
      : impl_(impl), mutex_(&impl.header_->writer_mutex), exceptions_(std::uncaught_exceptions()) {
    if (leased_by_this_thread == &impl) {
      leased_ = true;
      return;
    }
    int rc = 0;
    if (!wait) {
      rc = pthread_mutex_lock(mutex_);
    } else if ((rc = pthread_mutex_trylock(mutex_)) == EBUSY) {  // the clocks only when it is held
      rc = TimedLock(*wait);
    }
    if (rc == ETIMEDOUT) return;
    if (rc == EOWNERDEAD) {
      pthread_mutex_consistent(mutex_);
      impl.RepairLocked();
    } else if (rc != 0) {
      std::fprintf(stderr, "cachet: cannot lock the segment's writer mutex: %s\n", std::strerror(rc));
      std::abort();
    }
    owns_ = true;
  }
  // pthread_mutex_timedlock takes a deadline on the wall clock, which NTP
  // may step back: the wait is cut into slices and measured on the
  // monotonic clock, so a step lengthens it by one slice at most.
  int TimedLock(std::chrono::milliseconds wait) {
    const auto end = std::chrono::steady_clock::now() + wait;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
      const timespec deadline = DeadlineIn(std::clamp(left, std::chrono::milliseconds(0), kLockSlice));
      const int rc = pthread_mutex_timedlock(mutex_, &deadline);
      if (rc != ETIMEDOUT || std::chrono::steady_clock::now() >= end) return rc;
    }
  }
  static constexpr std::chrono::milliseconds kLockSlice{50};

  ~WriterLock() {
    if (!owns_ && !leased_) return;
    if (std::uncaught_exceptions() > exceptions_) impl_.RepairLocked();
    if (owns_) pthread_mutex_unlock(mutex_);
  }
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;

  // True if this thread holds the mutex now (by this lock or by a lease).
  bool held() const { return owns_ || leased_; }
  // Hands the mutex over to a lease: the destructor no longer releases it.
  void Release() { owns_ = false; }

 private:
  Impl& impl_;
  pthread_mutex_t* mutex_;
  int exceptions_;
  bool owns_ = false;
  bool leased_ = false;
};

std::string Cache::Impl::WriterLockHolder() const {
  // glibc keeps the holder's thread id in the mutex (the robust list needs it).
  const int tid = __atomic_load_n(&header_->writer_mutex.__data.__owner, __ATOMIC_RELAXED) & 0x3fffffff;
  if (tid == 0) return "no thread now";
  if (tid == 0x3fffffff) return "a thread that died holding it";  // glibc's "inconsistent" mark
  // The id is as the holder's PID namespace numbers it: for a client in a
  // container of its own, /proc here may show another thread or none.
  std::string state = "unknown state";
  if (FILE* f = std::fopen(("/proc/" + std::to_string(tid) + "/stat").c_str(), "r")) {
    char buf[512];
    const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = 0;
    if (const char* paren = std::strrchr(buf, ')'); paren != nullptr && paren[1] == ' ') {
      switch (paren[2]) {
        case 'T':
        case 't': state = "stopped"; break;
        case 'R': state = "running"; break;
        case 'S':
        case 'D': state = "waiting"; break;
        default: state = std::string("state ") + paren[2];
      }
    }
  }
  return "thread " + std::to_string(tid) + " (" + state + ")";
}

Result<void> Cache::Impl::LeaseWriter(std::chrono::milliseconds wait) {
  if (leased_by_this_thread != nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "this thread already holds a writer lease");
  }
  WriterLock lock(*this, wait);
  if (!lock.held()) {
    // A wait of 0 is a caller that already found the lock stuck trying again.
    return MakeError(ErrorCode::kTimeout, wait.count() == 0
                                              ? "the segment's writer lock is still held by " + WriterLockHolder()
                                              : "the segment's writer lock has been held for over " +
                                                    std::to_string(wait.count()) + " ms by " + WriterLockHolder());
  }
  lock.Release();
  leased_by_this_thread = this;
  return {};
}

void Cache::Impl::EndLease() {
  if (leased_by_this_thread != this) return;
  leased_by_this_thread = nullptr;
  pthread_mutex_unlock(&header_->writer_mutex);
}

Cache::Impl::Impl(std::unique_ptr<Segment> segment, const Clock& clock)
    : segment_(std::move(segment)), clock_(clock), base_(segment_->base()) {
  header_ = reinterpret_cast<SegmentHeader*>(base_);
}

void Cache::Impl::BindGeometry() {
  buckets_ = reinterpret_cast<Bucket*>(base_ + header_->buckets_offset);
  ghost_ = header_->ghost_slots ? reinterpret_cast<uint64_t*>(base_ + header_->ghost_offset) : nullptr;
  bucket_count_ = header_->bucket_count;
  ghost_slots_ = header_->ghost_slots;
  small_target_bytes_ = header_->small_target_bytes;
  small_target_items_ = header_->small_target_items;
  for (int id : {kMainLog, kSmallLog}) shapes_[id] = header_->logs[id].shape;
  move_buffer_ = reinterpret_cast<uint64_t*>(base_ + header_->move_buffer_offset);
  move_buffer_bytes_ = header_->move_buffer_bytes;
  options_.capacity_bytes = header_->capacity_bytes;
  options_.max_entries = header_->max_entries;
  options_.max_key_size = header_->max_key_size;
  options_.max_value_size = header_->max_value_size;
  options_.policy = static_cast<EvictionPolicy>(header_->policy);
}

std::unique_ptr<Cache::Impl> Cache::Impl::Format(std::unique_ptr<Segment> segment, const CacheOptions& options,
                                                 const Geometry& g, const Clock& clock, uint64_t generation) {
  std::unique_ptr<Impl> impl(new Impl(std::move(segment), clock));
  std::memset(impl->base_, 0, kHeaderBytes);  // the rest of a fresh mapping is already zero
  SegmentHeader& h = *impl->header_;
  h.layout_version = kLayoutVersion;
  h.header_bytes = sizeof(SegmentHeader);
  h.segment_bytes = g.segment_bytes;
  h.generation = generation;
  h.created_ms = clock.NowMs();
  h.heartbeat_ms = h.created_ms;
  h.capacity_bytes = options.capacity_bytes;
  h.max_entries = g.max_entries;
  h.max_key_size = options.max_key_size;
  h.max_value_size = options.max_value_size;
  h.policy = static_cast<uint8_t>(options.policy);
  h.bucket_count = g.bucket_count;
  h.buckets_offset = kHeaderBytes;
  h.ghost_slots = g.ghost_slots;
  h.ghost_offset = h.buckets_offset + g.bucket_count * sizeof(Bucket);
  h.small_target_bytes = g.small_target_bytes;
  h.small_target_items = g.small_target_items;
  LogShape& main = h.logs[kMainLog].shape;
  LogShape& small = h.logs[kSmallLog].shape;
  main.base = h.ghost_offset + ((g.ghost_slots * 8 + 63) & ~uint64_t{63});
  main.size = g.main_log_bytes;
  small.base = main.base + g.main_log_bytes;
  small.size = g.small_log_bytes;
  for (LogState& log : h.logs) log.shape.lap_shift = LapShiftFor(log.shape.size);
  h.move_buffer_offset = small.base + small.size;
  h.move_buffer_bytes = g.move_buffer_bytes;

  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&h.writer_mutex, &attr);
  pthread_mutexattr_destroy(&attr);

  // Published last: a process that sees the magic sees a whole header.
  StoreRelease(h.magic, kMagic);
  impl->BindGeometry();
  return impl;
}

Result<std::unique_ptr<Cache::Impl>> Cache::Impl::Attach(std::unique_ptr<Segment> segment, const Clock& clock) {
  const std::string name = segment->name();
  const uint64_t mapped = segment->size();
  auto corrupt = [&](const std::string& why) {
    return MakeError(ErrorCode::kCorrupt, "segment '" + name + "' is not a usable cachet segment: " + why);
  };
  if (mapped < kHeaderBytes) return corrupt("it is " + std::to_string(mapped) + " bytes, smaller than a header");
  std::unique_ptr<Impl> impl(new Impl(std::move(segment), clock));
  const SegmentHeader& h = *impl->header_;
  if (LoadAcquire(h.magic) != kMagic) return corrupt("bad magic number");
  if (h.layout_version != kLayoutVersion) {
    return MakeError(ErrorCode::kVersionMismatch, "segment '" + name + "' has layout version " +
                                                      std::to_string(h.layout_version) + ", this library reads " +
                                                      std::to_string(kLayoutVersion));
  }
  if (h.header_bytes != sizeof(SegmentHeader)) return corrupt("header size differs from this build's");
  // A file of huge pages is longer by less than one of them.
  const uint64_t page = impl->segment_->page_bytes();
  if (h.segment_bytes > mapped || (page <= 4096 ? h.segment_bytes != mapped : mapped - h.segment_bytes >= page)) {
    return corrupt("header says " + std::to_string(h.segment_bytes) + " bytes, mapping has " + std::to_string(mapped));
  }
  if (h.generation == 0) return corrupt("generation is 0");
  CacheOptions stored;
  stored.capacity_bytes = h.capacity_bytes;
  stored.max_entries = h.max_entries;
  stored.max_key_size = h.max_key_size;
  stored.max_value_size = h.max_value_size;
  stored.policy = static_cast<EvictionPolicy>(h.policy);
  if (auto ok = stored.Validate(); !ok) return corrupt("stored options invalid: " + ok.error().message);
  // Everything the geometry is derived from is checked here, once: the
  // handle keeps its own copy (BindGeometry) and never re-reads it.
  const Geometry g = ComputeGeometry(stored);
  const LogShape& main = h.logs[kMainLog].shape;
  const LogShape& small = h.logs[kSmallLog].shape;
  if (g.segment_bytes != h.segment_bytes || g.bucket_count != h.bucket_count || g.ghost_slots != h.ghost_slots ||
      g.small_target_bytes != h.small_target_bytes || g.small_target_items != h.small_target_items ||
      g.main_log_bytes != main.size || g.small_log_bytes != small.size || h.buckets_offset != kHeaderBytes ||
      main.lap_shift != LapShiftFor(g.main_log_bytes) || small.lap_shift != LapShiftFor(g.small_log_bytes) ||
      h.ghost_offset != h.buckets_offset + g.bucket_count * sizeof(Bucket) ||
      main.base != h.ghost_offset + ((g.ghost_slots * 8 + 63) & ~uint64_t{63}) || small.base != main.base + main.size ||
      h.move_buffer_offset != small.base + small.size || h.move_buffer_bytes != g.move_buffer_bytes ||
      h.move_buffer_offset + h.move_buffer_bytes > mapped) {
    return corrupt("geometry does not match its options");
  }
  for (const LogState& log : h.logs) {
    if (log.head > log.tail || UsedBytes(log.shape, log.head, log.tail) > log.shape.size)
      return corrupt("a log's head and tail disagree");
    if (log.head % 8 != 0 || log.tail % 8 != 0) return corrupt("a log's head or tail is not a multiple of 8");
    // (A log of size 0, the small one under FIFO and CLOCK, is never used.)
    if (log.shape.size != 0 &&
        (PhysOf(log.shape, log.head) >= log.shape.size || PhysOf(log.shape, log.tail) >= log.shape.size)) {
      return corrupt("a log's head or tail is past its end");
    }
  }
  impl->BindGeometry();
  return impl;
}

// ---------------------------------------------------------------- readers

const LogShape* Cache::Impl::LogContaining(uint64_t offset, LogId* id) const {
  for (LogId i : {kMainLog, kSmallLog}) {
    const LogShape& shape = shapes_[i];
    if (offset >= shape.base && offset < shape.base + shape.size) {
      *id = i;
      return &shape;
    }
  }
  return nullptr;
}

Cache::Impl::ReadResult Cache::Impl::ReadItem(uint64_t slot, std::string_view key, std::string* value,
                                              int64_t* expires_at) const {
  const uint64_t offset = uint64_t{SlotUnit(slot)} * 8;
  LogId id = kMainLog;
  const LogShape* log = LogContaining(offset, &id);
  if (log == nullptr || offset + sizeof(ItemHeader) > log->base + log->size) return ReadResult::kMismatch;
  const auto* item = reinterpret_cast<const ItemHeader*>(base_ + offset);
  const uint64_t pos = LoadAcquire(item->pos);
  // The header must be the item the slot was published for: its physical
  // place and its lap (mod 2^16) both match. A header forged inside a value
  // that reused this memory cannot have both and still pass the window check.
  if (PhysOf(*log, pos) != offset - log->base || (LapOf(*log, pos) & 0xffff) != SlotLap(slot)) {
    return ReadResult::kTorn;
  }

  const uint64_t meta = LoadRelaxed(item->meta);
  const uint32_t key_len = MetaKeyLen(meta);
  const uint32_t value_len = MetaValueLen(meta);
  const bool well_formed = MetaKind(meta) == ItemKind::kItem && key_len <= options_.max_key_size &&
                           value_len <= options_.max_value_size &&
                           offset + ItemBytes(key_len, value_len) <= log->base + log->size;
  const auto* payload = reinterpret_cast<const uint64_t*>(item + 1);
  const bool match = well_formed && key_len == key.size() && BytesEqual(payload, key);
  if (match && value != nullptr) {
    value->resize(value_len);
    LoadBytes(payload, key_len, value_len, value->data());
  }
  const int64_t expires = LoadRelaxed(item->expires_at);

  // Validate: nothing we copied was reclaimed (and so possibly rewritten).
  std::atomic_thread_fence(std::memory_order_acquire);
  const uint64_t head = LoadRelaxed(header_->logs[id].head);
  if (head > pos || LapOf(*log, pos) > LapOf(*log, head) + 1 || LoadRelaxed(item->pos) != pos) {
    return ReadResult::kTorn;
  }
  if (!match) return ReadResult::kMismatch;
  *expires_at = expires;
  return ReadResult::kMatch;
}

void Cache::Impl::CountHit(bool hit) {
  StripedCounter* counters = hit ? header_->hits : header_->misses;
  AddRelaxed(counters[ThreadStripe()].value, uint64_t{1});
}

bool Cache::Impl::Lookup(std::string_view key, std::string* value, int64_t* expires_at, bool touch) {
  const uint64_t hash = HashKey(key);
  const uint16_t tag = TagOf(hash);
  for (int attempt = 0; attempt < kMaxReadAttempts; ++attempt) {
    bool torn = false;
    uint64_t b = HomeBucket(hash);
    for (uint64_t step = 0; step < bucket_count_ && !torn; ++step, b = NextBucket(b)) {
      Bucket& bucket = buckets_[b];
      for (uint32_t i = 0; i < kSlotsPerBucket; ++i) {
        const uint64_t slot = LoadAcquire(bucket.slots[i]);
        if (slot == 0 || SlotTag(slot) != tag) continue;
        // The item's lines are fetched together rather than one after another
        // as the copy reaches them (a hint: the address may be stale).
        const char* item = base_ + uint64_t{SlotUnit(slot)} * 8;
        __builtin_prefetch(item);
        __builtin_prefetch(item + 64);
        __builtin_prefetch(item + 128);
        int64_t expires = 0;
        const ReadResult r = ReadItem(slot, key, value, &expires);
        if (r == ReadResult::kTorn) {
          torn = true;
          break;
        }
        if (r == ReadResult::kMismatch) continue;
        const bool live = expires == 0 || expires > clock_.NowMs();  // the clock only when needed
        if (live) *expires_at = expires;
        if (touch) {
          if (live) {
            // Reference hint for the eviction policy; lost updates are harmless.
            const uint8_t f = LoadRelaxed(bucket.freq[i]);
            if (f < kMaxFreq) StoreRelaxed(bucket.freq[i], static_cast<uint8_t>(f + 1));
          }
          CountHit(live);
        }
        return live;
      }
      if (LoadRelaxed(bucket.overflow) == 0) break;
    }
    if (!torn) break;
    CpuRelax();
  }
  if (touch) CountHit(false);
  return false;
}

void Cache::Impl::Prefetch(const std::string_view* keys, size_t count) const {
  uint64_t homes[Cache::kPrefetchKeys];
  uint16_t tags[Cache::kPrefetchKeys];
  count = std::min(count, Cache::kPrefetchKeys);
  for (size_t k = 0; k < count; ++k) {
    const uint64_t hash = HashKey(keys[k]);
    homes[k] = HomeBucket(hash);
    tags[k] = TagOf(hash);
    __builtin_prefetch(&buckets_[homes[k]]);
  }
  // The slots may change under us: an address is only a hint, and a
  // prefetch of a bad one is harmless. Items of up to three lines.
  for (size_t k = 0; k < count; ++k) {
    const Bucket& bucket = buckets_[homes[k]];
    for (uint32_t i = 0; i < kSlotsPerBucket; ++i) {
      const uint64_t slot = LoadRelaxed(bucket.slots[i]);
      if (slot == 0 || SlotTag(slot) != tags[k]) continue;
      const char* item = base_ + uint64_t{SlotUnit(slot)} * 8;
      __builtin_prefetch(item);
      __builtin_prefetch(item + 64);
      __builtin_prefetch(item + 128);
    }
  }
}

// ---------------------------------------------------------------- index

uint64_t Cache::Impl::HomeBucket(uint64_t hash) const { return FastRange(static_cast<uint32_t>(hash), bucket_count_); }

Cache::Impl::ItemView Cache::Impl::ViewLocked(uint64_t slot) const {
  const uint64_t offset = uint64_t{SlotUnit(slot)} * 8;
  ItemView view;
  view.offset = offset;
  // Every slot names a whole item inside its log, unless another process
  // forged it: then the view is clipped to the log, so nothing reads past
  // it (the counts may go wrong; a repair puts them right).
  const LogShape* log = LogContaining(offset, &view.log);
  if (log == nullptr || offset + sizeof(ItemHeader) > log->base + log->size) return view;
  const uint64_t room = log->base + log->size - offset;
  const auto* item = reinterpret_cast<const ItemHeader*>(base_ + offset);
  const uint64_t meta = item->meta;
  uint32_t key_len = MetaKeyLen(meta);
  if (key_len > options_.max_key_size || sizeof(ItemHeader) + key_len > room) key_len = 0;
  view.bytes = std::min<uint64_t>(ItemBytes(key_len, MetaValueLen(meta)), room);
  view.key = std::string_view(reinterpret_cast<const char*>(item + 1), key_len);
  view.expires_at = item->expires_at;
  return view;
}

std::optional<Cache::Impl::SlotRef> Cache::Impl::FindLocked(std::string_view key, uint64_t hash) {
  const uint16_t tag = TagOf(hash);
  const uint64_t home = HomeBucket(hash);
  uint64_t b = home;
  for (uint64_t step = 0; step < bucket_count_; ++step, b = NextBucket(b)) {
    Bucket& bucket = buckets_[b];
    for (uint32_t i = 0; i < kSlotsPerBucket; ++i) {
      const uint64_t slot = bucket.slots[i];
      if (slot != 0 && SlotTag(slot) == tag && ViewLocked(slot).key == key) {
        return SlotRef{&bucket, i, home, b};
      }
    }
    if (bucket.overflow == 0) break;
  }
  return std::nullopt;
}

std::optional<Cache::Impl::SlotRef> Cache::Impl::FindSlotLocked(uint64_t hash, uint64_t want) {
  const uint64_t home = HomeBucket(hash);
  uint64_t b = home;
  for (uint64_t step = 0; step < bucket_count_; ++step, b = NextBucket(b)) {
    Bucket& bucket = buckets_[b];
    for (uint32_t i = 0; i < kSlotsPerBucket; ++i) {
      if (bucket.slots[i] == want) return SlotRef{&bucket, i, home, b};
    }
    if (bucket.overflow == 0) break;
  }
  return std::nullopt;
}

bool Cache::Impl::IndexHasFreeSlotLocked(uint64_t hash) const {
  uint64_t b = HomeBucket(hash);
  for (uint64_t step = 0; step < bucket_count_; ++step, b = NextBucket(b)) {
    for (const uint64_t slot : buckets_[b].slots) {
      if (slot == 0) return true;
    }
  }
  return false;
}

Cache::Impl::SlotRef Cache::Impl::InsertSlotLocked(uint64_t hash, uint64_t slot_value) {
  const uint64_t home = HomeBucket(hash);
  uint64_t b = home;
  for (uint64_t step = 0; step < bucket_count_; ++step, b = NextBucket(b)) {
    Bucket& bucket = buckets_[b];
    for (uint32_t i = 0; i < kSlotsPerBucket; ++i) {
      if (bucket.slots[i] == 0) {
        StoreRelaxed(bucket.freq[i], uint8_t{0});
        StoreRelease(bucket.slots[i], slot_value);
        return SlotRef{&bucket, i, home, b};
      }
    }
    if (bucket.overflow < 255) StoreRelaxed(bucket.overflow, static_cast<uint8_t>(bucket.overflow + 1));
  }
  // The index holds more slots than max_entries, and MakeRoomLocked keeps the
  // item count within it: a full index is a broken invariant.
  std::fprintf(stderr, "cachet: index full with %llu items; invariant broken\n",
               static_cast<unsigned long long>(TotalLiveItems()));
  std::abort();
}

void Cache::Impl::ClearSlotLocked(const SlotRef& ref) {
  StoreRelease(ref.bucket->slots[ref.index], uint64_t{0});
  for (uint64_t b = ref.home; b != ref.bucket_pos; b = NextBucket(b)) {
    Bucket& bucket = buckets_[b];
    // 255 means "saturated": the true count is unknown, so it stays.
    if (bucket.overflow != 255) StoreRelaxed(bucket.overflow, static_cast<uint8_t>(bucket.overflow - 1));
  }
}

void Cache::Impl::RemoveItemLocked(const SlotRef& ref, const ItemView& item) {
  ClearSlotLocked(ref);
  if (item.expires_at != 0) --header_->ttl_items;
  LogState& log = header_->logs[item.log];
  StoreRelaxed(log.live_bytes, log.live_bytes - item.bytes);
  StoreRelaxed(log.live_items, log.live_items - 1);
}

// ---------------------------------------------------------------- writes

Result<void> Cache::Impl::CheckSizes(std::string_view key, size_t value_size) const {
  if (key.empty() || key.size() > options_.max_key_size) {
    return MakeError(key.empty() ? ErrorCode::kInvalidArgument : ErrorCode::kKeyTooLarge,
                     "key is " + std::to_string(key.size()) + " bytes; keys must be 1 to " +
                         std::to_string(options_.max_key_size) + " bytes (max_key_size)");
  }
  if (value_size > options_.max_value_size) {
    return MakeError(ErrorCode::kValueTooLarge, "value is " + std::to_string(value_size) +
                                                    " bytes; max_value_size is " +
                                                    std::to_string(options_.max_value_size));
  }
  return {};
}

Result<int64_t> Cache::Impl::ExpiryFor(std::chrono::milliseconds ttl, int64_t now) {
  if (ttl.count() < 0 || ttl > Cache::kMaxTtl) {
    return MakeError(ErrorCode::kInvalidArgument, "ttl is " + std::to_string(ttl.count()) +
                                                      " ms; it must be 0 (no expiry) to " +
                                                      std::to_string(Cache::kMaxTtl.count()) + " ms");
  }
  return ttl.count() == 0 ? 0 : now + ttl.count();
}

uint64_t* Cache::Impl::StageItem(std::string_view key, std::string_view value, int64_t expires_at) {
  static thread_local std::vector<uint64_t> staged;
  staged.assign(ItemBytes(key.size(), value.size()) / 8, 0);
  const ItemHeader head{
      PackMeta(static_cast<uint32_t>(value.size()), static_cast<uint16_t>(key.size()), ItemKind::kItem), 0, expires_at};
  std::memcpy(staged.data(), &head, sizeof head);
  char* payload = reinterpret_cast<char*>(staged.data()) + sizeof head;
  std::memcpy(payload, key.data(), key.size());
  if (!value.empty()) std::memcpy(payload + key.size(), value.data(), value.size());
  return staged.data();
}

std::optional<Cache::Impl::SlotRef> Cache::Impl::FindLiveLocked(std::string_view key, uint64_t hash, int64_t now) {
  std::optional<SlotRef> ref = FindLocked(key, hash);
  if (!ref) return std::nullopt;
  const ItemView item = ViewLocked(ref->bucket->slots[ref->index]);
  if (!ExpiredAt(item.expires_at, now)) return ref;
  RemoveItemLocked(*ref, item);
  AddRelaxed(header_->expirations, uint64_t{1});
  return std::nullopt;
}

void Cache::Impl::StoreLocked(const std::optional<SlotRef>& ref, uint64_t hash, const uint64_t* staged, int64_t now) {
  const auto* head = reinterpret_cast<const ItemHeader*>(staged);
  const uint64_t bytes = ItemBytes(MetaKeyLen(head->meta), MetaValueLen(head->meta));
  LogId target = kMainLog;
  uint8_t freq = 0;
  LogPos skip = kNoItem;
  const uint64_t old_slot = ref ? ref->bucket->slots[ref->index] : 0;
  if (ref) {
    const ItemView old = ViewLocked(old_slot);
    target = old.log;
    freq = LoadRelaxed(ref->bucket->freq[ref->index]);
    // The old item stops counting now; its bytes are reclaimed when its log's
    // head passes it (MakeRoomLocked skips it, known by its full position).
    LogState& log = header_->logs[old.log];
    StoreRelaxed(log.live_bytes, log.live_bytes - old.bytes);
    StoreRelaxed(log.live_items, log.live_items - 1);
    if (old.expires_at != 0) --header_->ttl_items;
    skip = LogPos{old.log, reinterpret_cast<const ItemHeader*>(base_ + old.offset)->pos};
  } else if (!IndexHasFreeSlotLocked(hash)) {
    // MakeRoomLocked keeps the items within max_entries by the counts, and
    // the index has a sixth more slots than that: counts that are too low
    // (a segment written by something else) are rebuilt before they fill it.
    std::fprintf(stderr, "cachet: the index of segment '%s' is full with %llu items counted; recounting them\n",
                 segment_->name().c_str(), static_cast<unsigned long long>(TotalLiveItems()));
    RepairLocked();
  }
  if (!ref && options_.policy == EvictionPolicy::kS3Fifo) {
    // A key evicted from the small queue not long ago comes back to main;
    // an item larger than the small queue's share goes to main directly.
    const bool remembered = GhostTakeLocked(FingerprintOf(hash));
    target = remembered || bytes > small_target_bytes_ ? kMainLog : kSmallLog;
  }

  MakeRoomLocked(target, bytes, skip);
  const uint64_t slot = AppendLocked(target, staged, bytes, TagBits(hash));
  // A repair on the way (a damaged log dropped, the counts rebuilt) may have
  // taken the old item's slot and lowered the probe counts that led to it:
  // then the new item is inserted anew. Or it kept a forged twin of that
  // slot instead, which must name the new item, not the old one uncounted.
  std::optional<SlotRef> at = ref;
  if (ref && ref->bucket->slots[ref->index] != old_slot) at = FindSlotLocked(hash, old_slot);
  if (at) {
    StoreRelease(at->bucket->slots[at->index], slot);
    StoreRelaxed(at->bucket->freq[at->index], static_cast<uint8_t>(std::min<int>(freq + 1, kMaxFreq)));
  } else {
    InsertSlotLocked(hash, slot);
  }
  LogState& log = header_->logs[target];
  StoreRelaxed(log.live_bytes, log.live_bytes + bytes);
  StoreRelaxed(log.live_items, log.live_items + 1);
  if (head->expires_at != 0) ++header_->ttl_items;
  AddRelaxed(header_->sets, uint64_t{1});
  // Amortized active expiry: every write sweeps a little of the index, when
  // anything can expire at all.
  if (header_->ttl_items != 0) ReclaimExpiredLocked(kSweepBucketsPerWrite, now);
}

Result<void> Cache::Impl::AdmitLocked(const WriterLock& lock, Writer who, int64_t now) const {
  if (!lock.held()) {
    return MakeError(ErrorCode::kUnavailable, "the segment's writer lock has been held for over " +
                                                  std::to_string(Cache::kGuestLockWait.count()) + " ms by " +
                                                  WriterLockHolder());
  }
  if (who == Writer::kOwner) return {};
  if (LoadRelaxed(header_->client_writes) == 0) {
    return MakeError(ErrorCode::kUnavailable, "the daemon does not take same-host writes to this segment now");
  }
  const int64_t silent_ms = now - LoadRelaxed(header_->heartbeat_ms);
  if (silent_ms > Cache::kGuestHeartbeatLimit.count()) {
    return MakeError(ErrorCode::kUnavailable,
                     "the daemon of this segment has shown no sign of life for " + std::to_string(silent_ms) + " ms");
  }
  return {};
}

void Cache::Impl::SetClientWrites(bool granted) {
  WriterLock lock(*this);
  StoreRelaxed(header_->client_writes, uint8_t{granted});
}

bool Cache::Impl::ClientWritesGranted() const { return LoadRelaxed(header_->client_writes) != 0; }

Result<bool> Cache::Impl::Set(std::string_view key, std::string_view value, const SetOptions& options, Writer who) {
  if (auto ok = CheckSizes(key, value.size()); !ok) return tl::unexpected(ok.error());
  if (auto ok = ExpiryFor(options.ttl, 0); !ok) return tl::unexpected(ok.error());
  const uint64_t hash = HashKey(key);
  uint64_t* staged = StageItem(key, value, 0);  // outside the lock; the deadline is set under it

  WriterLock lock(*this, LockWaitFor(who));
  const int64_t now = clock_.NowMs();
  if (auto ok = AdmitLocked(lock, who, now); !ok) return tl::unexpected(ok.error());
  reinterpret_cast<ItemHeader*>(staged)->expires_at = *ExpiryFor(options.ttl, now);
  const std::optional<SlotRef> ref = FindLiveLocked(key, hash, now);
  if ((options.condition == SetCondition::kIfAbsent && ref) ||
      (options.condition == SetCondition::kIfPresent && !ref)) {
    return false;
  }
  StoreLocked(ref, hash, staged, now);
  return true;
}

Result<int64_t> Cache::Impl::Incr(std::string_view key, int64_t delta, std::chrono::milliseconds ttl_on_create,
                                  Writer who) {
  if (auto ok = CheckSizes(key, 20); !ok) return tl::unexpected(ok.error());
  if (auto ok = ExpiryFor(ttl_on_create, 0); !ok) return tl::unexpected(ok.error());
  const uint64_t hash = HashKey(key);

  WriterLock lock(*this, LockWaitFor(who));
  const int64_t now = clock_.NowMs();
  if (auto ok = AdmitLocked(lock, who, now); !ok) return tl::unexpected(ok.error());
  Result<int64_t> expires_at = ExpiryFor(ttl_on_create, now);
  const std::optional<SlotRef> ref = FindLiveLocked(key, hash, now);
  int64_t value = delta;
  if (ref) {
    const ItemView item = ViewLocked(ref->bucket->slots[ref->index]);
    // Within the view, which is clipped to the item's log.
    const uint64_t value_room = item.bytes - std::min<uint64_t>(item.bytes, sizeof(ItemHeader) + item.key.size());
    const auto* header = reinterpret_cast<const ItemHeader*>(base_ + item.offset);
    const std::string_view current(item.key.data() + item.key.size(),
                                   std::min<uint64_t>(MetaValueLen(header->meta), value_room));
    int64_t old = 0;
    const auto [end, ec] = std::from_chars(current.data(), current.data() + current.size(), old);
    if (ec != std::errc() || end != current.data() + current.size() || current.empty()) {
      return MakeError(ErrorCode::kNotInteger, "value of '" + std::string(key) + "' is not a decimal 64-bit integer");
    }
    if (__builtin_add_overflow(old, delta, &value)) {
      return MakeError(ErrorCode::kOverflow, "incrementing " + std::to_string(old) + " by " + std::to_string(delta) +
                                                 " overflows a 64-bit integer");
    }
    *expires_at = item.expires_at;  // an increment keeps the key's TTL
  }
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
  const std::string_view text(digits, static_cast<size_t>(end - digits));
  if (auto ok = CheckSizes(key, text.size()); !ok) return tl::unexpected(ok.error());
  StoreLocked(ref, hash, StageItem(key, text, *expires_at), now);
  return value;
}

Cache::ScanPage Cache::Impl::Scan(uint64_t cursor, std::string_view pattern, size_t max_buckets) {
  ScanPage page;
  const std::string glob(pattern);
  WriterLock lock(*this);
  const int64_t now = clock_.NowMs();
  uint64_t b = cursor;
  for (size_t n = 0; b < bucket_count_ && n < std::max<size_t>(max_buckets, 1); ++n, ++b) {
    for (uint32_t i = 0; i < kSlotsPerBucket; ++i) {
      const uint64_t slot = buckets_[b].slots[i];
      if (slot == 0) continue;
      const ItemView item = ViewLocked(slot);
      if (ExpiredAt(item.expires_at, now)) continue;
      const std::string key(item.key);
      if (glob.empty() || fnmatch(glob.c_str(), key.c_str(), 0) == 0) page.keys.push_back(key);
    }
  }
  page.cursor = b >= bucket_count_ ? 0 : b;
  return page;
}

Result<bool> Cache::Impl::Erase(std::string_view key, Writer who) {
  const uint64_t hash = HashKey(key);
  WriterLock lock(*this, LockWaitFor(who));
  const int64_t now = clock_.NowMs();
  if (auto ok = AdmitLocked(lock, who, now); !ok) return tl::unexpected(ok.error());
  std::optional<SlotRef> ref = FindLocked(key, hash);
  if (!ref) return false;
  const ItemView item = ViewLocked(ref->bucket->slots[ref->index]);
  RemoveItemLocked(*ref, item);
  if (ExpiredAt(item.expires_at, now)) {
    AddRelaxed(header_->expirations, uint64_t{1});
    return false;
  }
  AddRelaxed(header_->erases, uint64_t{1});
  return true;
}

Result<bool> Cache::Impl::SetExpiry(std::string_view key, std::optional<std::chrono::milliseconds> ttl, Writer who) {
  const uint64_t hash = HashKey(key);
  WriterLock lock(*this, LockWaitFor(who));
  const int64_t now = clock_.NowMs();
  if (auto ok = AdmitLocked(lock, who, now); !ok) return tl::unexpected(ok.error());
  const std::optional<SlotRef> ref = FindLiveLocked(key, hash, now);
  if (!ref) return false;
  const ItemView item = ViewLocked(ref->bucket->slots[ref->index]);
  if (ttl && ttl->count() <= 0) {  // a deadline now or in the past: the key goes now
    RemoveItemLocked(*ref, item);
    AddRelaxed(header_->erases, uint64_t{1});
    return true;
  }
  const int64_t expires_at = ttl ? now + std::min(*ttl, Cache::kMaxTtl).count() : 0;
  auto* header = reinterpret_cast<ItemHeader*>(base_ + item.offset);
  header_->ttl_items += (expires_at != 0) - (item.expires_at != 0);
  StoreRelaxed(header->expires_at, expires_at);  // one word: readers see old or new, both valid
  return true;
}

void Cache::Impl::Clear() {
  WriterLock lock(*this);
  for (uint64_t b = 0; b < bucket_count_; ++b) {
    Bucket& bucket = buckets_[b];
    for (uint32_t i = 0; i < kSlotsPerBucket; ++i) {
      StoreRelease(bucket.slots[i], uint64_t{0});
      StoreRelaxed(bucket.freq[i], uint8_t{0});
    }
    StoreRelaxed(bucket.overflow, uint8_t{0});
  }
  for (LogState& log : header_->logs) {
    StoreRelaxed(log.head, log.tail);
    StoreRelaxed(log.live_bytes, uint64_t{0});
    StoreRelaxed(log.live_items, uint64_t{0});
  }
  if (ghost_ != nullptr) std::memset(ghost_, 0, ghost_slots_ * sizeof(uint64_t));
  header_->sweep_cursor = 0;
  header_->ttl_items = 0;
}

size_t Cache::Impl::ReclaimExpired(size_t max_buckets) {
  WriterLock lock(*this);
  return ReclaimExpiredLocked(max_buckets, clock_.NowMs());
}

size_t Cache::Impl::ReclaimExpiredLocked(size_t max_buckets, int64_t now) {
  size_t reclaimed = 0;
  uint64_t b = header_->sweep_cursor % bucket_count_;
  for (size_t n = 0; n < max_buckets && n < bucket_count_; ++n, b = NextBucket(b)) {
    Bucket& bucket = buckets_[b];
    for (uint32_t i = 0; i < kSlotsPerBucket; ++i) {
      const uint64_t slot = bucket.slots[i];
      if (slot == 0) continue;
      const ItemView item = ViewLocked(slot);
      if (!ExpiredAt(item.expires_at, now)) continue;
      const uint64_t hash = HashKey(item.key);
      RemoveItemLocked(SlotRef{&bucket, i, HomeBucket(hash), b}, item);
      ++reclaimed;
    }
  }
  header_->sweep_cursor = b;
  AddRelaxed(header_->expirations, uint64_t{reclaimed});
  return reclaimed;
}

// ---------------------------------------------------------------- stats

uint64_t Cache::Impl::TotalLiveBytes() const {
  return LoadRelaxed(header_->logs[kMainLog].live_bytes) + LoadRelaxed(header_->logs[kSmallLog].live_bytes);
}

uint64_t Cache::Impl::TotalLiveItems() const {
  return LoadRelaxed(header_->logs[kMainLog].live_items) + LoadRelaxed(header_->logs[kSmallLog].live_items);
}

size_t Cache::Impl::Size() const { return TotalLiveItems(); }

size_t Cache::Impl::Repair() {
  WriterLock lock(*this);
  return RepairLocked();
}

void Cache::Impl::Heartbeat() { StoreRelaxed(header_->heartbeat_ms, clock_.NowMs()); }

void Cache::Impl::EndHeartbeat() { StoreRelaxed(header_->heartbeat_ms, int64_t{0}); }

CacheStats Cache::Impl::Stats() const {
  CacheStats s;
  for (uint32_t i = 0; i < kCounterStripes; ++i) {
    s.hits += LoadRelaxed(header_->hits[i].value);
    s.misses += LoadRelaxed(header_->misses[i].value);
  }
  s.sets = LoadRelaxed(header_->sets);
  s.erases = LoadRelaxed(header_->erases);
  s.evictions = LoadRelaxed(header_->evictions);
  s.expirations = LoadRelaxed(header_->expirations);
  s.entries = TotalLiveItems();
  s.live_bytes = TotalLiveBytes();
  s.capacity_bytes = options_.capacity_bytes;
  s.max_entries = options_.max_entries;
  s.segment_bytes = header_->segment_bytes;
  s.page_bytes = segment_->page_bytes();
  s.generation = header_->generation;
  s.repairs = LoadRelaxed(header_->repairs);
  s.heartbeat_ms = LoadRelaxed(header_->heartbeat_ms);
  return s;
}

}  // namespace cachet
