// StreamListener: cachetd's stream endpoint (docs/protocol.md, "Stream
// endpoint"): length-prefixed request frames on plain TCP connections,
// served from the daemon's own loop, with no ZeroMQ I/O thread between the
// kernel and the handler. The loop polls fd() among its ZeroMQ sockets and
// calls Serve() when it is readable or backlogged().
//
// Fairness: connections take turns of at most kFramesPerTurn requests, so a
// request waits behind a few of each other connection's, not behind all a
// pipelining client has sent.
//
// Ownership: the listener owns the listening socket, the epoll descriptor
// and every accepted connection with its buffers; all of it is touched by
// the daemon's thread only.
//
// Backpressure: a connection's requests are run only while fewer than
// kMaxUnsent reply bytes wait to be written to it; past that its socket is
// not read (the kernel's buffers, then the client, wait), so a client that
// never reads its replies costs the daemon at most kMaxUnsent plus one reply
// and its read buffer. Memory follows the bytes that arrive, never a length
// a header announces. A frame longer than four times max_frame closes the
// connection (as ZeroMQ's maxmsgsize does on the tcp endpoint); a shorter
// one over max_frame is dropped as it arrives, all but its first bytes, and
// answered FRAME_TOO_LARGE by the handler: a connection holds at most
// max_frame of requests.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "cachet/result.h"

struct sockaddr_storage;

namespace spdlog {
class logger;
}

namespace cachet::wire {
class Writer;
}

namespace cachet::daemon {

class StreamListener {
 public:
  // Answers one request frame into `out` (cleared by the listener first).
  // [data, data + size) is the frame, or only its first bytes when
  // frame_size (its length) is over max_frame.
  using Handler = std::function<void(const char* data, size_t size, uint64_t frame_size, wire::Writer& out)>;

  static constexpr size_t kMaxUnsent = 256 * 1024;
  // Read at most this much from one connection per turn.
  static constexpr size_t kReadChunk = 16 * 1024;
  // Run at most this many of one connection's requests per turn: the
  // connections take turns, so a request waits behind at most this many of
  // a pipelining client's per connection, not behind all it has sent.
  static constexpr size_t kFramesPerTurn = 16;
  // Replies held back while a connection's next turn is coming, at most.
  static constexpr size_t kWriteBatch = 16 * 1024;
  // Requests one Serve() runs before the daemon polls its other sockets
  // again, unless no connection has any left.
  static constexpr uint64_t kFramesPerServe = 256;
  // What is kept of a frame over max_frame: room for its request id.
  static constexpr size_t kKeptHead = 64;

  struct Limits {
    uint64_t max_frame = 0;
    uint64_t max_connections = 0;
  };

  // Listens on `address` (host:port; port 0 picks a free one).
  static Result<std::unique_ptr<StreamListener>> Listen(const std::string& address, Limits limits, Handler handler,
                                                        std::shared_ptr<spdlog::logger> log);
  ~StreamListener();
  StreamListener(const StreamListener&) = delete;
  StreamListener& operator=(const StreamListener&) = delete;

  // Readable when a connection or the listening socket has work.
  int fd() const { return epoll_fd_; }
  // "stream://host:port" as bound.
  const std::string& endpoint() const { return endpoint_; }
  // Rounds, without blocking, while connections have requests left and
  // fewer than kFramesPerServe were run: each accepts, and gives every
  // connection with work a turn (reads, answers up to kFramesPerTurn,
  // writes).
  void Serve();
  // True while a connection holds requests it has read and not yet run
  // (its turn ran out): call Serve() again without waiting for fd().
  bool backlogged() const { return !backlogged_.empty(); }
  // At stop: answers what was received, then writes the replies out for up
  // to `limit`; connections are closed by the destructor. The number of
  // requests answered.
  uint64_t Drain(std::chrono::milliseconds limit);
  void set_max_connections(uint64_t n) { limits_.max_connections = n; }
  // Called each tick: accepting again after an accept error paused it.
  void ResumeAccepting();

  size_t connections() const { return connections_.size(); }
  uint64_t refused() const { return refused_; }

 private:
  struct Connection;
  // One round: accepts, and a turn for each connection epoll names or that
  // has requests left.
  void Round();
  StreamListener(int listen_fd, int epoll_fd, std::string endpoint, Limits limits, Handler handler,
                 std::shared_ptr<spdlog::logger> log);
  void Accept();
  // Counts a refused connection; logs the first and every 1000th.
  void Refused(const sockaddr_storage& peer, const std::string& why);
  // Out of descriptors: accepts and closes one waiting connection with the
  // spare descriptor.
  enum class Shedding { kShedOne, kNoneWaiting, kCannot };
  Shedding Shed(int error);
  void PauseAccepting(const char* why);
  // Connection `fd`'s turn, for its epoll `events`: reads, runs up to
  // kFramesPerTurn requests, writes; closes it when it failed or when all
  // its client sent before its end is answered and written.
  void TakeTurn(int fd, uint32_t events);
  // Reads what the socket holds (up to kReadChunk) unless requests read
  // earlier are still to run; false when the connection failed.
  bool Read(Connection& c);
  // True while a connection's replies wait to go out with those of its next
  // turn: it has requests left to run and under kWriteBatch unsent. One
  // write then carries many replies, as it did before turns were bounded.
  static bool WritesWait(const Connection& c);
  // Runs buffered frames while the unsent replies stay under kMaxUnsent and
  // the turn lasts; sets the connection's frames_left.
  bool RunFrames(Connection& c);
  // Runs the handler on one frame and queues its reply.
  void Answer(Connection& c, const char* data, size_t size, uint64_t frame_size);
  // Writes unsent replies; false when the connection must close.
  bool Write(Connection& c);
  // Watches for reading while the connection may take requests, for
  // writing while replies wait; false if it had to close the connection.
  bool Watch(Connection& c);
  void Close(int fd, const char* why);

  int listen_fd_;
  int epoll_fd_;
  std::string endpoint_;
  Limits limits_;
  Handler handler_;
  std::shared_ptr<spdlog::logger> log_;
  std::unordered_map<int, std::unique_ptr<Connection>> connections_;
  // Connections whose last turn ran out with requests still read and not
  // run; they take a turn in the next round whether or not epoll says so.
  std::vector<int> backlogged_;
  std::vector<int> waiting_;  // this round's share of backlogged_ (reused)
  uint64_t round_ = 0;
  uint64_t refused_ = 0;
  uint64_t answered_ = 0;
  uint64_t oversized_ = 0;  // connections closed for a frame over 4 x max_frame
  // Held open to be closed when out of descriptors (Shed); -1 if it could
  // not be opened again.
  int spare_fd_ = -1;
  bool accepting_paused_ = false;
  uint64_t pauses_ = 0;
};

}  // namespace cachet::daemon
