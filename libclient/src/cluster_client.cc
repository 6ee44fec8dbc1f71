#include "cachet/cluster_client.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "cachet/cluster/etcd_client.h"
#include "cachet/cluster/shard_map.h"
#include "cachet/cluster/slot.h"
#include "node_sockets.h"
#include "protocol.h"
#include "requests.h"

namespace cachet {

using wire::Op;
using SteadyClock = std::chrono::steady_clock;
using Ms = std::chrono::milliseconds;

namespace {

// The widest limits any daemon allows (CacheOptions::Validate): a node
// refuses what its own settings refuse, with the same codes.
constexpr uint32_t kWidestKey = 65535;
constexpr uint32_t kWidestValue = 1u << 30;

// Scan cursors: the node's index in the top bits, its own cursor below.
constexpr int kNodeCursorBits = 48;
constexpr uint64_t kNodeCursorMask = (uint64_t{1} << kNodeCursorBits) - 1;

Ms Left(SteadyClock::time_point deadline) {
  return std::max(Ms(0), std::chrono::duration_cast<Ms>(deadline - SteadyClock::now()));
}

Error Unexpected(const char* what, const std::string& endpoint) {
  return Error{ErrorCode::kProtocol, std::string("unexpected reply payload for ") + what + " from " + endpoint};
}

// Only these reads may be wrapped in ASK (docs/protocol.md, "Cluster").
bool Askable(Op op) { return op == Op::kGet || op == Op::kExists || op == Op::kTtl || op == Op::kMGet; }

}  // namespace

Result<void> ClusterClientOptions::Validate() const {
  if (seeds.empty() && (etcd_endpoints.empty() || cluster.empty())) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "a cluster client needs seed nodes, or etcd endpoints and a cluster name");
  }
  for (const std::string& s : seeds) {
    if (s.rfind("tcp://", 0) != 0 && s.rfind("ipc://", 0) != 0) {
      return MakeError(ErrorCode::kInvalidArgument, "seed '" + s + "' must start with tcp:// (or ipc://)");
    }
  }
  if (!etcd_endpoints.empty() && cluster.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "etcd endpoints were given without the cluster's name");
  }
  if (timeout.count() <= 0 || retries < 0 || backoff.count() < 0 || max_redirects < 0) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "timeout must be positive; retries, backoff and max_redirects not negative");
  }
  return {};
}

class ClusterClient::Impl {
 public:
  explicit Impl(const ClusterClientOptions& options) : options_(options), sockets_(options.curve) {
    client_options_.timeout = options.timeout;
    client_options_.retries = options.retries;
    client_options_.backoff = options.backoff;
    client_options_.shared_memory_reads = false;  // a node's segment holds only its shards
    client_options_.curve = options.curve;
  }

  std::mutex& mu() { return mu_; }
  uint64_t epoch() const {
    std::lock_guard<std::mutex> lock(mu_);
    return map_ ? map_->epoch() : 0;
  }

  // ------------------------------------------------------------ the map

  // Asks `first` (if given), then every known node, then the seeds, then
  // etcd; adopts the first map at least as new as the one in use. `last`
  // (a node that just failed to answer) is asked last.
  Result<void> RefreshLocked(const std::string& first = {}, const std::string& last = {}) {
    std::vector<std::string> candidates;
    auto add = [&](const std::string& e) {
      if (!e.empty() && e != last && std::find(candidates.begin(), candidates.end(), e) == candidates.end()) {
        candidates.push_back(e);
      }
    };
    add(first);
    for (const auto& [id, endpoint] : directory_) add(endpoint);
    for (const std::string& s : options_.seeds) add(s);
    if (!last.empty()) candidates.push_back(last);
    std::string reasons;
    for (const std::string& endpoint : candidates) {
      auto got = FetchFromNode(endpoint);
      if (got) return {};
      reasons += (reasons.empty() ? "" : "; ") + endpoint + ": " + got.error().ToString();
    }
    if (!options_.etcd_endpoints.empty()) {
      auto got = FetchFromEtcd();
      if (got) return {};
      reasons += (reasons.empty() ? "" : "; ") + std::string("etcd: ") + got.error().ToString();
    }
    if (map_) return {};  // nobody newer: the map in use stands
    return MakeError(ErrorCode::kUnavailable, "cannot learn the cluster's shard map (" + reasons + ")");
  }

