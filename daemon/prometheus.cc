#include "prometheus.h"

#include <cinttypes>
#include <cstdio>

namespace cachet::daemon {

namespace {

// Seconds, exactly, from whole nanoseconds: "0.000123456", "12".
std::string SecondsFromNanos(uint64_t ns) {
  char text[48];
  const uint64_t whole = ns / 1'000'000'000, frac = ns % 1'000'000'000;
  if (frac == 0) {
    std::snprintf(text, sizeof text, "%" PRIu64, whole);
  } else {
    int n = std::snprintf(text, sizeof text, "%" PRIu64 ".%09" PRIu64, whole, frac);
    while (n > 0 && text[n - 1] == '0') text[--n] = '\0';
  }
  return text;
}

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}

  // # HELP and # TYPE of a family.
  void Family(std::string_view name, std::string_view type, std::string_view help) {
    out_.append("# HELP ").append(name).append(" ");
    for (char c : help) {
      if (c == '\\') {
        out_.append("\\\\");
      } else if (c == '\n') {
        out_.append("\\n");
      } else {
        out_.push_back(c);
      }
    }
    out_.append("\n# TYPE ").append(name).append(" ").append(type).append("\n");
  }

  // One sample: name{labels} value. `labels` are name, value pairs.
  void Sample(std::string_view name, std::initializer_list<std::pair<std::string_view, std::string_view>> labels,
              std::string_view value) {
    out_.append(name);
    if (labels.size() != 0) {
      out_.push_back('{');
      bool first = true;
      for (const auto& [label, v] : labels) {
        if (!first) out_.push_back(',');
        first = false;
        out_.append(label).append("=\"").append(EscapeLabelValue(v)).append("\"");
      }
      out_.push_back('}');
    }
    out_.push_back(' ');
    out_.append(value).push_back('\n');
  }
  void Sample(std::string_view name, std::initializer_list<std::pair<std::string_view, std::string_view>> labels,
              uint64_t value) {
    Sample(name, labels, std::to_string(value));
  }

  // A family of one unlabelled sample.
  void Single(std::string_view name, std::string_view type, std::string_view help, uint64_t value) {
    Family(name, type, help);
    Sample(name, {}, value);
  }

 private:
  std::string& out_;
};

void WriteRequests(Writer& w, const RequestStats& r) {
  w.Family("cachet_requests_total", "counter",
           "Requests answered, by op and reply status (INVALID: not decoded: malformed, an unknown op, or refused "
           "before decoding).");
  for (size_t op = 0; op < kOpRows; ++op) {
    for (size_t status = 0; status < kStatusColumns; ++status) {
      if (r.replies[op][status] == 0) continue;
      w.Sample("cachet_requests_total", {{"op", OpRowName(op)}, {"status", StatusColumnName(status)}},
               r.replies[op][status]);
    }
  }
  w.Family("cachet_request_duration_seconds", "histogram",
           "Time the serving loop spent on a request, from taking it off the socket to handing its reply back.");
  for (size_t op = 0; op < kOpRows; ++op) {
    const LatencyHistogram& h = r.latency[op];
    const uint64_t count = h.count();
    if (count == 0) continue;
    const char* name = OpRowName(op);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < kLatencyBoundsUs.size(); ++i) {
      cumulative += h.counts[i];
      const std::string le = SecondsFromNanos(uint64_t{kLatencyBoundsUs[i]} * 1000);
      w.Sample("cachet_request_duration_seconds_bucket", {{"op", name}, {"le", le}}, cumulative);
    }
    w.Sample("cachet_request_duration_seconds_bucket", {{"op", name}, {"le", "+Inf"}}, count);
    w.Sample("cachet_request_duration_seconds_sum", {{"op", name}}, SecondsFromNanos(h.sum_ns));
    w.Sample("cachet_request_duration_seconds_count", {{"op", name}}, count);
  }
}

void WriteLimiter(Writer& w, const MetricsSnapshot& s) {
  w.Family("cachet_ratelimit_decisions_total", "counter", "RATELIMIT decisions since start, by tier and result.");
  for (const auto& [tier, d] : s.requests.tiers) {
    if (d.allowed != 0)
      w.Sample("cachet_ratelimit_decisions_total", {{"tier", tier}, {"result", "allowed"}}, d.allowed);
    if (d.denied != 0) w.Sample("cachet_ratelimit_decisions_total", {{"tier", tier}, {"result", "denied"}}, d.denied);
  }
  w.Single("cachet_ratelimit_counters", "gauge", "Live (key, rule) counters of the RATELIMIT table.",
           s.ratelimit_counters);
  w.Single("cachet_ratelimit_capacity", "gauge", "Counters the RATELIMIT table can hold (rate-limit-capacity).",
           s.ratelimit_capacity);
}

