// nginx in front of any upstream, rate-limited by cachet through
// auth_request: Debian's nginx, started by the test on a loopback port with
// docs/operations.md's recipe, asks the example service's /auth endpoint.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <fstream>

#include "http_service_process.h"

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

// The nginx block of docs/operations.md, as a user would paste it into a
// server block: the test runs the documented recipe itself, so the two
// cannot drift apart. Its upstream becomes a static file.
std::string DocumentedRecipe() {
  const std::string doc = testing::ReadFile(CACHET_SOURCE_DIR "/docs/operations.md");
  const std::string fence = "```nginx\n";
  const size_t begin = doc.find(fence, doc.find("### nginx in front of any upstream"));
  if (begin == std::string::npos) return "";
  const size_t end = doc.find("```", begin + fence.size());
  return doc.substr(begin + fence.size(), end - begin - fence.size());
}

void Replace(std::string& text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  ASSERT_NE(at, std::string::npos) << "the recipe no longer has '" << from << "':\n" << text;
  text.replace(at, from.size(), to);
}

class NginxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(system(("mkdir -p " + dir_ + "/www " + dir_ + "/tmp").c_str()), 0);
    std::ofstream(dir_ + "/www/index.html") << "upstream says hello\n";
    // Token buckets refilling one request per 864 s: no test sees a refill,
    // so every count below is certain on the real clock.
    std::ofstream(dir_ + "/limits.ini") << "[tier.anonymous]\nper_day = 100/1d token_bucket\n"
                                           "[tier.premium]\nper_day = 1000/1d token_bucket\n"
                                           "[keys]\nkey-premium = premium\n";
    // The example service as docs/operations.md runs it: nginx on this host
    // is its only trusted proxy.
    ASSERT_TRUE(service_.Start({"--policy", dir_ + "/limits.ini", "--trusted-proxy", "127.0.0.1"}));
    port_ = FreePort();
    std::string recipe = DocumentedRecipe();
    ASSERT_FALSE(recipe.empty()) << "docs/operations.md has no nginx recipe";
    Replace(recipe, "127.0.0.1:8081", "127.0.0.1:" + std::to_string(service_.port()));
    Replace(recipe, "proxy_pass http://your_upstream;", "root " + dir_ + "/www;\n    try_files /index.html =404;");
    std::ofstream(dir_ + "/nginx.conf") << "daemon off;\nmaster_process off;\npid " << dir_ << "/nginx.pid;\n"
                                        << "error_log " << dir_ << "/error.log;\nevents {}\nhttp {\n"
                                        << "  access_log off;\n  client_body_temp_path " << dir_ << "/tmp;\n"
                                        << "  proxy_temp_path " << dir_ << "/tmp;\n"
                                        << "  server {\n    listen 127.0.0.1:" << port_ << ";\n"
                                        << "    location = /healthz { return 200 \"ok\\n\"; }\n"
                                        << recipe << "  }\n}\n";
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
    if (nginx_ > 0) {
      kill(nginx_, SIGQUIT);  // graceful stop
      int status = 0;
      waitpid(nginx_, &status, 0);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << testing::ReadFile(dir_ + "/error.log");
    }
    if (service_.started()) {
      EXPECT_TRUE(service_.Stop());
    }
    (void)system(("rm -rf " + dir_).c_str());
  }

  httplib::Result Get(const httplib::Headers& headers = {}) {
    httplib::Client c("127.0.0.1", port_);
    return c.Get("/", headers);
  }

  const std::string dir_ = "/tmp/" + testing::UniqueSegmentName("nginx");
  testing::ServiceProcess service_;
  pid_t nginx_ = -1;
  int port_ = 0;
};

TEST_F(NginxTest, AuthRequestLimitsAnyUpstream) {
  for (int i = 1; i <= 100; ++i) {
    auto res = Get();
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << i;
    ASSERT_EQ(res->body, "upstream says hello\n");
    const std::string expected = "\"per_day\";r=" + std::to_string(100 - i) + ";t=";
    EXPECT_EQ(res->get_header_value("RateLimit").rfind(expected, 0), 0u) << res->get_header_value("RateLimit");
  }
  auto res = Get();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 429);
  EXPECT_GE(std::stoi(res->get_header_value("Retry-After")), 800);  // the next token, 864 s after the first
  EXPECT_LE(std::stoi(res->get_header_value("Retry-After")), 864);
  EXPECT_EQ(res->get_header_value("RateLimit-Policy"), "\"per_day\";q=100;w=86400");
  // A premium key passes where the anonymous address is spent.
  auto premium = Get({{"X-API-Key", "key-premium"}});
  ASSERT_TRUE(premium);
  EXPECT_EQ(premium->status, 200);
  EXPECT_EQ(premium->get_header_value("RateLimit-Policy"), "\"per_day\";q=1000;w=86400");
}

// Issue 8 item 10: a client that writes its own X-Forwarded-For (or
// X-Real-IP), a new address on every request, still gets exactly the limit:
// nginx replaces both headers with the address it sees.
TEST_F(NginxTest, ForgedForwardedForThroughNginxGetsExactlyTheLimit) {
  int admitted = 0;
  for (int i = 0; i < 150; ++i) {
    const std::string forged = "198.51.100." + std::to_string(i % 250);
    auto res = Get({{"X-Forwarded-For", forged}, {"X-Real-IP", forged}});
    ASSERT_TRUE(res) << i;
    ASSERT_TRUE(res->status == 200 || res->status == 429) << res->status;
    admitted += res->status == 200;
  }
  EXPECT_EQ(admitted, 100);
}

// And an invented API key through nginx is no fresh allowance either.
TEST_F(NginxTest, InventedApiKeysThroughNginxGetExactlyTheLimit) {
  int admitted = 0;
  for (int i = 0; i < 150; ++i) {
    auto res = Get({{"X-API-Key", "invented-" + std::to_string(i)}});
    ASSERT_TRUE(res) << i;
    admitted += res->status == 200;
  }
  EXPECT_EQ(admitted, 100);
}

}  // namespace
}  // namespace cachet
