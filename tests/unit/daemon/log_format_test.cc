// cachetd's log formats, in process: each JSON line must parse, and carry
// the message exactly, whatever bytes it holds.
#include "log_format.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <sstream>

namespace cachet::daemon {
namespace {

class LogFormatTest : public ::testing::Test {
 protected:
  std::ostringstream out_;
  spdlog::logger log_{"test", std::make_shared<spdlog::sinks::ostream_sink_st>(out_)};
};

TEST_F(LogFormatTest, JsonLinesParseAndKeepTheMessage) {
  SetLogFormat(log_, "json");
  const std::string tricky = "quote \" backslash \\ newline \n tab \t bell \x07 del \x7f end";
  log_.warn("{}", tricky);
  log_.info("plain");
  std::istringstream lines(out_.str());
  std::string line;
  ASSERT_TRUE(std::getline(lines, line));
  const nlohmann::json first = nlohmann::json::parse(line);
  EXPECT_EQ(first.at("msg"), tricky);
  EXPECT_EQ(first.at("level"), "warning");
  EXPECT_EQ(first.at("pid"), static_cast<int>(getpid()));
  const std::string time = first.at("time");
  // 2026-12-06T02:10:04.123Z: UTC, with milliseconds.
  ASSERT_EQ(time.size(), 24u) << time;
  EXPECT_EQ(time[10], 'T');
  EXPECT_EQ(time.back(), 'Z');
  ASSERT_TRUE(std::getline(lines, line));
  EXPECT_EQ(nlohmann::json::parse(line).at("msg"), "plain");
  EXPECT_FALSE(std::getline(lines, line)) << "one line per message: " << line;
}

TEST_F(LogFormatTest, TextLinesAreForPeople) {
  SetLogFormat(log_, "text");
  log_.info("serving {}", "tcp://127.0.0.1:7379");
  const std::string text = out_.str();
  EXPECT_NE(text.find(" info  cachetd["), std::string::npos) << text;
  EXPECT_NE(text.find("] serving tcp://127.0.0.1:7379\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace cachet::daemon
