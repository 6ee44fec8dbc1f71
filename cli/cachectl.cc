// cachectl: the operators' command line for cachetd.
//
// Exit codes (stable, for scripts):
//   0  success
//   1  the key was not found (get, ttl, del, expire)
//   2  usage error, or the daemon refused the input (too large, not an integer, ...)
//   3  cannot reach the daemon (unavailable or timed out)
//   4  any other error reported by the daemon
//
// --json prints one JSON document per command. Keys and values are bytes: one
// that is valid UTF-8 is printed as a JSON string ("key", "value"); one that
// is not is printed in base64 under the name with "_base64" appended
// ("key_base64", "value_base64"), so every byte comes back as it was.
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <unistd.h>
#include <zmq.h>

#include "cachet/client.h"
#include "cachet/cluster/etcd_client.h"
#include "cachet/cluster/shard_map.h"
#include "cachet/cluster/slot.h"
#include "cachet/curve.h"
#include "top.h"

namespace {

using cachet::Error;
using cachet::ErrorCode;

constexpr int kOk = 0, kNotFound = 1, kUsage = 2, kUnreachable = 3, kServerError = 4;

struct Command {
  const char* name;
  const char* args;
  const char* summary;
};

const Command kCommands[] = {
    {"ping", "", "check that the daemon answers"},
    {"get", "KEY", "print the value of KEY"},
    {"set", "KEY VALUE [--ttl MS] [--nx | --xx]", "store VALUE at KEY (--nx: only if absent, --xx: only if present)"},
    {"del", "KEY", "delete KEY"},
    {"ttl", "KEY", "print the remaining time to live of KEY in ms (-1: none)"},
    {"expire", "KEY MS", "set the time to live of KEY (MS <= 0 deletes it)"},
    {"incr", "KEY [--by N] [--ttl MS]", "add N (default 1) to the integer at KEY; --ttl applies when KEY is created"},
    {"keys", "[PATTERN]", "list keys matching a glob PATTERN (default *), walking the whole cache"},
    {"stats", "", "print the daemon's counters"},
    {"top", "[--interval T] [--count N]",
     "show ops/s, hit ratio, memory and clients, refreshed every T (500ms, 2s; default 1s); N refreshes"},
    {"reload", "", "make the daemon re-read its configuration file (like SIGHUP)"},
    {"flush", "", "delete every key"},
    {"keygen", "NAME [--force]", "write a CURVE key pair: NAME.key (secret, mode 0600) and NAME.pub"},
    {"cluster", "SUBCOMMAND [ID]",
     "show or change a cluster's shard map in etcd (--etcd URLS --cluster NAME; see --help)"},
};

void PrintUsage(FILE* out) {
  std::fprintf(out,
               "usage: cachectl [--endpoint E] [--json] [--timeout MS] COMMAND [ARGS]\n\n"
               "  --endpoint E       daemon endpoint: ipc://PATH, tcp://HOST:PORT or stream://HOST:PORT\n"
               "                     (default $CACHET_ENDPOINT or ipc:///tmp/cachetd.sock)\n"
               "  --json             machine-readable output\n"
               "  --timeout MS       per-request timeout (default 1000)\n"
               "  --server-key FILE  the daemon's public key (NAME.pub), for a tcp endpoint with CURVE\n"
               "                     (default $CACHET_SERVER_KEY)\n"
               "  --key FILE         this client's key pair (NAME.key) (default $CACHET_KEY)\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-7s %-36s %s\n", c.name, c.args, c.summary);
  std::fprintf(out,
               "\ncluster commands (read and write the map in etcd; no --endpoint):\n"
               "  --etcd URLS    etcd client URLs, comma-separated (default $CACHET_ETCD or http://127.0.0.1:2379)\n"
               "  --cluster NAME the cluster (default $CACHET_CLUSTER)\n"
               "  cluster status           nodes (live or down), shards, primaries, the map's epoch\n"
               "  cluster add-node ID      give a registered node its share of the slots\n"
               "  cluster remove-node ID   move a node's slots to the others\n"
               "  cluster rebalance        re-plan the slots over the map's nodes\n"
               "  The changes print progress until every node serves the new map and has imported its\n"
               "  slots; --timeout MS bounds that wait (default 60000). Exit 4 if it did not finish.\n");
  std::fprintf(out,
               "\n'cachectl COMMAND --help' shows one command. Exit codes: 0 ok, 1 not found, 2 usage or\n"
               "refused input, 3 daemon unreachable, 4 other daemon error.\n");
}

const Command* FindCommand(const std::string& name) {
  for (const Command& c : kCommands) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

// " (primary)" etc. after a STATS cluster_shard_<n>_role row; "" otherwise.
const char* ShardRoleSuffix(std::string_view name, int64_t value) {
  constexpr std::string_view kPrefix = "cluster_shard_", kSuffix = "_role";
  const bool role = name.size() > kPrefix.size() + kSuffix.size() && name.substr(0, kPrefix.size()) == kPrefix &&
                    name.substr(name.size() - kSuffix.size()) == kSuffix;
  if (!role) return "";
  switch (value) {
    case 1: return " (primary)";
    case 2: return " (replica)";
    case 3: return " (replica, being copied)";
    default: return "";
  }
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "cachectl: %s (see cachectl --help)\n", message.c_str());
  return kUsage;
}

int Fail(const Error& e) {
  std::fprintf(stderr, "cachectl: %s\n", e.ToString().c_str());
  switch (e.code) {
    case ErrorCode::kTimeout:
    case ErrorCode::kUnavailable: return kUnreachable;
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kKeyTooLarge:
    case ErrorCode::kValueTooLarge:
    case ErrorCode::kNotInteger:
    case ErrorCode::kOverflow:
    case ErrorCode::kWrongArity:
    case ErrorCode::kWrongType:
    case ErrorCode::kFrameTooLarge: return kUsage;
    default: return kServerError;
  }
}

using Json = nlohmann::ordered_json;

std::string Base64(const std::string& bytes) {
  static constexpr char kDigits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t group = 0;
    for (size_t j = 0; j < 3; ++j) group = group << 8 | (j < n ? static_cast<unsigned char>(bytes[i + j]) : 0u);
    for (size_t j = 0; j < 4; ++j) out += j <= n ? kDigits[(group >> (18 - 6 * j)) & 63] : '=';
  }
  return out;
}

