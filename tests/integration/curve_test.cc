// cachetd with CURVE: real daemons, real key files from `cachectl keygen`,
// real ZeroMQ clients. Who is admitted, who is refused and how a refusal
// is logged; reloading the keys; per-key permissions; the secure default
// for endpoints other hosts can reach; the access of ipc files and
// segments; and, with a packet capture of the test's own loopback port,
// that values never cross the wire in clear while CURVE is on.
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "cachet/client.h"
#include "cachet/policy_subscriber.h"
#include "curve_files.h"
#include "daemon_process.h"
#include "loopback_capture.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::CurveFiles;
using testing::DaemonProcess;
using testing::ProgramResult;
using testing::StatOf;
using testing::WaitUntil;

// Lines of `log` holding `needle`.
size_t CountLines(const std::string& log, const std::string& needle) {
  size_t n = 0;
  for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + needle.size())) ++n;
  return n;
}

std::string PortOf(const std::string& endpoint) { return endpoint.substr(endpoint.rfind(':') + 1); }

class CurveTest : public ::testing::Test {
 protected:
  void StartDaemon(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = files_.DaemonArgs();
    args.insert(args.end(), extra.begin(), extra.end());
    daemon_.emplace(args);
    ASSERT_TRUE(daemon_->Start());
  }

  Result<std::unique_ptr<Client>> Connect(const CurveClientKeys& keys, milliseconds timeout = milliseconds(2000)) {
    ClientOptions o;
    o.curve = keys;
    o.retries = 0;
    o.timeout = timeout;
    return Client::Connect(daemon_->tcp(), o);
  }

  // A client over the ipc socket: no CURVE, trusted by the file's mode.
  std::unique_ptr<Client> Local() {
    auto c = Client::Connect(daemon_->ipc());
    EXPECT_TRUE(c.has_value()) << c.error().ToString();
    return c ? std::move(*c) : nullptr;
  }

  CurveFiles files_;
  std::optional<DaemonProcess> daemon_;
};

TEST_F(CurveTest, AnAdmittedClientWorksOverTcpAndTheLogSaysCurve) {
  StartDaemon();
  EXPECT_NE(daemon_->log().find("listening on " + daemon_->tcp() + " (CURVE)"), std::string::npos) << daemon_->log();
  auto client = Connect(files_.Keys());
  ASSERT_TRUE(client) << client.error().ToString();
  ASSERT_TRUE((*client)->Set("greeting", "hello"));
  auto got = (*client)->Get("greeting");
  ASSERT_TRUE(got && *got) << (got ? "miss" : got.error().ToString());
  EXPECT_EQ(**got, "hello");
  // cachectl with the same key files.
  std::vector<std::string> args = {CACHECTL_PATH, "--endpoint", daemon_->tcp()};
  for (const std::string& a : files_.CachectlArgs()) args.push_back(a);
  args.insert(args.end(), {"get", "greeting"});
  const ProgramResult get = testing::RunProgram(args, seconds(10));
  EXPECT_EQ(get.code, 0) << get.err;
  EXPECT_EQ(get.out, "hello\n");
  EXPECT_EQ(StatOf(*Local(), "refused_connections"), 0);
}

TEST_F(CurveTest, UnknownKeyWrongServerKeyAndPlaintextGetNothing) {
  StartDaemon();
  auto admitted = Connect(files_.Keys());
  ASSERT_TRUE(admitted && (*admitted)->Set("secret", "value").has_value());

  CurveClientKeys wrong_server = files_.Keys();
  wrong_server.server_public_key = files_.stranger_pub();
  const std::pair<const char*, CurveClientKeys> cases[] = {
      {"unknown key", files_.Keys("stranger")}, {"wrong server key", wrong_server}, {"plaintext", {}}};
  for (const auto& [what, keys] : cases) {
    SCOPED_TRACE(what);
    auto client = Connect(keys, milliseconds(300));
    ASSERT_TRUE(client);  // connecting is lazy; the first call finds out
    auto got = (*client)->Get("secret");
    ASSERT_FALSE(got.has_value()) << "read " << (got->has_value() ? **got : "a miss");
    EXPECT_EQ(got.error().code, ErrorCode::kUnavailable) << got.error().ToString();
    EXPECT_NE(got.error().message.find("refused the handshake"), std::string::npos) << got.error().message;
  }
  const std::string log = daemon_->log();
  EXPECT_GE(CountLines(log, "CURVE key " + files_.stranger_pub() + " is not in curve-authorized-keys"), 1u) << log;
  EXPECT_GE(CountLines(log, "another server key"), 1u) << log;
  // The plaintext client's line reads "does not speak CURVE", or "closed
  // during it" when its side gives up first; with the wrong server key's,
  // at least two handshake failures.
  EXPECT_GE(CountLines(log, "handshake failed"), 2u) << log;
  EXPECT_GE(StatOf(*Local(), "refused_connections"), 3);
  // The admitted client was never disturbed.
  auto still = (*admitted)->Get("secret");
  ASSERT_TRUE(still && *still);
}

