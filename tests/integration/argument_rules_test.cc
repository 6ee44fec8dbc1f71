// One rule per kind of argument, whatever the op (docs/protocol.md, "Limits"):
// a key is 1 to max-key-size bytes (else KEY_TOO_LARGE), a value at most
// max-value-size (else VALUE_TOO_LARGE), a TTL at most about 100 years (else
// INVALID_ARGUMENT), SCAN's count 1 to 100,000. The daemon answers with the
// same code for every op; the client refuses the same input before asking;
// cachectl exits 2 for it.
#include <gtest/gtest.h>

#include "cachet/client.h"
#include "daemon_process.h"
#include "raw_wire.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;
using testing::Packer;
using testing::PackRequest;

constexpr int64_t kMaxTtlMs = 100ll * 365 * 24 * 3600 * 1000;  // protocol.md: about 100 years

class ArgumentRulesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(daemon_.Start());
    wire_ = std::make_unique<testing::RawWire>(daemon_.tcp());
  }

  testing::WireReply Call(uint64_t id, const std::string& op, std::vector<std::string> strings,
                          std::vector<int64_t> ints = {}) {
    return wire_->Call(PackRequest(id, op, static_cast<uint32_t>(strings.size() + ints.size()), [&](Packer& pk) {
      for (const std::string& s : strings) pk.pack(s);
      for (int64_t i : ints) pk.pack(i);
    }));
  }

  int64_t Requests(Client& client) { return testing::StatOf(client, "requests"); }

  static constexpr uint32_t kMaxValue = 1024;
  testing::DaemonProcess daemon_{{"--max-key-size", "32", "--max-value-size", "1KiB"}};
  std::unique_ptr<testing::RawWire> wire_;
};

// The wire number of a call's error, or -1 if it succeeded.
template <typename R>
int CodeOf(const R& result) {
  return result ? -1 : static_cast<int>(result.error().code);
}

const std::string kEmpty;
const std::string kLong(33, 'k');
const std::string kLongest(32, 'k');

TEST_F(ArgumentRulesTest, EveryOpRefusesAnEmptyOrOverlongKeyWithKeyTooLarge) {
  ASSERT_EQ(Call(1, "SET", {"ok", "v"}).status, 0u);
  for (const std::string& bad : {kEmpty, kLong}) {
    SCOPED_TRACE(std::to_string(bad.size()) + "-byte key");
    const std::pair<const char*, testing::WireReply> replies[] = {
        {"GET", Call(2, "GET", {bad})},
        {"TTL", Call(2, "TTL", {bad})},
        {"EXISTS", Call(2, "EXISTS", {bad})},
        {"DEL", Call(2, "DEL", {bad})},
        {"EXPIRE", Call(2, "EXPIRE", {bad}, {1000})},
        {"SET", Call(2, "SET", {bad, "v"})},
        {"INCR", Call(2, "INCR", {bad})},
        {"DECR", Call(2, "DECR", {bad})},
        {"MGET", Call(2, "MGET", {"ok", bad})},
        {"MSET", Call(2, "MSET", {"other", "v", bad, "v"})},
    };
    for (const auto& [op, r] : replies) {
      EXPECT_EQ(r.status, 2u) << op << ": " << r.message;
      EXPECT_EQ(r.id, 2u) << op;
      EXPECT_NE(r.message.find(std::to_string(bad.size()) + " bytes; keys must be 1 to 32 bytes (max_key_size)"),
                std::string::npos)
          << op << ": " << r.message;
    }
  }
  EXPECT_NE(Call(3, "MGET", {"ok", "ok", kEmpty}).message.find("key 2 is 0 bytes"), std::string::npos);
  EXPECT_EQ(Call(4, "GET", {"other"}).status, 5u);  // the MSET stored nothing
  // The longest key is a key like any other.
  EXPECT_EQ(Call(5, "SET", {kLongest, "v"}).status, 0u);
  EXPECT_EQ(Call(6, "GET", {kLongest}).status, 0u);
  EXPECT_EQ(Call(7, "EXISTS", {kLongest}).payload().as<bool>(), true);
}

TEST_F(ArgumentRulesTest, EveryOpRefusesAnOverlongValueWithValueTooLarge) {
  const std::string big(kMaxValue + 1, 'v');
  for (const testing::WireReply& r : {Call(1, "SET", {"k", big}), Call(1, "MSET", {"a", "v", "k", big})}) {
    EXPECT_EQ(r.status, 3u) << r.message;
    EXPECT_NE(r.message.find("1025 bytes; values must be at most 1024 bytes (max_value_size)"), std::string::npos)
        << r.message;
  }
  EXPECT_EQ(Call(2, "GET", {"a"}).status, 5u);
  EXPECT_EQ(Call(3, "SET", {"k", std::string(kMaxValue, 'v')}).status, 0u);
}

