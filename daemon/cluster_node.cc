#include "cluster_node.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
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
// How often the importer looks for work, and the election for shards with
// no primary.
constexpr std::chrono::milliseconds kWorkerTick{200};
constexpr std::chrono::milliseconds kElectTick{50};
// A new shard's preferred node (the map's first) claims it at once; the
// others wait this long for it. A shard with a history waits this long after a quorum of its
// copies stood for the rest of its live copies to stand.
constexpr std::chrono::milliseconds kPreferredWait{1000};
constexpr std::chrono::milliseconds kStandWait{400};
// A candidacy this node put that its view has not shown for this long is
// put again: the key can be gone without the view ever showing it (its
// lease lapsed, or a winner's claim cleared the candidates and its term
// ended before this node saw it), and a shard whose copies all wait for a
// watch that shows nothing would stay without a primary.
constexpr std::chrono::milliseconds kStandAgainAfter{1000};
// A shard none of whose copies is whole waits this long, with all its
// nodes registered, before its first node takes it as it is.
constexpr std::chrono::milliseconds kNoCopyWait{3000};
// A primary stops acknowledging this long before its lease can lapse.
constexpr std::chrono::milliseconds kLeaseMargin{150};

std::string JoinedNames(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ",") + n;
  return out;
}

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
  last_owner_.assign(kSlotCount, {UINT32_MAX, std::string()});
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
  // A shard this node alone holds, or a new one it is first for, gets its
  // primary before the node answers its first request.
  node->Elect();
  if (auto ok = node->Refresh(); !ok) return tl::unexpected(ok.error());
  node->elector_ = std::thread([self] { self->ElectLoop(); });
  return node;
}

ClusterNode::~ClusterNode() {
  {
    std::lock_guard<std::mutex> lock(jobs_mutex_);
    stopping_ = true;
  }
  jobs_cv_.notify_all();
  if (importer_.joinable()) importer_.join();
  if (elector_.joinable()) elector_.join();
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
    log_->error(
        "cluster: lost the registration lease ({}); registering again (a shard this node led gets "
        "another primary)",
        why.message);
    jobs_cv_.notify_all();
  });
  if (!lease) return tl::unexpected(lease.error());
  const nlohmann::json me = {{"id", settings_.node_id}, {"endpoint", settings_.advertise}};
  auto put = etcd_->Put(Prefix() + "nodes/" + settings_.node_id, me.dump(), lease->lease_id());
  if (!put) return MakeError(put.error().code, "registering node '" + settings_.node_id + "': " + put.error().message);
  {
    std::lock_guard<std::mutex> lock(lease_mutex_);
    lease_ = std::make_unique<cluster::LeaseKeeper>(std::move(*lease));
  }
  registered_ = true;
  log_->info("cluster '{}': registered as node '{}' at {}", settings_.name, settings_.node_id, settings_.advertise);
  return {};
}

Result<void> ClusterNode::Bootstrap() {
  const std::string key = Prefix() + "map";
  auto plan = cluster::Plan(nullptr, {settings_.node_id}, 1);
  if (!plan) return tl::unexpected(plan.error());
  const nlohmann::json cluster_settings = {{"replication", settings_.replication},
                                           {"consistency", settings_.strong ? "strong" : "eventual"}};
  auto txn = etcd_->Txn(
      {cluster::Compare::CreateRevision(key, cluster::Compare::Op::kEqual, 0)},
      {cluster::TxnOp::Put(key, plan->ToJson()), cluster::TxnOp::Put(Prefix() + "settings", cluster_settings.dump())},
      {cluster::TxnOp::Get(Prefix() + "settings")});
  if (!txn) return MakeError(txn.error().code, "making the cluster's first map: " + txn.error().message);
  if (txn->succeeded) {
    log_->info("cluster '{}': no map yet; made one with this node holding every slot (replication {}, {})",
               settings_.name, settings_.replication, settings_.strong ? "strong" : "eventual");
    return {};
  }
  if (!txn->ranges.empty() && !txn->ranges[0].kvs.empty() && txn->ranges[0].kvs[0].value != cluster_settings.dump()) {
    log_->warn(
        "cluster '{}' keeps the settings it was made with, {}; this node's replication and consistency "
        "options are not used",
        settings_.name, txn->ranges[0].kvs[0].value);
  }
  return {};
}

