#include "cachet/gossip_rate_limiter.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <zmq.hpp>

#include "limiter_engine.h"
#include "protocol.h"
#include "zap_handler.h"
#include "zmq_io.h"

namespace cachet {
namespace {

using Steady = std::chrono::steady_clock;
using detail::LimiterEngine;

// A message: one frame, one msgpack array
//   ["cachet-gossip", 1, sender, incarnation, seq, [[id, meta, window, total], ...]]
// `total` is everything the sender counted for counter `id` in the window
// starting at `window` (ms since the epoch); `meta` says how the counter
// counts (algorithm and window length), as the sender's table places it.
constexpr std::string_view kMagic = "cachet-gossip";
constexpr uint64_t kVersion = 1;
constexpr size_t kMaxEntriesPerMessage = 2048;
constexpr size_t kMaxSenderBytes = 256;
constexpr int kHighWaterMark = 10'000;  // messages queued per peer before PUB drops (totals repair it)
// Far above a message of kMaxEntriesPerMessage entries (about 80 KiB); a
// bigger frame is dropped by ZeroMQ before it is read.
constexpr int64_t kMaxFrameBytes = 1 << 20;
// (sender, incarnation) pairs remembered at once; a sender unheard for
// kSenderIdle with no open window is forgotten.
constexpr size_t kMaxSenders = 4096;
constexpr std::chrono::seconds kSenderIdle{60};
// How far ahead of this host's clock a peer's window may start: clocks
// kept by NTP agree far better; a count further ahead would move the
// counter into a window that has not begun here.
constexpr std::chrono::milliseconds kMaxSkew{1000};
// Refused connections and failed handshakes logged per period, one line
// each (a peer with a wrong key retries ten times a second).
constexpr int kRefusalLogBurst = 5;
constexpr std::chrono::seconds kRefusalLogPeriod{60};
constexpr const char* kPubMonitor = "inproc://cachet-gossip-pub-monitor";  // in the limiter's own context
constexpr const char* kSubMonitor = "inproc://cachet-gossip-sub-monitor";

struct WindowKey {
  uint64_t id;
  int64_t window;
  bool operator==(const WindowKey& o) const { return id == o.id && window == o.window; }
};
struct WindowKeyHash {
  size_t operator()(const WindowKey& k) const {
    return k.id ^ (static_cast<uint64_t>(k.window) * 0x9e3779b97f4a7c15ull);
  }
};

// A window's counts matter until the window after it has passed (a sliding
// window weighs the previous one).
bool Closed(int64_t window, uint64_t meta, int64_t now_ms) {
  return window + 2 * LimiterEngine::WindowOf(meta) <= now_ms;
}

std::string DefaultNodeId() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "host");
  return std::string(host) + ":" + std::to_string(getpid());
}

bool LooksLikeEndpoint(const std::string& e) {
  return e.rfind("tcp://", 0) == 0 || e.rfind("ipc://", 0) == 0 || e.rfind("inproc://", 0) == 0;
}

Result<void> CheckPeers(const std::vector<std::string>& peers) {
  for (const std::string& p : peers) {
    if (!LooksLikeEndpoint(p)) {
      return MakeError(ErrorCode::kInvalidArgument, "gossip peer '" + p + "': expected tcp://, ipc:// or inproc://");
    }
  }
  return {};
}

Result<void> CheckShareable(const Rule& r) {
  if (r.local || LimiterEngine::Additive(r.algorithm)) return {};
  return MakeError(ErrorCode::kInvalidArgument,
                   "rule '" + r.name + "': the " + AlgorithmName(r.algorithm) +
                       " algorithm cannot be shared between hosts (use fixed_window or sliding_window, or make the "
                       "rule local)");
}

bool HasLocalRules(const RateLimitPolicy& policy) {
  for (const Tier& t : policy.tiers) {
    for (const Rule& r : t.rules) {
      if (r.local) return true;
    }
  }
  for (const auto& [key, rules] : policy.overrides) {
    for (const Rule& r : rules) {
      if (r.local) return true;
    }
  }
  return false;
}

// `policy` as one of `hosts` hosts applies it: each local rule admits its
// share, rounded down (so the hosts together admit at most the limit) but
// at least 1.
RateLimitPolicy SharesOf(RateLimitPolicy policy, uint64_t hosts) {
  const auto share = [hosts](uint64_t n) { return n == 0 ? 0 : std::max<uint64_t>(1, n / hosts); };
  const auto scale = [&](std::vector<Rule>& rules) {
    for (Rule& r : rules) {
      if (!r.local) continue;
      r.limit = share(r.limit);
      r.burst = share(r.burst);
    }
  };
  for (Tier& t : policy.tiers) scale(t.rules);
  for (auto& [key, rules] : policy.overrides) scale(rules);
  return policy;
}

}  // namespace

