// cachetd's promises from docs/operations.md and docs/protocol.md, each
// against a real daemon:
//   * SIGTERM answers the requests already received;
//   * `remove-segment-on-exit` removes the segment (and reloads), and the
//     segment is kept without it;
//   * a flag wins over the configuration file, at start and on reload;
//   * the daemon's own timer reclaims expired keys nobody reads;
//   * SCAN returns every key present for the whole walk, under concurrent writes;
//   * a PolicySubscriber refuses a bad published policy, keeps the old one
//     and reports why.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <msgpack.hpp>
#include <zmq.hpp>

#include <atomic>
#include <set>
#include <sstream>
#include <thread>

#include "cachet/client.h"
#include "cachet/policy_subscriber.h"
#include "cachet/rate_limiter.h"
#include "daemon_process.h"
#include "process_control.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;
using testing::DaemonProcess;
using testing::StatOf;

bool SegmentExists(const std::string& name) {
  struct stat st {};
  return stat(("/dev/shm/" + name).c_str(), &st) == 0;
}

std::unique_ptr<Client> Connect(const std::string& endpoint) {
  auto c = Client::Connect(endpoint);
  EXPECT_TRUE(c.has_value()) << c.error().ToString();
  return c ? std::move(*c) : nullptr;
}

// A configuration file of the test's own, removed at the end.
class ConfigFile {
 public:
  explicit ConfigFile(const std::string& text) { Write(text); }
  ~ConfigFile() { unlink(path_.c_str()); }
  void Write(const std::string& text) const { std::ofstream(path_) << text; }
  const std::string& path() const { return path_; }

 private:
  const std::string path_ = "/tmp/" + testing::UniqueSegmentName("conf") + ".conf";
};

// --- SIGTERM ---------------------------------------------------------------

std::string SetRequest(uint64_t id, const std::string& key, const std::string& value) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(&buf);
  pk.pack_array(7);
  pk.pack(1);
  pk.pack(id);
  pk.pack(std::string("SET"));
  pk.pack(key);
  pk.pack(value);
  pk.pack(0);
  pk.pack(0);
  return std::string(buf.data(), buf.size());
}

// Requests that reached the daemon while it was stopped, then SIGTERM: every
// one is applied and answered before the daemon exits with 0.
TEST(DaemonContractTest, SigtermAnswersTheRequestsAlreadyReceived) {
  DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  zmq::context_t context;
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  socket.connect(daemon.tcp());
  auto receive = [&](milliseconds limit) -> std::optional<std::pair<uint64_t, uint64_t>> {
    zmq::pollitem_t item{static_cast<void*>(socket), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, limit) == 0) return std::nullopt;
    zmq::message_t frame;
    if (!socket.recv(frame)) return std::nullopt;
    auto handle = msgpack::unpack(static_cast<const char*>(frame.data()), frame.size());
    const msgpack::object& o = handle.get();
    return std::make_pair(o.via.array.ptr[0].as<uint64_t>(), o.via.array.ptr[1].as<uint64_t>());
  };
  // The connection is up before the daemon stops.
  socket.send(zmq::buffer(SetRequest(1000, "warmup", "x")), zmq::send_flags::none);
  ASSERT_EQ(receive(milliseconds(5000)), std::make_optional(std::make_pair<uint64_t, uint64_t>(1000, 0)));

  constexpr int kRequests = 200;
  const int port = std::stoi(daemon.tcp().substr(daemon.tcp().rfind(':') + 1));
  size_t bytes = 0;
  {
    testing::Suspended stopped(daemon.pid());
    ASSERT_TRUE(stopped.stopped());
    for (int i = 0; i < kRequests; ++i) {
      const std::string request = SetRequest(i + 1, "drain:" + std::to_string(i), "v" + std::to_string(i));
      bytes += request.size();
      socket.send(zmq::buffer(request), zmq::send_flags::none);
    }
    // Received: every byte is in the kernel's buffer for the daemon.
    ASSERT_TRUE(testing::WaitUntil([&] { return testing::ReceiveQueued(port) >= static_cast<int64_t>(bytes); }))
        << testing::ReceiveQueued(port) << " bytes queued, want " << bytes;
    kill(daemon.pid(), SIGTERM);  // pending until SIGCONT
  }
  std::set<uint64_t> answered;
  while (auto r = receive(milliseconds(5000))) {
    EXPECT_EQ(r->second, 0u) << "request " << r->first;
    answered.insert(r->first);
    if (answered.size() == kRequests) break;
  }
  EXPECT_EQ(answered.size(), static_cast<size_t>(kRequests)) << "log:\n" << daemon.log();
  EXPECT_EQ(daemon.WaitForExit(), 0);  // the SIGTERM above stops it; no second signal
  EXPECT_NE(daemon.log().find("segment /" + daemon.segment() + " kept for a warm restart (" +
                              std::to_string(kRequests + 1) + " entries)"),
            std::string::npos)
      << daemon.log();
  ASSERT_TRUE(daemon.Start());
  auto client = Connect(daemon.ipc());
  ASSERT_NE(client, nullptr);
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(client->Get("drain:" + std::to_string(i)).value(), std::make_optional("v" + std::to_string(i)));
  }
}

