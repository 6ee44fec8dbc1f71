// cachetd's Prometheus endpoint (metrics = host:port) against a real
// daemon, scraped over real HTTP while the test drives it with the client:
// the counters and histograms move by exactly what was driven; the address
// rules (loopback unless insecure, a busy port refused); 404 elsewhere; a
// clean stop while scrapes run.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <httplib.h>

#include <atomic>
#include <fstream>
#include <map>
#include <thread>

#include "cachet/client.h"
#include "daemon_process.h"
#include "prometheus_text.h"
#include "raw_wire.h"

namespace cachet {
namespace {

using testing::Exposition;
using testing::ParseExposition;

std::string Requests(const char* op, const char* status) {
  return std::string("cachet_requests_total{op=\"") + op + "\",status=\"" + status + "\"}";
}
std::string Count(const char* op) { return std::string("cachet_request_duration_seconds_count{op=\"") + op + "\"}"; }
std::string Bucket(const char* op, const char* le) {
  return std::string("cachet_request_duration_seconds_bucket{op=\"") + op + "\",le=\"" + le + "\"}";
}

class MetricsTest : public ::testing::Test {
 protected:
  void StartDaemon(std::vector<std::string> extra = {}) {
    extra.insert(extra.begin(), {"--metrics", "127.0.0.1:0"});
    daemon_.emplace(extra);
    ASSERT_TRUE(daemon_->Start());
    // Over tcp: every read is a request to the daemon (no shared memory).
    auto client = Client::Connect(daemon_->tcp());
    ASSERT_TRUE(client.has_value()) << client.error().ToString();
    client_ = std::move(*client);
    port_ = static_cast<int>(testing::StatOf(*client_, "metrics_port"));
    ASSERT_GT(port_, 0);
    ASSERT_NE(daemon_->log().find("metrics on http://127.0.0.1:" + std::to_string(port_) + "/metrics"),
              std::string::npos)
        << daemon_->log();
  }

  httplib::Result Get(const std::string& path) {
    httplib::Client http("127.0.0.1", port_);
    http.set_connection_timeout(std::chrono::seconds(5));
    http.set_read_timeout(std::chrono::seconds(5));
    return http.Get(path.c_str());
  }

  Exposition Scrape() {
    auto res = Get("/metrics");
    if (!res) {
      ADD_FAILURE() << "GET /metrics failed: " << httplib::to_string(res.error());
      return {};
    }
    EXPECT_EQ(res->status, 200) << res->body;
    EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4");
    Exposition e = ParseExposition(res->body);
    EXPECT_TRUE(e.problems.empty()) << ::testing::PrintToString(e.problems) << "\n" << res->body;
    return e;
  }

  // Scrapes until `ready` holds for a scrape (the snapshot is published
  // every ~100 ms), within a deadline; returns the last scrape.
  template <typename Ready>
  Exposition ScrapeUntil(Ready&& ready) {
    Exposition last;
    const bool done = testing::WaitUntil(
        [&] {
          last = Scrape();
          return ready(last);
        },
        std::chrono::seconds(10), std::chrono::milliseconds(20));
    EXPECT_TRUE(done) << "the scrape never showed what was driven";
    return last;
  }

