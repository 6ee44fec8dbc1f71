#include "stream.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

namespace cachet::stream {

bool SplitHostPort(const std::string& address, std::string* host, uint16_t* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  std::string h = address.substr(0, colon);
  const std::string p = address.substr(colon + 1);
  if (h.front() == '[') {
    if (h.size() < 3 || h.back() != ']') return false;
    h = h.substr(1, h.size() - 2);
  } else if (h.find(':') != std::string::npos) {
    return false;  // an IPv6 address needs its brackets
  }
  if (p.empty() || p.size() > 5 || !std::all_of(p.begin(), p.end(), [](unsigned char c) { return std::isdigit(c); })) {
    return false;
  }
  const unsigned long n = std::stoul(p);
  if (n > 65535) return false;
  *host = h;
  *port = static_cast<uint16_t>(n);
  return true;
}

namespace {

using Clock = Connection::Clock;

timeval ToTimeval(std::chrono::microseconds t) {
  t = std::max(t, std::chrono::microseconds(1));  // 0 would mean "wait forever"
  return timeval{static_cast<time_t>(t.count() / 1000000), static_cast<suseconds_t>(t.count() % 1000000)};
}

// A non-blocking connect to `ai`, waited on until `deadline`: the socket,
// or -1 with errno set.
int ConnectOne(const addrinfo& ai, Clock::time_point deadline) {
  const int fd = ::socket(ai.ai_family, ai.ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai.ai_protocol);
  if (fd < 0) return -1;
  if (::connect(fd, ai.ai_addr, ai.ai_addrlen) != 0) {
    if (errno != EINPROGRESS) {
      const int e = errno;
      ::close(fd);
      errno = e;
      return -1;
    }
    for (;;) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      pollfd p{fd, POLLOUT, 0};
      const int ready = left > 0 ? ::poll(&p, 1, static_cast<int>(left)) : 0;
      if (ready < 0 && errno == EINTR) continue;
      int error = ready == 0 ? ETIMEDOUT : ready < 0 ? errno : 0;
      socklen_t len = sizeof error;
      if (ready > 0 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) error = errno;
      if (error == 0) break;
      ::close(fd);
      errno = error;
      return -1;
    }
  }
  // Blocking from here on, each call bounded by SO_RCVTIMEO / SO_SNDTIMEO.
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

}  // namespace

Result<void> Connection::Connect(const std::string& address, std::chrono::milliseconds timeout) {
  Close();
  address_ = address;
  timeout_ = timeout;
  std::string host;
  uint16_t port = 0;
  if (!SplitHostPort(address, &host, &port) || port == 0) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "stream endpoint '" + address + "' must be HOST:PORT (or [IPv6]:PORT) with a port of 1 to 65535");
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    return MakeError(ErrorCode::kUnavailable, "cannot resolve '" + host + "': " + ::gai_strerror(rc));
  }
  const auto deadline = Clock::now() + timeout;
  int error = 0;
  for (const addrinfo* ai = found; ai != nullptr && fd_ < 0; ai = ai->ai_next) {
    fd_ = ConnectOne(*ai, deadline);
    if (fd_ < 0) error = errno;
  }
  ::freeaddrinfo(found);
  if (fd_ < 0) {
    return MakeError(ErrorCode::kUnavailable,
                     "cannot reach cachetd at stream://" + address + ": " +
                         (error == ETIMEDOUT ? "no answer within " + std::to_string(timeout.count()) + " ms"
                                             : std::strerror(error)));
  }
  const timeval t = ToTimeval(timeout);
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &t, sizeof t);
  owner_ = ::getpid();
  cut_ = false;
  begin_ = end_ = 0;
  return {};
}

bool Connection::connected() const { return fd_ >= 0 && owner_ == ::getpid(); }

void Connection::Close() {
  if (fd_ >= 0) ::close(fd_);  // in a forked child, its own copy only
  fd_ = -1;
  begin_ = end_ = 0;
}

Error Connection::Fail(ErrorCode code, const std::string& what) {
  Close();
  return Error{code, what};
}

// Before each blocking call: SO_RCVTIMEO / SO_SNDTIMEO set to the time
// left before `deadline` when that is shorter than the full timeout (a
// second wait in one call), and back to the full timeout after; no
// setsockopt on the common path. False once the deadline has passed.
bool Connection::Arm(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now());
  if (left.count() <= 0) return false;
  const bool cut = left < timeout_ - std::chrono::milliseconds(1);
  if (!cut && !cut_) return true;
  const timeval t = ToTimeval(cut ? left : std::chrono::microseconds(timeout_));
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &t, sizeof t);
  cut_ = cut;
  return true;
}

