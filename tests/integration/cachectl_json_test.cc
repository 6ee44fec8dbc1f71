// cachectl --json against a real cachetd, its output read back with a JSON
// parser: UTF-8 keys and values come out as the same characters; bytes that
// are not UTF-8 come out in base64 under "key_base64" / "value_base64", never
// as a string that decodes to other bytes.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>

#include "cachet/client.h"
#include "daemon_process.h"

namespace cachet {
namespace {

using nlohmann::json;

class CachectlJsonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(daemon_.Start());
    auto client = Client::Connect(daemon_.tcp());
    ASSERT_TRUE(client.has_value());
    client_ = std::move(*client);
  }

  // Runs cachectl --json with `args` and parses what it printed.
  json Json(std::vector<std::string> args, int expected_code = 0) {
    args.insert(args.begin(), {CACHECTL_PATH, "--endpoint", daemon_.tcp(), "--json"});
    const testing::ProgramResult o = testing::RunProgram(args);
    EXPECT_EQ(o.code, expected_code) << o.out << o.err;
    try {
      return json::parse(o.out);  // strict: invalid UTF-8 in the output is a parse error
    } catch (const json::exception& e) {
      ADD_FAILURE() << "cachectl printed no valid JSON (" << e.what() << "): " << o.out;
      return json();
    }
  }

  testing::DaemonProcess daemon_;
  std::unique_ptr<Client> client_;
};

TEST_F(CachectlJsonTest, Utf8KeysAndValuesComeOutAsTheSameCharacters) {
  const std::string key = "clé";
  const std::string value = "héllo ☃ 😀";
  const testing::ProgramResult set =
      testing::RunProgram({CACHECTL_PATH, "--endpoint", daemon_.tcp(), "set", key, value});
  ASSERT_EQ(set.code, 0) << set.err;

  const json got = Json({"get", key});
  EXPECT_EQ(got, json({{"key", key}, {"found", true}, {"value", value}})) << got.dump();
  EXPECT_EQ(client_->Get(key).value(), std::optional<std::string>(value));  // what the daemon holds

  EXPECT_EQ(Json({"get", "naïve"}, 1), json({{"key", "naïve"}, {"found", false}}));
  const json ttl = Json({"ttl", key});
  EXPECT_EQ(ttl, json({{"key", key}, {"found", true}, {"ttl_ms", -1}}));
  EXPECT_EQ(Json({"incr", "compté", "--by", "3"}), json({{"key", "compté"}, {"value", 3}}));
  const json keys = Json({"keys", "*"});
  ASSERT_TRUE(keys.is_array()) << keys.dump();
  EXPECT_EQ(std::count(keys.begin(), keys.end(), json(key)), 1) << keys.dump();
  EXPECT_EQ(std::count(keys.begin(), keys.end(), json("compté")), 1) << keys.dump();
  EXPECT_EQ(keys.size(), 2u);
}

TEST_F(CachectlJsonTest, BytesThatAreNotUtf8ComeOutInBase64) {
  const std::string key = "\xff\xfekey";         // //5rZXk=
  const std::string value("\x00\x80\xff", 3);    // AID/
  const std::string surrogate = "\xed\xa0\x80";  // 7aCA: UTF-16 surrogates are not UTF-8
  const std::string overlong = "\xc0\xaf";       // wK8=: an overlong '/'
  const std::string nul_inside("a\0b", 3);       // valid UTF-8, NUL and all
  ASSERT_TRUE(client_->Set(key, value).has_value());
  ASSERT_TRUE(client_->Set("surrogate", surrogate).has_value());
  ASSERT_TRUE(client_->Set("overlong", overlong).has_value());
  ASSERT_TRUE(client_->Set("nul", nul_inside).has_value());

  EXPECT_EQ(Json({"get", key}), json({{"key_base64", "//5rZXk="}, {"found", true}, {"value_base64", "AID/"}}));
  EXPECT_EQ(Json({"get", "surrogate"}), json({{"key", "surrogate"}, {"found", true}, {"value_base64", "7aCA"}}));
  EXPECT_EQ(Json({"get", "overlong"}), json({{"key", "overlong"}, {"found", true}, {"value_base64", "wK8="}}));
  const json nul = Json({"get", "nul"});
  EXPECT_EQ(nul.value("value", std::string()), nul_inside) << nul.dump();
  EXPECT_EQ(Json({"ttl", key}), json({{"key_base64", "//5rZXk="}, {"found", true}, {"ttl_ms", -1}}));
  EXPECT_EQ(Json({"get", "\xff"}, 1), json({{"key_base64", "/w=="}, {"found", false}}));

  const json keys = Json({"keys"});
  ASSERT_TRUE(keys.is_array()) << keys.dump();
  EXPECT_EQ(keys.size(), 4u) << keys.dump();
  EXPECT_EQ(std::count(keys.begin(), keys.end(), json({{"key_base64", "//5rZXk="}})), 1) << keys.dump();
  EXPECT_EQ(std::count(keys.begin(), keys.end(), json("surrogate")), 1) << keys.dump();
}

TEST_F(CachectlJsonTest, EveryCommandPrintsOneJsonDocument) {
  EXPECT_EQ(Json({"ping"}), json({{"ok", true}}));
  EXPECT_EQ(Json({"set", "k", "v", "--ttl", "60000"}), json({{"stored", true}}));
  EXPECT_EQ(Json({"set", "k", "v", "--nx"}, 1), json({{"stored", false}}));
  EXPECT_EQ(Json({"expire", "k", "30000"}), json({{"found", true}}));
  EXPECT_EQ(Json({"del", "k"}), json({{"deleted", true}}));
  EXPECT_EQ(Json({"del", "k"}, 1), json({{"deleted", false}}));
  EXPECT_EQ(Json({"keys"}), json::array());
  const json stats = Json({"stats"});
  ASSERT_TRUE(stats.is_object()) << stats.dump();
  EXPECT_EQ(stats.value("entries", -1), 0);
  EXPECT_EQ(stats.value("deletes", -1), 1);
  EXPECT_EQ(Json({"flush"}), json({{"ok", true}}));
  EXPECT_EQ(Json({"reload"}), json({{"ok", true}}));
}

}  // namespace
}  // namespace cachet
