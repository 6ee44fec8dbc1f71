#include "config.h"

#include "cachet/segment_access.h"

#include <boost/program_options.hpp>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>
#include <string_view>

namespace cachet::daemon {

namespace po = boost::program_options;

namespace {

// Raw strings as read, so that sizes and names get our own checks and messages.
struct Raw {
  std::string config, segment, ipc, tcp, capacity, max_entries, max_key, max_value, policy, max_frame, log_level,
      log_file, remove_on_exit, rate_limit_policy, rate_limit_capacity, pub, backlog_per_client, backlog_total, cluster,
      node_id, advertise, etcd, replication, consistency, curve_secret_key, curve_authorized_keys, insecure,
      access_mode, access_group, max_connections, max_in_flight, log_format, metrics, same_host_writes, huge_pages,
      huge_pages_dir, stream;
};

po::options_description Describe(Raw& r, const DaemonConfig& d) {
  po::options_description o("cachetd options (each can also be set in the --config file as name = value)");
  o.add_options()("segment", po::value(&r.segment)->default_value(d.segment),
                  "shared-memory segment name (/dev/shm/NAME)")(
      "ipc", po::value(&r.ipc)->default_value(d.ipc), "ipc:// endpoint for same-host clients; empty to disable")(
      "tcp", po::value(&r.tcp)->default_value(d.tcp), "tcp:// endpoint for remote clients; empty to disable")(
      "stream", po::value(&r.stream)->default_value(d.stream),
      "HOST:PORT of the stream endpoint: the same requests on plain TCP without ZeroMQ, the fastest round trip "
      "(clients connect to stream://HOST:PORT); clear text, loopback only unless insecure; not on a cluster node; "
      "port 0 picks a free one; empty: none")("capacity", po::value(&r.capacity)->default_value("64MiB"),
                                              "bytes of items the cache holds (k, M, G suffixes)")(
      "max-entries", po::value(&r.max_entries)->default_value("0"), "most items held; 0 = capacity / 64")(
      "max-key-size", po::value(&r.max_key)->default_value("250"), "longest key accepted, bytes")(
      "max-value-size", po::value(&r.max_value)->default_value("1MiB"), "largest value accepted")(
      "policy", po::value(&r.policy)->default_value("s3fifo"), "eviction policy: s3fifo, clock (lru) or fifo")(
      "max-frame", po::value(&r.max_frame)->default_value("0"), "largest request frame; 0 = derived from the limits")(
      "log-level", po::value(&r.log_level)->default_value(d.log_level), "trace, debug, info, warn, error, off")(
      "log-file", po::value(&r.log_file)->default_value(""), "log to this file instead of stderr")(
      "remove-segment-on-exit", po::value(&r.remove_on_exit)->default_value("false"),
      "remove the segment on SIGTERM instead of keeping it for a warm restart")(
      "rate-limit-policy", po::value(&r.rate_limit_policy)->default_value(""),
      "rate-limit policy file (tiers and rules) published to limiters; reloaded on SIGHUP")(
      "rate-limit-capacity", po::value(&r.rate_limit_capacity)->default_value("1048576"),
      "(key, rule) counters the RATELIMIT op keeps at once, 32 bytes each; restart to change")(
      "pub", po::value(&r.pub)->default_value(""),
      "PUB endpoint limiters subscribe to for the policy, e.g. tcp://127.0.0.1:7380")(
      "reply-backlog-per-client", po::value(&r.backlog_per_client)->default_value("16MiB"),
      "reply bytes one connection may leave unread before further replies to it are dropped (dropped_replies)")(
      "reply-backlog-total", po::value(&r.backlog_total)->default_value("256MiB"),
      "unread reply bytes of all connections together before replies to those owing any are dropped")(
      "cluster", po::value(&r.cluster)->default_value(""),
      "join the cluster of this name (needs node-id and etcd); empty: a single node")(
      "node-id", po::value(&r.node_id)->default_value(""), "this node's id in the cluster, the same across restarts")(
      "advertise", po::value(&r.advertise)->default_value(""),
      "tcp:// endpoint other nodes and clients reach this node at; default: the tcp endpoint")(
      "etcd", po::value(&r.etcd)->default_value(""), "the cluster's etcd endpoints, e.g. http://10.0.0.9:2379,...")(
      "replication", po::value(&r.replication)->default_value("3"),
      "copies of every shard (1 to 7), for a new cluster; an existing cluster keeps its own")(
      "consistency", po::value(&r.consistency)->default_value("strong"),
      "strong (a write is acknowledged once a majority of its shard's copies hold it) or eventual (at once), "
      "for a new cluster")(
      "curve-secret-key", po::value(&r.curve_secret_key)->default_value(""),
      "this daemon's CURVE key file (cachectl keygen): tcp and pub endpoints are encrypted and authenticated")(
      "curve-authorized-keys", po::value(&r.curve_authorized_keys)->default_value(""),
      "file of client public keys admitted over CURVE, one per line; reloaded on SIGHUP")(
      "insecure", po::value(&r.insecure)->default_value("false"),
      "allow a tcp or pub endpoint on an address other than loopback without CURVE (clear text)")(
      "access-mode", po::value(&r.access_mode)->default_value("0600"),
      "mode of the ipc socket files and the shared-memory segments (0600: the daemon's user only)")(
      "access-group", po::value(&r.access_group)->default_value(""),
      "group of the ipc socket files and segments, for access-mode 0660; empty: the daemon's group")(
      "max-connections", po::value(&r.max_connections)->default_value("4096"),
      "connections served at once; further ones are refused at their handshake")(
      "huge-pages", po::value(&r.huge_pages)->default_value("auto"),
      "put the segment on huge pages (a file on hugetlbfs): auto (if a hugetlbfs mount has room, else /dev/shm, "
      "logging why), on (or refuse to start), off; restart to change")(
      "huge-pages-dir", po::value(&r.huge_pages_dir)->default_value(""),
      "the hugetlbfs mount for the segment; empty: the first one in /proc/mounts")(
      "same-host-writes", po::value(&r.same_host_writes)->default_value("true"),
      "let same-host clients write the segment directly, under its lock, without a round trip; a cluster node "
      "never does (its writes must reach the replicas); reloaded on SIGHUP")(
      "max-in-flight", po::value(&r.max_in_flight)->default_value("1024"),
      "replies one connection may leave unread; while it has that many, its further requests are answered BUSY "
      "and not run")("log-format", po::value(&r.log_format)->default_value("text"),
                     "text, or json: one JSON object per line, for log shippers")(
      "metrics", po::value(&r.metrics)->default_value(d.metrics),
      "HOST:PORT of the Prometheus endpoint (GET /metrics over HTTP), e.g. 127.0.0.1:9379; port 0 picks a free "
      "one; empty: none. Loopback only unless insecure");
  return o;
}

Result<uint64_t> ParseCount(const std::string& name, const std::string& text) {
  uint64_t v = 0;
  size_t used = 0;
  try {
    v = std::stoull(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || text[0] == '-') {
    return MakeError(ErrorCode::kInvalidArgument, name + " must be a whole number, got '" + text + "'");
  }
  return v;
}

// Boost.Program_options (1.74) fills its error messages by replacing each
// %placeholder% with the offending text until none is left, so a name or
// value that holds its own placeholder ("%canonical_option%") makes what()
// loop forever, growing the string (found by fuzzing the config file).
// Such text is refused before the parser sees it.
Result<void> CheckNoPlaceholder(std::string_view text, const std::string& where) {
  static constexpr std::string_view kPlaceholders[] = {"%canonical_option%", "%option%", "%original_token%",
                                                       "%prefix%",           "%value%",  "%invalid_line%"};
  for (std::string_view p : kPlaceholders) {
    if (text.find(p) != std::string_view::npos) {
      return MakeError(ErrorCode::kInvalidArgument,
                       where + " contains '" + std::string(p) + "', which cachetd does not accept");
    }
  }
  return {};
}

Result<bool> ParseBool(const std::string& name, const std::string& text) {
  std::string t = text;
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  if (t == "true" || t == "yes" || t == "on" || t == "1") return true;
  if (t == "false" || t == "no" || t == "off" || t == "0") return false;
  return MakeError(ErrorCode::kInvalidArgument, name + " must be true or false, got '" + text + "'");
}

Result<DaemonConfig> Convert(const Raw& r) {
  DaemonConfig c;
  c.config_file = r.config;
  c.segment = r.segment;
  c.ipc = r.ipc;
  c.tcp = r.tcp;
  c.stream = r.stream;
  c.log_level = r.log_level;
  c.log_file = r.log_file;
  auto size = [](const std::string& name, const std::string& text) -> Result<uint64_t> {
    auto v = ParseSize(text);
    if (!v) return MakeError(ErrorCode::kInvalidArgument, name + ": " + v.error().message);
    return v;
  };
  auto capacity = size("capacity", r.capacity);
  if (!capacity) return tl::unexpected(capacity.error());
  c.capacity_bytes = *capacity;
  auto entries = ParseCount("max-entries", r.max_entries);
  if (!entries) return tl::unexpected(entries.error());
  c.max_entries = *entries;
  auto key = ParseCount("max-key-size", r.max_key);
  if (!key) return tl::unexpected(key.error());
  if (*key > 65535) return MakeError(ErrorCode::kInvalidArgument, "max-key-size must be at most 65535");
  c.max_key_size = static_cast<uint32_t>(*key);
  auto value = size("max-value-size", r.max_value);
  if (!value) return tl::unexpected(value.error());
  if (*value > (1u << 30)) return MakeError(ErrorCode::kInvalidArgument, "max-value-size must be at most 1GiB");
  c.max_value_size = static_cast<uint32_t>(*value);
  auto policy = ParseEvictionPolicy(r.policy);
  if (!policy) return MakeError(ErrorCode::kInvalidArgument, "policy: " + policy.error().message);
  c.policy = *policy;
  auto frame = size("max-frame", r.max_frame);
  if (!frame) return tl::unexpected(frame.error());
  c.max_frame_bytes = *frame;
  auto remove = ParseBool("remove-segment-on-exit", r.remove_on_exit);
  if (!remove) return tl::unexpected(remove.error());
  c.remove_segment_on_exit = *remove;
  c.rate_limit_policy = r.rate_limit_policy;
  auto counters = ParseCount("rate-limit-capacity", r.rate_limit_capacity);
  if (!counters) return tl::unexpected(counters.error());
  c.rate_limit_capacity = *counters;
  c.pub = r.pub;
  auto per_client = size("reply-backlog-per-client", r.backlog_per_client);
  if (!per_client) return tl::unexpected(per_client.error());
  c.reply_backlog_per_client = *per_client;
  auto total = size("reply-backlog-total", r.backlog_total);
  if (!total) return tl::unexpected(total.error());
  c.reply_backlog_total = *total;
  c.cluster.name = r.cluster;
  c.cluster.node_id = r.node_id;
  c.cluster.etcd = r.etcd;
  c.cluster.advertise = r.advertise;  // empty: the tcp endpoint as bound (Server::JoinCluster)
  auto replication = ParseCount("replication", r.replication);
  if (!replication) return tl::unexpected(replication.error());
  if (*replication < 1 || *replication > 7) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "replication must be 1 to 7 copies of each shard, got " + r.replication);
  }
  c.cluster.replication = static_cast<uint32_t>(*replication);
  if (r.consistency != "strong" && r.consistency != "eventual") {
    return MakeError(ErrorCode::kInvalidArgument,
                     "consistency must be strong or eventual, got '" + r.consistency + "'");
  }
  c.cluster.strong = r.consistency == "strong";
  c.curve_secret_key = r.curve_secret_key;
  c.curve_authorized_keys = r.curve_authorized_keys;
  auto insecure = ParseBool("insecure", r.insecure);
  if (!insecure) return tl::unexpected(insecure.error());
  c.insecure = *insecure;
  auto mode = ParseAccessMode(r.access_mode);
  if (!mode) return MakeError(ErrorCode::kInvalidArgument, "access-mode: " + mode.error().message);
  c.access_mode = *mode;
  c.access_group = r.access_group;
  auto connections = ParseCount("max-connections", r.max_connections);
  if (!connections) return tl::unexpected(connections.error());
  c.max_connections = *connections;
  auto in_flight = ParseCount("max-in-flight", r.max_in_flight);
  if (!in_flight) return tl::unexpected(in_flight.error());
  c.max_in_flight = *in_flight;
  c.log_format = r.log_format;
  c.metrics = r.metrics;
  if (r.huge_pages == "auto") {
    c.huge_pages = HugePages::kAuto;
  } else if (auto on = ParseBool("huge-pages", r.huge_pages); on) {
    c.huge_pages = *on ? HugePages::kOn : HugePages::kOff;
  } else {
    return MakeError(ErrorCode::kInvalidArgument, "huge-pages must be auto, on or off, got '" + r.huge_pages + "'");
  }
  if (!r.huge_pages_dir.empty() && r.huge_pages_dir[0] != '/') {
    return MakeError(ErrorCode::kInvalidArgument,
                     "huge-pages-dir must be an absolute path, got '" + r.huge_pages_dir + "'");
  }
  c.huge_pages_dir = r.huge_pages_dir;
  auto same_host_writes = ParseBool("same-host-writes", r.same_host_writes);
  if (!same_host_writes) return tl::unexpected(same_host_writes.error());
  c.same_host_writes = *same_host_writes;
  if (auto ok = c.Validate(); !ok) return tl::unexpected(ok.error());
  return c;
}

}  // namespace

