// cachet::GossipRateLimiter: one limit across many hosts at in-process
// speed. Each host decides locally, in its own counter table, and tells its
// peers over ZeroMQ PUB/SUB what it counted; every host adds its peers'
// counts to its own table, so each sees (about) the global count.
//
//   cachet::GossipOptions g;
//   g.bind = "tcp://10.0.0.1:7400";                       // this host's PUB
//   g.peers = {"tcp://10.0.0.2:7400", "tcp://10.0.0.3:7400"};
//   g.curve = *cachet::ReadCurveKeyFile("gossip.key", true);  // shared by the peers
//   auto limiter = cachet::GossipRateLimiter::Create(policy, g);
//   auto d = (*limiter)->Check(api_key, "premium");
//
// Every sync interval (default 10 ms) a background thread publishes, for
// each counter this host counted in since the last time, its own total in
// the window (not a delta): a peer applies what exceeds the total it has
// already seen from this host, so a message that is lost, repeated or late
// loses or doubles nothing; the next one carries the total again. Every
// snapshot interval (default 1 s) it publishes all its totals of the
// windows still open, which is how a peer that missed messages, joined or
// restarted catches up; a peer whose connection comes back (a healed
// partition) gets one at the next sync. Each message carries the sender's id, a number
// drawn when it started (a restarted sender counts afresh, beside what its
// peers already took from its previous life) and a sequence number (gaps
// are counted in the stats).
//
// Between two syncs a host knows nothing of its peers' newest counts: with
// H hosts, sync interval I and a combined rate R, up to about R * I requests
// can be admitted over the limit per window (docs/design.md derives it).
//
// Only rules whose counts add up across hosts are shared: fixed and
// sliding windows (Create refuses token buckets and sliding logs, unless
// local). Windows are aligned to the wall clock, so hosts need
// synchronized clocks (NTP).
//
// A rule marked `local` (Rule::local; "local" in a policy file) is not
// shared: each host admits its share, the limit divided by the hosts
// alive (this one and the peers heard from within peer_timeout), rounded
// down. No counts travel and nothing is over-admitted while the hosts
// alive stay the same; when one dies the others' shares grow after
// peer_timeout, and a host that joins makes them shrink. Every host sends
// at least one message per snapshot interval, so its peers know it lives.
//
// Security (docs/operations.md, "Securing gossip"): with `curve`, the peers
// share one CURVE key pair (`cachectl keygen`): each one's PUB is a CURVE
// server with the pair's secret key, its SUB connects as a CURVE client
// with the pair as its own keys and the pair's public key as the server's,
// and a ZAP handler on the sync thread admits only connections made with
// the pair's public key. Counts are then encrypted, and only a holder of
// the secret key can send or read them. Without `curve`, a bind endpoint
// other hosts can reach (not loopback, ipc or inproc) is refused unless
// `insecure` is set, which warns once through on_error. One shared pair
// means a key is changed on every host at once: a host with the new key and
// one with the old exchange no counts (each limits alone) until all have
// restarted with the new one.
//
// Thread safety: every method may be called from any thread. A dead or slow
// peer never blocks a decision: decisions touch only the local table.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cachet/clock.h"
#include "cachet/curve.h"
#include "cachet/policy_file.h"
#include "cachet/rate_limiter.h"
#include "cachet/result.h"