// A refused peer that keeps sending is refused, and logged, once for its
// one connection: not once per frame it sends.
TEST_F(CurveTest, ARefusalIsLoggedOncePerConnectionNotPerFrame) {
  StartDaemon();
  const CurveClientKeys stranger = files_.Keys("stranger");
  zmq::context_t context;
  for (bool with_curve : {true, false}) {
    SCOPED_TRACE(with_curve ? "unknown CURVE key" : "plaintext");
    const int64_t before = StatOf(*Local(), "refused_connections");
    zmq::socket_t dealer(context, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::linger, 0);
    dealer.set(zmq::sockopt::reconnect_ivl, -1);  // one connection, never remade
    if (with_curve) {
      dealer.set(zmq::sockopt::curve_serverkey, stranger.server_public_key);
      dealer.set(zmq::sockopt::curve_publickey, stranger.public_key);
      dealer.set(zmq::sockopt::curve_secretkey, stranger.secret_key);
    }
    dealer.connect(daemon_->tcp());
    for (int i = 0; i < 200; ++i)
      (void)dealer.send(zmq::str_buffer("\x94\x01\x01\xa3GET\xa6secret"), zmq::send_flags::dontwait);
    ASSERT_TRUE(WaitUntil([&] { return StatOf(*Local(), "refused_connections") > before; }, seconds(10)));
    // Give any further refusal time to show before counting.
    std::this_thread::sleep_for(milliseconds(300));
    EXPECT_EQ(StatOf(*Local(), "refused_connections"), before + 1);
    zmq::pollitem_t item{static_cast<void*>(dealer), 0, ZMQ_POLLIN, 0};
    EXPECT_EQ(zmq::poll(&item, 1, milliseconds(0)), 0) << "a refused peer got a reply";
  }
  const std::string log = daemon_->log();
  EXPECT_EQ(CountLines(log, "CURVE key " + files_.stranger_pub()), 1u) << log;
  // The plaintext peer's failure reads "does not speak CURVE", or "closed
  // during it" when its side gives up first: one line either way.
  EXPECT_EQ(CountLines(log, "handshake failed"), 1u) << log;
}

TEST_F(CurveTest, AReloadAdmitsAndRefusesFromTheNextConnectionAndABrokenFileChangesNothing) {
  StartDaemon();
  auto client = Connect(files_.Keys());
  ASSERT_TRUE(client && (*client)->Set("k", "v").has_value());
  auto stranger = Connect(files_.Keys("stranger"), milliseconds(300));
  ASSERT_FALSE((*stranger)->Ping().has_value());

  // Swap: the stranger in, the client out.
  files_.WriteAuthorized({CurveFiles::Line(files_.stranger_pub(), "newcomer")});
  ASSERT_TRUE(Local()->Reload());
  EXPECT_NE(daemon_->log().find("admitting 1 client keys"), std::string::npos);
  auto newcomer = Connect(files_.Keys("stranger"));
  ASSERT_TRUE(newcomer);
  EXPECT_TRUE((*newcomer)->Ping().has_value());
  // The client's open connection stays; a new one is refused.
  EXPECT_TRUE((*client)->Ping().has_value());
  auto again = Connect(files_.Keys(), milliseconds(300));
  auto refused = (*again)->Ping();
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ErrorCode::kUnavailable);

  // A broken file: the reload fails and the newcomer is still admitted.
  { std::ofstream(files_.authorized()) << "not-a-key someone\n"; }
  auto reload = Local()->Reload();
  ASSERT_FALSE(reload.has_value());
  EXPECT_NE(reload.error().message.find("not a CURVE public key"), std::string::npos) << reload.error().message;
  auto after = Connect(files_.Keys("stranger"));
  EXPECT_TRUE((*after)->Ping().has_value());
}

