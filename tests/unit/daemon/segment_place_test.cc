// OpenSegment at a start: it takes the same-host write grant back from
// every segment it finds, the one it re-attaches as well as one it drops,
// so a client still mapping a dropped segment cannot write where nobody
// will read (the client is this test, holding its own mapping).
#include "segment_place.h"

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <gtest/gtest.h>

#include <sstream>

#include "test_util.h"

namespace cachet::daemon {
namespace {

class SegmentPlaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CacheOptions o;
    o.capacity_bytes = 8 << 20;
    auto made = Cache::CreateNamed(name_, o);
    ASSERT_TRUE(made.has_value()) << made.error().ToString();
    client_view_ = std::move(*made);
    client_view_->SetClientWrites(true);
    client_view_->Heartbeat();
    ASSERT_TRUE(client_view_->GuestSet("before", "1").has_value());
    config_.segment = name_;
    config_.huge_pages = HugePages::kOff;
  }
  void TearDown() override { (void)Cache::RemoveNamed(name_); }

  const std::string name_ = testing::UniqueSegmentName("place");
  std::unique_ptr<Cache> client_view_;  // what a same-host client maps
  DaemonConfig config_;
  std::ostringstream out_;
  spdlog::logger log_{"test", std::make_shared<spdlog::sinks::ostream_sink_st>(out_)};
};

TEST_F(SegmentPlaceTest, ARebuildTakesTheGrantBackFromTheSegmentItDrops) {
  config_.capacity_bytes = 16 << 20;  // other options: rebuilt
  auto opened = OpenSegment(config_, log_);
  ASSERT_TRUE(opened.has_value()) << opened.error().ToString();
  EXPECT_NE(out_.str().find("rebuilding it empty (generation 2)"), std::string::npos) << out_.str();
  EXPECT_FALSE(client_view_->ClientWritesGranted());
  auto refused = client_view_->GuestSet("after", "lost");
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ((*opened)->Stats().generation, 2u);
  EXPECT_FALSE((*opened)->ClientWritesGranted());  // until the server decides
}

TEST_F(SegmentPlaceTest, AWarmRestartTakesTheGrantBackUntilTheServerDecides) {
  config_.capacity_bytes = 8 << 20;  // the same options: re-attached
  auto opened = OpenSegment(config_, log_);
  ASSERT_TRUE(opened.has_value()) << opened.error().ToString();
  EXPECT_NE(out_.str().find("warm restart: re-attached"), std::string::npos) << out_.str();
  EXPECT_EQ((*opened)->Get("before"), "1");
  EXPECT_FALSE(client_view_->ClientWritesGranted());
  EXPECT_FALSE(client_view_->GuestSet("k", "v").has_value());
}

}  // namespace
}  // namespace cachet::daemon
