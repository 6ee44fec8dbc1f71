// FaultProxy between real TCP peers on loopback: an echo server of the
// test's own, and a real cachetd with cachet::Client.
#include "cluster/fault_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <string>
#include <thread>

#include "cachet/client.h"
#include "integration/daemon_process.h"
#include "test_util.h"

namespace cachet::testing {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// Echoes every byte back on each connection, on loopback, until destroyed.
class EchoServer {
 public:
  EchoServer() {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(listen_fd_, 16) != 0 ||
        getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "echo server: " << std::strerror(errno);
    }
    port_ = ntohs(addr.sin_port);
    stop_fd_ = eventfd(0, EFD_CLOEXEC);
    thread_ = std::thread([this] { Serve(); });
  }
  ~EchoServer() {
    const uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof one);
    thread_.join();
    for (const auto& [fd, pending] : connections_) close(fd);
    close(listen_fd_);
    close(stop_fd_);
  }
  uint16_t port() const { return port_; }

 private:
  void Serve() {
    for (;;) {
      std::vector<pollfd> fds = {{stop_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}};
      for (const auto& [fd, pending] : connections_) {
        fds.push_back({fd, static_cast<short>(pending.empty() ? POLLIN : POLLOUT), 0});
      }
      if (poll(fds.data(), fds.size(), -1) < 0) continue;
      if (fds[0].revents) return;
      if (fds[1].revents & POLLIN) {
        const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) connections_[fd];
      }
      for (size_t i = 2; i < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        std::string& pending = connections_[fds[i].fd];
        if (pending.empty()) {
          char buffer[16384];
          const ssize_t n = recv(fds[i].fd, buffer, sizeof buffer, 0);
          if (n > 0) {
            pending.assign(buffer, static_cast<size_t>(n));
          } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            close(fds[i].fd);
            connections_.erase(fds[i].fd);
          }
        } else {
          const ssize_t n = send(fds[i].fd, pending.data(), pending.size(), MSG_NOSIGNAL);
          if (n > 0) {
            pending.erase(0, static_cast<size_t>(n));
          } else if (errno != EAGAIN && errno != EINTR) {
            close(fds[i].fd);
            connections_.erase(fds[i].fd);
          }
        }
      }
    }
  }

  int listen_fd_ = -1, stop_fd_ = -1;
  uint16_t port_ = 0;
  std::map<int, std::string> connections_;  // fd -> bytes to echo (the server's thread only)
  std::thread thread_;
};

// A blocking TCP client with a receive timeout.
class TcpClient {
 public:
  explicit TcpClient(uint16_t port, milliseconds timeout = milliseconds(5000)) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    SetReceiveTimeout(timeout);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    connect_errno_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 ? 0 : errno;
  }
  ~TcpClient() { close(fd_); }
  int connect_errno() const { return connect_errno_; }
  void SetReceiveTimeout(milliseconds timeout) {
    timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }

  bool Send(const std::string& data) {
    size_t sent = 0;
    while (sent < data.size()) {
      const ssize_t n = send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }
  // Reads exactly `n` bytes. On failure returns what came and sets `*error`
  // to the errno (EAGAIN for the timeout) or 0 for an end of stream.
  std::string Receive(size_t n, int* error = nullptr) {
    std::string out;
    while (out.size() < n) {
      char buffer[65536];
      const ssize_t got = recv(fd_, buffer, std::min(sizeof buffer, n - out.size()), 0);
      if (got <= 0) {
        if (error) *error = got == 0 ? 0 : errno;
        return out;
      }
      out.append(buffer, static_cast<size_t>(got));
    }
    if (error) *error = -1;
    return out;
  }

 private:
  int fd_ = -1;
  int connect_errno_ = 0;
};

std::unique_ptr<FaultProxy> StartProxy(uint16_t target_port) {
  auto proxy = FaultProxy::Start("127.0.0.1", target_port);
  EXPECT_TRUE(proxy) << proxy.error().ToString();
  return proxy ? std::move(*proxy) : nullptr;
}

class FaultProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    proxy_ = StartProxy(echo_.port());
    ASSERT_NE(proxy_, nullptr);
    ASSERT_NE(proxy_->port(), 0);
    ASSERT_NE(proxy_->port(), echo_.port());
  }
  EchoServer echo_;
  std::unique_ptr<FaultProxy> proxy_;
};