// --- remove-segment-on-exit and flags over the file -----------------------

rlim_t SoftOpenFileLimit(pid_t pid) {
  rlimit limit{};
  return ::prlimit(pid, RLIMIT_NOFILE, nullptr, &limit) == 0 ? limit.rlim_cur : 0;
}

// Every connection takes a descriptor: cachetd raises its soft open-file
// limit to what max-connections needs (plus 256 of its own), within the
// hard limit, and says so; short of it, it warns and names what to change.
TEST(DaemonContractTest, RaisesItsOpenFileLimitToWhatMaxConnectionsNeeds) {
  rlimit own{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &own), 0);
  ASSERT_GE(own.rlim_max, rlim_t{1024}) << "this host's hard open-file limit is too low for the test";
  // Started under a soft limit of 300, as a shell with a low ulimit -n would.
  const rlimit low{300, own.rlim_max};
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  DaemonProcess daemon({"--max-connections", "500"});
  const ::testing::AssertionResult launched = daemon.Launch();
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &own), 0);  // this test's own, back
  ASSERT_TRUE(launched);
  ASSERT_TRUE(daemon.WaitUntilReady());
  EXPECT_EQ(SoftOpenFileLimit(daemon.pid()), rlim_t{756});
  EXPECT_NE(daemon.Log().find("open-file limit raised from 300 to 756 for max-connections = 500"), std::string::npos)
      << daemon.Log();

  // More than the hard limit allows: as far as it goes, and a warning.
  const std::string too_many = std::to_string(own.rlim_max);
  DaemonProcess over({"--max-connections", too_many});
  ASSERT_TRUE(over.Start());
  EXPECT_EQ(SoftOpenFileLimit(over.pid()), own.rlim_max);
  EXPECT_NE(over.Log().find("below the " + std::to_string(own.rlim_max + 256) + " that max-connections = " + too_many +
                            " needs: connections past it fail; raise LimitNOFILE (ulimit -n) or lower max-connections"),
            std::string::npos)
      << over.Log();
}

TEST(DaemonContractTest, SegmentIsKeptOnSigtermByDefault) {
  DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  ASSERT_TRUE(SegmentExists(daemon.segment()));
  EXPECT_EQ(daemon.Stop(), 0);
  EXPECT_TRUE(SegmentExists(daemon.segment()));
}

TEST(DaemonContractTest, RemoveSegmentOnExitRemovesItOnSigterm) {
  DaemonProcess daemon({"--remove-segment-on-exit", "true"});
  ASSERT_TRUE(daemon.Start());
  ASSERT_TRUE(SegmentExists(daemon.segment()));
  EXPECT_EQ(daemon.Stop(), 0);
  EXPECT_FALSE(SegmentExists(daemon.segment()));
  EXPECT_NE(daemon.log().find("removed segment /" + daemon.segment()), std::string::npos) << daemon.log();
}

