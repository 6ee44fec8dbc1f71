#include "stream_listener.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "protocol.h"
#include "stream.h"

namespace cachet::daemon {

struct StreamListener::Connection {
  int fd = -1;
  std::string peer;
  uint32_t events = 0;  // as registered with epoll
  // Received bytes not yet run: [in_begin, in_end) of in. It grows with
  // the bytes that arrive, never to a length a header merely announces.
  std::string in;
  size_t in_begin = 0;
  size_t in_end = 0;
  // A frame over max_frame is not kept: its first bytes (enough for the
  // request id) wait in `head` while the rest is dropped as it arrives;
  // `discard` counts what is still to drop, `frame_size` is its length.
  std::string head;
  uint64_t discard = 0;
  uint64_t frame_size = 0;
  // Replies not yet written: [out_begin, out.size()) of out.
  std::string out;
  size_t out_begin = 0;
  // The client shut its sending side: what it sent is answered, then the
  // connection closes.
  bool peer_done = false;
  // Turns: the round this connection last had one, the requests its
  // current turn may still run, and whether the last run stopped with
  // requests it had read still waiting (for its turn or for kMaxUnsent).
  uint64_t round = 0;
  size_t budget = 0;
  bool frames_left = false;

  size_t unsent() const { return out.size() - out_begin; }
};

namespace {

std::string AddressText(const sockaddr_storage& a) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (a.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(a);
    inet_ntop(AF_INET, &v4.sin_addr, host, sizeof host);
    port = ntohs(v4.sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  const auto& v6 = reinterpret_cast<const sockaddr_in6&>(a);
  inet_ntop(AF_INET6, &v6.sin6_addr, host, sizeof host);
  port = ntohs(v6.sin6_port);
  return "[" + std::string(host) + "]:" + std::to_string(port);
}

Error SystemError(const std::string& what) { return Error{ErrorCode::kIo, what + ": " + std::strerror(errno)}; }

// The descriptor kept in reserve for running out (StreamListener::Shed).
int OpenSpareDescriptor() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }

}  // namespace

Result<std::unique_ptr<StreamListener>> StreamListener::Listen(const std::string& address, Limits limits,
                                                               Handler handler, std::shared_ptr<spdlog::logger> log) {
  std::string host;
  uint16_t port = 0;
  if (!stream::SplitHostPort(address, &host, &port)) {
    return MakeError(ErrorCode::kInvalidArgument, "stream must be HOST:PORT (or [IPv6]:PORT), got '" + address + "'");
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0) {
    return MakeError(ErrorCode::kIo, "cannot bind stream " + address + ": " + ::gai_strerror(rc));
  }
  const int fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  const bool bound = fd >= 0 && ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
                     ::bind(fd, found->ai_addr, found->ai_addrlen) == 0 && ::listen(fd, SOMAXCONN) == 0;
  ::freeaddrinfo(found);
  if (!bound) {
    Error e = SystemError("cannot bind stream " + address);
    if (fd >= 0) ::close(fd);
    return tl::unexpected(e);
  }
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
  const int epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (epoll_fd < 0 || ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
    Error e = SystemError("cannot watch stream " + address);
    ::close(fd);
    if (epoll_fd >= 0) ::close(epoll_fd);
    return tl::unexpected(e);
  }
  return std::unique_ptr<StreamListener>(new StreamListener(
      fd, epoll_fd, std::string(stream::kScheme) + AddressText(local), limits, std::move(handler), std::move(log)));
}

StreamListener::StreamListener(int listen_fd, int epoll_fd, std::string endpoint, Limits limits, Handler handler,
                               std::shared_ptr<spdlog::logger> log)
    : listen_fd_(listen_fd),
      epoll_fd_(epoll_fd),
      endpoint_(std::move(endpoint)),
      limits_(limits),
      handler_(std::move(handler)),
      log_(std::move(log)),
      spare_fd_(OpenSpareDescriptor()) {}

StreamListener::~StreamListener() {
  for (auto& [fd, c] : connections_) ::close(fd);
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (spare_fd_ >= 0) ::close(spare_fd_);
  ::close(epoll_fd_);
}

void StreamListener::Serve() {
  const uint64_t before = answered_;
  do {
    Round();
  } while (backlogged() && answered_ - before < kFramesPerServe);
}

void StreamListener::Round() {
  ++round_;
  waiting_.swap(backlogged_);
  backlogged_.clear();
  epoll_event events[64];
  int n;
  do {
    n = ::epoll_wait(epoll_fd_, events, 64, 0);
  } while (n < 0 && errno == EINTR);
  for (int i = 0; i < n; ++i) {
    if (events[i].data.fd == listen_fd_) {
      Accept();
    } else {
      TakeTurn(events[i].data.fd, events[i].events);
    }
  }
  // Those with requests left from their last turn, if epoll named them not.
  for (const int fd : waiting_) TakeTurn(fd, EPOLLIN);
  waiting_.clear();
}

void StreamListener::TakeTurn(int fd, uint32_t events) {
  auto it = connections_.find(fd);
  if (it == connections_.end() || it->second->round == round_) return;  // closed, or had its turn
  Connection& c = *it->second;
  c.round = round_;
  c.budget = kFramesPerTurn;
  // An error or hang-up is met by the read, else by the write.
  bool open = !(events & (EPOLLIN | EPOLLERR | EPOLLHUP)) || Read(c);
  if (open && !RunFrames(c)) {
    // A frame it closes for: the replies owed go first, as far as the
    // socket takes them.
    (void)Write(c);
    open = false;
  }
  if (open && !WritesWait(c)) open = Write(c);
  // After the client's end: closed once all it sent is answered and written.
  if (open && c.peer_done && !c.frames_left && c.unsent() == 0) open = false;
  if (!open) {
    Close(fd, "closed");
    return;
  }
  if (!Watch(c)) return;
  if (c.frames_left && c.unsent() < kMaxUnsent) backlogged_.push_back(fd);
}

bool StreamListener::WritesWait(const Connection& c) { return c.frames_left && c.unsent() < kWriteBatch; }

void StreamListener::Accept() {
  for (;;) {
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int error = errno;
      if (error == EINTR || error == ECONNABORTED) continue;
      if (error == EAGAIN || error == EWOULDBLOCK) return;
      if (error == EMFILE || error == ENFILE) {
        // Without a descriptor accept fails whether or not one waits.
        const Shedding shed = Shed(error);
        if (shed == Shedding::kShedOne) continue;
        if (shed == Shedding::kNoneWaiting) return;
      }
      // A connection may stay queued and the socket readable: accepting
      // stops until the next tick rather than spin on it.
      PauseAccepting(std::strerror(error));
      return;
    }
    if (connections_.size() >= limits_.max_connections) {
      ::close(fd);
      Refused(peer, std::to_string(limits_.max_connections) + " connections are served (max-connections)");
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_unique<Connection>();
    c->fd = fd;
    c->peer = AddressText(peer);
    c->events = EPOLLIN;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      log_->warn("cannot watch a connection on {} from {}: {}", endpoint_, c->peer, std::strerror(errno));
      ::close(fd);
      continue;
    }
    log_->debug("{}: connection from {}", endpoint_, c->peer);
    connections_.emplace(fd, std::move(c));
  }
}