TEST_F(FaultProxyTest, PassesBytesThroughBothWays) {
  TcpClient client(proxy_->port());
  ASSERT_EQ(client.connect_errno(), 0);
  ASSERT_TRUE(client.Send("hello"));
  EXPECT_EQ(client.Receive(5), "hello");
  // More than the proxy buffers in one direction: backpressure, not loss.
  std::string big(3 * FaultProxy::kMaxQueued + 17, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 23);
  std::thread sender([&] { EXPECT_TRUE(client.Send(big)); });
  const std::string back = client.Receive(big.size());
  sender.join();
  EXPECT_TRUE(back == big) << "got " << back.size() << " bytes of " << big.size();
  const uint64_t total = 5 + big.size();
  EXPECT_TRUE(WaitUntil([&] { return proxy_->bytes_forwarded(FaultProxy::Direction::kToClient) == total; }));
  EXPECT_EQ(proxy_->bytes_forwarded(FaultProxy::Direction::kToTarget), total);
  EXPECT_EQ(proxy_->bytes_dropped(), 0u);
  EXPECT_EQ(proxy_->accepted(), 1u);
  EXPECT_EQ(proxy_->connections(), 1u);
  EXPECT_EQ(proxy_->endpoint(), "tcp://127.0.0.1:" + std::to_string(proxy_->port()));
}

TEST_F(FaultProxyTest, ADelayHoldsEachChunkAtLeastThatLongInOrder) {
  TcpClient client(proxy_->port());
  ASSERT_EQ(client.connect_errno(), 0);
  proxy_->SetDelay(FaultProxy::Direction::kToTarget, milliseconds(150));
  auto start = Clock::now();
  ASSERT_TRUE(client.Send("a"));
  ASSERT_TRUE(client.Send("b"));
  // A chunk takes the delay in force when the proxy reads it, so "a" and "b"
  // must have been read before the delay is lifted.
  ASSERT_TRUE(WaitUntil([&] { return proxy_->bytes_received(FaultProxy::Direction::kToTarget) == 2; }));
  proxy_->SetDelay(FaultProxy::Direction::kToTarget, milliseconds(0));  // "c" waits behind "a" and "b"
  ASSERT_TRUE(client.Send("c"));
  EXPECT_EQ(client.Receive(3), "abc");
  EXPECT_GE(Clock::now() - start, milliseconds(150));

  proxy_->SetDelay(milliseconds(100));  // both ways: a round trip takes 200 ms or more
  start = Clock::now();
  ASSERT_TRUE(client.Send("xyz"));
  EXPECT_EQ(client.Receive(3), "xyz");
  EXPECT_GE(Clock::now() - start, milliseconds(200));

  proxy_->PassThrough();
  ASSERT_TRUE(client.Send("!"));
  EXPECT_EQ(client.Receive(1), "!");
}

TEST_F(FaultProxyTest, ABlackholeKeepsTheConnectionButForwardsNothing) {
  // The echoes that must come get the default 5 s (a loaded machine under
  // ThreadSanitizer); only the read that must time out waits 300 ms.
  TcpClient client(proxy_->port());
  ASSERT_EQ(client.connect_errno(), 0);
  ASSERT_TRUE(client.Send("1"));
  ASSERT_EQ(client.Receive(1), "1");
  proxy_->SetDrop(true);
  ASSERT_TRUE(client.Send("lost"));
  int error = 0;
  client.SetReceiveTimeout(milliseconds(300));
  EXPECT_EQ(client.Receive(1, &error), "");
  EXPECT_TRUE(error == EAGAIN || error == EWOULDBLOCK) << "read ended with errno " << error << " instead of timing out";
  client.SetReceiveTimeout(milliseconds(5000));
  EXPECT_TRUE(WaitUntil([&] { return proxy_->bytes_dropped() == 4; })) << proxy_->bytes_dropped();
  EXPECT_EQ(proxy_->connections(), 1u);

  proxy_->PassThrough();
  ASSERT_TRUE(client.Send("back"));
  EXPECT_EQ(client.Receive(4), "back");  // the dropped bytes stay dropped
  EXPECT_EQ(proxy_->bytes_forwarded(FaultProxy::Direction::kToTarget), 5u);
}

TEST_F(FaultProxyTest, ResetAbortsEveryConnectionAndNewOnesWork) {
  TcpClient first(proxy_->port()), second(proxy_->port());
  ASSERT_EQ(first.connect_errno(), 0);
  ASSERT_EQ(second.connect_errno(), 0);
  ASSERT_TRUE(first.Send("x"));
  ASSERT_EQ(first.Receive(1), "x");
  ASSERT_TRUE(second.Send("y"));
  ASSERT_EQ(second.Receive(1), "y");
  ASSERT_EQ(proxy_->connections(), 2u);
  proxy_->ResetConnections();
  EXPECT_EQ(proxy_->connections(), 0u);
  for (TcpClient* client : {&first, &second}) {
    int error = -1;
    EXPECT_EQ(client->Receive(1, &error), "");
    EXPECT_EQ(error, ECONNRESET) << std::strerror(error);
  }
  TcpClient third(proxy_->port());
  ASSERT_EQ(third.connect_errno(), 0);
  ASSERT_TRUE(third.Send("z"));
  EXPECT_EQ(third.Receive(1), "z");
}