// Over ipc the client reads the daemon's limits (INFO) and refuses what the
// daemon would refuse, with the same code, without a round trip; over tcp
// the daemon refuses it. Neither reads a bad key as a miss.
TEST_F(ArgumentRulesTest, TheClientRefusesTheSameKeysWithTheSameCode) {
  for (const std::string& endpoint : {daemon_.ipc(), daemon_.tcp()}) {
    SCOPED_TRACE(endpoint);
    auto connected = Client::Connect(endpoint);
    ASSERT_TRUE(connected.has_value());
    Client& client = **connected;
    const bool local = endpoint == daemon_.ipc();
    // The ipc client attaches (and learns the limits) with its INFO at
    // connect, or, if that was slow, at its next read a second later.
    if (local) {
      ASSERT_TRUE(testing::WaitUntil([&] { return client.Get("ok").has_value() && client.ReadsSharedMemory(); }));
    }
    EXPECT_EQ(client.ReadsSharedMemory(), local);
    for (const std::string& bad : {kEmpty, kLong}) {
      SCOPED_TRACE(std::to_string(bad.size()) + "-byte key");
      const int64_t before = Requests(client);
      const std::pair<const char*, int> codes[] = {
          {"Get", CodeOf(client.Get(bad))},
          {"Exists", CodeOf(client.Exists(bad))},
          {"Ttl", CodeOf(client.Ttl(bad))},
          {"Del", CodeOf(client.Del(bad))},
          {"Expire", CodeOf(client.Expire(bad, milliseconds(1000)))},
          {"Set", CodeOf(client.Set(bad, "v"))},
          {"Incr", CodeOf(client.Incr(bad))},
          {"Decr", CodeOf(client.Decr(bad))},
          {"MGet", CodeOf(client.MGet({"ok", bad}))},
          {"MSet", CodeOf(client.MSet({{"other", "v"}, {bad, "v"}}))},
      };
      for (const auto& [op, code] : codes) EXPECT_EQ(code, 2) << op;
      // Over ipc none of them reached the daemon (the STATS call counts itself);
      // the empty key is refused locally over tcp too.
      if (local || bad.empty()) {
        EXPECT_EQ(Requests(client), before + 1);
      }
    }
    EXPECT_EQ(client.Set(kLongest, "v").value(), true);
    EXPECT_EQ(client.Get(kLongest).value(), std::optional<std::string>("v"));
  }
  auto client = Client::Connect(daemon_.ipc());
  ASSERT_TRUE(testing::WaitUntil([&] { return (*client)->Get("ok").has_value() && (*client)->ReadsSharedMemory(); }));
  const int64_t before = Requests(**client);
  EXPECT_EQ(CodeOf((*client)->Set("k", std::string(kMaxValue + 1, 'v'))), 3);
  EXPECT_EQ(CodeOf((*client)->MSet({{"a", "v"}, {"k", std::string(kMaxValue + 1, 'v')}})), 3);
  EXPECT_EQ(Requests(**client), before + 1);
}

TEST_F(ArgumentRulesTest, ATtlOverAHundredYearsIsRefusedByEveryOpThatTakesOne) {
  ASSERT_EQ(Call(1, "SET", {"k", "v"}, {60000}).status, 0u);
  for (const int64_t ttl : {kMaxTtlMs + 1, INT64_MAX}) {
    SCOPED_TRACE(ttl);
    for (const testing::WireReply& r :
         {Call(2, "SET", {"k", "w"}, {ttl}), Call(2, "INCR", {"n"}, {1, ttl}), Call(2, "EXPIRE", {"k"}, {ttl})}) {
      EXPECT_EQ(r.status, 1u) << r.message;
      EXPECT_NE(r.message.find("it must be"), std::string::npos) << r.message;
      EXPECT_NE(r.message.find(std::to_string(kMaxTtlMs)), std::string::npos) << r.message;
    }
  }
  // Nothing changed: the value, its TTL, and no counter was made.
  EXPECT_EQ(Call(3, "GET", {"k"}).payload().as<std::string>(), "v");
  const int64_t left = Call(4, "TTL", {"k"}).payload().as<int64_t>();
  EXPECT_GT(left, 50000);
  EXPECT_LE(left, 60000);
  EXPECT_EQ(Call(5, "EXISTS", {"n"}).payload().as<bool>(), false);
  // A hundred years exactly is accepted by each.
  EXPECT_EQ(Call(6, "EXPIRE", {"k"}, {kMaxTtlMs}).payload().as<bool>(), true);
  EXPECT_GT(Call(7, "TTL", {"k"}).payload().as<int64_t>(), kMaxTtlMs - 60000);
  EXPECT_EQ(Call(8, "SET", {"k", "v"}, {kMaxTtlMs}).status, 0u);
  EXPECT_EQ(Call(9, "INCR", {"n"}, {1, kMaxTtlMs}).payload().as<int64_t>(), 1);
  // Below zero: SET and INCR refuse it, EXPIRE takes it as "expire now".
  EXPECT_EQ(Call(10, "SET", {"k", "w"}, {-1}).status, 1u);
  EXPECT_EQ(Call(11, "INCR", {"n"}, {1, -1}).status, 1u);
  EXPECT_EQ(Call(12, "EXPIRE", {"k"}, {-1}).payload().as<bool>(), true);
  EXPECT_EQ(Call(13, "GET", {"k"}).status, 5u);
}

