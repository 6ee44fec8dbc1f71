#include "cluster_node.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "cachet/cluster/etcd_client.h"
#include "cachet/cluster/etcd_lease_keeper.h"
#include "cachet/cluster/etcd_watch.h"
#include "cachet/cluster/shard_map.h"
#include "cachet/cluster/slot.h"
#include "protocol.h"
#include "zmq_io.h"

namespace cachet::daemon {

using cluster::kSlotCount;
using cluster::SlotOf;

namespace {

// A node's registration lives as long as it renews this lease.
constexpr int64_t kLeaseTtlSeconds = 1;
// SLOTDUMP: index buckets per page, the wait for one page, and the tries
// before an import from an unreachable node is given up.
constexpr uint32_t kDumpBuckets = 256;
constexpr std::chrono::milliseconds kDumpTimeout{2000};
constexpr int kDumpTries = 5;
// How often the worker looks for a lost registration.
constexpr std::chrono::milliseconds kWorkerTick{200};

bool ValidNodeId(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  return std::all_of(id.begin(), id.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '-' || c == '_' || c == '.'; });
}

}  // namespace

Result<void> ClusterSettings::Validate() const {
  if (!enabled()) {
    if (!node_id.empty() || !advertise.empty() || !etcd.empty()) {
      return MakeError(ErrorCode::kInvalidArgument, "node-id, advertise and etcd need cluster (the cluster's name)");
    }
    return {};
  }
  if (!ValidNodeId(name)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "cluster '" + name + "': a name is 1 to 64 letters, digits, '-', '_' or '.'");
  }
  if (!ValidNodeId(node_id)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "node-id '" + node_id + "': give each node an id of 1 to 64 letters, digits, '-', '_' or '.'");
  }
  if (!advertise.empty() && (advertise.rfind("tcp://", 0) != 0 || advertise.find('*') != std::string::npos ||
                             advertise.find("0.0.0.0") != std::string::npos)) {
    return MakeError(ErrorCode::kInvalidArgument, "advertise '" + advertise +
                                                      "': the tcp:// address other nodes and clients reach this "
                                                      "node at (a real host, not * or 0.0.0.0)");
  }
  if (etcd.empty()) return MakeError(ErrorCode::kInvalidArgument, "etcd: the cluster's etcd endpoints are needed");
  cluster::EtcdOptions options;
  options.endpoints = etcd;
  if (auto ok = options.Validate(); !ok) return MakeError(ErrorCode::kInvalidArgument, "etcd: " + ok.error().message);
  return {};
}

ClusterNode::ClusterNode(ClusterSettings settings, Cache& cache, std::shared_ptr<spdlog::logger> log)
    : settings_(std::move(settings)), cache_(cache), log_(std::move(log)) {
  auto empty = std::make_shared<ClusterView>();
  empty->slot_state.assign(kSlotCount, ClusterView::kOther);
  empty->import_source.resize(kSlotCount);
  view_ = std::move(empty);
}

Result<std::unique_ptr<ClusterNode>> ClusterNode::Join(const ClusterSettings& settings, Cache& cache,
                                                       std::shared_ptr<spdlog::logger> log) {
  if (auto ok = settings.Validate(); !ok) return tl::unexpected(ok.error());
  std::unique_ptr<ClusterNode> node(new ClusterNode(settings, cache, std::move(log)));
  cluster::EtcdOptions options;
  options.endpoints = settings.etcd;
  auto etcd = cluster::EtcdClient::Create(options);
  if (!etcd) return tl::unexpected(etcd.error());
  node->etcd_ = std::make_unique<cluster::EtcdClient>(std::move(*etcd));
  if (auto ok = node->Register(); !ok) return tl::unexpected(ok.error());
  if (auto ok = node->Bootstrap(); !ok) return tl::unexpected(ok.error());
  if (auto ok = node->Refresh(); !ok) return tl::unexpected(ok.error());

  // Every change under the prefix (a node's registration, the map) makes
  // the node re-read the whole: the control plane changes rarely, and a
  // re-read cannot get events out of order.
  cluster::WatchOptions watch;
  watch.key = node->Prefix();
  watch.prefix = true;
  watch.start_revision = static_cast<int64_t>(node->view()->epoch) + 1;
  ClusterNode* self = node.get();
  auto started = cluster::EtcdWatch::Start(options, watch, [self](const cluster::WatchUpdate& update) {
    if (update.kind == cluster::WatchUpdate::Kind::kLost) {
      self->log_->warn("cluster: lost the watch on etcd ({}); serving by the map of epoch {}", update.error.message,
                       self->epoch());
      return;
    }
    if (auto ok = self->Refresh(); !ok) self->log_->warn("cluster: cannot re-read the map: {}", ok.error().ToString());
  });
  if (!started) return tl::unexpected(started.error());
  node->watch_ = std::make_unique<cluster::EtcdWatch>(std::move(*started));
  node->importer_ = std::thread([self] { self->ImportLoop(); });
  return node;
}

