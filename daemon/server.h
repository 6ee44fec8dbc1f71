// Server: cachetd's request loop. One thread owns the ZeroMQ ROUTER socket
// (bound to the ipc and tcp endpoints) and is the cache's only writer.
// Signal handlers only set flags; the loop acts on them between requests.
#pragma once

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "cachet/cache.h"
#include "cachet/rate_limiter.h"
#include "config.h"
#include "reply_backlog.h"
#include "server_stats.h"
#include "zap_handler.h"

namespace spdlog {
class logger;
}

namespace cachet::wire {
struct Request;
class Writer;
}  // namespace cachet::wire

namespace cachet::daemon {

class Authenticator;
struct AuthorizedKey;
class MetricsEndpoint;
class ClusterNode;
class StreamListener;
class Replication;
struct HeldReply;
struct CommitWait;

// Set from signal handlers (async-signal-safe), read by the loop.
struct Signals {
  volatile std::sig_atomic_t stop = 0;
  volatile std::sig_atomic_t reload = 0;
};

class Server {
 public:
  Server(DaemonConfig config, std::vector<std::string> args, std::shared_ptr<spdlog::logger> logger, Signals& signals);
  ~Server();

  // Binds every configured endpoint, before the segment is made; fails with
  // the endpoint and the reason (and then has logged nothing).
  Result<void> Bind();
  // With cluster settings: registers this node and follows the cluster
  // (ClusterNode), serving `cache`, which must outlive the server; fails with
  // the reason. Nothing to do for a single node.
  Result<void> JoinCluster(Cache& cache);
  // Serves `cache` until SIGTERM/SIGINT; returns the process exit code.
  int Run(std::unique_ptr<Cache> cache);
  // Gives the named segment the configured mode and group (access-mode,
  // access-group); fails with the reason.
  Result<void> SecureSegment(const std::string& name);
  // In process, without sockets (the fuzz target tests/fuzz/fuzz_server.cc):
  // ServeInProcess gives the server `cache` as Run does, and Answer writes
  // into `out` the reply Run's loop makes for one request frame of at most
  // max-frame bytes. Not for a server that Runs or is in a cluster.
  void ServeInProcess(std::unique_ptr<Cache> cache);
  void Answer(const char* data, size_t size, wire::Writer& out);

 private:
  // Takes one message off the socket and answers it; true if it was a
  // request (answered, or held for a commit), with its op row and reply
  // status left in op_row_ and reply_status_.
  bool HandleMessage();
  // HandleMessage, and with metrics on its request counted and timed from
  // `since` (when the loop took it up), which it moves to now: one clock
  // read per message.
  void ServeMessage(std::chrono::steady_clock::time_point& since);
  // One request frame off the stream endpoint, answered into `out`; counted
  // and timed as ServeMessage does, from stream_since_. [data, data + size)
  // is only the frame's head when frame_size is over max-frame.
  void ServeStreamFrame(const char* data, size_t size, uint64_t frame_size, wire::Writer& out);
  // The request's metrics, timed from `since`, which moves to now.
  void CountRequest(std::chrono::steady_clock::time_point& since);
  // FRAME_TOO_LARGE into `out` for a frame of frame_size bytes over
  // max-frame, to the id read from [data, data + size); true if it was.
  bool RefuseLargeFrame(const char* data, size_t size, uint64_t frame_size, wire::Writer& out);
  // The counters as of now, for the metrics endpoint.
  std::shared_ptr<const MetricsSnapshot> TakeSnapshot();
  void Handle(const char* data, size_t size, wire::Writer& out);
  struct Call;  // server.cc
  void Dispatch(const Call& call, wire::Writer& out);
  void WriteStats(wire::Writer& out);
  void WriteClusterView(wire::Writer& out);
  void SlotDump(const Call& call, wire::Writer& out);
  Result<void> Reload();
  // Reads the rate-limit policy file; when its text differs from the last
  // read, runs it (AdoptPolicy) and, in a cluster, makes it the cluster's.
  Result<void> LoadPolicy(const std::string& path);
  // Parses `text` and runs it: the RATELIMIT limiter's limits (counters
  // kept) and what `pub` publishes. `source` names it in the log. An error
  // changes nothing.
  Result<void> AdoptPolicy(const std::string& text, const std::string& source);
  // Cluster: runs the cluster's policy when etcd holds a newer one than the
  // node last followed (from Tick, so within ~100 ms of the change).
  void FollowClusterPolicy();
  Result<std::unique_ptr<RateLimiter>> OpenLimiter(const RateLimitPolicy& policy);
  void PublishPolicy();
  // The segment's writer lock for one request's writes, or BUSY (logged
  // once) while a same-host client holds it too long.
  Result<Cache::WriterLease> LeaseWriterLock();
  // SetClientWrites without waiting on the lock past `wait`; false (logged
  // once) if it stayed held.
  bool SetClientWritesBounded(bool grant, std::chrono::milliseconds wait);
  // At stop: revoke, or if the lock stays held, end the heartbeat.
  void RevokeClientWritesForGood();
  // Grants same-host clients direct writes to the segment, or revokes
  // them, as the configuration and cluster membership say; logs a change
  // (and, `starting`, the state).
  void GrantClientWrites(bool starting);
  void Tick();
  // Reads a socket monitor's events: connections counted (the router's
  // only) and handshakes that failed before the ZAP handler saw them.
  void DrainMonitor(zap::SocketMonitor& monitor, bool counts_clients);
  // Security settings at start: the ZAP handler, keys, and the access of
  // the ipc socket files (the segments' is set by SecureSegment).
  Result<void> StartAuthentication();
  // config_.max_connections to the ZAP handler and to the open-file limit.
  void ApplyMaxConnections();
  // Raises the soft open-file limit to what max-connections needs, within
  // the hard limit; logs what it did or could not do.
  void FitOpenFileLimit();
  Result<std::vector<AuthorizedKey>> ReadAuthorizedKeys(const DaemonConfig& config);
  void AdmitKeys(std::vector<AuthorizedKey> keys, const DaemonConfig& config);
  Result<void> SecureIpcFile(const std::string& endpoint);
  void SendReply(std::string_view routing_id, bool req_envelope, const char* data, size_t size);
  // Cluster: the replication's turn in the loop (released replies sent).
  // True while it has more to send at once.
  bool PumpReplication();
  void SendHeld(std::vector<HeldReply>& replies);

