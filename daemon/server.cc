#include "server.h"

#include <grp.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cstring>

#include <fstream>
#include <sstream>

#include "cachet/cluster/slot.h"
#include "cachet/counter_table.h"
#include "cachet/curve.h"
#include "cachet/policy_file.h"
#include "cachet/policy_subscriber.h"
#include "cachet/segment_access.h"

#include "../libclient/src/protocol.h"
#include "../libclient/src/zmq_io.h"
#include "auth.h"
#include "cluster_node.h"
#include "metrics_endpoint.h"
#include "replication.h"
#include "segment_place.h"
#include "stream_listener.h"

namespace cachet::daemon {

using wire::Op;

namespace {

constexpr std::chrono::milliseconds kTick{100};
// How long a write waits for the segment's writer lock held by a same-host
// client before it is answered BUSY; while the lock stays held, how long the
// writes after it wait.
constexpr std::chrono::milliseconds kWriterLockWait{250};
constexpr std::chrono::milliseconds kStuckWriterLockWait{0};
// A cluster node's longest wait in poll: replies held for a commit and
// probes of followers are timed.
constexpr std::chrono::milliseconds kClusterTick{10};
// On stop, requests still arriving are answered for at most this long.
constexpr std::chrono::milliseconds kDrainLimit{2000};
constexpr size_t kReclaimBucketsPerTick = 512;
constexpr size_t kReclaimCountersPerTick = 512;
constexpr int kMaxMessagesPerWake = 1024;
// Requests ZeroMQ queues per connection before it stops reading that
// connection (see Bind).
constexpr int kQueuedRequestsPerConnection = 64;
constexpr const char* kMonitorEndpoint = "inproc://cachetd-monitor";
constexpr const char* kPubMonitorEndpoint = "inproc://cachetd-pub-monitor";
constexpr int kHandshakeFailures = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL;

Error Arity(Op op, uint32_t min, uint32_t max, uint32_t got) {
  std::string want = min == max ? std::to_string(min) : std::to_string(min) + " to " + std::to_string(max);
  if (max == UINT32_MAX) want = "at least " + std::to_string(min);
  return Error{ErrorCode::kWrongArity,
               std::string(wire::OpName(op)) + " takes " + want + " arguments, got " + std::to_string(got)};
}

}  // namespace

Server::Server(DaemonConfig config, std::vector<std::string> args, std::shared_ptr<spdlog::logger> logger,
               Signals& signals)
    : config_(std::move(config)),
      args_(std::move(args)),
      log_(std::move(logger)),
      signals_(signals),
      backlog_(config_.reply_backlog_per_client, config_.reply_backlog_total),
      auth_(std::make_unique<Authenticator>(context_, log_)),
      router_(context_, zmq::socket_type::router),
      monitor_(context_),
      pub_(context_, zmq::socket_type::pub) {}

// Also after a start that failed, in Bind or later (no segment, no
// cluster): the sockets are still bound here, closed only with the members.
Server::~Server() { RemoveIpcFiles(); }

Result<void> Server::Bind() {
  // A frame far over the limit is refused by ZeroMQ itself (the peer is
  // disconnected), so no client can make the daemon buffer gigabytes; one a
  // little over gets a FRAME_TOO_LARGE reply from us.
  router_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(config_.EffectiveMaxFrame() * 4));
  router_.set(zmq::sockopt::linger, 1000);
  // Replies: a connection's queue is bounded in bytes by backlog_, and in
  // messages by the high-water mark; with router_mandatory a full or gone
  // peer makes the send fail, so the reply is counted as dropped rather
  // than vanishing. Requests: at most kQueuedRequestsPerConnection wait in
  // a connection's pipe, after which ZeroMQ stops reading it (the rest wait
  // in the kernel and then the sender). The pipe is short for fairness:
  // ZeroMQ's I/O thread fills one connection's pipe before it turns to the
  // next, so a request from a quiet client waits behind at most that many
  // of a flooder's (571 of 1000 with a pipe of 1024; at most 63 with 64).
  router_.set(zmq::sockopt::sndhwm, 100000);
  router_.set(zmq::sockopt::rcvhwm, kQueuedRequestsPerConnection);
  router_.set(zmq::sockopt::router_mandatory, 1);
  // Every handshake, CURVE or not, goes through the ZAP handler, which
  // also enforces max-connections.
  router_.set(zmq::sockopt::zap_domain, "cachet");
  if (auto ok = StartAuthentication(); !ok) return ok;
  if (auto ok =
          monitor_.Watch(router_, kMonitorEndpoint, ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED | kHandshakeFailures);
      !ok) {
    return ok;
  }
  std::vector<std::string> bound;
  // ipc first, in clear (the socket file's mode guards it); then tcp, with
  // CURVE when configured: ZeroMQ takes the security options at each bind.
  for (const std::string& endpoint : {config_.ipc, config_.tcp}) {
    if (endpoint.empty()) continue;
    try {
      if (endpoint == config_.tcp && config_.curve()) zmqio::UseCurveServer(router_, secret_key_);
      zmqio::Bind(router_, endpoint);
    } catch (const zmq::error_t& e) {
      return MakeError(ErrorCode::kIo, "cannot bind " + endpoint + ": " + e.what());
    }
    bound.push_back(router_.get(zmq::sockopt::last_endpoint));
    NoteIpcFile(bound.back());
    if (endpoint == config_.tcp) bound_tcp_ = bound.back();
    if (auto ok = SecureIpcFile(bound.back()); !ok) {
      return ok;
    }
  }
  if (!config_.stream.empty()) {
    auto listening = StreamListener::Listen(
        config_.stream, {config_.EffectiveMaxFrame(), config_.max_connections},
        [this](const char* data, size_t size, uint64_t frame_size, wire::Writer& out) {
          ServeStreamFrame(data, size, frame_size, out);
        },
        log_);
    if (!listening) {
      return tl::unexpected(listening.error());
    }
    stream_ = std::move(*listening);
  }
  if (!config_.pub.empty()) {
    pub_monitor_.emplace(context_);
    if (auto ok = pub_monitor_->Watch(pub_, kPubMonitorEndpoint, kHandshakeFailures); !ok) {
      return ok;
    }
    try {
      pub_.set(zmq::sockopt::linger, 0);
      pub_.set(zmq::sockopt::zap_domain, "cachet");
      if (config_.curve() && config_.pub.rfind("tcp://", 0) == 0) zmqio::UseCurveServer(pub_, secret_key_);
      zmqio::Bind(pub_, config_.pub);
    } catch (const zmq::error_t& e) {
      return MakeError(ErrorCode::kIo, "cannot bind " + config_.pub + ": " + e.what());
    }
    NoteIpcFile(pub_.get(zmq::sockopt::last_endpoint));
    if (auto ok = SecureIpcFile(pub_.get(zmq::sockopt::last_endpoint)); !ok) {
      return ok;
    }
  }
  if (!config_.metrics.empty()) {
    auto started = MetricsEndpoint::Start(config_.metrics, board_);
    if (!started) {
      return tl::unexpected(started.error());
    }
    metrics_ = std::move(*started);
  }
  for (const std::string& endpoint : bound) {
    const bool encrypted = config_.curve() && endpoint.rfind("tcp://", 0) == 0;
    log_->info("listening on {}{}", endpoint, encrypted ? " (CURVE)" : "");
  }
  if (stream_) log_->info("listening on {} (stream: plain tcp, clear text)", stream_->endpoint());
  if (config_.insecure) {
    for (const std::string* endpoint : {&config_.tcp, &config_.pub}) {
      if (endpoint->empty() || IsLoopbackEndpoint(*endpoint) || config_.curve()) continue;
      log_->warn(
          "{} is served in clear text to other hosts (insecure = true): anyone who reaches it can read, "
          "write and flush the cache",
          *endpoint);
    }
  }
  if (!config_.pub.empty()) {
    log_->info("publishing the rate-limit policy on {}", pub_.get(zmq::sockopt::last_endpoint));
  }
  if (metrics_) {
    log_->info("metrics on {}", metrics_->url());
    if (!IsLoopbackEndpoint("tcp://" + config_.metrics)) {
      log_->warn("metrics on {} are served to other hosts without authentication (insecure = true)", config_.metrics);
    }
  }
  if (!config_.rate_limit_policy.empty()) {
    if (auto ok = LoadPolicy(config_.rate_limit_policy); !ok) return ok;
  }
  return {};
}

void Server::ApplyMaxConnections() {
  auth_->SetConnectionLimit(config_.max_connections);
  FitOpenFileLimit();
}