TEST_F(FaultProxyTest, RefusedConnectionsGetConnectionRefusedUntilAllowed) {
  TcpClient open_before(proxy_->port());
  ASSERT_EQ(open_before.connect_errno(), 0);
  const uint16_t port = proxy_->port();
  proxy_->SetRefuse(true);
  {
    TcpClient refused(port);
    EXPECT_EQ(refused.connect_errno(), ECONNREFUSED) << std::strerror(refused.connect_errno());
  }
  // Connections already open keep working.
  ASSERT_TRUE(open_before.Send("a"));
  EXPECT_EQ(open_before.Receive(1), "a");
  proxy_->SetRefuse(false);
  EXPECT_EQ(proxy_->port(), port);
  TcpClient after(port);
  ASSERT_EQ(after.connect_errno(), 0);
  ASSERT_TRUE(after.Send("b"));
  EXPECT_EQ(after.Receive(1), "b");
}

TEST_F(FaultProxyTest, AnUnreachableTargetResetsTheClient) {
  uint16_t closed_port = 0;
  {
    EchoServer gone;
    closed_port = gone.port();
  }
  auto proxy = StartProxy(closed_port);
  ASSERT_NE(proxy, nullptr);
  TcpClient client(proxy->port());
  ASSERT_EQ(client.connect_errno(), 0);  // the proxy accepts, then cannot reach the target
  int error = -1;
  EXPECT_EQ(client.Receive(1, &error), "");
  EXPECT_EQ(error, ECONNRESET) << std::strerror(error);
}

TEST_F(FaultProxyTest, TheDestructorReturnsWithConnectionsOpen) {
  TcpClient idle(proxy_->port()), delayed(proxy_->port()), blackholed(proxy_->port());
  ASSERT_TRUE(WaitUntil([&] { return proxy_->connections() == 3; }));
  proxy_->SetDelay(milliseconds(60'000));
  ASSERT_TRUE(delayed.Send("held for a minute"));
  proxy_->SetDrop(true);
  ASSERT_TRUE(blackholed.Send("gone"));
  proxy_.reset();
  // Every client sees its connection end (reset), none hangs.
  for (TcpClient* client : {&idle, &delayed, &blackholed}) {
    int error = -1;
    EXPECT_EQ(client->Receive(1, &error), "");
    EXPECT_TRUE(error == ECONNRESET || error == 0) << std::strerror(error);
  }
}

TEST_F(FaultProxyTest, RejectsAnAddressThatIsNotIpv4) {
  auto proxy = FaultProxy::Start("localhost", 1);
  ASSERT_FALSE(proxy);
  EXPECT_EQ(proxy.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(proxy.error().message, "not an IPv4 address: 'localhost'");
}

// cachet::Client through the proxy to a real cachetd: a blackhole times
// the client out; pass-through again and it recovers by itself.
TEST(FaultProxyDaemonTest, ClientTimesOutInABlackholeAndRecoversAfter) {
  DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  const std::string tcp = daemon.tcp();
  const uint16_t port = static_cast<uint16_t>(std::stoi(tcp.substr(tcp.rfind(':') + 1)));
  auto proxy = StartProxy(port);
  ASSERT_NE(proxy, nullptr);

  ClientOptions options;
  // Long enough for a sanitizer build on a busy host; every wait below is
  // bounded by it, so the test stays a few seconds.
  options.timeout = milliseconds(1000);
  options.retries = 0;
  auto client = Client::Connect(proxy->endpoint(), options);
  ASSERT_TRUE(client) << client.error().ToString();
  auto first = (*client)->Set("k", "v1");
  ASSERT_TRUE(first) << first.error().ToString();

  proxy->SetDrop(true);
  auto got = (*client)->Get("k");
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, ErrorCode::kTimeout) << got.error().ToString();
  // After a timeout the client rebuilds its socket; in the blackhole the
  // new connection's handshake never completes: unreachable.
  auto set = (*client)->Set("k", "v2");
  ASSERT_FALSE(set);
  EXPECT_EQ(set.error().code, ErrorCode::kUnavailable) << set.error().ToString();
  EXPECT_GT(proxy->bytes_dropped(), 0u);

  proxy->PassThrough();
  Result<std::optional<std::string>> after = MakeError(ErrorCode::kInternal, "not read");
  EXPECT_TRUE(
      WaitUntil([&] { return (after = (*client)->Get("k")).has_value(); }, std::chrono::seconds(10), milliseconds(50)))
      << after.error().ToString();
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->value_or("(miss)"), "v1");  // the write sent into the blackhole never arrived
  ASSERT_TRUE((*client)->Set("k", "v3"));
  EXPECT_EQ((*client)->Get("k")->value_or("(miss)"), "v3");
}

}  // namespace
}  // namespace cachet::testing