  // The node a shard's requests go to: its elected primary as last heard
  // of; else its first registered node, which redirects to the primary.
  const std::string& PrimaryNodeLocked(const cluster::Shard& shard) const {
    auto elected = primaries_.find(shard.id);
    if (elected != primaries_.end() && directory_.count(elected->second) != 0) return elected->second;
    for (const std::string& node : shard.nodes) {
      if (directory_.count(node) != 0) return node;
    }
    return shard.nodes.front();
  }

  // Learns from a redirect where a slot's shard is led now.
  void LearnPrimaryLocked(uint32_t slot, const std::string& endpoint) {
    if (!map_ || slot >= cluster::kSlotCount) return;
    for (const auto& [node, at] : directory_) {
      if (at == endpoint) primaries_[map_->ShardForSlot(slot).id] = node;
    }
  }

  // The first node a key goes to: its shard's primary; for a read in an
  // eventual-mode cluster, any registered node of the shard, in turn (a
  // replica whose copy is not whole redirects to the primary).
  Result<std::pair<std::string, std::string>> RouteLocked(std::string_view key, bool read = false) const {
    if (!map_) return MakeError(ErrorCode::kUnavailable, "no shard map");
    const cluster::Shard& shard = map_->ShardForKey(key);
    if (read && eventual_) {
      std::vector<const std::string*> live;
      for (const std::string& n : shard.nodes) {
        if (directory_.count(n) != 0) live.push_back(&n);
      }
      if (!live.empty()) {
        const std::string& node = *live[(spread_ + shard.id) % live.size()];
        return std::make_pair(node, directory_.at(node));
      }
    }
    const std::string& node = PrimaryNodeLocked(shard);
    auto it = directory_.find(node);
    if (it == directory_.end()) {
      return MakeError(ErrorCode::kUnavailable, "node '" + node + "' (primary of shard " + std::to_string(shard.id) +
                                                    ") is not registered: it is down or has not joined");
    }
    return std::make_pair(node, it->second);
  }

