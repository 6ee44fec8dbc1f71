// Segment: one mapping of a cachet segment, private or named.
//
// Owns the Boost.Interprocess mapped_region; the memory stays mapped for the
// Segment's lifetime. Names are POSIX shared-memory names without the
// leading slash ("cachet-main"). Errors from the operating system come back
// as kIo / kNotFound / kAlreadyExists with the name and the OS's reason.
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

 private:
  Segment(std::unique_ptr<boost::interprocess::mapped_region> region, std::string name);
  std::unique_ptr<boost::interprocess::mapped_region> region_;
  std::string name_;
  char* base_ = nullptr;
  size_t size_ = 0;
};

}  // namespace cachet::detail