TEST(DaemonContractTest, RemoveSegmentOnExitIsReloadable) {
  ConfigFile conf("remove-segment-on-exit = false\n");
  DaemonProcess daemon({"--config", conf.path()});
  ASSERT_TRUE(daemon.Start());
  conf.Write("remove-segment-on-exit = true\n");
  const size_t from = daemon.log().size();
  daemon.Hup();
  ASSERT_TRUE(daemon.WaitForLog("configuration reloaded", from)) << daemon.log();
  EXPECT_EQ(daemon.Stop(), 0);
  EXPECT_FALSE(SegmentExists(daemon.segment()));
}

TEST(DaemonContractTest, AFlagWinsOverTheFileAtStartAndOnReload) {
  // The file asks for a 4 MiB cache, one that removes its segment, a
  // max-key-size of 32 and less logging; the flags say otherwise, except
  // for the key size.
  ConfigFile conf("capacity = 4MiB\nremove-segment-on-exit = true\nmax-key-size = 32\nlog-level = warn\n");
  DaemonProcess daemon(
      {"--config", conf.path(), "--capacity", "2MiB", "--remove-segment-on-exit", "false", "--log-level", "info"});
  ASSERT_TRUE(daemon.Start());
  auto client = Connect(daemon.tcp());
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(StatOf(*client, "capacity_bytes"), 2 << 20);
  // max-key-size comes from the file (no flag): 32.
  EXPECT_TRUE(client->Set(std::string(32, 'k'), "v").has_value());
  auto big = client->Set(std::string(33, 'k'), "v");
  ASSERT_FALSE(big.has_value());
  EXPECT_EQ(big.error().code, ErrorCode::kKeyTooLarge);
  // Reload: the file still says remove, and log-level warn; the flags still win.
  conf.Write("capacity = 4MiB\nremove-segment-on-exit = true\nmax-key-size = 32\nlog-level = error\n");
  ASSERT_TRUE(client->Reload().has_value());
  EXPECT_EQ(StatOf(*client, "reloads"), 1);
  EXPECT_EQ(StatOf(*client, "capacity_bytes"), 2 << 20);
  EXPECT_EQ(daemon.Stop(), 0);
  EXPECT_TRUE(SegmentExists(daemon.segment())) << daemon.log();
  // Info lines still logged after the reload: --log-level info won over the file.
  EXPECT_NE(daemon.log().find("kept for a warm restart"), std::string::npos) << daemon.log();
}

// "Every setting is a command-line flag and a line in the file": each row
// of the settings table in docs/operations.md is an option of cachetd.
TEST(DaemonContractTest, HelpListsEverySettingOfTheOperationsTable) {
  const testing::ProgramResult help = testing::RunProgram({CACHETD_PATH, "--help"});
  EXPECT_EQ(help.code, 0);
  for (const char* setting : {"segment", "ipc", "tcp", "capacity", "max-entries", "max-key-size", "max-value-size",
                              "policy", "max-frame", "log-level", "log-file", "remove-segment-on-exit",
                              "rate-limit-policy", "rate-limit-capacity", "pub", "config"}) {
    EXPECT_NE(help.out.find(std::string("--") + setting), std::string::npos) << setting << " missing from:\n"
                                                                             << help.out;
  }
}