Result<uint64_t> ParseSize(const std::string& text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0 || digits > 19) return MakeError(ErrorCode::kInvalidArgument, "'" + text + "' is not a size");
  const uint64_t n = std::stoull(text.substr(0, digits));
  std::string unit = text.substr(digits);
  std::transform(unit.begin(), unit.end(), unit.begin(), [](unsigned char c) { return std::tolower(c); });
  int shift = -1;
  if (unit.empty() || unit == "b") shift = 0;
  if (unit == "k" || unit == "kb" || unit == "kib") shift = 10;
  if (unit == "m" || unit == "mb" || unit == "mib") shift = 20;
  if (unit == "g" || unit == "gb" || unit == "gib") shift = 30;
  if (shift < 0) {
    return MakeError(ErrorCode::kInvalidArgument, "'" + text + "' has an unknown unit; use k, M or G (powers of 1024)");
  }
  if (shift > 0 && n > (UINT64_MAX >> shift))
    return MakeError(ErrorCode::kInvalidArgument, "'" + text + "' is too large");
  return n << shift;
}

CacheOptions DaemonConfig::CacheOptionsFor() const {
  CacheOptions o;
  o.capacity_bytes = capacity_bytes;
  o.max_entries = max_entries;
  o.max_key_size = max_key_size;
  o.max_value_size = max_value_size;
  o.policy = policy;
  return o;
}