  // Each distinct primary of the map with its endpoint (empty if unknown), by id.
  std::vector<std::pair<std::string, std::string>> PrimariesLocked() const {
    std::vector<std::pair<std::string, std::string>> out;
    if (!map_) return out;
    for (const cluster::Shard& s : map_->shards()) {
      const std::string& node = PrimaryNodeLocked(s);
      if (std::any_of(out.begin(), out.end(), [&](const auto& p) { return p.first == node; })) continue;
      auto it = directory_.find(node);
      out.emplace_back(node, it == directory_.end() ? std::string() : it->second);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  const cluster::ShardMap* map() const { return map_.get(); }
  const std::map<std::string, std::string>& directory() const { return directory_; }

  // ------------------------------------------------------------ requests

  // Builds a request; `ask` wraps it in ASK.
  template <typename Fill>
  std::string Frame(uint64_t id, Op op, uint32_t nargs, bool ask, Fill&& fill) {
    writer_.Clear();
    if (ask) {
      writer_.BeginRequest(id, Op::kAsk, nargs + 1);
      writer_.Str(wire::OpName(op));
    } else {
      writer_.BeginRequest(id, op, nargs);
    }
    fill(writer_);
    return std::string(writer_.data(), writer_.size());
  }

  uint64_t NextId() { return next_id_++; }
  void Run(std::vector<Exchange>& xs) { sockets_.Run(xs, options_.timeout); }

  // One request to one node, once.
  Result<wire::Reply> RoundTripLocked(const std::string& endpoint, uint64_t id, std::string frame, Ms timeout) {
    std::vector<Exchange> xs(1);
    xs[0].endpoint = endpoint;
    xs[0].id = id;
    xs[0].frame = std::move(frame);
    sockets_.Run(xs, timeout);
    return std::move(*xs[0].result);
  }

  // A request about one key, routed by its slot and following redirects
  // (see cluster_client.h for the rules).
  // A keyed request whose op, count and arguments are one of requests.h's
  // Args.
  template <typename Args>
  Result<wire::Reply> KeyCallLocked(const Args& args, bool idempotent) {
    return KeyCallLocked(args.key, Args::kOp, Args::kCount, idempotent, args);
  }

  template <typename Fill>
  Result<wire::Reply> KeyCallLocked(std::string_view key, Op op, uint32_t nargs, bool idempotent, Fill&& fill) {
    const auto deadline = SteadyClock::now() + options_.timeout * (options_.retries + 1);
    int redirects = 0, failures = 0, waits = 0;
    bool asked = false;
    std::optional<std::string> ask_at;  // the next attempt goes there, wrapped in ASK
    ++spread_;
    Result<std::pair<std::string, std::string>> route = RouteLocked(key, Askable(op));
    std::string endpoint = route ? route->second : std::string();
    Error last = route ? Error{ErrorCode::kUnavailable, "no attempt made"} : route.error();
    // Waits before the next attempt and looks for a newer map; false when
    // the budget is spent.
    auto wait_and_refresh = [&]() {
      const Ms pause = options_.backoff * (1 << std::min(waits++, 10));
      if (Left(deadline) <= pause) return false;
      std::this_thread::sleep_for(pause);
      (void)RefreshLocked({}, endpoint);
      route = RouteLocked(key, Askable(op));
      if (!route) {
        last = route.error();
        endpoint.clear();
      } else {
        endpoint = route->second;
      }
      return true;
    };
    for (;;) {
      if (endpoint.empty() && !ask_at) {
        if (!wait_and_refresh()) return tl::unexpected(last);
        continue;
      }
      const bool asking = ask_at.has_value();
      const std::string target = asking ? *ask_at : endpoint;
      ask_at.reset();
      const uint64_t id = NextId();
      auto reply = RoundTripLocked(target, id, Frame(id, op, nargs, asking, fill), options_.timeout);
      if (!reply) {
        last = reply.error();
        if (last.code == ErrorCode::kProtocol) return tl::unexpected(last);
        // Unreachable: nothing was sent. Timed out: it may have been applied.
        if (last.code == ErrorCode::kTimeout && !idempotent) return tl::unexpected(last);
        if (++failures > options_.retries || !wait_and_refresh()) return tl::unexpected(last);
        continue;
      }
      if (reply->status == ErrorCode::kMoved || reply->status == ErrorCode::kAsk) {
        const std::optional<wire::Redirect> r = wire::ReadRedirect(*reply->payload);
        if (!r) return tl::unexpected(wire::ReplyError(reply->status, *reply->payload));
        if (reply->status == ErrorCode::kAsk) {
          if (asked || !Askable(op)) {
            return MakeError(ErrorCode::kAsk,
                             "node at " + target + " answered ASK for a request that cannot follow it: " + r->message);
          }
          asked = true;
          ask_at = r->endpoint;
          continue;
        }
        if (++redirects > options_.max_redirects) {
          return MakeError(ErrorCode::kMoved, "gave up after " + std::to_string(options_.max_redirects) +
                                                  " redirects for slot " + std::to_string(r->slot) +
                                                  "; the last, from " + target + " to " + r->endpoint + ": " +
                                                  r->message);
        }
        if (map_ && r->epoch < map_->epoch()) {
          // The node has not caught up with the map this client routes by
          // (it follows etcd, and will): ask again after a pause rather than
          // be sent back to where the slot was.
          last = Error{ErrorCode::kMoved, "node at " + target + " is behind (epoch " + std::to_string(r->epoch) +
                                              " < " + std::to_string(map_->epoch()) + "): " + r->message};
          if (!wait_and_refresh()) return tl::unexpected(last);
          continue;
        }
        if (!map_ || r->epoch > map_->epoch()) (void)RefreshLocked(r->endpoint);
        LearnPrimaryLocked(r->slot, r->endpoint);
        endpoint = r->endpoint;
        continue;
      }
      if (reply->status == ErrorCode::kClusterDown) {
        last = wire::ReplyError(reply->status, *reply->payload);
        last.message = "node at " + target + ": " + last.message;
        if (!wait_and_refresh()) return tl::unexpected(last);
        continue;
      }
      return reply;
    }
  }

  // A multi-key op split by node: the items grouped by their primary, one
  // request per node, every part sent before any reply is awaited. A part
  // answered OK goes to `take(indexes, payload, endpoint)`; a part refused
  // with MOVED, ASK or CLUSTER_DOWN, or lost on the way, and items with no
  // route, are added to `*redo` for the caller to do key by key (through
  // the redirect rules); any other error ends the call.
  template <typename KeyAt, typename WriteItem, typename Take>
  Result<void> SplitCallLocked(Op op, size_t count, uint32_t args_per_item, KeyAt key_at, WriteItem write, Take take,
                               std::vector<size_t>* redo) {
    ++spread_;
    std::map<std::string, std::vector<size_t>> groups;
    for (size_t i = 0; i < count; ++i) {
      auto route = RouteLocked(key_at(i), Askable(op));
      if (route) {
        groups[route->second].push_back(i);
      } else {
        redo->push_back(i);
      }
    }
    std::vector<Exchange> xs;
    std::vector<const std::vector<size_t>*> parts;
    for (const auto& group : groups) {
      // Named, not a structured binding: clang before 16 cannot capture one.
      const std::vector<size_t>& indexes = group.second;
      Exchange x;
      x.endpoint = group.first;
      x.id = NextId();
      x.frame = Frame(x.id, op, static_cast<uint32_t>(indexes.size()) * args_per_item, false, [&](wire::Writer& w) {
        for (size_t i : indexes) write(w, i);
      });
      xs.push_back(std::move(x));
      parts.push_back(&indexes);
    }
    Run(xs);
    for (size_t k = 0; k < xs.size(); ++k) {
      const Result<wire::Reply>& reply = *xs[k].result;
      if (reply && reply->status == ErrorCode::kOk) {
        if (auto ok = take(*parts[k], *reply->payload, xs[k].endpoint); !ok) return ok;
        continue;
      }
      if (reply && reply->status != ErrorCode::kMoved && reply->status != ErrorCode::kAsk &&
          reply->status != ErrorCode::kClusterDown) {
        return tl::unexpected(wire::ReplyError(reply->status, *reply->payload));
      }
      if (!reply && reply.error().code == ErrorCode::kProtocol) return tl::unexpected(reply.error());
      redo->insert(redo->end(), parts[k]->begin(), parts[k]->end());
    }
    return {};
  }

  // A per-node Client for the whole-cache ops (it decodes their payloads).
  Result<Client*> NodeClientLocked(const std::string& endpoint) {
    auto it = node_clients_.find(endpoint);
    if (it != node_clients_.end()) return it->second.get();
    auto client = Client::Connect(endpoint, client_options_);
    if (!client) return tl::unexpected(client.error());
    return (node_clients_[endpoint] = std::move(*client)).get();
  }

  const ClusterClientOptions& options() const { return options_; }

 private:
  // CLUSTER on one node: {"cluster", "node", "epoch", "map", "nodes"}.
  Result<void> FetchFromNode(const std::string& endpoint) {
    const uint64_t id = NextId();
    auto reply =
        RoundTripLocked(endpoint, id, Frame(id, Op::kCluster, 0, false, [](wire::Writer&) {}), options_.timeout);
    if (!reply) return tl::unexpected(reply.error());
    if (reply->status != ErrorCode::kOk) return tl::unexpected(wire::ReplyError(reply->status, *reply->payload));
    const msgpack::object& p = *reply->payload;
    if (p.type != msgpack::type::MAP) return tl::unexpected(Unexpected("CLUSTER", endpoint));
    std::optional<uint64_t> epoch;
    std::optional<std::string> json;
    std::string cluster;
    std::map<std::string, std::string> nodes;
    std::map<uint32_t, std::string> primaries;
    bool eventual = false;
    bool have_nodes = false;
    for (const msgpack::object_kv& kv : p.via.map) {
      if (!wire::IsBytes(kv.key)) continue;
      const std::string name = wire::ToString(kv.key);
      if (name == "epoch" && kv.val.type == msgpack::type::POSITIVE_INTEGER) epoch = kv.val.via.u64;
      if (name == "map" && wire::IsBytes(kv.val)) json = wire::ToString(kv.val);
      if (name == "cluster" && wire::IsBytes(kv.val)) cluster = wire::ToString(kv.val);
      if (name == "consistency" && wire::IsBytes(kv.val)) eventual = wire::ToString(kv.val) == "eventual";
      if (name == "nodes" && kv.val.type == msgpack::type::MAP) {
        have_nodes = true;
        for (const msgpack::object_kv& n : kv.val.via.map) {
          if (!wire::IsBytes(n.key) || !wire::IsBytes(n.val)) return tl::unexpected(Unexpected("CLUSTER", endpoint));
          nodes[wire::ToString(n.key)] = wire::ToString(n.val);
        }
      }
      // shard id -> [node, term]
      if (name == "primaries" && kv.val.type == msgpack::type::MAP) {
        for (const msgpack::object_kv& n : kv.val.via.map) {
          if (n.key.type != msgpack::type::POSITIVE_INTEGER || n.val.type != msgpack::type::ARRAY ||
              n.val.via.array.size < 1 || !wire::IsBytes(n.val.via.array.ptr[0])) {
            return tl::unexpected(Unexpected("CLUSTER", endpoint));
          }
          primaries[static_cast<uint32_t>(n.key.via.u64)] = wire::ToString(n.val.via.array.ptr[0]);
        }
      }
    }
    if (!epoch || !json || !have_nodes) return tl::unexpected(Unexpected("CLUSTER", endpoint));
    if (!options_.cluster.empty() && cluster != options_.cluster) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "node at " + endpoint + " is in cluster '" + cluster + "', not '" + options_.cluster + "'");
    }
    return Adopt(*json, *epoch, std::move(nodes), std::move(primaries), eventual, "node at " + endpoint);
  }