namespace cachet {

struct GossipOptions {
  // Unique among the peers; default: hostname:pid.
  std::string node_id;
  // Where this limiter's PUB socket binds (tcp://host:port; port 0 picks a
  // free one, see endpoint()).
  std::string bind = "tcp://127.0.0.1:0";
  // The peers' PUB endpoints. SetPeers changes them at run time.
  std::vector<std::string> peers;
  std::chrono::milliseconds sync_interval{10};
  std::chrono::milliseconds snapshot_interval{1000};
  // A peer unheard for this long is taken for dead (local rules' shares
  // grow). At least twice snapshot_interval.
  std::chrono::milliseconds peer_timeout{3000};
  // Keeps over-admission near zero on shared rules: until its peers have
  // had a sync interval to report theirs, a host counts each admission as
  // many times as there are hosts alive (it presumes each peer admits as
  // much meanwhile), so between two syncs the hosts together spend about
  // the quota that is left, each its share. The extra is taken back at the
  // next sync. The cost: a host with all the traffic spends the last of a
  // window more slowly (a 1/H share of what is left per interval), and up
  // to H - 1 requests may still pass at the very end of a window.
  bool share_remaining = false;
  // (key, rule) counters alive at once in this host's table.
  uint64_t capacity = uint64_t{1} << 20;
  // The key pair the peers share (`cachectl keygen NAME` writes it to
  // NAME.key; ReadCurveKeyFile(path, true) reads it). Empty: plaintext.
  CurveKeyPair curve;
  // Without `curve`, serve a bind endpoint other hosts can reach in clear
  // text (anyone who reaches it reads the counts, and anyone who can pose
  // as a peer adds counts of their own). Warns once, through on_error.
  bool insecure = false;
  // Problems of the sync thread (a peer that cannot be reached, a malformed
  // message, once per kind): by default a line on stderr.
  std::function<void(const std::string& line)> on_error;

  Result<void> Validate() const;
};

struct GossipStats {
  RateLimiterStats local;
  uint64_t messages_sent = 0;
  uint64_t bytes_sent = 0;  // msgpack payload published (before ZeroMQ's framing)
  uint64_t messages_received = 0;
  uint64_t counts_applied = 0;      // cost units taken from peers
  uint64_t sequence_gaps = 0;       // messages from a peer that never arrived
  uint64_t malformed_messages = 0;  // refused whole, each kind logged once
  uint64_t skipped_entries = 0;     // counts for a window over a window ahead of this host's clock
  uint64_t peers = 0;               // connected PUB endpoints
  uint64_t senders = 0;             // distinct senders heard from
  uint64_t subscriptions = 0;       // peers' (re)connections heard, each answered with a snapshot
  uint64_t live_hosts = 1;          // this host and the peers heard from within peer_timeout
  uint64_t retracted = 0;           // share_remaining: extra counts taken back
  // CURVE: connections to this host's PUB refused by its ZAP handler (a
  // client key other than the peers' shared one).
  uint64_t refused_connections = 0;
  // Handshakes that failed on either socket: a plaintext peer meeting a
  // CURVE one, a peer with another key pair. Each refusal and failure is
  // logged once per connection through on_error, a few lines a minute.
  uint64_t failed_handshakes = 0;
};

class GossipRateLimiter {
 public:
  static Result<std::unique_ptr<GossipRateLimiter>> Create(RateLimitPolicy policy, GossipOptions options,
                                                           const Clock& clock = CoarseClock::Instance());
  ~GossipRateLimiter();
  GossipRateLimiter(const GossipRateLimiter&) = delete;
  GossipRateLimiter& operator=(const GossipRateLimiter&) = delete;

  // As RateLimiter::Check.
  Result<Decision> Check(std::string_view key, std::string_view tier, uint64_t cost = 1);
  // Validates and installs a new policy; counters of unchanged rules stay.
  Result<void> SetPolicy(RateLimitPolicy policy);
  // Connects to `peers` and drops the others (membership changes).
  Result<void> SetPeers(std::vector<std::string> peers);
  // A policy file's policy, and its [peers] if it has the section; both or
  // neither. A PolicySubscriber's installer:
  //   PolicySubscriber::Start(daemon_pub, [&](const PolicyFile& f) { return limiter->Apply(f); });
  Result<void> Apply(const PolicyFile& file);

  // The PUB endpoint peers connect to (the port bound when `bind` had 0).
  const std::string& endpoint() const;
  const std::string& node_id() const;
  GossipStats Stats() const;

  class Impl;

 private:
  explicit GossipRateLimiter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachet
