// Recovery of the writer lock: a writer that finds the previous one dead
// repairs the segment and, whatever happens during the repair, releases
// the lock; writers killed with SIGKILL in the middle of moving an item lose
// nothing the cache has room for.
//
// White-box: the test reaches the segment's header (shm/src/layout.h) to
// leave a dead owner on the writer mutex and to see where a kill landed.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "cachet/cache.h"
#include "layout.h"
#include "test_util.h"
#include "value_codec.h"

// Allocation failure on demand, for this thread only: the repair must not
// need memory it cannot get (issue 13, bug 4).
namespace {
thread_local bool fail_next_allocation = false;
std::atomic<uint64_t> failed_allocations{0};
}  // namespace

void* operator new(std::size_t n) {
  if (fail_next_allocation) {
    fail_next_allocation = false;
    failed_allocations.fetch_add(1, std::memory_order_relaxed);
    throw std::bad_alloc();
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace cachet {
namespace {

using detail::SegmentHeader;
using testing::CheckValue;
using testing::MakeValue;

std::string Key(int i) { return "key" + std::to_string(i); }

template <typename Body>
pid_t Spawn(Body body) {
  const pid_t pid = fork();
  if (pid == 0) {
    testing::DieWithParent();
    _exit(body());
  }
  return pid;
}

// The exit code of `pid`, or -1 if it has not exited within `limit` (it is
// then killed and reaped).
int WaitExitWithin(pid_t pid, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > end) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    usleep(1000);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The named segment's header, mapped on its own (as another process sees it).
class HeaderMapping {
 public:
  explicit HeaderMapping(const std::string& name) {
    const int fd = shm_open(("/" + name).c_str(), O_RDWR, 0);
    if (fd < 0) return;
    void* p = mmap(nullptr, detail::kHeaderBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p != MAP_FAILED) header_ = static_cast<SegmentHeader*>(p);
  }
  ~HeaderMapping() {
    if (header_ != nullptr) munmap(header_, detail::kHeaderBytes);
  }
  HeaderMapping(const HeaderMapping&) = delete;
  HeaderMapping& operator=(const HeaderMapping&) = delete;
  SegmentHeader* get() const { return header_; }

 private:
  SegmentHeader* header_ = nullptr;
};

class RepairTest : public ::testing::Test {
 protected:
  void TearDown() override {
    cache_.reset();
    (void)Cache::RemoveNamed(name_);
  }
  void Make(const CacheOptions& options) {
    auto made = Cache::CreateNamed(name_, options);
    ASSERT_TRUE(made.has_value()) << made.error().ToString();
    cache_ = std::move(*made);
  }
  // A child takes the writer mutex and exits holding it: the next writer
  // finds the owner dead.
  void LeaveDeadOwner() {
    const pid_t child = Spawn([this] {
      HeaderMapping header(name_);
      if (header.get() == nullptr) return 10;
      if (pthread_mutex_lock(&header.get()->writer_mutex) != 0) return 11;
      _exit(0);  // with the mapping still in place, so the kernel marks the owner dead
    });
    ASSERT_EQ(WaitExitWithin(child, std::chrono::seconds(10)), 0);
  }

  std::string name_ = testing::UniqueSegmentName("repair");
  std::unique_ptr<Cache> cache_;
};

TEST_F(RepairTest, RepairWithoutMemoryStillRepairsAndReleasesTheWriterLock) {
  CacheOptions o;
  o.capacity_bytes = 256 << 10;
  o.max_value_size = 1024;
  Make(o);
  for (int i = 0; i < 500; ++i) ASSERT_TRUE(cache_->Set(Key(i), MakeValue(Key(i), 1)).has_value());
  const std::string value = MakeValue("after", 2);
  ASSERT_TRUE(cache_->Set("after", value).has_value());  // the staging buffer is now big enough
  LeaveDeadOwner();

  // This write finds the owner dead and repairs; the repair's first request
  // for memory fails.
  fail_next_allocation = true;
  const Result<bool> set = cache_->Set("after", value);
  const bool asked = !fail_next_allocation;
  fail_next_allocation = false;
  ASSERT_TRUE(asked) << "the write asked for no memory: the test proves nothing";
  ASSERT_EQ(failed_allocations.load(), 1u);
  EXPECT_TRUE(set.has_value() && *set) << (set ? "not stored" : set.error().ToString());
  EXPECT_EQ(cache_->Stats().repairs, 1u);

  // Another process's write goes through: the lock was released.
  const pid_t writer = Spawn([this] {
    auto cache = Cache::OpenNamed(name_);
    if (!cache) return 10;
    return (*cache)->Set("from-child", "1").has_value() ? 0 : 11;
  });
  ASSERT_EQ(WaitExitWithin(writer, std::chrono::seconds(10)), 0) << "a writer blocked on a lock left held";
  EXPECT_EQ(cache_->Get("from-child"), "1");
  EXPECT_EQ(cache_->Get("after"), value);
  // Every key survived, and each is still found through the saturated counts.
  for (int i = 0; i < 500; ++i) ASSERT_EQ(cache_->Get(Key(i)), MakeValue(Key(i), 1)) << i;
  EXPECT_EQ(cache_->Size(), 502u);
}

}  // namespace
}  // namespace cachet
