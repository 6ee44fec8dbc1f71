// The example HTTP service over real HTTP: the 101st request in a window gets
// 429 with the rate-limit headers, a premium API key gets its higher limit,
// and a SIGHUP to cachetd with a new limit reaches the service without a
// restart.
#include <fcntl.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <fstream>

#include "daemon_process.h"

namespace cachet {
namespace {

// The example service, started on an ephemeral loopback port read back from
// its output, and stopped with the test.
class ServiceProcess {
 public:
  ~ServiceProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    unlink(out_.c_str());
  }
  ::testing::AssertionResult Start(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {HTTP_SERVICE_PATH, "--port", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = testing::Launch(args, out_);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string out = testing::ReadFile(out_);
      const size_t at = out.find("listening on http://127.0.0.1:");
      if (at != std::string::npos && out.find('\n', at) != std::string::npos) {
        port_ = std::stoi(out.substr(at + std::string("listening on http://127.0.0.1:").size()));
        return ::testing::AssertionSuccess();
      }
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return ::testing::AssertionFailure() << "http_service exited: " << out;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return ::testing::AssertionFailure() << "http_service did not start: " << testing::ReadFile(out_);
  }
  int port() const { return port_; }

 private:
  const std::string out_ = "/tmp/" + testing::UniqueSegmentName("http") + ".out";
  pid_t pid_ = -1;
  int port_ = 0;
};

class HttpServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Sliding windows: a minute boundary inside a test (which runs on the
    // real clock) cannot hand out a fresh window.
    Write(R"([tier.anonymous]
per_minute = 100/1m sliding_window

[tier.premium]
per_minute = 1000/1m sliding_window

[keys]
key-premium = premium
)");
    ASSERT_TRUE(daemon_.Start());
    ASSERT_TRUE(service_.Start({"--policy", path_, "--pub", pub_}));
  }
  void Write(const std::string& text) { std::ofstream(path_) << text; }
  httplib::Result Get(const httplib::Headers& headers = {}) {
    httplib::Client client("127.0.0.1", service_.port());
    return client.Get("/api/items", headers);
  }

  const std::string id_ = testing::UniqueSegmentName("svc");
  const std::string path_ = "/tmp/" + id_ + ".policy";
  const std::string pub_ = "ipc:///tmp/" + id_ + "-pub.sock";
  testing::DaemonProcess daemon_{{"--rate-limit-policy", path_, "--pub", pub_}};
  ServiceProcess service_;
};

TEST_F(HttpServiceTest, HundredAndFirstRequestGets429WithHeaders) {
  for (int i = 1; i <= 100; ++i) {
    auto res = Get();
    ASSERT_TRUE(res) << "request " << i;
    ASSERT_EQ(res->status, 200) << "request " << i;
    EXPECT_EQ(res->get_header_value("RateLimit-Remaining"), std::to_string(100 - i));
    EXPECT_EQ(res->get_header_value("RateLimit-Limit"), "100");
  }
  auto res = Get();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 429);
  const int retry = std::stoi(res->get_header_value("Retry-After"));
  EXPECT_GE(retry, 1);
  EXPECT_LE(retry, 60);
  EXPECT_EQ(res->get_header_value("RateLimit-Remaining"), "0");
  EXPECT_EQ(res->get_header_value("RateLimit-Policy"), "\"per_minute\";q=100;w=60");
  EXPECT_EQ(res->get_header_value("RateLimit").rfind("\"per_minute\";r=0;t=", 0), 0u);
}

TEST_F(HttpServiceTest, PremiumKeyGetsItsHigherLimit) {
  for (int i = 0; i < 100; ++i) ASSERT_EQ(Get()->status, 200);
  ASSERT_EQ(Get()->status, 429);  // the anonymous allowance of this address is spent
  auto res = Get({{"X-API-Key", "key-premium"}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("RateLimit-Limit"), "1000");
  EXPECT_EQ(res->get_header_value("RateLimit-Remaining"), "999");
  // An unknown key is just an anonymous client.
  EXPECT_EQ(Get({{"X-API-Key", "made-up"}})->status, 429);
}

TEST_F(HttpServiceTest, SighupWithANewLimitTakesEffectWithoutRestart) {
  for (int i = 0; i < 100; ++i) ASSERT_EQ(Get()->status, 200);
  ASSERT_EQ(Get()->status, 429);
  Write("[tier.anonymous]\nper_minute = 150/1m sliding_window\n[tier.premium]\nper_minute = 1000/1m sliding_window\n");
  daemon_.Hup();
  // Within a second or so the service installs the new policy; poll for it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  std::string limit;
  while (limit != "150" && std::chrono::steady_clock::now() < deadline) {
    auto res = Get();
    ASSERT_TRUE(res);
    limit = res->get_header_value("RateLimit-Limit");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(limit, "150");
}

}  // namespace
}  // namespace cachet