TEST_F(ArgumentRulesTest, TheClientRefusesTheSameTtlsWithTheSameCode) {
  auto client = std::move(*Client::Connect(daemon_.tcp()));
  ASSERT_TRUE(client->Set("k", "v").has_value());
  const int64_t before = Requests(*client);
  const milliseconds over(kMaxTtlMs + 1);
  SetOptions set;
  set.ttl = over;
  EXPECT_EQ(CodeOf(client->Set("k", "v", set)), 1);
  EXPECT_EQ(CodeOf(client->Incr("n", 1, over)), 1);
  EXPECT_EQ(CodeOf(client->Expire("k", over)), 1);
  set.ttl = milliseconds(-1);
  EXPECT_EQ(CodeOf(client->Set("k", "v", set)), 1);
  EXPECT_EQ(Requests(*client), before + 1);  // all refused without asking
  EXPECT_EQ(client->Ttl("k").value(), Cache::kNoExpiry);
}

TEST_F(ArgumentRulesTest, ScanCountIsOneTo100000) {
  const auto scan = [&](uint64_t id, int64_t count) {
    return wire_->Call(PackRequest(id, "SCAN", 3, [&](Packer& pk) {
      pk.pack(0);
      pk.pack(std::string("*"));
      pk.pack(count);
    }));
  };
  for (const int64_t bad : {0, 100001}) {
    const testing::WireReply r = scan(1, bad);
    EXPECT_EQ(r.status, 1u) << bad;
    EXPECT_NE(r.message.find("count is " + std::to_string(bad) + "; it must be 1 to 100000"), std::string::npos)
        << r.message;
  }
  EXPECT_EQ(scan(2, 1).status, 0u);
  EXPECT_EQ(scan(3, 100000).status, 0u);
}

// cachectl's exit code 2 is "refused input", whichever command and endpoint.
TEST_F(ArgumentRulesTest, CachectlExitsTwoForARefusedKeyOrTtl) {
  ASSERT_EQ(Call(1, "SET", {"k", "v"}).status, 0u);
  for (const std::string& endpoint : {daemon_.ipc(), daemon_.tcp()}) {
    for (const std::string& bad : {kEmpty, kLong}) {
      const std::vector<std::vector<std::string>> commands = {
          {"get", bad}, {"ttl", bad}, {"del", bad}, {"expire", bad, "1000"}, {"incr", bad}, {"set", bad, "v"}};
      for (std::vector<std::string> args : commands) {
        args.insert(args.begin(), {CACHECTL_PATH, "--endpoint", endpoint});
        const testing::ProgramResult o = testing::RunProgram(args);
        EXPECT_EQ(o.code, 2) << endpoint << " " << args[3] << " of a " << bad.size() << "-byte key: " << o.err;
        EXPECT_NE(o.err.find("KEY_TOO_LARGE"), std::string::npos) << o.err;
      }
    }
    const testing::ProgramResult expire =
        testing::RunProgram({CACHECTL_PATH, "--endpoint", endpoint, "expire", "k", std::to_string(kMaxTtlMs + 1)});
    EXPECT_EQ(expire.code, 2) << expire.err;
    EXPECT_NE(expire.err.find("INVALID_ARGUMENT"), std::string::npos) << expire.err;
  }
  EXPECT_EQ(Call(2, "TTL", {"k"}).payload().as<int64_t>(), -1);  // the refused EXPIRE changed nothing
}

}  // namespace
}  // namespace cachet