bool IsUtf8(const std::string& bytes) {
  try {
    (void)Json(bytes).dump();  // the strict handler refuses what is not UTF-8
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

// Sets obj[name] to the bytes as a string, or obj[name + "_base64"].
void PutBytes(Json& obj, const std::string& name, const std::string& bytes) {
  if (IsUtf8(bytes)) {
    obj[name] = bytes;
  } else {
    obj[name + "_base64"] = Base64(bytes);
  }
}

// A key in a list: the string itself, or {"key_base64": ...}.
Json KeyItem(const std::string& key) {
  if (IsUtf8(key)) return key;
  return Json{{"key_base64", Base64(key)}};
}

// Keys and values went through PutBytes; anything else that is not UTF-8 (a
// stat name from a confused daemon) is printed with U+FFFD, never thrown.
void PrintJson(const Json& j) { std::puts(j.dump(-1, ' ', false, Json::error_handler_t::replace).c_str()); }

std::optional<int64_t> ParseInt(const std::string& s) {
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return std::nullopt;
  return v;
}

struct Invocation {
  std::string endpoint;
  bool json = false;
  int64_t timeout_ms = 1000;
  std::string command;
  std::vector<std::string> args;               // positional
  std::map<std::string, std::string> options;  // --ttl, --by
  std::vector<std::string> flags;              // --nx, --xx, --force
  std::string server_key_file;                 // --server-key
  std::string key_file;                        // --key
  bool help = false;
  bool timeout_set = false;  // cluster changes wait 60 s unless told
};

// ------------------------------------------------------------ cluster
//
// The cluster commands talk to etcd, where the shard map lives
// (/cachet/<cluster>/map, its mod_revision the epoch) and where nodes
// register (/cachet/<cluster>/nodes/<id>, bound to the node's lease: a node
// whose key is gone is down). A change plans the new map with cluster::Plan
// and writes it only if the map is still the one it planned from (a txn on
// the key's mod_revision), then follows the nodes' STATS until each serves
// the new epoch with no slot left to import.

namespace cl = cachet::cluster;

struct NodeProbe {
  std::optional<int64_t> epoch;      // STATS cluster_epoch
  std::optional<int64_t> importing;  // STATS cluster_importing_slots
  std::optional<int64_t> headless;   // STATS cluster_shards_without_primary
  std::optional<int64_t> led;        // STATS cluster_primary_shards
  std::optional<int64_t> copies;     // STATS cluster_replica_shards
  std::optional<int64_t> lag;        // STATS cluster_replication_lag
  std::string error;                 // why the node could not be asked
};

NodeProbe Probe(const std::string& endpoint, int64_t timeout_ms) {
  NodeProbe p;
  cachet::ClientOptions options;
  options.timeout = std::chrono::milliseconds(std::min<int64_t>(timeout_ms, 1000));
  options.retries = 0;
  auto client = cachet::Client::Connect(endpoint, options);
  if (!client) {
    p.error = client.error().ToString();
    return p;
  }
  auto stats = (*client)->Stats();
  if (!stats) {
    p.error = stats.error().ToString();
    return p;
  }
  for (const auto& [name, v] : *stats) {
    if (name == "cluster_epoch") p.epoch = v;
    if (name == "cluster_importing_slots") p.importing = v;
    if (name == "cluster_shards_without_primary") p.headless = v;
    if (name == "cluster_primary_shards") p.led = v;
    if (name == "cluster_replica_shards") p.copies = v;
    if (name == "cluster_replication_lag") p.lag = v;
  }
  return p;
}

struct ClusterState {
  std::optional<cl::KeyValue> map_kv;
  std::optional<cl::ShardMap> map;            // with its epoch
  std::map<std::string, std::string> live;    // registered node id -> endpoint
  std::map<uint32_t, std::string> primaries;  // shard id -> node holding primary/<shard>
  uint32_t replication = 1;                   // the cluster's target copies per shard
  std::string consistency = "strong";
};

cachet::Result<ClusterState> ReadCluster(cl::EtcdClient& etcd, const std::string& prefix) {
  ClusterState st;
  auto kv = etcd.Get(prefix + "map");
  if (!kv) return tl::unexpected(kv.error());
  if (*kv) {
    auto map = cl::ShardMap::FromJson((*kv)->value);
    if (!map) {
      return cachet::MakeError(map.error().code, "the map at " + prefix + "map is invalid: " + map.error().message);
    }
    map->set_epoch(static_cast<uint64_t>((*kv)->mod_revision));
    st.map = std::move(*map);
    st.map_kv = std::move(**kv);
  }
  if (st.map) st.replication = st.map->replication();  // a cluster made without a settings key
  auto settings = etcd.Get(prefix + "settings");
  if (!settings) return tl::unexpected(settings.error());
  if (*settings) {
    const Json j = Json::parse((*settings)->value, nullptr, false);
    if (j.is_object() && j.contains("replication") && j["replication"].is_number_unsigned()) {
      st.replication = j["replication"].get<uint32_t>();
    }
    if (j.is_object() && j.contains("consistency") && j["consistency"].is_string()) st.consistency = j["consistency"];
  }
  auto nodes = etcd.Range(prefix + "nodes/");
  if (!nodes) return tl::unexpected(nodes.error());
  for (const cl::KeyValue& n : nodes->kvs) {
    const Json j = Json::parse(n.value, nullptr, false);
    const std::string id = n.key.substr(prefix.size() + 6);
    st.live[id] = j.is_object() && j.contains("endpoint") && j["endpoint"].is_string()
                      ? j["endpoint"].get<std::string>()
                      : std::string();
  }
  auto primaries = etcd.Range(prefix + "primary/");
  if (!primaries) return tl::unexpected(primaries.error());
  for (const cl::KeyValue& p : primaries->kvs) {
    const Json j = Json::parse(p.value, nullptr, false);
    const auto shard = ParseInt(p.key.substr(prefix.size() + 8));
    if (shard && j.is_object() && j.contains("node") && j["node"].is_string()) {
      st.primaries[static_cast<uint32_t>(*shard)] = j["node"].get<std::string>();
    }
  }
  return st;
}

int ClusterStatus(const Invocation& in, const std::string& cluster, const ClusterState& st) {
  std::vector<std::string> ids;
  if (st.map) ids = st.map->nodes();
  for (const auto& [id, endpoint] : st.live) {
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  const uint64_t epoch = st.map ? st.map->epoch() : 0;
  Json nodes = Json::array();
  for (const std::string& id : ids) {
    Json n = {{"id", id}};
    auto it = st.live.find(id);
    const bool live = it != st.live.end();
    n["endpoint"] = live ? it->second : "";
    n["state"] = live ? "live" : "down";
    n["in_map"] = st.map && std::binary_search(st.map->nodes().begin(), st.map->nodes().end(), id);
    n["epoch"] = nullptr;
    n["importing_slots"] = nullptr;
    n["primary_of"] = Json::array();
    for (const auto& [shard, node] : st.primaries) {
      if (node == id) n["primary_of"].push_back(shard);
    }
    n["replication_lag"] = nullptr;
    if (live && !it->second.empty()) {
      const NodeProbe p = Probe(it->second, in.timeout_ms);
      if (p.epoch) n["epoch"] = *p.epoch;
      if (p.importing) n["importing_slots"] = *p.importing;
      if (p.lag) n["replication_lag"] = *p.lag;
      if (!p.error.empty()) n["error"] = p.error;
    }
    nodes.push_back(n);
  }
  Json shards = Json::array();
  if (st.map) {
    for (const cl::Shard& s : st.map->shards()) {
      Json ranges = Json::array();
      for (const cl::SlotRange& r : s.slots) ranges.push_back({r.first, r.last});
      auto p = st.primaries.find(s.id);
      shards.push_back({{"id", s.id},
                        {"slots", s.SlotCount()},
                        {"ranges", ranges},
                        {"nodes", s.nodes},
                        {"primary", p == st.primaries.end() ? Json(nullptr) : Json(p->second)}});
    }
  }
  if (in.json) {
    PrintJson({{"cluster", cluster},
               {"epoch", epoch},
               {"has_map", st.map.has_value()},
               {"replication", st.map ? st.map->replication() : 0},
               {"replication_target", st.replication},
               {"consistency", st.consistency},
               {"nodes", nodes},
               {"shards", shards}});
    return kOk;
  }
  std::printf("cluster %s  epoch %llu", cluster.c_str(), static_cast<unsigned long long>(epoch));
  if (st.map) {
    std::printf("  replication %u (target %u)  %s\n", st.map->replication(), st.replication, st.consistency.c_str());
  } else {
    std::printf("  (no shard map yet: the first node to start writes one)\n");
  }
  std::printf("nodes:\n");
  for (const Json& n : nodes) {
    std::string extra;
    if (!n["in_map"].get<bool>()) extra += "  not in the map";
    if (n["epoch"].is_number()) extra += "  epoch " + std::to_string(n["epoch"].get<int64_t>());
    if (n["importing_slots"].is_number() && n["importing_slots"].get<int64_t>() > 0) {
      extra += "  importing " + std::to_string(n["importing_slots"].get<int64_t>()) + " slots";
    }
    if (!n["primary_of"].empty()) {
      std::string led;
      for (const Json& shard : n["primary_of"]) led += (led.empty() ? "" : ",") + std::to_string(shard.get<int>());
      extra += "  primary of " + led;
      if (n["replication_lag"].is_number()) {
        extra += "  lag " + std::to_string(n["replication_lag"].get<int64_t>()) + " entries";
      }
    }
    if (n.contains("error")) extra += "  (" + n["error"].get<std::string>() + ")";
    std::printf("  %-12s %-28s %-5s%s\n", n["id"].get<std::string>().c_str(),
                n["endpoint"].get<std::string>().empty() ? "-" : n["endpoint"].get<std::string>().c_str(),
                n["state"].get<std::string>().c_str(), extra.c_str());
  }
  if (st.map) {
    std::printf("shards:\n");
    for (const Json& s : shards) {
      std::string held;
      for (const Json& node : s["nodes"]) held += (held.empty() ? "" : ",") + node.get<std::string>();
      std::printf("  %-4u %6u slots  nodes %s", s["id"].get<unsigned>(), s["slots"].get<unsigned>(), held.c_str());
      if (s["primary"].is_string()) std::printf("  primary %s", s["primary"].get<std::string>().c_str());
      std::printf("\n");
    }
  }
  return kOk;
}

// Follows every node of `map` until it serves map's epoch with nothing left
// to import, or `timeout_ms` passes. Prints a line whenever progress changes.
int WaitForNodes(const Invocation& in, cl::EtcdClient& etcd, const std::string& prefix, const cl::ShardMap& map,
                 Json report) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(in.timeout_ms);
  std::string last_line;
  for (;;) {
    auto live = etcd.Range(prefix + "nodes/");
    size_t ready = 0;
    int64_t importing = 0;
    std::vector<std::string> waiting;
    Json nodes = Json::array();
    for (const std::string& id : map.nodes()) {
      std::string endpoint;
      if (live) {
        for (const cl::KeyValue& n : live->kvs) {
          if (n.key != prefix + "nodes/" + id) continue;
          const Json j = Json::parse(n.value, nullptr, false);
          if (j.is_object() && j.contains("endpoint") && j["endpoint"].is_string()) endpoint = j["endpoint"];
        }
      }
      NodeProbe p;
      if (endpoint.empty()) {
        p.error = "not registered (down)";
      } else {
        p = Probe(endpoint, in.timeout_ms);
      }
      // Done: serves the epoch, imports nothing, and sees a primary for every shard.
      const bool done = p.epoch && *p.epoch >= static_cast<int64_t>(map.epoch()) && p.importing && *p.importing == 0 &&
                        p.headless.value_or(0) == 0;
      if (p.importing) importing += *p.importing;
      if (done) {
        ++ready;
      } else {
        waiting.push_back(id + (p.error.empty() ? "" : " (" + p.error + ")"));
      }
      nodes.push_back({{"id", id},
                       {"epoch", p.epoch ? Json(*p.epoch) : Json(nullptr)},
                       {"importing_slots", p.importing ? Json(*p.importing) : Json(nullptr)},
                       {"done", done}});
    }
    const bool finished = ready == map.nodes().size();
    std::string line = "epoch " + std::to_string(map.epoch()) + ": " + std::to_string(ready) + "/" +
                       std::to_string(map.nodes().size()) + " nodes serve it, " + std::to_string(importing) +
                       " slots importing";
    if (!waiting.empty()) {
      line += "; waiting for";
      for (const std::string& w : waiting) line += " " + w;
    }
    if (!in.json && line != last_line) std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    last_line = line;
    const bool timed_out = std::chrono::steady_clock::now() >= deadline;
    if (finished || timed_out) {
      report["done"] = finished;
      report["nodes"] = nodes;
      if (in.json) {
        PrintJson(report);
      } else if (finished) {
        std::printf("done: every node serves epoch %llu\n", static_cast<unsigned long long>(map.epoch()));
      }
      if (finished) return kOk;
      std::fprintf(stderr,
                   "cachectl: the map (epoch %llu) is written, but not every node had taken it up within %lld ms: "
                   "see 'cachectl cluster status'\n",
                   static_cast<unsigned long long>(map.epoch()), static_cast<long long>(in.timeout_ms));
      return kServerError;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

int ClusterChange(const Invocation& in, cl::EtcdClient& etcd, const std::string& prefix, const ClusterState& st) {
  const std::string& sub = in.args[0];
  std::vector<std::string> nodes = st.map ? st.map->nodes() : std::vector<std::string>();
  const bool in_map = [&](const std::string& id) {
    return std::find(nodes.begin(), nodes.end(), id) != nodes.end();
  }(in.args.size() > 1 ? in.args[1] : std::string());
  if (sub == "add-node") {
    const std::string& id = in.args[1];
    if (!st.live.count(id)) {
      return Fail(Error{ErrorCode::kInvalidArgument, "node '" + id + "' is not registered in etcd (" + prefix +
                                                         "nodes/" + id + "): start it with this cluster first"});
    }
    if (in_map) return Fail(Error{ErrorCode::kInvalidArgument, "node '" + id + "' is already in the map"});
    nodes.push_back(id);
  } else if (sub == "remove-node") {
    const std::string& id = in.args[1];
    if (!st.map) return Fail(Error{ErrorCode::kInvalidArgument, "the cluster has no shard map yet"});
    if (!in_map) return Fail(Error{ErrorCode::kInvalidArgument, "node '" + id + "' is not in the map"});
    nodes.erase(std::find(nodes.begin(), nodes.end(), id));
    if (nodes.empty()) {
      return Fail(Error{ErrorCode::kInvalidArgument, "node '" + id + "' is the map's last node; it cannot leave"});
    }
  } else if (!st.map) {
    return Fail(Error{ErrorCode::kInvalidArgument, "the cluster has no shard map yet"});
  }
  const cl::ShardMap* previous = st.map ? &*st.map : nullptr;
  // The cluster's target copies, as far as the nodes go.
  const uint32_t copies = std::min<uint32_t>(st.replication, static_cast<uint32_t>(nodes.size()));
  auto planned = cl::Plan(previous, nodes, std::max<uint32_t>(copies, 1));
  if (!planned) return Fail(planned.error());
  const uint32_t moved = previous ? cl::Diff(*previous, *planned).MovedSlots() : cl::kSlotCount;
  if (previous && *planned == *previous) {
    if (in.json) {
      PrintJson({{"changed", false}, {"epoch", previous->epoch()}, {"moved_slots", 0}, {"done", true}});
    } else {
      std::printf("no change: the map (epoch %llu) is already balanced over its %zu nodes\n",
                  static_cast<unsigned long long>(previous->epoch()), nodes.size());
    }
    return kOk;
  }
  const std::string key = prefix + "map";
  const int64_t expected = st.map_kv ? st.map_kv->mod_revision : 0;
  auto txn = etcd.Txn({cl::Compare::ModRevision(key, cl::Compare::Op::kEqual, expected)},
                      {cl::TxnOp::Put(key, planned->ToJson())}, {});
  if (!txn) return Fail(txn.error());
  if (!txn->succeeded) {
    return Fail(Error{ErrorCode::kInvalidArgument,
                      "the map changed while this change was planned (it was epoch " + std::to_string(expected) +
                          "); nothing was written: look at 'cachectl cluster status' and run the command again"});
  }
  planned->set_epoch(static_cast<uint64_t>(txn->revision));
  if (!in.json) {
    std::printf("wrote the map: epoch %llu, %zu nodes, %u of %u slots move\n",
                static_cast<unsigned long long>(planned->epoch()), nodes.size(), moved, cl::kSlotCount);
  }
  return WaitForNodes(
      in, etcd, prefix, *planned,
      {{"changed", true}, {"epoch", planned->epoch()}, {"previous_epoch", expected}, {"moved_slots", moved}});
}

int RunCluster(const Invocation& in) {
  const auto& a = in.args;
  if (a.empty()) return UsageError("cluster takes status, add-node ID, remove-node ID or rebalance");
  const std::string& sub = a[0];
  const bool takes_id = sub == "add-node" || sub == "remove-node";
  if (sub != "status" && sub != "rebalance" && !takes_id) return UsageError("unknown cluster command '" + sub + "'");
  if (a.size() != (takes_id ? 2u : 1u)) return UsageError("cluster " + sub + (takes_id ? " takes ID" : " takes no ID"));
  const char* env_cluster = std::getenv("CACHET_CLUSTER");
  const char* env_etcd = std::getenv("CACHET_ETCD");
  std::string cluster = env_cluster ? env_cluster : "";
  cl::EtcdOptions eo;
  eo.endpoints = env_etcd && *env_etcd ? env_etcd : "http://127.0.0.1:2379";
  if (auto it = in.options.find("--cluster"); it != in.options.end()) cluster = it->second;
  if (auto it = in.options.find("--etcd"); it != in.options.end()) eo.endpoints = it->second;
  if (cluster.empty()) return UsageError("cluster commands need --cluster NAME (or $CACHET_CLUSTER)");
  if (cluster.find('/') != std::string::npos) return UsageError("a cluster name has no '/'");
  eo.request_timeout = std::chrono::milliseconds(std::min<int64_t>(in.timeout_ms, 2000));
  auto etcd = cl::EtcdClient::Create(eo);
  if (!etcd) return Fail(etcd.error());
  const std::string prefix = "/cachet/" + cluster + "/";
  auto st = ReadCluster(*etcd, prefix);
  if (!st) return Fail(st.error());
  if (sub == "status") return ClusterStatus(in, cluster, *st);
  return ClusterChange(in, *etcd, prefix, *st);
}

int Keygen(const Invocation& in) {
  if (in.args.size() != 1) return UsageError("keygen takes NAME");
  char public_key[41] = {}, secret_key[41] = {};
  if (zmq_curve_keypair(public_key, secret_key) != 0) {
    return Fail(Error{ErrorCode::kInternal, std::string("cannot make a CURVE key pair: ") + zmq_strerror(zmq_errno())});
  }
  const std::string& base = in.args[0];
  const bool force = !in.flags.empty();
  if (auto ok = cachet::WriteCurveKeyFiles(base, {public_key, secret_key}, force); !ok) return Fail(ok.error());
  if (in.json) {
    PrintJson({{"public_key", public_key}, {"secret_file", base + ".key"}, {"public_file", base + ".pub"}});
  } else {
    std::printf("wrote %s.key (secret, mode 0600) and %s.pub\npublic key: %s\n", base.c_str(), base.c_str(),
                public_key);
  }
  return kOk;
}

int Run(const Invocation& in) {
  if (in.command == "cluster") return RunCluster(in);
  if (in.command == "keygen") return Keygen(in);
  cachet::ClientOptions options;
  options.timeout = std::chrono::milliseconds(in.timeout_ms);
  auto curve = cachet::CurveClientKeys::Load(in.server_key_file, in.key_file);
  if (!curve) return Fail(curve.error());
  options.curve = *curve;
  auto connected = cachet::Client::Connect(in.endpoint, options);
  if (!connected) return Fail(connected.error());
  cachet::Client& client = **connected;
  const auto& a = in.args;
  auto need = [&](size_t n) { return a.size() == n; };
  auto option_ms = [&](const char* name) -> std::optional<int64_t> {
    auto it = in.options.find(name);
    if (it == in.options.end()) return int64_t{0};
    return ParseInt(it->second);
  };
  const std::string& cmd = in.command;

  if (cmd == "ping") {
    if (!need(0)) return UsageError("ping takes no arguments");
    if (auto r = client.Ping(); !r) return Fail(r.error());
    if (in.json) {
      PrintJson({{"ok", true}});
    } else {
      std::puts("PONG");
    }
    return kOk;
  }
  if (cmd == "get") {
    if (!need(1)) return UsageError("get takes KEY");
    auto r = client.Get(a[0]);
    if (!r) return Fail(r.error());
    if (in.json) {
      Json j;
      PutBytes(j, "key", a[0]);
      j["found"] = r->has_value();
      if (*r) PutBytes(j, "value", **r);
      PrintJson(j);
    } else if (*r) {
      std::fwrite((*r)->data(), 1, (*r)->size(), stdout);
      std::fputc('\n', stdout);
    }
    return *r ? kOk : kNotFound;
  }
  if (cmd == "set") {
    if (!need(2)) return UsageError("set takes KEY VALUE");
    cachet::SetOptions so;
    const auto ttl = option_ms("--ttl");
    if (!ttl) return UsageError("--ttl takes milliseconds");
    so.ttl = std::chrono::milliseconds(*ttl);
    for (const std::string& f : in.flags) {
      if (f == "--nx") so.condition = cachet::SetCondition::kIfAbsent;
      if (f == "--xx") so.condition = cachet::SetCondition::kIfPresent;
    }
    auto r = client.Set(a[0], a[1], so);
    if (!r) return Fail(r.error());
    if (in.json) {
      PrintJson({{"stored", *r}});
    } else {
      std::puts(*r ? "OK" : "NOT STORED");
    }
    return *r ? kOk : kNotFound;
  }
  if (cmd == "del") {
    if (!need(1)) return UsageError("del takes KEY");
    auto r = client.Del(a[0]);
    if (!r) return Fail(r.error());
    if (in.json) {
      PrintJson({{"deleted", *r}});
    } else {
      std::puts(*r ? "1" : "0");
    }
    return *r ? kOk : kNotFound;
  }
  if (cmd == "ttl") {
    if (!need(1)) return UsageError("ttl takes KEY");
    auto r = client.Ttl(a[0]);
    if (!r) return Fail(r.error());
    Json j;
    PutBytes(j, "key", a[0]);
    j["found"] = r->has_value();
    if (!*r) {
      if (in.json) PrintJson(j);
      return kNotFound;
    }
    const long long ms = **r == cachet::Cache::kNoExpiry ? -1 : static_cast<long long>((*r)->count());
    if (in.json) {
      j["ttl_ms"] = ms;
      PrintJson(j);
    } else {
      std::printf("%lld\n", ms);
    }
    return kOk;
  }
  if (cmd == "expire") {
    if (!need(2)) return UsageError("expire takes KEY MS");
    const auto ms = ParseInt(a[1]);
    if (!ms) return UsageError("expire: MS must be an integer");
    auto r = client.Expire(a[0], std::chrono::milliseconds(*ms));
    if (!r) return Fail(r.error());
    if (in.json) {
      PrintJson({{"found", *r}});
    } else {
      std::puts(*r ? "1" : "0");
    }
    return *r ? kOk : kNotFound;
  }
  if (cmd == "incr") {
    if (!need(1)) return UsageError("incr takes KEY");
    const auto by = in.options.count("--by") ? ParseInt(in.options.at("--by")) : std::optional<int64_t>(1);
    if (!by) return UsageError("--by takes an integer");
    const auto ttl = option_ms("--ttl");
    if (!ttl) return UsageError("--ttl takes milliseconds");
    auto r = client.Incr(a[0], *by, std::chrono::milliseconds(*ttl));
    if (!r) return Fail(r.error());
    if (in.json) {
      Json j;
      PutBytes(j, "key", a[0]);
      j["value"] = *r;
      PrintJson(j);
    } else {
      std::printf("%lld\n", static_cast<long long>(*r));
    }
    return kOk;
  }
  if (cmd == "keys") {
    if (a.size() > 1) return UsageError("keys takes at most one PATTERN");
    const std::string pattern = a.empty() ? "*" : a[0];
    uint64_t cursor = 0;
    Json keys = Json::array();
    do {
      auto page = client.Scan(cursor, pattern, 16384);
      if (!page) return Fail(page.error());
      for (const std::string& k : page->keys) {
        if (in.json) {
          keys.push_back(KeyItem(k));
        } else {
          std::fwrite(k.data(), 1, k.size(), stdout);
          std::fputc('\n', stdout);
        }
      }
      cursor = page->cursor;
    } while (cursor != 0);
    if (in.json) PrintJson(keys);
    return kOk;
  }
  if (cmd == "stats") {
    if (!need(0)) return UsageError("stats takes no arguments");
    auto r = client.Stats();
    if (!r) return Fail(r.error());
    Json j = Json::object();
    for (const auto& [name, v] : *r) {
      if (in.json) {
        j[name] = v;
      } else {
        std::printf("%-18s %lld%s\n", name.c_str(), static_cast<long long>(v), ShardRoleSuffix(name, v));
      }
    }
    if (in.json) PrintJson(j);
    return kOk;
  }
  if (cmd == "top") {
    if (!need(0)) return UsageError("top takes no arguments");
    cachet::cli::TopOptions top;
    top.json = in.json;
    top.endpoint = in.endpoint;
    if (auto it = in.options.find("--interval"); it != in.options.end()) {
      const auto interval = cachet::cli::ParseInterval(it->second);
      if (!interval) return UsageError("--interval takes a time of at least 10ms: 500ms, 2s, or seconds (1.5)");
      top.interval = *interval;
    }
    if (auto it = in.options.find("--count"); it != in.options.end()) {
      const auto count = ParseInt(it->second);
      if (!count || *count <= 0) return UsageError("--count takes a positive number of refreshes");
      top.count = *count;
    }
    // A terminal gets one screen, redrawn; a pipe, a file or a bounded run
    // gets a line per refresh.
    top.redraw = !top.json && top.count == 0 && isatty(STDOUT_FILENO) == 1;
    return cachet::cli::RunTop(client, top, stdout, Fail);
  }
  if (cmd == "reload" || cmd == "flush") {
    if (!need(0)) return UsageError(cmd + " takes no arguments");
    auto r = cmd == "reload" ? client.Reload() : client.Flush();
    if (!r) return Fail(r.error());
    if (in.json) {
      PrintJson({{"ok", true}});
    } else {
      std::puts("OK");
    }
    return kOk;
  }
  return UsageError("unknown command '" + cmd + "'");
}

}  // namespace

int main(int argc, char** argv) {
  Invocation in;
  const char* env = std::getenv("CACHET_ENDPOINT");
  in.endpoint = env && *env ? env : "ipc:///tmp/cachetd.sock";
  for (auto [name, field] : {std::pair{"CACHET_SERVER_KEY", &in.server_key_file}, {"CACHET_KEY", &in.key_file}}) {
    if (const char* v = std::getenv(name); v && *v) *field = v;
  }
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const std::string& name) -> std::optional<std::string> {
      if (i + 1 >= argc) return std::nullopt;
      (void)name;
      return std::string(argv[++i]);
    };
    if (arg == "--help" || arg == "-h") {
      in.help = true;
    } else if (arg == "--json") {
      in.json = true;
    } else if (arg == "--endpoint" || arg == "--timeout" || arg == "--ttl" || arg == "--by" || arg == "--etcd" ||
               arg == "--cluster" || arg == "--server-key" || arg == "--key" || arg == "--interval" ||
               arg == "--count") {
      auto v = value(arg);
      if (!v) return UsageError(arg + " needs a value");
      if (arg == "--endpoint") {
        in.endpoint = *v;
      } else if (arg == "--timeout") {
        auto ms = ParseInt(*v);
        if (!ms || *ms <= 0) return UsageError("--timeout takes a positive number of milliseconds");
        in.timeout_ms = *ms;
        in.timeout_set = true;
      } else if (arg == "--server-key") {
        in.server_key_file = *v;
      } else if (arg == "--key") {
        in.key_file = *v;
      } else {
        in.options[arg] = *v;
      }
    } else if (arg == "--nx" || arg == "--xx" || arg == "--force") {
      in.flags.push_back(arg);
    } else if (arg.size() > 1 && arg[0] == '-' && !ParseInt(arg)) {
      return UsageError("unknown option '" + arg + "'");
    } else if (in.command.empty()) {
      in.command = arg;
    } else {
      in.args.push_back(arg);
    }
  }
  if (in.command.empty()) {
    if (in.help) {
      PrintUsage(stdout);
      return kOk;
    }
    PrintUsage(stderr);
    return kUsage;
  }
  const Command* command = FindCommand(in.command);
  if (command == nullptr) return UsageError("unknown command '" + in.command + "'");
  if (in.help) {
    std::printf("usage: cachectl [--endpoint E] [--json] %s %s\n  %s\n", command->name, command->args,
                command->summary);
    return kOk;
  }
  // Options belong to particular commands.
  for (const auto& [name, v] : in.options) {
    const bool allowed = (name == "--ttl" && (in.command == "set" || in.command == "incr")) ||
                         (name == "--by" && in.command == "incr") ||
                         ((name == "--etcd" || name == "--cluster") && in.command == "cluster") ||
                         ((name == "--interval" || name == "--count") && in.command == "top");
    if (!allowed) return UsageError(name + " does not apply to " + in.command);
  }
  for (const std::string& f : in.flags) {
    const char* owner = f == "--force" ? "keygen" : "set";
    if (in.command != owner) return UsageError(f + " applies only to " + owner);
  }
  if (in.flags.size() > 1) return UsageError("--nx and --xx exclude each other");
  if (in.command == "cluster" && !in.timeout_set) in.timeout_ms = 60000;
  return Run(in);
}
