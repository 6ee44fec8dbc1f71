// bench/cachet_load.cc (cachet-load) against a real cachetd: a short run
// reports real figures in JSON, writes one CSV row per second and a PNG
// plot; a dead endpoint shows up as errors and a gap as long as the run; bad
// arguments are refused with exit 2 and a reason.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cachet/client.h"
#include "integration/daemon_process.h"
#include "test_util.h"

namespace cachet {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(LoadToolTest, AShortRunReportsFiguresAndWritesCsvAndPng) {
  testing::DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  const std::string base = "/tmp/" + testing::UniqueSegmentName("load");
  const testing::ProgramResult r = testing::RunProgram(
      {CACHET_LOAD_PATH, "--endpoint", daemon.tcp(), "--clients", "4", "--duration", "2", "--mix",
       "get=50,set=40,incr=10", "--keys", "100", "--json", "--quiet", "--csv", base + ".csv", "--png", base + ".png"},
      std::chrono::seconds(30));
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const nlohmann::json report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report["clients"], 4);
  EXPECT_GT(report["ops"].get<uint64_t>(), 100u);
  EXPECT_GT(report["ops_per_s"].get<double>(), 50.0);
  EXPECT_EQ(report["errors"], 0) << report.dump();
  const double p50 = report["p50_us"], p99 = report["p99_us"], p999 = report["p999_us"];
  EXPECT_GT(p50, 0.0);
  EXPECT_LE(p50, p99);
  EXPECT_LE(p99, p999);
  EXPECT_LT(report["longest_gap_ms"].get<double>(), 1000.0);
  // The daemon saw the ops.
  auto client = Client::Connect(daemon.tcp());
  ASSERT_TRUE(client.has_value());
  EXPECT_GE(testing::StatOf(**client, "requests"), report["ops"].get<int64_t>());

  const std::string csv = Slurp(base + ".csv");
  EXPECT_EQ(csv.rfind("second,ops_per_s,p50_us,p99_us,p999_us,errors\n", 0), 0u) << csv;
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 3) << csv;  // header and two seconds
  const std::string png = Slurp(base + ".png");
  ASSERT_GT(png.size(), 8u);
  EXPECT_EQ(png.substr(1, 3), "PNG");
  std::remove((base + ".csv").c_str());
  std::remove((base + ".png").c_str());
}

TEST(LoadToolTest, ADeadEndpointIsAllErrorsAndOneGapAsLongAsTheRun) {
  const std::string dead = "tcp://127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());
  const testing::ProgramResult r = testing::RunProgram({CACHET_LOAD_PATH, "--endpoint", dead, "--clients", "2",
                                                        "--duration", "1", "--timeout", "100", "--json", "--quiet"},
                                                       std::chrono::seconds(30));
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const nlohmann::json report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report["ops"], 0);
  EXPECT_GT(report["errors"].get<uint64_t>(), 0u);
  EXPECT_GE(report["longest_gap_ms"].get<double>(), 900.0);
  EXPECT_FALSE(report["first_error"].get<std::string>().empty());
}

TEST(LoadToolTest, BadArgumentsAreRefusedWithAReason) {
  auto run = [](std::vector<std::string> args) {
    args.insert(args.begin(), CACHET_LOAD_PATH);
    return testing::RunProgram(args, std::chrono::seconds(10));
  };
  const testing::ProgramResult none = run({"--clients", "2"});
  EXPECT_EQ(none.code, 2);
  EXPECT_NE(none.err.find("--endpoint"), std::string::npos) << none.err;
  const testing::ProgramResult zero = run({"--endpoint", "tcp://127.0.0.1:1", "--clients", "0"});
  EXPECT_EQ(zero.code, 2);
  EXPECT_NE(zero.err.find("--clients"), std::string::npos) << zero.err;
  const testing::ProgramResult mix = run({"--endpoint", "tcp://127.0.0.1:1", "--mix", "get=1,frob=2"});
  EXPECT_EQ(mix.code, 2);
  EXPECT_NE(mix.err.find("frob"), std::string::npos) << mix.err;
  const testing::ProgramResult unknown = run({"--endpoint", "tcp://127.0.0.1:1", "--bogus", "1"});
  EXPECT_EQ(unknown.code, 2);
  EXPECT_NE(unknown.err.find("--bogus"), std::string::npos) << unknown.err;
  const testing::ProgramResult help = run({"--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("usage: cachet-load"), std::string::npos);
}

}  // namespace
}  // namespace cachet
