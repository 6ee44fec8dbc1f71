// Signals in the middle of ZeroMQ calls: a SIGHUP storm on cachetd while a
// client keeps writes in flight, and signals delivered to a client's own
// thread while it waits for replies. Neither side may crash or fail a call.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <thread>
#include <zmq.hpp>

#include "cachet/client.h"
#include "daemon_process.h"
#include "raw_wire.h"
#include "zap_handler.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;

constexpr int kInFlight = 16;

bool Alive(pid_t pid) {
  int status = 0;
  return waitpid(pid, &status, WNOHANG) == 0;
}

TEST(DaemonSignalsTest, SighupStormUnderWriteLoadNeitherKillsTheDaemonNorLosesReplies) {
  const std::string config = "/tmp/" + testing::UniqueSegmentName("hup") + ".conf";
  std::ofstream(config) << "log-level = info\n";
  testing::DaemonProcess daemon({"--config", config});
  ASSERT_TRUE(daemon.Start());

  zmq::context_t context(1);
  zmq::socket_t dealer(context, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(daemon.ipc());

  // 2,000 SIGHUPs, one every millisecond, while 16 SETs stay in flight.
  constexpr int kSignals = 2000;
  std::atomic<bool> storm_done{false};
  std::thread storm([&] {
    for (int i = 0; i < kSignals && Alive(daemon.pid()); ++i) {
      daemon.Hup();
      std::this_thread::sleep_for(milliseconds(1));  // pacing the signals, not waiting for anything
    }
    storm_done = true;
  });

  uint64_t sent = 0, answered = 0, not_ok = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool stalled = false;
  while (!storm_done || answered < sent) {
    while (!storm_done && sent - answered < kInFlight) {
      ++sent;
      const std::string request =
          testing::RawRequest(sent, "SET", {"k" + std::to_string(sent % 64), std::string(100, 'v')});
      ASSERT_TRUE(dealer.send(zmq::buffer(request), zmq::send_flags::none));
    }
    zmq::pollitem_t in{static_cast<void*>(dealer), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&in, 1, milliseconds(2000)) == 0 || std::chrono::steady_clock::now() > deadline) {
      stalled = true;
      break;
    }
    zmq::message_t frame;
    while (dealer.recv(frame, zmq::recv_flags::dontwait)) {
      const testing::RawReply reply = testing::ParseRawReply(frame);
      if (reply.status != 0) ++not_ok;
      ++answered;
    }
  }
  storm.join();
  ASSERT_TRUE(Alive(daemon.pid())) << "cachetd died under the SIGHUP storm; log tail:\n"
                                   << daemon.log().substr(daemon.log().size() > 2000 ? daemon.log().size() - 2000 : 0);
  EXPECT_FALSE(stalled) << sent << " sent, " << answered << " answered";
  EXPECT_EQ(answered, sent);
  EXPECT_EQ(not_ok, 0u);
  EXPECT_GT(sent, 0u);

  // Still serving, and still reloading: a changed log level applies on the next SIGHUP.
  auto client = Client::Connect(daemon.tcp());
  ASSERT_TRUE(client.has_value());
  ASSERT_TRUE((*client)->Ping().has_value());
  EXPECT_GE(testing::StatOf(**client, "reloads"), 1);
  std::ofstream(config) << "log-level = debug\n";
  const size_t mark = daemon.log().size();
  daemon.Hup();
  EXPECT_TRUE(daemon.WaitForLog("reload: log level is now debug", mark)) << daemon.log().substr(mark);
  EXPECT_EQ(daemon.Stop(), 0);
  std::remove(config.c_str());
}

// The main thread's state letter from /proc (R, S, D, Z, ...), or 0 if gone.
char ThreadState(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  const size_t close = line.rfind(')');
  return close == std::string::npos || close + 2 >= line.size() ? 0 : line[close + 2];
}

