#include "segment.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/magic.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <boost/interprocess/file_mapping.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

#include "cachet/segment_access.h"

namespace cachet::detail {

namespace bip = boost::interprocess;

namespace {

Result<void> CheckName(const std::string& name) {
  if (Segment::IsPath(name)) {
    if (name.size() > 1024 || name.back() == '/' || name.find("/../") != std::string::npos) {
      return MakeError(ErrorCode::kInvalidArgument, "segment path '" + name + "' must name a file, in 1024 characters");
    }
    return {};
  }
  if (name.empty() || name.size() > 200 || name.find('/') != std::string::npos) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "segment name '" + name + "' must be 1-200 characters without '/', or an absolute path");
  }
  return {};
}

// Where a segment of this name lives in the file system.
std::string FileOf(const std::string& name) { return Segment::IsPath(name) ? name : "/dev/shm/" + name; }

// The page size of the file system holding `fd`: a huge page's on hugetlbfs.
size_t PageBytesOf(int fd) {
  struct statfs fs {};
  if (::fstatfs(fd, &fs) == 0 && fs.f_type == HUGETLBFS_MAGIC) return static_cast<size_t>(fs.f_bsize);
  return 4096;
}

std::string OwnerName(uid_t uid) {
  const passwd* p = ::getpwuid(uid);
  return p ? p->pw_name : std::to_string(uid);
}

std::string GroupName(gid_t gid) {
  const group* g = ::getgrgid(gid);
  return g ? g->gr_name : std::to_string(gid);
}

// Why this process may not open the segment's file: its mode, owner and group.
std::string AccessDeniedReason(const std::string& name) {
  struct stat st {};
  const std::string path = FileOf(name);
  if (::stat(path.c_str(), &st) != 0) return "permission denied";
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return "permission denied: " + path + " is mode " + mode + ", owner " + OwnerName(st.st_uid) + ", group " +
         GroupName(st.st_gid) + "; this process runs as " + OwnerName(::geteuid()) +
         " (the daemon's access-mode and access-group settings say who may attach)";
}

Error FromBoost(const bip::interprocess_exception& e, const std::string& what, const std::string& name) {
  ErrorCode code = ErrorCode::kIo;
  if (e.get_error_code() == bip::not_found_error) code = ErrorCode::kNotFound;
  if (e.get_error_code() == bip::already_exists_error) code = ErrorCode::kAlreadyExists;
  if (e.get_native_error() == EACCES)
    return Error{code, what + " shared memory '" + name + "': " + AccessDeniedReason(name)};
  return Error{code, what + " shared memory '" + name + "': " + e.what()};
}

// Large caches are walked at random; huge pages cut TLB misses where the
// kernel allows them for this kind of mapping. Only a hint.
void AdviseHugePages(bip::mapped_region& region) {
#ifdef MADV_HUGEPAGE
  madvise(region.get_address(), region.get_size(), MADV_HUGEPAGE);
#endif
}

}  // namespace

Segment::Segment(std::unique_ptr<bip::mapped_region> region, std::string name, size_t page_bytes)
    : region_(std::move(region)),
      name_(std::move(name)),
      base_(static_cast<char*>(region_->get_address())),
      size_(region_->get_size()),
      page_bytes_(page_bytes) {}

Segment::~Segment() = default;

Result<std::unique_ptr<Segment>> Segment::CreatePrivate(size_t bytes) {
  try {
    // A copy-on-write mapping of /dev/zero is private anonymous memory: zero
    // filled, never written back, and (unlike shared memory on most
    // kernels' defaults) eligible for transparent huge pages.
    bip::file_mapping zero("/dev/zero", bip::read_only);
    auto region = std::make_unique<bip::mapped_region>(zero, bip::copy_on_write, 0, bytes);
    AdviseHugePages(*region);
    return std::unique_ptr<Segment>(new Segment(std::move(region), ""));
  } catch (const bip::interprocess_exception& e) {
    return tl::unexpected(FromBoost(e, "cannot map " + std::to_string(bytes) + " bytes of", "(private)"));
  }
}

Result<std::unique_ptr<Segment>> Segment::CreateFile(const std::string& path, size_t bytes) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int e = errno;
    return MakeError(e == EEXIST ? ErrorCode::kAlreadyExists : ErrorCode::kIo,
                     "cannot create segment file " + path + ": " + std::strerror(e));
  }
  const size_t page = PageBytesOf(fd);
  const size_t rounded = page > 4096 ? (bytes + page - 1) / page * page : bytes;
  // Reserve every page now (on hugetlbfs: take them from the pool), so that
  // too few must fail here with a clear error, not with SIGBUS on a write.
  std::string failed;
  ErrorCode code = ErrorCode::kIo;
  if (::ftruncate(fd, static_cast<off_t>(rounded)) != 0) {
    failed = std::string("cannot size it: ") + std::strerror(errno);
  } else if (const int rc = posix_fallocate(fd, 0, static_cast<off_t>(rounded)); rc != 0) {
    code = rc == ENOSPC ? ErrorCode::kNoSpace : ErrorCode::kIo;
    failed = "cannot reserve " + std::to_string(rounded >> 20) + " MiB: " + std::strerror(rc);
    if (page > 4096 && rc == ENOSPC) failed += " (too few free huge pages: see HugePages_Free in /proc/meminfo)";
  }
  ::close(fd);
  if (failed.empty()) {
    auto opened = OpenFile(path);
    if (opened) return opened;
    failed = opened.error().message;
  }
  ::unlink(path.c_str());
  return MakeError(code, "cannot create segment file " + path + ": " + failed);
}

