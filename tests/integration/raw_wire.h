// Requests and replies on a raw ZeroMQ socket, for tests that drive cachetd
// below the Client (many requests in flight, replies never read).
#pragma once

#include <gtest/gtest.h>

#include <msgpack.hpp>
#include <zmq.hpp>

#include <initializer_list>
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
  } catch (const std::exception& e) {
    ADD_FAILURE() << "reply does not decode: " << e.what();
  }
  return r;
}

}  // namespace cachet::testing
