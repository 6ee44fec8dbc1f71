// Segment: one mapping of a cachet segment, private or named.
//
// Owns the Boost.Interprocess mapped_region; the memory stays mapped for the
// Segment's lifetime. A name is either a POSIX shared-memory name without
// the leading slash ("cachet-main", /dev/shm/cachet-main) or the absolute
// path of a file, for a file system of huge pages (a hugetlbfs mount such as
// /dev/hugepages/cachet-main); a file's length is rounded up to its file
// system's page size. Errors from the operating system come back as kIo /
// kNotFound / kAlreadyExists / kNoSpace with the name and the OS's reason.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "cachet/result.h"

namespace boost::interprocess {
class mapped_region;
}

namespace cachet::detail {

class Segment {
 public:
  static Result<std::unique_ptr<Segment>> CreatePrivate(size_t bytes);
  static Result<std::unique_ptr<Segment>> CreateNamed(const std::string& name, size_t bytes);
  static Result<std::unique_ptr<Segment>> OpenNamed(const std::string& name);
  static Result<void> RemoveNamed(const std::string& name);

  ~Segment();
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  char* base() const { return base_; }
  size_t size() const { return size_; }
  const std::string& name() const { return name_; }  // empty when private
  // The size of the pages behind the mapping: 4096, or a huge page's size.
  size_t page_bytes() const { return page_bytes_; }

  static bool IsPath(const std::string& name) { return !name.empty() && name[0] == '/'; }

 private:
  Segment(std::unique_ptr<boost::interprocess::mapped_region> region, std::string name, size_t page_bytes = 4096);
  static Result<std::unique_ptr<Segment>> CreateFile(const std::string& path, size_t bytes);
  static Result<std::unique_ptr<Segment>> OpenFile(const std::string& path);
  std::unique_ptr<boost::interprocess::mapped_region> region_;
  std::string name_;
  char* base_ = nullptr;
  size_t size_ = 0;
  size_t page_bytes_ = 4096;
};

}  // namespace cachet::detail