ClusterNode::~ClusterNode() {
  {
    std::lock_guard<std::mutex> lock(jobs_mutex_);
    stopping_ = true;
  }
  jobs_cv_.notify_all();
  if (importer_.joinable()) importer_.join();
  watch_.reset();
  if (lease_ && !lease_->lost()) {
    if (auto ok = lease_->Revoke(); !ok) {
      log_->warn("cluster: could not revoke the lease ({}); the node is down for the cluster within {} s",
                 ok.error().ToString(), kLeaseTtlSeconds);
    }
  }
}

Result<void> ClusterNode::Register() {
  cluster::EtcdOptions options = etcd_->options();
  cluster::LeaseKeeperOptions lease_options;
  lease_options.ttl_seconds = kLeaseTtlSeconds;
  auto lease = cluster::LeaseKeeper::Start(options, lease_options, [this](const Error& why) {
    registered_ = false;
    reregister_ = true;
    log_->error("cluster: lost the registration lease ({}); registering again", why.message);
    jobs_cv_.notify_all();
  });
  if (!lease) return tl::unexpected(lease.error());
  const nlohmann::json me = {{"id", settings_.node_id}, {"endpoint", settings_.advertise}};
  auto put = etcd_->Put(Prefix() + "nodes/" + settings_.node_id, me.dump(), lease->lease_id());
  if (!put) return MakeError(put.error().code, "registering node '" + settings_.node_id + "': " + put.error().message);
  lease_ = std::make_unique<cluster::LeaseKeeper>(std::move(*lease));
  registered_ = true;
  log_->info("cluster '{}': registered as node '{}' at {}", settings_.name, settings_.node_id, settings_.advertise);
  return {};
}

Result<void> ClusterNode::Bootstrap() {
  const std::string key = Prefix() + "map";
  auto plan = cluster::Plan(nullptr, {settings_.node_id}, 1);
  if (!plan) return tl::unexpected(plan.error());
  auto txn = etcd_->Txn({cluster::Compare::CreateRevision(key, cluster::Compare::Op::kEqual, 0)},
                        {cluster::TxnOp::Put(key, plan->ToJson())}, {});
  if (!txn) return MakeError(txn.error().code, "making the cluster's first map: " + txn.error().message);
  if (txn->succeeded) {
    log_->info("cluster '{}': no map yet; made one with this node holding every slot", settings_.name);
  }
  return {};
}

