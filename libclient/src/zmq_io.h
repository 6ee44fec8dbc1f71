// ZeroMQ calls that survive signals. Shared by the client library and cachetd.
//
// A signal whose handler lands on a thread inside zmq_poll, zmq_send,
// zmq_recv, zmq_getsockopt(ZMQ_EVENTS), zmq_connect, zmq_bind or
// zmq_disconnect makes the call fail with EINTR,
// which cppzmq throws as zmq::error_t. ZeroMQ reports EINTR before it has
// taken or queued anything, so the right answer is always to make the same
// call again: these wrappers do, and Poll keeps its deadline (a retry waits
// only for the time left). Every other error still throws.
//
// Use them for every call on a socket that a signal may interrupt; a frame
// of a multipart message retried this way keeps the message whole.
#pragma once

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "cachet/curve.h"

namespace cachet::zmqio {

// The process's one ZeroMQ context (one I/O thread) for every client socket
// of libcachet (client.cc): never destroyed, renewed in a forked child.
zmq::context_t& SharedContext();

// Calls `call` until it does not fail with EINTR.
template <typename Call>
auto RetryOnEintr(Call&& call) -> decltype(call()) {
  for (;;) {
    try {
      return call();
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
  }
}

// zmq::poll that waits out `timeout` (negative: forever) whatever the
// signals; returns the number of items ready, 0 when the time is up.
inline int Poll(zmq::pollitem_t* items, size_t count, std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const int ready = zmq_poll(items, static_cast<int>(count), static_cast<long>(timeout.count()));
    if (ready >= 0) return ready;
    if (zmq_errno() != EINTR) throw zmq::error_t();
    if (timeout.count() > 0) {
      timeout = std::max(std::chrono::milliseconds(0),
                         std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
    }
  }
}

// zmq_connect, zmq_bind and zmq_disconnect first run the commands pending
// for the socket, which a signal interrupts before anything else is done.
inline void Connect(zmq::socket_ref socket, const std::string& endpoint) {
  RetryOnEintr([&] { socket.connect(endpoint); });
}

inline void Bind(zmq::socket_ref socket, const std::string& endpoint) {
  RetryOnEintr([&] { socket.bind(endpoint); });
}

inline void Disconnect(zmq::socket_ref socket, const std::string& endpoint) {
  RetryOnEintr([&] { socket.disconnect(endpoint); });
}

inline zmq::send_result_t Send(zmq::socket_ref socket, zmq::const_buffer data, zmq::send_flags flags) {
  return RetryOnEintr([&] { return socket.send(data, flags); });
}

inline zmq::send_result_t Send(zmq::socket_ref socket, zmq::message_t& message, zmq::send_flags flags) {
  return RetryOnEintr([&] { return socket.send(message, flags); });
}

inline zmq::recv_result_t Recv(zmq::socket_ref socket, zmq::message_t& message, zmq::recv_flags flags) {
  return RetryOnEintr([&] { return socket.recv(message, flags); });
}

// All frames of the next message into `frames` (cleared first); false when
// `flags` is dontwait and no message is waiting. ZeroMQ delivers the frames
// of a message together, so frames after the first never block.
inline bool RecvMultipart(zmq::socket_ref socket, std::vector<zmq::message_t>& frames, zmq::recv_flags flags) {
  frames.clear();
  zmq::message_t frame;
  if (!Recv(socket, frame, flags)) return false;
  for (;;) {
    const bool more = frame.more();
    frames.push_back(std::move(frame));
    if (!more) return true;
    frame = zmq::message_t();
    (void)Recv(socket, frame, zmq::recv_flags::none);
  }
}

// ZMQ_EVENTS: ZMQ_POLLIN / ZMQ_POLLOUT as they stand now.
inline int Events(zmq::socket_ref socket) {
  return RetryOnEintr([&] { return socket.get(zmq::sockopt::events); });
}

// Makes `socket`'s next connects CURVE clients of the server whose public
// key `keys` holds; nothing when `keys` is empty (plaintext).
inline void UseCurveClient(zmq::socket_t& socket, const CurveClientKeys& keys) {
  if (!keys.enabled()) return;
  socket.set(zmq::sockopt::curve_serverkey, keys.server_public_key);
  socket.set(zmq::sockopt::curve_publickey, keys.public_key);
  socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
}

// Makes `socket`'s next binds CURVE servers with this secret key; the
// context's ZAP handler decides which clients are admitted.
inline void UseCurveServer(zmq::socket_t& socket, const std::string& secret_key) {
  socket.set(zmq::sockopt::curve_server, 1);
  socket.set(zmq::sockopt::curve_secretkey, secret_key);
}

}  // namespace cachet::zmqio
