// The wire contract of docs/protocol.md, checked in bytes against a real
// cachetd: status codes as the literal numbers the document fixes (so a
// renumbering fails here), the document's example request and reply byte for
// byte, the id echoed by every decoder error, the decoder's depth and size
// limits at their edges, and the frame limits (a reply for a frame over
// max-frame, a disconnect for one over four times that).
#include <gtest/gtest.h>

#include <zmq_addon.hpp>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "cachet/client.h"
#include "daemon_process.h"
#include "protocol.h"
#include "raw_wire.h"

namespace cachet {
namespace {

using testing::Packer;
using testing::PackRequest;
using testing::RawWire;

std::string ProtocolMd() {
  std::ifstream in(PROTOCOL_MD_PATH);
  std::stringstream s;
  s << in.rdbuf();
  EXPECT_FALSE(s.str().empty()) << "cannot read " << PROTOCOL_MD_PATH;
  return s.str();
}

// A literal that may hold NUL bytes.
template <size_t N>
std::string B(const char (&bytes)[N]) {
  return std::string(bytes, N - 1);
}

// The line after the first line that holds `marker`, or "" (a test failure).
std::string LineAfter(const std::string& doc, const std::string& marker) {
  const size_t at = doc.find(marker);
  const size_t begin = at == std::string::npos ? at : doc.find('\n', at);
  if (begin == std::string::npos) {
    ADD_FAILURE() << "protocol.md has no line with " << marker;
    return "";
  }
  return doc.substr(begin + 1, doc.find('\n', begin + 1) - begin - 1);
}

std::string Hex(const std::string& bytes) {
  std::string out;
  char buf[4];
  for (unsigned char c : bytes) {
    std::snprintf(buf, sizeof buf, "%s%02x", out.empty() ? "" : " ", c);
    out += buf;
  }
  return out;
}

class WireContractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(daemon_.Start());
    wire_ = std::make_unique<RawWire>(daemon_.tcp());
  }

  // Sends `bytes`, expects a reply to `id` with the literal status `code`.
  void Expect(const std::string& bytes, uint64_t id, uint64_t code, const std::string& needle = "") {
    const testing::WireReply r = wire_->Call(bytes);
    EXPECT_EQ(r.status, code) << r.message;
    EXPECT_EQ(r.id, id) << r.message;
    if (!needle.empty()) {
      EXPECT_NE(r.message.find(needle), std::string::npos) << r.message;
    }
  }

  // max-frame 64 KiB: ZeroMQ disconnects a peer sending more than 256 KiB.
  testing::DaemonProcess daemon_{{"--max-frame", "64KiB", "--max-key-size", "32", "--max-value-size", "1KiB"}};
  std::unique_ptr<RawWire> wire_;
};

// ------------------------------------------------------------ status codes

TEST_F(WireContractTest, EveryDaemonStatusIsTheNumberProtocolMdFixes) {
  const auto str = [](const char* s) { return [s](Packer& pk) { pk.pack(std::string(s)); }; };
  Expect(PackRequest(1, "PING"), 1, 0);
  Expect(PackRequest(2, "SET", 4,
                     [](Packer& pk) {
                       pk.pack(std::string("k"));
                       pk.pack(std::string("v"));
                       pk.pack(0);
                       pk.pack(3);  // no such condition
                     }),
         2, 1, "condition");
  Expect(PackRequest(3, "GET", 1, str("")), 3, 2, "max_key_size");
  Expect(PackRequest(4, "SET", 2,
                     [](Packer& pk) {
                       pk.pack(std::string("k"));
                       pk.pack(std::string(1025, 'v'));
                     }),
         4, 3, "max_value_size");
  Expect(PackRequest(5, "GET", 1, str("absent")), 5, 5);
  Expect(PackRequest(6, "SET", 2,
                     [](Packer& pk) {
                       pk.pack(std::string("text"));
                       pk.pack(std::string("abc"));
                     }),
         6, 0);
  Expect(PackRequest(7, "INCR", 1, str("text")), 7, 10);
  Expect(PackRequest(8, "SET", 2,
                     [](Packer& pk) {
                       pk.pack(std::string("big"));
                       pk.pack(std::string("9223372036854775807"));
                     }),
         8, 0);
  Expect(PackRequest(9, "INCR", 1, str("big")), 9, 11);
  Expect("\xc1 not msgpack", 0, 13);
  Expect(PackRequest(10, "PING", 0, {}, /*version=*/2), 10, 14);
  Expect(PackRequest(11, "FROB"), 11, 15);
  Expect(PackRequest(12, "GET"), 12, 16);
  Expect(PackRequest(13, "GET", 1, [](Packer& pk) { pk.pack(5); }), 13, 17);
  Expect(PackRequest(14, "SET", 2,
                     [](Packer& pk) {
                       pk.pack(std::string("k"));
                       pk.pack(std::string(70 * 1024, 'v'));
                     }),
         14, 18, "max_frame");
}