Result<uint64_t> ClusterNode::PutPolicy(const std::string& text, bool only_if_absent) {
  const std::string key = Prefix() + "policy";
  if (!only_if_absent) {
    auto put = etcd_->Put(key, text);
    if (!put) return MakeError(put.error().code, "storing the cluster's policy: " + put.error().message);
    return static_cast<uint64_t>(*put);
  }
  auto txn = etcd_->Txn({cluster::Compare::CreateRevision(key, cluster::Compare::Op::kEqual, 0)},
                        {cluster::TxnOp::Put(key, text)}, {});
  if (!txn) return MakeError(txn.error().code, "storing the cluster's first policy: " + txn.error().message);
  return txn->succeeded ? static_cast<uint64_t>(txn->revision) : 0;
}

Result<void> ClusterNode::Refresh() {
  std::lock_guard<std::mutex> refresh(refresh_mutex_);
  auto range = etcd_->Range(Prefix());
  if (!range) return tl::unexpected(range.error());
  auto next = std::make_shared<ClusterView>();
  if (auto ok = Parse(range->kvs, *next); !ok) return ok;
  const std::shared_ptr<const ClusterView> previous = view();
  next->slot_state.assign(kSlotCount, ClusterView::kOther);
  next->import_source.resize(kSlotCount);
  if (next->map == nullptr) {
    Publish(std::move(next));
    return {};
  }
  // Slot states: mine where this node is the shard's elected primary, a
  // replica's where it holds a copy. A slot that comes to this node's shard
  // from another shard is imported from that shard's last primary.
  std::vector<uint8_t> gained(kSlotCount, 0);
  std::map<std::string, ImportJob> jobs;
  const std::string& me = settings_.node_id;
  const std::string& my_endpoint = settings_.advertise;
  for (uint32_t s = 0; s < kSlotCount; ++s) {
    const cluster::Shard& shard = next->map->ShardForSlot(s);
    std::pair<uint32_t, std::string> last_owner = last_owner_[s];
    auto primary = next->primaries.find(shard.id);
    if (primary != next->primaries.end()) last_owner_[s] = {shard.id, primary->second.endpoint};
    if (std::find(shard.nodes.begin(), shard.nodes.end(), me) == shard.nodes.end()) continue;
    const bool mine = primary != next->primaries.end() && primary->second.node == me;
    next->slot_state[s] = mine ? ClusterView::kMine : ClusterView::kReplica;
    if (!mine || previous->map == nullptr) continue;  // just joined: what the segment holds is ours
    if (previous->slot_state[s] == ClusterView::kImporting) {
      next->slot_state[s] = ClusterView::kImporting;  // the import under way goes on
      next->import_source[s] = previous->import_source[s];
      continue;
    }
    if (last_owner.first == shard.id || last_owner.first == UINT32_MAX) continue;  // same shard, new primary
    if (previous->slot_state[s] == ClusterView::kOther) gained[s] = 1;             // what is here is stale
    const std::string& from = last_owner.second;
    const bool live =
        std::any_of(next->endpoints.begin(), next->endpoints.end(), [&](const auto& e) { return e.second == from; });
    if (from.empty() || from == my_endpoint || !live) continue;  // its owner is down: nothing to import
    next->slot_state[s] = ClusterView::kImporting;
    next->import_source[s] = from;
    ImportJob& job = jobs[from];
    job.epoch = next->epoch;
    job.source = from;
    if (!job.ranges.empty() && job.ranges.back().second + 1 == s) {
      job.ranges.back().second = s;
    } else {
      job.ranges.emplace_back(s, s);
    }
  }
  // Keys of gained slots left from an earlier ownership are stale: they go
  // before the view that serves those slots is published.
  if (std::find(gained.begin(), gained.end(), 1) != gained.end()) DropKeysOf(gained);
  LogChanges(*previous, *next);
  Publish(std::move(next));
  if (!jobs.empty()) {
    std::lock_guard<std::mutex> lock(jobs_mutex_);
    for (auto& [source, job] : jobs) jobs_.push_back(std::move(job));
    jobs_cv_.notify_all();
  }
  return {};
}

