// The client's promises about failures (docs/design.md, "Failures between
// client and daemon"; README, "Using the client library"), against a real
// cachetd that the test suspends (SIGSTOP) or whose replies it loses on a
// link of its own:
//   * a late reply after a timeout is never taken as the next answer;
//   * idempotent ops are retried, INCR/DECR, conditional SETs, RATELIMIT
//     and RELOAD never are (the link counts what the client sent);
//   * same-host clients keep reading through shared memory while the
//     daemon is stopped or killed, and writes fail as values.
#include <gtest/gtest.h>

#include <msgpack.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "cachet/client.h"
#include "daemon_process.h"
#include "process_control.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;
using testing::DaemonProcess;
using testing::Suspended;

// A link between a client and cachetd that forwards every request to the
// daemon and loses the replies `lose(n, op)` picks (n counts requests from
// 1). It records the op of every request the client sent, so a test can tell
// a retried call from one sent once. Requests the daemon answers are applied
// whether or not their reply is lost: what a lost reply on a real network does.
class LossyLink {
 public:
  using LoseRule = std::function<bool(int n, const std::string& op)>;

  LossyLink(const std::string& daemon_endpoint, LoseRule lose) : lose_(std::move(lose)) {
    front_.set(zmq::sockopt::linger, 0);
    back_.set(zmq::sockopt::linger, 0);
    front_.bind("tcp://127.0.0.1:*");
    endpoint_ = front_.get(zmq::sockopt::last_endpoint);
    back_.connect(daemon_endpoint);
    thread_ = std::thread([this] { Run(); });
  }
  ~LossyLink() {
    stop_.store(true);
    thread_.join();
  }

  const std::string& endpoint() const { return endpoint_; }
  std::vector<std::string> ops() const {
    std::lock_guard<std::mutex> lock(mu_);
    return ops_;
  }
  // When each request arrived.
  std::vector<std::chrono::steady_clock::time_point> arrivals() const {
    std::lock_guard<std::mutex> lock(mu_);
    return arrivals_;
  }
  int replies_lost() const { return lost_.load(); }

 private:
  // [version, id, op, ...] or [id, status, payload]: the id and, for a
  // request, the op.
  static bool Parse(const zmq::message_t& frame, bool request, uint64_t* id, std::string* op) {
    try {
      auto handle = msgpack::unpack(static_cast<const char*>(frame.data()), frame.size());
      const msgpack::object& o = handle.get();
      if (o.type != msgpack::type::ARRAY || o.via.array.size < (request ? 3u : 2u)) return false;
      *id = o.via.array.ptr[request ? 1 : 0].as<uint64_t>();
      if (request) *op = o.via.array.ptr[2].as<std::string>();
      return true;
    } catch (const std::exception&) {
      return false;
    }
  }

  void Run() {
    std::map<uint64_t, std::pair<zmq::message_t, bool>> waiting;  // id -> (client identity, lose the reply)
    while (!stop_.load()) {
      zmq::pollitem_t items[] = {{static_cast<void*>(front_), 0, ZMQ_POLLIN, 0},
                                 {static_cast<void*>(back_), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 2, milliseconds(20));
      if (items[0].revents & ZMQ_POLLIN) {
        std::vector<zmq::message_t> frames;
        (void)zmq::recv_multipart(front_, std::back_inserter(frames));
        uint64_t id = 0;
        std::string op;
        if (frames.size() == 2 && Parse(frames[1], true, &id, &op)) {
          int n = 0;
          {
            std::lock_guard<std::mutex> lock(mu_);
            ops_.push_back(op);
            arrivals_.push_back(std::chrono::steady_clock::now());
            n = static_cast<int>(ops_.size());
          }
          waiting[id] = {std::move(frames[0]), lose_(n, op)};
          back_.send(frames[1], zmq::send_flags::none);
        }
      }
      if (items[1].revents & ZMQ_POLLIN) {
        zmq::message_t reply;
        (void)back_.recv(reply);
        uint64_t id = 0;
        std::string unused;
        auto it = Parse(reply, false, &id, &unused) ? waiting.find(id) : waiting.end();
        if (it == waiting.end()) continue;
        if (it->second.second) {
          ++lost_;
        } else {
          front_.send(it->second.first, zmq::send_flags::sndmore);
          front_.send(reply, zmq::send_flags::none);
        }
        waiting.erase(it);
      }
    }
  }

  LoseRule lose_;
  zmq::context_t context_{1};
  zmq::socket_t front_{context_, zmq::socket_type::router};
  zmq::socket_t back_{context_, zmq::socket_type::dealer};
  std::string endpoint_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> lost_{0};
  mutable std::mutex mu_;
  std::vector<std::string> ops_;
  std::vector<std::chrono::steady_clock::time_point> arrivals_;
};

// A day's window (aligned to UTC days): a test on the real clock cannot
// straddle its boundary unless it runs at midnight.
constexpr const char* kPolicy = R"([tier.regular]
per_day = 100/1d fixed_window
)";

class ClientContractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    policy_path_ = "/tmp/" + testing::UniqueSegmentName("policy") + ".ini";
    std::ofstream(policy_path_) << kPolicy;
    daemon_.SetExtraArgs({"--rate-limit-policy", policy_path_});
    ASSERT_TRUE(daemon_.Start());
    auto direct = Client::Connect(daemon_.tcp());
    ASSERT_TRUE(direct.has_value()) << direct.error().ToString();
    direct_ = std::move(*direct);
  }
  void TearDown() override { unlink(policy_path_.c_str()); }

  // A client whose every call goes over `endpoint`'s socket.
  static std::unique_ptr<Client> SocketClient(const std::string& endpoint, milliseconds timeout, int retries) {
    ClientOptions o;
    o.timeout = timeout;
    o.retries = retries;
    o.backoff = milliseconds(1);
    o.shared_memory_reads = false;
    auto c = Client::Connect(endpoint, o);
    EXPECT_TRUE(c.has_value()) << c.error().ToString();
    return c ? std::move(*c) : nullptr;
  }

  int64_t Counter(const std::string& key) {
    auto v = direct_->Get(key);
    EXPECT_TRUE(v.has_value()) << v.error().ToString();
    return v && *v ? std::stoll(**v) : 0;
  }

  DaemonProcess daemon_;
  std::string policy_path_;
  std::unique_ptr<Client> direct_;
};

// --- Retries -------------------------------------------------------------

struct Attempted {
  const char* name;
  bool retried;  // what docs/design.md promises
  std::function<Result<void>(Client&)> call;
  const char* op;  // on the wire
};

template <typename T>
Result<void> Drop(const Result<T>& r) {
  if (!r) return tl::unexpected(r.error());
  return {};
}

