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

}  // namespace
}  // namespace cachet::daemon
