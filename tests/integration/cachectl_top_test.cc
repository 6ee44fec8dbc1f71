// cachectl top against a real cachetd: --count bounds the refreshes,
// --json prints one object per refresh line, rates come from the STATS
// deltas between refreshes (cachectl's own STATS not counted), and without
// a terminal the output is plain lines.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <sstream>
#include <thread>

#include "cachet/client.h"
#include "daemon_process.h"

namespace cachet {
namespace {

using nlohmann::json;

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

class CachectlTopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(daemon_.Start());
    auto client = Client::Connect(daemon_.tcp());
    ASSERT_TRUE(client.has_value());
    client_ = std::move(*client);
  }

  testing::ProgramResult Top(std::vector<std::string> args) {
    args.insert(args.begin(), {CACHECTL_PATH, "--endpoint", daemon_.tcp(), "top"});
    return testing::RunProgram(args);
  }

  testing::DaemonProcess daemon_;
  std::unique_ptr<Client> client_;
};

TEST_F(CachectlTopTest, JsonPrintsOneObjectPerRefreshWithTheFigures) {
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(client_->Set("key" + std::to_string(i), "value").has_value());
  const testing::ProgramResult r = Top({"--count", "2", "--interval", "100ms", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 2u) << r.out;
  for (const std::string& line : lines) {
    json j;
    ASSERT_NO_THROW(j = json::parse(line)) << line;
    for (const char* field :
         {"unix_time_ms", "interval_seconds", "ops_per_second", "hits_per_second", "misses_per_second", "hit_ratio",
          "hit_ratio_total", "sets_per_second", "evictions_per_second", "errors_per_second", "entries", "bytes",
          "capacity_bytes", "memory_bytes", "connected_clients"}) {
      EXPECT_TRUE(j.contains(field)) << field << " missing: " << line;
    }
    EXPECT_EQ(j["entries"], 10) << line;
    EXPECT_EQ(j["capacity_bytes"], 8 << 20) << line;
    EXPECT_GT(j["bytes"].get<int64_t>(), 0) << line;
    EXPECT_GE(j["connected_clients"].get<int64_t>(), 2) << line;  // client_ and cachectl
    EXPECT_NEAR(j["interval_seconds"].get<double>(), 0.1, 0.09) << line;
    // Nothing but cachectl's own STATS ran meanwhile, and that is not shown.
    EXPECT_EQ(j["ops_per_second"], 0.0) << line;
    EXPECT_TRUE(j["hit_ratio"].is_null()) << line;  // no lookups in the interval
  }
}

TEST_F(CachectlTopTest, RatesFollowTheLoadBetweenRefreshes) {
  ASSERT_TRUE(client_->Set("hot", "value").has_value());
  std::atomic<bool> stop{false};
  std::atomic<int64_t> gets{0};
  std::thread load([&] {
    auto client = Client::Connect(daemon_.tcp());
    ASSERT_TRUE(client.has_value());
    while (!stop) {
      ASSERT_TRUE((*client)->Get("hot").has_value());
      ++gets;
    }
  });
  ASSERT_TRUE(testing::WaitUntil([&] { return gets > 0; }));
  const testing::ProgramResult r = Top({"--count", "2", "--interval", "0.2", "--json"});
  stop = true;
  load.join();
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 2u) << r.out;
  for (const std::string& line : lines) {
    const json j = json::parse(line);
    EXPECT_GT(j["ops_per_second"].get<double>(), 0) << line;
    EXPECT_GT(j["hits_per_second"].get<double>(), 0) << line;
    EXPECT_EQ(j["hit_ratio"], 1.0) << line;  // every GET is of a key that is there
  }
}

TEST_F(CachectlTopTest, WithoutATerminalItPrintsPlainLines) {
  const testing::ProgramResult r = Top({"--count", "3", "--interval", "50ms"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 4u) << r.out;  // a header and three refreshes
  EXPECT_EQ(lines[0].rfind("time", 0), 0u) << lines[0];
  EXPECT_NE(lines[0].find("ops/s"), std::string::npos) << lines[0];
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << "no terminal escapes in plain output";
}

TEST_F(CachectlTopTest, BadOptionsAreUsageErrors) {
  for (const std::vector<std::string>& args : {std::vector<std::string>{"--interval", "0"},
                                               {"--interval", "5ms"},
                                               {"--interval", "soon"},
                                               {"--count", "0"},
                                               {"--count", "-3"},
                                               {"extra"}}) {
    const testing::ProgramResult r = Top(args);
    EXPECT_EQ(r.code, 2) << ::testing::PrintToString(args) << r.err;
  }
  const testing::ProgramResult r =
      testing::RunProgram({CACHECTL_PATH, "--endpoint", daemon_.tcp(), "get", "k", "--count", "2"});
  EXPECT_EQ(r.code, 2) << "--count belongs to top: " << r.err;
}

TEST(CachectlTopUnreachableTest, ADaemonThatIsNotThereExitsThree) {
  const testing::ProgramResult r =
      testing::RunProgram({CACHECTL_PATH, "--endpoint", "ipc:///tmp/cachet-no-such-daemon.sock", "--timeout", "200",
                           "top", "--count", "1", "--interval", "50ms"});
  EXPECT_EQ(r.code, 3) << r.out << r.err;
}

}  // namespace
}  // namespace cachet