TEST_F(ClientContractTest, IdempotentOpsAreRetriedAndConsumingOpsAreSentOnce) {
  ASSERT_TRUE(direct_->Set("k", "v").has_value());
  ASSERT_TRUE(direct_->Set("xx", "v").has_value());
  const std::vector<Attempted> calls = {
      {"GET", true, [](Client& c) { return Drop(c.Get("k")); }, "GET"},
      {"unconditional SET", true, [](Client& c) { return Drop(c.Set("k", "v")); }, "SET"},
      {"DEL", true, [](Client& c) { return Drop(c.Del("absent")); }, "DEL"},
      {"EXISTS", true, [](Client& c) { return Drop(c.Exists("k")); }, "EXISTS"},
      {"EXPIRE", true, [](Client& c) { return Drop(c.Expire("k", std::chrono::hours(1))); }, "EXPIRE"},
      {"TTL", true, [](Client& c) { return Drop(c.Ttl("k")); }, "TTL"},
      {"MGET", true,
       [](Client& c) {
         return Drop(c.MGet({"k", "absent"}));
       },
       "MGET"},
      {"MSET", true,
       [](Client& c) {
         return c.MSet({{"m1", "1"}, {"m2", "2"}});
       },
       "MSET"},
      {"SCAN", true, [](Client& c) { return Drop(c.Scan(0)); }, "SCAN"},
      {"PING", true, [](Client& c) { return c.Ping(); }, "PING"},
      {"STATS", true, [](Client& c) { return Drop(c.Stats()); }, "STATS"},
      {"INCR", false, [](Client& c) { return Drop(c.Incr("n")); }, "INCR"},
      {"DECR", false, [](Client& c) { return Drop(c.Decr("n")); }, "DECR"},
      {"SET NX", false,
       [](Client& c) {
         SetOptions nx;
         nx.condition = SetCondition::kIfAbsent;
         return Drop(c.Set("nx", "1", nx));
       },
       "SET"},
      {"SET XX", false,
       [](Client& c) {
         SetOptions xx;
         xx.condition = SetCondition::kIfPresent;
         return Drop(c.Set("xx", "xx", xx));
       },
       "SET"},
      {"RATELIMIT", false, [](Client& c) { return Drop(c.RateLimit("user", "regular")); }, "RATELIMIT"},
      {"RELOAD", false, [](Client& c) { return c.Reload(); }, "RELOAD"},
  };
  constexpr int kRetries = 2;
  // Every reply lost: each call gives up with TIMEOUT after its attempts.
  // The calls run side by side, each over a link of its own, with a second
  // per attempt: time enough that a loaded machine never turns an attempt
  // into a connection that failed before sending.
  struct Outcome {
    Result<void> result;
    std::vector<std::string> ops;
  };
  std::vector<Outcome> outcomes(calls.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < calls.size(); ++i) {
    threads.emplace_back([&, i] {
      LossyLink link(daemon_.tcp(), [](int, const std::string&) { return true; });
      auto client = SocketClient(link.endpoint(), milliseconds(1000), kRetries);
      if (!client) return;
      outcomes[i].result = calls[i].call(*client);
      outcomes[i].ops = link.ops();
    });
  }
  for (std::thread& t : threads) t.join();
  for (size_t i = 0; i < calls.size(); ++i) {
    SCOPED_TRACE(calls[i].name);
    ASSERT_FALSE(outcomes[i].result.has_value());
    EXPECT_EQ(outcomes[i].result.error().code, ErrorCode::kTimeout) << outcomes[i].result.error().ToString();
    EXPECT_EQ(outcomes[i].ops, std::vector<std::string>(calls[i].retried ? kRetries + 1 : 1, calls[i].op));
  }
  // The daemon applied each consuming op exactly once, although its reply was lost.
  EXPECT_EQ(Counter("n"), 0);  // one INCR, one DECR
  EXPECT_EQ(direct_->Get("nx").value(), std::optional<std::string>("1"));
  EXPECT_EQ(direct_->Get("xx").value(), std::optional<std::string>("xx"));
  auto decision = direct_->RateLimit("user", "regular");
  ASSERT_TRUE(decision.has_value()) << decision.error().ToString();
  EXPECT_EQ(decision->remaining, 98u);  // 100 - the lost one - this one
}

TEST_F(ClientContractTest, ARetryAfterALostReplyGetsTheAnswer) {
  ASSERT_TRUE(direct_->Set("k", "v").has_value());
  // Only the first reply is lost: the second attempt answers.
  LossyLink link(daemon_.tcp(), [](int n, const std::string&) { return n == 1; });
  auto client = SocketClient(link.endpoint(), milliseconds(1000), 2);
  ASSERT_NE(client, nullptr);
  auto v = client->Get("k");
  ASSERT_TRUE(v.has_value()) << v.error().ToString();
  EXPECT_EQ(*v, std::optional<std::string>("v"));
  EXPECT_EQ(link.ops(), (std::vector<std::string>{"GET", "GET"}));
  EXPECT_EQ(link.replies_lost(), 1);
}

