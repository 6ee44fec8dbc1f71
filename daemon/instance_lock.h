// InstanceLock: at most one cachetd per shared-memory segment.
//
// cachetd holds an flock on /dev/shm/<segment>.lock (the file holds its pid)
// from before it touches the segment until it exits. A second cachetd given
// the same segment finds the lock held and stops with a clear error, instead
// of attaching beside the first (or rebuilding its segment under it). The
// kernel drops the lock when the process dies, however it dies, so a
// restart after kill -9 or a crash proceeds as usual. A clean exit removes
// the file. Move-only; the daemon's main thread owns it.
#pragma once

#include <optional>
#include <string>

#include "cachet/result.h"

namespace cachet::daemon {

class InstanceLock {
 public:
  // The lock file for a segment: /dev/shm/<segment>.lock.
  static std::string PathFor(const std::string& segment);
  // Takes the lock, or fails: kAlreadyExists (naming the holder's pid) if
  // another process holds it, kIo if the file cannot be made.
  static Result<InstanceLock> Acquire(const std::string& segment);
  // Why this ipc:// endpoint's path may not be bound, or nullopt if it may.
  // ZeroMQ's bind removes whatever file is at the path without asking, so
  // binding would silently take the endpoint from a process that accepts
  // connections there ("another process is listening there"), or destroy a
  // file that is not a socket at all (a --ipc naming the configuration file).
  static std::optional<std::string> WhyIpcPathIsTaken(const std::string& endpoint);

  InstanceLock(InstanceLock&& other) noexcept;
  InstanceLock& operator=(InstanceLock&& other) noexcept;
  InstanceLock(const InstanceLock&) = delete;
  InstanceLock& operator=(const InstanceLock&) = delete;
  ~InstanceLock();  // removes the file, then releases the lock

 private:
  InstanceLock(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  void Release();

  std::string path_;
  int fd_ = -1;
};

}  // namespace cachet::daemon
