// cachet::Client used only through cachet::KeyValueClient, as an application
// that may later be given a ClusterClient uses it: every op of the interface
// against a real cachetd, over ipc (reads through shared memory) and tcp.
#include "cachet/key_value_client.h"

#include <gtest/gtest.h>

#include <memory>
#include <type_traits>

#include "cachet/client.h"
#include "daemon_process.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;

static_assert(std::is_abstract_v<KeyValueClient>);
static_assert(std::is_base_of_v<KeyValueClient, Client>);
static_assert(std::has_virtual_destructor_v<KeyValueClient>);
static_assert(!std::is_copy_constructible_v<KeyValueClient>);

// Application code: knows only the interface.
Result<int64_t> CountVisit(KeyValueClient& cache, std::string_view page) {
  return cache.Incr(std::string("visits:") + std::string(page));
}

enum class Transport { kIpc, kTcp };

class KeyValueClientTest : public ::testing::TestWithParam<Transport> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(daemon_.Start());
    auto client = Client::Connect(GetParam() == Transport::kIpc ? daemon_.ipc() : daemon_.tcp());
    ASSERT_TRUE(client.has_value()) << client.error().ToString();
    if (GetParam() == Transport::kIpc) {
      ASSERT_TRUE(testing::WaitUntilAttached(**client));
    }
    client_ = client->get();
    cache_ = std::move(*client);  // the one line an application changes to use a cluster
  }

  testing::DaemonProcess daemon_;
  Client* client_ = nullptr;  // the same object, for checks only the concrete class offers
  std::unique_ptr<KeyValueClient> cache_;
};

TEST_P(KeyValueClientTest, Ping) { EXPECT_TRUE(cache_->Ping().has_value()); }

TEST_P(KeyValueClientTest, GetSetDelExists) {
  EXPECT_EQ(cache_->Get("k").value(), std::nullopt);
  EXPECT_FALSE(cache_->Exists("k").value());
  EXPECT_TRUE(cache_->Set("k", std::string("v\0w", 3)).value());  // default SetOptions: always, no TTL
  EXPECT_EQ(cache_->Get("k").value(), std::string("v\0w", 3));
  EXPECT_TRUE(cache_->Exists("k").value());
  EXPECT_EQ(cache_->Ttl("k").value(), Cache::kNoExpiry);
  EXPECT_TRUE(cache_->Del("k").value());
  EXPECT_FALSE(cache_->Del("k").value());
  EXPECT_EQ(cache_->Get("k").value(), std::nullopt);
  // The interface and the concrete class see one store.
  EXPECT_TRUE(client_->Set("shared", "yes").value());
  EXPECT_EQ(cache_->Get("shared").value(), "yes");
}

TEST_P(KeyValueClientTest, GetIntoReusesTheBuffer) {
  ASSERT_TRUE(cache_->Set("k", "value").value());
  std::string buffer = "previous contents that are longer";
  EXPECT_TRUE(cache_->GetInto("k", &buffer).value());
  EXPECT_EQ(buffer, "value");
  EXPECT_FALSE(cache_->GetInto("absent", &buffer).value());
}

TEST_P(KeyValueClientTest, ConditionalSets) {
  SetOptions if_absent;
  if_absent.condition = SetCondition::kIfAbsent;
  SetOptions if_present;
  if_present.condition = SetCondition::kIfPresent;
  EXPECT_FALSE(cache_->Set("k", "1", if_present).value());
  EXPECT_TRUE(cache_->Set("k", "1", if_absent).value());
  EXPECT_FALSE(cache_->Set("k", "2", if_absent).value());
  EXPECT_TRUE(cache_->Set("k", "3", if_present).value());
  EXPECT_EQ(cache_->Get("k").value(), "3");
}

TEST_P(KeyValueClientTest, ExpireAndTtl) {
  SetOptions ttl;
  ttl.ttl = milliseconds(60000);
  ASSERT_TRUE(cache_->Set("t", "v", ttl).value());
  const auto left = cache_->Ttl("t").value();
  ASSERT_TRUE(left.has_value());
  EXPECT_GT(left->count(), 0);
  EXPECT_LE(left->count(), 60000);
  EXPECT_EQ(cache_->Ttl("absent").value(), std::nullopt);
  EXPECT_FALSE(cache_->Expire("absent", milliseconds(1000)).value());
  ASSERT_TRUE(cache_->Set("p", "v").value());
  EXPECT_TRUE(cache_->Expire("p", milliseconds(30000)).value());
  const auto shortened = cache_->Ttl("p").value();
  ASSERT_TRUE(shortened.has_value());
  EXPECT_GT(shortened->count(), 0);
  EXPECT_LE(shortened->count(), 30000);
  EXPECT_TRUE(cache_->Expire("p", milliseconds(0)).value());  // ttl <= 0 deletes
  EXPECT_FALSE(cache_->Exists("p").value());
  auto refused = cache_->Expire("t", milliseconds(3'153'600'000'001));
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
}