// cachectl takes its endpoint from $CACHET_ENDPOINT when --endpoint is not
// given, and --endpoint wins over it (docs/operations.md, "Command line").
TEST(DaemonContractTest, CachectlFindsTheDaemonThroughCachetEndpoint) {
  DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  const std::string nowhere = "ipc:///tmp/" + testing::UniqueSegmentName("none") + ".sock";
  ASSERT_EQ(setenv("CACHET_ENDPOINT", daemon.tcp().c_str(), 1), 0);
  const testing::ProgramResult ping = testing::RunProgram({CACHECTL_PATH, "ping"});
  const testing::ProgramResult set = testing::RunProgram({CACHECTL_PATH, "set", "from-env", "yes"});
  const testing::ProgramResult flag_wins =
      testing::RunProgram({CACHECTL_PATH, "--endpoint", nowhere, "--timeout", "100", "ping"});
  ASSERT_EQ(setenv("CACHET_ENDPOINT", nowhere.c_str(), 1), 0);
  const testing::ProgramResult env_nowhere = testing::RunProgram({CACHECTL_PATH, "--timeout", "100", "ping"});
  unsetenv("CACHET_ENDPOINT");
  EXPECT_EQ(ping.code, 0) << ping.err;
  EXPECT_EQ(ping.out, "PONG\n");
  EXPECT_EQ(set.code, 0) << set.err;
  EXPECT_EQ(flag_wins.code, 3) << flag_wins.out << flag_wins.err;
  EXPECT_EQ(env_nowhere.code, 3) << env_nowhere.out << env_nowhere.err;
  auto client = Connect(daemon.tcp());
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->Get("from-env").value(), std::optional<std::string>("yes"));
}

// INCR/DECR that would leave the 64-bit range get OVERFLOW over the wire and
// leave the value as it was (docs/protocol.md).
TEST(DaemonContractTest, IncrPastTheRangeIsAnOverflowAndChangesNothing) {
  DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  auto client = Connect(daemon.tcp());
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Set("top", "9223372036854775806").has_value());
  EXPECT_EQ(client->Incr("top").value(), INT64_MAX);
  auto over = client->Incr("top");
  ASSERT_FALSE(over.has_value());
  EXPECT_EQ(over.error().code, ErrorCode::kOverflow) << over.error().ToString();
  EXPECT_EQ(client->Get("top").value(), std::optional<std::string>("9223372036854775807"));
  ASSERT_TRUE(client->Set("bottom", "-9223372036854775807").has_value());
  EXPECT_EQ(client->Decr("bottom").value(), INT64_MIN);
  auto under = client->Decr("bottom");
  ASSERT_FALSE(under.has_value());
  EXPECT_EQ(under.error().code, ErrorCode::kOverflow);
  EXPECT_EQ(client->Get("bottom").value(), std::optional<std::string>("-9223372036854775808"));
  // A delta that is itself out of range for DECR (negating INT64_MIN).
  auto negated = client->Decr("fresh", INT64_MIN);
  ASSERT_FALSE(negated.has_value());
  EXPECT_EQ(negated.error().code, ErrorCode::kOverflow) << negated.error().ToString();
  EXPECT_EQ(client->Exists("fresh").value(), false);
}

// --- Expiry timer ----------------------------------------------------------