  DaemonConfig config_;
  const std::vector<std::string> args_;  // the command line, re-read on reload
  std::unique_ptr<Cache> cache_;
  std::unique_ptr<ClusterNode> cluster_;
  // Filled by Dispatch when the reply must wait for writes to commit
  // (strong mode); with the request's id.
  std::vector<CommitWait> waits_;
  std::vector<zmq::pollitem_t> poll_items_;  // the loop's, rebuilt each turn
  uint64_t waits_request_ = 0;
  std::string bound_tcp_;  // the tcp endpoint as bound  // set when in a cluster; refers to *cache_
  std::unique_ptr<RateLimiter>
      limiter_;  // decides RATELIMIT requests; set with the policy; counts in RateLimitSegment()
  std::shared_ptr<spdlog::logger> log_;
  Signals& signals_;
  ReplyBacklog backlog_;  // before context_: its messages live until the context ends
  zmq::context_t context_{1};
  // Before the sockets it authenticates, so that it is bound first and
  // closed last; after context_, as its socket must close before it ends.
  std::unique_ptr<Authenticator> auth_;
  // The client of the request being handled when it came over CURVE (its
  // permissions); null otherwise. Points into auth_, valid until the next
  // message (keys change only between messages).
  const AuthorizedKey* caller_ = nullptr;
  std::string public_key_;  // this daemon's CURVE key (Z85); empty without CURVE
  std::string secret_key_;
  gid_t access_group_ = static_cast<gid_t>(-1);
  zmq::socket_t router_;
  // The stream endpoint (plain TCP, no ZeroMQ), when configured.
  std::unique_ptr<StreamListener> stream_;
  std::chrono::steady_clock::time_point stream_since_;
  // With cluster_, which it refers to; after context_, as its sockets must
  // close before the context ends.
  std::unique_ptr<Replication> replication_;
  zap::SocketMonitor monitor_;                     // router_'s connections and failed handshakes
  zmq::socket_t pub_;                              // publishes the rate-limit policy when configured
  std::optional<zap::SocketMonitor> pub_monitor_;  // pub_'s failed handshakes, when pub_ is bound
  std::string policy_text_;                        // the policy being run and published
  std::string file_policy_text_;                   // the policy file's text as last read; empty before the first read
  uint64_t followed_policy_revision_ = 0;          // cluster: the etcd revision of the cluster policy last considered
  uint64_t policy_version_ = 0;  // PolicySubscriber::VersionOf(policy_text_): the same across restarts
  std::chrono::steady_clock::time_point last_publish_;
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point last_tick_;
  // The socket files of this daemon's ipc endpoints, which ZeroMQ leaves
  // behind: removed at stop and after a failed start, but each only while
  // it is still the file this daemon bound (same device and inode), never
  // a socket another process has bound at that path since.
  struct IpcFile {
    std::string path;
    uint64_t device = 0;
    uint64_t inode = 0;
  };
  std::vector<IpcFile> ipc_files_;
  void NoteIpcFile(const std::string& endpoint);
  void RemoveIpcFiles();

  // Counters for STATS.
  uint64_t requests_ = 0;
  uint64_t errors_ = 0;
  uint64_t dropped_frames_ = 0;
  uint64_t denied_requests_ = 0;    // PERMISSION_DENIED replies
  bool writer_lock_stuck_ = false;  // a write found the writer lock held past kWriterLockWait
  uint64_t busy_replies_ = 0;       // BUSY: requests not run, their connection owed max-in-flight replies
  uint64_t dropped_replies_ = 0;    // not sent: the client owed too much (backlog_) or had gone
  uint64_t dropped_replies_reported_ = 0;
  std::chrono::steady_clock::time_point last_drop_report_;
  uint64_t reloads_ = 0;
  uint64_t redirects_ = 0;  // MOVED, ASK and CLUSTER_DOWN replies
  int64_t connected_clients_ = 0;
  uint64_t requests_at_last_second_ = 0;
  double ops_per_second_ = 0;
  std::chrono::steady_clock::time_point last_rate_;

  // Metrics (docs/operations.md, "Monitor"); counted only while metrics_ is
  // set. The loop alone touches request_stats_; board_ is shared with the
  // endpoint's threads, and outlives them (metrics_ is destroyed first).
  RequestStats request_stats_;
  size_t op_row_ = kInvalidOpRow;            // of the request being handled
  ErrorCode reply_status_ = ErrorCode::kOk;  // of its reply
  SnapshotBoard board_;
  std::unique_ptr<MetricsEndpoint> metrics_;
};

}  // namespace cachet::daemon