// NO_SPACE on the wire: the daemon's rate-limit counter table is full.
TEST(WireNoSpaceTest, AFullCounterTableIsFour) {
  const std::string policy = "/tmp/" + testing::UniqueSegmentName("policy") + ".toml";
  std::ofstream(policy) << "[tier.regular]\nper_minute = 5/1m fixed_window\n";
  testing::DaemonProcess daemon({"--rate-limit-policy", policy, "--rate-limit-capacity", "64"});
  ASSERT_TRUE(daemon.Start());
  RawWire wire(daemon.tcp());
  uint64_t status = 0;
  int key = 0;
  for (; key < 100000 && status == 0; ++key) {
    const testing::WireReply r = wire.Call(PackRequest(key + 1, "RATELIMIT", 2, [&](Packer& pk) {
      pk.pack("user-" + std::to_string(key));
      pk.pack(std::string("regular"));
    }));
    status = r.status;
    if (status != 0) {
      EXPECT_NE(r.message.find("no room"), std::string::npos) << r.message;
    }
  }
  EXPECT_EQ(status, 4u) << "after " << key << " keys";
  std::remove(policy.c_str());
}

// TIMEOUT, UNAVAILABLE and PROTOCOL are made by the client; their numbers
// are fixed by protocol.md all the same.
TEST(WireClientStatusTest, ClientSideStatusesAreTheNumbersProtocolMdFixes) {
  zmq::context_t context;
  zmq::socket_t mute(context, zmq::socket_type::router);  // reads requests, never answers
  mute.set(zmq::sockopt::linger, 0);
  mute.bind("tcp://127.0.0.1:*");
  zmq::socket_t confused(context, zmq::socket_type::router);  // answers with bytes that are no reply
  confused.set(zmq::sockopt::linger, 0);
  confused.bind("tcp://127.0.0.1:*");

  ClientOptions options;
  options.timeout = std::chrono::milliseconds(200);
  options.retries = 0;
  auto to_mute = Client::Connect(mute.get(zmq::sockopt::last_endpoint), options);
  ASSERT_TRUE(to_mute.has_value());
  auto timed_out = (*to_mute)->Ping();
  ASSERT_FALSE(timed_out.has_value());
  EXPECT_EQ(static_cast<int>(timed_out.error().code), 19) << timed_out.error().ToString();

  const std::string nowhere = "ipc:///tmp/" + testing::UniqueSegmentName("nobody") + ".sock";
  auto to_nobody = Client::Connect(nowhere, options);
  ASSERT_TRUE(to_nobody.has_value());
  auto unavailable = (*to_nobody)->Ping();
  ASSERT_FALSE(unavailable.has_value());
  EXPECT_EQ(static_cast<int>(unavailable.error().code), 20) << unavailable.error().ToString();

  options.timeout = std::chrono::milliseconds(3000);
  auto to_confused = Client::Connect(confused.get(zmq::sockopt::last_endpoint), options);
  ASSERT_TRUE(to_confused.has_value());
  std::thread server([&] {
    std::vector<zmq::message_t> request;
    zmq::pollitem_t item{static_cast<void*>(confused), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(3000)) == 0) return;
    if (!zmq::recv_multipart(confused, std::back_inserter(request))) return;
    confused.send(request[0], zmq::send_flags::sndmore);
    confused.send(zmq::str_buffer("\x93\x01"));  // a truncated array
  });
  auto garbled = (*to_confused)->Ping();
  server.join();
  ASSERT_FALSE(garbled.has_value());
  EXPECT_EQ(static_cast<int>(garbled.error().code), 21) << garbled.error().ToString();
}

