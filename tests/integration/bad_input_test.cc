// Hostile and broken requests, sent over a raw ZeroMQ socket: each gets an
// error reply with a clear code (or is dropped and counted when no reply can
// be addressed), and the daemon keeps serving.
#include <gtest/gtest.h>

#include <msgpack.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <map>

#include "cachet/client.h"
#include "daemon_process.h"

namespace cachet {
namespace {

struct RawReply {
  uint64_t id = 0;
  uint64_t status = 0;
  std::string message;
};

class BadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(daemon_.Start());
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(daemon_.tcp());
  }

  void SendRaw(const std::string& bytes) { socket_.send(zmq::buffer(bytes)); }

  std::string Pack(const std::function<void(msgpack::packer<msgpack::sbuffer>&)>& fill) {
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(&buf);
    fill(pk);
    return std::string(buf.data(), buf.size());
  }

  std::optional<RawReply> Receive() {
    zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(3000)) == 0) return std::nullopt;
    zmq::message_t frame;
    if (!socket_.recv(frame)) return std::nullopt;
    auto handle = msgpack::unpack(static_cast<const char*>(frame.data()), frame.size());
    const msgpack::object& o = handle.get();
    EXPECT_EQ(o.type, msgpack::type::ARRAY);
    RawReply r;
    r.id = o.via.array.ptr[0].as<uint64_t>();
    r.status = o.via.array.ptr[1].as<uint64_t>();
    if (o.via.array.ptr[2].type == msgpack::type::STR) r.message = o.via.array.ptr[2].as<std::string>();
    return r;
  }

  // Sends `bytes` and expects an error reply with `code` for request `id`.
  void ExpectError(const std::string& bytes, ErrorCode code, uint64_t id, const std::string& needle = "") {
    SendRaw(bytes);
    auto r = Receive();
    ASSERT_TRUE(r.has_value()) << "no reply";
    EXPECT_EQ(r->status, static_cast<uint64_t>(code)) << r->message;
    EXPECT_EQ(r->id, id);
    if (!needle.empty()) {
      EXPECT_NE(r->message.find(needle), std::string::npos) << r->message;
    }
    ExpectStillServing();
  }

  void ExpectStillServing() {
    auto client = Client::Connect(daemon_.tcp());
    ASSERT_TRUE(client.has_value());
    EXPECT_TRUE((*client)->Ping().has_value());
  }

  std::string Request(uint64_t id, const std::string& op,
                      const std::function<void(msgpack::packer<msgpack::sbuffer>&)>& args, uint32_t nargs,
                      uint64_t version = 1) {
    return Pack([&](auto& pk) {
      pk.pack_array(3 + nargs);
      pk.pack(version);
      pk.pack(id);
      pk.pack(op);
      args(pk);
    });
  }

  testing::DaemonProcess daemon_{{"--max-frame", "64KiB", "--max-key-size", "32", "--max-value-size", "1KiB"}};
  zmq::context_t context_;
  zmq::socket_t socket_{context_, zmq::socket_type::dealer};
};

TEST_F(BadInputTest, GarbageBytesAreABadRequest) { ExpectError("\xc1\xc1 not msgpack", ErrorCode::kBadRequest, 0); }

// Cut after its id: the error is still addressed to the request.
TEST_F(BadInputTest, TruncatedMsgpackIsABadRequestForItsId) {
  std::string whole = Request(
      7, "GET", [](auto& pk) { pk.pack(std::string("key")); }, 1);
  ExpectError(whole.substr(0, whole.size() - 2), ErrorCode::kBadRequest, 7);
}

// A client matching replies by id sees the error instead of timing out.
TEST_F(BadInputTest, TrailingBytesAreABadRequestForItsId) {
  ExpectError(Request(
                  7, "PING", [](auto&) {}, 0) +
                  "x",
              ErrorCode::kBadRequest, 7, "after the msgpack value");
}

TEST_F(BadInputTest, NonArrayIsABadRequest) {
  ExpectError(Pack([](auto& pk) { pk.pack(std::string("GET")); }), ErrorCode::kBadRequest, 0, "array");
}

TEST_F(BadInputTest, UnsupportedVersionIsRefusedWithTheRequestId) {
  ExpectError(Request(
                  42, "PING", [](auto&) {}, 0, /*version=*/99),
              ErrorCode::kUnsupportedVersion, 42, "99");
}

TEST_F(BadInputTest, UnknownOpIsRefused) {
  ExpectError(Request(
                  5, "FROB", [](auto&) {}, 0),
              ErrorCode::kUnknownOp, 5, "FROB");
}

TEST_F(BadInputTest, WrongArityIsRefused) {
  ExpectError(Request(
                  6, "GET", [](auto&) {}, 0),
              ErrorCode::kWrongArity, 6, "GET takes 1");
  ExpectError(Request(
                  6, "SET", [](auto& pk) { pk.pack(std::string("k")); }, 1),
              ErrorCode::kWrongArity, 6);
  ExpectError(Request(
                  6, "MSET",
                  [](auto& pk) {
                    pk.pack(std::string("k"));
                    pk.pack(std::string("v"));
                    pk.pack(std::string("k2"));
                  },
                  3),
              ErrorCode::kWrongArity, 6, "pairs");
}

