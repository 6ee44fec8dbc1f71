#include "cluster/fault_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <list>

namespace cachet::testing {
namespace {

using Clock = std::chrono::steady_clock;

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

Result<sockaddr_in> Address(const std::string& host, uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return MakeError(ErrorCode::kInvalidArgument, "not an IPv4 address: '" + host + "'");
  }
  return addr;
}

// Closes `fd` with an RST instead of a FIN.
void Abort(int fd) {
  if (fd < 0) return;
  const linger hard{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
  close(fd);
}

struct Chunk {
  Clock::time_point release;
  std::string data;
  size_t sent = 0;
};

// One direction of a connection.
struct Pipe {
  std::deque<Chunk> queue;
  size_t queued = 0;  // bytes in `queue` not yet sent
  bool eof = false;   // the source sent FIN
  bool shut = false;  // the FIN was passed on
};

struct Connection {
  int client = -1;
  int target = -1;
  bool connecting = true;
  Pipe to_target, to_client;
  bool dead = false;
};

}  // namespace

class FaultProxy::Loop {
 public:
  Loop(FaultProxy& owner, int listen_fd, sockaddr_in target) : owner_(owner), listen_fd_(listen_fd), target_(target) {}
  ~Loop() {
    for (Connection& c : connections_) CloseConnection(c, /*hard=*/true);
    if (listen_fd_ >= 0) close(listen_fd_);
  }

  // One turn: poll every socket (and the wake fd) until something is ready
  // or the next delayed chunk is due, then serve what is ready.
  void Turn(int wake_fd) {
    std::vector<pollfd> fds;
    std::vector<std::pair<Connection*, bool>> owners;  // (connection, is_client) per fd past the first two
    fds.push_back({wake_fd, POLLIN, 0});
    fds.push_back({listening_ ? listen_fd_ : -1, POLLIN, 0});
    const Clock::time_point now = Clock::now();
    Clock::time_point next_due = Clock::time_point::max();
    for (Connection& c : connections_) {
      short client_events = 0, target_events = 0;
      if (WantsRead(c.to_target)) client_events |= POLLIN;
      if (c.connecting) {
        target_events |= POLLOUT;
      } else {
        if (WantsRead(c.to_client)) target_events |= POLLIN;
        if (Due(c.to_target, now, &next_due)) target_events |= POLLOUT;
        if (Due(c.to_client, now, &next_due)) client_events |= POLLOUT;
      }
      // A socket with nothing wanted is left out: poll would report its
      // hang-up again and again. Its errors show at its next read or write.
      fds.push_back({client_events ? c.client : -1, client_events, 0});
      owners.emplace_back(&c, true);
      fds.push_back({target_events ? c.target : -1, target_events, 0});
      owners.emplace_back(&c, false);
    }
    int timeout = -1;
    if (next_due != Clock::time_point::max()) {
      const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_due - now).count() + 1;
      timeout = static_cast<int>(std::clamp<int64_t>(wait, 0, 60'000));
    }
    if (poll(fds.data(), fds.size(), timeout) < 0) {
      if (errno != EINTR) std::fprintf(stderr, "FaultProxy: %s\n", Errno("poll").c_str());
      return;
    }
    if (fds[1].revents & POLLIN) AcceptAll();
    for (size_t i = 2; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      auto [c, is_client] = owners[i - 2];
      if (c->dead) continue;
      Serve(*c, is_client, fds[i].revents);
    }
    // Pass on the FINs of drained directions, then forget finished connections.
    for (Connection& c : connections_) {
      if (c.dead || c.connecting) continue;
      Finish(c.to_target, c.target);
      Finish(c.to_client, c.client);
      if (c.to_target.shut && c.to_client.shut) CloseConnection(c, /*hard=*/false);
    }
    connections_.remove_if([](const Connection& c) { return c.dead; });
    owner_.connections_.store(connections_.size());
  }

  void SetDelay(size_t direction, std::chrono::milliseconds delay) { delay_[direction] = delay; }
  void SetDrop(bool drop) {
    drop_ = drop;
    if (!drop) return;
    for (Connection& c : connections_) {
      owner_.dropped_ += c.to_target.queued + c.to_client.queued;
      for (Pipe* p : {&c.to_target, &c.to_client}) {
        p->queue.clear();
        p->queued = 0;
      }
    }
  }
  void SetRefuse(bool refuse) {
    if (refuse == !listening_) return;
    if (refuse) {
      // A listening socket shut down stops listening but keeps its port:
      // connects are refused, and listen() again resumes on the same port.
      if (shutdown(listen_fd_, SHUT_RDWR) != 0) std::fprintf(stderr, "FaultProxy: %s\n", Errno("shutdown").c_str());
      listening_ = false;
    } else {
      if (listen(listen_fd_, SOMAXCONN) != 0) {
        std::fprintf(stderr, "FaultProxy: %s\n", Errno("listen again").c_str());
        return;
      }
      listening_ = true;
    }
  }
  void ResetAll() {
    for (Connection& c : connections_) CloseConnection(c, /*hard=*/true);
    connections_.clear();
    owner_.connections_.store(0);
  }

 private:
  bool WantsRead(const Pipe& p) const { return !p.eof && (drop_ || p.queued < kMaxQueued); }

  // True if `p`'s first chunk may be sent now; else notes when it may.
  bool Due(const Pipe& p, Clock::time_point now, Clock::time_point* next_due) const {
    if (p.queue.empty()) return false;
    if (p.queue.front().release <= now) return true;
    *next_due = std::min(*next_due, p.queue.front().release);
    return false;
  }

  void AcceptAll() {
    for (;;) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
          std::fprintf(stderr, "FaultProxy: %s\n", Errno("accept").c_str());
        }
        return;
      }
      ++owner_.accepted_;
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      const int target = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (target < 0) {
        std::fprintf(stderr, "FaultProxy: %s\n", Errno("socket").c_str());
        Abort(fd);
        continue;
      }
      setsockopt(target, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (connect(target, reinterpret_cast<const sockaddr*>(&target_), sizeof target_) != 0 && errno != EINPROGRESS) {
        // The target refuses: so does the proxy, with an RST.
        close(target);
        Abort(fd);
        continue;
      }
      Connection c;
      c.client = fd;
      c.target = target;
      connections_.push_back(std::move(c));
    }
  }

