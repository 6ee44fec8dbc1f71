// FaultProxy: a TCP proxy for tests that puts network faults between a
// client and a server, since this kernel has no `tc netem`.
//
// It listens on a free port of `listen_host` (loopback by default) and
// forwards every connection it accepts to the target host:port, byte for
// byte, until the test sets a fault:
//  - delay per direction: each chunk read is held for D before it is sent
//    on, order kept (a later, shorter delay waits behind an earlier chunk);
//  - drop (a blackhole): connections stay open but nothing is forwarded;
//    bytes read, and those queued when it starts, are discarded;
//  - reset: every current connection is aborted with an RST on both sides
//    (SO_LINGER 0, then close);
//  - refuse: new connections are refused (the port stops listening, so a
//    connect gets ECONNREFUSED) until allowed again;
//  - PassThrough() clears delay, drop and refuse.
// Each setter takes effect before it returns: data read after it sees it.
//
// One thread of its own runs a poll loop over every socket; the destructor
// stops it promptly and closes every connection, whatever their state.
// Buffers are bounded (kMaxQueued per direction per connection): a side
// that does not read slows the other down instead of growing memory.
//
// Thread safety: every method may be called from any thread (the setters
// are meant for the test thread while clients run in others).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cachet/result.h"

namespace cachet::testing {

class FaultProxy {
 public:
  enum class Direction {
    kToTarget,  // from the connecting client to the target
    kToClient,  // back
  };
  static constexpr size_t kMaxQueued = 1 << 20;
  static constexpr size_t kChunk = 64 << 10;

  // Starts listening on a free port of `listen_host` (an IPv4 address),
  // forwarding to `target_host` (an IPv4 address) : `target_port`.
  static Result<std::unique_ptr<FaultProxy>> Start(const std::string& target_host, uint16_t target_port,
                                                   const std::string& listen_host = "127.0.0.1");
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  void SetDelay(Direction direction, std::chrono::milliseconds delay);
  void SetDelay(std::chrono::milliseconds delay);  // both directions
  void SetDrop(bool drop);
  void SetRefuse(bool refuse);
  // Aborts every connection open now; returns once they are closed.
  void ResetConnections();
  void PassThrough();

  const std::string& host() const { return listen_host_; }
  uint16_t port() const { return port_; }
  // "tcp://<host>:<port>", as cachet::Client takes it.
  std::string endpoint() const;

  size_t connections() const { return connections_.load(); }
  uint64_t accepted() const { return accepted_.load(); }
  // Bytes read from the sending side (whatever then became of them).
  uint64_t bytes_received(Direction direction) const { return received_[Index(direction)].load(); }
  uint64_t bytes_forwarded(Direction direction) const { return forwarded_[Index(direction)].load(); }
  uint64_t bytes_dropped() const { return dropped_.load(); }

  class Loop;  // the poll loop's state, owned by its thread

 private:
  FaultProxy() = default;
  static size_t Index(Direction d) { return d == Direction::kToTarget ? 0 : 1; }
  // Runs `command` on the loop's thread and waits until it has.
  void Run(std::function<void(Loop&)> command);
  void ThreadMain();

  std::string listen_host_;
  uint16_t port_ = 0;
  std::unique_ptr<Loop> loop_;
  int wake_fd_ = -1;  // eventfd: a command is queued, or stop

  std::mutex mu_;
  std::condition_variable done_cv_;
  std::vector<std::function<void(Loop&)>> commands_;  // GUARDED_BY(mu_)
  uint64_t queued_ = 0, done_ = 0;                    // GUARDED_BY(mu_)
  std::atomic<bool> stop_{false};

  std::atomic<size_t> connections_{0};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> received_[2] = {};
  std::atomic<uint64_t> forwarded_[2] = {};
  std::atomic<uint64_t> dropped_{0};
  std::thread thread_;
};

}  // namespace cachet::testing