Result<void> ClusterNode::Refresh() {
  std::lock_guard<std::mutex> refresh(refresh_mutex_);
  auto range = etcd_->Range(Prefix());
  if (!range) return tl::unexpected(range.error());
  auto next = std::make_shared<ClusterView>();
  const std::string nodes_prefix = Prefix() + "nodes/";
  for (const cluster::KeyValue& kv : range->kvs) {
    if (kv.key == Prefix() + "map") {
      auto map = cluster::ShardMap::FromJson(kv.value);
      if (!map) return MakeError(map.error().code, "the map in etcd is invalid: " + map.error().message);
      map->set_epoch(static_cast<uint64_t>(kv.mod_revision));
      next->epoch = static_cast<uint64_t>(kv.mod_revision);
      next->map_json = kv.value;
      next->map = std::make_shared<const cluster::ShardMap>(std::move(*map));
    } else if (kv.key.rfind(nodes_prefix, 0) == 0) {
      try {
        const nlohmann::json node = nlohmann::json::parse(kv.value);
        next->endpoints[node.at("id").get<std::string>()] = node.at("endpoint").get<std::string>();
      } catch (const std::exception& e) {
        log_->warn("cluster: ignoring the registration at {}: {}", kv.key, e.what());
      }
    }
  }
  const std::shared_ptr<const ClusterView> previous = view();
  if (next->map == nullptr) {
    next->slot_state.assign(kSlotCount, ClusterView::kOther);
    next->import_source.resize(kSlotCount);
    Publish(std::move(next));
    return {};
  }
  // Slot states: mine when this node is the shard's primary (R = 1: its only
  // node). A slot gained from a live node in a newer epoch is imported from it.
  next->slot_state.assign(kSlotCount, ClusterView::kOther);
  next->import_source.resize(kSlotCount);
  std::vector<uint8_t> gained(kSlotCount, 0);
  std::map<std::string, ImportJob> jobs;
  for (uint32_t s = 0; s < kSlotCount; ++s) {
    if (next->map->ShardForSlot(s).nodes.front() != settings_.node_id) continue;
    next->slot_state[s] = ClusterView::kMine;
    if (previous->map == nullptr) continue;  // just joined: what the segment holds is ours
    if (previous->slot_state[s] == ClusterView::kImporting) {
      next->slot_state[s] = ClusterView::kImporting;  // the import under way goes on
      next->import_source[s] = previous->import_source[s];
      continue;
    }
    if (previous->slot_state[s] == ClusterView::kMine || next->epoch <= previous->epoch) continue;
    gained[s] = 1;
    const std::string& from = previous->map->ShardForSlot(s).nodes.front();
    auto endpoint = next->endpoints.find(from);
    if (endpoint == next->endpoints.end()) continue;  // its owner is down: nothing to import
    next->slot_state[s] = ClusterView::kImporting;
    next->import_source[s] = endpoint->second;
    ImportJob& job = jobs[endpoint->second];
    job.epoch = next->epoch;
    job.source = endpoint->second;
    if (!job.ranges.empty() && job.ranges.back().second + 1 == s) {
      job.ranges.back().second = s;
    } else {
      job.ranges.emplace_back(s, s);
    }
  }
  // Keys of gained slots left from an earlier ownership are stale: they go
  // before the view that serves those slots is published.
  if (std::find(gained.begin(), gained.end(), 1) != gained.end()) DropKeysOf(gained);
  if (next->epoch != previous->epoch) {
    size_t mine = std::count(next->slot_state.begin(), next->slot_state.end(), ClusterView::kMine);
    size_t importing = std::count(next->slot_state.begin(), next->slot_state.end(), ClusterView::kImporting);
    log_->info("cluster '{}': map epoch {}: this node serves {} slots ({} being imported)", settings_.name, next->epoch,
               mine + importing, importing);
  }
  Publish(std::move(next));
  if (!jobs.empty()) {
    std::lock_guard<std::mutex> lock(jobs_mutex_);
    for (auto& [source, job] : jobs) jobs_.push_back(std::move(job));
    jobs_cv_.notify_all();
  }
  return {};
}

void ClusterNode::Publish(std::shared_ptr<const ClusterView> next) {
  std::lock_guard<std::mutex> lock(view_mutex_);
  view_ = std::move(next);
}

std::shared_ptr<const ClusterView> ClusterNode::view() const {
  std::lock_guard<std::mutex> lock(view_mutex_);
  return view_;
}