// The keys under the cluster's prefix, into `view`'s map, directory,
// settings, primaries and candidates.
Result<void> ClusterNode::Parse(const std::vector<cluster::KeyValue>& kvs, ClusterView& view) const {
  const std::string prefix = Prefix();
  // "<prefix><dir>/<rest>": the rest, or nullopt for another key.
  auto under = [&](const cluster::KeyValue& kv, const char* dir) -> std::optional<std::string_view> {
    const std::string head = prefix + dir + "/";
    if (kv.key.rfind(head, 0) != 0) return std::nullopt;
    return std::string_view(kv.key).substr(head.size());
  };
  auto shard_id = [](std::string_view text) -> std::optional<uint32_t> {
    uint32_t id = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
    if (ec != std::errc() || end == text.data()) return std::nullopt;
    return id;
  };
  bool have_settings = false;
  for (const cluster::KeyValue& kv : kvs) {
    try {
      if (kv.key == prefix + "map") {
        auto map = cluster::ShardMap::FromJson(kv.value);
        if (!map) return MakeError(map.error().code, "the map in etcd is invalid: " + map.error().message);
        map->set_epoch(static_cast<uint64_t>(kv.mod_revision));
        view.epoch = static_cast<uint64_t>(kv.mod_revision);
        view.map_json = kv.value;
        view.map = std::make_shared<const cluster::ShardMap>(std::move(*map));
      } else if (kv.key == prefix + "policy") {
        view.policy = kv.value;
        view.policy_revision = static_cast<uint64_t>(kv.mod_revision);
      } else if (kv.key == prefix + "settings") {
        const nlohmann::json j = nlohmann::json::parse(kv.value);
        view.replication = j.at("replication").get<uint32_t>();
        view.strong = j.at("consistency").get<std::string>() != "eventual";
        have_settings = true;
      } else if (under(kv, "nodes")) {
        const nlohmann::json node = nlohmann::json::parse(kv.value);
        view.endpoints[node.at("id").get<std::string>()] = node.at("endpoint").get<std::string>();
      } else if (auto primary = under(kv, "primary")) {
        const nlohmann::json j = nlohmann::json::parse(kv.value);
        auto id = shard_id(*primary);
        if (!id) throw std::invalid_argument("not a shard id");
        view.primaries[*id] = {j.at("node").get<std::string>(), j.at("endpoint").get<std::string>(),
                               static_cast<uint64_t>(kv.mod_revision)};
      } else if (auto elected = under(kv, "elected")) {
        if (auto id = shard_id(*elected)) view.elected_before.insert(*id);
      } else if (auto rest = under(kv, "candidates")) {
        const size_t slash = rest->find('/');
        auto id = shard_id(rest->substr(0, slash));
        if (!id || slash == std::string_view::npos) throw std::invalid_argument("not <shard>/<node>");
        const nlohmann::json j = nlohmann::json::parse(kv.value);
        view.candidates[*id][std::string(rest->substr(slash + 1))] = {j.at("term").get<uint64_t>(),
                                                                      j.at("seq").get<uint64_t>()};
      }
    } catch (const std::exception& e) {
      log_->warn("cluster: ignoring the key {}: {}", kv.key, e.what());
    }
  }
  if (!have_settings && view.map) {
    view.replication = view.map->replication();  // a cluster made before the settings key
    view.strong = true;
  }
  return {};
}