// True while `sig` is pending for the process (sent, not yet handled).
bool SignalPending(pid_t pid, int sig) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  const uint64_t bit = uint64_t{1} << (sig - 1);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("SigPnd:", 0) == 0 || line.rfind("ShdPnd:", 0) == 0) {
      if (std::stoull(line.substr(line.find(':') + 1), nullptr, 16) & bit) return true;
    }
  }
  return false;
}

TEST(DaemonSignalsTest, SighupWhileTheDaemonReadsItsPolicyAtStartNeitherKillsNorFailsIt) {
  // The policy is a FIFO: cachetd blocks reading it at start, and the test
  // sends SIGHUP exactly then. A service manager's reload can come this early.
  const std::string path = "/tmp/" + testing::UniqueSegmentName("policy");
  const std::string policy = "[tier.regular]\nper_minute = 100/1m sliding_window\n";
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0) << std::strerror(errno);
  testing::DaemonProcess daemon({"--rate-limit-policy", path});
  ASSERT_TRUE(daemon.Launch());
  const pid_t pid = daemon.pid();
  int fd = -1;  // opening for writing succeeds once cachetd has it open for reading
  ASSERT_TRUE(testing::WaitUntil([&] { return (fd = open(path.c_str(), O_WRONLY | O_NONBLOCK)) >= 0; }))
      << "cachetd never opened its policy";
  ASSERT_TRUE(testing::WaitUntil([&] { return ThreadState(pid) == 'S'; })) << "not blocked reading the policy";
  daemon.Hup();
  // Handled (no longer pending) and back to waiting for the policy's bytes,
  // or dead (a zombie until reaped).
  char state = 0;
  ASSERT_TRUE(testing::WaitUntil([&] {
    state = ThreadState(pid);
    return state == 'Z' || state == 0 || (state == 'S' && !SignalPending(pid, SIGHUP));
  }));
  EXPECT_EQ(state, 'S') << "cachetd did not survive the SIGHUP";
  // Later reads (the server's, the reload's) find a plain file in its place.
  std::ofstream(path + ".new") << policy;
  ASSERT_EQ(rename((path + ".new").c_str(), path.c_str()), 0);
  signal(SIGPIPE, SIG_IGN);  // if cachetd died: EPIPE rather than the test's death
  EXPECT_EQ(write(fd, policy.data(), policy.size()), static_cast<ssize_t>(policy.size()));
  close(fd);

  ASSERT_TRUE(daemon.WaitUntilReady());
  // The early SIGHUP is not lost: once serving, cachetd reloads.
  EXPECT_TRUE(daemon.WaitForLog("configuration reloaded")) << daemon.log();
  auto client = Client::Connect(daemon.tcp());
  ASSERT_TRUE(client.has_value());
  EXPECT_TRUE((*client)->Ping().has_value());
  EXPECT_EQ(testing::StatOf(**client, "reloads"), 1);
  EXPECT_EQ(daemon.Stop(), 0);
  std::remove(path.c_str());
}

extern "C" void CountSignal(int) {}

// A handler without SA_RESTART, as many applications install: every
// blocking call of the thread it lands on returns EINTR.
class ClientSignalsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    struct sigaction sa {};
    sa.sa_handler = CountSignal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    ASSERT_EQ(sigaction(SIGUSR1, &sa, &old_), 0);
    ASSERT_TRUE(daemon_.Start());
  }
  void TearDown() override { sigaction(SIGUSR1, &old_, nullptr); }

  // Runs `body` while another thread signals the calling thread every 100 µs.
  template <typename Body>
  void UnderSignals(Body body, std::chrono::microseconds pacing = std::chrono::microseconds(100)) {
    const pthread_t target = pthread_self();
    std::atomic<bool> done{false};
    std::thread pester([&] {
      while (!done) {
        pthread_kill(target, SIGUSR1);
        std::this_thread::sleep_for(pacing);
      }
    });
    body();
    done = true;
    pester.join();
  }

  testing::DaemonProcess daemon_;
  struct sigaction old_ {};
};

