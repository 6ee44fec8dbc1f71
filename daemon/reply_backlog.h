// ReplyBacklog: how many reply bytes cachetd has handed to ZeroMQ that are
// not yet written to a client's connection, per connection and in total,
// and the gate that keeps both bounded.
//
// A client that sends requests and never reads the replies would otherwise
// make the daemon hold every reply in ZeroMQ's queues (16,000 GETs of 64 KiB
// are 1 GiB). Before each reply the daemon asks Make(): a connection that
// owes nothing always gets its reply (however large); one that owes less
// than `per_connection` bytes gets it while the daemon as a whole owes less
// than `total`; otherwise the reply is refused and the caller drops and
// counts it. So a connection holds at most `per_connection` bytes plus one
// reply, and the daemon `total` plus one reply per connection.
//
// Each reply is a zero-copy ZeroMQ message whose release (on ZeroMQ's I/O
// thread, once the bytes are in the socket, or when the connection goes
// away) gives its bytes back. Make() and Sweep() are for the daemon's
// thread only; the counts may be read from any thread.
//
// REQUIRES: the ReplyBacklog outlives the ZeroMQ context its messages go
// through (declare it before the context).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <zmq.hpp>

namespace cachet::daemon {

class ReplyBacklog {
 public:
  // Bytes charged for one reply beyond its payload: the ZeroMQ message and
  // the identity frame that travel with it, so tiny replies count too.
  static constexpr uint64_t kOverheadPerReply = 128;

  ReplyBacklog(uint64_t per_connection, uint64_t total);
  ~ReplyBacklog();
  ReplyBacklog(const ReplyBacklog&) = delete;
  ReplyBacklog& operator=(const ReplyBacklog&) = delete;

  // A message holding a copy of [data, data + size) for the connection with
  // this ZeroMQ routing id, or nullopt if it may not be queued now.
  std::optional<zmq::message_t> Make(std::string_view routing_id, const char* data, size_t size);
  // Forgets connections that owe nothing (call now and then).
  void Sweep();
  void SetLimits(uint64_t per_connection, uint64_t total);

  // Replies to this connection handed to ZeroMQ and not yet written to it.
  uint64_t RepliesOwed(std::string_view routing_id) const;

  uint64_t total_bytes() const { return total_.load(std::memory_order_relaxed); }

 private:
  struct Account {
    // Changed by read-modify-writes only: release when the daemon adds a
    // reply it has just written, acq_rel when the I/O thread takes it back.
    std::atomic<uint64_t> bytes{0};
    std::atomic<uint64_t> replies{0};  // as bytes; changed before bytes, so bytes == 0 implies replies == 0
  };
  struct Block;
  static void Release(void* data, void* hint);

  uint64_t per_connection_;
  uint64_t total_limit_;
  std::atomic<uint64_t> total_{0};  // as Account::bytes
  std::unordered_map<std::string, std::unique_ptr<Account>> accounts_;
};

}  // namespace cachet::daemon