Result<std::unique_ptr<Segment>> Segment::OpenFile(const std::string& path) {
  try {
    bip::file_mapping file(path.c_str(), bip::read_write);
    const size_t page = PageBytesOf(file.get_mapping_handle().handle);
    auto region = std::make_unique<bip::mapped_region>(file, bip::read_write);
    return std::unique_ptr<Segment>(new Segment(std::move(region), path, page));
  } catch (const bip::interprocess_exception& e) {
    return tl::unexpected(FromBoost(e, "cannot open", path));
  }
}

Result<std::unique_ptr<Segment>> Segment::CreateNamed(const std::string& name, size_t bytes) {
  if (auto ok = CheckName(name); !ok) return tl::unexpected(ok.error());
  if (IsPath(name)) return CreateFile(name, bytes);
  bool created = false;
  try {
    // Owner only: SetSegmentAccess widens it where the operator asks.
    bip::permissions owner_only;
    owner_only.set_permissions(0600);
    bip::shared_memory_object shm(bip::create_only, name.c_str(), bip::read_write, owner_only);
    created = true;
    shm.truncate(static_cast<bip::offset_t>(bytes));
    // Reserve every page now: a tmpfs too small for the segment must fail
    // here with a clear error, not with SIGBUS on some later write.
    const int rc = posix_fallocate(shm.get_mapping_handle().handle, 0, static_cast<off_t>(bytes));
    if (rc != 0) {
      bip::shared_memory_object::remove(name.c_str());
      return MakeError(rc == ENOSPC ? ErrorCode::kNoSpace : ErrorCode::kIo,
                       "cannot reserve " + std::to_string(bytes >> 20) + " MiB for shared memory '" + name +
                           "': " + std::strerror(rc) + " (see df /dev/shm)");
    }
    auto region = std::make_unique<bip::mapped_region>(shm, bip::read_write);
    AdviseHugePages(*region);
    return std::unique_ptr<Segment>(new Segment(std::move(region), name));
  } catch (const bip::interprocess_exception& e) {
    if (created) bip::shared_memory_object::remove(name.c_str());
    return tl::unexpected(FromBoost(e, "cannot create", name));
  }
}

Result<std::unique_ptr<Segment>> Segment::OpenNamed(const std::string& name) {
  if (auto ok = CheckName(name); !ok) return tl::unexpected(ok.error());
  if (IsPath(name)) return OpenFile(name);
  try {
    bip::shared_memory_object shm(bip::open_only, name.c_str(), bip::read_write);
    auto region = std::make_unique<bip::mapped_region>(shm, bip::read_write);
    return std::unique_ptr<Segment>(new Segment(std::move(region), name));
  } catch (const bip::interprocess_exception& e) {
    return tl::unexpected(FromBoost(e, "cannot open", name));
  }
}

Result<void> Segment::RemoveNamed(const std::string& name) {
  if (auto ok = CheckName(name); !ok) return ok;
  if (IsPath(name)) {
    if (::unlink(name.c_str()) == 0) return {};
    const int e = errno;
    return MakeError(e == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo,
                     "cannot remove segment file " + name + ": " + std::strerror(e));
  }
  if (!bip::shared_memory_object::remove(name.c_str())) {
    return MakeError(ErrorCode::kNotFound, "no shared memory named '" + name + "' to remove");
  }
  return {};
}

}  // namespace cachet::detail

namespace cachet {

Result<void> SetSegmentAccess(const std::string& name, const SegmentAccess& access) {
  const int fd = detail::Segment::IsPath(name) ? ::open(name.c_str(), O_RDWR | O_CLOEXEC)
                                               : ::shm_open(("/" + name).c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) return MakeError(ErrorCode::kIo, "cannot open shared memory '" + name + "': " + std::strerror(errno));
  // The group first: widening the mode before would open it to the old group.
  std::string failed;
  if (access.group != static_cast<gid_t>(-1) && ::fchown(fd, static_cast<uid_t>(-1), access.group) != 0) {
    failed = "cannot give shared memory '" + name + "' to group " + detail::GroupName(access.group) + ": " +
             std::strerror(errno);
  } else if (::fchmod(fd, access.mode & 0666) != 0) {
    failed = "cannot set the mode of shared memory '" + name + "': " + std::strerror(errno);
  }
  ::close(fd);
  if (!failed.empty()) return MakeError(ErrorCode::kIo, failed);
  return {};
}

Result<mode_t> ParseAccessMode(const std::string& text) {
  unsigned long v = 0;
  size_t used = 0;
  try {
    v = std::stoul(text, &used, 8);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || text[0] == '-' || (v & ~0666ul) != 0) {
    return MakeError(
        ErrorCode::kInvalidArgument,
        "access mode must be octal permission bits without execute, such as 0600 or 0660, got '" + text + "'");
  }
  return static_cast<mode_t>(v);
}

}  // namespace cachet
