// bench/soak.cc (cachet-soak) against a real cachetd with a rate-limit
// policy: a short run passes and writes its CSV and PNG; another client that
// overwrites one of the soak's values, or spends one of its rate-limit
// windows, makes it fail naming the key, and so do decisions of another rule
// than the one it was told of (so the checker can fail); bad arguments are
// refused with exit 2 and a reason.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "cachet/client.h"
#include "integration/daemon_process.h"
#include "test_util.h"

namespace cachet {
namespace {

// What bench/soak.sh gives cachetd: one fixed_window rule for the tier the soak asks for.
constexpr const char* kPolicy = "[tier.soak]\nper_second = 20/1s fixed_window\n";

class SoakToolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(policy_) << kPolicy;
    ASSERT_TRUE(daemon_.Start());
  }
  void TearDown() override {
    daemon_.Stop();
    std::remove(policy_.c_str());
  }

  std::vector<std::string> Soak(std::vector<std::string> args) {
    std::vector<std::string> command = {CACHET_SOAK_PATH, "--endpoint", daemon_.tcp()};
    command.insert(command.end(), args.begin(), args.end());
    return command;
  }

  // Runs a soak of one client on 8 keys under `prefix` while `intrude`
  // meddles through a client of its own, until the soak exits; returns how.
  testing::ProgramResult SoakWhile(const std::string& prefix, const std::function<void(Client&)>& intrude) {
    auto intruder = Client::Connect(daemon_.tcp());
    EXPECT_TRUE(intruder.has_value());
    testing::ChildProcess soak = testing::ChildProcess::Exec(
        Soak({"--clients", "1", "--keys", "8", "--duration", "30", "--prefix", prefix, "--quiet"}));
    EXPECT_TRUE(testing::WaitUntil(
        [&] {
          intrude(**intruder);
          return soak.Exited();
        },
        std::chrono::seconds(25), std::chrono::milliseconds(1)))
        << "the soak did not notice";
    testing::ProgramResult r;
    r.code = soak.Wait(testing::ChildProcess::kAnyExit);
    r.out = soak.out();
    r.err = soak.err();
    return r;
  }

  const std::string policy_ = "/tmp/" + testing::UniqueSegmentName("soak") + ".ini";
  testing::DaemonProcess daemon_{{"--rate-limit-policy", policy_, "--capacity", "32MiB"}};
};

TEST_F(SoakToolTest, AShortRunPassesAndWritesCsvAndPng) {
  const std::string base = "/tmp/" + testing::UniqueSegmentName("soakrun");
  const testing::ProgramResult r = testing::RunProgram(
      Soak({"--pid", std::to_string(daemon_.pid()), "--duration", "5", "--clients", "4", "--keys", "200", "--reconnect",
            "300", "--limit", "20", "--window", "1000", "--csv", base + ".csv", "--png", base + ".png"}),
      std::chrono::seconds(60));
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("PASSED"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("wrong replies 0, errors 0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("VmRSS"), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 5) << "one progress line a second:\n" << r.err;

  const std::string csv = testing::ReadFile(base + ".csv");
  EXPECT_EQ(csv.rfind("second,ops_per_s,p50_us,p99_us,p999_us,errors,reconnects,rss_kib,", 0), 0u) << csv;
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 6) << csv;  // header and five seconds
  const std::string png = testing::ReadFile(base + ".png");
  ASSERT_GT(png.size(), 8u);
  EXPECT_EQ(png.substr(1, 3), "PNG");
  std::remove((base + ".csv").c_str());
  std::remove((base + ".png").c_str());

  // The load reached the daemon, rate limits included.
  auto client = Client::Connect(daemon_.tcp());
  ASSERT_TRUE(client.has_value());
  EXPECT_GT(testing::StatOf(**client, "ratelimit_allowed"), 0);
  EXPECT_GT(testing::StatOf(**client, "ratelimit_denied"), 0);
}

TEST_F(SoakToolTest, AValueOverwrittenByAnotherClientFailsTheRunNamingTheKey) {
  const std::string prefix = testing::UniqueSegmentName("soakkeys");
  const testing::ProgramResult r = SoakWhile(prefix, [&](Client& intruder) {
    for (int k = 0; k < 8; ++k) (void)intruder.Set(prefix + ":t0:k" + std::to_string(k), "intruder");
  });
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("FAILED"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("WRONG: key " + prefix + ":t0:k"), std::string::npos) << r.err;
}

TEST_F(SoakToolTest, ARateLimitWindowSpentByAnotherClientFailsTheRunNamingTheKey) {
  const std::string prefix = testing::UniqueSegmentName("soaklimit");
  const std::string key = prefix + ":t0:rl0";  // the thread's own limiter key
  const testing::ProgramResult r = SoakWhile(prefix, [&](Client& intruder) { (void)intruder.RateLimit(key, "soak"); });
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("WRONG: key " + key + ": RATELIMIT"), std::string::npos) << r.err;
}

TEST_F(SoakToolTest, DecisionsOfAnotherRuleThanTheOneGivenFailTheRun) {
  const testing::ProgramResult r =
      testing::RunProgram(Soak({"--clients", "1", "--duration", "30", "--limit", "10", "--window", "1000", "--quiet"}),
                          std::chrono::seconds(60));
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("RATELIMIT decided by rule 'per_second' 20/1000ms, not the tier's 'per_second' 10/1000ms"),
            std::string::npos)
      << r.err;
}

TEST_F(SoakToolTest, BadArgumentsAreRefusedWithAReason) {
  const auto run = [](std::vector<std::string> args) {
    args.insert(args.begin(), CACHET_SOAK_PATH);
    return testing::RunProgram(args, std::chrono::seconds(10));
  };
  const testing::ProgramResult unknown = run({"--endpoint", "tcp://127.0.0.1:1", "--bogus", "1"});
  EXPECT_EQ(unknown.code, 2);
  EXPECT_NE(unknown.err.find("unknown option '--bogus'"), std::string::npos) << unknown.err;
  const testing::ProgramResult none = run({"--duration", "1"});
  EXPECT_EQ(none.code, 2);
  EXPECT_NE(none.err.find("--endpoint"), std::string::npos) << none.err;
  const testing::ProgramResult zero = run({"--endpoint", "tcp://127.0.0.1:1", "--clients", "0"});
  EXPECT_EQ(zero.code, 2);
  EXPECT_NE(zero.err.find("--clients"), std::string::npos) << zero.err;
  const testing::ProgramResult half = run({"--endpoint", "tcp://127.0.0.1:1", "--limit", "20"});
  EXPECT_EQ(half.code, 2);
  EXPECT_NE(half.err.find("--window"), std::string::npos) << half.err;
  const testing::ProgramResult png = run({"--endpoint", "tcp://127.0.0.1:1", "--png", "x.png"});
  EXPECT_EQ(png.code, 2);
  EXPECT_NE(png.err.find("--csv"), std::string::npos) << png.err;
  const testing::ProgramResult help = run({"--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("usage: cachet-soak"), std::string::npos);
  EXPECT_NE(help.out.find("--rss-bound"), std::string::npos);
}

}  // namespace
}  // namespace cachet
