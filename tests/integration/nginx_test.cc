// nginx in front of any upstream, rate-limited by cachet through
// auth_request: Debian's nginx, started by the test on a loopback port with a
// generated configuration, asks the example service's /auth endpoint.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <fstream>

#include "daemon_process.h"

namespace cachet {
namespace {

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

void Stop(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
}

class NginxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(system(("mkdir -p " + dir_ + "/www").c_str()), 0);
    std::ofstream(dir_ + "/www/index.html") << "upstream says hello\n";
    // A sliding window: a minute boundary during the test (on the real
    // clock) cannot hand out a fresh window.
    std::ofstream(dir_ + "/limits.ini") << "[tier.anonymous]\nper_minute = 100/1m sliding_window\n"
                                           "[tier.premium]\nper_minute = 1000/1m\n[keys]\nkey-premium = premium\n";
    // The example service: limits, and /auth for nginx.
    service_ = testing::Launch(
        {HTTP_SERVICE_PATH, "--port", "0", "--policy", dir_ + "/limits.ini", "--trusted-proxy", "127.0.0.1"},
        dir_ + "/service.out");
    ASSERT_TRUE(WaitFor(dir_ + "/service.out", "listening on http://127.0.0.1:"));
    const std::string out = testing::ReadFile(dir_ + "/service.out");
    const int service_port = std::stoi(out.substr(out.find("127.0.0.1:") + 10));
    port_ = FreePort();
    std::ofstream(dir_ + "/nginx.conf") << Config(service_port);
    nginx_ = testing::Launch({"/usr/sbin/nginx", "-p", dir_, "-c", dir_ + "/nginx.conf"}, dir_ + "/nginx.out");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      httplib::Client c("127.0.0.1", port_);
      if (auto r = c.Get("/healthz")) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL() << "nginx did not start: " << testing::ReadFile(dir_ + "/nginx.out")
           << testing::ReadFile(dir_ + "/error.log");
  }
  void TearDown() override {
    Stop(nginx_);
    Stop(service_);
    (void)system(("rm -rf " + dir_).c_str());
  }

  std::string Config(int service_port) const {
    const std::string svc = "http://127.0.0.1:" + std::to_string(service_port);
    return "daemon off;\nmaster_process off;\npid " + dir_ + "/nginx.pid;\nerror_log " + dir_ +
           "/error.log;\nevents {}\nhttp {\n"
           "  access_log off;\n  client_body_temp_path " +
           dir_ + "/tmp;\n  proxy_temp_path " + dir_ +
           "/tmp;\n"
           "  server {\n    listen 127.0.0.1:" +
           std::to_string(port_) +
           ";\n"
           "    location = /healthz { return 200 \"ok\\n\"; }\n"
           "    location = /_cachet {\n      internal;\n      proxy_pass " +
           svc +
           "/auth;\n"
           "      proxy_pass_request_body off;\n      proxy_set_header Content-Length \"\";\n"
           "      proxy_set_header X-Real-IP $remote_addr;\n      proxy_set_header X-API-Key $http_x_api_key;\n    }\n"
           "    location / {\n      auth_request /_cachet;\n"
           "      auth_request_set $rl_policy $upstream_http_ratelimit_policy;\n"
           "      auth_request_set $rl $upstream_http_ratelimit;\n"
           "      auth_request_set $rl_retry $upstream_http_retry_after;\n"
           "      add_header RateLimit-Policy $rl_policy always;\n      add_header RateLimit $rl always;\n"
           "      error_page 403 = @limited;\n      root " +
           dir_ +
           "/www;\n      try_files /index.html =404;\n    }\n"
           "    location @limited {\n      add_header RateLimit-Policy $rl_policy always;\n"
           "      add_header RateLimit $rl always;\n      add_header Retry-After $rl_retry always;\n"
           "      return 429 \"too many requests\\n\";\n    }\n  }\n}\n";
  }

  static bool WaitFor(const std::string& file, const std::string& text) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      if (testing::ReadFile(file).find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

  httplib::Result Get(const httplib::Headers& headers = {}) {
    httplib::Client c("127.0.0.1", port_);
    return c.Get("/", headers);
  }

  const std::string dir_ = "/tmp/" + testing::UniqueSegmentName("nginx");
  pid_t service_ = -1, nginx_ = -1;
  int port_ = 0;
};

TEST_F(NginxTest, AuthRequestLimitsAnyUpstream) {
  for (int i = 1; i <= 100; ++i) {
    auto res = Get();
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << i;
    ASSERT_EQ(res->body, "upstream says hello\n");
    const std::string expected = "\"per_minute\";r=" + std::to_string(100 - i) + ";t=";
    EXPECT_EQ(res->get_header_value("RateLimit").rfind(expected, 0), 0u) << res->get_header_value("RateLimit");
  }
  auto res = Get();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 429);
  EXPECT_GE(std::stoi(res->get_header_value("Retry-After")), 1);
  EXPECT_EQ(res->get_header_value("RateLimit-Policy"), "\"per_minute\";q=100;w=60");
  // A premium key passes where the anonymous address is spent.
  auto premium = Get({{"X-API-Key", "key-premium"}});
  ASSERT_TRUE(premium);
  EXPECT_EQ(premium->status, 200);
  EXPECT_EQ(premium->get_header_value("RateLimit-Policy"), "\"per_minute\";q=1000;w=60");
}

}  // namespace
}  // namespace cachet