  // The map key and the node registrations under /cachet/<cluster>/.
  Result<void> FetchFromEtcd() {
    if (!etcd_) {
      cluster::EtcdOptions eo;
      eo.endpoints = options_.etcd_endpoints;
      eo.request_timeout = options_.timeout;
      auto created = cluster::EtcdClient::Create(eo);
      if (!created) return tl::unexpected(created.error());
      etcd_ = std::make_unique<cluster::EtcdClient>(std::move(*created));
    }
    const std::string prefix = "/cachet/" + options_.cluster + "/";
    auto kv = etcd_->Get(prefix + "map");
    if (!kv) return tl::unexpected(kv.error());
    if (!*kv) return MakeError(ErrorCode::kUnavailable, "cluster '" + options_.cluster + "' has no shard map in etcd");
    auto registered = etcd_->Range(prefix + "nodes/");
    if (!registered) return tl::unexpected(registered.error());
    std::map<std::string, std::string> nodes;
    for (const cluster::KeyValue& n : registered->kvs) {
      const nlohmann::json j = nlohmann::json::parse(n.value, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object() || !j.contains("id") || !j["id"].is_string() || !j.contains("endpoint") ||
          !j["endpoint"].is_string()) {
        continue;  // a malformed registration names no node we could reach
      }
      nodes[j["id"].get<std::string>()] = j["endpoint"].get<std::string>();
    }
    auto elected = etcd_->Range(prefix + "primary/");
    if (!elected) return tl::unexpected(elected.error());
    std::map<uint32_t, std::string> primaries;
    for (const cluster::KeyValue& p : elected->kvs) {
      const nlohmann::json j = nlohmann::json::parse(p.value, nullptr, /*allow_exceptions=*/false);
      const std::string id = p.key.substr(prefix.size() + std::strlen("primary/"));
      if (!j.is_object() || !j.contains("node") || !j["node"].is_string() || id.empty() ||
          id.find_first_not_of("0123456789") != std::string::npos || id.size() > 9) {
        continue;
      }
      primaries[static_cast<uint32_t>(std::stoul(id))] = j["node"].get<std::string>();
    }
    auto settings = etcd_->Get(prefix + "settings");
    if (!settings) return tl::unexpected(settings.error());
    bool eventual = false;
    if (*settings) {
      const nlohmann::json j = nlohmann::json::parse((*settings)->value, nullptr, /*allow_exceptions=*/false);
      eventual = j.is_object() && j.contains("consistency") && j["consistency"] == "eventual";
    }
    return Adopt((*kv)->value, static_cast<uint64_t>((*kv)->mod_revision), std::move(nodes), std::move(primaries),
                 eventual, "etcd");
  }