// The table in protocol.md and the library's names agree, code by code.
TEST(WireStatusTableTest, ProtocolMdTableNamesEveryCodeAsTheLibraryDoes) {
  const std::string doc = ProtocolMd();
  // Rows such as "| 13 | `BAD_REQUEST` | ...".
  std::map<int, std::string> table;
  std::istringstream lines(doc);
  for (std::string line; std::getline(lines, line);) {
    int code = -1;
    char name[64] = {};
    if (std::sscanf(line.c_str(), "| %d | `%63[A-Z_]` |", &code, name) == 2) table[code] = name;
  }
  const std::map<int, std::string> fixed = {{0, "OK"},
                                            {1, "INVALID_ARGUMENT"},
                                            {2, "KEY_TOO_LARGE"},
                                            {3, "VALUE_TOO_LARGE"},
                                            {4, "NO_SPACE"},
                                            {5, "NOT_FOUND"},
                                            {10, "NOT_INTEGER"},
                                            {11, "OVERFLOW"},
                                            {12, "INTERNAL"},
                                            {13, "BAD_REQUEST"},
                                            {14, "UNSUPPORTED_VERSION"},
                                            {15, "UNKNOWN_OP"},
                                            {16, "WRONG_ARITY"},
                                            {17, "WRONG_TYPE"},
                                            {18, "FRAME_TOO_LARGE"},
                                            {19, "TIMEOUT"},
                                            {20, "UNAVAILABLE"},
                                            {21, "PROTOCOL"},
                                            {22, "MOVED"},
                                            {23, "ASK"},
                                            {24, "CLUSTER_DOWN"},
                                            {25, "PERMISSION_DENIED"},
                                            {26, "BUSY"}};
  EXPECT_EQ(table, fixed);
  for (const auto& [code, name] : fixed) {
    EXPECT_EQ(ErrorCodeName(static_cast<ErrorCode>(code)), name) << code;
  }
  // Codes 6 to 9 stay off the wire but keep their numbers.
  EXPECT_NE(doc.find("Codes 6 to 9 (`ALREADY_EXISTS`, `VERSION_MISMATCH`, `CORRUPT`, `IO`)"), std::string::npos);
  const std::pair<int, const char*> segment_codes[] = {
      {6, "ALREADY_EXISTS"}, {7, "VERSION_MISMATCH"}, {8, "CORRUPT"}, {9, "IO"}};
  for (const auto& [code, name] : segment_codes) EXPECT_STREQ(ErrorCodeName(static_cast<ErrorCode>(code)), name);
}

// A daemon without cluster settings: ASK runs the read it wraps (and only a
// read), and the cluster ops say why they are refused.
TEST_F(WireContractTest, ASingleNodeServesAskedReadsAndRefusesClusterOps) {
  const auto str = [](const char* s) { return [s](Packer& pk) { pk.pack(std::string(s)); }; };
  Expect(PackRequest(1, "SET", 2,
                     [](Packer& pk) {
                       pk.pack(std::string("k"));
                       pk.pack(std::string("v"));
                     }),
         1, 0);
  const testing::WireReply hit = wire_->Call(PackRequest(2, "ASK", 2, [](Packer& pk) {
    pk.pack(std::string("GET"));
    pk.pack(std::string("k"));
  }));
  EXPECT_EQ(hit.status, 0u) << hit.message;
  ASSERT_EQ(hit.payload().type, msgpack::type::BIN);
  EXPECT_EQ(std::string(hit.payload().via.bin.ptr, hit.payload().via.bin.size), "v");
  Expect(PackRequest(3, "ASK", 2,
                     [](Packer& pk) {
                       pk.pack(std::string("GET"));
                       pk.pack(std::string("absent"));
                     }),
         3, 5);
  Expect(PackRequest(4, "ASK", 3,
                     [](Packer& pk) {
                       pk.pack(std::string("SET"));
                       pk.pack(std::string("k"));
                       pk.pack(std::string("w"));
                     }),
         4, 1, "ASK wraps GET, EXISTS, TTL or MGET");
  Expect(PackRequest(5, "ASK", 1, str("GET")), 5, 16);  // GET without its key
  Expect(PackRequest(6, "ASK"), 6, 16);
  Expect(PackRequest(7, "CLUSTER"), 7, 1, "not a cluster node");
  Expect(PackRequest(8, "SLOTDUMP", 5,
                     [](Packer& pk) {
                       for (int i = 0; i < 5; ++i) pk.pack(0);
                     }),
         8, 1, "not a cluster node");
  // The value was not changed by the refused ASK SET.
  const testing::WireReply after = wire_->Call(PackRequest(9, "GET", 1, str("k")));
  ASSERT_EQ(after.status, 0u);
  EXPECT_EQ(std::string(after.payload().via.bin.ptr, after.payload().via.bin.size), "v");
}

