// The stream transport (docs/protocol.md, "Stream endpoint"): the same
// msgpack request and reply frames as the ZeroMQ endpoints, each behind a
// 4-byte big-endian length, on a plain TCP connection. No ZeroMQ I/O thread
// on either side: a round trip is one sendmsg and one recv in the client.
//
// Shared by the client (Connection, below) and cachetd (StreamListener,
// daemon/stream_listener.h, which reads and writes the same framing).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "cachet/result.h"

namespace cachet::stream {

inline constexpr std::string_view kScheme = "stream://";
inline constexpr size_t kHeaderBytes = 4;

inline void PutLength(char* out, uint32_t n) {
  out[0] = static_cast<char>(n >> 24);
  out[1] = static_cast<char>(n >> 16);
  out[2] = static_cast<char>(n >> 8);
  out[3] = static_cast<char>(n);
}

inline uint32_t GetLength(const char* in) {
  const auto* b = reinterpret_cast<const unsigned char*>(in);
  return uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | uint32_t{b[3]};
}

// Splits "host:port" or "[v6]:port"; false unless it has that form with a
// port of 0 to 65535. The host comes back without brackets.
bool SplitHostPort(const std::string& address, std::string* host, uint16_t* port);

// The client's end: one blocking TCP connection to a stream endpoint. Not
// thread-safe (the Client serializes round trips). A connection made in
// another process (before a fork) is dropped and made anew.
class Connection {
 public:
  using Clock = std::chrono::steady_clock;

  Connection() = default;
  ~Connection() { Close(); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Connects to `address` (host:port) within `timeout`; `timeout` also
  // bounds each later send and receive.
  Result<void> Connect(const std::string& address, std::chrono::milliseconds timeout);
  bool connected() const;
  void Close();

  // Sends one frame holding [data, data + size).
  Result<void> Send(const char* data, size_t size, Clock::time_point deadline);
  // The next frame, at most `max_frame` bytes; the view is valid until the
  // next call. On any error the connection is closed (a late reply must
  // never be taken for the next request's).
  Result<std::string_view> Receive(Clock::time_point deadline, size_t max_frame);

 private:
  // The error `what` names, after closing the connection.
  Error Fail(ErrorCode code, const std::string& what);
  bool Arm(Clock::time_point deadline);

  int fd_ = -1;
  pid_t owner_ = 0;
  std::string address_;
  std::chrono::milliseconds timeout_{0};
  bool cut_ = false;  // the socket's timeouts are shorter than timeout_
  // Bytes read and not yet returned: [begin_, end_) of in_.
  std::string in_;
  size_t begin_ = 0;
  size_t end_ = 0;
};

}  // namespace cachet::stream