TEST_F(ClientContractTest, AnIncrWhoseReplyWasLostIsAppliedOnceAndReportedAsATimeout) {
  LossyLink link(daemon_.tcp(), [](int n, const std::string&) { return n == 2; });
  auto client = SocketClient(link.endpoint(), milliseconds(1000), 2);
  ASSERT_NE(client, nullptr);
  ASSERT_EQ(client->Incr("hits").value(), 1);
  auto lost = client->Incr("hits");
  ASSERT_FALSE(lost.has_value());
  EXPECT_EQ(lost.error().code, ErrorCode::kTimeout);
  EXPECT_EQ(client->Incr("hits").value(), 3);  // the lost one counted once, never twice
  EXPECT_EQ(link.ops(), (std::vector<std::string>{"INCR", "INCR", "INCR"}));
}

// The daemon itself stalls (SIGSTOP) while an INCR is in flight: the client
// gives up after one timeout, not after its retries, and the counter moves
// at most once.
TEST_F(ClientContractTest, AnIncrToAStalledDaemonIsNotRetried) {
  // The INCRs before and after the stall must succeed in their one attempt:
  // a second per attempt, so a loaded machine under sanitizers answers in time.
  auto client = SocketClient(daemon_.tcp(), milliseconds(1000), 4);
  ASSERT_NE(client, nullptr);
  ASSERT_EQ(client->Incr("c").value(), 1);
  Result<int64_t> r;
  std::chrono::steady_clock::duration took{};
  {
    Suspended stalled(daemon_.pid());
    ASSERT_TRUE(stalled.stopped());
    const auto start = std::chrono::steady_clock::now();
    r = client->Incr("c");
    took = std::chrono::steady_clock::now() - start;
  }
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kTimeout) << r.error().ToString();
  // Five attempts would take at least 5 s (each waits its timeout for a
  // reply or for a connection); one takes 1 s.
  EXPECT_LT(took, milliseconds(3000));
  // The stalled INCR is applied once (the daemon read it before the
  // client closed the connection) or not at all, never more.
  ASSERT_TRUE(testing::WaitUntil([&] { return client->Ping().has_value(); }));
  const int64_t after = Counter("c");
  EXPECT_TRUE(after == 1 || after == 2) << after;
  const auto next = client->Incr("c");
  ASSERT_TRUE(next.has_value()) << next.error().ToString();
  EXPECT_TRUE(*next == 2 || *next == 3) << *next;
  EXPECT_LE(Counter("c"), 3);
}

// "Idempotent ops are retried with exponential backoff (2 retries by
// default)": the defaults, then the schedule of the attempts as the link saw
// them arrive, and the bound on the whole call (timeout * attempts + backoff).
TEST_F(ClientContractTest, RetriesFollowAnExponentialBackoffWithinTheirBound) {
  const ClientOptions defaults;
  EXPECT_EQ(defaults.retries, 2);
  EXPECT_EQ(defaults.timeout, milliseconds(1000));
  EXPECT_EQ(defaults.backoff, milliseconds(20));

  LossyLink link(daemon_.tcp(), [](int, const std::string&) { return true; });
  ClientOptions o;
  // Each attempt's timeout also covers connecting its new socket: 500 ms
  // leaves room for that on a loaded machine, where 100 ms sometimes let an
  // attempt time out before its request reached the link.
  o.timeout = milliseconds(500);
  o.retries = 3;
  o.backoff = milliseconds(200);
  o.shared_memory_reads = false;
  auto client = Client::Connect(link.endpoint(), o);
  ASSERT_TRUE(client.has_value());
  const auto start = std::chrono::steady_clock::now();
  auto r = (*client)->Del("k");
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kTimeout);
  const auto at = link.arrivals();
  ASSERT_EQ(at.size(), 4u);
  // Each retry waits out the attempt before it (its timeout counts from
  // before its connection was made, so that part varies), then 200, 400
  // and 800 ms: a constant backoff would leave gaps of about 300 ms.
  for (size_t i = 1; i < at.size(); ++i) {
    EXPECT_GE(at[i] - at[i - 1], o.backoff * (1 << (i - 1))) << "retry " << i;
  }
  // 4 x 500 ms + 1400 ms of backoff; the rest is scheduling slack.
  EXPECT_GE(took, milliseconds(3400));
  EXPECT_LT(took, milliseconds(3400 + 1500));
}