void WriteCluster(Writer& w, const MetricsSnapshot& s) {
  w.Single("cachet_cluster_members", "gauge", "Nodes registered in the cluster now (live leases), this one included.",
           s.cluster_members);
  w.Single("cachet_cluster_registered", "gauge", "1 while this node's registration lease in etcd is alive.",
           s.cluster_registered ? 1 : 0);
  w.Single("cachet_cluster_epoch", "gauge", "Version of the shard map this node serves by.", s.cluster_epoch);
  w.Single("cachet_cluster_owned_slots", "gauge", "Slots this node serves.", s.cluster_owned_slots);
  w.Single("cachet_cluster_importing_slots", "gauge", "Slots this node serves and is still importing.",
           s.cluster_importing_slots);
  w.Single("cachet_cluster_primary_shards", "gauge", "Shards this node leads.", s.cluster_primary_shards);
  w.Single("cachet_cluster_replica_shards", "gauge", "Shards this node holds a copy of and another node leads.",
           s.cluster_replica_shards);
  w.Single("cachet_cluster_redirects_total", "counter", "Requests answered MOVED, ASK or CLUSTER_DOWN.",
           s.cluster_redirects);
  w.Single("cachet_cluster_replication_lag_max_entries", "gauge",
           "Entries the slowest follower of the shards this node leads is behind.", s.cluster_max_lag);
  w.Family("cachet_cluster_replication_lag_entries", "gauge",
           "Entries a follower of the shards this node leads is behind; -1 while its copy is being made.");
  for (const auto& [node, lag] : s.cluster_follower_lag) {
    w.Sample("cachet_cluster_replication_lag_entries", {{"follower", node}}, std::to_string(lag));
  }
}

}  // namespace

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out.append("\\\\");
    } else if (c == '"') {
      out.append("\\\"");
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string RenderPrometheus(const MetricsSnapshot& s) {
  std::string out;
  out.reserve(16384);
  Writer w(out);
  WriteRequests(w, s.requests);
  const struct {
    const char* name;
    const char* type;
    const char* help;
    uint64_t value;
  } singles[] = {
      {"cachet_hits_total", "counter", "Lookups that found their key, same-host shared-memory reads included.", s.hits},
      {"cachet_misses_total", "counter", "Lookups that did not find their key, shared-memory reads included.",
       s.misses},
      {"cachet_sets_total", "counter", "Writes that took effect.", s.sets},
      {"cachet_deletes_total", "counter", "Deletes that took effect.", s.deletes},
      {"cachet_evictions_total", "counter", "Items removed by the eviction policy to make room.", s.evictions},
      {"cachet_expirations_total", "counter", "Items removed because their TTL passed.", s.expirations},
      {"cachet_repairs_total", "counter",
       "Repairs of the segment's index: after a writer died holding its lock, or a damaged log was dropped.",
       s.repairs},
      {"cachet_entries", "gauge", "Items held.", s.entries},
      {"cachet_bytes", "gauge", "Bytes of the items held, counted against capacity.", s.bytes},
      {"cachet_capacity_bytes", "gauge", "Bytes of items the cache may hold (capacity).", s.capacity_bytes},
      {"cachet_max_entries", "gauge", "Items the cache may hold (max-entries).", s.max_entries},
      {"cachet_memory_bytes", "gauge", "Size of the shared-memory segment mapped.", s.memory_bytes},
      {"cachet_segment_generation", "gauge", "Generation of the segment: raised each time it is rebuilt empty.",
       s.generation},
      {"cachet_segment_page_bytes", "gauge", "Size of the pages behind the segment: 2097152 on huge pages, else 4096.",
       s.page_bytes},
      {"cachet_same_host_writes", "gauge", "1 while same-host clients write the segment directly.", s.same_host_writes},
      {"cachet_connected_clients", "gauge", "Open ZeroMQ connections.", s.connected_clients},
      {"cachet_refused_connections_total", "counter",
       "Handshakes refused: a key not admitted, a client without CURVE, or over max-connections.",
       s.refused_connections},
      {"cachet_denied_requests_total", "counter", "Requests answered PERMISSION_DENIED.", s.denied_requests},
      {"cachet_busy_replies_total", "counter",
       "Requests answered BUSY and not run (max-in-flight, or the writer lock held by a same-host client).",
       s.busy_replies},
      {"cachet_dropped_frames_total", "counter", "Messages that were not [identity, request] and got no answer.",
       s.dropped_frames},
      {"cachet_dropped_replies_total", "counter",
       "Replies not sent: the client had too many unread, or had disconnected.", s.dropped_replies},
      {"cachet_reply_backlog_bytes", "gauge", "Bytes of replies waiting for clients to read them.",
       s.reply_backlog_bytes},
      {"cachet_reloads_total", "counter", "Configuration reloads that succeeded.", s.reloads},
  };
  for (const auto& m : singles) w.Single(m.name, m.type, m.help, m.value);
  w.Family("cachet_uptime_seconds", "gauge", "Seconds since cachetd started.");
  w.Sample("cachet_uptime_seconds", {}, SecondsFromNanos(s.uptime_ms * 1'000'000));
  if (s.limiter) WriteLimiter(w, s);
  if (s.cluster) WriteCluster(w, s);
  return out;
}

}  // namespace cachet::daemon
