// Clients that send requests and never read the replies: cachetd keeps a
// bounded backlog of unread replies (per connection and in total), drops
// and counts the rest, and keeps answering everyone else.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <fstream>
#include <thread>
#include <zmq.hpp>

#include "cachet/client.h"
#include "daemon_process.h"
#include "raw_wire.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;

constexpr size_t kValueBytes = 60000;
constexpr int64_t kMiB = 1 << 20;
// Resident memory a bounded backlog may still add. Under AddressSanitizer
// freed reply buffers sit in its quarantine (256 MiB at most) before reuse,
// so RSS says less there; the backlog figures below stay exact either way.
#if defined(__SANITIZE_ADDRESS__)
constexpr int64_t kAllocatorSlack = 256 * kMiB;
#else
constexpr int64_t kAllocatorSlack = 0;
#endif

// Resident memory of a process, from /proc/<pid>/status (VmRSS, in kB).
int64_t ResidentBytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  ADD_FAILURE() << "no VmRSS for pid " << pid;
  return -1;
}

// A raw DEALER that sends GETs and reads nothing until told to; it takes
// few replies off the wire itself, so the daemon's queue is what fills.
class Flooder {
 public:
  Flooder(zmq::context_t& context, const std::string& endpoint) : socket_(context, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::rcvhwm, 2);
    socket_.set(zmq::sockopt::rcvbuf, 64 << 10);
    socket_.connect(endpoint);
  }

  void SendGets(int count, const std::string& key) {
    for (int i = 0; i < count; ++i) {
      const std::string request = testing::RawRequest(++sent_, "GET", {key});
      ASSERT_TRUE(socket_.send(zmq::buffer(request), zmq::send_flags::none));
    }
  }

  // Reads replies until `expected` arrived or none comes for `idle`; each
  // must be an OK GET of kValueBytes with an id above the previous one.
  int64_t ReadReplies(int64_t expected, milliseconds idle = milliseconds(5000)) {
    int64_t received = 0;
    while (received < expected) {
      zmq::pollitem_t in{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&in, 1, idle) == 0) break;
      zmq::message_t frame;
      while (received < expected && socket_.recv(frame, zmq::recv_flags::dontwait)) {
        const testing::RawReply r = testing::ParseRawReply(frame);
        EXPECT_EQ(r.status, 0u);
        EXPECT_EQ(r.payload_bytes, kValueBytes);
        EXPECT_GT(r.id, last_id_);
        last_id_ = r.id;
        ++received;
      }
    }
    return received;
  }

  uint64_t sent() const { return sent_; }

 private:
  zmq::socket_t socket_;
  uint64_t sent_ = 0;
  uint64_t last_id_ = 0;
};

class BackpressureTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> args) {
    daemon_ = std::make_unique<testing::DaemonProcess>(std::move(args));
    ASSERT_TRUE(daemon_->Start());
    ClientOptions options;
    options.retries = 0;  // every call is one request: the test counts them
    options.timeout = milliseconds(3000);
    auto client = Client::Connect(daemon_->tcp(), options);
    ASSERT_TRUE(client.has_value());
    client_ = std::move(*client);
    ASSERT_TRUE(Call(client_->Set("big", std::string(kValueBytes, 'x'))));
  }

  // Counts a request of the test's own client; false (with a failure) if it failed.
  template <typename R>
  bool Call(const R& result) {
    ++calls_;
    if (!result) ADD_FAILURE() << result.error().ToString();
    return result.has_value();
  }

  int64_t Stat(const std::string& name) {
    ++calls_;
    return testing::StatOf(*client_, name);
  }

  // Serves the test's own client (a GET of the large value, which must
  // succeed) until the daemon has handled `flood` requests besides the test's.
  void ServeUntilHandled(int64_t flood) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (;;) {
      auto value = client_->Get("big");
      ASSERT_TRUE(Call(value));
      ASSERT_EQ(value->value_or("").size(), kValueBytes);
      if (Stat("requests") >= flood + calls_) return;
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the daemon did not handle the flood in 60 s";
    }
  }

  // Polls (with a deadline) until every reply has left the daemon.
  bool BacklogEmpties() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      if (Stat("reply_backlog_bytes") == 0) return true;
      std::this_thread::sleep_for(milliseconds(10));
    }
    return false;
  }

  std::unique_ptr<testing::DaemonProcess> daemon_;
  std::unique_ptr<Client> client_;
  int64_t calls_ = 0;
  zmq::context_t context_{1};
};