// The reference client discards a reply whose id is not the one it waits
// for (docs/protocol.md), even on a connection that was never reset: a
// peer that answers every request twice, first with the previous request's
// id, is still understood.
TEST(ClientIdTest, AReplyWithAnotherIdIsDiscarded) {
  zmq::context_t context(1);
  zmq::socket_t server(context, zmq::socket_type::router);
  server.set(zmq::sockopt::linger, 0);
  server.bind("tcp://127.0.0.1:*");
  const std::string endpoint = server.get(zmq::sockopt::last_endpoint);
  std::atomic<bool> stop{false};
  std::atomic<int> served{0};
  std::thread peer([&] {
    while (!stop.load()) {
      zmq::pollitem_t item{static_cast<void*>(server), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, milliseconds(20)) == 0) continue;
      std::vector<zmq::message_t> frames;
      (void)zmq::recv_multipart(server, std::back_inserter(frames));
      if (frames.size() != 2) continue;
      auto handle = msgpack::unpack(static_cast<const char*>(frames[1].data()), frames[1].size());
      const uint64_t id = handle.get().via.array.ptr[1].as<uint64_t>();
      for (const uint64_t reply_id : {id - 1, id}) {
        msgpack::sbuffer buf;
        msgpack::packer<msgpack::sbuffer> pk(&buf);
        pk.pack_array(3);
        pk.pack(reply_id);
        pk.pack(0);
        const std::string value = "answer to " + std::to_string(reply_id);
        pk.pack_bin(static_cast<uint32_t>(value.size()));
        pk.pack_bin_body(value.data(), static_cast<uint32_t>(value.size()));
        server.send(zmq::buffer(frames[0].to_string()), zmq::send_flags::sndmore);
        server.send(zmq::buffer(buf.data(), buf.size()), zmq::send_flags::none);
      }
      served.fetch_add(1);
    }
  });
  ClientOptions o;
  o.retries = 0;
  o.shared_memory_reads = false;
  auto client = Client::Connect(endpoint, o);
  ASSERT_TRUE(client.has_value());
  // Ids go 1, 2, 3: each answer is the one for its own request.
  for (uint64_t id = 1; id <= 3; ++id) {
    auto v = (*client)->Get("k");
    ASSERT_TRUE(v.has_value()) << v.error().ToString();
    EXPECT_EQ(*v, std::optional<std::string>("answer to " + std::to_string(id)));
  }
  stop.store(true);
  peer.join();
  EXPECT_EQ(served.load(), 3);
}

// A request is never queued toward a daemon that is not there: an INCR
// that failed with UNAVAILABLE while the daemon was down is not applied when
// it comes back.
TEST_F(ClientContractTest, AnIncrThatFoundNoDaemonIsNeverAppliedLater) {
  const std::string tcp = daemon_.tcp();
  // The INCRs to the running daemon are not retried: each has one attempt,
  // which must not time out on a loaded machine under sanitizers.
  ClientOptions o;
  o.timeout = milliseconds(2000);
  // Over the socket: a same-host write would land in the segment at once,
  // for as long as the dead daemon's heartbeat is fresh (SameHostWritesTest).
  o.shared_memory_writes = false;
  auto over_tcp = Client::Connect(tcp, o);
  auto over_ipc = Client::Connect(daemon_.ipc(), o);
  ASSERT_TRUE(over_tcp.has_value() && over_ipc.has_value());
  ASSERT_EQ((*over_tcp)->Incr("n").value(), 1);
  EXPECT_EQ(daemon_.Kill(), 128 + SIGKILL);
  for (Client* c : {over_tcp->get(), over_ipc->get()}) {
    auto r = c->Incr("n");
    ASSERT_FALSE(r.has_value());
    // UNAVAILABLE, or TIMEOUT when it went out on the dead connection
    // before ZeroMQ saw it close: lost with that connection either way.
    EXPECT_TRUE(r.error().code == ErrorCode::kUnavailable || r.error().code == ErrorCode::kTimeout)
        << r.error().ToString();
  }
  ASSERT_TRUE(daemon_.Start(tcp));
  // Both clients reconnect by themselves; their next INCR is the second one.
  ASSERT_TRUE(testing::WaitUntil([&] { return (*over_tcp)->Ping().has_value(); }));
  ASSERT_TRUE(testing::WaitUntil([&] { return (*over_ipc)->Ping().has_value(); }));
  EXPECT_EQ((*over_ipc)->Incr("n").value(), 2);
  EXPECT_EQ((*over_tcp)->Get("n").value(), std::optional<std::string>("2"));
}