void ClusterNode::LogChanges(const ClusterView& before, const ClusterView& after) const {
  if (after.epoch != before.epoch) {
    const auto count = [&](uint8_t state) {
      return std::count(after.slot_state.begin(), after.slot_state.end(), state);
    };
    log_->info("cluster '{}': map epoch {}: this node leads {} slots ({} being imported) and copies {}", settings_.name,
               after.epoch, count(ClusterView::kMine) + count(ClusterView::kImporting), count(ClusterView::kImporting),
               count(ClusterView::kReplica));
  }
  for (const auto& [shard, p] : after.primaries) {
    auto old = before.primaries.find(shard);
    if (old == before.primaries.end() || old->second.term != p.term) {
      log_->info("cluster: shard {} has primary '{}' at {} (term {})", shard, p.node, p.endpoint, p.term);
    }
  }
  for (const auto& [shard, p] : before.primaries) {
    if (after.primaries.count(shard) == 0) log_->warn("cluster: shard {} lost its primary '{}'", shard, p.node);
  }
}

void ClusterNode::Publish(std::shared_ptr<const ClusterView> next) {
  std::lock_guard<std::mutex> lock(view_mutex_);
  view_ = std::move(next);
}

std::shared_ptr<const ClusterView> ClusterNode::view() const {
  std::lock_guard<std::mutex> lock(view_mutex_);
  return view_;
}

size_t DropKeysOfSlots(Cache& cache, const std::vector<uint8_t>& slots) {
  size_t dropped = 0;
  uint64_t cursor = 0;
  do {
    Cache::ScanPage page = cache.Scan(cursor, {}, 1024);
    for (const std::string& key : page.keys) {
      if (slots[SlotOf(key)] && cache.Erase(key)) ++dropped;
    }
    cursor = page.cursor;
  } while (cursor != 0);
  return dropped;
}

void ClusterNode::DropKeysOf(const std::vector<uint8_t>& slots) {
  const size_t dropped = DropKeysOfSlots(cache_, slots);
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
  const cluster::Shard& shard = v->map->ShardForSlot(route.slot);
  route.shard = shard.id;
  auto primary = v->primaries.find(shard.id);
  if (primary != v->primaries.end()) route.primary_endpoint = primary->second.endpoint;
  const uint8_t state = v->slot_state[route.slot];
  if (state == ClusterView::kMine || state == ClusterView::kImporting) {
    if (v->strong && !LeaseFresh()) {
      route.status = ErrorCode::kClusterDown;
      route.message = "this node's lease in etcd may have lapsed: it serves shard " + std::to_string(shard.id) +
                      " again once the lease is renewed, or another node is elected";
      return route;
    }
    if (state == ClusterView::kImporting) route.endpoint = v->import_source[route.slot];
    return route;
  }
  if (state == ClusterView::kReplica && !write && !v->strong) {
    route.replica = true;
    return route;
  }
  if (asking && !write) return route;
  if (primary == v->primaries.end()) {
    route.status = ErrorCode::kClusterDown;
    route.message = "slot " + std::to_string(route.slot) + " (shard " + std::to_string(shard.id) +
                    ") has no primary now; one of its nodes (" + JoinedNames(shard.nodes) + ") is being elected";
    return route;
  }
  route.status = ErrorCode::kMoved;
  route.endpoint = primary->second.endpoint;
  route.message = "slot " + std::to_string(route.slot) + " is served by node '" + primary->second.node + "' at " +
                  route.endpoint + " (epoch " + std::to_string(route.epoch) + ", term " +
                  std::to_string(primary->second.term) + ")";
  return route;
}

bool ClusterNode::LeaseFresh() const {
  std::lock_guard<std::mutex> lock(lease_mutex_);
  return lease_ && !lease_->lost() && std::chrono::steady_clock::now() + kLeaseMargin < lease_->expires();
}

void ClusterNode::SetPosition(uint32_t shard, ShardPosition position, bool whole) {
  std::lock_guard<std::mutex> lock(copies_mutex_);
  copies_[shard] = Copy{position, whole};
}

std::vector<uint32_t> ClusterNode::TakeResyncs() {
  std::lock_guard<std::mutex> lock(jobs_mutex_);
  return std::exchange(resyncs_, {});
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
  if (v->map) {
    for (const cluster::Shard& shard : v->map->shards()) s.shards_without_primary += v->primaries.count(shard.id) == 0;
  }
  s.registered = registered_.load();
  return s;
}

// ------------------------------------------------------------ the election

void ClusterNode::ElectLoop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(jobs_mutex_);
      jobs_cv_.wait_for(lock, kElectTick, [this] { return stopping_ || reregister_; });
      if (stopping_) return;
    }
    if (reregister_.exchange(false)) {
      if (auto ok = Register(); !ok) {
        log_->error("cluster: registering again failed: {}; retrying", ok.error().ToString());
        reregister_ = true;
        continue;
      }
      stood_.clear();  // candidacies went with the lost lease
      if (auto ok = Refresh(); !ok) log_->warn("cluster: cannot re-read the map: {}", ok.error().ToString());
    }
    Elect();
  }
}

// One round: resign shards the map no longer gives this node; stand for,
// and claim, shards of this node's that have no primary. The rules
// (docs/design.md): a new shard goes to its preferred node; a shard with a
// history goes to the most up-to-date whole copy, (term, seq) first and the
// map's order second, once a quorum of whole copies (strong: a majority of
// the shard's nodes, eventual: one) has stood, so the winner holds every
// write a majority acknowledged.
void ClusterNode::Elect() {
  if (!registered_) return;
  const std::shared_ptr<const ClusterView> v = view();
  if (v->map == nullptr) return;
  const std::string& me = settings_.node_id;
  const auto now = std::chrono::steady_clock::now();
  for (const auto& [id, p] : v->primaries) {
    if (p.node != me) continue;
    const cluster::Shard* shard = v->map->FindShard(id);
    if (shard == nullptr || std::find(shard->nodes.begin(), shard->nodes.end(), me) == shard->nodes.end()) {
      Resign(id, p.term, "the map no longer gives this node the shard");
    }
  }
  for (const cluster::Shard& shard : v->map->shards()) {
    if (std::find(shard.nodes.begin(), shard.nodes.end(), me) == shard.nodes.end()) continue;
    if (v->primaries.count(shard.id) != 0) {
      headless_since_.erase(shard.id);
      stood_.erase(shard.id);
      continue;
    }
    const auto since = headless_since_.emplace(shard.id, now).first->second;
    std::vector<std::string> live;
    for (const std::string& n : shard.nodes) {
      if (v->endpoints.count(n) != 0) live.push_back(n);
    }
    if (live.empty()) continue;
    if (v->elected_before.count(shard.id) == 0 || shard.nodes.size() == 1) {
      // No copy has a history to lose (or there is one copy only): the
      // map's preferred node claims it, another if it has not within a while.
      if (shard.nodes.front() == me || now - since >= kPreferredWait) Claim(shard.id, "a new shard");
      continue;
    }
    Copy mine;
    {
      std::lock_guard<std::mutex> lock(copies_mutex_);
      auto it = copies_.find(shard.id);
      if (it != copies_.end()) mine = it->second;
    }
    static const std::map<std::string, ShardPosition> kNone;
    auto found = v->candidates.find(shard.id);
    const auto& standing = found == v->candidates.end() ? kNone : found->second;
    if (!mine.whole) {
      // A partial copy never stands. But when no copy is whole (every node
      // of the shard restarted) and all are back, waiting helps nobody: the
      // map's first node takes the shard with what its segment holds.
      if (standing.empty() && live.size() == shard.nodes.size() && shard.nodes.front() == me &&
          now - since >= kNoCopyWait) {
        log_->warn("cluster: shard {} has no whole copy on any of its nodes; leading it with what this node holds",
                   shard.id);
        Claim(shard.id, "no whole copy left");
      }
      continue;
    }
    auto my_stand = standing.find(me);
    if (my_stand == standing.end() || my_stand->second != mine.position) {
      auto stood = stood_.find(shard.id);
      if (stood != stood_.end() && stood->second.position == mine.position && now - stood->second.at < kStandAgainAfter)
        continue;  // put; the watch has not shown it yet
      const nlohmann::json j = {{"term", mine.position.term}, {"seq", mine.position.seq}};
      int64_t lease = 0;
      {
        std::lock_guard<std::mutex> lock(lease_mutex_);
        if (lease_) lease = lease_->lease_id();
      }
      auto put = etcd_->Put(Prefix() + "candidates/" + std::to_string(shard.id) + "/" + me, j.dump(), lease);
      if (!put) {
        log_->warn("cluster: cannot stand for shard {}: {}", shard.id, put.error().ToString());
        continue;
      }
      stood_[shard.id] = Stood{mine.position, now};
      headless_since_[shard.id] = now;  // the wait for the others counts from here
      continue;
    }
    const size_t quorum = v->strong ? shard.nodes.size() / 2 + 1 : 1;
    if (standing.size() < quorum) continue;
    const bool all_stood =
        std::all_of(live.begin(), live.end(), [&](const std::string& n) { return standing.count(n) != 0; });
    if (!all_stood && now - since < kStandWait) continue;
    auto rank = [&](const std::string& n) {
      return std::find(shard.nodes.begin(), shard.nodes.end(), n) - shard.nodes.begin();
    };
    const std::string* best = nullptr;
    ShardPosition best_position;
    for (const auto& [node, position] : standing) {
      if (best == nullptr || Behind(best_position, position) ||
          (best_position == position && rank(node) < rank(*best))) {
        best = &node;
        best_position = position;
      }
    }
    if (*best == me) Claim(shard.id, "the most up-to-date copy");
  }
}

