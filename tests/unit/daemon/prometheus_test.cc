// The metrics endpoint's text (daemon/prometheus.h) from snapshots made by
// hand, and the latency histogram's buckets (daemon/server_stats.h).
#include <gtest/gtest.h>

#include <string>

#include "prometheus.h"
#include "prometheus_text.h"
#include "server_stats.h"

namespace cachet::daemon {
namespace {

using namespace std::chrono_literals;
using testing::Exposition;
using testing::ParseExposition;

constexpr size_t kGet = 2, kSet = 3;  // wire::Op rows
constexpr uint16_t kOk = 0, kNotFound = 5;

std::string Bucket(const char* op, const char* le) {
  return std::string("cachet_request_duration_seconds_bucket{op=\"") + op + "\",le=\"" + le + "\"}";
}

TEST(LatencyHistogramTest, ABoundBelongsToItsOwnBucket) {
  LatencyHistogram h;
  h.Record(10us);
  h.Record(10us + 1ns);
  h.Record(0ns);
  h.Record(-5ns);  // a clock that stepped back counts as 0
  EXPECT_EQ(h.counts[0], 3u);
  EXPECT_EQ(h.counts[1], 1u);
  EXPECT_EQ(h.count(), 4u);
  EXPECT_EQ(h.sum_ns, 20'001u);
}

TEST(LatencyHistogramTest, OverOneSecondGoesToTheLastBucket) {
  LatencyHistogram h;
  h.Record(1s);
  h.Record(1s + 1ns);
  h.Record(1h);
  EXPECT_EQ(h.counts[kLatencyBoundsUs.size() - 1], 1u);
  EXPECT_EQ(h.counts[kLatencyBoundsUs.size()], 2u);
}

TEST(PrometheusTest, EmptySnapshotFollowsTheFormat) {
  const std::string text = RenderPrometheus(MetricsSnapshot{});
  const Exposition e = ParseExposition(text);
  EXPECT_TRUE(e.problems.empty()) << ::testing::PrintToString(e.problems) << "\n" << text;
  EXPECT_EQ(e.types.at("cachet_requests_total"), "counter");
  EXPECT_EQ(e.types.at("cachet_request_duration_seconds"), "histogram");
  EXPECT_EQ(e.types.at("cachet_entries"), "gauge");
  // Nothing counted yet: no series of the labelled families.
  EXPECT_EQ(text.find("cachet_requests_total{"), std::string::npos) << text;
  EXPECT_EQ(text.find("cachet_request_duration_seconds_bucket"), std::string::npos) << text;
}

TEST(PrometheusTest, RequestsAreCountedByOpAndStatusName) {
  MetricsSnapshot s;
  s.requests.Count(kGet, kOk, 5us);
  s.requests.Count(kGet, kNotFound, 5us);
  s.requests.Count(kGet, kNotFound, 5us);
  s.requests.Count(kInvalidOpRow, 13, 5us);  // BAD_REQUEST
  const Exposition e = ParseExposition(RenderPrometheus(s));
  ASSERT_TRUE(e.problems.empty()) << ::testing::PrintToString(e.problems);
  EXPECT_EQ(e.Value("cachet_requests_total{op=\"GET\",status=\"OK\"}", -1), 1);
  EXPECT_EQ(e.Value("cachet_requests_total{op=\"GET\",status=\"NOT_FOUND\"}", -1), 2);
  EXPECT_EQ(e.Value("cachet_requests_total{op=\"INVALID\",status=\"BAD_REQUEST\"}", -1), 1);
  EXPECT_FALSE(e.Has("cachet_requests_total{op=\"SET\",status=\"OK\"}"));
}

TEST(PrometheusTest, HistogramBucketsAreCumulativeAndEndWithTheCount) {
  MetricsSnapshot s;
  s.requests.Count(kSet, kOk, 7us);
  s.requests.Count(kSet, kOk, 30us);
  s.requests.Count(kSet, kOk, 30us);
  s.requests.Count(kSet, kOk, 2s);
  const Exposition e = ParseExposition(RenderPrometheus(s));
  ASSERT_TRUE(e.problems.empty()) << ::testing::PrintToString(e.problems);
  EXPECT_EQ(e.Value(Bucket("SET", "0.00001"), -1), 1);
  EXPECT_EQ(e.Value(Bucket("SET", "0.000025"), -1), 1);
  EXPECT_EQ(e.Value(Bucket("SET", "0.00005"), -1), 3);
  EXPECT_EQ(e.Value(Bucket("SET", "1"), -1), 3);
  EXPECT_EQ(e.Value(Bucket("SET", "+Inf"), -1), 4);
  EXPECT_EQ(e.Value("cachet_request_duration_seconds_count{op=\"SET\"}", -1), 4);
  EXPECT_DOUBLE_EQ(e.Value("cachet_request_duration_seconds_sum{op=\"SET\"}", -1), 2.000067);
  EXPECT_FALSE(e.Has(Bucket("GET", "+Inf")));
}

TEST(PrometheusTest, SumIsWrittenInExactSeconds) {
  MetricsSnapshot s;
  s.requests.Count(kGet, kOk, 1s + 5ns);
  const std::string text = RenderPrometheus(s);
  EXPECT_NE(text.find("cachet_request_duration_seconds_sum{op=\"GET\"} 1.000000005\n"), std::string::npos) << text;
}

TEST(PrometheusTest, CacheFiguresAreCountersAndGauges) {
  MetricsSnapshot s;
  s.hits = 7;
  s.misses = 3;
  s.evictions = 2;
  s.entries = 40;
  s.bytes = 4096;
  s.connected_clients = 5;
  s.refused_connections = 1;
  s.uptime_ms = 1500;
  const Exposition e = ParseExposition(RenderPrometheus(s));
  ASSERT_TRUE(e.problems.empty()) << ::testing::PrintToString(e.problems);
  EXPECT_EQ(e.types.at("cachet_hits_total"), "counter");
  EXPECT_EQ(e.Value("cachet_hits_total", -1), 7);
  EXPECT_EQ(e.Value("cachet_misses_total", -1), 3);
  EXPECT_EQ(e.Value("cachet_evictions_total", -1), 2);
  EXPECT_EQ(e.types.at("cachet_entries"), "gauge");
  EXPECT_EQ(e.Value("cachet_entries", -1), 40);
  EXPECT_EQ(e.Value("cachet_bytes", -1), 4096);
  EXPECT_EQ(e.Value("cachet_connected_clients", -1), 5);
  EXPECT_EQ(e.Value("cachet_refused_connections_total", -1), 1);
  EXPECT_DOUBLE_EQ(e.Value("cachet_uptime_seconds", -1), 1.5);
}

TEST(PrometheusTest, LimiterAndClusterFamiliesOnlyWhenConfigured) {
  MetricsSnapshot s;
  std::string text = RenderPrometheus(s);
  EXPECT_EQ(text.find("cachet_ratelimit"), std::string::npos);
  EXPECT_EQ(text.find("cachet_cluster"), std::string::npos);

  s.limiter = true;
  s.requests.CountDecision("free", true);
  s.requests.CountDecision("free", false);
  s.requests.CountDecision("free", false);
  s.requests.CountDecision("pro", true);
  s.ratelimit_capacity = 1024;
  s.cluster = true;
  s.cluster_members = 3;
  s.cluster_follower_lag = {{"n2", 4}, {"n3", -1}};
  text = RenderPrometheus(s);
  const Exposition e = ParseExposition(text);
  ASSERT_TRUE(e.problems.empty()) << ::testing::PrintToString(e.problems) << text;
  EXPECT_EQ(e.Value("cachet_ratelimit_decisions_total{tier=\"free\",result=\"allowed\"}", -1), 1);
  EXPECT_EQ(e.Value("cachet_ratelimit_decisions_total{tier=\"free\",result=\"denied\"}", -1), 2);
  EXPECT_EQ(e.Value("cachet_ratelimit_decisions_total{tier=\"pro\",result=\"allowed\"}", -1), 1);
  EXPECT_FALSE(e.Has("cachet_ratelimit_decisions_total{tier=\"pro\",result=\"denied\"}"));
  EXPECT_EQ(e.Value("cachet_ratelimit_capacity", -1), 1024);
  EXPECT_EQ(e.Value("cachet_cluster_members", -1), 3);
  EXPECT_EQ(e.Value("cachet_cluster_replication_lag_entries{follower=\"n2\"}", -99), 4);
  EXPECT_EQ(e.Value("cachet_cluster_replication_lag_entries{follower=\"n3\"}", -99), -1);
}

TEST(PrometheusTest, LabelValuesAreEscaped) {
  EXPECT_EQ(EscapeLabelValue("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  MetricsSnapshot s;
  s.limiter = true;
  s.requests.CountDecision("we\"ird\\tier\n", true);
  const std::string text = RenderPrometheus(s);
  const Exposition e = ParseExposition(text);
  ASSERT_TRUE(e.problems.empty()) << ::testing::PrintToString(e.problems) << text;
  EXPECT_EQ(e.Value("cachet_ratelimit_decisions_total{tier=\"we\\\"ird\\\\tier\\n\",result=\"allowed\"}", -1), 1)
      << text;
}

TEST(PrometheusTest, EveryOpRowAndStatusColumnHasAName) {
  EXPECT_STREQ(OpRowName(0), "PING");
  EXPECT_STREQ(OpRowName(kGet), "GET");
  EXPECT_STREQ(OpRowName(kInvalidOpRow), "INVALID");
  EXPECT_STREQ(StatusColumnName(kNotFound), "NOT_FOUND");
  EXPECT_STREQ(StatusColumnName(kStatusColumns - 1), "BUSY");
  for (size_t op = 0; op < kOpRows; ++op) EXPECT_TRUE(testing::IsMetricName(OpRowName(op))) << op;
}

}  // namespace
}  // namespace cachet::daemon