// "Same-host clients notice the new generation within a second and
// re-attach by themselves" (docs/operations.md): also a client that reads
// rarely. It used to look at the clock every 1,024 reads only, so a client
// reading ten times a second kept reading the old, removed segment for
// minutes.
TEST(SegmentCheckTest, ARareReaderNoticesARebuiltSegmentWithinSeconds) {
  DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  auto client = Client::Connect(daemon.ipc());
  ASSERT_TRUE(client.has_value());
  ASSERT_TRUE((*client)->ReadsSharedMemory());
  ASSERT_TRUE((*client)->Set("old", "1").value());
  EXPECT_EQ(daemon.Stop(), 0);
  daemon.SetExtraArgs({"--capacity", "16MiB"});  // another layout: rebuilt empty
  ASSERT_TRUE(daemon.Start());
  ASSERT_NE(daemon.log().find("rebuilding it empty (generation 2)"), std::string::npos) << daemon.log();
  // Ten reads a second: a check a second (plus a failed one while the
  // client reconnects) re-attaches within a few of them.
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(testing::WaitUntil(
      [&] {
        auto v = (*client)->Get("old");
        return v && !*v;
      },
      std::chrono::seconds(5), milliseconds(100)))
      << "still reading the removed segment after 5 s";
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_TRUE((*client)->ReadsSharedMemory());
  ASSERT_TRUE((*client)->Set("new", "2").value());
  EXPECT_EQ((*client)->Get("new").value(), std::optional<std::string>("2"));
}

// --- Late replies ----------------------------------------------------------

// A GET times out while the daemon is stopped; when it resumes, it answers
// that GET late. The client's next call must get its own answer, never the
// late one, on every transport, several times in a row.
TEST_F(ClientContractTest, ALateReplyIsNeverTakenForTheNextAnswer) {
  ASSERT_TRUE(direct_->MSet({{"a", "value of a"}, {"b", "value of b"}}).has_value());
  for (const std::string& endpoint : {daemon_.tcp(), daemon_.ipc()}) {
    SCOPED_TRACE(endpoint);
    // No retries, so every call to the running daemon has one attempt (on a
    // new connection after each timeout): 2 s, time enough under sanitizers.
    auto client = SocketClient(endpoint, milliseconds(2000), 0);
    ASSERT_NE(client, nullptr);
    for (int round = 0; round < 3; ++round) {
      ASSERT_EQ(client->Get("a").value(), std::optional<std::string>("value of a"));
      const int64_t answered = testing::StatOf(*direct_, "requests");
      {
        Suspended stalled(daemon_.pid());
        ASSERT_TRUE(stalled.stopped());
        auto late = client->Get("a");
        ASSERT_FALSE(late.has_value());
        EXPECT_EQ(late.error().code, ErrorCode::kTimeout) << late.error().ToString();
      }
      // Wait until the daemon has answered the stalled GET (its reply is
      // now on its way, or dropped with the closed connection). `requests`
      // counts each STATS too, itself included.
      int polls = 0;
      ASSERT_TRUE(testing::WaitUntil([&] {
        ++polls;
        return testing::StatOf(*direct_, "requests") >= answered + polls + 1;
      })) << "the daemon never answered the stalled GET";
      EXPECT_EQ(client->Get("b").value(), std::optional<std::string>("value of b"));
      EXPECT_EQ(client->Exists("absent").value(), false);
      EXPECT_EQ(client->Get("a").value(), std::optional<std::string>("value of a"));
    }
  }
}

