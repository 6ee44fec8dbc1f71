// Who may connect to a ZeroMQ context's CURVE servers, and how refusals
// show: what cachetd (daemon/auth.h) and the gossip limiter's sync thread
// (limiter/src/gossip_rate_limiter.cc) share. Internal: linked into both,
// not installed.
//
// - ZapHandler answers ZAP requests (ZeroMQ's authentication protocol,
//   RFC 27) for every socket of one context. The owner decides; the
//   handler speaks the protocol.
// - SocketMonitor reads a socket's events (zmq_socket_monitor); the
//   handshake failures among them are the refusals ZAP never sees (a
//   plaintext peer, a peer with another server key).
// - RefusalLog logs refusals, one line per refused connection, at most a
//   burst of lines per period; the rest are summed up in one line.
//
// Thread safety: none. Each object belongs to the one thread that polls its
// socket (cachetd's server loop, the limiter's sync thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <zmq.hpp>

#include "cachet/result.h"

namespace cachet::zap {

// One ZAP request, as the owner decides on it.
struct Request {
  std::string address;     // the peer's IP address; empty over ipc
  std::string mechanism;   // "NULL", "PLAIN" or "CURVE"
  std::string client_key;  // CURVE: the client's public key (Z85); else empty
};

// RFC 27's status codes.
enum class Status { kOk, kTemporaryError, kAuthenticationFailure, kInternalError };

struct Verdict {
  Status status = Status::kOk;
  std::string user_id;  // kOk: the connection's User-Id (a message property)
  std::string why;      // otherwise: the line the refusal is logged with

  static Verdict Admit(std::string user_id = {}) { return Verdict{Status::kOk, std::move(user_id), {}}; }
  static Verdict Refuse(std::string why, Status status = Status::kAuthenticationFailure) {
    return Verdict{status, {}, std::move(why)};
  }
};

class ZapHandler {
 public:
  using Decide = std::function<Verdict(const Request&)>;
  // Called once per refused connection with the verdict's `why`.
  using OnRefused = std::function<void(const std::string& why)>;

  explicit ZapHandler(zmq::context_t& context);

  // Binds the context's ZAP endpoint. REQUIRES: before any socket of the
  // context binds: ZeroMQ admits everyone while no handler is bound.
  Result<void> Start();
  // Answers every pending request with `decide`'s verdict. A malformed
  // request is refused (status 500) without asking `decide`.
  void Answer(const Decide& decide, const OnRefused& on_refused);

  zmq::socket_t& socket() { return socket_; }

 private:
  zmq::socket_t socket_;
};

// One event of a socket monitor.
struct MonitorEvent {
  uint16_t id = 0;     // ZMQ_EVENT_*
  uint32_t value = 0;  // the event's value: an errno, a ZMTP error code...
  std::string endpoint;

  // ZMQ_EVENT_HANDSHAKE_FAILED_*: the connection was dropped at its handshake.
  bool handshake_failed() const;
  // Why the handshake failed, for a log line. `curve`: this side speaks
  // CURVE; `peer`: who is at the other end ("the client", "the peer").
  std::string HandshakeFailure(bool curve, std::string_view peer) const;
};

class SocketMonitor {
 public:
  explicit SocketMonitor(zmq::context_t& context);

  // Reports `events` (ZMQ_EVENT_* bits) of `watched` through `endpoint`, an
  // inproc:// name unique in the context. REQUIRES: before `watched`
  // binds or connects, for its first connections to be seen.
  Result<void> Watch(zmq::socket_t& watched, const std::string& endpoint, int events);
  // The next event, without waiting; nullopt when none is queued.
  std::optional<MonitorEvent> Next();

  zmq::socket_t& socket() { return socket_; }

 private:
  zmq::socket_t socket_;
};

class RefusalLog {
 public:
  // Logs through `log`, at most `burst` lines per `period`.
  RefusalLog(std::function<void(const std::string&)> log, int burst, std::chrono::seconds period);

  // Logs `line` now, or counts it for the next summary when the period's
  // burst is spent.
  void Log(const std::string& line);
  // Starts a new period when the last one is over, with a line for what the
  // last one held back. Call it now and then (Log calls it too).
  void Tick();

 private:
  std::function<void(const std::string&)> log_;
  int burst_;
  std::chrono::seconds period_;
  std::chrono::steady_clock::time_point period_start_{};
  int logged_this_period_ = 0;
  uint64_t held_back_ = 0;
};

}  // namespace cachet::zap