  Result<void> Adopt(const std::string& json, uint64_t epoch, std::map<std::string, std::string> nodes,
                     std::map<uint32_t, std::string> primaries, bool eventual, const std::string& source) {
    if (map_ && epoch < map_->epoch()) {
      return MakeError(ErrorCode::kUnavailable, "has an older map (epoch " + std::to_string(epoch) + " < " +
                                                    std::to_string(map_->epoch()) + ")");
    }
    auto parsed = cluster::ShardMap::FromJson(json);
    if (!parsed) {
      return MakeError(ErrorCode::kProtocol, "the shard map from " + source + " is invalid: " + parsed.error().message);
    }
    parsed->set_epoch(epoch);
    map_ = std::make_unique<cluster::ShardMap>(std::move(*parsed));
    directory_ = std::move(nodes);
    primaries_ = std::move(primaries);
    eventual_ = eventual;
    return {};
  }

  const ClusterClientOptions options_;
  ClientOptions client_options_;
  mutable std::mutex mu_;  // guards everything below
  std::unique_ptr<cluster::ShardMap> map_;
  std::map<std::string, std::string> directory_;  // node id -> endpoint
  std::map<uint32_t, std::string> primaries_;     // shard id -> its elected primary's node id
  NodeSockets sockets_;
  std::map<std::string, std::unique_ptr<Client>> node_clients_;
  std::unique_ptr<cluster::EtcdClient> etcd_;
  wire::Writer writer_;
  uint64_t next_id_ = 1;
  bool eventual_ = false;  // the cluster's consistency mode: reads may go to replicas
  uint64_t spread_ = 0;    // turns reads over a shard's nodes
};