// Keys with a short TTL that nobody reads or overwrites are reclaimed by the
// daemon's timer: STATS entries, bytes and expirations move to exact values.
TEST(DaemonContractTest, TheDaemonsTimerReclaimsExpiredKeysNobodyReads) {
  // A small index, so the timer's sweep (512 buckets a tick) passes it all
  // several times a second.
  DaemonProcess daemon({"--capacity", "1MiB"});
  ASSERT_TRUE(daemon.Start());
  auto client = Connect(daemon.tcp());
  ASSERT_NE(client, nullptr);
  constexpr int kKeys = 100;
  // Item: 24-byte header + key + value, rounded up to 8 bytes.
  const int64_t item_bytes = (24 + 7 + 9 + 7) / 8 * 8;  // "exp:NNN" and "value:NNN": 40
  ASSERT_TRUE(client->Set("kept:01", "value:kpt").has_value());
  // Long enough that all the SETs and the two STATS below are done before
  // the first key expires, even on a loaded machine under sanitizers (with
  // 300 ms, 100 round trips there could outlast the TTL).
  SetOptions short_ttl;
  short_ttl.ttl = milliseconds(3000);
  for (int i = 0; i < kKeys; ++i) {
    char key[16], value[24];  // "exp:NNN" and "value:NNN" for i < 1000
    std::snprintf(key, sizeof key, "exp:%03d", i);
    std::snprintf(value, sizeof value, "value:%03d", i);
    ASSERT_TRUE(client->Set(key, value, short_ttl).has_value());
  }
  EXPECT_EQ(StatOf(*client, "bytes"), (kKeys + 1) * item_bytes);
  EXPECT_EQ(StatOf(*client, "expirations"), 0);
  // No read, no write: only the timer can reclaim them.
  ASSERT_TRUE(testing::WaitUntil([&] { return StatOf(*client, "entries") == 1; }, std::chrono::seconds(20)))
      << "entries stayed at " << StatOf(*client, "entries");
  EXPECT_EQ(StatOf(*client, "bytes"), item_bytes);
  EXPECT_EQ(StatOf(*client, "expirations"), kKeys);
  EXPECT_EQ(StatOf(*client, "evictions"), 0);
  EXPECT_EQ(StatOf(*client, "hits") + StatOf(*client, "misses"), 0) << "the test read nothing";
  EXPECT_EQ(client->Get("kept:01").value(), std::optional<std::string>("value:kpt"));
}

// --- SCAN under concurrent writes -------------------------------------------

// docs/protocol.md: "keys present for the whole walk come back at least
// once". Writers add, overwrite and delete other keys (and overwrite the
// stable ones) during every walk; every stable key comes back, and nothing
// that does not match the pattern does.
TEST(DaemonContractTest, ScanReturnsEveryKeyPresentThroughoutUnderConcurrentWrites) {
  DaemonProcess daemon({"--capacity", "16MiB"});
  ASSERT_TRUE(daemon.Start());
  auto client = Connect(daemon.tcp());
  ASSERT_NE(client, nullptr);
  constexpr int kStable = 3000;
  std::set<std::string> stable;
  std::vector<std::pair<std::string, std::string>> batch;
  for (int i = 0; i < kStable; ++i) {
    stable.insert("stable:" + std::to_string(i));
    batch.emplace_back("stable:" + std::to_string(i), "v");
    if (batch.size() == 64) {
      ASSERT_TRUE(client->MSet(batch).has_value());
      batch.clear();
    }
  }
  ASSERT_TRUE(client->MSet(batch).has_value());

  std::atomic<bool> stop{false};
  std::atomic<int64_t> writes{0};
  std::thread writer([&] {
    auto w = Connect(daemon.tcp());
    if (!w) return;
    for (uint64_t n = 0; !stop.load(); ++n) {
      const std::string churn = "churn:" + std::to_string(n % 5000);
      if (n % 3 == 2) {
        (void)w->Del(churn);
      } else {
        (void)w->Set(churn, std::string(n % 200, 'c'));
      }
      if (n % 4 == 0) (void)w->Set("stable:" + std::to_string(n % kStable), "overwritten " + std::to_string(n));
      writes.fetch_add(1);
    }
  });
  for (int walk = 0; walk < 3; ++walk) {
    SCOPED_TRACE("walk " + std::to_string(walk));
    const int64_t writes_before = writes.load();
    std::set<std::string> seen_stable;
    uint64_t cursor = 0;
    int pages = 0;
    do {
      auto page = client->Scan(cursor, "stable:*", 8);
      ASSERT_TRUE(page.has_value()) << page.error().ToString();
      for (const std::string& k : page->keys) {
        ASSERT_EQ(k.rfind("stable:", 0), 0u) << "'" << k << "' does not match the pattern";
        seen_stable.insert(k);
      }
      cursor = page->cursor;
      ++pages;
      // The walk runs beside writes: 100 pages in (of about 5,500), it
      // waits for some (under load the writer can be slower than a walk).
      if (pages == 100) {
        ASSERT_TRUE(testing::WaitUntil([&] { return writes.load() >= writes_before + 50; }, std::chrono::seconds(20)))
            << "the writer made " << writes.load() - writes_before << " writes";
      }
    } while (cursor != 0 && pages < 100000);
    EXPECT_EQ(cursor, 0u);
    EXPECT_GT(pages, 100);
    EXPECT_EQ(seen_stable, stable);
  }
  stop.store(true);
  writer.join();
}