  void Serve(Connection& c, bool is_client, short revents) {
    if (!is_client && c.connecting) {
      int error = 0;
      socklen_t len = sizeof error;
      getsockopt(c.target, SOL_SOCKET, SO_ERROR, &error, &len);
      if (error != 0 || (revents & (POLLERR | POLLHUP))) {
        CloseConnection(c, /*hard=*/true);  // the target refused or is unreachable
        return;
      }
      c.connecting = false;
      return;
    }
    const int fd = is_client ? c.client : c.target;
    Pipe& in = is_client ? c.to_target : c.to_client;   // read from fd
    Pipe& out = is_client ? c.to_client : c.to_target;  // written to fd
    const size_t out_index = Index(is_client ? Direction::kToClient : Direction::kToTarget);
    const size_t in_index = 1 - out_index;
    if (revents & POLLERR) {
      CloseConnection(c, /*hard=*/true);  // a reset on one side resets the other
      return;
    }
    if (revents & (POLLIN | POLLHUP)) {
      if (!Read(c, fd, in, in_index)) return;
    }
    if (revents & POLLOUT) Write(c, fd, out, out_index);
  }

  // False if the connection was closed.
  bool Read(Connection& c, int fd, Pipe& in, size_t index) {
    if (in.eof) return true;
    char buffer[kChunk];
    const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
    if (n > 0) {
      owner_.received_[index] += static_cast<uint64_t>(n);
      if (drop_) {
        owner_.dropped_ += static_cast<uint64_t>(n);
      } else {
        in.queue.push_back(Chunk{Clock::now() + delay_[index], std::string(buffer, static_cast<size_t>(n)), 0});
        in.queued += static_cast<size_t>(n);
      }
      return true;
    }
    if (n == 0) {
      in.eof = true;
      return true;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return true;
    CloseConnection(c, /*hard=*/true);  // a reset on one side resets the other
    return false;
  }

  void Write(Connection& c, int fd, Pipe& out, size_t index) {
    const Clock::time_point now = Clock::now();
    while (!out.queue.empty() && out.queue.front().release <= now) {
      Chunk& chunk = out.queue.front();
      const ssize_t n = send(fd, chunk.data.data() + chunk.sent, chunk.data.size() - chunk.sent, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        CloseConnection(c, /*hard=*/true);
        return;
      }
      chunk.sent += static_cast<size_t>(n);
      out.queued -= static_cast<size_t>(n);
      owner_.forwarded_[index] += static_cast<uint64_t>(n);
      if (chunk.sent < chunk.data.size()) return;
      out.queue.pop_front();
    }
  }

  // Once a direction's source has ended and all it sent is through, the
  // FIN goes on.
  static void Finish(Pipe& p, int destination) {
    if (p.eof && !p.shut && p.queue.empty()) {
      shutdown(destination, SHUT_WR);
      p.shut = true;
    }
  }

  void CloseConnection(Connection& c, bool hard) {
    if (c.dead) return;
    c.dead = true;
    if (hard) {
      Abort(c.client);
      Abort(c.target);
    } else {
      close(c.client);
      close(c.target);
    }
    c.client = c.target = -1;
  }

  FaultProxy& owner_;
  const int listen_fd_;
  const sockaddr_in target_;
  bool listening_ = true;
  bool drop_ = false;
  std::chrono::milliseconds delay_[2] = {};
  std::list<Connection> connections_;  // a list: Turn keeps pointers across removals
};

namespace {

// A listening socket on `addr`. Bound to an explicit port, a socket keeps
// it when shut down (a kernel-chosen port would be released), which is how
// SetRefuse stops listening and resumes on the same port.
Result<int> ListenOn(const sockaddr_in& addr) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return MakeError(ErrorCode::kIo, Errno("socket"));
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, SOMAXCONN) != 0) {
    const Error error{errno == EADDRINUSE ? ErrorCode::kAlreadyExists : ErrorCode::kIo, Errno("listen")};
    close(fd);
    return tl::unexpected(error);
  }
  return fd;
}