TEST_F(ClientSignalsTest, CallsInterruptedBySignalsStillSucceed) {
  ClientOptions options;
  options.retries = 0;  // no retry may hide a failed attempt
  auto client = Client::Connect(daemon_.tcp(), options);
  ASSERT_TRUE(client.has_value());
  constexpr int kCalls = 2000;
  int failures = 0;
  std::string first_error;
  UnderSignals([&] {
    for (int i = 0; i < kCalls; ++i) {
      auto n = (*client)->Incr("signalled");
      if (!n) {
        if (failures++ == 0) first_error = n.error().ToString();
      }
    }
  });
  EXPECT_EQ(failures, 0) << first_error;
  EXPECT_EQ((*client)->Get("signalled").value(), std::to_string(kCalls - failures));
}

// Each new client connects its socket on its first call: zmq_connect, too,
// fails with EINTR when a signal lands in it ("cannot connect to ...:
// Interrupted system call" before it was retried).
TEST_F(ClientSignalsTest, ClientsConnectingUnderSignalsAllSucceed) {
  ClientOptions options;
  options.retries = 0;
  constexpr int kClients = 500;
  int failures = 0;
  std::string first_error;
  UnderSignals(
      [&] {
        for (int i = 0; i < kClients; ++i) {
          auto client = Client::Connect(daemon_.tcp(), options);
          auto n = client ? (*client)->Incr("connected") : Result<int64_t>(tl::unexpected(client.error()));
          if (!n && failures++ == 0) first_error = n.error().ToString();
        }
      },
      std::chrono::microseconds(0));  // as fast as signals go: the window is one connect
  EXPECT_EQ(failures, 0) << first_error;
  auto client = Client::Connect(daemon_.tcp(), options);
  ASSERT_TRUE(client.has_value());
  EXPECT_EQ((*client)->Get("connected").value(), std::to_string(kClients - failures));
}

// cachetd and the gossip limiter watch their sockets' handshakes with
// zmq_socket_monitor, which binds a socket of its own: a signal there made
// cachetd's start fail ("cannot monitor the socket: Interrupted system
// call") when a SIGHUP came while it bound.
TEST_F(ClientSignalsTest, SocketMonitorsStartedUnderSignalsAllStart) {
  zmq::context_t context(1);
  zmq::socket_t watched(context, zmq::socket_type::router);
  constexpr int kMonitors = 300;  // two sockets each, under ZeroMQ's 1,023 (closing is asynchronous)
  int failures = 0;
  std::string first_error;
  UnderSignals(
      [&] {
        for (int i = 0; i < kMonitors; ++i) {
          try {
            zap::SocketMonitor monitor(context);
            auto ok = monitor.Watch(watched, "inproc://signals-monitor-" + std::to_string(i), ZMQ_EVENT_ALL);
            if (!ok && failures++ == 0) first_error = ok.error().ToString();
          } catch (const zmq::error_t& e) {
            if (failures++ == 0) first_error = e.what();
          }
        }
      },
      std::chrono::microseconds(0));  // as fast as signals go: the window is one bind
  EXPECT_EQ(failures, 0) << first_error;
}

TEST_F(ClientSignalsTest, IpcClientWithSharedMemoryReadsSurvivesSignals) {
  ClientOptions options;
  options.retries = 0;
  auto client = Client::Connect(daemon_.ipc(), options);
  ASSERT_TRUE(client.has_value());
  int failures = 0;
  std::string first_error;
  UnderSignals([&] {
    for (int i = 0; i < 1000; ++i) {
      auto stored = (*client)->Set("k" + std::to_string(i % 10), std::to_string(i));
      if (!stored && failures++ == 0) first_error = stored.error().ToString();
      auto read = (*client)->Get("k" + std::to_string(i % 10));
      if (!read && failures++ == 0) first_error = read.error().ToString();
    }
  });
  EXPECT_EQ(failures, 0) << first_error;
  EXPECT_EQ((*client)->Get("k9").value(), "999");
}

}  // namespace
}  // namespace cachet
