// The etcd client's private pieces, without an etcd: base64, endpoint
// lists, prefix ranges and the decoding of the gateway's JSON answers.
#include <gtest/gtest.h>

#include <string>

#include "etcd_base64.h"
#include "etcd_transport.h"

namespace cachet::cluster::detail {
namespace {

TEST(EtcdBase64Test, EncodesRfc4648Vectors) {
  EXPECT_EQ(Base64Encode(""), "");
  EXPECT_EQ(Base64Encode("f"), "Zg==");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(Base64Encode("foo"), "Zm9v");
  EXPECT_EQ(Base64Encode("foob"), "Zm9vYg==");
  EXPECT_EQ(Base64Encode("fooba"), "Zm9vYmE=");
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64Encode(std::string("\xfb\xff\xbf", 3)), "+/+/");
  EXPECT_EQ(Base64Encode(std::string("\0\0\0\0", 4)), "AAAAAA==");
}

TEST(EtcdBase64Test, RoundTripsEveryByteAtEveryLengthModThree) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (size_t length = 0; length <= 259; ++length) {
    // Every byte value, shifted so each length ends on a different byte.
    std::string bytes;
    for (size_t i = 0; i < length; ++i) bytes += all[(i * 7 + length) % 256];
    const std::string text = Base64Encode(bytes);
    ASSERT_EQ(text.size(), (length + 2) / 3 * 4) << "length " << length;
    const auto back = Base64Decode(text);
    ASSERT_TRUE(back.has_value()) << "length " << length;
    EXPECT_EQ(*back, bytes) << "length " << length;
  }
}

TEST(EtcdBase64Test, DecodesRfc4648Vectors) {
  EXPECT_EQ(Base64Decode("Zm9vYmE="), "fooba");
  EXPECT_EQ(Base64Decode("Zm9vYg=="), "foob");
  EXPECT_EQ(Base64Decode("+/+/"), std::string("\xfb\xff\xbf", 3));
  EXPECT_EQ(Base64Decode(""), "");
}

TEST(EtcdBase64Test, RejectsWhatIsNotCanonicalBase64) {
  for (const char* bad :
       {"Zg", "Zg=", "Zm9", "Z===", "====", "Zg==Zg==", "Zm9v!A==", "Zm 9", "Zh==", "Zm9=", "-_-_", "Zm9v\n", "=Zm9"}) {
    EXPECT_FALSE(Base64Decode(bad).has_value()) << bad;
  }
}

TEST(EtcdEndpointsTest, ParsesAListWithOrWithoutScheme) {
  auto endpoints = ParseEndpoints("http://127.0.0.1:2379, localhost:23790 ,http://[::1]:2380/");
  ASSERT_TRUE(endpoints.has_value()) << endpoints.error().ToString();
  ASSERT_EQ(endpoints->size(), 3u);
  EXPECT_EQ((*endpoints)[0].host, "127.0.0.1");
  EXPECT_EQ((*endpoints)[0].port, 2379);
  EXPECT_EQ((*endpoints)[0].url, "http://127.0.0.1:2379");
  EXPECT_EQ((*endpoints)[1].host, "localhost");
  EXPECT_EQ((*endpoints)[1].port, 23790);
  EXPECT_EQ((*endpoints)[2].host, "::1");
  EXPECT_EQ((*endpoints)[2].url, "http://[::1]:2380");
}

TEST(EtcdEndpointsTest, RejectsBadListsNamingTheItem) {
  for (const char* bad : {"", "http://a:1,", ",a:1", "https://a:2379", "a", "a:", ":2379", "a:0", "a:65536", "a:12x",
                          "http://a:1/v3", "[::1]2379", "unix:///tmp/etcd"}) {
    auto endpoints = ParseEndpoints(bad);
    ASSERT_FALSE(endpoints.has_value()) << bad;
    EXPECT_EQ(endpoints.error().code, ErrorCode::kInvalidArgument) << bad;
    EXPECT_NE(endpoints.error().message.find("etcd endpoint"), std::string::npos) << endpoints.error().message;
  }
  EtcdOptions options;
  options.endpoints = "127.0.0.1:2379";
  options.request_timeout = std::chrono::milliseconds(0);
  EXPECT_EQ(options.Validate().error().code, ErrorCode::kInvalidArgument);
  options.request_timeout = std::chrono::milliseconds(1);
  EXPECT_TRUE(options.Validate().has_value());
}

TEST(EtcdPrefixTest, RangeEndIsThePrefixWithItsLastByteBelowFfIncremented) {
  EXPECT_EQ(PrefixRangeEnd("/cachet/a/"), "/cachet/a0");
  EXPECT_EQ(PrefixRangeEnd(std::string("a\xff\xff", 3)), "b");
  EXPECT_EQ(PrefixRangeEnd(std::string("a\x01\xff", 3)), "a\x02");
  EXPECT_EQ(PrefixRangeEnd(""), std::string(1, '\0'));
  EXPECT_EQ(PrefixRangeEnd(std::string("\xff\xff", 2)), std::string(1, '\0'));
}

