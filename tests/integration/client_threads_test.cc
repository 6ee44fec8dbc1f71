// A Client shared by threads against a real cachetd. Runs under
// ThreadSanitizer in CI (label "concurrency").
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "cachet/client.h"
#include "daemon_process.h"

namespace cachet {
namespace {

// One Client shared by threads: shared-memory reads run in parallel, socket
// calls serialize inside the client. Runs under ThreadSanitizer in CI.
TEST(ClientThreadsTest, OneClientSharedByThreads) {
  testing::DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  // Every INCR has one attempt, which must be answered: time for a loaded
  // machine under ThreadSanitizer (the default second is not always).
  ClientOptions options;
  options.timeout = std::chrono::seconds(5);
  auto client = Client::Connect(daemon.ipc(), options);
  ASSERT_TRUE(client.has_value());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        const std::string key = "t" + std::to_string(t) + ":" + std::to_string(i % 20);
        if (!(*client)->Set(key, std::to_string(i)).value_or(false)) failures++;
        auto v = (*client)->Get(key);
        if (!v || !*v) failures++;
        if (i % 50 == 0 && !(*client)->Incr("shared").has_value()) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ((*client)->Get("shared").value(), "24");
}

}  // namespace
}  // namespace cachet