TEST_F(CurveTest, PermissionsLimitTheOpsAndTheKeysOfAClient) {
  CurveFiles files;  // its own: two clients with different rights
  files.WriteAuthorized({CurveFiles::Line(files.client_pub(), "web", "write", "web:,session:"),
                         CurveFiles::Line(files.stranger_pub(), "reports", "read")});
  daemon_.emplace(files.DaemonArgs());
  ASSERT_TRUE(daemon_->Start());
  auto web = Connect(files.Keys("client"));
  auto reports = Connect(files.Keys("stranger"));
  ASSERT_TRUE(web && reports);

  EXPECT_TRUE((*web)->Set("web:1", "a").has_value());
  EXPECT_TRUE((*web)->MSet({{"web:2", "b"}, {"session:9", "c"}}).has_value());
  const auto denied = [](const auto& r) { return !r.has_value() && r.error().code == ErrorCode::kPermissionDenied; };
  EXPECT_TRUE(denied((*web)->Set("billing:1", "x")));
  EXPECT_TRUE(denied((*web)->MSet({{"web:3", "ok"}, {"billing:2", "no"}})));
  EXPECT_TRUE(denied((*web)->Get("billing:1")));
  EXPECT_TRUE(denied((*web)->Flush()));
  EXPECT_TRUE(denied((*web)->Scan(0, "*")));
  auto page = (*web)->Scan(0, "web:*", 1000);
  ASSERT_TRUE(page) << page.error().ToString();
  EXPECT_TRUE(denied((*web)->Reload()));

  auto read = (*reports)->Get("web:1");
  ASSERT_TRUE(read && *read);
  EXPECT_EQ(**read, "a");
  EXPECT_TRUE(denied((*reports)->Set("web:1", "changed")));
  EXPECT_TRUE(denied((*reports)->Del("web:1")));
  EXPECT_TRUE(denied((*reports)->Flush()));

  // Nothing a denied request asked for happened.
  auto local = Local();
  EXPECT_FALSE(*local->Exists("billing:1"));
  EXPECT_FALSE(*local->Exists("web:3"));
  EXPECT_EQ(**local->Get("web:1"), "a");
  EXPECT_EQ(StatOf(*local, "denied_requests"), 9);
}

TEST_F(CurveTest, BadKeySettingsStopTheStartWithAReason) {
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const std::string pub = files_.path("server.pub");
  chmod(files_.path("client.key").c_str(), 0644);
  const Case cases[] = {
      {{"--curve-secret-key", files_.path("server.key")}, "go together"},
      {{"--curve-secret-key", pub, "--curve-authorized-keys", files_.authorized()}, "holds no secret-key"},
      {{"--curve-secret-key", files_.path("client.key"), "--curve-authorized-keys", files_.authorized()}, "chmod 600"},
      {{"--curve-secret-key", files_.path("server.key"), "--curve-authorized-keys", files_.path("missing")},
       "cannot read authorized keys"},
      {{"--tcp", "tcp://0.0.0.0:0"}, "insecure = true"},
      {{"--tcp", "tcp://[::]:0"}, "reachable from other hosts"},
      {{"--access-mode", "0755"}, "without execute"},
      {{"--access-group", "no-such-group-here"}, "no group named"},
  };
  for (const Case& c : cases) {
    const ProgramResult r = testing::RunCachetd(c.args);
    EXPECT_EQ(r.code, 2) << c.says << ": " << r.err;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << r.err;
  }
}

// max-connections: a handshake beyond it is refused, and a freed place is
// taken by the next client.
TEST_F(CurveTest, ConnectionsBeyondTheMaximumAreRefusedAtTheHandshake) {
  daemon_.emplace(std::vector<std::string>{"--max-connections", "3"});
  ASSERT_TRUE(daemon_->Start());
  ClientOptions quick;
  quick.retries = 0;
  quick.timeout = milliseconds(500);
  quick.shared_memory_reads = false;
  std::vector<std::unique_ptr<Client>> open;
  for (int i = 0; i < 3; ++i) {
    auto c = Client::Connect(daemon_->ipc(), quick);
    ASSERT_TRUE(c && (*c)->Ping().has_value()) << i;
    open.push_back(std::move(*c));
  }
  auto fourth = Client::Connect(daemon_->ipc(), quick);
  ASSERT_TRUE(fourth);
  auto refused = (*fourth)->Ping();
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ErrorCode::kUnavailable);
  EXPECT_GE(StatOf(*open[0], "refused_connections"), 1);
  EXPECT_NE(daemon_->log().find("max-connections is 3"), std::string::npos) << daemon_->log();
  open.pop_back();  // a place frees up
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto c = Client::Connect(daemon_->ipc(), quick);
        return c && (*c)->Ping().has_value();
      },
      seconds(10)));
}