uint64_t DaemonConfig::EffectiveMaxFrame() const {
  if (max_frame_bytes != 0) return max_frame_bytes;
  return 64 * (uint64_t{max_key_size} + max_value_size + 16) + 4096;
}

Result<void> DaemonConfig::Validate() const {
  auto bad = [](const std::string& m) { return MakeError(ErrorCode::kInvalidArgument, m); };
  if (ipc.empty() && tcp.empty()) return bad("at least one of ipc and tcp must be set");
  if (!ipc.empty() && ipc.rfind("ipc://", 0) != 0) return bad("ipc must start with ipc://, got '" + ipc + "'");
  // An abstract socket has no file, so access-mode and access-group could
  // not guard it, nor could a stop remove it.
  for (const std::string* endpoint : {&ipc, &pub}) {
    if (endpoint->rfind("ipc://@", 0) == 0) {
      return bad(std::string(endpoint == &ipc ? "ipc" : "pub") + " '" + *endpoint +
                 "' is an abstract socket, which access-mode cannot guard: name a socket file (ipc:///run/cachet/"
                 "cachetd.sock)");
    }
  }
  if (!tcp.empty() && tcp.rfind("tcp://", 0) != 0) return bad("tcp must start with tcp://, got '" + tcp + "'");
  if (!stream.empty()) {
    std::string host;
    uint16_t port = 0;
    if (!SplitHostPort(stream, &host, &port)) {
      return bad("stream must be HOST:PORT (or [IPv6]:PORT) with a port of 0 to 65535, got '" + stream + "'");
    }
    if (cluster.enabled()) {
      return bad(
          "stream is for a standalone daemon: a cluster node's replies may wait for its replicas, which "
          "only its tcp endpoint does; clients of a cluster use tcp://");
    }
    // Never encrypted, CURVE or not.
    if (!insecure && !IsLoopbackEndpoint("tcp://" + stream)) {
      return bad("stream " + stream +
                 " is reachable from other hosts and is clear text without authentication: give it a loopback "
                 "address (127.0.0.1:7378), use the tcp endpoint (with CURVE) for other hosts, or set insecure = "
                 "true");
    }
  }
  if (segment.empty() || segment.find('/') != std::string::npos) return bad("segment must be a name without '/'");
  static const char* kLevels[] = {"trace", "debug", "info", "warn", "error", "off"};
  if (std::find_if(std::begin(kLevels), std::end(kLevels), [&](const char* l) { return log_level == l; }) ==
      std::end(kLevels)) {
    return bad("log-level must be trace, debug, info, warn, error or off, got '" + log_level + "'");
  }
  if (max_frame_bytes != 0 && max_frame_bytes < 1024) return bad("max-frame must be at least 1KiB");
  if (!pub.empty() && pub.rfind("tcp://", 0) != 0 && pub.rfind("ipc://", 0) != 0) {
    return bad("pub must start with tcp:// or ipc://, got '" + pub + "'");
  }
  if (!pub.empty() && (pub == ipc || pub == tcp)) {
    return bad("pub and " + std::string(pub == ipc ? "ipc" : "tcp") + " are both '" + pub +
               "': they need endpoints of their own");
  }
  if (rate_limit_capacity == 0 || rate_limit_capacity > (uint64_t{1} << 28)) {
    return bad("rate-limit-capacity must be 1 to 268435456 counters");
  }
  if (!rate_limit_policy.empty() && RateLimitSegment().size() > 255) {
    return bad("segment is too long to name its rate-limit table '" + RateLimitSegment() +
               "' (at most 255 characters)");
  }
  if (!pub.empty() && rate_limit_policy.empty()) {
    return bad("pub is set but rate-limit-policy is not: there is nothing to publish");
  }
  if (reply_backlog_per_client < (uint64_t{64} << 10)) return bad("reply-backlog-per-client must be at least 64KiB");
  if (reply_backlog_total < reply_backlog_per_client) {
    return bad("reply-backlog-total must be at least reply-backlog-per-client");
  }
  if (auto ok = CacheOptionsFor().Validate(); !ok) return bad(ok.error().message);
  if (auto ok = cluster.Validate(); !ok) return bad(ok.error().message);
  if (curve() != !curve_authorized_keys.empty()) {
    return bad(
        "curve-secret-key and curve-authorized-keys go together: the daemon's key pair and the client keys "
        "it admits");
  }
  if (max_connections == 0) return bad("max-connections must be at least 1");
  if (max_in_flight == 0 || max_in_flight > kMaxInFlight) {
    return bad("max-in-flight must be 1 to " + std::to_string(kMaxInFlight) + ", got " + std::to_string(max_in_flight));
  }
  if (log_format != "text" && log_format != "json")
    return bad("log-format must be text or json, got '" + log_format + "'");
  if (!metrics.empty()) {
    std::string host;
    uint16_t port = 0;
    if (!SplitHostPort(metrics, &host, &port)) {
      return bad("metrics must be HOST:PORT (or [IPv6]:PORT) with a port of 0 to 65535, got '" + metrics + "'");
    }
    // The endpoint has no authentication and no encryption, CURVE or not.
    if (!insecure && !IsLoopbackEndpoint("tcp://" + metrics)) {
      return bad("metrics " + metrics +
                 " is reachable from other hosts and the endpoint has no authentication: give it a loopback "
                 "address (127.0.0.1:9379) and let the scraper reach it through a tunnel or a proxy "
                 "(docs/operations.md, \"Monitor\"), or set insecure = true to serve it to the network");
    }
  }
  if (!curve() && !insecure) {
    for (const std::string* endpoint : {&tcp, &pub, &cluster.advertise}) {
      if (endpoint->empty() || IsLoopbackEndpoint(*endpoint)) continue;
      return bad(*endpoint +
                 " is reachable from other hosts: set curve-secret-key and curve-authorized-keys to "
                 "encrypt and authenticate it (docs/operations.md, \"Secure\"), or insecure = true to serve it in "
                 "clear text");
    }
  }
  return {};
}