void ClusterNode::DropKeysOf(const std::vector<uint8_t>& slots) {
  size_t dropped = 0;
  uint64_t cursor = 0;
  do {
    Cache::ScanPage page = cache_.Scan(cursor, {}, 1024);
    for (const std::string& key : page.keys) {
      if (slots[SlotOf(key)] && cache_.Erase(key)) ++dropped;
    }
    cursor = page.cursor;
  } while (cursor != 0);
  if (dropped > 0) log_->info("cluster: dropped {} keys left from an earlier ownership of slots now gained", dropped);
}

ClusterNode::Route ClusterNode::RouteKey(std::string_view key, bool write, bool asking) const {
  const std::shared_ptr<const ClusterView> v = view();
  Route route;
  route.slot = SlotOf(key);
  route.epoch = v->epoch;
  if (v->map == nullptr) {
    route.status = ErrorCode::kClusterDown;
    route.message = "cluster '" + settings_.name + "' has no shard map yet";
    return route;
  }
  const uint8_t state = v->slot_state[route.slot];
  if (state == ClusterView::kImporting) {
    route.endpoint = v->import_source[route.slot];
    return route;
  }
  if (state == ClusterView::kMine || (asking && !write)) return route;
  const std::string& owner = v->map->ShardForSlot(route.slot).nodes.front();
  auto endpoint = v->endpoints.find(owner);
  if (endpoint == v->endpoints.end()) {
    route.status = ErrorCode::kClusterDown;
    route.message = "slot " + std::to_string(route.slot) + " is served by node '" + owner + "', which is down";
    return route;
  }
  route.status = ErrorCode::kMoved;
  route.endpoint = endpoint->second;
  route.message = "slot " + std::to_string(route.slot) + " is served by node '" + owner + "' at " + endpoint->second +
                  " (epoch " + std::to_string(route.epoch) + ")";
  return route;
}

std::unique_lock<std::mutex> ClusterNode::GuardWrite(std::string_view key) {
  const std::shared_ptr<const ClusterView> v = view();
  if (v->slot_state.empty() || v->slot_state[SlotOf(key)] != ClusterView::kImporting) return {};
  std::unique_lock<std::mutex> lock(import_mutex_);
  touched_.emplace(key);
  return lock;
}

ClusterNode::Stats ClusterNode::stats() const {
  const std::shared_ptr<const ClusterView> v = view();
  Stats s;
  s.epoch = v->epoch;
  s.owned_slots = static_cast<uint64_t>(std::count(v->slot_state.begin(), v->slot_state.end(), ClusterView::kMine));
  s.importing_slots =
      static_cast<uint64_t>(std::count(v->slot_state.begin(), v->slot_state.end(), ClusterView::kImporting));
  s.imported_keys = imported_keys_.load();
  s.import_failures = import_failures_.load();
  s.registered = registered_.load();
  return s;
}

// ------------------------------------------------------------- the worker

void ClusterNode::ImportLoop() {
  for (;;) {
    ImportJob job;
    {
      std::unique_lock<std::mutex> lock(jobs_mutex_);
      jobs_cv_.wait_for(lock, kWorkerTick, [this] { return stopping_ || !jobs_.empty() || reregister_; });
      if (stopping_) return;
      if (reregister_.exchange(false)) {
        lock.unlock();
        if (auto ok = Register(); !ok) {
          log_->error("cluster: registering again failed: {}; retrying", ok.error().ToString());
          reregister_ = true;
        }
        continue;
      }
      if (jobs_.empty()) continue;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    if (!RunImport(job)) ++import_failures_;
    FinishImport(job);
  }
}

// Pulls the keys of the job's slots from their previous owner, page by
// page; stores each one unless the key is here already or was written here
// since the import began (the server thread's GuardWrite).
bool ClusterNode::RunImport(const ImportJob& job) {
  zmq::context_t context(1);
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  socket.connect(job.source);
  uint64_t request_id = 0;
  size_t keys = 0;
  for (const auto& [first, last] : job.ranges) {
    uint64_t cursor = 0;
    int failures = 0;
    bool done = false;  // cursor 0 both starts and ends a walk
    while (!done) {
      {
        std::lock_guard<std::mutex> lock(jobs_mutex_);
        if (stopping_) return false;
      }
      wire::Writer request;
      request.BeginRequest(++request_id, wire::Op::kSlotDump, 5);
      request.Uint(job.epoch);
      request.Uint(first);
      request.Uint(last);
      request.Uint(cursor);
      request.Uint(kDumpBuckets);
      zmqio::Send(socket, zmq::const_buffer(request.data(), request.size()), zmq::send_flags::none);
      zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
      zmq::message_t frame;
      Result<wire::Reply> reply =
          MakeError(ErrorCode::kTimeout, "no answer within " + std::to_string(kDumpTimeout.count()) + " ms");
      // Skip late answers to pages already given up on.
      while (zmqio::Poll(&item, 1, kDumpTimeout) > 0 && zmqio::Recv(socket, frame, zmq::recv_flags::none)) {
        reply = wire::DecodeReply(static_cast<const char*>(frame.data()), frame.size());
        if (!reply || reply->id == request_id) break;
      }
      bool page_ok = false;
      if (reply && reply->status == ErrorCode::kOk && reply->payload->type == msgpack::type::ARRAY &&
          reply->payload->via.array.size == 2) {
        const msgpack::object& next = reply->payload->via.array.ptr[0];
        const msgpack::object& items = reply->payload->via.array.ptr[1];
        if (next.type == msgpack::type::POSITIVE_INTEGER && items.type == msgpack::type::ARRAY &&
            items.via.array.size % 3 == 0) {
          page_ok = true;
          for (uint32_t i = 0; i + 2 < items.via.array.size; i += 3) {
            auto key = wire::BytesArg(items.via.array.ptr[i], "key");
            auto value = wire::BytesArg(items.via.array.ptr[i + 1], "value");
            auto ttl = wire::IntArg(items.via.array.ptr[i + 2], "ttl");
            if (!key || !value || !ttl || *ttl < 0) {
              page_ok = false;
              break;
            }
            std::lock_guard<std::mutex> lock(import_mutex_);
            if (touched_.count(std::string(*key)) != 0) continue;
            SetOptions options;
            options.ttl = std::chrono::milliseconds(*ttl);
            options.condition = SetCondition::kIfAbsent;
            auto stored = cache_.Set(*key, *value, options);
            if (stored && *stored) ++keys;
          }
          if (page_ok) {
            cursor = next.via.u64;
            done = cursor == 0;
          }
        }
      }
      if (!page_ok) {
        const std::string why =
            !reply ? reply.error().ToString() : wire::ReplyError(reply->status, *reply->payload).ToString();
        if (++failures >= kDumpTries) {
          log_->error("cluster: importing slots {}..{} from {} failed ({}); serving them with what is here", first,
                      last, job.source, why);
          imported_keys_ += keys;
          return false;
        }
        log_->warn("cluster: importing from {}: {}; retrying", job.source, why);
        std::this_thread::sleep_for(std::chrono::milliseconds(100 * failures));
      }
    }
  }
  imported_keys_ += keys;
  log_->info("cluster: imported {} keys of {} slot ranges from {} (epoch {})", keys, job.ranges.size(), job.source,
             job.epoch);
  return true;
}

void ClusterNode::FinishImport(const ImportJob& job) {
  std::lock_guard<std::mutex> refresh(refresh_mutex_);
  auto next = std::make_shared<ClusterView>(*view());
  for (const auto& [first, last] : job.ranges) {
    for (uint32_t s = first; s <= last; ++s) {
      if (next->slot_state[s] != ClusterView::kImporting || next->import_source[s] != job.source) continue;
      next->slot_state[s] = ClusterView::kMine;
      next->import_source[s].clear();
    }
  }
  const bool still_importing =
      std::find(next->slot_state.begin(), next->slot_state.end(), ClusterView::kImporting) != next->slot_state.end();
  Publish(std::move(next));
  if (!still_importing) {
    std::lock_guard<std::mutex> lock(import_mutex_);
    touched_.clear();
  }
}

}  // namespace cachet::daemon