// ------------------------------------------------------------ the API

ClusterClient::ClusterClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ClusterClient::~ClusterClient() = default;

Result<std::unique_ptr<ClusterClient>> ClusterClient::Connect(const ClusterClientOptions& options) {
  if (auto ok = options.Validate(); !ok) return tl::unexpected(ok.error());
  auto impl = std::make_unique<Impl>(options);
  {
    std::lock_guard<std::mutex> lock(impl->mu());
    if (auto ok = impl->RefreshLocked(); !ok) return tl::unexpected(ok.error());
  }
  return std::unique_ptr<ClusterClient>(new ClusterClient(std::move(impl)));
}

uint64_t ClusterClient::epoch() const { return impl_->epoch(); }

Result<void> ClusterClient::RefreshMap() {
  std::lock_guard<std::mutex> lock(impl_->mu());
  return impl_->RefreshLocked();
}

Result<std::pair<std::string, std::string>> ClusterClient::NodeForKey(std::string_view key) const {
  std::lock_guard<std::mutex> lock(impl_->mu());
  return impl_->RouteLocked(key);
}

namespace {

Result<void> CheckKey(std::string_view key, size_t index = wire::kNoIndex) {
  return wire::CheckKey(key, kWidestKey, index);
}

}  // namespace

Result<void> ClusterClient::Ping() {
  std::lock_guard<std::mutex> lock(impl_->mu());
  const auto primaries = impl_->PrimariesLocked();
  std::vector<Exchange> xs;
  for (const auto& [node, endpoint] : primaries) {
    if (endpoint.empty()) {
      return MakeError(ErrorCode::kUnavailable, "node '" + node + "' is a primary but not registered (down?)");
    }
    Exchange x;
    x.endpoint = endpoint;
    x.id = impl_->NextId();
    x.frame = impl_->Frame(x.id, Op::kPing, 0, false, [](wire::Writer&) {});
    xs.push_back(std::move(x));
  }
  impl_->Run(xs);
  for (const Exchange& x : xs) {
    if (auto p = wire::Payload(*x.result); !p) {
      return MakeError(p.error().code, "node at " + x.endpoint + ": " + p.error().message);
    }
  }
  return {};
}

Result<std::optional<std::string>> ClusterClient::Get(std::string_view key) {
  std::string value;
  auto found = GetInto(key, &value);
  if (!found) return tl::unexpected(found.error());
  if (!*found) return std::optional<std::string>();
  return std::optional<std::string>(std::move(value));
}

Result<bool> ClusterClient::GetInto(std::string_view key, std::string* value) {
  if (auto ok = CheckKey(key); !ok) return tl::unexpected(ok.error());
  std::lock_guard<std::mutex> lock(impl_->mu());
  return wire::ValuePayload(impl_->KeyCallLocked(key, Op::kGet, 1, true, [&](wire::Writer& w) { w.Bytes(key); }),
                            value);
}

Result<bool> ClusterClient::Set(std::string_view key, std::string_view value, const SetOptions& options) {
  if (auto ok = CheckKey(key); !ok) return tl::unexpected(ok.error());
  if (auto ok = wire::CheckValue(value, kWidestValue); !ok) return tl::unexpected(ok.error());
  if (auto ok = wire::CheckTtl(options.ttl.count(), wire::TtlUse::kOnWrite); !ok) return tl::unexpected(ok.error());
  std::lock_guard<std::mutex> lock(impl_->mu());
  return wire::BoolPayload(impl_->KeyCallLocked(wire::SetArgs{key, value, options}, /*idempotent=*/false), "SET");
}

Result<bool> ClusterClient::Del(std::string_view key) {
  if (auto ok = CheckKey(key); !ok) return tl::unexpected(ok.error());
  std::lock_guard<std::mutex> lock(impl_->mu());
  return wire::BoolPayload(
      impl_->KeyCallLocked(key, Op::kDel, 1, /*idempotent=*/false, [&](wire::Writer& w) { w.Bytes(key); }), "DEL");
}

