#include "instance_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace cachet::daemon {

namespace {

std::string Errno() { return std::strerror(errno); }

// The pid written by the holder, or "unknown" if it has not written one yet.
std::string HolderPid(int fd) {
  char buf[32] = {0};
  const ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
  return pid.empty() ? "unknown" : pid;
}

}  // namespace

std::string InstanceLock::PathFor(const std::string& segment) { return "/dev/shm/" + segment + ".lock"; }

Result<InstanceLock> InstanceLock::Acquire(const std::string& segment) {
  const std::string path = PathFor(segment);
  for (;;) {
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return MakeError(ErrorCode::kIo, "cannot open lock file " + path + ": " + Errno());
    int locked;
    do {
      locked = flock(fd, LOCK_EX | LOCK_NB);
    } while (locked != 0 && errno == EINTR);
    if (locked != 0) {
      const int error = errno;
      const std::string pid = HolderPid(fd);
      close(fd);
      if (error == EWOULDBLOCK) {
        return MakeError(ErrorCode::kAlreadyExists, "segment /" + segment + " is in use by another cachetd (pid " +
                                                        pid + ", lock " + path +
                                                        "); stop it first or give this one another --segment");
      }
      return MakeError(ErrorCode::kIo, "cannot lock " + path + ": " + std::strerror(error));
    }
    // A holder that exited between our open and our flock removed the file:
    // our lock is then on a file nobody else will find. Start again.
    struct stat held {
    }, named{};
    if (fstat(fd, &held) != 0 || stat(path.c_str(), &named) != 0 || held.st_ino != named.st_ino ||
        held.st_dev != named.st_dev) {
      close(fd);
      continue;
    }
    const std::string pid = std::to_string(getpid()) + "\n";
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
      const std::string why = Errno();
      close(fd);
      return MakeError(ErrorCode::kIo, "cannot write lock file " + path + ": " + why);
    }
    return InstanceLock(path, fd);
  }
}

std::optional<std::string> InstanceLock::WhyIpcPathIsTaken(const std::string& endpoint) {
  if (endpoint.rfind("ipc://", 0) != 0) return std::nullopt;
  const std::string path = endpoint.substr(6);
  sockaddr_un address{};
  if (path.empty() || path[0] == '@' || path.size() >= sizeof address.sun_path) return std::nullopt;
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) return std::nullopt;  // no file: free
  if (!S_ISSOCK(st.st_mode)) return path + " exists and is not a socket; binding would replace it";
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  int connected;
  do {
    connected = connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address);
  } while (connected != 0 && errno == EINTR);
  close(fd);
  // ECONNREFUSED: a socket file left by a process that died.
  if (connected == 0) return std::string("another process is listening there");
  return std::nullopt;
}

InstanceLock::InstanceLock(InstanceLock&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {}

InstanceLock& InstanceLock::operator=(InstanceLock&& other) noexcept {
  if (this != &other) {
    Release();
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

InstanceLock::~InstanceLock() { Release(); }

void InstanceLock::Release() {
  if (fd_ < 0) return;
  // Unlinked while still held, so no newcomer can lock this file and then
  // find it gone (Acquire checks for that, and starts again).
  unlink(path_.c_str());
  close(fd_);
  fd_ = -1;
}

}  // namespace cachet::daemon