TEST_F(BackpressureTest, ClientThatNeverReadsIsCappedAndItsDroppedRepliesCounted) {
  Start({"--reply-backlog-per-client", "4MiB"});
  Flooder flooder(context_, daemon_->ipc());
  flooder.SendGets(1, "big");  // the connection exists and its first reply is out
  ServeUntilHandled(1);
  const int64_t rss_before = ResidentBytes(daemon_->pid());

  // 4,000 GETs of 60 KB are 240 MB of replies; the flooder reads none.
  constexpr int kGets = 4000;
  flooder.SendGets(kGets, "big");
  ServeUntilHandled(1 + kGets);  // the other client is answered all along
  const int64_t rss_flooded = ResidentBytes(daemon_->pid());
  const int64_t backlog = Stat("reply_backlog_bytes");
  const int64_t dropped = Stat("dropped_replies");
  std::printf(
      "cachetd VmRSS %lld KiB before, %lld KiB with %d unread GETs of %zu bytes; backlog %lld bytes, "
      "%lld replies dropped\n",
      static_cast<long long>(rss_before >> 10), static_cast<long long>(rss_flooded >> 10), kGets, kValueBytes,
      static_cast<long long>(backlog), static_cast<long long>(dropped));
  EXPECT_LT(rss_flooded - rss_before, 24 * kMiB + kAllocatorSlack);
  EXPECT_LE(backlog, 4 * kMiB + static_cast<int64_t>(kValueBytes) + 256);
  EXPECT_GT(dropped, 0);

  // Every reply is either delivered, in order, or counted as dropped.
  const int64_t received = flooder.ReadReplies(1 + kGets - dropped);
  EXPECT_EQ(received + dropped, 1 + kGets);
  EXPECT_EQ(flooder.ReadReplies(1, milliseconds(200)), 0) << "more replies than requests not dropped";
  EXPECT_TRUE(BacklogEmpties());
  EXPECT_EQ(Stat("dropped_replies"), dropped);
  EXPECT_EQ(daemon_->Stop(), 0);
}

TEST_F(BackpressureTest, TotalBacklogBoundsManyClientsThatNeverRead) {
  Start({"--reply-backlog-per-client", "4MiB", "--reply-backlog-total", "8MiB"});
  constexpr int kFlooders = 4;
  constexpr int kGets = 500;  // 30 MB each
  std::vector<std::unique_ptr<Flooder>> flooders;
  for (int i = 0; i < kFlooders; ++i) flooders.push_back(std::make_unique<Flooder>(context_, daemon_->tcp()));
  const int64_t rss_before = ResidentBytes(daemon_->pid());
  for (auto& f : flooders) f->SendGets(kGets, "big");
  ServeUntilHandled(kFlooders * kGets);
  const int64_t rss_flooded = ResidentBytes(daemon_->pid());
  const int64_t backlog = Stat("reply_backlog_bytes");
  // The total plus at most one reply per connection that owed nothing.
  EXPECT_LE(backlog, 8 * kMiB + (kFlooders + 1) * static_cast<int64_t>(kValueBytes + 256));
  EXPECT_LT(rss_flooded - rss_before, 32 * kMiB + kAllocatorSlack);
  const int64_t dropped = Stat("dropped_replies");
  int64_t received = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (received < kFlooders * kGets - dropped && std::chrono::steady_clock::now() < deadline) {
    for (auto& f : flooders) received += f->ReadReplies(kGets, milliseconds(20));
  }
  EXPECT_EQ(received + dropped, kFlooders * kGets);
  EXPECT_TRUE(BacklogEmpties());
}