void ClusterNode::Claim(uint32_t shard, const char* why) {
  const std::string id = std::to_string(shard);
  const std::string key = Prefix() + "primary/" + id;
  int64_t lease = 0;
  {
    std::lock_guard<std::mutex> lock(lease_mutex_);
    if (!lease_ || lease_->lost()) return;
    lease = lease_->lease_id();
  }
  const nlohmann::json me = {{"node", settings_.node_id}, {"endpoint", settings_.advertise}};
  auto txn =
      etcd_->Txn({cluster::Compare::CreateRevision(key, cluster::Compare::Op::kEqual, 0)},
                 {cluster::TxnOp::Put(key, me.dump(), lease), cluster::TxnOp::Put(Prefix() + "elected/" + id, "1"),
                  cluster::TxnOp::DeletePrefix(Prefix() + "candidates/" + id + "/")},
                 {});
  if (!txn) {
    log_->warn("cluster: claiming shard {} failed: {}", shard, txn.error().ToString());
    return;
  }
  if (!txn->succeeded) return;  // another node was elected first
  log_->info("cluster: elected primary of shard {} ({}) at term {}", shard, why, txn->revision);
  if (auto ok = Refresh(); !ok) log_->warn("cluster: cannot re-read the map: {}", ok.error().ToString());
}

void ClusterNode::Resign(uint32_t shard, uint64_t term, const char* why) {
  const std::string key = Prefix() + "primary/" + std::to_string(shard);
  auto txn = etcd_->Txn({cluster::Compare::ModRevision(key, cluster::Compare::Op::kEqual, static_cast<int64_t>(term))},
                        {cluster::TxnOp::Delete(key)}, {});
  if (!txn) {
    log_->warn("cluster: resigning shard {} failed: {}", shard, txn.error().ToString());
    return;
  }
  if (txn->succeeded) log_->info("cluster: resigned as primary of shard {} (term {}): {}", shard, term, why);
}

// ------------------------------------------------------------- the importer

void ClusterNode::ImportLoop() {
  for (;;) {
    ImportJob job;
    {
      std::unique_lock<std::mutex> lock(jobs_mutex_);
      jobs_cv_.wait_for(lock, kWorkerTick, [this] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
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
  zmqio::UseCurveClient(socket, settings_.curve);
  zmqio::Connect(socket, job.source);
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
  {
    // The shard's replicas get a full copy again: the import wrote past
    // the replication stream.
    std::lock_guard<std::mutex> lock(jobs_mutex_);
    for (const auto& [first, last] : job.ranges) {
      if (next->map == nullptr) break;
      const uint32_t shard = next->map->ShardForSlot(first).id;
      if (std::find(resyncs_.begin(), resyncs_.end(), shard) == resyncs_.end()) resyncs_.push_back(shard);
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
