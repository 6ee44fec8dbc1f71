// HugePageMount: a hugetlbfs mount of a test's own, in a fresh directory
// under /tmp, holding at most `limit_bytes` of 2 MiB pages, and at least
// `reserve_pages` free huge pages in the kernel's pool while it lives.
//
// Needs root (mount, /proc/sys/vm/nr_hugepages); Unsupported() says why
// not, for GTEST_SKIP, as the network-namespace tests do. It raises
// vm.nr_hugepages only by the shortfall and puts the old value back when it
// goes; tests using it must run alone (SERIAL), since the pool is the host's.
#pragma once

#include <sys/mount.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>

#include "test_util.h"

namespace cachet::testing {

class HugePageMount {
 public:
  // A value of /proc/meminfo, such as "HugePages_Free", or -1.
  static long MemInfo(const std::string& field) {
    std::ifstream in("/proc/meminfo");
    for (std::string name; in >> name;) {
      long value = 0;
      in >> value;
      if (name == field + ":") return value;
      in.ignore(256, '\n');
    }
    return -1;
  }

  static std::optional<std::string> Unsupported() {
    if (geteuid() != 0) return "mounting hugetlbfs and reserving huge pages need root";
    if (MemInfo("Hugepagesize") != 2048) return "the default huge page is not 2 MiB here";
    return std::nullopt;
  }

  HugePageMount(uint64_t limit_bytes, long reserve_pages) {
    char dir[] = "/tmp/cachet-huge-XXXXXX";
    if (mkdtemp(dir) == nullptr) return;
    dir_ = dir;
    const std::string options = "pagesize=2M,size=" + std::to_string(limit_bytes);
    if (mount("none", dir_.c_str(), "hugetlbfs", 0, options.c_str()) != 0) {
      error_ = "mount -t hugetlbfs -o " + options + " none " + dir_ + " failed";
      return;
    }
    mounted_ = true;
    const long missing = reserve_pages - MemInfo("HugePages_Free");
    if (missing > 0) {
      old_pool_ = MemInfo("HugePages_Total");
      WritePool(old_pool_ + missing);
      if (MemInfo("HugePages_Free") < reserve_pages) {
        error_ = "could not reserve " + std::to_string(reserve_pages) + " free huge pages";
      }
    }
  }
  ~HugePageMount() {
    if (mounted_) umount(dir_.c_str());  // frees the pages of every file in it
    if (!dir_.empty()) rmdir(dir_.c_str());
    if (old_pool_ >= 0) WritePool(old_pool_);
  }
  HugePageMount(const HugePageMount&) = delete;
  HugePageMount& operator=(const HugePageMount&) = delete;

  // Empty when the mount and the reservation are in place.
  const std::string& error() const { return error_; }
  const std::string& dir() const { return dir_; }

 private:
  static void WritePool(long pages) { std::ofstream("/proc/sys/vm/nr_hugepages") << pages; }

  std::string dir_;
  std::string error_ = "";
  bool mounted_ = false;
  long old_pool_ = -1;
};

}  // namespace cachet::testing