// --- The policy subscriber -----------------------------------------------

// A published policy that does not parse is refused: the limiter keeps the
// old one (counts included), the subscriber says why, and the next good
// version is installed.
TEST(PolicySubscriberTest, RefusesABadPublishedPolicyKeepsTheOldOneAndReportsIt) {
  zmq::context_t context;
  zmq::socket_t pub(context, zmq::socket_type::pub);
  pub.set(zmq::sockopt::linger, 0);
  pub.bind("tcp://127.0.0.1:*");
  const std::string endpoint = pub.get(zmq::sockopt::last_endpoint);
  auto publish = [&](const std::string& version, const std::string& text) {
    pub.send(zmq::str_buffer("cachet.policy"), zmq::send_flags::sndmore);
    pub.send(zmq::buffer(version), zmq::send_flags::sndmore);
    pub.send(zmq::buffer(text), zmq::send_flags::none);
  };
  FakeClock clock(1'700'000'000'000);
  auto limiter = RateLimiter::Create(RateLimitPolicy{}, RateLimiterOptions{}, clock);
  ASSERT_TRUE(limiter.has_value());
  int installed = 0;
  std::atomic<int> callbacks{0};
  auto sub = PolicySubscriber::Start(endpoint, **limiter, [&](const PolicyFile&) { callbacks.fetch_add(1); });
  ASSERT_TRUE(sub.has_value()) << sub.error().ToString();
  // Published again and again, as the daemon does, until the subscriber has joined.
  ASSERT_TRUE(testing::WaitUntil([&] {
    publish("1", "[tier.regular]\nper_minute = 3/1m fixed_window\n");
    return (*sub)->version() == 1;
  }));
  installed = callbacks.load();
  EXPECT_EQ(installed, 1);
  for (int i = 0; i < 2; ++i) EXPECT_TRUE((*limiter)->Check("user", "regular").value().allowed);

  const std::string bad = "[tier.regular]\nper_minute = 3/1m fixed_window\nper_hour = lots\n";
  ASSERT_TRUE(testing::WaitUntil([&] {
    publish("2", bad);
    return (*sub)->rejected() == 1;
  }));
  EXPECT_EQ((*sub)->version(), 1u);
  EXPECT_EQ(callbacks.load(), installed) << "a refused policy reaches no callback";
  const std::string why = (*sub)->last_error();
  EXPECT_NE(why.find("published policy v2"), std::string::npos) << why;
  EXPECT_NE(why.find(":3"), std::string::npos) << "names the line: " << why;
  // The same bad version published again is not counted twice.
  for (int i = 0; i < 5; ++i) publish("2", bad);
  // The old policy still decides, with its counts: 2 used of 3.
  auto third = (*limiter)->Check("user", "regular");
  ASSERT_TRUE(third.has_value()) << third.error().ToString();
  EXPECT_TRUE(third->allowed);
  EXPECT_EQ(third->limit, 3u);
  EXPECT_FALSE((*limiter)->Check("user", "regular").value().allowed);

  // The next good version is installed (the limit rises, the count stays).
  ASSERT_TRUE(testing::WaitUntil([&] {
    publish("3", "[tier.regular]\nper_minute = 5/1m fixed_window\n");
    return (*sub)->version() == 3;
  }));
  EXPECT_EQ((*sub)->rejected(), 1u);
  auto fourth = (*limiter)->Check("user", "regular");
  ASSERT_TRUE(fourth.has_value());
  EXPECT_TRUE(fourth->allowed);
  EXPECT_EQ(fourth->limit, 5u);
  EXPECT_EQ(fourth->remaining, 1u);
}

}  // namespace
}  // namespace cachet