  std::optional<testing::DaemonProcess> daemon_;
  std::unique_ptr<Client> client_;
  int port_ = 0;
};

TEST_F(MetricsTest, CountersAndHistogramsMoveByExactlyWhatWasDriven) {
  StartDaemon();
  // The STATS that read the port is in the baseline once published.
  const Exposition before = ScrapeUntil([](const Exposition& e) { return e.Value(Requests("STATS", "OK")) >= 1; });

  for (int i = 0; i < 5; ++i) ASSERT_TRUE(client_->Set("key" + std::to_string(i), "value").has_value());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(client_->Get("key" + std::to_string(i)).value().has_value());
  for (int i = 0; i < 4; ++i) ASSERT_FALSE(client_->Get("absent" + std::to_string(i)).value().has_value());
  auto not_integer = client_->Incr("key0");  // "value" is not an integer
  ASSERT_FALSE(not_integer.has_value());
  ASSERT_EQ(not_integer.error().code, ErrorCode::kNotInteger);
  // Two requests that do not decode: an op no daemon knows, and bytes that
  // are not msgpack.
  testing::RawWire raw(daemon_->tcp());
  raw.Send(testing::PackRequest(1, "NOSUCHOP"));
  raw.Send("\xc1 not msgpack");
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(raw.Receive().has_value());

  const Exposition after = ScrapeUntil([&](const Exposition& e) {
    return e.Value(Requests("SET", "OK")) - before.Value(Requests("SET", "OK")) >= 5 &&
           e.Value(Requests("GET", "NOT_FOUND")) - before.Value(Requests("GET", "NOT_FOUND")) >= 4 &&
           e.Value(Requests("GET", "OK")) - before.Value(Requests("GET", "OK")) >= 3 &&
           e.Value(Requests("INCR", "NOT_INTEGER")) - before.Value(Requests("INCR", "NOT_INTEGER")) >= 1 &&
           e.Value(Requests("INVALID", "UNKNOWN_OP")) + e.Value(Requests("INVALID", "BAD_REQUEST")) >= 2;
  });
  auto moved = [&](const std::string& key) { return after.Value(key) - before.Value(key); };
  EXPECT_EQ(moved(Requests("SET", "OK")), 5);
  EXPECT_EQ(moved(Requests("GET", "OK")), 3);
  EXPECT_EQ(moved(Requests("GET", "NOT_FOUND")), 4);
  EXPECT_EQ(moved(Requests("INCR", "NOT_INTEGER")), 1);
  EXPECT_EQ(moved(Requests("INVALID", "UNKNOWN_OP")), 1);
  EXPECT_EQ(moved(Requests("INVALID", "BAD_REQUEST")), 1);
  EXPECT_EQ(moved(Requests("STATS", "OK")), 0);
  // One observation per request, in its op's histogram.
  EXPECT_EQ(moved(Count("SET")), 5);
  EXPECT_EQ(moved(Count("GET")), 7);
  EXPECT_EQ(moved(Count("INCR")), 1);
  EXPECT_EQ(moved(Count("INVALID")), 2);
  EXPECT_EQ(after.Value(Bucket("GET", "+Inf")), after.Value(Count("GET")));
  EXPECT_LE(after.Value(Bucket("GET", "0.00001")), after.Value(Bucket("GET", "0.001")));
  EXPECT_GT(after.Value("cachet_request_duration_seconds_sum{op=\"GET\"}"), 0);
  // The cache's own figures.
  EXPECT_EQ(moved("cachet_hits_total"), 3);
  EXPECT_EQ(moved("cachet_misses_total"), 4);
  EXPECT_EQ(moved("cachet_sets_total"), 5);
  EXPECT_EQ(after.Value("cachet_entries", -1), 5);
  EXPECT_GT(after.Value("cachet_bytes"), 0);
  EXPECT_EQ(after.Value("cachet_capacity_bytes"), 8 << 20);
  EXPECT_EQ(after.Value("cachet_same_host_writes", -1), 1);       // a single node, the default
  EXPECT_EQ(after.Value("cachet_segment_page_bytes", -1), 4096);  // /dev/shm: test daemons take no huge pages
  EXPECT_GE(after.Value("cachet_connected_clients"), 2);          // client_ and raw
  EXPECT_EQ(after.Value("cachet_refused_connections_total", -1), 0);
  EXPECT_FALSE(after.Has("cachet_ratelimit_capacity"));  // no policy
  EXPECT_FALSE(after.Has("cachet_cluster_members"));     // a single node
}

TEST_F(MetricsTest, RateLimitDecisionsAreCountedByTierAndResult) {
  const std::string policy = "/tmp/" + testing::UniqueSegmentName("metrics-policy") + ".ini";
  std::ofstream(policy) << "[tier.free]\nper_minute = 3/1m\n\n[tier.pro]\nper_minute = 100/1m\n";
  StartDaemon({"--rate-limit-policy", policy});
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(client_->RateLimit("alice", "free").has_value());
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(client_->RateLimit("bob", "pro").has_value());
  ASSERT_FALSE(client_->RateLimit("carol", "no-such-tier").has_value());  // an error, not a decision
  const std::string free_denied = "cachet_ratelimit_decisions_total{tier=\"free\",result=\"denied\"}";
  const Exposition e = ScrapeUntil([&](const Exposition& s) { return s.Value(free_denied) >= 2; });
  EXPECT_EQ(e.Value("cachet_ratelimit_decisions_total{tier=\"free\",result=\"allowed\"}"), 3);
  EXPECT_EQ(e.Value(free_denied), 2);
  EXPECT_EQ(e.Value("cachet_ratelimit_decisions_total{tier=\"pro\",result=\"allowed\"}"), 2);
  EXPECT_FALSE(e.Has("cachet_ratelimit_decisions_total{tier=\"pro\",result=\"denied\"}"));
  EXPECT_EQ(e.Value(Requests("RATELIMIT", "OK")), 7);
  EXPECT_EQ(e.Value(Requests("RATELIMIT", "INVALID_ARGUMENT")), 1);
  EXPECT_EQ(e.Value("cachet_ratelimit_counters"), 2);
  EXPECT_EQ(e.Value("cachet_ratelimit_capacity"), 1048576);
  unlink(policy.c_str());
}

TEST_F(MetricsTest, OtherPathsAreNotFound) {
  StartDaemon();
  for (const char* path : {"/", "/metrics/", "/metricsx", "/stats", "/metrics/../stats"}) {
    auto res = Get(path);
    ASSERT_TRUE(res) << path << ": " << httplib::to_string(res.error());
    EXPECT_EQ(res->status, 404) << path;
  }
  auto res = Get("/metrics?format=prometheus");  // a query string is still /metrics
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST_F(MetricsTest, StopsCleanlyWhileBeingScraped) {
  StartDaemon();
  std::atomic<bool> stop{false};
  std::atomic<int> scrapes{0};
  std::thread scraper([&] {
    httplib::Client http("127.0.0.1", port_);  // keep-alive: one connection reused
    http.set_keep_alive(true);
    http.set_connection_timeout(std::chrono::seconds(2));
    http.set_read_timeout(std::chrono::seconds(2));
    while (!stop) {
      if (auto res = http.Get("/metrics"); res && res->status == 200) ++scrapes;
    }
  });
  ASSERT_TRUE(testing::WaitUntil([&] { return scrapes >= 20; }));
  const auto began = std::chrono::steady_clock::now();
  EXPECT_EQ(daemon_->Stop(), 0);  // and no sanitizer report (DaemonProcess checks)
  EXPECT_LT(std::chrono::steady_clock::now() - began, std::chrono::seconds(5));
  stop = true;
  scraper.join();
}

TEST_F(MetricsTest, SigintStopsTheEndpointWithTheDaemon) {
  StartDaemon();
  ASSERT_EQ(Get("/metrics")->status, 200);
  daemon_->Signal(SIGINT);
  ASSERT_TRUE(daemon_->WaitForLog("metrics endpoint stopped")) << daemon_->log();
  EXPECT_EQ(daemon_->WaitForExit(), 0);  // the SIGINT above stops it; no second signal
  httplib::Client http("127.0.0.1", port_);
  http.set_connection_timeout(std::chrono::seconds(2));
  EXPECT_FALSE(http.Get("/metrics")) << "the port still answers after the stop";
}

TEST(MetricsStartTest, OffUnlessConfigured) {
  testing::DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  auto client = Client::Connect(daemon.tcp());
  ASSERT_TRUE(client.has_value());
  EXPECT_EQ(testing::StatOf(**client, "metrics_port"), 0);
  EXPECT_EQ(daemon.log().find("metrics on"), std::string::npos) << daemon.log();
}

TEST(MetricsStartTest, AnAddressOtherHostsReachIsRefusedWithoutInsecure) {
  const testing::ProgramResult r = testing::RunCachetd({"--metrics", "0.0.0.0:0"});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("cachetd: metrics 0.0.0.0:0 is reachable from other hosts"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(MetricsStartTest, InsecureServesAnyAddressWithAWarning) {
  testing::DaemonProcess daemon({"--metrics", "0.0.0.0:0", "--insecure", "true"});
  ASSERT_TRUE(daemon.Start());
  EXPECT_NE(daemon.log().find("metrics on http://0.0.0.0:"), std::string::npos) << daemon.log();
  EXPECT_NE(daemon.log().find("served to other hosts without authentication"), std::string::npos) << daemon.log();
}

TEST(MetricsStartTest, ABusyPortExitsTwoAndLeavesNoSegment) {
  // A listener of another program on a loopback port.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string address = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  const std::string segment = testing::UniqueSegmentName("busy");

  const testing::ProgramResult r = testing::RunCachetd({"--segment", segment, "--metrics", address});
  close(fd);
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("cachetd: cannot bind metrics " + address + ": Address already in use"), std::string::npos)
      << r.err;
  EXPECT_NE(access(("/dev/shm/" + segment).c_str(), F_OK), 0) << "the segment was made";
  testing::RemoveDaemonFiles(segment);
}

TEST(MetricsStartTest, TwoDaemonsCannotShareAPort) {
  testing::DaemonProcess first({"--metrics", "127.0.0.1:0"});
  ASSERT_TRUE(first.Start());
  auto client = Client::Connect(first.tcp());
  ASSERT_TRUE(client.has_value());
  const std::string address = "127.0.0.1:" + std::to_string(testing::StatOf(**client, "metrics_port"));
  const testing::ProgramResult r = testing::RunCachetd({"--metrics", address});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("cannot bind metrics " + address), std::string::npos) << r.err;
}

}  // namespace
}  // namespace cachet