Result<void> Connection::Send(const char* data, size_t size, Clock::time_point deadline) {
  char header[kHeaderBytes];
  PutLength(header, static_cast<uint32_t>(size));
  iovec parts[2] = {{header, kHeaderBytes}, {const_cast<char*>(data), size}};
  msghdr msg{};
  msg.msg_iov = parts;
  msg.msg_iovlen = 2;
  size_t left = kHeaderBytes + size;
  while (left > 0) {
    if (!Arm(deadline)) {
      return tl::unexpected(Fail(ErrorCode::kTimeout, "cachetd at stream://" + address_ + " took no request within " +
                                                          std::to_string(timeout_.count()) + " ms"));
    }
    const ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return tl::unexpected(Fail(ErrorCode::kTimeout, "cachetd at stream://" + address_ + " took no request within " +
                                                            std::to_string(timeout_.count()) + " ms"));
      }
      return tl::unexpected(Fail(ErrorCode::kUnavailable,
                                 "cannot send to cachetd at stream://" + address_ + ": " + std::strerror(errno)));
    }
    left -= static_cast<size_t>(n);
    // Step past what went out.
    size_t sent = static_cast<size_t>(n);
    while (sent > 0 && msg.msg_iovlen > 0) {
      const size_t take = std::min(sent, msg.msg_iov[0].iov_len);
      msg.msg_iov[0].iov_base = static_cast<char*>(msg.msg_iov[0].iov_base) + take;
      msg.msg_iov[0].iov_len -= take;
      sent -= take;
      if (msg.msg_iov[0].iov_len == 0) {
        ++msg.msg_iov;
        --msg.msg_iovlen;
      }
    }
  }
  return {};
}

Result<std::string_view> Connection::Receive(Clock::time_point deadline, size_t max_frame) {
  if (in_.size() < 64 * 1024) in_.resize(64 * 1024);
  for (;;) {
    const size_t have = end_ - begin_;
    if (have >= kHeaderBytes) {
      const size_t length = GetLength(in_.data() + begin_);
      if (length > max_frame) {
        return tl::unexpected(Fail(ErrorCode::kProtocol, "cachetd at stream://" + address_ + " sent a frame of " +
                                                             std::to_string(length) + " bytes, over " +
                                                             std::to_string(max_frame)));
      }
      if (have >= kHeaderBytes + length) {
        const std::string_view frame(in_.data() + begin_ + kHeaderBytes, length);
        begin_ += kHeaderBytes + length;
        if (begin_ == end_) begin_ = end_ = 0;
        return frame;
      }
      // Room for more of the frame: what is buffered moves to the front,
      // then the buffer doubles as bytes arrive, up to the frame's size,
      // never straight to a length a header claims (a port that is not a
      // stream endpoint, cachetd's ZeroMQ one say, greets with 0xff000000).
      if (begin_ > 0 && begin_ + kHeaderBytes + length > in_.size()) {
        std::memmove(in_.data(), in_.data() + begin_, have);
        begin_ = 0;
        end_ = have;
      }
      if (end_ == in_.size()) in_.resize(std::min(kHeaderBytes + length, 2 * in_.size()));
    } else if (begin_ > 0 && in_.size() - end_ < kHeaderBytes) {
      std::memmove(in_.data(), in_.data() + begin_, have);
      begin_ = 0;
      end_ = have;
    }
    if (!Arm(deadline)) {
      return tl::unexpected(Fail(ErrorCode::kTimeout, "no reply from cachetd at stream://" + address_ + " within " +
                                                          std::to_string(timeout_.count()) + " ms"));
    }
    const ssize_t n = ::recv(fd_, in_.data() + end_, in_.size() - end_, 0);
    if (n > 0) {
      end_ += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) {
      return tl::unexpected(
          Fail(ErrorCode::kUnavailable, "cachetd at stream://" + address_ + " closed the connection"));
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return tl::unexpected(Fail(ErrorCode::kTimeout, "no reply from cachetd at stream://" + address_ + " within " +
                                                          std::to_string(timeout_.count()) + " ms"));
    }
    return tl::unexpected(Fail(ErrorCode::kUnavailable,
                               "cannot read from cachetd at stream://" + address_ + ": " + std::strerror(errno)));
  }
}

}  // namespace cachet::stream