// MOVED and ASK carry a map, which the client library turns into an error
// with the node's message, and from which a cluster client reads where to go.
TEST(WireRedirectTest, ARedirectMapRoundTripsAndAnythingElseIsNotARedirect) {
  wire::Writer out;
  wire::WriteRedirect(out, 9, ErrorCode::kMoved, {"slot 12 is served by node b", 41, 12, "tcp://127.0.0.2:7379"});
  auto reply = wire::DecodeReply(out.data(), out.size());
  ASSERT_TRUE(reply.has_value()) << reply.error().ToString();
  EXPECT_EQ(reply->id, 9u);
  EXPECT_EQ(static_cast<int>(reply->status), 22);
  const std::optional<wire::Redirect> r = wire::ReadRedirect(*reply->payload);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->message, "slot 12 is served by node b");
  EXPECT_EQ(r->epoch, 41u);
  EXPECT_EQ(r->slot, 12u);
  EXPECT_EQ(r->endpoint, "tcp://127.0.0.2:7379");
  const Error e = wire::ReplyError(reply->status, *reply->payload);
  EXPECT_EQ(e.code, ErrorCode::kMoved);
  EXPECT_EQ(e.message, "slot 12 is served by node b");

  // A map without the endpoint, or a string, is no redirect.
  wire::Writer partial;
  partial.BeginReply(10, ErrorCode::kAsk);
  partial.Map(1);
  partial.Str("epoch");
  partial.Uint(3);
  auto bad = wire::DecodeReply(partial.data(), partial.size());
  ASSERT_TRUE(bad.has_value());
  EXPECT_FALSE(wire::ReadRedirect(*bad->payload).has_value());
  EXPECT_EQ(wire::ReplyError(bad->status, *bad->payload).message, "daemon replied ASK");
  wire::Writer text;
  text.ErrorReply(11, Error{ErrorCode::kClusterDown, "no shard map yet"});
  auto down = wire::DecodeReply(text.data(), text.size());
  ASSERT_TRUE(down.has_value());
  EXPECT_FALSE(wire::ReadRedirect(*down->payload).has_value());
  EXPECT_EQ(wire::ReplyError(down->status, *down->payload).ToString(), "CLUSTER_DOWN: no shard map yet");
}

// ------------------------------------------------------------ the example

TEST_F(WireContractTest, ProtocolMdExampleIsTheBytesOnTheWire) {
  const std::string doc = ProtocolMd();
  const std::string request =
      testing::FromHex(LineAfter(doc, "request: [1, 7, \"SET\", \"greeting\", \"hello\", 60000, 0]"));
  const std::string reply = testing::FromHex(LineAfter(doc, "reply:   [7, 0, true]"));
  ASSERT_EQ(Hex(request), "97 01 07 a3 53 45 54 a8 67 72 65 65 74 69 6e 67 a5 68 65 6c 6c 6f cd ea 60 00");
  ASSERT_EQ(Hex(reply), "93 07 00 c3");

  // The reference encoder writes the document's bytes.
  wire::Writer writer;
  writer.BeginRequest(7, wire::Op::kSet, 4);
  writer.Str("greeting");
  writer.Str("hello");
  writer.Int(60000);
  writer.Uint(0);
  EXPECT_EQ(Hex(std::string(writer.data(), writer.size())), Hex(request));

  // The daemon answers the document's request with the document's reply...
  EXPECT_EQ(Hex(wire_->Call(request).bytes), Hex(reply));
  // ...stored what it says, with its TTL, and sends values back as bin.
  EXPECT_EQ(Hex(wire_->Call(PackRequest(8, "GET", 1, [](Packer& pk) { pk.pack(std::string("greeting")); })).bytes),
            "93 08 00 c4 05 68 65 6c 6c 6f");
  const testing::WireReply ttl =
      wire_->Call(PackRequest(9, "TTL", 1, [](Packer& pk) { pk.pack(std::string("greeting")); }));
  ASSERT_EQ(ttl.status, 0u);
  EXPECT_GT(ttl.payload().as<int64_t>(), 50000);
  EXPECT_LE(ttl.payload().as<int64_t>(), 60000);
}