Result<bool> ClusterClient::Exists(std::string_view key) {
  if (auto ok = CheckKey(key); !ok) return tl::unexpected(ok.error());
  std::lock_guard<std::mutex> lock(impl_->mu());
  return wire::BoolPayload(impl_->KeyCallLocked(key, Op::kExists, 1, true, [&](wire::Writer& w) { w.Bytes(key); }),
                           "EXISTS");
}

Result<bool> ClusterClient::Expire(std::string_view key, std::chrono::milliseconds ttl) {
  if (auto ok = CheckKey(key); !ok) return tl::unexpected(ok.error());
  if (auto ok = wire::CheckTtl(ttl.count(), wire::TtlUse::kExpire); !ok) return tl::unexpected(ok.error());
  std::lock_guard<std::mutex> lock(impl_->mu());
  return wire::BoolPayload(impl_->KeyCallLocked(wire::ExpireArgs{key, ttl}, /*idempotent=*/false), "EXPIRE");
}

Result<std::optional<std::chrono::milliseconds>> ClusterClient::Ttl(std::string_view key) {
  if (auto ok = CheckKey(key); !ok) return tl::unexpected(ok.error());
  std::lock_guard<std::mutex> lock(impl_->mu());
  return wire::TtlPayload(impl_->KeyCallLocked(key, Op::kTtl, 1, true, [&](wire::Writer& w) { w.Bytes(key); }));
}

Result<int64_t> ClusterClient::Incr(std::string_view key, int64_t delta, std::chrono::milliseconds ttl_on_create) {
  if (auto ok = CheckKey(key); !ok) return tl::unexpected(ok.error());
  if (auto ok = wire::CheckTtl(ttl_on_create.count(), wire::TtlUse::kOnWrite); !ok) return tl::unexpected(ok.error());
  std::lock_guard<std::mutex> lock(impl_->mu());
  return wire::IntPayload(impl_->KeyCallLocked(wire::IncrArgs{key, delta, ttl_on_create}, false), "INCR");
}

Result<int64_t> ClusterClient::Decr(std::string_view key, int64_t delta) {
  if (auto ok = CheckKey(key); !ok) return tl::unexpected(ok.error());
  std::lock_guard<std::mutex> lock(impl_->mu());
  return wire::IntPayload(impl_->KeyCallLocked(wire::DecrArgs{key, delta}, false), "DECR");
}

Result<Decision> ClusterClient::RateLimit(std::string_view key, std::string_view tier, uint64_t cost) {
  if (auto ok = CheckKey(key); !ok) return tl::unexpected(ok.error());
  std::lock_guard<std::mutex> lock(impl_->mu());
  // Not idempotent: a decision whose reply was lost may have been counted.
  return wire::DecisionPayload(impl_->KeyCallLocked(wire::RateLimitArgs{key, tier, cost}, false));
}

Result<std::vector<std::optional<std::string>>> ClusterClient::MGet(const std::vector<std::string>& keys) {
  std::vector<std::optional<std::string>> out(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    if (auto ok = CheckKey(keys[i], i); !ok) return tl::unexpected(ok.error());
  }
  if (keys.empty()) return out;
  std::lock_guard<std::mutex> lock(impl_->mu());
  std::vector<size_t> redo;
  auto split = impl_->SplitCallLocked(
      Op::kMGet, keys.size(), 1, [&](size_t i) -> const std::string& { return keys[i]; },
      [&](wire::Writer& w, size_t i) { w.Bytes(keys[i]); },
      [&](const std::vector<size_t>& indexes, const msgpack::object& p, const std::string& endpoint) -> Result<void> {
        if (p.type != msgpack::type::ARRAY || p.via.array.size != indexes.size()) {
          return tl::unexpected(Unexpected("MGET", endpoint));
        }
        for (size_t j = 0; j < indexes.size(); ++j) {
          if (wire::IsBytes(p.via.array.ptr[j])) out[indexes[j]] = wire::ToString(p.via.array.ptr[j]);
        }
        return {};
      },
      &redo);
  if (!split) return tl::unexpected(split.error());
  for (size_t i : redo) {
    std::string value;
    auto found = wire::ValuePayload(
        impl_->KeyCallLocked(keys[i], Op::kGet, 1, true, [&](wire::Writer& w) { w.Bytes(keys[i]); }), &value);
    if (!found) return tl::unexpected(found.error());
    if (*found) out[i] = std::move(value);
  }
  return out;
}

