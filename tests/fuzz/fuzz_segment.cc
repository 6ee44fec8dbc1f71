// Fuzz target: attaching to a damaged segment. A valid segment (a cache
// of each eviction policy, or the rate limiters' counter table), with items
// and counters in it, has its bytes overwritten by the input (past its
// header, or in the header's checked fields) and/or its file truncated;
// then it is opened as cachetd opens it at a warm restart (Cache::OpenNamed,
// Repair) or as a limiter opens its table (CounterTable::Open), and read.
// The open must fail with an error or give a store whose every read stays
// inside the mapping: never a crash, a hang or a sanitizer report. With
// mode bit 5 both are then written to: the counter table as every process
// updates it, the cache with enough writes to pass every item of its logs
// (a writer meeting a record it never wrote drops that log; docs/design.md,
// "Reliability").
//
// Input: [mode][offset: 4 bytes LE][length: 4 bytes LE][bytes...]
//   mode bit 0:    the counter table, else a cache
//   mode bits 1-2: 0 bytes past the header, 1 truncate to `length`,
//                  2 both, 3 bytes into the header's fields
//   mode bits 3-4: the cache's eviction policy (fifo, clock, s3fifo)
//   mode bit 5:    after the reads, writes: the table's updates and a
//                  reclaim, or the cache's sets, erases and INCRs
//
// White-box: the header's layouts come from shm/src.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cachet/cache.h"
#include "cachet/clock.h"
#include "cachet/counter_table.h"
#include "layout.h"

