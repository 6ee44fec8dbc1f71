// SIGHUP reloads (a good file and a broken one), daemon start-up errors, and
// cachectl's commands, output and exit codes, against a real cachetd.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "cachet/client.h"
#include "daemon_process.h"

namespace cachet {
namespace {

using testing::ProgramResult;

ProgramResult Cachectl(const testing::DaemonProcess& d, std::vector<std::string> args) {
  args.insert(args.begin(), {CACHECTL_PATH, "--endpoint", d.tcp()});
  return testing::RunProgram(args);
}

class ReloadTest : public ::testing::Test {
 protected:
  void WriteConfig(const std::string& text) { std::ofstream(path_) << text; }
  void TearDown() override { std::remove(path_.c_str()); }
  std::string path_ = "/tmp/" + testing::UniqueSegmentName("conf") + ".conf";
};

TEST_F(ReloadTest, SighupWithGoodFileAppliesIt) {
  WriteConfig("log-level = info\n");
  testing::DaemonProcess daemon({"--config", path_});
  ASSERT_TRUE(daemon.Start());
  auto client = std::move(*Client::Connect(daemon.tcp()));
  WriteConfig("log-level = debug\npolicy = fifo\n");
  const size_t mark = daemon.log().size();
  daemon.Hup();
  ASSERT_TRUE(daemon.WaitForLog("configuration reloaded", mark)) << daemon.log();
  EXPECT_NE(daemon.log().find("log level is now debug", mark), std::string::npos);
  EXPECT_NE(daemon.log().find("'policy' changed in the configuration; it applies after a restart", mark),
            std::string::npos);
  EXPECT_EQ(testing::StatOf(*client, "reloads"), 1);
}

TEST_F(ReloadTest, SighupWithBrokenFileKeepsRunningConfiguration) {
  WriteConfig("log-level = info\n");
  testing::DaemonProcess daemon({"--config", path_});
  ASSERT_TRUE(daemon.Start());
  auto client = std::move(*Client::Connect(daemon.tcp()));
  ASSERT_TRUE(client->Set("k", "v").value());
  WriteConfig("log-level = info\npolicy = lfu\n");
  const size_t mark = daemon.log().size();
  daemon.Hup();
  ASSERT_TRUE(daemon.WaitForLog("reload failed", mark)) << daemon.log();
  EXPECT_NE(daemon.log().find("lfu", mark), std::string::npos);
  EXPECT_NE(daemon.log().find("keeping the running configuration", mark), std::string::npos);
  EXPECT_EQ(client->Get("k").value(), "v");
  EXPECT_EQ(testing::StatOf(*client, "reloads"), 0);
  // The RELOAD op reports the same error to the caller.
  auto r = client->Reload();
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("lfu"), std::string::npos);
}

TEST(DaemonStartTest, BadOptionsExitWithCodeTwoAndOneLine) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{{"--no-such-option"},
                                                                                    {"--capacity", "lots"},
                                                                                    {"--policy", "random"},
                                                                                    {"--config", "/nonexistent/x.conf"},
                                                                                    {"--ipc", "http://x"},
                                                                                    {"--rate-limit-capacity", "0"},
                                                                                    {"--rate-limit-capacity", "-5"}}) {
    const ProgramResult r = testing::RunCachetd(args);
    EXPECT_EQ(r.code, 2) << args[0];
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("cachetd: ", 0), 0u) << r.err;
  }
}

TEST(DaemonStartTest, UnknownKeyInConfigFileIsRejected) {
  const std::string path = "/tmp/" + testing::UniqueSegmentName("badconf") + ".conf";
  std::ofstream(path) << "capacity = 8MiB\ncolour = blue\n";
  const ProgramResult r = testing::RunCachetd({"--config", path});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("colour"), std::string::npos) << r.err;
  std::remove(path.c_str());
}

class CachectlTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(daemon_.Start()); }
  testing::DaemonProcess daemon_;
};