Result<void> ClusterClient::MSet(const std::vector<std::pair<std::string, std::string>>& items) {
  for (size_t i = 0; i < items.size(); ++i) {
    if (auto ok = CheckKey(items[i].first, i); !ok) return tl::unexpected(ok.error());
    if (auto ok = wire::CheckValue(items[i].second, kWidestValue, i); !ok) return tl::unexpected(ok.error());
  }
  if (items.empty()) return {};
  std::lock_guard<std::mutex> lock(impl_->mu());
  std::vector<size_t> redo;
  auto split = impl_->SplitCallLocked(
      Op::kMSet, items.size(), 2, [&](size_t i) -> const std::string& { return items[i].first; },
      [&](wire::Writer& w, size_t i) {
        w.Bytes(items[i].first);
        w.Bytes(items[i].second);
      },
      [](const std::vector<size_t>&, const msgpack::object&, const std::string&) -> Result<void> { return {}; }, &redo);
  if (!split) return tl::unexpected(split.error());
  for (size_t i : redo) {
    auto stored = wire::BoolPayload(
        impl_->KeyCallLocked(wire::SetArgs{items[i].first, items[i].second, SetOptions{}}, /*idempotent=*/false),
        "SET");
    if (!stored) return tl::unexpected(stored.error());
  }
  return {};
}

Result<Cache::ScanPage> ClusterClient::Scan(uint64_t cursor, std::string_view pattern, uint32_t count) {
  std::lock_guard<std::mutex> lock(impl_->mu());
  const auto primaries = impl_->PrimariesLocked();
  const uint64_t index = cursor >> kNodeCursorBits;
  if (index >= primaries.size()) {
    return MakeError(ErrorCode::kInvalidArgument, "scan cursor " + std::to_string(cursor) + " names node " +
                                                      std::to_string(index) + " of a map with " +
                                                      std::to_string(primaries.size()));
  }
  const auto& [node, endpoint] = primaries[index];
  if (endpoint.empty()) {
    return MakeError(ErrorCode::kUnavailable, "node '" + node + "' is a primary but not registered (down?)");
  }
  auto client = impl_->NodeClientLocked(endpoint);
  if (!client) return tl::unexpected(client.error());
  auto page = (*client)->Scan(cursor & kNodeCursorMask, pattern, count);
  if (!page) return MakeError(page.error().code, "node at " + endpoint + ": " + page.error().message);
  if (page->cursor > kNodeCursorMask) return tl::unexpected(Unexpected("SCAN (cursor over 48 bits)", endpoint));
  Cache::ScanPage out;
  for (std::string& k : page->keys) {
    if (impl_->PrimaryNodeLocked(impl_->map()->ShardForKey(k)) == node) out.keys.push_back(std::move(k));
  }
  if (page->cursor != 0) {
    out.cursor = index << kNodeCursorBits | page->cursor;
  } else if (index + 1 < primaries.size()) {
    out.cursor = (index + 1) << kNodeCursorBits;
  }
  return out;
}

Result<std::vector<NodeStats>> ClusterClient::Stats() {
  std::lock_guard<std::mutex> lock(impl_->mu());
  std::vector<NodeStats> out;
  for (const auto& [node, endpoint] : impl_->PrimariesLocked()) {
    NodeStats s;
    s.node = node;
    s.endpoint = endpoint;
    if (endpoint.empty()) {
      s.error = Error{ErrorCode::kUnavailable, "not registered (down?)"};
    } else if (auto client = impl_->NodeClientLocked(endpoint); !client) {
      s.error = client.error();
    } else if (auto stats = (*client)->Stats(); !stats) {
      s.error = stats.error();
    } else {
      s.stats = std::move(*stats);
    }
    out.push_back(std::move(s));
  }
  return out;
}

Result<void> ClusterClient::Flush() {
  std::lock_guard<std::mutex> lock(impl_->mu());
  std::optional<Error> first;
  // Every registered node: FLUSH is not replicated, replicas are emptied too.
  for (const auto& [node, endpoint] : impl_->directory()) {
    Result<void> done =
        endpoint.empty() ? MakeError(ErrorCode::kUnavailable, "not registered (down?)") : Result<void>();
    if (done) {
      auto client = impl_->NodeClientLocked(endpoint);
      done = client ? (*client)->Flush() : Result<void>(tl::unexpected(client.error()));
    }
    if (!done && !first) first = Error{done.error().code, "node '" + node + "': " + done.error().message};
  }
  if (first) return tl::unexpected(*first);
  return {};
}

}  // namespace cachet