TEST_F(BadInputTest, WrongTypesAreRefused) {
  ExpectError(Request(
                  8, "GET", [](auto& pk) { pk.pack(12); }, 1),
              ErrorCode::kWrongType, 8, "key");
  ExpectError(Request(
                  8, "SET",
                  [](auto& pk) {
                    pk.pack(std::string("k"));
                    pk.pack(std::string("v"));
                    pk.pack(std::string("ten"));
                  },
                  3),
              ErrorCode::kWrongType, 8, "ttl_ms");
  ExpectError(Request(
                  8, "INCR",
                  [](auto& pk) {
                    pk.pack(std::string("k"));
                    pk.pack(1.5);
                  },
                  2),
              ErrorCode::kWrongType, 8, "delta");
  ExpectError(Request(
                  8, "SCAN", [](auto& pk) { pk.pack(-1); }, 1),
              ErrorCode::kWrongType, 8, "cursor");
}

TEST_F(BadInputTest, OversizedKeyAndValueAreRefusedAndStoreNothing) {
  ExpectError(Request(
                  9, "SET",
                  [](auto& pk) {
                    pk.pack(std::string(33, 'k'));
                    pk.pack(std::string("v"));
                  },
                  2),
              ErrorCode::kKeyTooLarge, 9, "max_key_size");
  ExpectError(Request(
                  9, "SET",
                  [](auto& pk) {
                    pk.pack(std::string("k"));
                    pk.pack(std::string(2000, 'v'));
                  },
                  2),
              ErrorCode::kValueTooLarge, 9);
  ExpectError(Request(
                  9, "MSET",
                  [](auto& pk) {
                    pk.pack(std::string("ok"));
                    pk.pack(std::string("v"));
                    pk.pack(std::string(40, 'k'));
                    pk.pack(std::string("v"));
                  },
                  4),
              ErrorCode::kKeyTooLarge, 9);
  auto client = Client::Connect(daemon_.tcp());
  EXPECT_EQ((*client)->Get("ok").value(), std::nullopt);  // MSET stored nothing
  EXPECT_EQ((*client)->Get("k").value(), std::nullopt);
}

TEST_F(BadInputTest, OversizedFrameIsRefusedForItsId) {
  ExpectError(Request(
                  10, "SET",
                  [](auto& pk) {
                    pk.pack(std::string("k"));
                    pk.pack(std::string(100 * 1024, 'v'));
                  },
                  2),
              ErrorCode::kFrameTooLarge, 10, "max_frame");
}

TEST_F(BadInputTest, MalformedEnvelopeIsDroppedAndCounted) {
  // Three frames, the middle one not empty: no request we could answer.
  socket_.send(zmq::str_buffer("a"), zmq::send_flags::sndmore);
  socket_.send(zmq::str_buffer("b"), zmq::send_flags::sndmore);
  socket_.send(zmq::str_buffer("c"));
  // STATS on the same connection: the daemon reads a connection's messages
  // in order, so its reply counts the bad message (on another connection it
  // could overtake it).
  socket_.send(zmq::buffer(Request(
      12, "STATS", [](auto&) {}, 0)));
  zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
  ASSERT_EQ(zmq::poll(&item, 1, std::chrono::milliseconds(5000)), 1) << "no reply to STATS";
  zmq::message_t frame;
  ASSERT_TRUE(socket_.recv(frame));
  auto handle = msgpack::unpack(static_cast<const char*>(frame.data()), frame.size());
  const msgpack::object& reply = handle.get();
  ASSERT_EQ(reply.via.array.ptr[0].as<uint64_t>(), 12u);  // the dropped message got no reply of its own
  const auto stats = reply.via.array.ptr[2].as<std::map<std::string, int64_t>>();
  EXPECT_EQ(stats.at("dropped_frames"), 1);
  ExpectStillServing();
}

TEST_F(BadInputTest, ReqSocketEnvelopeIsAnswered) {
  zmq::socket_t req(context_, zmq::socket_type::req);
  req.set(zmq::sockopt::linger, 0);
  req.connect(daemon_.tcp());
  req.send(zmq::buffer(Request(
      11, "PING", [](auto&) {}, 0)));
  zmq::pollitem_t item{static_cast<void*>(req), 0, ZMQ_POLLIN, 0};
  ASSERT_EQ(zmq::poll(&item, 1, std::chrono::milliseconds(3000)), 1);
  zmq::message_t frame;
  ASSERT_TRUE(req.recv(frame));
  auto handle = msgpack::unpack(static_cast<const char*>(frame.data()), frame.size());
  EXPECT_EQ(handle.get().via.array.ptr[0].as<uint64_t>(), 11u);
  EXPECT_EQ(handle.get().via.array.ptr[1].as<uint64_t>(), 0u);
}

}  // namespace
}  // namespace cachet