Result<Parsed> ParseConfig(const std::vector<std::string>& args) {
  Raw raw;
  const DaemonConfig defaults;
  po::options_description settings = Describe(raw, defaults);
  po::options_description general("general");
  general.add_options()("config,c", po::value(&raw.config), "read settings from this INI file")(
      "help,h", "show this help")("version", "print the version");
  po::options_description all;
  all.add(general).add(settings);

  for (const std::string& arg : args) {
    if (auto ok = CheckNoPlaceholder(arg, "the command line"); !ok) return tl::unexpected(ok.error());
  }
  Parsed parsed;
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(all).run(), vm);
    if (vm.count("help")) {
      std::ostringstream help;
      help << "usage: cachetd [options]\n\n"
           << all
           << "\nMemory: the shared-memory segment is reserved in full at start. With the default\n"
              "max-entries it takes\n"
              "  s3fifo:      1.53 x capacity + 5 x (max-key-size + max-value-size + 24) + 4 KiB\n"
              "  fifo, clock: 1.29 x capacity + 3 x (max-key-size + max-value-size + 24) + 4 KiB\n"
              "(64 MiB with the 1 MiB default values: 103 MiB). docs/operations.md has the exact formula.\n";
      parsed.action = Action::kHelp;
      parsed.help_text = help.str();
      return parsed;
    }
    if (vm.count("version")) {
      parsed.action = Action::kVersion;
      return parsed;
    }
    if (vm.count("config")) {
      const std::string path = vm["config"].as<std::string>();
      std::ifstream file(path);
      if (!file) return MakeError(ErrorCode::kIo, "cannot read config file '" + path + "'");
      std::stringstream text;
      text << file.rdbuf();
      text.clear();  // an empty file sets failbit
      if (auto ok = CheckNoPlaceholder(text.view(), "config file '" + path + "'"); !ok) {
        return tl::unexpected(ok.error());
      }
      // Values from the command line were stored first and win.
      po::store(po::parse_config_file(text, settings, /*allow_unregistered=*/false), vm);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::string where = raw.config.empty() ? "" : " (command line or " + raw.config + ")";
    return MakeError(ErrorCode::kInvalidArgument, std::string(e.what()) + where);
  }
  auto config = Convert(raw);
  if (!config) return tl::unexpected(config.error());
  parsed.config = *config;
  return parsed;
}

