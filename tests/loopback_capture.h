// LoopbackCapture: what crosses one tcp port of the loopback device, as
// Debian's tcpdump captures it, for tests that check what is (not) sent in
// clear: curve_test (cachetd's port) and gossip_curve_test (a limiter's
// PUB). Needs root; Unavailable() says why not.
//
//   if (auto why = LoopbackCapture::Unavailable()) GTEST_SKIP() << *why;
//   LoopbackCapture capture(port);
//   ASSERT_TRUE(capture.Started());
//   ... exchange, until capture.size() shows it ...
//   const std::string bytes = capture.Stop();
#pragma once

#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>

#include "child_process.h"
#include "test_util.h"

namespace cachet::testing {

class LoopbackCapture {
 public:
  static std::optional<std::string> Unavailable() {
    if (geteuid() != 0) return "capturing packets needs root";
    if (access(kTcpdump, X_OK) != 0) return "tcpdump is missing (scripts/install-deps.sh installs it)";
    return std::nullopt;
  }

  explicit LoopbackCapture(int port)
      : pcap_("/tmp/" + UniqueSegmentName("cap") + ".pcap"),
        dump_(ChildProcess::Exec(
            {kTcpdump, "-i", "lo", "-U", "-s", "0", "-w", pcap_, "tcp", "port", std::to_string(port)})) {}
  ~LoopbackCapture() {
    if (!stopped_) (void)Stop();
  }
  LoopbackCapture(const LoopbackCapture&) = delete;
  LoopbackCapture& operator=(const LoopbackCapture&) = delete;

  // Waits until tcpdump has written its file's header. Its filter is on
  // about then, but it drops privileges and attaches to the device around
  // that time too: a test repeats its exchange until size() shows it.
  ::testing::AssertionResult Started() {
    if (WaitUntil([&] { return size() > 0; }, std::chrono::seconds(10))) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "tcpdump wrote nothing to " << pcap_ << dump_.err();
  }

  // Bytes captured so far (the file's header included).
  uint64_t size() const {
    std::error_code ignored;
    const auto bytes = std::filesystem::file_size(pcap_, ignored);
    return ignored ? 0 : bytes;
  }

  // Stops tcpdump and returns the capture file's bytes (removed).
  std::string Stop() {
    stopped_ = true;
    dump_.Signal(SIGINT);
    (void)dump_.Wait(0, std::chrono::seconds(10));
    std::ifstream in(pcap_, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::filesystem::remove(pcap_);
    return bytes;
  }

 private:
  static constexpr const char* kTcpdump = "/usr/bin/tcpdump";

  std::string pcap_;
  ChildProcess dump_;
  bool stopped_ = false;
};

}  // namespace cachet::testing