// --- Same-host reads without the daemon ------------------------------------

TEST_F(ClientContractTest, SameHostReadsGoOnWhileTheDaemonIsStoppedOrKilled) {
  ClientOptions o;
  o.timeout = milliseconds(2000);
  o.retries = 0;
  auto connected = Client::Connect(daemon_.ipc(), o);
  ASSERT_TRUE(connected.has_value());
  Client& client = **connected;
  ASSERT_TRUE(client.ReadsSharedMemory());
  SetOptions hour;
  hour.ttl = std::chrono::hours(1);
  ASSERT_TRUE(client.Set("kept", "value", hour).has_value());
  ASSERT_TRUE(client.Set("forever", "too").has_value());

  // Reads for longer than the client's segment check interval (1 s), so
  // the client asks the absent daemon at least once and must not give up
  // its mapping; no single read may wait for a timeout.
  auto read_for_a_while = [&](const char* when, bool try_a_write) {
    SCOPED_TRACE(when);
    const auto start = std::chrono::steady_clock::now();
    milliseconds slowest{0};
    int reads = 0;
    while (std::chrono::steady_clock::now() - start < milliseconds(1300) || reads < 3000) {
      const auto t0 = std::chrono::steady_clock::now();
      auto v = client.Get("kept");
      slowest = std::max(slowest, std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - t0));
      ASSERT_TRUE(v.has_value()) << v.error().ToString();
      ASSERT_EQ(*v, std::optional<std::string>("value"));
      ++reads;
    }
    EXPECT_TRUE(client.ReadsSharedMemory());
    EXPECT_EQ(client.Exists("forever").value(), true);
    EXPECT_EQ(client.Exists("absent").value(), false);
    auto ttl = client.Ttl("kept");
    ASSERT_TRUE(ttl.has_value() && ttl->has_value());
    EXPECT_GT(**ttl, std::chrono::minutes(59));
    EXPECT_EQ(client.Ttl("forever").value(), std::optional<milliseconds>(Cache::kNoExpiry));
    EXPECT_EQ(client.MGet({"kept", "absent", "forever"}).value(),
              (std::vector<std::optional<std::string>>{"value", std::nullopt, "too"}));
    // The check asks INFO with a 100 ms budget: a read never waits for the
    // client's timeout (2 s).
    EXPECT_LT(slowest, milliseconds(1000));
    if (!try_a_write) return;
    // Writes need the daemon: they fail, as values (a same-host write
    // finds the dead daemon's heartbeat over a second old and goes to the
    // socket).
    auto w = client.Set("kept", "new");
    ASSERT_FALSE(w.has_value());
    EXPECT_TRUE(w.error().code == ErrorCode::kTimeout || w.error().code == ErrorCode::kUnavailable)
        << w.error().ToString();
  };
  {
    Suspended stalled(daemon_.pid());
    ASSERT_TRUE(stalled.stopped());
    read_for_a_while("daemon stopped", false);  // a write would be applied on SIGCONT
  }
  ASSERT_TRUE(testing::WaitUntil([&] { return client.Ping().has_value(); }));
  EXPECT_EQ(daemon_.Kill(), 128 + SIGKILL);
  read_for_a_while("daemon killed", true);
  // Back, warm: the same segment, the writes work again.
  ASSERT_TRUE(daemon_.Start());
  ASSERT_TRUE(testing::WaitUntil([&] { return client.Set("kept", "newer").has_value(); }));
  EXPECT_EQ(client.Get("kept").value(), std::optional<std::string>("newer"));
}

}  // namespace
}  // namespace cachet