std::vector<std::string> RestartOnlyChanges(const DaemonConfig& a, const DaemonConfig& b) {
  std::vector<std::string> changed;
  if (a.segment != b.segment) changed.push_back("segment");
  if (a.ipc != b.ipc) changed.push_back("ipc");
  if (a.tcp != b.tcp) changed.push_back("tcp");
  if (a.stream != b.stream) changed.push_back("stream");
  if (a.capacity_bytes != b.capacity_bytes) changed.push_back("capacity");
  if (a.max_entries != b.max_entries) changed.push_back("max-entries");
  if (a.max_key_size != b.max_key_size) changed.push_back("max-key-size");
  if (a.max_value_size != b.max_value_size) changed.push_back("max-value-size");
  if (a.policy != b.policy) changed.push_back("policy");
  if (a.max_frame_bytes != b.max_frame_bytes) changed.push_back("max-frame");
  if (a.rate_limit_capacity != b.rate_limit_capacity) changed.push_back("rate-limit-capacity");
  if (a.pub != b.pub) changed.push_back("pub");
  if (a.cluster.name != b.cluster.name) changed.push_back("cluster");
  if (a.cluster.node_id != b.cluster.node_id) changed.push_back("node-id");
  if (a.cluster.advertise != b.cluster.advertise) changed.push_back("advertise");
  if (a.cluster.etcd != b.cluster.etcd) changed.push_back("etcd");
  if (a.cluster.replication != b.cluster.replication) changed.push_back("replication");
  if (a.cluster.strong != b.cluster.strong) changed.push_back("consistency");
  if (a.curve_secret_key != b.curve_secret_key) changed.push_back("curve-secret-key");
  if (a.insecure != b.insecure) changed.push_back("insecure");
  if (a.access_mode != b.access_mode) changed.push_back("access-mode");
  if (a.access_group != b.access_group) changed.push_back("access-group");
  if (a.log_format != b.log_format) changed.push_back("log-format");
  if (a.metrics != b.metrics) changed.push_back("metrics");
  if (a.huge_pages != b.huge_pages) changed.push_back("huge-pages");
  if (a.huge_pages_dir != b.huge_pages_dir) changed.push_back("huge-pages-dir");
  return changed;
}

}  // namespace cachet::daemon