// Who may attach: the ipc socket file and the segment take access-mode
// and access-group; a user outside them gets a clear error.
TEST_F(CurveTest, TheSocketAndSegmentTakeTheConfiguredAccess) {
  const group* shared = getgrnam("daemon");
  ASSERT_NE(shared, nullptr) << "Debian's 'daemon' group is missing";
  daemon_.emplace(std::vector<std::string>{"--access-mode", "0660", "--access-group", "daemon"});
  ASSERT_TRUE(daemon_->Start());
  struct stat st {};
  const std::string socket = daemon_->ipc().substr(6);
  ASSERT_EQ(stat(socket.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  EXPECT_EQ(st.st_gid, shared->gr_gid);
  ASSERT_EQ(stat(("/dev/shm/" + daemon_->segment()).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  EXPECT_EQ(st.st_gid, shared->gr_gid);

  DaemonProcess owner_only;
  ASSERT_TRUE(owner_only.Start());
  ASSERT_EQ(stat(("/dev/shm/" + owner_only.segment()).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  if (geteuid() != 0) GTEST_SKIP() << "running as another user needs root";
  // `nobody` may use neither the socket nor the segment.
  const ProgramResult denied =
      testing::RunProgram({"/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", CACHECTL_PATH,
                           "--endpoint", owner_only.ipc(), "--timeout", "300", "ping"},
                          seconds(10));
  EXPECT_EQ(denied.code, 3) << denied.out << denied.err;
  EXPECT_NE(denied.err.find("permission denied"), std::string::npos) << denied.err;
}

// The policy's PUB endpoint speaks CURVE too: a subscriber with an
// admitted key gets the policy, one without gets nothing.
TEST_F(CurveTest, ThePolicyIsPublishedOnlyToAdmittedSubscribers) {
  const std::string policy = "/tmp/" + testing::UniqueSegmentName("policy") + ".toml";
  std::ofstream(policy) << "[tier.regular]\nper_minute = 5/1m fixed_window\n";
  const std::string pub = "tcp://127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());
  StartDaemon({"--rate-limit-policy", policy, "--pub", pub});
  std::atomic<int> keyed{0}, plain{0};
  auto count = [](std::atomic<int>& n) {
    return [&n](const PolicyFile&) -> Result<void> {
      ++n;
      return {};
    };
  };
  // The one without a key connects first: when the keyed one has the
  // policy, a publication has gone out while both were connecting, and
  // the first had every chance to get it too.
  auto without = PolicySubscriber::Start(pub, count(plain));
  ASSERT_TRUE(without);
  auto with_key = PolicySubscriber::Start(pub, count(keyed), files_.Keys());
  ASSERT_TRUE(with_key);
  ASSERT_TRUE(WaitUntil([&] { return keyed.load() > 0; }, seconds(10)));
  EXPECT_EQ(plain.load(), 0);
  // The plaintext subscriber's handshakes are refused, counted and logged
  // (as on the request endpoint), though they never reach the ZAP handler.
  auto local = Local();
  EXPECT_TRUE(WaitUntil([&] { return StatOf(*local, "refused_connections") > 0; }, seconds(10)));
  const std::string log = daemon_->log();
  // The reason's wording depends on where the handshake broke off ("does
  // not speak CURVE", or "closed during it" when the subscriber hung up first).
  EXPECT_GE(CountLines(log, "refused a connection on " + pub + ": handshake failed ("), 1u) << log;
  std::filesystem::remove(policy);
}

// Values cross the loopback wire in clear without CURVE and never with
// it: a capture of the daemon's own port, by Debian's tcpdump.
TEST_F(CurveTest, APacketCaptureShowsValuesOnlyWithoutCurve) {
  if (auto why = testing::LoopbackCapture::Unavailable()) GTEST_SKIP() << *why;
  const std::string value = "cleartext-marker-" + testing::UniqueSegmentName("v");
  auto capture = [&](bool curve) -> std::string {
    daemon_.reset();
    daemon_.emplace(curve ? files_.DaemonArgs() : std::vector<std::string>{});
    EXPECT_TRUE(daemon_->Start());
    testing::LoopbackCapture dump(std::stoi(PortOf(daemon_->tcp())));
    EXPECT_TRUE(dump.Started());
    EXPECT_TRUE(WaitUntil(
        [&] {
          auto client = Connect(curve ? files_.Keys() : CurveClientKeys{});
          EXPECT_TRUE(client && (*client)->Set("k", value).has_value());
          auto got = (*client)->Get("k");
          EXPECT_TRUE(got && *got && **got == value);
          return dump.size() > 1000;
        },
        seconds(10), milliseconds(200)));
    return dump.Stop();
  };
  const std::string clear = capture(false);
  const std::string encrypted = capture(true);
  EXPECT_NE(clear.find(value), std::string::npos)
      << "the capture missed the plaintext exchange (" << clear.size() << " bytes)";
  EXPECT_GT(encrypted.size(), 500u);                    // the exchange was captured...
  EXPECT_EQ(encrypted.find(value), std::string::npos);  // ...and the value is not in it
}

}  // namespace
}  // namespace cachet