// Every connection, ZeroMQ's or the stream endpoint's, takes a descriptor,
// and out of them accepts fail (libzmq's I/O thread then retries in a busy
// loop). So the soft limit is raised to what max-connections needs, as far
// as the hard limit allows, and a shortfall is logged.
void Server::FitOpenFileLimit() {
  constexpr rlim_t kOwnDescriptors = 256;  // sockets, segments, logs, peers, etcd
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    log_->warn("cannot read the open-file limit: {}", std::strerror(errno));
    return;
  }
  const rlim_t want = static_cast<rlim_t>(config_.max_connections) + kOwnDescriptors;
  if (limit.rlim_cur >= want) return;
  const rlim_t was = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max == RLIM_INFINITY ? want : std::min(want, limit.rlim_max);
  if (limit.rlim_cur > was && setrlimit(RLIMIT_NOFILE, &limit) != 0) limit.rlim_cur = was;
  if (limit.rlim_cur >= want) {
    log_->info("open-file limit raised from {} to {} for max-connections = {}", was, limit.rlim_cur,
               config_.max_connections);
    return;
  }
  log_->warn(
      "open-file limit is {} (hard limit {}), below the {} that max-connections = {} needs: connections past it fail; "
      "raise LimitNOFILE (ulimit -n) or lower max-connections",
      limit.rlim_cur, limit.rlim_max, want, config_.max_connections);
}

Result<void> Server::StartAuthentication() {
  if (!config_.access_group.empty()) {
    const group* g = getgrnam(config_.access_group.c_str());
    if (g == nullptr)
      return MakeError(ErrorCode::kInvalidArgument, "access-group: no group named '" + config_.access_group + "'");
    access_group_ = g->gr_gid;
  }
  if (auto ok = auth_->Start(); !ok) return ok;
  ApplyMaxConnections();
  if (!config_.curve()) return {};
  if (!zmq_has("curve")) {
    return MakeError(ErrorCode::kInvalidArgument, "curve-secret-key is set but this libzmq was built without CURVE");
  }
  auto own = ReadCurveKeyFile(config_.curve_secret_key, true);
  if (!own) return MakeError(own.error().code, "curve-secret-key: " + own.error().message);
  public_key_ = own->public_key;
  secret_key_ = own->secret_key;
  auto keys = ReadAuthorizedKeys(config_);
  if (!keys) return tl::unexpected(keys.error());
  AdmitKeys(std::move(*keys), config_);
  return {};
}

Result<std::vector<AuthorizedKey>> Server::ReadAuthorizedKeys(const DaemonConfig& config) {
  auto keys = LoadAuthorizedKeys(config.curve_authorized_keys);
  if (!keys) return MakeError(keys.error().code, "curve-authorized-keys: " + keys.error().message);
  return keys;
}

void Server::AdmitKeys(std::vector<AuthorizedKey> keys, const DaemonConfig& config) {
  const size_t count = keys.size();
  auth_->SetKeys(std::move(keys), public_key_);
  log_->info("CURVE: admitting {} client keys from {}", count, config.curve_authorized_keys);
}

void Server::NoteIpcFile(const std::string& endpoint) {
  // An abstract socket ("ipc://@name") has no file.
  if (endpoint.rfind("ipc://", 0) != 0 || endpoint.rfind("ipc://@", 0) == 0) return;
  const std::string path = endpoint.substr(6);
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    log_->warn("cannot stat {}, the socket file just bound: {}; it will not be removed at stop", path,
               std::strerror(errno));
    return;
  }
  if (!S_ISSOCK(st.st_mode)) {
    log_->warn("{}, just bound, is not a socket file; it will not be removed at stop", path);
    return;
  }
  ipc_files_.push_back({path, static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)});
}

void Server::RemoveIpcFiles() {
  for (const IpcFile& file : ipc_files_) {
    struct stat st {};
    if (lstat(file.path.c_str(), &st) != 0) continue;  // removed by someone else: nothing to do
    if (!S_ISSOCK(st.st_mode) || static_cast<uint64_t>(st.st_dev) != file.device ||
        static_cast<uint64_t>(st.st_ino) != file.inode) {
      log_->warn("left {} in place: it is no longer the socket this daemon bound", file.path);
      continue;
    }
    if (unlink(file.path.c_str()) != 0 && errno != ENOENT) {
      log_->warn("cannot remove socket file {}: {}", file.path, std::strerror(errno));
    }
  }
  ipc_files_.clear();
}

Result<void> Server::SecureIpcFile(const std::string& endpoint) {
  if (endpoint.rfind("ipc://", 0) != 0) return {};
  const std::string path = endpoint.substr(6);
  if (access_group_ != static_cast<gid_t>(-1) && chown(path.c_str(), static_cast<uid_t>(-1), access_group_) != 0) {
    return MakeError(ErrorCode::kIo,
                     "cannot give " + path + " to group " + config_.access_group + ": " + std::strerror(errno));
  }
  if (chmod(path.c_str(), config_.access_mode) != 0) {
    return MakeError(ErrorCode::kIo, "cannot set the mode of " + path + ": " + std::strerror(errno));
  }
  return {};
}

Result<void> Server::SecureSegment(const std::string& name) {
  return SetSegmentAccess(name, SegmentAccess{config_.access_mode, access_group_});
}

Result<void> Server::LoadPolicy(const std::string& path) {
  std::ifstream in(path);
  if (!in) return MakeError(ErrorCode::kIo, "cannot read rate-limit policy '" + path + "'");
  std::stringstream read;
  read << in.rdbuf();
  const std::string text = read.str();
  if (!file_policy_text_.empty() && text == file_policy_text_) {
    log_->debug("rate-limit policy {} is unchanged", path);
    return {};
  }
  if (auto ok = AdoptPolicy(text, path); !ok) return ok;
  file_policy_text_ = text;
  if (!cluster_) return {};
  // A changed file, SIGHUP'd, becomes the cluster's: every node follows it.
  auto put = cluster_->PutPolicy(text, false);
  if (!put) {
    log_->error("cluster: {}; this node runs {} and the others keep the cluster's policy until it is stored",
                put.error().ToString(), path);
    return {};
  }
  followed_policy_revision_ = *put;
  log_->info("cluster: {} is now the cluster's rate-limit policy (etcd revision {})", path, *put);
  return {};
}

Result<void> Server::AdoptPolicy(const std::string& text, const std::string& source) {
  auto parsed = ParsePolicy(text, source);
  if (!parsed) return tl::unexpected(parsed.error());
  if (limiter_) {
    if (auto ok = limiter_->SetPolicy(parsed->policy); !ok) return ok;
  } else {
    auto made = OpenLimiter(parsed->policy);
    if (!made) return tl::unexpected(made.error());
    limiter_ = std::move(*made);
  }
  if (text == policy_text_) return {};
  policy_text_ = text;
  policy_version_ = PolicySubscriber::VersionOf(policy_text_);
  log_->info("rate-limit policy version {}: {} tiers, {} overrides, {} API keys from {}", policy_version_,
             parsed->policy.tiers.size(), parsed->policy.overrides.size(), parsed->key_tiers.size(), source);
  PublishPolicy();  // now, not at the next tick
  return {};
}

void Server::FollowClusterPolicy() {
  const std::shared_ptr<const ClusterView> view = cluster_->view();
  if (view->policy_revision == followed_policy_revision_) return;
  followed_policy_revision_ = view->policy_revision;
  if (view->policy.empty() || view->policy == policy_text_) return;
  const std::string source = "the cluster's policy (etcd revision " + std::to_string(view->policy_revision) + ")";
  if (auto ok = AdoptPolicy(view->policy, source); !ok) {
    log_->error("cluster: cannot run {}: {}; keeping the running policy", source, ok.error().message);
  }
}

// The RATELIMIT counters live in a table beside the cache segment, so a
// restart (clean, crash or kill -9) continues every window. A table that
// cannot be used, or was made for another rate-limit-capacity, is rebuilt
// empty, and the log says why.
Result<std::unique_ptr<RateLimiter>> Server::OpenLimiter(const RateLimitPolicy& policy) {
  const std::string name = config_.RateLimitSegment();
  const RateLimiterOptions options{config_.rate_limit_capacity};
  auto opened = RateLimiter::Open(name, policy, options);
  if (opened && (*opened)->Stats().capacity == options.capacity) {
    log_->info("rate-limit counters in /{}: {} live of {}", name, (*opened)->Stats().counters, options.capacity);
    if (auto ok = SecureSegment(name); !ok) return tl::unexpected(ok.error());
    return opened;
  }
  if (opened) {
    log_->warn("rate-limit table /{} holds {} counters, rate-limit-capacity is {}; rebuilding it empty", name,
               (*opened)->Stats().capacity, options.capacity);
    opened->reset();
  } else if (opened.error().code == ErrorCode::kCorrupt || opened.error().code == ErrorCode::kVersionMismatch) {
    log_->warn("rate-limit table /{} cannot be used ({}); rebuilding it empty", name, opened.error().message);
  } else {
    return MakeError(opened.error().code, "rate-limit table /" + name + ": " + opened.error().message);
  }
  (void)CounterTable::Remove(name);
  auto made = RateLimiter::Open(name, policy, options);
  if (!made) return MakeError(made.error().code, "rate-limit table /" + name + ": " + made.error().message);
  log_->info("rate-limit counters in /{}: a new table for {}", name, options.capacity);
  if (auto ok = SecureSegment(name); !ok) return tl::unexpected(ok.error());
  return made;
}

