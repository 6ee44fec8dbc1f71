// cachetd's configuration file, in process (daemon/config.h): text that
// once hung the parser is refused with one line, and a plain file still
// parses with the command line winning.
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "config.h"
#include "test_util.h"

namespace cachet::daemon {
namespace {

class ConfigFileTest : public ::testing::Test {
 protected:
  void TearDown() override { unlink(path_.c_str()); }

  Result<Parsed> ParseFile(const std::string& text, std::vector<std::string> more = {}) {
    std::ofstream(path_) << text;
    std::vector<std::string> args = {"--config", path_};
    args.insert(args.end(), more.begin(), more.end());
    return ParseConfig(args);
  }

  const std::string path_ = "/tmp/" + cachet::testing::UniqueSegmentName("config-test") + ".conf";
};

TEST_F(ConfigFileTest, PlainFileParsesAndFlagsWin) {
  auto parsed = ParseFile("capacity = 4MiB\nlog-level = warn\n", {"--log-level", "error"});
  ASSERT_TRUE(parsed.has_value()) << parsed.error().ToString();
  EXPECT_EQ(parsed->config.capacity_bytes, uint64_t{4} << 20);
  EXPECT_EQ(parsed->config.log_level, "error");
}

// Boost's error message for an unknown option named "...%canonical_option%..."
// substitutes the name into itself forever (found by fuzzing).
TEST_F(ConfigFileTest, OptionNamedLikeAPlaceholderIsRefusedNotHung) {
  auto parsed = ParseFile("clusteoption '%canonical_option%'etcd = http://10.0.1.9:2379\n");
  ASSERT_FALSE(parsed.has_value());
  EXPECT_EQ(parsed.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(parsed.error().message.find("%canonical_option%"), std::string::npos) << parsed.error().message;
}

TEST_F(ConfigFileTest, ValueHoldingAPlaceholderIsRefused) {
  auto parsed = ParseFile("policy = %value%\n");
  ASSERT_FALSE(parsed.has_value());
  EXPECT_NE(parsed.error().message.find("%value%"), std::string::npos) << parsed.error().message;
}

TEST(ConfigCommandLineTest, PlaceholderIsRefused) {
  auto parsed = ParseConfig({"--segment%option%", "x"});
  ASSERT_FALSE(parsed.has_value());
  EXPECT_NE(parsed.error().message.find("command line"), std::string::npos) << parsed.error().message;
}

// metrics: the Prometheus endpoint's address (docs/operations.md, "Monitor").
TEST(ConfigMetricsTest, OffByDefault) {
  auto parsed = ParseConfig({});
  ASSERT_TRUE(parsed.has_value()) << parsed.error().ToString();
  EXPECT_EQ(parsed->config.metrics, "");
}

TEST_F(ConfigFileTest, MetricsAddressIsReadFromTheFileAndTheCommandLineWins) {
  auto parsed = ParseFile("metrics = 127.0.0.1:9379\n");
  ASSERT_TRUE(parsed.has_value()) << parsed.error().ToString();
  EXPECT_EQ(parsed->config.metrics, "127.0.0.1:9379");
  parsed = ParseFile("metrics = 127.0.0.1:9379\n", {"--metrics", "[::1]:0"});
  ASSERT_TRUE(parsed.has_value()) << parsed.error().ToString();
  EXPECT_EQ(parsed->config.metrics, "[::1]:0");
}

TEST(ConfigMetricsTest, LoopbackAddressesAreAccepted) {
  for (const char* address : {"127.0.0.1:9379", "127.0.0.2:0", "localhost:9379", "[::1]:9379"}) {
    auto parsed = ParseConfig({"--metrics", address});
    EXPECT_TRUE(parsed.has_value()) << address << ": " << parsed.error().ToString();
  }
}

TEST(ConfigMetricsTest, AnAddressOtherHostsReachIsRefusedWithoutInsecure) {
  for (const char* address : {"0.0.0.0:9379", "10.1.2.3:9379", "[::]:9379"}) {
    auto parsed = ParseConfig({"--metrics", address});
    ASSERT_FALSE(parsed.has_value()) << address;
    EXPECT_EQ(parsed.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(parsed.error().message.find("metrics " + std::string(address) + " is reachable from other hosts"),
              std::string::npos)
        << parsed.error().message;
    EXPECT_NE(parsed.error().message.find("insecure"), std::string::npos) << parsed.error().message;
    auto allowed = ParseConfig({"--metrics", address, "--insecure", "true"});
    EXPECT_TRUE(allowed.has_value()) << address << ": " << allowed.error().ToString();
  }
}

TEST(ConfigMetricsTest, CurveDoesNotCoverTheMetricsEndpoint) {
  // CURVE guards the ZeroMQ endpoints; the HTTP endpoint has no
  // authentication whatever the keys, so it still needs insecure.
  auto parsed = ParseConfig({"--metrics", "0.0.0.0:9379", "--curve-secret-key", "/nonexistent/server.key",
                             "--curve-authorized-keys", "/nonexistent/clients.keys"});
  ASSERT_FALSE(parsed.has_value());
  EXPECT_NE(parsed.error().message.find("metrics 0.0.0.0:9379"), std::string::npos) << parsed.error().message;
}

TEST(ConfigMetricsTest, MalformedAddressesAreRefused) {
  for (const char* address : {"9379", ":9379", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:http", "::1:9379",
                              "[::1]9379", "[]:9379", "127.0.0.1:-1", "127.0.0.1:123456"}) {
    auto parsed = ParseConfig({"--metrics", address});
    ASSERT_FALSE(parsed.has_value()) << address;
    EXPECT_NE(parsed.error().message.find("metrics must be HOST:PORT"), std::string::npos) << parsed.error().message;
  }
}

TEST(ConfigPubTest, APubEndpointSharedWithTheRequestEndpointsIsRefused) {
  // The pub bind would replace the ipc socket file (or fail on the port).
  for (const char* flag : {"--ipc", "--tcp"}) {
    const std::string endpoint = std::string(flag) == "--ipc" ? "ipc:///tmp/same.sock" : "tcp://127.0.0.1:7390";
    auto parsed = ParseConfig({flag, endpoint, "--pub", endpoint, "--rate-limit-policy", "/tmp/policy.toml"});
    ASSERT_FALSE(parsed.has_value()) << flag;
    EXPECT_EQ(parsed.error().code, ErrorCode::kInvalidArgument);
    EXPECT_EQ(parsed.error().message,
              "pub and " + std::string(flag + 2) + " are both '" + endpoint + "': they need endpoints of their own")
        << parsed.error().message;
  }
}

TEST(ConfigPubTest, AnAbstractSocketIsRefusedForIpcAndPub) {
  auto ipc = ParseConfig({"--ipc", "ipc://@cachet"});
  ASSERT_FALSE(ipc.has_value());
  EXPECT_EQ(ipc.error().message.rfind("ipc 'ipc://@cachet' is an abstract socket, which access-mode cannot guard", 0),
            0u)
      << ipc.error().message;
  auto pub = ParseConfig({"--pub", "ipc://@policy", "--rate-limit-policy", "/tmp/policy.toml"});
  ASSERT_FALSE(pub.has_value());
  EXPECT_EQ(pub.error().message.rfind("pub 'ipc://@policy' is an abstract socket", 0), 0u) << pub.error().message;
}

TEST(ConfigMetricsTest, SplitHostPortTakesBracketsOff) {
  std::string host;
  uint16_t port = 1;
  ASSERT_TRUE(SplitHostPort("[::1]:0", &host, &port));
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 0);
  ASSERT_TRUE(SplitHostPort("127.0.0.1:65535", &host, &port));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 65535);
}

TEST(ConfigMetricsTest, ChangingItNeedsARestart) {
  DaemonConfig running, loaded;
  running.metrics = "127.0.0.1:9379";
  loaded.metrics = "127.0.0.1:9380";
  EXPECT_EQ(RestartOnlyChanges(running, loaded), std::vector<std::string>{"metrics"});
  EXPECT_TRUE(RestartOnlyChanges(running, running).empty());
}

}  // namespace
}  // namespace cachet::daemon