// A connection that sends on without taking its replies: once it owes
// max-in-flight replies, further requests are answered BUSY and not run.
TEST_F(BackpressureTest, RequestsBeyondMaxInFlightAreAnsweredBusyAndNotRun) {
  Start({"--max-in-flight", "16", "--reply-backlog-per-client", "64MiB"});
  ASSERT_TRUE(Call(client_->Set("n", "0")));
  zmq::socket_t raw(context_, zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  raw.set(zmq::sockopt::rcvhwm, 2);
  raw.set(zmq::sockopt::rcvbuf, 64 << 10);
  raw.connect(daemon_->ipc());
  // Large GET replies fill the socket buffers, so replies stay owed; each
  // INCR after one is run only if the connection owed fewer than 16.
  constexpr int kPairs = 200;
  uint64_t id = 0;
  for (int i = 0; i < kPairs; ++i) {
    ASSERT_TRUE(raw.send(zmq::buffer(testing::RawRequest(++id, "GET", {"big"})), zmq::send_flags::none));
    ASSERT_TRUE(raw.send(zmq::buffer(testing::RawRequest(++id, "INCR", {"n"})), zmq::send_flags::none));
  }
  ServeUntilHandled(2 * kPairs);  // the test's own client is answered all along
  int64_t incr_ok = 0, busy = 0;
  for (uint64_t received = 0; received < id;) {
    zmq::pollitem_t in{static_cast<void*>(raw), 0, ZMQ_POLLIN, 0};
    ASSERT_GT(zmq::poll(&in, 1, milliseconds(5000)), 0) << "only " << received << " of " << id << " replies came";
    zmq::message_t frame;
    while (raw.recv(frame, zmq::recv_flags::dontwait)) {
      const testing::RawReply r = testing::ParseRawReply(frame);
      ++received;
      if (r.status == static_cast<uint64_t>(ErrorCode::kBusy)) {
        ++busy;
      } else {
        ASSERT_EQ(r.status, 0u) << "reply " << r.id;
        if (r.id % 2 == 0) ++incr_ok;
      }
    }
  }
  EXPECT_GT(busy, 0) << "no request met the limit";
  EXPECT_GT(incr_ok, 0);
  EXPECT_EQ(Stat("busy_replies"), busy);
  // Exactly the INCRs that were answered OK ran.
  auto n = client_->Get("n");
  ASSERT_TRUE(Call(n));
  EXPECT_EQ(n->value_or(""), std::to_string(incr_ok));
  // Once the client has read its replies, it is served again.
  ASSERT_TRUE(BacklogEmpties());
  ASSERT_TRUE(raw.send(zmq::buffer(testing::RawRequest(++id, "INCR", {"n"})), zmq::send_flags::none));
  zmq::message_t frame;
  ASSERT_TRUE(raw.recv(frame));
  EXPECT_EQ(testing::ParseRawReply(frame).status, 0u);
  EXPECT_EQ(daemon_->Stop(), 0);
}

// The daemon takes its connections' requests in turn, not in the order they
// came: a request sent after a thousand of another connection's is run
// after a few of them, not after all. The daemon is stopped (SIGSTOP) while
// both clients send, so the flood is queued whole, in the kernel, before
// the quiet request; each request is an INCR of one counter, so the quiet
// request's reply counts the flood's requests run before it.
TEST_F(BackpressureTest, AQuietRequestIsNotQueuedBehindAFloodersBacklog) {
  Start({});
  const std::string& endpoint = daemon_->tcp();
  const int port = std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
  zmq::socket_t flooder(context_, zmq::socket_type::dealer), quiet(context_, zmq::socket_type::dealer);
  uint64_t id = 0;
  for (zmq::socket_t* s : {&flooder, &quiet}) {
    s->set(zmq::sockopt::linger, 0);
    s->set(zmq::sockopt::sndhwm, 0);
    s->connect(endpoint);
    // A first request each: both connections are up before the daemon stops.
    ASSERT_TRUE(s->send(zmq::buffer(testing::RawRequest(++id, "SET", {"f", "0"})), zmq::send_flags::none));
    zmq::message_t frame;
    ASSERT_TRUE(s->recv(frame));
    ASSERT_EQ(testing::ParseRawReply(frame).status, 0u);
  }
  constexpr int kFlood = 1000;  // within max-in-flight's default, so none is refused
  const auto wait_for_unread = [port](int64_t bytes) {
    return testing::WaitUntil([&] { return testing::ReceiveQueued(port) >= bytes; });
  };
  ASSERT_EQ(kill(daemon_->pid(), SIGSTOP), 0);
  // Every thread, ZeroMQ's I/O thread included: one still running would take
  // part of the flood out of the kernel's queue (seen on a loaded machine).
  ASSERT_TRUE(testing::WaitUntil([&] { return testing::AllThreadsStopped(daemon_->pid()); }));
  int64_t flood_bytes = 0;
  for (int i = 0; i < kFlood; ++i) {
    const std::string request = testing::RawRequest(++id, "INCR", {"f"});
    flood_bytes += static_cast<int64_t>(request.size());
    ASSERT_TRUE(flooder.send(zmq::buffer(request), zmq::send_flags::none));
  }
  const bool flood_queued = wait_for_unread(flood_bytes);
  const uint64_t quiet_id = ++id;
  ASSERT_TRUE(quiet.send(zmq::buffer(testing::RawRequest(quiet_id, "INCR", {"f"})), zmq::send_flags::none));
  const bool quiet_queued = wait_for_unread(flood_bytes + 10);
  ASSERT_EQ(kill(daemon_->pid(), SIGCONT), 0);
  ASSERT_TRUE(flood_queued) << "the flood did not reach the daemon's socket";
  ASSERT_TRUE(quiet_queued) << "the quiet request did not reach the daemon's socket";
  zmq::message_t frame;
  ASSERT_TRUE(quiet.recv(frame));
  const testing::RawReply reply = testing::ParseRawReply(frame);
  ASSERT_EQ(reply.status, 0u);
  ASSERT_EQ(reply.id, quiet_id);
  const int64_t ahead = reply.integer - 1;
  std::printf("the quiet request ran after %lld of the %d flood requests queued before it\n",
              static_cast<long long>(ahead), kFlood);
  // In arrival order it would run last. ZeroMQ's I/O thread moves the
  // flooder's bytes in chunks while the quiet connection's turn comes, so
  // a few hundred may go first; a quarter is the bound.
  EXPECT_LT(ahead, kFlood / 4);
  // Every flood request was run and answered.
  int64_t answered = 0;
  while (answered < kFlood) {
    zmq::pollitem_t in{static_cast<void*>(flooder), 0, ZMQ_POLLIN, 0};
    ASSERT_GT(zmq::poll(&in, 1, milliseconds(5000)), 0) << answered << " of " << kFlood << " answered";
    while (answered < kFlood && flooder.recv(frame, zmq::recv_flags::dontwait)) {
      ASSERT_EQ(testing::ParseRawReply(frame).status, 0u);
      ++answered;
    }
  }
  auto f = client_->Get("f");
  ASSERT_TRUE(Call(f));
  EXPECT_EQ(f->value_or(""), std::to_string(kFlood + 1));
  EXPECT_EQ(daemon_->Stop(), 0);
}

TEST(BackpressureConfigTest, BacklogSettingsAreCheckedAtStart) {
  const std::string command =
      std::string(CACHETD_PATH) + " --reply-backlog-per-client 1MiB --reply-backlog-total 512KiB 2>&1";
  FILE* p = popen(command.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[512] = {0};
  const size_t n = fread(buf, 1, sizeof buf - 1, p);
  const int status = pclose(p);
  EXPECT_EQ(WEXITSTATUS(status), 2);
  EXPECT_EQ(std::string(buf, n), "cachetd: reply-backlog-total must be at least reply-backlog-per-client\n");
  for (const char* bad : {"0", "1000001", "-3", "many"}) {
    p = popen((std::string(CACHETD_PATH) + " --max-in-flight " + bad + " 2>&1").c_str(), "r");
    ASSERT_NE(p, nullptr);
    const size_t got = fread(buf, 1, sizeof buf - 1, p);
    EXPECT_EQ(WEXITSTATUS(pclose(p)), 2) << bad;
    EXPECT_NE(std::string(buf, got).find("max-in-flight must be"), std::string::npos) << std::string(buf, got);
  }
}

}  // namespace
}  // namespace cachet