TEST_F(CachectlTest, SetGetTtlDel) {
  EXPECT_EQ(Cachectl(daemon_, {"ping"}).out, "PONG\n");
  EXPECT_EQ(Cachectl(daemon_, {"set", "greeting", "hello world", "--ttl", "60000"}).code, 0);
  const ProgramResult get = Cachectl(daemon_, {"get", "greeting"});
  EXPECT_EQ(get.code, 0);
  EXPECT_EQ(get.out, "hello world\n");
  const ProgramResult ttl = Cachectl(daemon_, {"ttl", "greeting"});
  EXPECT_EQ(ttl.code, 0);
  EXPECT_GT(std::stoll(ttl.out), 50000);
  EXPECT_EQ(Cachectl(daemon_, {"del", "greeting"}).code, 0);
  EXPECT_EQ(Cachectl(daemon_, {"get", "greeting"}).code, 1);
  EXPECT_EQ(Cachectl(daemon_, {"del", "greeting"}).code, 1);
}

TEST_F(CachectlTest, IncrExpireKeysFlush) {
  EXPECT_EQ(Cachectl(daemon_, {"incr", "hits"}).out, "1\n");
  EXPECT_EQ(Cachectl(daemon_, {"incr", "hits", "--by", "41"}).out, "42\n");
  EXPECT_EQ(Cachectl(daemon_, {"set", "user:1", "a"}).code, 0);
  EXPECT_EQ(Cachectl(daemon_, {"set", "user:2", "b"}).code, 0);
  const ProgramResult keys = Cachectl(daemon_, {"keys", "user:*"});
  EXPECT_EQ(keys.code, 0);
  EXPECT_NE(keys.out.find("user:1\n"), std::string::npos);
  EXPECT_NE(keys.out.find("user:2\n"), std::string::npos);
  EXPECT_EQ(keys.out.find("hits"), std::string::npos);
  EXPECT_EQ(Cachectl(daemon_, {"expire", "user:1", "0"}).code, 0);
  EXPECT_EQ(Cachectl(daemon_, {"get", "user:1"}).code, 1);
  EXPECT_EQ(Cachectl(daemon_, {"flush"}).code, 0);
  EXPECT_EQ(Cachectl(daemon_, {"get", "user:2"}).code, 1);
  EXPECT_EQ(Cachectl(daemon_, {"reload"}).code, 0);
}

TEST_F(CachectlTest, JsonOutput) {
  EXPECT_EQ(Cachectl(daemon_, {"set", "k", "say \"hi\"\n"}).code, 0);
  EXPECT_EQ(Cachectl(daemon_, {"--json", "get", "k"}).out,
            "{\"key\":\"k\",\"found\":true,\"value\":\"say \\\"hi\\\"\\n\"}\n");
  EXPECT_EQ(Cachectl(daemon_, {"--json", "get", "nope"}).out, "{\"key\":\"nope\",\"found\":false}\n");
  const ProgramResult stats = Cachectl(daemon_, {"--json", "stats"});
  EXPECT_EQ(stats.code, 0);
  EXPECT_EQ(stats.out.front(), '{');
  EXPECT_NE(stats.out.find("\"entries\":1"), std::string::npos) << stats.out;
  EXPECT_NE(stats.out.find("\"uptime_seconds\":"), std::string::npos);
}

TEST_F(CachectlTest, ExitCodesForUsageRefusalAndUnreachable) {
  EXPECT_EQ(Cachectl(daemon_, {}).code, 2);
  EXPECT_EQ(Cachectl(daemon_, {"frobnicate"}).code, 2);
  EXPECT_EQ(Cachectl(daemon_, {"get"}).code, 2);
  EXPECT_EQ(Cachectl(daemon_, {"get", "k", "--ttl", "5"}).code, 2);
  EXPECT_EQ(Cachectl(daemon_, {"set", "k", "v", "--bogus"}).code, 2);
  EXPECT_EQ(Cachectl(daemon_, {"set", std::string(251, 'k'), "v"}).code, 2);  // refused: KEY_TOO_LARGE
  EXPECT_EQ(Cachectl(daemon_, {"get", "--help"}).code, 0);
  EXPECT_NE(Cachectl(daemon_, {"set", "--help"}).out.find("--ttl"), std::string::npos);
  EXPECT_EQ(testing::RunProgram({CACHECTL_PATH, "--help"}).code, 0);
  const std::string nowhere = "ipc:///tmp/" + testing::UniqueSegmentName("nodaemon") + ".sock";
  const ProgramResult down = testing::RunProgram({CACHECTL_PATH, "--endpoint", nowhere, "--timeout", "100", "ping"});
  EXPECT_EQ(down.code, 3);
  EXPECT_NE(down.err.find(nowhere), std::string::npos) << down.err;
}

}  // namespace
}  // namespace cachet
