// Requests and replies on a raw ZeroMQ socket, for tests that drive cachetd
// below the Client: many requests in flight and replies never read
// (RawRequest, ParseRawReply), or the wire contract of docs/protocol.md in
// bytes (PackRequest builds any request with msgpack-c, RawWire sends bytes
// and reads whole replies back).
#pragma once

#include <gtest/gtest.h>

#include <msgpack.hpp>
#include <zmq.hpp>

#include <chrono>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>

namespace cachet::testing {

// [1, id, op, args...], every argument as bytes.
inline std::string RawRequest(uint64_t id, const std::string& op, std::initializer_list<std::string> args = {}) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(&buf);
  pk.pack_array(static_cast<uint32_t>(3 + args.size()));
  pk.pack(1);
  pk.pack(id);
  pk.pack(op);
  for (const std::string& a : args) {
    pk.pack_bin(static_cast<uint32_t>(a.size()));
    pk.pack_bin_body(a.data(), static_cast<uint32_t>(a.size()));
  }
  return std::string(buf.data(), buf.size());
}

struct RawReply {
  uint64_t id = 0;
  uint64_t status = 0;
  size_t payload_bytes = 0;  // of a bytes payload (a GET's value)
  int64_t integer = 0;       // of an integer payload (an INCR's new value)
};

// [id, status, payload]; a malformed reply fails the test and reads as status 9999.
inline RawReply ParseRawReply(const zmq::message_t& frame) {
  RawReply r;
  r.status = 9999;
  try {
    auto handle = msgpack::unpack(static_cast<const char*>(frame.data()), frame.size());
    const msgpack::object& o = handle.get();
    if (o.type != msgpack::type::ARRAY || o.via.array.size != 3) {
      ADD_FAILURE() << "reply is not [id, status, payload]";
      return r;
    }
    r.id = o.via.array.ptr[0].as<uint64_t>();
    r.status = o.via.array.ptr[1].as<uint64_t>();
    const msgpack::object& p = o.via.array.ptr[2];
    if (p.type == msgpack::type::BIN) r.payload_bytes = p.via.bin.size;
    if (p.type == msgpack::type::POSITIVE_INTEGER || p.type == msgpack::type::NEGATIVE_INTEGER)
      r.integer = p.as<int64_t>();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "reply does not decode: " << e.what();
  }
  return r;
}

using Packer = msgpack::packer<msgpack::sbuffer>;

inline std::string Pack(const std::function<void(Packer&)>& fill) {
  msgpack::sbuffer buf;
  Packer pk(&buf);
  fill(pk);
  return std::string(buf.data(), buf.size());
}

// [version, id, op, args...], with `nargs` values written by `args`.
inline std::string PackRequest(uint64_t id, const std::string& op, uint32_t nargs = 0,
                               const std::function<void(Packer&)>& args = {}, uint64_t version = 1) {
  return Pack([&](Packer& pk) {
    pk.pack_array(3 + nargs);
    pk.pack(version);
    pk.pack(id);
    pk.pack(op);
    if (args) args(pk);
  });
}

// "93 07 00 c3" -> the bytes.
inline std::string FromHex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size();) {
    if (hex[i] == ' ' || hex[i] == '\n') {
      ++i;
      continue;
    }
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
    i += 2;
  }
  return out;
}

struct WireReply {
  std::string bytes;  // the whole frame
  uint64_t id = 0;
  uint64_t status = 0;
  std::string message;  // the payload when it is a string
  msgpack::object_handle handle;
  const msgpack::object& payload() const { return handle.get().via.array.ptr[2]; }
};

class RawWire {
 public:
  explicit RawWire(std::string endpoint, bool connect = true) : endpoint_(std::move(endpoint)) {
    socket_.set(zmq::sockopt::linger, 0);
    if (connect) Connect();
  }
  void Connect() { socket_.connect(endpoint_); }

  void Send(const std::string& bytes) { socket_.send(zmq::buffer(bytes), zmq::send_flags::none); }

  // The next reply, or nullopt after `wait` (with a test failure if the frame is not a reply).
  std::optional<WireReply> Receive(std::chrono::milliseconds wait = std::chrono::seconds(5)) {
    zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, wait) == 0) return std::nullopt;
    zmq::message_t frame;
    if (!socket_.recv(frame)) return std::nullopt;
    WireReply r;
    r.bytes.assign(static_cast<const char*>(frame.data()), frame.size());
    try {
      r.handle = msgpack::unpack(r.bytes.data(), r.bytes.size());
    } catch (const std::exception& e) {
      ADD_FAILURE() << "reply is not msgpack: " << e.what();
      return std::nullopt;
    }
    const msgpack::object& o = r.handle.get();
    if (o.type != msgpack::type::ARRAY || o.via.array.size != 3 ||
        o.via.array.ptr[0].type != msgpack::type::POSITIVE_INTEGER ||
        o.via.array.ptr[1].type != msgpack::type::POSITIVE_INTEGER) {
      ADD_FAILURE() << "reply is not [id, status, payload]";
      return std::nullopt;
    }
    r.id = o.via.array.ptr[0].via.u64;
    r.status = o.via.array.ptr[1].via.u64;
    if (o.via.array.ptr[2].type == msgpack::type::STR) r.message = o.via.array.ptr[2].as<std::string>();
    return r;
  }

  // Sends and waits for the reply; a missing reply is a test failure.
  WireReply Call(const std::string& bytes) {
    Send(bytes);
    auto r = Receive();
    if (!r) {
      ADD_FAILURE() << "no reply within 5 s";
      return WireReply{};
    }
    return std::move(*r);
  }

  zmq::context_t& context() { return context_; }
  zmq::socket_t& socket() { return socket_; }

 private:
  std::string endpoint_;
  zmq::context_t context_;
  zmq::socket_t socket_{context_, zmq::socket_type::dealer};
};

}  // namespace cachet::testing
