// Starting cachetd: one daemon per segment (a second is refused, a restart
// after kill -9 is not), and endpoints that cannot be bound are refused
// with one line before any segment is made.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cachet/client.h"
#include "daemon_process.h"

namespace cachet {
namespace {

bool Exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

struct Outcome {
  int code = -1;       // exit code, or 128 + signal
  std::string output;  // stdout and stderr
};

// Runs cachetd with `args` until it exits (checked for sanitizer reports and
// a deadline by RunProgram), then removes what it may have left.
Outcome RunToExit(std::vector<std::string> args) {
  const testing::ProgramResult r = testing::RunCachetd(std::move(args));
  return {r.code, r.out + r.err};
}

int Lines(const std::string& text) { return static_cast<int>(std::count(text.begin(), text.end(), '\n')); }

class DaemonStartTest : public ::testing::Test {
 protected:
  void TearDown() override {
    (void)Cache::RemoveNamed(segment_);
    unlink(ipc_path_.c_str());
  }
  const std::string segment_ = testing::UniqueSegmentName("start");
  const std::string ipc_path_ = "/tmp/" + segment_ + ".sock";
};

TEST_F(DaemonStartTest, SecondDaemonOnTheSameSegmentIsRefusedAndTheFirstKeepsServing) {
  testing::DaemonProcess first;
  ASSERT_TRUE(first.Start());
  auto client = Client::Connect(first.tcp());
  ASSERT_TRUE(client.has_value());
  ASSERT_TRUE((*client)->Set("kept", "yes").value());

  // Other endpoints and another capacity: before the lock, this one
  // rebuilt the first's segment under it, or served beside it.
  const Outcome second = RunToExit({"--segment", first.segment(), "--ipc", "ipc://" + ipc_path_, "--tcp",
                                    "tcp://127.0.0.1:*", "--capacity", "4MiB", "--max-value-size", "64KiB"});
  EXPECT_EQ(second.code, 3) << second.output;
  EXPECT_EQ(second.output, "cachetd: segment /" + first.segment() + " is in use by another cachetd (pid " +
                               std::to_string(first.pid()) + ", lock /dev/shm/" + first.segment() +
                               ".lock); stop it first or give this one another --segment\n");
  EXPECT_FALSE(Exists(ipc_path_));

  EXPECT_EQ((*client)->Get("kept").value(), "yes");
  EXPECT_EQ(testing::StatOf(**client, "capacity_bytes"), 8 << 20);
  EXPECT_EQ(first.log().find("rebuilding"), std::string::npos) << first.log();
  EXPECT_EQ(first.Stop(), 0);
  EXPECT_FALSE(Exists("/dev/shm/" + first.segment() + ".lock")) << "a clean stop removes the lock file";
}

TEST_F(DaemonStartTest, RestartAfterKillNineTakesTheLockAgain) {
  testing::DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  const std::string tcp = daemon.tcp();
  {
    auto client = Client::Connect(tcp);
    ASSERT_TRUE((*client)->Set("survives", "kill -9").value());
  }
  daemon.Kill();
  EXPECT_TRUE(Exists("/dev/shm/" + daemon.segment() + ".lock")) << "kill -9 leaves the file, not the lock";
  ASSERT_TRUE(daemon.Start(tcp));
  auto client = Client::Connect(tcp);
  EXPECT_EQ((*client)->Get("survives").value(), "kill -9");
}

TEST_F(DaemonStartTest, UnbindableTcpEndpointExitsTwoWithOneLineAndNoSegment) {
  const Outcome o = RunToExit(
      {"--segment", segment_, "--ipc", "ipc://" + ipc_path_, "--tcp", "tcp://999.1.1.1:5", "--insecure", "true"});
  EXPECT_EQ(o.code, 2) << o.output;
  EXPECT_EQ(Lines(o.output), 1) << o.output;
  EXPECT_EQ(o.output.rfind("cachetd: cannot bind tcp://999.1.1.1:5: ", 0), 0u) << o.output;
  EXPECT_FALSE(Exists("/dev/shm/" + segment_));
  EXPECT_FALSE(Exists("/dev/shm/" + segment_ + ".lock"));
  EXPECT_FALSE(Exists(ipc_path_));
}

TEST_F(DaemonStartTest, IpcPathInAMissingFolderExitsTwoWithOneLineAndNoSegment) {
  const std::string endpoint = "ipc:///tmp/" + segment_ + "-missing/cachetd.sock";
  const Outcome o = RunToExit({"--segment", segment_, "--ipc", endpoint, "--tcp", "tcp://127.0.0.1:*"});
  EXPECT_EQ(o.code, 2) << o.output;
  EXPECT_EQ(o.output, "cachetd: cannot bind " + endpoint + ": No such file or directory\n");
  EXPECT_FALSE(Exists("/dev/shm/" + segment_));
  EXPECT_FALSE(Exists("/dev/shm/" + segment_ + ".lock"));
}

TEST_F(DaemonStartTest, IpcEndpointOfAnotherDaemonIsNotTakenFromIt) {
  testing::DaemonProcess first;
  ASSERT_TRUE(first.Start());
  // Another segment, the same ipc path: ZeroMQ would replace the first's
  // socket file and take every new same-host client from it.
  const Outcome o = RunToExit({"--segment", segment_, "--ipc", first.ipc(), "--tcp", "tcp://127.0.0.1:*"});
  EXPECT_EQ(o.code, 2) << o.output;
  EXPECT_EQ(o.output, "cachetd: cannot bind " + first.ipc() + ": another process is listening there\n");
  EXPECT_FALSE(Exists("/dev/shm/" + segment_));
  ClientOptions options;
  options.shared_memory_reads = false;
  auto client = Client::Connect(first.ipc(), options);
  ASSERT_TRUE(client.has_value());
  EXPECT_TRUE((*client)->Ping().has_value());
}

TEST_F(DaemonStartTest, AnIpcPathHoldingAFileThatIsNotASocketIsRefusedAndTheFileKept) {
  // A slip such as --ipc naming the configuration file: ZeroMQ's bind
  // would delete it.
  std::ofstream(ipc_path_) << "precious\n";
  const Outcome o = RunToExit({"--segment", segment_, "--ipc", "ipc://" + ipc_path_, "--tcp", "tcp://127.0.0.1:*"});
  EXPECT_EQ(o.code, 2) << o.output;
  EXPECT_EQ(o.output, "cachetd: cannot bind ipc://" + ipc_path_ + ": " + ipc_path_ +
                          " exists and is not a socket; binding would replace it\n");
  EXPECT_EQ(testing::ReadFile(ipc_path_), "precious\n");
  EXPECT_FALSE(Exists("/dev/shm/" + segment_));
}

TEST_F(DaemonStartTest, AStopRemovesTheSocketFilesOfItsIpcEndpoints) {
  const std::string pub_path = "/tmp/" + segment_ + "-pub.sock";
  const std::string policy_path = "/tmp/" + segment_ + "-policy.toml";
  std::ofstream(policy_path) << "[tier.regular]\nper_hour = 20/1h fixed_window\n";
  testing::DaemonProcess daemon({"--rate-limit-policy", policy_path, "--pub", "ipc://" + pub_path});
  ASSERT_TRUE(daemon.Start());
  const std::string ipc_path = daemon.ipc().substr(6);
  ASSERT_TRUE(Exists(ipc_path));
  ASSERT_TRUE(Exists(pub_path));
  EXPECT_EQ(daemon.Stop(), 0);
  EXPECT_FALSE(Exists(ipc_path)) << daemon.log();
  EXPECT_FALSE(Exists(pub_path)) << daemon.log();
  unlink(pub_path.c_str());
  unlink(policy_path.c_str());
}

TEST_F(DaemonStartTest, ASocketFileReplacedSinceItWasBoundIsLeftAtStop) {
  testing::DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  const std::string ipc_path = daemon.ipc().substr(6);
  // What another process bound at the path since, as far as the file goes.
  ASSERT_EQ(unlink(ipc_path.c_str()), 0);
  std::ofstream(ipc_path) << "someone else's\n";
  EXPECT_EQ(daemon.Stop(), 0);
  EXPECT_TRUE(Exists(ipc_path));
  EXPECT_NE(daemon.log().find("left " + ipc_path + " in place: it is no longer the socket this daemon bound"),
            std::string::npos)
      << daemon.log();
  unlink(ipc_path.c_str());
}

// log-format json: every line cachetd writes, from start to stop, is one
// JSON object a log shipper can read.
TEST(DaemonLogTest, JsonLogFormatWritesOneObjectPerLine) {
  testing::DaemonProcess daemon({"--log-format", "json"});
  ASSERT_TRUE(daemon.Start());
  const pid_t pid = daemon.pid();
  auto client = Client::Connect(daemon.tcp());
  ASSERT_TRUE(client.has_value());
  ASSERT_TRUE((*client)->Set("k", "v").has_value());
  EXPECT_EQ(daemon.Stop(), 0);
  std::istringstream lines(daemon.log());
  std::string line;
  int count = 0;
  bool saw_serving = false;
  while (std::getline(lines, line)) {
    ++count;
    nlohmann::json object;
    ASSERT_NO_THROW(object = nlohmann::json::parse(line)) << line;
    ASSERT_TRUE(object.contains("time") && object.contains("level") && object.contains("pid") && object.contains("msg"))
        << line;
    EXPECT_EQ(object.at("pid"), pid) << line;
    if (object.at("msg").get<std::string>().find(daemon.tcp()) != std::string::npos) saw_serving = true;
  }
  EXPECT_GE(count, 3);
  EXPECT_TRUE(saw_serving) << daemon.log();
}

}  // namespace
}  // namespace cachet