TEST(EtcdPrefixTest, TheWholeKeySpaceIsKeyZeroToRangeEndZero) {
  EXPECT_EQ(KeyRangeJson("", true), (Json{{"key", "AA=="}, {"range_end", "AA=="}}));
  EXPECT_EQ(KeyRangeJson("/a/", true), (Json{{"key", "L2Ev"}, {"range_end", "L2Ew"}}));
  EXPECT_EQ(KeyRangeJson("", false), (Json{{"key", ""}}));
}

Answer AnswerOf(const char* json) { return Answer{Json::parse(json), "http://127.0.0.1:1"}; }

TEST(EtcdAnswerTest, DecodesAKeyValueAsTheGatewayWritesIt) {
  const Answer a = AnswerOf(
      R"({"key":"Zm9v","create_revision":"2","mod_revision":"5","version":"3","value":"AP8=","lease":"7587"})");
  auto kv = ParseKeyValue(a, a.body);
  ASSERT_TRUE(kv.has_value()) << kv.error().ToString();
  EXPECT_EQ(kv->key, "foo");
  EXPECT_EQ(kv->value, std::string("\x00\xff", 2));
  EXPECT_EQ(kv->create_revision, 2);
  EXPECT_EQ(kv->mod_revision, 5);
  EXPECT_EQ(kv->version, 3);
  EXPECT_EQ(kv->lease, 7587);
  // Fields at their zero value are left out by the gateway.
  const Answer empty = AnswerOf(R"({"key":"Zm9v"})");
  auto bare = ParseKeyValue(empty, empty.body);
  ASSERT_TRUE(bare.has_value());
  EXPECT_EQ(bare->value, "");
  EXPECT_EQ(bare->lease, 0);
}

TEST(EtcdAnswerTest, WrongTypesAndBadBase64AreProtocolErrorsNamingTheEndpoint) {
  for (const char* bad : {R"({"key":"Zm9v!"})", R"({"key":42})", R"({"key":"Zm9v","version":"3x"})",
                          R"({"key":"Zm9v","version":"99999999999999999999"})", R"({"key":"Zm9v","lease":[1]})",
                          R"({"key":"Zm9v","mod_revision":""})", R"([1,2])"}) {
    const Answer a = AnswerOf(bad);
    auto kv = ParseKeyValue(a, a.body);
    ASSERT_FALSE(kv.has_value()) << bad;
    EXPECT_EQ(kv.error().code, ErrorCode::kProtocol) << bad;
    EXPECT_NE(kv.error().message.find("http://127.0.0.1:1"), std::string::npos) << kv.error().message;
  }
}

TEST(EtcdAnswerTest, ARangeNeedsAHeaderAndAnArrayOfKvs) {
  const Answer ok = AnswerOf(R"({"header":{"revision":"9"},"kvs":[{"key":"YQ=="},{"key":"Yg=="}],"count":"2"})");
  auto range = ParseRange(ok, ok.body);
  ASSERT_TRUE(range.has_value()) << range.error().ToString();
  EXPECT_EQ(range->revision, 9);
  ASSERT_EQ(range->kvs.size(), 2u);
  EXPECT_EQ(range->kvs[1].key, "b");
  for (const char* bad : {R"({"kvs":[]})", R"({"header":{"revision":"9"},"kvs":{"key":"YQ=="}})",
                          R"({"header":{"revision":true}})", R"({"header":{"revision":"9"},"kvs":[7]})"}) {
    const Answer a = AnswerOf(bad);
    auto r = ParseRange(a, a.body);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kProtocol) << bad;
  }
}

TEST(EtcdAnswerTest, KeepAliveAnswersTheTtlOrZeroForAGoneLease) {
  const Answer alive = AnswerOf(R"({"result":{"header":{"revision":"2"},"ID":"77","TTL":"1"}})");
  EXPECT_EQ(ParseKeepAlive(alive, alive.body, 77), 1);
  const Answer gone = AnswerOf(R"({"result":{"header":{"revision":"2"},"ID":"77"}})");
  EXPECT_EQ(ParseKeepAlive(gone, gone.body, 77), 0);
  auto other = ParseKeepAlive(alive, alive.body, 78);
  ASSERT_FALSE(other.has_value());
  EXPECT_EQ(other.error().code, ErrorCode::kProtocol);
  const Answer error =
      AnswerOf(R"({"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"x"}})");
  auto refused = ParseKeepAlive(error, error.body, 77);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(refused.error().message.find("etcdserver: no leader"), std::string::npos) << refused.error().message;
}

}  // namespace
}  // namespace cachet::cluster::detail