// ------------------------------------------------------------ request ids in errors

TEST_F(WireContractTest, EveryDecoderErrorIsAddressedToTheRequestWhenItsIdCanBeRead) {
  const std::string ping = PackRequest(21, "PING");
  Expect(ping + "x", 21, 13, "after the msgpack value");  // trailing bytes
  Expect(PackRequest(22, "GET", 1, [](Packer& pk) { pk.pack(std::string("key")); }).substr(0, 9), 22,
         13);  // truncated after the id
  Expect(B("\x93\xa1"
           "1"
           "\x17\xa4"
           "PING"),
         23, 13, "protocol version");                    // version not an integer
  Expect(B("\x93\x01\x18\xc7\x01\x05\x00"), 24, 13);     // op is an extension
  Expect(B("\x94\x01\x19\xa3GET\xd4\x01\x00"), 25, 13);  // argument is an extension
  Expect(B("\x92\x01\x1a"), 26, 13, "array");            // too short
  Expect(PackRequest(27, "PING", 0, {}, /*version=*/7), 27, 14);
  Expect(PackRequest(28, "SET", 2,
                     [](Packer& pk) {
                       pk.pack(std::string("k"));
                       pk.pack(std::string(65 * 1024, 'v'));
                     }),
         28, 18);  // over max-frame
  // No id to read: answered to id 0.
  Expect("\xc1\xc1", 0, 13);                                // not msgpack
  Expect(B("\xa4PING"), 0, 13);                             // not an array
  Expect(B("\x93\x01\xff\xa4PING"), 0, 13, "request id");   // negative id
  Expect(B("\x93\x01\xa1x\xa4PING"), 0, 13, "request id");  // id a string
}

// ------------------------------------------------------------ decoder limits

std::string Nested(uint64_t id, int levels) {  // GET whose key is `levels` arrays deep
  return PackRequest(id, "GET", 1, [&](Packer& pk) {
    for (int i = 0; i < levels; ++i) pk.pack_array(1);
    pk.pack(1);
  });
}

TEST_F(WireContractTest, ValuesNestedDeeperThanFourLevelsAreABadRequest) {
  ASSERT_EQ(wire::kMaxDepth, 4u);
  Expect(Nested(31, 3), 31, 17, "key");  // request array + 3 = 4 levels: decoded, then refused by type
  Expect(Nested(32, 4), 32, 13);         // 5 levels
  Expect(Nested(33, 1000), 33, 13);
}

TEST_F(WireContractTest, MapsOfMoreThan4096PairsAreABadRequest) {
  const auto map_of = [](uint32_t n) {
    return [n](Packer& pk) {
      pk.pack_map(n);
      for (uint32_t i = 0; i < n; ++i) {
        pk.pack_nil();
        pk.pack_nil();
      }
    };
  };
  Expect(PackRequest(41, "GET", 1, map_of(4096)), 41, 17, "key");
  Expect(PackRequest(42, "GET", 1, map_of(4097)), 42, 13);
}

// A header claiming more items than the frame has bytes is refused before
// anything is allocated for them.
TEST_F(WireContractTest, AnArrayClaimingMoreItemsThanTheFrameHoldsIsABadRequest) {
  Expect(B("\xdd\x00\x0f\xff\xff\x01\x2b\xa3GET\xa1k"), 43, 13);  // 1,048,575 items in 13 bytes
  Expect(B("\x94\x01\x2c\xa3GET\xdd\xff\xff\xff\xff"), 44, 13);   // an argument of 2^32-1 items
}

// The top-level array: 2^20 items are decoded, one more is refused.
TEST(WireArrayLimitTest, ARequestOfMoreThan2Pow20ItemsIsABadRequest) {
  testing::DaemonProcess daemon({"--max-frame", "8MiB"});
  ASSERT_TRUE(daemon.Start());
  RawWire wire(daemon.tcp());
  const auto mget = [](uint64_t id, uint32_t keys) {
    return PackRequest(id, "MGET", keys, [keys](Packer& pk) {
      for (uint32_t i = 0; i < keys; ++i) pk.pack(std::string("k"));
    });
  };
  const uint32_t most = static_cast<uint32_t>(wire::kMaxArrayItems) - 3;  // version, id, op
  testing::WireReply ok = wire.Call(mget(51, most));
  EXPECT_EQ(ok.status, 0u) << ok.message;
  EXPECT_EQ(ok.id, 51u);
  ASSERT_EQ(ok.payload().type, msgpack::type::ARRAY);
  EXPECT_EQ(ok.payload().via.array.size, most);
  testing::WireReply refused = wire.Call(mget(52, most + 1));
  EXPECT_EQ(refused.status, 13u) << refused.message;
  EXPECT_EQ(refused.id, 52u);
}

// ------------------------------------------------------------ frame limits

// A reply is bounded by max-frame as a request is: an MGET asking for one
// 1000-byte value 70 times (a 70 KB reply) is refused whole.
TEST_F(WireContractTest, AnMgetWhoseReplyWouldPassMaxFrameIsRefused) {
  Expect(PackRequest(65, "SET", 2,
                     [](Packer& pk) {
                       pk.pack(std::string("v"));
                       pk.pack(std::string(1000, 'x'));
                     }),
         65, 0);
  const auto mget = [](uint64_t id, int n) {
    return PackRequest(id, "MGET", n, [n](Packer& pk) {
      for (int i = 0; i < n; ++i) pk.pack(std::string("v"));
    });
  };
  Expect(mget(66, 70), 66, 18, "MGET reply would pass max_frame (65536 bytes) at key 65");
  const testing::WireReply fits = wire_->Call(mget(67, 60));
  EXPECT_EQ(fits.status, 0u) << fits.message;
  ASSERT_EQ(fits.payload().type, msgpack::type::ARRAY);
  EXPECT_EQ(fits.payload().via.array.size, 60u);
}

TEST_F(WireContractTest, AFrameOverFourTimesMaxFrameDisconnectsThePeer) {
  // Watch a raw socket's connection from its own side, from before it connects.
  wire_ = std::make_unique<RawWire>(daemon_.tcp(), /*connect=*/false);
  zmq::socket_t monitor(wire_->context(), zmq::socket_type::pair);
  const std::string monitor_endpoint = "inproc://" + testing::UniqueSegmentName("monitor");
  ASSERT_EQ(zmq_socket_monitor(static_cast<void*>(wire_->socket()), monitor_endpoint.c_str(),
                               ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED),
            0);
  monitor.connect(monitor_endpoint);
  wire_->Connect();
  Expect(PackRequest(61, "PING"), 61, 0);  // connected and answered
  const auto next_event = [&]() -> int {
    zmq::pollitem_t item{static_cast<void*>(monitor), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(5000)) == 0) return -1;
    std::vector<zmq::message_t> event;
    if (!zmq::recv_multipart(monitor, std::back_inserter(event)) || event.empty() || event[0].size() < 2) return -1;
    uint16_t id = 0;
    std::memcpy(&id, event[0].data(), sizeof id);
    return id;
  };
  int event = next_event();
  EXPECT_EQ(event, ZMQ_EVENT_CONNECTED);

  // Just over max-frame: answered, the connection stays.
  Expect(PackRequest(62, "SET", 2,
                     [](Packer& pk) {
                       pk.pack(std::string("k"));
                       pk.pack(std::string(65 * 1024, 'v'));
                     }),
         62, 18);
  // Over 4 x 64 KiB: ZeroMQ drops the connection; no reply ever comes.
  wire_->Send(PackRequest(63, "SET", 2, [](Packer& pk) {
    pk.pack(std::string("k"));
    pk.pack(std::string(257 * 1024, 'v'));
  }));
  event = next_event();
  EXPECT_EQ(event, ZMQ_EVENT_DISCONNECTED);
  // The daemon goes on serving: the same socket reconnects and is answered,
  // and the oversized request was never answered nor executed.
  Expect(PackRequest(64, "GET", 1, [](Packer& pk) { pk.pack(std::string("k")); }), 64, 5);
  auto client = Client::Connect(daemon_.tcp());
  ASSERT_TRUE(client.has_value());
  EXPECT_TRUE((*client)->Ping().has_value());
}

}  // namespace
}  // namespace cachet