TEST_P(KeyValueClientTest, IncrAndDecrWithTheInterfaceDefaults) {
  EXPECT_EQ(cache_->Incr("c").value(), 1);  // delta defaults to 1
  EXPECT_EQ(cache_->Incr("c", 10).value(), 11);
  EXPECT_EQ(cache_->Decr("c").value(), 10);
  EXPECT_EQ(cache_->Decr("c", 15).value(), -5);
  EXPECT_EQ(cache_->Get("c").value(), "-5");
  EXPECT_EQ(cache_->Ttl("c").value(), Cache::kNoExpiry);  // ttl_on_create defaults to none
  EXPECT_EQ(cache_->Incr("fresh", 5, milliseconds(60000)).value(), 5);
  const auto left = cache_->Ttl("fresh").value();
  ASSERT_TRUE(left.has_value());
  EXPECT_GT(left->count(), 0);
  EXPECT_LE(left->count(), 60000);
  ASSERT_TRUE(cache_->Set("s", "text").value());
  auto bad = cache_->Incr("s");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, ErrorCode::kNotInteger);
  ASSERT_TRUE(cache_->Set("max", "9223372036854775807").value());
  auto over = cache_->Incr("max");
  ASSERT_FALSE(over.has_value());
  EXPECT_EQ(over.error().code, ErrorCode::kOverflow);
  EXPECT_EQ(CountVisit(*cache_, "home").value(), 1);
  EXPECT_EQ(CountVisit(*cache_, "home").value(), 2);
}

TEST_P(KeyValueClientTest, MSetThenMGet) {
  ASSERT_TRUE(cache_->MSet({{"a", "1"}, {"b", "2"}, {"c", "3"}}).has_value());
  EXPECT_EQ(cache_->MGet({"a", "missing", "c", "b"}).value(),
            (std::vector<std::optional<std::string>>{"1", std::nullopt, "3", "2"}));
}

// Nothing to read or store is an empty answer on every transport (it was
// WRONG_ARITY from the daemon, but an empty vector from shared memory).
TEST_P(KeyValueClientTest, EmptyMGetAndMSetSucceed) {
  auto none = cache_->MGet({});
  ASSERT_TRUE(none.has_value()) << none.error().ToString();
  EXPECT_EQ(*none, (std::vector<std::optional<std::string>>{}));
  auto stored = cache_->MSet({});
  EXPECT_TRUE(stored.has_value()) << stored.error().ToString();
}

TEST_P(KeyValueClientTest, BadInputIsRefusedThroughTheInterface) {
  auto empty_key = cache_->Get("");
  ASSERT_FALSE(empty_key.has_value());
  EXPECT_EQ(empty_key.error().code, ErrorCode::kKeyTooLarge);
  // One bad pair stores nothing; the error names it by index.
  auto bad_pair = cache_->MSet({{"x", "1"}, {"", "2"}});
  ASSERT_FALSE(bad_pair.has_value());
  EXPECT_EQ(bad_pair.error().code, ErrorCode::kKeyTooLarge);
  EXPECT_NE(bad_pair.error().message.find("key 1"), std::string::npos) << bad_pair.error().message;
  EXPECT_FALSE(cache_->Exists("x").value());
  auto bad_key = cache_->MGet({"ok", std::string(251, 'k')});
  ASSERT_FALSE(bad_key.has_value());
  EXPECT_EQ(bad_key.error().code, ErrorCode::kKeyTooLarge);
}

INSTANTIATE_TEST_SUITE_P(Transports, KeyValueClientTest, ::testing::Values(Transport::kIpc, Transport::kTcp),
                         [](const ::testing::TestParamInfo<Transport>& param_info) {
                           return param_info.param == Transport::kIpc ? "Ipc" : "Tcp";
                         });

}  // namespace
}  // namespace cachet
