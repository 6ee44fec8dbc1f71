// cachetd's configuration: defaults that work out of the box, an INI-style
// file (--config), and a command-line flag for every setting; a flag wins
// over the file. Parsing never throws: errors come back as one line.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cachet/cache.h"
#include "cachet/curve.h"
#include "cachet/result.h"
#include "stream.h"

namespace cachet::daemon {

// Membership of a cluster (cluster_node.h); all empty for a single node.
struct ClusterSettings {
  std::string name;       // empty: not in a cluster
  std::string node_id;    // unique in the cluster; stays the same across restarts
  std::string advertise;  // tcp:// endpoint other nodes and clients reach this node at
  std::string etcd;       // etcd client URLs, comma-separated
  // Cluster-wide, fixed when the cluster is made (the first node writes them
  // to etcd; later nodes take etcd's): copies of every shard wanted, and
  // whether a write is acknowledged after a majority of them hold it.
  uint32_t replication = 3;
  bool strong = true;
  // How this node connects to the others (replication, imports): as a
  // CURVE client with the key pair the cluster's nodes share. Set from
  // curve-secret-key at start; empty: plaintext.
  CurveClientKeys curve;

  bool enabled() const { return !name.empty(); }
  Result<void> Validate() const;
};

enum class HugePages { kAuto, kOn, kOff };

struct DaemonConfig {
  std::string config_file;                      // empty: defaults and flags only
  std::string segment = "cachet";               // shared-memory name (/dev/shm/cachet)
  std::string ipc = "ipc:///tmp/cachetd.sock";  // empty: no ipc endpoint
  std::string tcp = "tcp://127.0.0.1:7379";     // empty: no tcp endpoint
  // host:port of the stream endpoint (StreamListener: plain TCP, no
  // ZeroMQ, clear text); empty: none.
  std::string stream;
  uint64_t capacity_bytes = 64ull << 20;
  uint64_t max_entries = 0;  // 0: capacity / 64
  uint32_t max_key_size = 250;
  uint32_t max_value_size = 1u << 20;
  EvictionPolicy policy = EvictionPolicy::kS3Fifo;
  uint64_t max_frame_bytes = 0;  // 0: enough for an MSET of 64 max-size items
  std::string log_level = "info";
  std::string log_file;  // empty: stderr
  bool remove_segment_on_exit = false;
  std::string rate_limit_policy;                     // policy file for rate limiters; empty: none
  uint64_t rate_limit_capacity = uint64_t{1} << 20;  // counters the RATELIMIT op keeps at once
  std::string pub;                                   // PUB endpoint that publishes the policy; empty: none
  // Reply bytes waiting unsent for one connection, and for all of them,
  // before further replies are dropped (ReplyBacklog).
  uint64_t reply_backlog_per_client = uint64_t{16} << 20;
  uint64_t reply_backlog_total = uint64_t{256} << 20;
  ClusterSettings cluster;
  // Security (docs/operations.md, "Secure"). With a key file, the tcp and
  // pub endpoints speak CURVE and admit only the client keys listed in
  // curve_authorized_keys (reloaded on SIGHUP). Without, a tcp or pub
  // endpoint on an address other than loopback is refused unless insecure.
  std::string curve_secret_key;       // this daemon's key pair (cachectl keygen); shared by a cluster's nodes
  std::string curve_authorized_keys;  // public keys admitted, one per line
  bool insecure = false;              // serve a non-loopback endpoint in clear text (logs a warning)
  // Who may attach: the ipc socket files, the segment and the rate-limit
  // table get this mode and group.
  mode_t access_mode = 0600;
  std::string access_group;  // empty: the daemon's own group
  // Connections served at once; more are refused at their handshake.
  uint64_t max_connections = 4096;
  // Replies one connection may leave unread: while it owes that many, its
  // further requests are answered BUSY and not run (reloadable).
  static constexpr uint64_t kMaxInFlight = 1000000;
  uint64_t max_in_flight = 1024;
  std::string log_format = "text";  // or "json": one object per line
  // Where the segment lives: on a hugetlbfs mount (huge pages: fewer TLB
  // misses on a large cache), or in /dev/shm. kAuto takes huge pages when a
  // mount has room for the whole segment and says in the log why not
  // otherwise; kOn refuses to start without them.
  HugePages huge_pages = HugePages::kAuto;
  std::string huge_pages_dir;  // empty: the first hugetlbfs mount in /proc/mounts
  // Same-host clients write the segment directly while the daemon grants it
  // (Cache::SetClientWrites): only a standalone daemon with this on does.
  bool same_host_writes = true;
  // host:port of the Prometheus endpoint (GET /metrics over HTTP); port 0
  // picks a free one; empty: none. It has no authentication, so an address
  // other than loopback needs insecure.
  std::string metrics;

  bool curve() const { return !curve_secret_key.empty(); }
  CacheOptions CacheOptionsFor() const;
  // The shared-memory table of the RATELIMIT counters, beside the segment.
  std::string RateLimitSegment() const { return segment + "-ratelimit"; }
  uint64_t EffectiveMaxFrame() const;
  Result<void> Validate() const;
};

// What the command line asked for besides running.
enum class Action { kRun, kHelp, kVersion };

struct Parsed {
  Action action = Action::kRun;
  DaemonConfig config;
  std::string help_text;
};

// Parses `args` (without the program name) and the file named by --config.
Result<Parsed> ParseConfig(const std::vector<std::string>& args);

// "256MiB", "64k", "1G", "4096" -> bytes.
Result<uint64_t> ParseSize(const std::string& text);

// The metrics and stream settings' "host:port" or "[v6]:port".
using stream::SplitHostPort;

// Settings that differ between two configs and need a restart to apply.
std::vector<std::string> RestartOnlyChanges(const DaemonConfig& running, const DaemonConfig& loaded);

}  // namespace cachet::daemon