Result<void> GossipOptions::Validate() const {
  if (!LooksLikeEndpoint(bind)) {
    return MakeError(ErrorCode::kInvalidArgument, "gossip bind '" + bind + "': expected tcp://, ipc:// or inproc://");
  }
  if (auto ok = CheckPeers(peers); !ok) return ok;
  if (sync_interval.count() < 1 || sync_interval > std::chrono::seconds(10)) {
    return MakeError(ErrorCode::kInvalidArgument, "gossip sync_interval must be 1 ms to 10 s");
  }
  if (snapshot_interval < sync_interval || snapshot_interval > std::chrono::minutes(1)) {
    return MakeError(ErrorCode::kInvalidArgument, "gossip snapshot_interval must be from sync_interval to 1 minute");
  }
  if (peer_timeout < 2 * snapshot_interval || peer_timeout > std::chrono::minutes(10)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "gossip peer_timeout must be from twice snapshot_interval (a peer sends at least once per "
                     "snapshot interval) to 10 minutes");
  }
  if (node_id.size() > kMaxSenderBytes) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "gossip node_id is over " + std::to_string(kMaxSenderBytes) + " bytes");
  }
  if (!curve.public_key.empty() || !curve.secret_key.empty()) {
    if (!IsCurveKey(curve.public_key) || !IsCurveKey(curve.secret_key)) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "gossip curve: the peers' shared key pair needs both keys, 40 characters of Z85 each (the "
                       "NAME.key file of cachectl keygen)");
    }
    char derived[41] = {};
    if (zmq_curve_public(derived, curve.secret_key.c_str()) == 0 && curve.public_key != derived) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "gossip curve: the public key is not the secret key's (keys of two different pairs)");
    }
  } else if (!insecure && !IsLoopbackEndpoint(bind)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "gossip bind '" + bind +
                         "' is reachable from other hosts: set curve (the peers' shared key pair, from cachectl "
                         "keygen) to encrypt and authenticate the counts, or insecure to send them in clear text "
                         "(docs/operations.md, \"Securing gossip\")");
  }
  return {};
}

class GossipRateLimiter::Impl {
 public:
  Impl(std::unique_ptr<CounterTable> table, const cachet::Clock& clock, GossipOptions options)
      : engine_(std::move(table), clock),
        clock_(clock),
        options_(std::move(options)),
        refusals_([this](const std::string& line) { Report(line); }, kRefusalLogBurst, kRefusalLogPeriod) {
    if (options_.node_id.empty()) options_.node_id = DefaultNodeId();
    engine_.EnableJournal();
    incarnation_ = static_cast<uint64_t>(Steady::now().time_since_epoch().count()) ^
                   (static_cast<uint64_t>(getpid()) << 32) ^ reinterpret_cast<uintptr_t>(this);
    started_ms_ = clock_.NowMs();
  }

  ~Impl() {
    stop_.store(true, std::memory_order_release);
    if (thread_.joinable()) thread_.join();
  }

  Result<void> Start() {
    const bool curve = this->curve();
    if (curve && !zmq_has("curve")) {
      return MakeError(ErrorCode::kInvalidArgument, "gossip curve is set but this libzmq was built without CURVE");
    }
    // The ZAP handler first: ZeroMQ admits every CURVE client while none
    // is bound.
    if (curve) {
      if (auto ok = zap_.Start(); !ok) return ok;
    }
    try {
      // XPUB, verbose: every subscriber's (re)subscription reaches us, so a
      // peer whose connection came back (a healed partition, a restart of
      // either side) gets a snapshot at the next sync, not at the next
      // periodic one.
      pub_ = zmq::socket_t(context_, zmq::socket_type::xpub);
      pub_.set(zmq::sockopt::xpub_verbose, 1);
      pub_.set(zmq::sockopt::linger, 0);
      pub_.set(zmq::sockopt::sndhwm, kHighWaterMark);
      if (curve) {
        pub_.set(zmq::sockopt::zap_domain, "cachet-gossip");
        zmqio::UseCurveServer(pub_, options_.curve.secret_key);
      }
      // Refusals by the ZAP handler are counted there; these never reach it.
      if (auto ok = pub_monitor_.Watch(pub_, kPubMonitor,
                                       ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL);
          !ok) {
        return ok;
      }
      zmqio::Bind(pub_, options_.bind);
      endpoint_ = pub_.get(zmq::sockopt::last_endpoint);
      sub_ = zmq::socket_t(context_, zmq::socket_type::sub);
      sub_.set(zmq::sockopt::linger, 0);
      sub_.set(zmq::sockopt::rcvhwm, kHighWaterMark);
      sub_.set(zmq::sockopt::maxmsgsize, kMaxFrameBytes);
      sub_.set(zmq::sockopt::subscribe, "");
      if (curve) {
        // The peers' PUBs are CURVE servers with this same pair.
        zmqio::UseCurveClient(
            sub_, CurveClientKeys{options_.curve.public_key, options_.curve.public_key, options_.curve.secret_key});
      }
      if (auto ok = sub_monitor_.Watch(sub_, kSubMonitor,
                                       ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                           ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
          !ok) {
        return ok;
      }
      for (const std::string& p : options_.peers) {
        if (p != endpoint_) Connect(p);  // a shared list names this host too
      }
    } catch (const zmq::error_t& e) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "gossip: cannot bind '" + options_.bind + "' or connect to a peer: " + e.what());
    }
    if (!curve && options_.insecure && !IsLoopbackEndpoint(options_.bind)) {
      Report("gossip: " + endpoint_ +
             " is served in clear text to other hosts (insecure): anyone who reaches it reads the counts, and "
             "anyone who can pose as a peer adds counts of their own");
    }
    // Until the sync thread has counted, the peers as configured are taken
    // to be alive (as CountLiveHosts does for its first peer_timeout).
    SetLiveHosts(1 + peers_.size());
    thread_ = std::thread([this] { Run(); });
    return {};
  }

  LimiterEngine& engine() { return engine_; }
  const std::string& endpoint() const { return endpoint_; }
  const std::string& node_id() const { return options_.node_id; }

  // Installs a policy (it passed CheckShareable) for the hosts alive now.
  void SetPolicy(RateLimitPolicy policy) {
    SetMetas(LimiterEngine::MetasOf(policy));
    std::lock_guard<std::mutex> lock(policy_mu_);
    policy_ = std::move(policy);
    by_hosts_ = HasLocalRules(policy_) || options_.share_remaining;
    shares_.clear();
    ActivateShares();
  }
  // The shared rules as counters place them: a peer's entry must be one.
  void SetMetas(std::set<uint64_t> metas) {
    auto next = std::make_shared<const std::set<uint64_t>>(std::move(metas));
    std::lock_guard<std::mutex> lock(metas_mu_);
    metas_ = std::move(next);
  }
  std::shared_ptr<const std::set<uint64_t>> Metas() const {
    std::lock_guard<std::mutex> lock(metas_mu_);
    return metas_;
  }

  void SetPeers(std::vector<std::string> peers) {
    std::lock_guard<std::mutex> lock(peers_mu_);
    pending_peers_ = std::move(peers);
  }

  GossipStats Stats() const {
    GossipStats s;
    s.local = engine_.Stats();
    s.messages_sent = sent_.load(std::memory_order_relaxed);
    s.messages_received = received_.load(std::memory_order_relaxed);
    s.counts_applied = applied_.load(std::memory_order_relaxed);
    s.sequence_gaps = gaps_.load(std::memory_order_relaxed);
    s.malformed_messages = malformed_.load(std::memory_order_relaxed);
    s.skipped_entries = skipped_.load(std::memory_order_relaxed);
    s.peers = peer_count_.load(std::memory_order_relaxed);
    s.senders = sender_count_.load(std::memory_order_relaxed);
    s.subscriptions = resubscriptions_.load(std::memory_order_relaxed);
    s.live_hosts = live_hosts_.load(std::memory_order_relaxed);
    s.retracted = retracted_.load(std::memory_order_relaxed);
    s.bytes_sent = bytes_sent_.load(std::memory_order_relaxed);
    s.refused_connections = refused_.load(std::memory_order_relaxed);
    s.failed_handshakes = failed_handshakes_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  struct Own {
    uint64_t meta = 0;
    int64_t total = 0;
    bool dirty = false;
  };
  struct Extra {
    uint64_t meta = 0;
    int64_t count = 0;
  };
  struct Sender {
    uint64_t last_seq = 0;
    Steady::time_point last_heard{};
    struct Seen {
      uint64_t total = 0;  // already applied
      uint64_t meta = 0;
    };
    std::unordered_map<WindowKey, Seen, WindowKeyHash> seen;
  };

  // The sync thread: the only user of the sockets and of everything below.
  void Run() {
    auto next_sync = Steady::now() + options_.sync_interval;
    auto next_snapshot = Steady::now() + options_.snapshot_interval;
    // For its first snapshot interval a host sends a snapshot every sync:
    // peers whose subscriptions reach it late (a restart) hear it at once,
    // and answer with snapshots of their own (a new sender below).
    const auto announce_until = Steady::now() + options_.snapshot_interval;
    while (!stop_.load(std::memory_order_acquire)) {
      // The ZAP handler's socket is never readable without CURVE (unbound).
      zmq::pollitem_t items[] = {{sub_.handle(), 0, ZMQ_POLLIN, 0},
                                 {pub_.handle(), 0, ZMQ_POLLIN, 0},
                                 {zap_.socket().handle(), 0, ZMQ_POLLIN, 0},
                                 {pub_monitor_.socket().handle(), 0, ZMQ_POLLIN, 0},
                                 {sub_monitor_.socket().handle(), 0, ZMQ_POLLIN, 0}};
      // Rounded up: a wait cut to 0 ms would spin through the interval's last millisecond.
      const auto wait = std::chrono::ceil<std::chrono::milliseconds>(next_sync - Steady::now());
      try {
        if (zmqio::Poll(items, std::size(items), std::max(wait, std::chrono::milliseconds(0))) > 0) {
          if (items[2].revents & ZMQ_POLLIN) AnswerZap();
          if (items[3].revents & ZMQ_POLLIN) TakeHandshakeFailures(pub_monitor_, "refused a connection on ");
          if (items[4].revents & ZMQ_POLLIN) TakeHandshakeFailures(sub_monitor_, "could not connect to peer ");
          if (items[1].revents & ZMQ_POLLIN) TakeSubscriptions();
          if (items[0].revents & ZMQ_POLLIN) ReceiveAll(next_sync);
        }
        refusals_.Tick();
        const auto now = Steady::now();
        if (now < next_sync) continue;
        next_sync = now + options_.sync_interval;
        TakePeers();
        RetractExtras();
        Collect();
        const bool snapshot = now >= next_snapshot || now < announce_until || newcomer_;
        if (now >= next_snapshot) next_snapshot = now + options_.snapshot_interval;
        newcomer_ = false;
        Publish(snapshot);
        Expire();
        SetLiveHosts(CountLiveHosts());
      } catch (const std::exception& e) {  // zmq::error_t, std::bad_alloc: the thread goes on
        Report("gossip: " + std::string(e.what()));
      }
    }
  }

  bool curve() const { return !options_.curve.secret_key.empty(); }

  // The peers share one key pair: its public key is the only client key
  // admitted.
  void AnswerZap() {
    zap_.Answer(
        [this](const zap::Request& r) {
          if (r.mechanism == "CURVE" && r.client_key == options_.curve.public_key)
            return zap::Verdict::Admit(r.client_key);
          const std::string from = r.address.empty() ? "a local peer" : r.address;
          return zap::Verdict::Refuse("gossip: refused a connection from " + from + ": " +
                                      (r.mechanism == "CURVE"
                                           ? "CURVE key " + r.client_key + " is not the peers' shared key"
                                           : r.mechanism + " is not CURVE"));
        },
        [this](const std::string& why) {
          refused_.fetch_add(1, std::memory_order_relaxed);
          refusals_.Log(why);
        });
  }

  // `what` begins the log line, before the endpoint.
  void TakeHandshakeFailures(zap::SocketMonitor& monitor, const std::string& what) {
    while (std::optional<zap::MonitorEvent> event = monitor.Next()) {
      if (!event->handshake_failed()) continue;
      failed_handshakes_.fetch_add(1, std::memory_order_relaxed);
      refusals_.Log("gossip: " + what + event->endpoint + ": handshake failed (" +
                    event->HandshakeFailure(curve(), "the peer") + ")");
    }
  }

  // This host and the peers heard from within peer_timeout; until that
  // long has passed since the start, at least this host and its peers as
  // configured (a host just started has heard from no one yet).
  uint64_t CountLiveHosts() {
    const int64_t now = clock_.NowMs();
    const int64_t timeout = options_.peer_timeout.count();
    for (auto it = heard_.begin(); it != heard_.end();) {
      it = now - it->second > timeout ? heard_.erase(it) : std::next(it);
    }
    uint64_t hosts = 1 + heard_.size();
    if (now - started_ms_ < timeout) hosts = std::max<uint64_t>(hosts, 1 + peers_.size());
    return hosts;
  }

  void SetLiveHosts(uint64_t hosts) {
    live_hosts_.store(hosts, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(policy_mu_);
    if (hosts == hosts_) return;
    hosts_ = hosts;
    if (by_hosts_) ActivateShares();
  }

  // Makes the policy's variant for hosts_ the one decisions use, compiling
  // it the first time: the variants are few (one per number of hosts seen
  // under this policy), and the engine keeps every policy it compiled.
  // A variant differs in local rules' shares and, with share_remaining, in
  // the weight of shared rules' admissions.
  void ActivateShares() {  // REQUIRES: policy_mu_ held
    const uint64_t hosts = by_hosts_ ? hosts_ : 1;
    auto it = shares_.find(hosts);
    if (it == shares_.end()) {
      const auto weight = static_cast<uint32_t>(options_.share_remaining ? hosts : 1);
      it = shares_.emplace(hosts, engine_.CompilePolicy(SharesOf(policy_, hosts), weight)).first;
    }
    engine_.Activate(it->second);
  }

  void Connect(const std::string& peer) {
    zmqio::Connect(sub_, peer);
    peers_.insert(peer);
    peer_count_.store(peers_.size(), std::memory_order_relaxed);
  }

  void TakePeers() {
    std::optional<std::vector<std::string>> next;
    {
      std::lock_guard<std::mutex> lock(peers_mu_);
      next.swap(pending_peers_);
    }
    if (!next) return;
    const std::set<std::string> wanted(next->begin(), next->end());
    for (auto it = peers_.begin(); it != peers_.end();) {
      if (wanted.count(*it) == 0) {
        try {
          zmqio::Disconnect(sub_, *it);
        } catch (const zmq::error_t& e) {
          Report("gossip: disconnecting from " + *it + ": " + e.what());
        }
        it = peers_.erase(it);
      } else {
        ++it;
      }
    }
    for (const std::string& p : wanted) {
      if (peers_.count(p) != 0 || p == endpoint_) continue;
      try {
        Connect(p);
      } catch (const zmq::error_t& e) {
        Report("gossip: cannot connect to peer " + p + ": " + e.what());
      }
    }
    peer_count_.store(peers_.size(), std::memory_order_relaxed);
  }

  // This host's counts since the last sync, into its totals; the extras
  // its weights counted are taken back at the next sync, when the peers'
  // own counts for this interval have come in (they sync as often).
  void Collect() {
    engine_.DrainJournal([this](const LimiterEngine::Counted& c) {
      const WindowKey key{c.id, c.window_start};
      Own& own = own_[key];
      own.meta = c.meta;
      own.total += c.cost;  // a give-back may arrive before its count: clamped when published
      own.dirty = true;
      if (c.extra != 0) {
        Extra& e = extras_[key];
        e.meta = c.meta;
        e.count += c.extra;
      }
    });
  }

  // Before Collect: what the last sync collected.
  void RetractExtras() {
    for (const auto& [key, e] : extras_) {
      if (e.count <= 0) continue;
      engine_.Retract(key.id, e.meta, key.window, static_cast<uint64_t>(e.count));
      retracted_.fetch_add(static_cast<uint64_t>(e.count), std::memory_order_relaxed);
    }
    extras_.clear();
  }

  void Publish(bool snapshot) {
    std::vector<std::pair<const WindowKey*, Own*>> entries;
    for (auto& [key, own] : own_) {
      if (own.dirty || snapshot) entries.emplace_back(&key, &own);
      own.dirty = false;
    }
    if (entries.empty() && !snapshot) return;
    // A snapshot is sent even with no entries: peers hear that this host
    // is alive (local rules divide their limit by the hosts alive).
    size_t first = 0;
    do {
      const size_t n = std::min(kMaxEntriesPerMessage, entries.size() - first);
      wire::Writer w;
      w.Array(6);
      w.Str(kMagic);
      w.Uint(kVersion);
      w.Str(options_.node_id);
      w.Uint(incarnation_);
      w.Uint(++seq_);
      w.Array(static_cast<uint32_t>(n));
      for (size_t i = first; i < first + n; ++i) {
        w.Array(4);
        w.Uint(entries[i].first->id);
        w.Uint(entries[i].second->meta);
        w.Int(entries[i].first->window);
        w.Uint(static_cast<uint64_t>(std::max<int64_t>(0, entries[i].second->total)));
      }
      // PUB never blocks: past the high-water mark a peer misses the
      // message and the next total (or snapshot) makes up for it.
      (void)zmqio::RetryOnEintr(
          [&] { return pub_.send(zmq::const_buffer(w.data(), w.size()), zmq::send_flags::dontwait); });
      sent_.fetch_add(1, std::memory_order_relaxed);
      bytes_sent_.fetch_add(w.size(), std::memory_order_relaxed);
      first += n;
    } while (first < entries.size());
  }

  // Reads what has arrived, until `deadline`: a flood of messages never
  // keeps this host from publishing its own counts.
  // A subscriber (re)connected: it may have missed totals while it was
  // away, so the next sync sends a snapshot.
  void TakeSubscriptions() {
    zmq::message_t m;
    while (zmqio::Recv(pub_, m, zmq::recv_flags::dontwait)) {
      if (m.size() > 0 && *static_cast<const uint8_t*>(m.data()) == 1) {
        newcomer_ = true;
        resubscriptions_.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }

  void ReceiveAll(Steady::time_point deadline) {
    zmq::message_t msg;
    while (Steady::now() < deadline && zmqio::RetryOnEintr([&] { return sub_.recv(msg, zmq::recv_flags::dontwait); })) {
      received_.fetch_add(1, std::memory_order_relaxed);
      if (auto ok = Apply(static_cast<const char*>(msg.data()), msg.size()); !ok) {
        malformed_.fetch_add(1, std::memory_order_relaxed);
        ReportOnce(ok.error().message.substr(0, 64), ok.error().message);
      }
    }
  }

  Result<void> Apply(const char* data, size_t size) {
    // The wire's own decoder: arrays no longer than the frame could hold,
    // no trailing bytes.
    auto unpacked = wire::Unpack(data, size);
    if (!unpacked)
      return MakeError(ErrorCode::kProtocol, "gossip: a message that is not msgpack: " + unpacked.error().message);
    const msgpack::object& o = unpacked->get();
    if (o.type != msgpack::type::ARRAY || o.via.array.size != 6) {
      return MakeError(ErrorCode::kProtocol, "gossip: a message that is not a 6-element array");
    }
    const msgpack::object* f = o.via.array.ptr;
    auto magic = wire::BytesArg(f[0], "magic");
    if (!magic || *magic != kMagic) return MakeError(ErrorCode::kProtocol, "gossip: a message without the magic");
    auto version = wire::UintArg(f[1], "version");
    if (!version || *version != kVersion) {
      return MakeError(ErrorCode::kProtocol, "gossip: a message of version " +
                                                 (version ? std::to_string(*version) : std::string("?")) +
                                                 " (this limiter speaks " + std::to_string(kVersion) + ")");
    }
    auto sender = wire::BytesArg(f[2], "sender");
    auto incarnation = wire::UintArg(f[3], "incarnation");
    auto seq = wire::UintArg(f[4], "seq");
    if (!sender || sender->empty() || sender->size() > kMaxSenderBytes || !incarnation || !seq ||
        f[5].type != msgpack::type::ARRAY) {
      return MakeError(ErrorCode::kProtocol, "gossip: a message with a bad header");
    }
    const msgpack::object_array& entries = f[5].via.array;
    if (entries.size > kMaxEntriesPerMessage) {
      return MakeError(ErrorCode::kProtocol, "gossip: from " + std::string(*sender) + ": " +
                                                 std::to_string(entries.size) + " entries (at most " +
                                                 std::to_string(kMaxEntriesPerMessage) + ")");
    }
    const auto metas = Metas();  // the rules this host counts by
    // Every entry is checked before any is applied: a bad message changes nothing.
    struct Entry {
      uint64_t id, meta;
      int64_t window;
      uint64_t total;
    };
    std::vector<Entry> parsed;
    parsed.reserve(entries.size);
    for (uint32_t i = 0; i < entries.size; ++i) {
      const msgpack::object& e = entries.ptr[i];
      if (e.type != msgpack::type::ARRAY || e.via.array.size != 4) {
        return MakeError(ErrorCode::kProtocol, "gossip: from " + std::string(*sender) + ": entry " + std::to_string(i) +
                                                   " is not [id, meta, window, total]");
      }
      auto id = wire::UintArg(e.via.array.ptr[0], "id");
      auto meta = wire::UintArg(e.via.array.ptr[1], "meta");
      auto window = wire::IntArg(e.via.array.ptr[2], "window");
      auto total = wire::UintArg(e.via.array.ptr[3], "total");
      // A meta of this host's policy is additive with a window above 0.
      const bool valid = id && *id != 0 && meta && window && total && metas->count(*meta) != 0 && *window >= 0 &&
                         *window % LimiterEngine::WindowOf(*meta) == 0;
      if (!valid) {
        return MakeError(ErrorCode::kProtocol, "gossip: from " + std::string(*sender) + ": entry " + std::to_string(i) +
                                                   " is not a window count");
      }
      parsed.push_back(Entry{*id, *meta, *window, *total});
    }
    if (*sender == options_.node_id && *incarnation == incarnation_) return {};  // our own, looped back
    std::pair<std::string, uint64_t> who{std::string(*sender), *incarnation};
    auto it = senders_.find(who);
    if (it == senders_.end()) {
      if (senders_.size() >= kMaxSenders) {
        return MakeError(ErrorCode::kProtocol, "gossip: " + std::to_string(kMaxSenders) +
                                                   " senders already; refusing counts from a new one, " + who.first);
      }
      it = senders_.emplace(std::move(who), Sender{}).first;
      newcomer_ = true;  // a host that joined or restarted: it learns the open windows from the next snapshot
      sender_count_.store(senders_.size(), std::memory_order_relaxed);
    }
    if (heard_.size() < kMaxSenders || heard_.count(it->first.first) != 0) heard_[it->first.first] = clock_.NowMs();
    Sender& s = it->second;
    s.last_heard = Steady::now();
    if (s.last_seq != 0 && *seq > s.last_seq + 1) gaps_.fetch_add(*seq - s.last_seq - 1, std::memory_order_relaxed);
    s.last_seq = std::max(s.last_seq, *seq);
    const int64_t now = clock_.NowMs();
    for (const Entry& e : parsed) {
      // `meta` is one of this host's own rules (checked above): the window
      // length is a sane one, and the sum in Closed cannot overflow.
      if (Closed(e.window, e.meta, now)) continue;
      if (e.window > now + kMaxSkew.count()) {  // ahead of this host's clock by more than NTP allows
        skipped_.fetch_add(1, std::memory_order_relaxed);
        ReportOnce("future:" + std::string(*sender),
                   "gossip: " + std::string(*sender) + " counts in a window " + std::to_string(e.window - now) +
                       " ms ahead of this host's clock; skipped (are the hosts' clocks synchronized?)");
        continue;
      }
      const WindowKey key{e.id, e.window};
      auto found = s.seen.find(key);
      const uint64_t already = found == s.seen.end() ? 0 : found->second.total;
      if (e.total <= already) continue;
      if (found == s.seen.end() && s.seen.size() >= options_.capacity) {
        ReportOnce("seen-full", "gossip: " + std::string(*sender) + " sends more counters than this host's capacity (" +
                                    std::to_string(options_.capacity) + "); the rest are skipped");
        skipped_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      if (auto ok = engine_.AddCounted(e.id, e.meta, e.window, e.total - already); !ok) {
        ReportOnce("apply:" + ok.error().message.substr(0, 32),
                   "gossip: counts from " + std::string(*sender) + " not applied: " + ok.error().message);
        continue;  // NO_SPACE: the table is full; the next total tries again
      }
      applied_.fetch_add(e.total - already, std::memory_order_relaxed);
      Sender::Seen& seen = found == s.seen.end() ? s.seen[key] : found->second;
      seen.meta = e.meta;
      seen.total = e.total;
    }
    return {};
  }

  // Forgets the windows that no longer limit anything.
  void Expire() {
    const int64_t now = clock_.NowMs();
    for (auto it = own_.begin(); it != own_.end();) {
      it = Closed(it->first.window, it->second.meta, now) ? own_.erase(it) : std::next(it);
    }
    const auto idle_since = Steady::now() - kSenderIdle;
    for (auto sender = senders_.begin(); sender != senders_.end();) {
      auto& seen = sender->second.seen;
      for (auto it = seen.begin(); it != seen.end();) {
        it = Closed(it->first.window, it->second.meta, now) ? seen.erase(it) : std::next(it);
      }
      const bool forget = seen.empty() && sender->second.last_heard < idle_since;
      sender = forget ? senders_.erase(sender) : std::next(sender);
    }
    sender_count_.store(senders_.size(), std::memory_order_relaxed);
  }

  // Reports `line` the first time a problem of `kind` is seen.
  void ReportOnce(const std::string& kind, const std::string& line) {
    if (reported_.size() < 1024 && reported_.insert(kind).second) Report(line);
  }

  void Report(const std::string& line) const {
    if (options_.on_error) {
      options_.on_error(line);
    } else {
      std::fprintf(stderr, "cachet: %s\n", line.c_str());
    }
  }

  LimiterEngine engine_;
  const cachet::Clock& clock_;
  GossipOptions options_;
  uint64_t incarnation_ = 0;
  zmq::context_t context_{1};
  // After context_, before the sockets they watch: the sync thread's alone.
  zap::ZapHandler zap_{context_};  // bound only with CURVE
  zap::SocketMonitor pub_monitor_{context_}, sub_monitor_{context_};
  zap::RefusalLog refusals_;
  zmq::socket_t pub_, sub_;
  std::string endpoint_;
  std::thread thread_;
  std::atomic<bool> stop_{false};

  // The policy as declared, and its variants by the number of hosts alive
  // (they differ only in local rules' limits).
  std::mutex policy_mu_;
  RateLimitPolicy policy_;                                    // guarded by policy_mu_
  bool by_hosts_ = false;                                     // guarded by policy_mu_: local rules or share_remaining
  uint64_t hosts_ = 1;                                        // guarded by policy_mu_
  std::map<uint64_t, const detail::CompiledPolicy*> shares_;  // guarded by policy_mu_; owned by engine_
  std::atomic<uint64_t> live_hosts_{1};
  int64_t started_ms_ = 0;

  mutable std::mutex metas_mu_;
  std::shared_ptr<const std::set<uint64_t>> metas_;  // guarded by metas_mu_
  std::mutex peers_mu_;
  std::optional<std::vector<std::string>> pending_peers_;  // guarded by peers_mu_

  // The sync thread's alone:
  std::set<std::string> peers_;
  std::unordered_map<WindowKey, Own, WindowKeyHash> own_;
  // Weights' extras collected at the last sync, to take back at the next.
  std::unordered_map<WindowKey, Extra, WindowKeyHash> extras_;
  std::map<std::pair<std::string, uint64_t>, Sender> senders_;  // by (node id, incarnation)
  std::unordered_map<std::string, int64_t> heard_;              // node id -> last heard (clock ms)
  std::set<std::string> reported_;                              // kinds of problems already reported
  uint64_t seq_ = 0;
  std::atomic<uint64_t> resubscriptions_{0};
  bool newcomer_ = false;  // since the last sync: a sender heard for the first time, or a subscriber (re)connected

  std::atomic<uint64_t> retracted_{0}, bytes_sent_{0}, refused_{0}, failed_handshakes_{0};
  std::atomic<uint64_t> sent_{0}, received_{0}, applied_{0}, gaps_{0}, malformed_{0}, skipped_{0}, peer_count_{0},
      sender_count_{0};
};

GossipRateLimiter::GossipRateLimiter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GossipRateLimiter::~GossipRateLimiter() = default;

Result<std::unique_ptr<GossipRateLimiter>> GossipRateLimiter::Create(RateLimitPolicy policy, GossipOptions options,
                                                                     const cachet::Clock& clock) {
  if (auto ok = options.Validate(); !ok) return tl::unexpected(ok.error());
  if (auto ok = policy.Validate(CheckShareable); !ok) return tl::unexpected(ok.error());
  auto table = CounterTable::CreatePrivate(options.capacity);
  if (!table) return tl::unexpected(table.error());
  auto impl = std::make_unique<Impl>(std::move(*table), clock, std::move(options));
  impl->SetPolicy(std::move(policy));
  if (auto ok = impl->Start(); !ok) return tl::unexpected(ok.error());
  return std::unique_ptr<GossipRateLimiter>(new GossipRateLimiter(std::move(impl)));
}

Result<Decision> GossipRateLimiter::Check(std::string_view key, std::string_view tier, uint64_t cost) {
  return impl_->engine().Check(key, tier, cost);
}

Result<void> GossipRateLimiter::SetPolicy(RateLimitPolicy policy) {
  if (auto ok = policy.Validate(CheckShareable); !ok) return ok;
  impl_->SetPolicy(std::move(policy));
  return {};
}

Result<void> GossipRateLimiter::SetPeers(std::vector<std::string> peers) {
  if (auto ok = CheckPeers(peers); !ok) return ok;
  impl_->SetPeers(std::move(peers));
  return {};
}

Result<void> GossipRateLimiter::Apply(const PolicyFile& file) {
  if (file.peers) {
    if (auto ok = CheckPeers(*file.peers); !ok) return ok;
  }
  if (auto ok = SetPolicy(file.policy); !ok) return ok;
  if (file.peers) impl_->SetPeers(*file.peers);
  return {};
}

const std::string& GossipRateLimiter::endpoint() const { return impl_->endpoint(); }
const std::string& GossipRateLimiter::node_id() const { return impl_->node_id(); }
GossipStats GossipRateLimiter::Stats() const { return impl_->Stats(); }

}  // namespace cachet