void StreamListener::Refused(const sockaddr_storage& peer, const std::string& why) {
  if (refused_++ % 1000 == 0) {
    log_->warn("refused a connection on {} from {}: {}; {} refused so far", endpoint_, AddressText(peer), why,
               refused_);
  }
}

// Out of descriptors, a queued connection cannot be accepted and keeps the
// socket readable. The spare descriptor makes room to accept it and close
// it at once (the client sees the connection end), and is opened again.
StreamListener::Shedding StreamListener::Shed(int error) {
  if (spare_fd_ < 0) return Shedding::kCannot;
  ::close(spare_fd_);
  sockaddr_storage peer{};
  socklen_t len = sizeof peer;
  const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
  const int accept_error = errno;
  if (fd >= 0) ::close(fd);
  spare_fd_ = OpenSpareDescriptor();
  if (fd < 0) {
    const bool empty = accept_error == EAGAIN || accept_error == EWOULDBLOCK;
    return empty ? Shedding::kNoneWaiting : Shedding::kCannot;
  }
  Refused(peer, std::string("out of file descriptors (") + std::strerror(error) +
                    "): raise cachetd's open-file limit (LimitNOFILE, ulimit -n) or lower max-connections");
  return Shedding::kShedOne;
}

void StreamListener::PauseAccepting(const char* why) {
  if (accepting_paused_) return;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
  accepting_paused_ = true;
  if (pauses_++ % 100 == 0) {
    log_->error("accept on {} failed: {}; not accepting until the next tick ({} pauses so far)", endpoint_, why,
                pauses_);
  }
}

void StreamListener::ResumeAccepting() {
  if (!accepting_paused_ || listen_fd_ < 0) return;
  if (spare_fd_ < 0) spare_fd_ = OpenSpareDescriptor();
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listen_fd_;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev) == 0) accepting_paused_ = false;
}

bool StreamListener::Read(Connection& c) {
  // Not now: the client's end came, or what it sent before is still to run,
  // or it is to read its replies first.
  if (c.peer_done || c.frames_left || c.unsent() >= kMaxUnsent) return true;
  if (c.in_begin == c.in_end) {
    c.in_begin = c.in_end = 0;
    if (c.in.size() > 4 * kReadChunk) std::string().swap(c.in);  // after a large frame
  }
  if (c.in.size() - c.in_end < kReadChunk) {
    if (c.in_begin > 0) {
      std::memmove(c.in.data(), c.in.data() + c.in_begin, c.in_end - c.in_begin);
      c.in_end -= c.in_begin;
      c.in_begin = 0;
    }
    if (c.in.size() - c.in_end < kReadChunk) c.in.resize(c.in_end + kReadChunk);
  }
  ssize_t n;
  do {
    n = ::recv(c.fd, c.in.data() + c.in_end, kReadChunk, 0);
  } while (n < 0 && errno == EINTR);
  if (n == 0) {  // the client sends no more; it may still read
    c.peer_done = true;
    return true;
  }
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
    log_->debug("{}: reading from {} failed: {}", endpoint_, c.peer, std::strerror(errno));
    return false;
  }
  c.in_end += static_cast<size_t>(n);
  return true;
}