namespace {

using namespace cachet;

constexpr uint64_t kTableCapacity = 256;
constexpr uint64_t kTableHeaderBytes = 4096;  // counter_table.cc's kHeaderBytes
// TableHeader's fields before its locks: magic, version, reserved,
// capacity, used, reclaim_cursor, repairs. The magic is left alone: a
// table without one is one still being made, which Open waits 2 s for.
constexpr uint64_t kTableFieldsBegin = 8;
constexpr uint64_t kTableFieldsEnd = 48;

std::string Key(int i) { return "key-" + std::to_string(i); }

// The images' TTLs and the opened caches' reads are on one fixed time.
FakeClock& FixedClock() {
  static FakeClock clock;
  return clock;
}

[[noreturn]] void Die(const char* what) {
  std::perror(what);
  std::abort();
}

// The bytes of the named shared-memory object `name`.
std::vector<char> ReadShm(const std::string& name) {
  const int fd = shm_open(("/" + name).c_str(), O_RDONLY, 0);
  if (fd < 0) Die("shm_open");
  struct stat st {};
  if (fstat(fd, &st) != 0) Die("fstat");
  std::vector<char> bytes(static_cast<size_t>(st.st_size));
  if (pread(fd, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) Die("pread");
  close(fd);
  return bytes;
}

// Replaces the object `name` with `image`, `patch` written at `at` and the
// file cut to `length` when `truncate`.
void WriteShm(const std::string& name, const std::vector<char>& image, uint64_t at, const uint8_t* patch,
              size_t patch_size, bool truncate, uint64_t length) {
  const int fd = shm_open(("/" + name).c_str(), O_CREAT | O_RDWR | O_TRUNC, 0600);
  if (fd < 0) Die("shm_open");
  if (pwrite(fd, image.data(), image.size(), 0) != static_cast<ssize_t>(image.size())) Die("pwrite");
  if (patch_size > 0 && pwrite(fd, patch, patch_size, static_cast<off_t>(at)) != static_cast<ssize_t>(patch_size)) {
    Die("pwrite");
  }
  if (truncate && ftruncate(fd, static_cast<off_t>(length)) != 0) Die("ftruncate");
  close(fd);
}

struct Images {
  std::string cache_name = "cachet-fuzz-seg-" + std::to_string(getpid());
  std::string table_name = "cachet-fuzz-ctr-" + std::to_string(getpid());
  std::vector<char> caches[3];  // fifo, clock, s3fifo
  std::vector<char> table;

  Images() {
    const EvictionPolicy policies[3] = {EvictionPolicy::kFifo, EvictionPolicy::kClock, EvictionPolicy::kS3Fifo};
    for (int p = 0; p < 3; ++p) caches[p] = MakeCache(policies[p]);
    table = MakeTable();
  }
  ~Images() {
    (void)Cache::RemoveNamed(cache_name);
    (void)CounterTable::Remove(table_name);
  }

  // A small cache, full enough to have evicted and to hold items with and
  // without a TTL in every log.
  std::vector<char> MakeCache(EvictionPolicy policy) {
    (void)Cache::RemoveNamed(cache_name);
    CacheOptions o;
    o.capacity_bytes = 8 << 10;
    o.max_entries = 64;
    o.max_key_size = 32;
    o.max_value_size = 512;
    o.policy = policy;
    auto made = Cache::CreateNamed(cache_name, o, FixedClock());
    if (!made) Die(made.error().ToString().c_str());
    Cache& cache = **made;
    for (int i = 0; i < 200; ++i) {
      SetOptions set;
      if (i % 3 == 0) set.ttl = std::chrono::hours(1);
      (void)cache.Set(Key(i % 90), std::string(static_cast<size_t>(i * 7 % 300), 'a' + static_cast<char>(i % 26)), set);
      if (i % 5 == 0) (void)cache.Get(Key(i / 2));
      if (i % 11 == 0) (void)cache.Erase(Key(i / 3));
    }
    (void)cache.Incr("counter", 41);
    made->reset();
    return ReadShm(cache_name);
  }

  std::vector<char> MakeTable() {
    (void)CounterTable::Remove(table_name);
    auto made = CounterTable::Open(table_name, kTableCapacity);
    if (!made) Die(made.error().ToString().c_str());
    for (uint64_t id = 1; id <= 200; ++id) {
      (void)(*made)->Update(
          id, id % 4,
          [&](const CounterTable::Value&) {
            return CounterTable::Value{id, id * 3};
          },
          [](uint64_t, const CounterTable::Value&) { return false; });
    }
    made->reset();
    return ReadShm(table_name);
  }
};

void ExerciseCache(Cache& cache, const uint8_t* data, size_t size, bool write) {
  (void)cache.Repair();  // as cachetd does on a warm restart
  (void)cache.Stats();
  (void)cache.Size();
  std::string value;
  const std::string own_key(reinterpret_cast<const char*>(data), std::min<size_t>(size, 32));
  for (int i = 0; i < 90; i += 3) {
    (void)cache.GetInto(Key(i), &value);
    (void)cache.Ttl(Key(i + 1));
    (void)cache.Peek(Key(i + 2), &value);
  }
  (void)cache.Get("counter");
  (void)cache.Contains(own_key);
  uint64_t cursor = 0;
  for (int page = 0; page < 64; ++page) {
    cursor = cache.Scan(cursor, page % 2 ? "key-1*" : "", 16).cursor;
    if (cursor == 0) break;
  }
  if (!write) return;
  // Twice the capacity in new items: every log's head passes every record.
  for (int i = 0; i < 120; ++i) {
    (void)cache.Set(Key(i % 90) + "-new", std::string(static_cast<size_t>(i * 13 % 400), 'n'));
    if (i % 7 == 0) (void)cache.Erase(Key(i));
    if (i % 9 == 0) (void)cache.Incr("counter", 1);
  }
  (void)cache.Set(own_key.empty() ? "own" : own_key, "v");
}

void ExerciseTable(CounterTable& table, bool write) {
  (void)table.capacity();
  (void)table.used();
  for (uint64_t id = 1; id <= 220; ++id) (void)table.Load(id);
  if (!write) return;
  auto bump = [](const CounterTable::Value& v) -> std::optional<CounterTable::Value> {
    if (v.lo >= CounterTable::kMaxLo) return std::nullopt;
    return CounterTable::Value{v.lo + 1, v.hi};
  };
  auto idle = [](uint64_t meta, const CounterTable::Value&) { return meta % 2 == 0; };
  for (uint64_t id = 1; id <= 300; id += 7) (void)table.Update(id, id % 4, bump, idle);
  (void)table.Reclaim(kTableCapacity * 2, idle);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Images images;
  if (size < 9) return 0;
  const uint8_t mode = data[0];
  uint32_t offset = 0, length = 0;
  std::memcpy(&offset, data + 1, 4);
  std::memcpy(&length, data + 5, 4);
  const uint8_t* patch = data + 9;
  size_t patch_size = size - 9;
  const bool table = mode & 1;
  const int damage = (mode >> 1) & 3;
  const bool write = mode & 0x20;
  const std::vector<char>& image = table ? images.table : images.caches[((mode >> 3) & 3) % 3];
  const std::string& name = table ? images.table_name : images.cache_name;

  // Where the patch may go: past the header, or over the header's fields.
  uint64_t begin = table ? kTableHeaderBytes : detail::kHeaderBytes;
  uint64_t end = image.size();
  if (damage == 3) {
    begin = table ? kTableFieldsBegin : 0;
    end = table ? kTableFieldsEnd : offsetof(detail::SegmentHeader, writer_mutex);
  }
  const uint64_t at = begin + offset % (end - begin);
  patch_size = std::min<size_t>(patch_size, end - at);
  if (damage == 1) patch_size = 0;
  // A table cut inside its header reads as one still being made (Open
  // waits 2 s for it); that case is the cache's.
  const uint64_t min_length = table ? kTableHeaderBytes : 0;
  const uint64_t cut = min_length + length % (image.size() - min_length + 1);
  WriteShm(name, image, at, patch, patch_size, damage == 1 || damage == 2, cut);

  if (table) {
    auto opened = CounterTable::Open(name, kTableCapacity);
    if (opened) ExerciseTable(**opened, write);
  } else {
    auto opened = Cache::OpenNamed(name, FixedClock());
    if (opened) ExerciseCache(**opened, patch, patch_size, write);
  }
  return 0;
}
