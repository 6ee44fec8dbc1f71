#include "zap_handler.h"

#include <zmq.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

#include "zmq_io.h"

namespace cachet::zap {

namespace {

constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";  // fixed by RFC 27

const char* StatusCode(Status status) {
  switch (status) {
    case Status::kOk: return "200";
    case Status::kTemporaryError: return "300";
    case Status::kAuthenticationFailure: return "400";
    case Status::kInternalError: return "500";
  }
  return "500";
}

}  // namespace

ZapHandler::ZapHandler(zmq::context_t& context) : socket_(context, zmq::socket_type::rep) {}

Result<void> ZapHandler::Start() {
  try {
    socket_.set(zmq::sockopt::linger, 0);
    zmqio::Bind(socket_, kZapEndpoint);
  } catch (const zmq::error_t& e) {
    return MakeError(ErrorCode::kIo, std::string("cannot start the ZAP handler: ") + e.what());
  }
  return {};
}

void ZapHandler::Answer(const Decide& decide, const OnRefused& on_refused) {
  std::vector<zmq::message_t> request;
  while (zmqio::RecvMultipart(socket_, request, zmq::recv_flags::dontwait)) {
    // version, request id, domain, address, identity, mechanism, credentials...
    Verdict verdict;
    if (request.size() < 6 || request[0].to_string_view() != "1.0") {
      verdict = Verdict::Refuse(
          "refused a connection: a malformed ZAP request of " + std::to_string(request.size()) + " frames",
          Status::kInternalError);
      request.resize(std::max<size_t>(request.size(), 2));  // the reply echoes the request id
    } else {
      Request r;
      r.address = request[3].to_string();
      r.mechanism = request[5].to_string();
      if (r.mechanism == "CURVE") {
        if (request.size() != 7 || request[6].size() != 32) {
          const std::string from = r.address.empty() ? "a local peer" : r.address;
          verdict = Verdict::Refuse("refused a connection from " + from + ": malformed CURVE credentials");
        } else {
          char z85[41] = {};
          zmq_z85_encode(z85, static_cast<const uint8_t*>(request[6].data()), 32);
          r.client_key.assign(z85, 40);
          verdict = decide(r);
        }
      } else {
        verdict = decide(r);
      }
    }
    if (verdict.status != Status::kOk) on_refused(verdict.why);
    const char* code = StatusCode(verdict.status);
    const std::string_view text = verdict.status == Status::kOk ? "OK" : "refused";
    zmqio::Send(socket_, zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
    zmqio::Send(socket_, zmq::buffer(request[1].data(), request[1].size()), zmq::send_flags::sndmore);
    zmqio::Send(socket_, zmq::buffer(code, 3), zmq::send_flags::sndmore);
    zmqio::Send(socket_, zmq::buffer(text), zmq::send_flags::sndmore);
    zmqio::Send(socket_, zmq::buffer(verdict.user_id), zmq::send_flags::sndmore);
    zmqio::Send(socket_, zmq::const_buffer(), zmq::send_flags::none);
  }
}

bool MonitorEvent::handshake_failed() const {
  return id == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL || id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
         id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
}

std::string MonitorEvent::HandshakeFailure(bool curve, std::string_view peer) const {
  const std::string who(peer);
  if (id == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
    return "the connection closed during it: " + std::string(std::strerror(static_cast<int>(value)));
  }
  if (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
    return "the other side refused this side's key (ZAP status " + std::to_string(value) + ")";
  switch (value) {
    case ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
      return curve ? who + " does not speak CURVE" : who + " speaks CURVE; this endpoint does not";
    case ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: return "CURVE decryption failed: " + who + " has another server key";
    default: {
      char hex[16];
      std::snprintf(hex, sizeof hex, "%08x", value);
      return "ZMTP error 0x" + std::string(hex);
    }
  }
}

SocketMonitor::SocketMonitor(zmq::context_t& context) : socket_(context, zmq::socket_type::pair) {}

Result<void> SocketMonitor::Watch(zmq::socket_t& watched, const std::string& endpoint, int events) {
  try {
    // Its bind of the monitor's own socket fails with EINTR as zmq_bind
    // does; a failed call has closed that socket, so it is made again.
    zmqio::RetryOnEintr([&] {
      if (zmq_socket_monitor(static_cast<void*>(watched), endpoint.c_str(), events) != 0) throw zmq::error_t();
    });
  } catch (const zmq::error_t& e) {
    return MakeError(ErrorCode::kIo, std::string("cannot monitor the socket: ") + e.what());
  }
  try {
    socket_.set(zmq::sockopt::linger, 0);
    zmqio::Connect(socket_, endpoint);
  } catch (const zmq::error_t& e) {
    return MakeError(ErrorCode::kIo, std::string("cannot read the socket's monitor: ") + e.what());
  }
  return {};
}

std::optional<MonitorEvent> SocketMonitor::Next() {
  std::vector<zmq::message_t> frames;
  while (zmqio::RecvMultipart(socket_, frames, zmq::recv_flags::dontwait)) {
    // [event id (2 bytes), value (4 bytes)], [endpoint]
    if (frames.empty() || frames[0].size() < 2) continue;
    MonitorEvent event;
    std::memcpy(&event.id, frames[0].data(), sizeof event.id);
    if (frames[0].size() >= 6) std::memcpy(&event.value, frames[0].data<char>() + 2, sizeof event.value);
    event.endpoint = frames.size() > 1 ? frames[1].to_string() : "?";
    return event;
  }
  return std::nullopt;
}

RefusalLog::RefusalLog(std::function<void(const std::string&)> log, int burst, std::chrono::seconds period)
    : log_(std::move(log)), burst_(burst), period_(period) {}

void RefusalLog::Log(const std::string& line) {
  Tick();
  if (logged_this_period_ < burst_) {
    ++logged_this_period_;
    log_(line);
  } else {
    ++held_back_;
  }
}

void RefusalLog::Tick() {
  const auto now = std::chrono::steady_clock::now();
  if (now - period_start_ < period_) return;
  if (held_back_ > 0) {
    const std::string period =
        period_ == std::chrono::seconds(1) ? "second" : std::to_string(period_.count()) + " seconds";
    log_("... and " + std::to_string(held_back_) + " more connections refused in the last " + period +
         ", not logged one by one");
  }
  period_start_ = now;
  logged_this_period_ = 0;
  held_back_ = 0;
}

}  // namespace cachet::zap