// Listens on a free port of `host`: asks the kernel for one, then binds it
// explicitly (trying again should another process take it in between).
Result<int> ListenOnFreePort(const std::string& host, uint16_t* port) {
  auto addr = Address(host, 0);
  if (!addr) return tl::unexpected(addr.error());
  for (int attempt = 0;; ++attempt) {
    auto probe = ListenOn(*addr);
    if (!probe) return tl::unexpected(probe.error());
    sockaddr_in bound{};
    socklen_t len = sizeof bound;
    const int got = getsockname(*probe, reinterpret_cast<sockaddr*>(&bound), &len);
    close(*probe);
    if (got != 0) return MakeError(ErrorCode::kIo, Errno("getsockname"));
    auto fd = ListenOn(bound);
    if (fd || fd.error().code != ErrorCode::kAlreadyExists || attempt == 10) {
      if (fd) *port = ntohs(bound.sin_port);
      return fd;
    }
  }
}

}  // namespace

Result<std::unique_ptr<FaultProxy>> FaultProxy::Start(const std::string& target_host, uint16_t target_port,
                                                      const std::string& listen_host) {
  auto target = Address(target_host, target_port);
  if (!target) return tl::unexpected(target.error());
  uint16_t port = 0;
  auto listening = ListenOnFreePort(listen_host, &port);
  if (!listening) {
    return MakeError(listening.error().code, "FaultProxy on " + listen_host + ": " + listening.error().message);
  }
  const int fd = *listening;
  const int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake < 0) {
    close(fd);
    return MakeError(ErrorCode::kIo, Errno("eventfd"));
  }
  std::unique_ptr<FaultProxy> proxy(new FaultProxy());
  proxy->listen_host_ = listen_host;
  proxy->port_ = port;
  proxy->wake_fd_ = wake;
  proxy->loop_ = std::make_unique<Loop>(*proxy, fd, *target);
  proxy->thread_ = std::thread([p = proxy.get()] { p->ThreadMain(); });
  return proxy;
}

FaultProxy::~FaultProxy() {
  stop_.store(true);
  const uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof one);
  thread_.join();
  loop_.reset();  // closes every connection and the listening socket
  close(wake_fd_);
}

void FaultProxy::ThreadMain() {
  while (!stop_.load()) {
    loop_->Turn(wake_fd_);
    uint64_t count = 0;
    (void)!read(wake_fd_, &count, sizeof count);
    std::vector<std::function<void(Loop&)>> commands;
    {
      std::lock_guard<std::mutex> lock(mu_);
      commands.swap(commands_);
    }
    for (auto& command : commands) command(*loop_);
    if (!commands.empty()) {
      std::lock_guard<std::mutex> lock(mu_);
      done_ += commands.size();
    }
    done_cv_.notify_all();
  }
}

void FaultProxy::Run(std::function<void(Loop&)> command) {
  std::unique_lock<std::mutex> lock(mu_);
  commands_.push_back(std::move(command));
  const uint64_t ticket = ++queued_;
  const uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof one);
  done_cv_.wait(lock, [&] { return done_ >= ticket; });
}

void FaultProxy::SetDelay(Direction direction, std::chrono::milliseconds delay) {
  Run([i = Index(direction), delay](Loop& loop) { loop.SetDelay(i, delay); });
}
void FaultProxy::SetDelay(std::chrono::milliseconds delay) {
  Run([delay](Loop& loop) {
    loop.SetDelay(0, delay);
    loop.SetDelay(1, delay);
  });
}
void FaultProxy::SetDrop(bool drop) {
  Run([drop](Loop& loop) { loop.SetDrop(drop); });
}
void FaultProxy::SetRefuse(bool refuse) {
  Run([refuse](Loop& loop) { loop.SetRefuse(refuse); });
}
void FaultProxy::ResetConnections() {
  Run([](Loop& loop) { loop.ResetAll(); });
}
void FaultProxy::PassThrough() {
  Run([](Loop& loop) {
    loop.SetDelay(0, std::chrono::milliseconds(0));
    loop.SetDelay(1, std::chrono::milliseconds(0));
    loop.SetDrop(false);
    loop.SetRefuse(false);
  });
}

std::string FaultProxy::endpoint() const { return "tcp://" + listen_host_ + ":" + std::to_string(port_); }

}  // namespace cachet::testing