bool StreamListener::RunFrames(Connection& c) {
  c.frames_left = false;
  for (;;) {
    if (c.unsent() >= kMaxUnsent || c.budget == 0) {
      c.frames_left = true;  // perhaps: no frame was looked at
      break;
    }
    const size_t have = c.in_end - c.in_begin;
    if (c.discard > 0) {  // inside a frame over max_frame
      const size_t dropped = static_cast<size_t>(std::min<uint64_t>(c.discard, have));
      c.in_begin += dropped;
      c.discard -= dropped;
      if (c.discard > 0) break;
      Answer(c, c.head.data(), c.head.size(), c.frame_size);
      std::string().swap(c.head);
      continue;
    }
    if (have < stream::kHeaderBytes) break;
    const size_t length = stream::GetLength(c.in.data() + c.in_begin);
    if (length > 4 * limits_.max_frame) {
      // Any stray protocol meets this ("GET " reads as 1.2 GB): the first and
      // every 1000th are logged, so that a flood of them cannot fill the disk.
      if (oversized_++ % 1000 == 0) {
        log_->warn("{}: closed the connection from {}: a frame of {} bytes, over 4 x max-frame ({}); {} so far",
                   endpoint_, c.peer, length, limits_.max_frame, oversized_);
      }
      return false;
    }
    if (length > limits_.max_frame) {
      const size_t keep = std::min(length, kKeptHead);
      if (have < stream::kHeaderBytes + keep) break;  // its head first
      c.head.assign(c.in.data() + c.in_begin + stream::kHeaderBytes, keep);
      c.frame_size = length;
      c.discard = length;
      c.in_begin += stream::kHeaderBytes;
      continue;
    }
    if (have < stream::kHeaderBytes + length) break;  // the rest comes in later turns
    Answer(c, c.in.data() + c.in_begin + stream::kHeaderBytes, length, length);
    c.in_begin += stream::kHeaderBytes + length;
  }
  return true;
}

void StreamListener::Answer(Connection& c, const char* data, size_t size, uint64_t frame_size) {
  --c.budget;
  static thread_local wire::Writer out;
  out.Clear();
  handler_(data, size, frame_size, out);
  ++answered_;
  char header[stream::kHeaderBytes];
  stream::PutLength(header, static_cast<uint32_t>(out.size()));
  c.out.append(header, sizeof header);
  c.out.append(out.data(), out.size());
}

bool StreamListener::Write(Connection& c) {
  while (c.unsent() > 0) {
    const ssize_t n = ::send(c.fd, c.out.data() + c.out_begin, c.unsent(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      log_->debug("{}: writing to {} failed: {}", endpoint_, c.peer, std::strerror(errno));
      return false;
    }
    c.out_begin += static_cast<size_t>(n);
  }
  if (c.out_begin == c.out.size()) {
    c.out.clear();
    c.out_begin = 0;
  } else if (c.out_begin >= kMaxUnsent) {
    c.out.erase(0, c.out_begin);
    c.out_begin = 0;
  }
  return true;
}

bool StreamListener::Watch(Connection& c) {
  const uint32_t want =
      (!c.peer_done && c.unsent() < kMaxUnsent ? EPOLLIN : 0u) | (c.unsent() > 0 && !WritesWait(c) ? EPOLLOUT : 0u);
  if (want == c.events) return true;
  epoll_event ev{};
  ev.events = want;
  ev.data.fd = c.fd;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev) != 0) {
    log_->warn("{}: cannot watch the connection from {}: {}; closing it", endpoint_, c.peer, std::strerror(errno));
    Close(c.fd, "unwatchable");
    return false;
  }
  c.events = want;
  return true;
}

void StreamListener::Close(int fd, const char* why) {
  auto it = connections_.find(fd);
  if (it == connections_.end()) return;
  log_->debug("{}: connection from {} {}", endpoint_, it->second->peer, why);
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  ::close(fd);
  connections_.erase(it);
}

uint64_t StreamListener::Drain(std::chrono::milliseconds limit) {
  // A connection the kernel completed before the stop is one the client
  // counts as open and may already have sent on: it is taken and answered
  // like the rest. No new connections from here on.
  Accept();
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
  ::close(listen_fd_);
  listen_fd_ = -1;
  const uint64_t before = answered_;
  const auto give_up = std::chrono::steady_clock::now() + limit;
  // Until every reply is written and no request came for 20 ms.
  while (std::chrono::steady_clock::now() < give_up) {
    Serve();
    if (backlogged()) continue;
    bool unsent = false;
    for (auto& [fd, c] : connections_) unsent = unsent || c->unsent() > 0;
    epoll_event ready;
    if (::epoll_wait(epoll_fd_, &ready, 1, 20) == 0 && !unsent) break;
  }
  return answered_ - before;
}

}  // namespace cachet::daemon