// [topic, version, policy text]. Sent again every second, so a limiter that
// subscribes late, or missed a message, catches up within a second.
void Server::PublishPolicy() {
  if (config_.pub.empty() || policy_text_.empty()) return;
  last_publish_ = std::chrono::steady_clock::now();
  try {
    const std::string version = std::to_string(policy_version_);
    zmqio::Send(pub_, zmq::str_buffer("cachet.policy"), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    zmqio::Send(pub_, zmq::buffer(version), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    zmqio::Send(pub_, zmq::buffer(policy_text_), zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    log_->warn("publishing the rate-limit policy failed: {}", e.what());
  }
}

Result<void> Server::JoinCluster(Cache& cache) {
  if (!config_.cluster.enabled()) return {};
  ClusterSettings settings = config_.cluster;
  if (settings.advertise.empty()) {
    // The tcp endpoint as bound (a port of 0 or * resolved).
    if (bound_tcp_.empty()) {
      return MakeError(ErrorCode::kInvalidArgument, "a cluster node needs a tcp endpoint (tcp, or advertise)");
    }
    settings.advertise = bound_tcp_;
  }
  if (config_.curve()) settings.curve = CurveClientKeys{public_key_, public_key_, secret_key_};
  auto joined = ClusterNode::Join(settings, cache, log_);
  if (!joined) return tl::unexpected(joined.error());
  cluster_ = std::move(*joined);
  replication_ = std::make_unique<Replication>(*cluster_, cache, context_, log_);
  // The cluster's policy wins over this node's file; a cluster without one
  // gets the file's (the first node to offer it).
  const std::shared_ptr<const ClusterView> view = cluster_->view();
  if (view->policy_revision == 0 && !file_policy_text_.empty()) {
    auto put = cluster_->PutPolicy(file_policy_text_, true);
    if (!put) return MakeError(put.error().code, "cluster: " + put.error().message);
    if (*put != 0) {
      followed_policy_revision_ = *put;
      log_->info("cluster '{}': no rate-limit policy yet; {} is now the cluster's (etcd revision {})", settings.name,
                 config_.rate_limit_policy, *put);
    }
  } else if (view->policy_revision != 0 && !file_policy_text_.empty() && view->policy != file_policy_text_) {
    log_->warn(
        "cluster '{}': running the cluster's rate-limit policy (etcd revision {}), not {}; SIGHUP after "
        "editing the file to make it the cluster's",
        settings.name, view->policy_revision, config_.rate_limit_policy);
  }
  FollowClusterPolicy();
  return {};
}

namespace {
// The ops that take the segment's writer lock (reads never do).
bool TakesWriterLock(Op op) {
  switch (op) {
    case Op::kSet:
    case Op::kMSet:
    case Op::kDel:
    case Op::kExpire:
    case Op::kIncr:
    case Op::kDecr:
    case Op::kScan:
    case Op::kFlush: return true;
    default: return false;
  }
}
}  // namespace

Result<Cache::WriterLease> Server::LeaseWriterLock() {
  // Once the lock is known stuck, later writes wait only briefly, so that
  // a queue of them does not hold up the reads behind it.
  auto lease = cache_->LeaseWriter(writer_lock_stuck_ ? kStuckWriterLockWait : kWriterLockWait);
  if (lease) {
    if (writer_lock_stuck_) log_->info("the segment's writer lock is free again; writes go on");
    writer_lock_stuck_ = false;
    return lease;
  }
  if (!writer_lock_stuck_)
    log_->warn("{}; writes are answered BUSY until it is free (reads go on)", lease.error().message);
  writer_lock_stuck_ = true;
  ++busy_replies_;
  return MakeError(ErrorCode::kBusy, lease.error().message + "; the write was not run");
}

bool Server::SetClientWritesBounded(bool grant, std::chrono::milliseconds wait) {
  auto lease = cache_->LeaseWriter(wait);
  if (!lease) {
    if (!writer_lock_stuck_) {
      log_->error("cannot {} same-host writes yet: {}; trying again each tick", grant ? "allow" : "revoke",
                  lease.error().message);
    }
    writer_lock_stuck_ = true;
    return false;
  }
  cache_->SetClientWrites(grant);
  return true;
}

void Server::RevokeClientWritesForGood() {
  if (SetClientWritesBounded(false, kWriterLockWait)) return;
  // The lock stays held: make guests refuse without it, by the heartbeat.
  cache_->EndHeartbeat();
  log_->warn("same-host writes end with this daemon's heartbeat instead (a write under way may still finish)");
}

void Server::GrantClientWrites(bool starting) {
  // A cluster node's writes must pass through it, to reach the replicas.
  const bool grant = config_.same_host_writes && !cluster_;
  if (!starting && grant == cache_->ClientWritesGranted()) return;
  if (!SetClientWritesBounded(grant, starting ? kWriterLockWait : std::chrono::milliseconds(0))) return;
  if (grant) {
    log_->info("same-host writes: clients on this host write segment {} directly", SegmentLabel(cache_->Name()));
  } else {
    log_->info("same-host writes: off{}; every write goes through the daemon", cluster_ ? " (a cluster node)" : "");
  }
}

int Server::Run(std::unique_ptr<Cache> cache) {
  cache_ = std::move(cache);
  cache_->Heartbeat();  // a guest write needs a fresh one: from the start, not from the first tick
  GrantClientWrites(true);
  started_ = last_tick_ = last_rate_ = std::chrono::steady_clock::now();
  if (metrics_) board_.Publish(TakeSnapshot());
  while (!signals_.stop) {
    if (signals_.reload) {
      signals_.reload = 0;
      (void)Reload();
    }
    // Replication: peers' answers wake the loop; held replies and probes
    // are timed, so it wakes often while a cluster node.
    const bool busy = replication_ && PumpReplication();
    std::vector<zmq::pollitem_t>& items = poll_items_;  // reused: no allocation per turn
    items.assign({{static_cast<void*>(router_), 0, ZMQ_POLLIN, 0},
                  {static_cast<void*>(monitor_.socket()), 0, ZMQ_POLLIN, 0},
                  {static_cast<void*>(auth_->socket()), 0, ZMQ_POLLIN, 0}});
    if (pub_monitor_) items.push_back({static_cast<void*>(pub_monitor_->socket()), 0, ZMQ_POLLIN, 0});
    const size_t stream_item = items.size();
    if (stream_) items.push_back({nullptr, stream_->fd(), ZMQ_POLLIN, 0});
    if (replication_) replication_->AddPollItems(items);
    try {
      // Stream connections with requests read and not run take their next
      // turn now; the poll only looks for other work on the way.
      const bool ready = busy || (stream_ && stream_->backlogged());
      zmq::poll(items.data(), items.size(), ready ? std::chrono::milliseconds(0) : replication_ ? kClusterTick : kTick);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;  // a signal: the flags are checked above
      log_->error("poll failed: {}; stopping", e.what());
      RevokeClientWritesForGood();
      return 1;
    }
    if (items[1].revents & ZMQ_POLLIN) DrainMonitor(monitor_, true);
    if (pub_monitor_ && (items[3].revents & ZMQ_POLLIN)) DrainMonitor(*pub_monitor_, false);
    if (items[2].revents & ZMQ_POLLIN) {
      DrainMonitor(monitor_, true);  // the connection being admitted is counted first
      auth_->Answer(connected_clients_ + (stream_ ? static_cast<int64_t>(stream_->connections()) : 0));
    }
    if (stream_ && ((items[stream_item].revents & ZMQ_POLLIN) || stream_->backlogged())) {
      // The ZeroMQ endpoints' connections and these share max-connections.
      stream_->set_max_connections(
          config_.max_connections -
          std::min<uint64_t>(config_.max_connections, std::max<int64_t>(connected_clients_, 0)));
      if (metrics_) stream_since_ = std::chrono::steady_clock::now();
      stream_->Serve();
    }
    if (items[0].revents & ZMQ_POLLIN) {
      auto since = metrics_ ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
      for (int i = 0; i < kMaxMessagesPerWake; ++i) {
        if (!(zmqio::Events(router_) & ZMQ_POLLIN)) break;
        ServeMessage(since);
      }
    }
    if (std::chrono::steady_clock::now() - last_tick_ >= kTick) Tick();
  }
  // From here on every write passes through this daemon, which stops: a
  // segment about to be removed, or taken over by a cluster node, must not
  // take writes nobody will see.
  RevokeClientWritesForGood();
  // Requests already received get their replies before the socket closes:
  // those in ZeroMQ's queue, and those the kernel holds that ZeroMQ's I/O
  // thread has not read yet (after a stall, the stop signal can be handled
  // before that thread runs). So drain until the socket stays quiet for a
  // tick, within a bound, rather than only what is queued at this instant.
  int drained = 0;
  const auto give_up = std::chrono::steady_clock::now() + kDrainLimit;
  while (drained < 100000 && std::chrono::steady_clock::now() < give_up) {
    zmq::pollitem_t item{static_cast<void*>(router_), 0, ZMQ_POLLIN, 0};
    if (zmqio::Poll(&item, 1, kTick) == 0) break;
    auto since = metrics_ ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
    while (drained < 100000 && (zmqio::Events(router_) & ZMQ_POLLIN)) {
      ServeMessage(since);
      ++drained;
    }
  }
  if (stream_) {
    if (metrics_) stream_since_ = std::chrono::steady_clock::now();
    drained += static_cast<int>(stream_->Drain(kDrainLimit));
    stream_.reset();
  }
  log_->info("stopping: answered {} requests in flight, closing sockets", drained);
  if (metrics_) {
    metrics_.reset();
    log_->info("metrics endpoint stopped");
  }
  if (replication_) {
    std::vector<HeldReply> held;
    replication_->StopAll(held);
    SendHeld(held);
    replication_.reset();
  }
  if (cluster_) {
    cluster_.reset();  // revokes the registration: the node is down for the cluster now
    log_->info("left cluster '{}'", config_.cluster.name);
  }
  // While the sockets still listen: until the files are gone, a cachetd
  // starting at the same path is refused (WhyIpcPathIsTaken) rather than
  // binding a socket this one would then remove.
  RemoveIpcFiles();
  router_.close();
  monitor_.socket().close();
  if (pub_monitor_) pub_monitor_->socket().close();
  const std::string segment = cache_->Name();
  if (config_.remove_segment_on_exit) {
    cache_.reset();
    if (auto ok = Cache::RemoveNamed(segment); ok) {
      log_->info("removed segment {}", SegmentLabel(segment));
    } else {
      log_->error("could not remove segment {}: {}", SegmentLabel(segment), ok.error().ToString());
    }
    limiter_.reset();
    const std::string counters = config_.RateLimitSegment();
    if (auto ok = CounterTable::Remove(counters); ok) {
      log_->info("removed rate-limit table /{}", counters);
    } else if (ok.error().code != ErrorCode::kNotFound) {
      log_->error("could not remove rate-limit table /{}: {}", counters, ok.error().ToString());
    }
  } else {
    log_->info("segment {} kept for a warm restart ({} entries)", SegmentLabel(segment), cache_->Size());
  }
  return 0;
}

void Server::Tick() {
  const auto now = std::chrono::steady_clock::now();
  last_tick_ = now;
  cache_->Heartbeat();
  if (stream_) stream_->ResumeAccepting();
  GrantClientWrites(false);  // again, if a reload could not change it (the lock was held)
  if (cluster_) FollowClusterPolicy();
  if (now - last_publish_ >= std::chrono::seconds(1)) PublishPolicy();
  // Not while a same-host client holds the writer lock: the next tick will.
  if (auto lease = cache_->LeaseWriter(std::chrono::milliseconds(0)); lease || cluster_) {
    cache_->ReclaimExpired(kReclaimBucketsPerTick);
  }
  if (limiter_) limiter_->ReclaimIdle(kReclaimCountersPerTick);  // the whole table every ~200 s at the default size
  backlog_.Sweep();
  auth_->Tick();
  if (dropped_replies_ != dropped_replies_reported_ && now - last_drop_report_ >= std::chrono::seconds(1)) {
    log_->warn("dropped {} replies to clients that do not read them (or have gone); {} reply bytes waiting",
               dropped_replies_ - dropped_replies_reported_, backlog_.total_bytes());
    dropped_replies_reported_ = dropped_replies_;
    last_drop_report_ = now;
  }
  const double seconds = std::chrono::duration<double>(now - last_rate_).count();
  if (seconds >= 1.0) {
    ops_per_second_ = static_cast<double>(requests_ - requests_at_last_second_) / seconds;
    requests_at_last_second_ = requests_;
    last_rate_ = now;
  }
  if (metrics_) board_.Publish(TakeSnapshot());
}

std::shared_ptr<const MetricsSnapshot> Server::TakeSnapshot() {
  auto s = std::make_shared<MetricsSnapshot>();
  s->requests = request_stats_;
  const CacheStats c = cache_->Stats();
  s->hits = c.hits;
  s->misses = c.misses;
  s->sets = c.sets;
  s->deletes = c.erases;
  s->evictions = c.evictions;
  s->expirations = c.expirations;
  s->repairs = c.repairs;
  s->entries = c.entries;
  s->bytes = c.live_bytes;
  s->capacity_bytes = c.capacity_bytes;
  s->max_entries = c.max_entries;
  s->memory_bytes = c.segment_bytes;
  s->generation = c.generation;
  s->page_bytes = c.page_bytes;
  s->same_host_writes = cache_->ClientWritesGranted() ? 1 : 0;
  s->connected_clients =
      static_cast<uint64_t>(std::max<int64_t>(connected_clients_, 0)) + (stream_ ? stream_->connections() : 0);
  s->refused_connections = auth_->refused() + (stream_ ? stream_->refused() : 0);
  s->denied_requests = denied_requests_;
  s->dropped_frames = dropped_frames_;
  s->dropped_replies = dropped_replies_;
  s->busy_replies = busy_replies_;
  s->reply_backlog_bytes = backlog_.total_bytes();
  s->reloads = reloads_;
  s->uptime_ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started_).count());
  if (limiter_) {
    const RateLimiterStats l = limiter_->Stats();
    s->limiter = true;
    s->ratelimit_counters = l.counters;
    s->ratelimit_capacity = l.capacity;
  }
  if (cluster_) {
    const ClusterNode::Stats n = cluster_->stats();
    const Replication::Stats r = replication_->stats();
    s->cluster = true;
    s->cluster_epoch = n.epoch;
    s->cluster_members = cluster_->view()->endpoints.size();
    s->cluster_owned_slots = n.owned_slots;
    s->cluster_importing_slots = n.importing_slots;
    s->cluster_registered = n.registered;
    s->cluster_redirects = redirects_;
    s->cluster_primary_shards = r.led_shards;
    s->cluster_replica_shards = r.followed_shards;
    s->cluster_max_lag = r.max_lag;
    for (const auto& [node, behind] : replication_->Lag()) s->cluster_follower_lag.emplace_back(node, behind);
  }
  return s;
}

void Server::DrainMonitor(zap::SocketMonitor& monitor, bool counts_clients) {
  while (std::optional<zap::MonitorEvent> event = monitor.Next()) {
    if (counts_clients && event->id == ZMQ_EVENT_ACCEPTED) ++connected_clients_;
    if (counts_clients && event->id == ZMQ_EVENT_DISCONNECTED && connected_clients_ > 0) --connected_clients_;
    if (event->handshake_failed()) {
      // Refusals by the ZAP handler are logged there, with the client's
      // address and key; these never reached it.
      auth_->Refuse("refused a connection on " + event->endpoint + ": handshake failed (" +
                    event->HandshakeFailure(config_.curve(), "the client") + ")");
    }
  }
}

void Server::ServeMessage(std::chrono::steady_clock::time_point& since) {
  if (HandleMessage()) {
    CountRequest(since);
  } else if (metrics_) {
    since = std::chrono::steady_clock::now();
  }
}

void Server::CountRequest(std::chrono::steady_clock::time_point& since) {
  if (!metrics_) return;
  const auto now = std::chrono::steady_clock::now();
  request_stats_.Count(op_row_, static_cast<uint16_t>(reply_status_), now - since);
  since = now;
}

bool Server::RefuseLargeFrame(const char* data, size_t size, uint64_t frame_size, wire::Writer& out) {
  if (frame_size <= config_.EffectiveMaxFrame()) return false;
  ++errors_;
  out.ErrorReply(
      wire::PeekRequestId(data, size).value_or(0),
      Error{ErrorCode::kFrameTooLarge, "request frame is " + std::to_string(frame_size) + " bytes; max_frame is " +
                                           std::to_string(config_.EffectiveMaxFrame())});
  return true;
}

void Server::ServeStreamFrame(const char* data, size_t size, uint64_t frame_size, wire::Writer& out) {
  ++requests_;
  op_row_ = kInvalidOpRow;
  caller_ = nullptr;  // clear text: no CURVE client
  if (!RefuseLargeFrame(data, size, frame_size, out)) Handle(data, size, out);
  reply_status_ = out.status();
  CountRequest(stream_since_);
}

bool Server::HandleMessage() {
  std::vector<zmq::message_t> frames;
  try {
    if (!zmqio::RecvMultipart(router_, frames, zmq::recv_flags::dontwait)) return false;
  } catch (const zmq::error_t& e) {
    log_->warn("receive failed: {}", e.what());
    return false;
  }
  // [identity, payload] from DEALER; [identity, empty, payload] from REQ.
  const bool req_envelope = frames.size() == 3 && frames[1].size() == 0;
  if (frames.size() != 2 && !req_envelope) {
    ++dropped_frames_;
    log_->debug("dropped a message of {} frames: not [identity, (empty,) request]", frames.size());
    return false;
  }
  ++requests_;
  op_row_ = kInvalidOpRow;  // until Handle decodes it
  zmq::message_t& payload = frames.back();
  // The CURVE client the ZAP handler admitted; none over ipc or plaintext
  // (and no lookup at all without CURVE).
  const char* user = config_.curve() ? zmq_msg_gets(payload.handle(), "User-Id") : nullptr;
  caller_ = user != nullptr && *user != '\0' ? auth_->Find(user) : nullptr;
  static thread_local wire::Writer out;
  out.Clear();
  if (backlog_.RepliesOwed(frames[0].to_string_view()) >= config_.max_in_flight) {
    // A client that sends without taking its replies: nothing more of its
    // is run until it reads (the reply backlog bounds these replies' bytes).
    ++errors_;
    ++busy_replies_;
    out.ErrorReply(wire::PeekRequestId(static_cast<const char*>(payload.data()), payload.size()).value_or(0),
                   Error{ErrorCode::kBusy, "this connection has " + std::to_string(config_.max_in_flight) +
                                               " replies it has not read (max-in-flight); the request was not run"});
  } else if (!RefuseLargeFrame(static_cast<const char*>(payload.data()), payload.size(), payload.size(), out)) {
    waits_.clear();
    Handle(static_cast<const char*>(payload.data()), payload.size(), out);
    if (!waits_.empty() && !replication_->Committed(waits_)) {
      HeldReply held;
      held.routing_id = frames[0].to_string();
      held.req_envelope = req_envelope;
      held.request_id = waits_request_;
      held.data.assign(out.data(), out.size());
      replication_->Hold(std::move(waits_), std::move(held));
      waits_.clear();
      reply_status_ = out.status();
      return true;
    }
  }
  reply_status_ = out.status();
  SendReply(frames[0].to_string_view(), req_envelope, out.data(), out.size());
  return true;
}

bool Server::PumpReplication() {
  replication_->Follow();
  std::vector<HeldReply> ready;
  const bool busy = replication_->Pump(ready);
  SendHeld(ready);
  return busy;
}

void Server::SendHeld(std::vector<HeldReply>& replies) {
  for (const HeldReply& r : replies) SendReply(r.routing_id, r.req_envelope, r.data.data(), r.data.size());
}

void Server::SendReply(std::string_view routing_id, bool req_envelope, const char* data, size_t size) {
  std::optional<zmq::message_t> reply = backlog_.Make(routing_id, data, size);
  if (!reply) {
    ++dropped_replies_;
    return;
  }
  try {
    // The first frame decides: it fails (queue full, peer gone) or the rest go.
    if (!zmqio::Send(router_, zmq::const_buffer(routing_id.data(), routing_id.size()),
                     zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
      ++dropped_replies_;
      return;
    }
    if (req_envelope) zmqio::Send(router_, zmq::const_buffer(), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    zmqio::Send(router_, *reply, zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    ++dropped_replies_;
    log_->debug("reply not sent: {}", e.what());
  }
}

// One op to run: a decoded request, or the read an ASK wraps (`asking`).
struct Server::Call {
  uint64_t id;
  Op op;
  const msgpack::object* args;
  uint32_t arg_count;
  bool asking;  // served here even if this node no longer owns the slot
};

void Server::Handle(const char* data, size_t size, wire::Writer& out) {
  uint64_t id = 0;
  auto request = wire::DecodeRequest(data, size, &id);
  if (!request) {
    ++errors_;
    out.ErrorReply(id, request.error());
    return;
  }
  op_row_ = static_cast<size_t>(request->op);
  if (caller_ != nullptr) {
    if (auto allowed = Permit(*caller_, *request); !allowed) {
      ++errors_;
      ++denied_requests_;
      out.ErrorReply(request->id, allowed.error());
      return;
    }
  }
  Dispatch(Call{request->id, request->op, request->args, request->arg_count, false}, out);
}

void Server::ServeInProcess(std::unique_ptr<Cache> cache) { cache_ = std::move(cache); }

void Server::Answer(const char* data, size_t size, wire::Writer& out) {
  out.Clear();
  Handle(data, size, out);
}

void Server::Dispatch(const Call& r, wire::Writer& out) {
  const msgpack::object* a = r.args;
  auto fail = [&](const Error& e) {
    ++errors_;
    out.ErrorReply(r.id, e);
  };
  auto arity = [&](uint32_t min, uint32_t max) {
    if (r.arg_count >= min && r.arg_count <= max) return true;
    fail(Arity(r.op, min, max, r.arg_count));
    return false;
  };
  auto ok = [&] { out.BeginReply(r.id, ErrorCode::kOk); };
  // Every key, value and TTL goes through the one rule for its kind
  // (wire::CheckKey, CheckValue, CheckTtl), whatever the op.
  const uint32_t max_key = config_.max_key_size;
  const uint32_t max_value = config_.max_value_size;
  static thread_local std::string value;
  // Cluster: a key whose slot another node serves gets MOVED (CLUSTER_DOWN
  // if none can); on a slot this node is importing, a read that misses gets
  // ASK, and an op whose result depends on a key not imported yet is told
  // to retry. A single node serves every key.
  ClusterNode::Route route;
  auto elsewhere = [&](std::string_view key, bool write) {
    if (!cluster_) return false;
    route = cluster_->RouteKey(key, write, r.asking);
    if (route.status == ErrorCode::kOk && route.replica && !replication_->Whole(route.shard)) {
      // A copy still being made serves nothing: the primary does.
      if (route.primary_endpoint.empty()) {
        route.status = ErrorCode::kClusterDown;
        route.message = "this node's copy of shard " + std::to_string(route.shard) +
                        " is still being made and the shard has no primary now";
      } else {
        route.status = ErrorCode::kMoved;
        route.endpoint = route.primary_endpoint;
        route.message = "this node's copy of shard " + std::to_string(route.shard) +
                        " is still being made; its primary is at " + route.endpoint;
      }
    }
    if (route.status == ErrorCode::kOk) return false;
    ++redirects_;
    if (route.status == ErrorCode::kMoved) {
      wire::WriteRedirect(out, r.id, ErrorCode::kMoved, {route.message, route.epoch, route.slot, route.endpoint});
    } else {
      out.ErrorReply(r.id, Error{route.status, route.message});
    }
    return true;
  };
  auto ask = [&] {
    ++redirects_;
    wire::WriteRedirect(out, r.id, ErrorCode::kAsk,
                        {"slot " + std::to_string(route.slot) + " is being imported from " + route.endpoint +
                             " and this key is not here yet",
                         route.epoch, route.slot, route.endpoint});
  };
  // For an op that needs the key's current value: false (and the reply
  // written) while that value may still be at the slot's previous owner.
  auto present_or_settled = [&](std::string_view key) {
    if (!route.ask_on_miss() || cache_->Contains(key)) return true;
    ++redirects_;
    out.ErrorReply(r.id, Error{ErrorCode::kClusterDown, "slot " + std::to_string(route.slot) +
                                                            " is being imported and this key is not here yet; retry"});
    return false;
  };
  auto guard = [&](std::string_view key) {
    return cluster_ ? cluster_->GuardWrite(key) : std::unique_lock<std::mutex>();
  };
  // Cluster: a write goes to the shard's replicas; in strong mode its reply,
  // and a read's of a key written but not yet held by a majority, waits.
  auto wrote = [&](std::string_view key) {
    if (!replication_) return;
    replication_->Record(key, waits_);
    waits_request_ = r.id;
  };
  auto read = [&](std::string_view key) {
    if (!replication_) return;
    replication_->ReadBarrier(key, waits_);
    waits_request_ = r.id;
  };

  // Same-host clients share the segment's writer lock, and one stopped while
  // holding it (SIGSTOP, a debugger, a frozen container) must not freeze
  // this loop: a write leases the lock first, with a bounded wait, and is
  // answered BUSY, not run, if it stays held. Reads never need it.
  std::optional<Cache::WriterLease> lease;
  if (!cluster_ && TakesWriterLock(r.op)) {
    auto leased = LeaseWriterLock();
    if (!leased) return fail(leased.error());
    lease.emplace(std::move(*leased));
  }

  switch (r.op) {
    case Op::kPing:
      if (!arity(0, 0)) return;
      ok();
      out.Str("PONG");
      return;
    case Op::kInfo: {
      if (!arity(0, 0)) return;
      ok();
      out.Map(6);
      // A strong-mode cluster node offers no segment: a same-host read
      // through it could see a write not yet held by a majority, or a
      // replica's copy, neither of which a linearizable read may return.
      out.Str("segment");
      out.Str(cluster_ && cluster_->view()->strong ? std::string() : cache_->Name());
      const std::pair<const char*, uint64_t> numbers[] = {{"generation", cache_->Stats().generation},
                                                          {"protocol", wire::kProtocolVersion},
                                                          {"max_key_size", config_.max_key_size},
                                                          {"max_value_size", config_.max_value_size},
                                                          {"max_frame_bytes", config_.EffectiveMaxFrame()}};
      for (const auto& [name, v] : numbers) {
        out.Str(name);
        out.Uint(v);
      }
      return;
    }
    case Op::kGet: {
      if (!arity(1, 1)) return;
      auto key = wire::KeyArg(a[0], max_key);
      if (!key) return fail(key.error());
      if (elsewhere(*key, false)) return;
      read(*key);
      if (cache_->GetInto(*key, &value)) {
        ok();
        out.Bytes(value);
      } else if (route.ask_on_miss()) {
        ask();
      } else {
        out.BeginReply(r.id, ErrorCode::kNotFound);
        out.Nil();
      }
      return;
    }
    case Op::kSet: {
      if (!arity(2, 4)) return;
      auto key = wire::KeyArg(a[0], max_key);
      if (!key) return fail(key.error());
      auto val = wire::ValueArg(a[1], max_value);
      if (!val) return fail(val.error());
      SetOptions options;
      if (r.arg_count > 2) {
        auto ttl = wire::TtlArg(a[2], wire::TtlUse::kOnWrite);
        if (!ttl) return fail(ttl.error());
        options.ttl = *ttl;
      }
      if (r.arg_count > 3) {
        auto cond = wire::UintArg(a[3], "condition");
        if (!cond) return fail(cond.error());
        if (*cond > 2)
          return fail(Error{ErrorCode::kInvalidArgument, "condition must be 0 (always), 1 (NX) or 2 (XX)"});
        options.condition = *cond == 1   ? SetCondition::kIfAbsent
                            : *cond == 2 ? SetCondition::kIfPresent
                                         : SetCondition::kAlways;
      }
      if (elsewhere(*key, true)) return;
      if (options.condition != SetCondition::kAlways && !present_or_settled(*key)) return;
      auto lock = guard(*key);
      auto stored = cache_->Set(*key, *val, options);
      if (!stored) return fail(stored.error());
      wrote(*key);
      ok();
      out.Bool(*stored);
      return;
    }
    case Op::kDel:
    case Op::kExists: {
      if (!arity(1, 1)) return;
      auto key = wire::KeyArg(a[0], max_key);
      if (!key) return fail(key.error());
      const bool del = r.op == Op::kDel;
      if (elsewhere(*key, del)) return;
      if (del && !present_or_settled(*key)) return;
      auto lock = del ? guard(*key) : std::unique_lock<std::mutex>();
      const bool result = del ? cache_->Erase(*key) : cache_->Contains(*key);
      del ? wrote(*key) : read(*key);
      if (!del && !result && route.ask_on_miss()) return ask();
      ok();
      out.Bool(result);
      return;
    }
    case Op::kExpire: {
      if (!arity(2, 2)) return;
      auto key = wire::KeyArg(a[0], max_key);
      if (!key) return fail(key.error());
      auto ttl = wire::TtlArg(a[1], wire::TtlUse::kExpire);
      if (!ttl) return fail(ttl.error());
      if (elsewhere(*key, true) || !present_or_settled(*key)) return;
      auto lock = guard(*key);
      const bool expired = cache_->Expire(*key, *ttl);
      wrote(*key);
      ok();
      out.Bool(expired);
      return;
    }
    case Op::kTtl: {
      if (!arity(1, 1)) return;
      auto key = wire::KeyArg(a[0], max_key);
      if (!key) return fail(key.error());
      if (elsewhere(*key, false)) return;
      read(*key);
      const auto ttl = cache_->Ttl(*key);
      if (!ttl && route.ask_on_miss()) return ask();
      if (!ttl) {
        out.BeginReply(r.id, ErrorCode::kNotFound);
        out.Nil();
        return;
      }
      ok();
      out.Int(*ttl == Cache::kNoExpiry ? -1 : ttl->count());
      return;
    }
    case Op::kIncr:
    case Op::kDecr: {
      if (!arity(1, r.op == Op::kIncr ? 3 : 2)) return;
      auto key = wire::KeyArg(a[0], max_key);
      if (!key) return fail(key.error());
      int64_t delta = 1;
      if (r.arg_count > 1) {
        auto d = wire::IntArg(a[1], "delta");
        if (!d) return fail(d.error());
        delta = *d;
      }
      if (r.op == Op::kDecr) {
        if (delta == INT64_MIN) return fail(Error{ErrorCode::kOverflow, "DECR delta cannot be -2^63"});
        delta = -delta;
      }
      std::chrono::milliseconds ttl{0};
      if (r.arg_count > 2) {
        auto t = wire::TtlArg(a[2], wire::TtlUse::kOnWrite);
        if (!t) return fail(t.error());
        ttl = *t;
      }
      if (elsewhere(*key, true) || !present_or_settled(*key)) return;
      auto lock = guard(*key);
      auto result = cache_->Incr(*key, delta, ttl);
      if (!result) return fail(result.error());
      wrote(*key);
      ok();
      out.Int(*result);
      return;
    }
    case Op::kMGet: {
      if (!arity(1, UINT32_MAX)) return;
      // Every key is checked before any is read: one bad key answers the whole request.
      for (uint32_t i = 0; i < r.arg_count; ++i) {
        if (auto key = wire::KeyArg(a[i], max_key, i); !key) return fail(key.error());
      }
      // In a cluster every key must be this node's: the first that is not
      // answers the whole request (a cluster client splits MGET by node).
      bool importing = false;
      for (uint32_t i = 0; i < r.arg_count; ++i) {
        if (elsewhere(*wire::BytesArg(a[i], "key"), false)) return;
        importing = importing || route.ask_on_miss();
      }
      for (uint32_t i = 0; i < r.arg_count; ++i) read(*wire::BytesArg(a[i], "key"));
      if (importing) {
        for (uint32_t i = 0; i < r.arg_count; ++i) {
          const std::string_view key = *wire::BytesArg(a[i], "key");
          route = cluster_->RouteKey(key, false, r.asking);
          if (route.ask_on_miss() && !cache_->Contains(key)) return ask();
        }
      }
      ok();
      out.Array(r.arg_count);
      for (uint32_t i = 0; i < r.arg_count; ++i) {
        cache_->PrefetchAhead(i, r.arg_count, [&](size_t k) { return *wire::BytesArg(a[k], "key"); });
        if (cache_->GetInto(*wire::BytesArg(a[i], "key"), &value)) {
          // A reply is bounded as a request is: one that would pass
          // max-frame is refused whole, never built without bound (a key
          // asked for a million times).
          if (out.size() + value.size() > config_.EffectiveMaxFrame()) {
            out.Clear();
            return fail(Error{ErrorCode::kFrameTooLarge,
                              "MGET reply would pass max_frame (" + std::to_string(config_.EffectiveMaxFrame()) +
                                  " bytes) at key " + std::to_string(i) + "; ask for fewer keys at a time"});
          }
          out.Bytes(value);
        } else {
          out.Nil();
        }
      }
      return;
    }
    case Op::kMSet: {
      if (!arity(2, UINT32_MAX)) return;
      if (r.arg_count % 2 != 0) return fail(Error{ErrorCode::kWrongArity, "MSET takes key, value pairs"});
      // Every pair is checked before any is stored: a bad pair changes nothing.
      for (uint32_t i = 0; i < r.arg_count; i += 2) {
        if (auto key = wire::KeyArg(a[i], max_key, i / 2); !key) return fail(key.error());
        if (auto val = wire::ValueArg(a[i + 1], max_value, i / 2); !val) return fail(val.error());
      }
      for (uint32_t i = 0; i < r.arg_count; i += 2) {
        if (elsewhere(*wire::BytesArg(a[i], "key"), true)) return;
      }
      for (uint32_t i = 0; i < r.arg_count; i += 2) {
        cache_->PrefetchAhead(i / 2, r.arg_count / 2, [&](size_t k) { return *wire::BytesArg(a[2 * k], "key"); });
        auto lock = guard(*wire::BytesArg(a[i], "key"));
        auto stored = cache_->Set(*wire::BytesArg(a[i], "key"), *wire::BytesArg(a[i + 1], "value"));
        if (!stored) return fail(stored.error());
        wrote(*wire::BytesArg(a[i], "key"));
      }
      ok();
      out.Nil();
      return;
    }
    case Op::kScan: {
      if (!arity(0, 3)) return;
      uint64_t cursor = 0;
      std::string_view pattern;
      uint64_t count = 64;
      if (r.arg_count > 0) {
        auto c = wire::UintArg(a[0], "cursor");
        if (!c) return fail(c.error());
        cursor = *c;
      }
      if (r.arg_count > 1) {
        auto p = wire::BytesArg(a[1], "pattern");
        if (!p) return fail(p.error());
        pattern = *p;
      }
      if (r.arg_count > 2) {
        auto n = wire::UintArg(a[2], "count");
        if (!n) return fail(n.error());
        if (*n < 1 || *n > wire::kMaxScanCount) {
          return fail(Error{ErrorCode::kInvalidArgument, "count is " + std::to_string(*n) + "; it must be 1 to " +
                                                             std::to_string(wire::kMaxScanCount) + " index buckets"});
        }
        count = *n;
      }
      const Cache::ScanPage page = cache_->Scan(cursor, pattern, count);
      ok();
      out.Array(2);
      out.Uint(page.cursor);
      out.Array(static_cast<uint32_t>(page.keys.size()));
      for (const std::string& k : page.keys) out.Bytes(k);
      return;
    }
    case Op::kFlush:
      if (!arity(0, 0)) return;
      cache_->Clear();
      log_->info("FLUSH: all entries removed");
      ok();
      out.Nil();
      return;
    case Op::kStats:
      if (!arity(0, 0)) return;
      ok();
      WriteStats(out);
      return;
    case Op::kRateLimit: {
      if (!arity(2, 3)) return;
      if (!limiter_)
        return fail(Error{ErrorCode::kInvalidArgument, "this cachetd has no rate-limit-policy configured"});
      auto key = wire::BytesArg(a[0], "key");
      if (!key) return fail(key.error());
      // Strict limiting in a cluster: the node serving the key's slot is the
      // one that counts it, so every host's decisions for a key meet in one
      // table. Its counters stay on this node (they are not cache entries):
      // when the slot moves, the new owner starts the open windows afresh.
      if (elsewhere(*key, true)) return;
      auto tier = wire::BytesArg(a[1], "tier");
      if (!tier) return fail(tier.error());
      uint64_t cost = 1;
      if (r.arg_count > 2) {
        auto c = wire::UintArg(a[2], "cost");
        if (!c) return fail(c.error());
        cost = *c;
      }
      auto d = limiter_->Check(*key, *tier, cost);
      if (!d) return fail(d.error());
      if (metrics_) request_stats_.CountDecision(*tier, d->allowed);
      ok();
      wire::WriteDecision(out, *d);
      return;
    }
    case Op::kAsk: {
      // A read the old owner of a slot being moved serves (docs/protocol.md, "Cluster").
      if (!arity(1, UINT32_MAX)) return;
      auto name = wire::BytesArg(a[0], "op");
      if (!name) return fail(name.error());
      const std::optional<Op> inner = wire::ParseOp(*name);
      if (!inner || (*inner != Op::kGet && *inner != Op::kExists && *inner != Op::kTtl && *inner != Op::kMGet)) {
        return fail(
            Error{ErrorCode::kInvalidArgument, "ASK wraps GET, EXISTS, TTL or MGET, not '" + std::string(*name) + "'"});
      }
      return Dispatch(Call{r.id, *inner, a + 1, r.arg_count - 1, true}, out);
    }
    case Op::kCluster:
    case Op::kSlotDump:
    case Op::kReplicate:
      if (!cluster_) {
        return fail(
            Error{ErrorCode::kInvalidArgument,
                  std::string(wire::OpName(r.op)) + ": this cachetd is not a cluster node (no cluster settings)"});
      }
      if (r.op == Op::kSlotDump) return SlotDump(r, out);
      if (r.op == Op::kReplicate) return replication_->Handle(r.id, r.args, r.arg_count, out);
      if (!arity(0, 0)) return;
      ok();
      WriteClusterView(out);
      return;
    case Op::kReload: {
      if (!arity(0, 0)) return;
      auto reloaded = Reload();
      if (!reloaded) return fail(reloaded.error());
      ok();
      out.Nil();
      return;
    }
  }
  fail(Error{ErrorCode::kUnknownOp, "op not handled"});
}

void Server::WriteClusterView(wire::Writer& out) {
  const std::shared_ptr<const ClusterView> view = cluster_->view();
  out.Map(9);
  out.Str("cluster");
  out.Str(config_.cluster.name);
  out.Str("node");
  out.Str(config_.cluster.node_id);
  out.Str("epoch");
  out.Uint(view->epoch);
  out.Str("map");
  out.Str(view->map_json);
  out.Str("nodes");
  out.Map(static_cast<uint32_t>(view->endpoints.size()));
  for (const auto& [id, endpoint] : view->endpoints) {
    out.Str(id);
    out.Str(endpoint);
  }
  out.Str("replication");
  out.Uint(view->replication);
  out.Str("consistency");
  out.Str(view->strong ? "strong" : "eventual");
  // shard id -> [node, term]
  out.Str("primaries");
  out.Map(static_cast<uint32_t>(view->primaries.size()));
  for (const auto& [shard, p] : view->primaries) {
    out.Uint(shard);
    out.Array(2);
    out.Str(p.node);
    out.Uint(p.term);
  }
  // follower node -> entries behind, -1 while its copy is being made; for
  // the shards this node leads
  const std::map<std::string, int64_t> lag = replication_->Lag();
  out.Str("lag");
  out.Map(static_cast<uint32_t>(lag.size()));
  for (const auto& [node, behind] : lag) {
    out.Str(node);
    out.Int(behind);
  }
}

// SLOTDUMP epoch first last cursor count: a page of the keys of slots
// first..last, for the node importing them. Refused until this node has
// seen the importer's epoch: from that epoch on it takes no more writes to
// those slots, so every write it acknowledged is in the pages.
void Server::SlotDump(const Call& r, wire::Writer& out) {
  if (r.arg_count != 5) {
    ++errors_;
    return out.ErrorReply(
        r.id, Error{ErrorCode::kWrongArity, "SLOTDUMP takes epoch, first_slot, last_slot, cursor, count; got " +
                                                std::to_string(r.arg_count) + " arguments"});
  }
  uint64_t v[5];
  const char* names[5] = {"epoch", "first_slot", "last_slot", "cursor", "count"};
  for (int i = 0; i < 5; ++i) {
    auto n = wire::UintArg(r.args[i], names[i]);
    if (!n) {
      ++errors_;
      return out.ErrorReply(r.id, n.error());
    }
    v[i] = *n;
  }
  const auto [epoch, first, last, cursor, count] = std::tie(v[0], v[1], v[2], v[3], v[4]);
  if (first > last || last >= cluster::kSlotCount || count == 0 || count > wire::kMaxScanCount) {
    ++errors_;
    return out.ErrorReply(r.id, Error{ErrorCode::kInvalidArgument,
                                      "SLOTDUMP needs first_slot <= last_slot < 16384 and a count of 1 to 100000"});
  }
  if (cluster_->epoch() < epoch) {
    return out.ErrorReply(
        r.id, Error{ErrorCode::kClusterDown, "this node is at map epoch " + std::to_string(cluster_->epoch()) +
                                                 ", behind " + std::to_string(epoch) + "; retry"});
  }
  const Cache::ScanPage page = cache_->Scan(cursor, {}, count);
  struct Item {
    std::string key, value;
    int64_t ttl_ms;
  };
  std::vector<Item> items;
  for (const std::string& key : page.keys) {
    const uint32_t slot = cluster::SlotOf(key);
    if (slot < first || slot > last) continue;
    Item item{key, {}, 0};
    const auto ttl = cache_->Peek(key, &item.value);
    if (!ttl) continue;  // gone meanwhile
    // A key about to expire keeps at least 1 ms: 0 would mean "no expiry".
    item.ttl_ms = *ttl == Cache::kNoExpiry ? 0 : std::max<int64_t>(ttl->count(), 1);
    items.push_back(std::move(item));
  }
  out.BeginReply(r.id, ErrorCode::kOk);
  out.Array(2);
  out.Uint(page.cursor);
  out.Array(static_cast<uint32_t>(items.size() * 3));
  for (const Item& item : items) {
    out.Bytes(item.key);
    out.Bytes(item.value);
    out.Int(item.ttl_ms);
  }
}

void Server::WriteStats(wire::Writer& out) {
  // The counters the metrics endpoint shows come from the same snapshot;
  // STATS adds what only it reports.
  const std::shared_ptr<const MetricsSnapshot> m = TakeSnapshot();
  const RateLimiterStats l = limiter_ ? limiter_->Stats() : RateLimiterStats{};
  auto i64 = [](uint64_t v) { return static_cast<int64_t>(v); };
  const std::pair<const char*, int64_t> rows[] = {
      {"hits", i64(m->hits)},
      {"misses", i64(m->misses)},
      {"sets", i64(m->sets)},
      {"deletes", i64(m->deletes)},
      {"evictions", i64(m->evictions)},
      {"expirations", i64(m->expirations)},
      {"entries", i64(m->entries)},
      {"bytes", i64(m->bytes)},
      {"capacity_bytes", i64(m->capacity_bytes)},
      {"max_entries", i64(m->max_entries)},
      {"memory_bytes", i64(m->memory_bytes)},
      {"connected_clients", i64(m->connected_clients)},
      {"refused_connections", i64(m->refused_connections)},
      {"denied_requests", i64(m->denied_requests)},
      {"authorized_keys", i64(auth_->key_count())},
      {"requests", i64(requests_)},
      {"same_host_writes", i64(m->same_host_writes)},
      {"segment_page_bytes", i64(m->page_bytes)},
      {"errors", i64(errors_)},
      {"dropped_frames", i64(m->dropped_frames)},
      {"dropped_replies", i64(m->dropped_replies)},
      {"busy_replies", i64(m->busy_replies)},
      {"reply_backlog_bytes", i64(m->reply_backlog_bytes)},
      {"ops_per_second", static_cast<int64_t>(ops_per_second_)},
      {"uptime_seconds", i64(m->uptime_ms / 1000)},
      {"generation", i64(m->generation)},
      {"reloads", i64(m->reloads)},
      {"repairs", i64(m->repairs)},
      {"ratelimit_allowed", static_cast<int64_t>(l.allowed)},
      {"ratelimit_denied", static_cast<int64_t>(l.denied)},
      {"ratelimit_counters", static_cast<int64_t>(l.counters)},
      {"ratelimit_capacity", static_cast<int64_t>(l.capacity)},
      {"metrics_port", metrics_ ? static_cast<int64_t>(metrics_->port()) : 0},
  };
  std::vector<std::pair<std::string, int64_t>> cluster_rows;
  if (cluster_) {
    const ClusterNode::Stats c = cluster_->stats();
    const Replication::Stats rs = replication_->stats();
    cluster_rows = {{"cluster_epoch", static_cast<int64_t>(c.epoch)},
                    {"cluster_policy_revision", static_cast<int64_t>(followed_policy_revision_)},
                    {"cluster_primary_shards", static_cast<int64_t>(rs.led_shards)},
                    {"cluster_replica_shards", static_cast<int64_t>(rs.followed_shards)},
                    {"cluster_replication_lag", static_cast<int64_t>(rs.max_lag)},
                    {"cluster_held_replies", static_cast<int64_t>(rs.held)},
                    {"cluster_commit_timeouts", static_cast<int64_t>(rs.commit_timeouts)},
                    {"cluster_full_syncs_sent", static_cast<int64_t>(rs.full_syncs)},
                    {"cluster_entries_applied", static_cast<int64_t>(rs.entries_applied)},
                    {"cluster_shards_without_primary", static_cast<int64_t>(c.shards_without_primary)},
                    {"cluster_owned_slots", static_cast<int64_t>(c.owned_slots)},
                    {"cluster_importing_slots", static_cast<int64_t>(c.importing_slots)},
                    {"cluster_imported_keys", static_cast<int64_t>(c.imported_keys)},
                    {"cluster_import_failures", static_cast<int64_t>(c.import_failures)},
                    {"cluster_redirects", static_cast<int64_t>(redirects_)},
                    {"cluster_registered", c.registered ? 1 : 0}};
    for (const Replication::ShardRow& row : replication_->Shards()) {
      const std::string prefix = "cluster_shard_" + std::to_string(row.shard) + "_";
      cluster_rows.emplace_back(prefix + "role", static_cast<int64_t>(row.role));
      cluster_rows.emplace_back(prefix + "term", static_cast<int64_t>(row.term));
      cluster_rows.emplace_back(prefix + "seq", static_cast<int64_t>(row.seq));
      if (row.role == Replication::Role::kPrimary)
        cluster_rows.emplace_back(prefix + "lag", static_cast<int64_t>(row.lag));
    }
  }
  out.Map(static_cast<uint32_t>(std::size(rows) + cluster_rows.size()));
  for (const auto& [name, v] : rows) {
    out.Str(name);
    out.Int(v);
  }
  for (const auto& [name, v] : cluster_rows) {
    out.Str(name);
    out.Int(v);
  }
}

Result<void> Server::Reload() {
  auto parsed = ParseConfig(args_);
  if (!parsed) {
    log_->error("reload failed: {}; keeping the running configuration", parsed.error().message);
    return tl::unexpected(parsed.error());
  }
  const DaemonConfig& next = parsed->config;
  for (const std::string& name : RestartOnlyChanges(config_, next)) {
    log_->warn("reload: '{}' changed in the configuration; it applies after a restart", name);
  }
  if (next.log_level != config_.log_level) {
    log_->set_level(spdlog::level::from_str(next.log_level));
    log_->info("reload: log level is now {}", next.log_level);
  }
  if (next.log_file != config_.log_file) log_->warn("reload: 'log-file' changed; it applies after a restart");
  std::vector<AuthorizedKey> keys;
  if (config_.curve() && next.curve()) {
    auto read = ReadAuthorizedKeys(next);
    if (!read) {
      log_->error("reload failed: {}; keeping the running configuration and keys", read.error().message);
      return tl::unexpected(read.error());
    }
    keys = std::move(*read);
  }
  if (!next.rate_limit_policy.empty()) {
    if (auto ok = LoadPolicy(next.rate_limit_policy); !ok) {
      log_->error("reload failed: {}; keeping the running configuration and policy", ok.error().message);
      return ok;
    }
  }
  config_.log_level = next.log_level;
  config_.remove_segment_on_exit = next.remove_segment_on_exit;
  config_.rate_limit_policy = next.rate_limit_policy;
  if (config_.curve() && next.curve()) {
    AdmitKeys(std::move(keys), next);
    config_.curve_authorized_keys = next.curve_authorized_keys;
  }
  if (next.max_in_flight != config_.max_in_flight) log_->info("reload: max-in-flight is now {}", next.max_in_flight);
  config_.max_in_flight = next.max_in_flight;
  config_.max_connections = next.max_connections;
  ApplyMaxConnections();
  config_.reply_backlog_per_client = next.reply_backlog_per_client;
  config_.reply_backlog_total = next.reply_backlog_total;
  backlog_.SetLimits(next.reply_backlog_per_client, next.reply_backlog_total);
  config_.same_host_writes = next.same_host_writes;
  GrantClientWrites(false);
  ++reloads_;
  log_->info("configuration reloaded{}", config_.config_file.empty() ? "" : " from " + config_.config_file);
  return {};
}

}  // namespace cachet::daemon
