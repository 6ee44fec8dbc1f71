// EtcdTransport: HTTP POSTs of JSON to etcd's v3 gateway over a list of
// endpoints, and the JSON decoding every part of the etcd client shares.
// Private to the cluster library (it exposes nlohmann-json).
//
// Each endpoint has one keep-alive connection; a request holds its
// endpoint's mutex for its whole length, so requests from several threads
// to one endpoint go one after the other. Stop() may be called from any
// thread: it shuts every connection down, so a request blocked on a silent
// etcd returns at once, and refuses all later requests.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "cachet/cluster/etcd_client.h"
#include "cachet/result.h"

namespace cachet::cluster::detail {

using Json = nlohmann::json;

struct Endpoint {
  std::string host;
  int port = 0;
  std::string url;  // "http://host:port", as errors name it
};

// Parses "http://a:1,b:2" (whitespace around items ignored).
Result<std::vector<Endpoint>> ParseEndpoints(std::string_view list);

// When a request may go on to the next endpoint.
enum class Failover {
  // Only when the endpoint could not be reached (nothing was sent). For
  // writes: a request that reached etcd may have been applied.
  kUnreachable,
  // Also after a timeout, a broken answer or an etcd that has no leader.
  // For reads and other requests that can be repeated.
  kAnyFailure,
};

// A decoded answer and the endpoint that gave it.
struct Answer {
  Json body;
  std::string endpoint;
};

// Receives a streamed answer's bytes as they arrive, and the URL of the
// endpoint they come from; returns false to end the stream.
using StreamReceiver = std::function<bool(std::string_view bytes, const std::string& endpoint)>;

class EtcdTransport {
 public:
  static Result<std::unique_ptr<EtcdTransport>> Create(const EtcdOptions& options);
  ~EtcdTransport();

  // POSTs `request` to `path` (e.g. "/v3/kv/range"); returns the JSON object
  // of a 200 answer. `timeout` bounds the connect and each wait for bytes.
  Result<Answer> Call(const char* path, const Json& request, Failover failover, std::chrono::milliseconds timeout);
  Result<Answer> Call(const char* path, const Json& request, Failover failover) {
    return Call(path, request, failover, options_.request_timeout);
  }

  // POSTs `request` to a streaming method (/v3/watch) and hands the 200
  // answer's body to `receiver` as it arrives, until the stream ends, the
  // receiver returns false, nothing arrives for `idle_timeout`, or Stop().
  // Opens the stream on the first endpoint that answers. Returns why it
  // ended, or why no endpoint would open it (each endpoint named).
  Error Stream(const char* path, const Json& request, std::chrono::milliseconds idle_timeout,
               const StreamReceiver& receiver);

  void Stop();
  bool stopped() const { return stopped_.load(std::memory_order_acquire); }

  const EtcdOptions& options() const { return options_; }
  size_t endpoint_count() const { return connections_.size(); }

  struct Connection;  // one endpoint's HTTP client (defined in the .cc)

 private:
  EtcdTransport(EtcdOptions options, std::vector<std::unique_ptr<Connection>> connections);

  EtcdOptions options_;
  std::vector<std::unique_ptr<Connection>> connections_;
  // The endpoint that answered last: where the next request starts.
  std::atomic<size_t> preferred_{0};
  std::atomic<bool> stopped_{false};
};

// A bytes field of `object` (base64 in the JSON), decoded; "" when absent.
// Errors (kProtocol) name the endpoint and the field.
Result<std::string> BytesField(const Answer& answer, const Json& object, const char* field);
// An int64 field (etcd writes them as JSON strings); 0 when absent.
Result<int64_t> Int64Field(const Answer& answer, const Json& object, const char* field);
// A bool field; false when absent (the gateway leaves out false).
Result<bool> BoolField(const Answer& answer, const Json& object, const char* field);
// The "header": {"revision"} of a response object.
Result<int64_t> HeaderRevision(const Answer& answer, const Json& response);
Result<KeyValue> ParseKeyValue(const Answer& answer, const Json& kv);
// A RangeResponse: {"header", "kvs": [...]}.
Result<RangeResult> ParseRange(const Answer& answer, const Json& response);

// One message of a streamed method: the object in {"result": {...}}, or
// the error in {"error": {"grpc_code", "message"}} as a cachet error.
Result<const Json*> StreamResult(const Answer& answer, const Json& message);
// A keepalive's answer: the lease's TTL from now, 0 if it is gone.
Result<int64_t> ParseKeepAlive(const Answer& answer, const Json& message, int64_t lease_id);

Error ProtocolError(const Answer& answer, const std::string& what);

// The lease calls EtcdClient and LeaseKeeper share (etcd_client.cc).
Result<Lease> GrantLease(EtcdTransport& transport, int64_t ttl_seconds);
Result<int64_t> KeepLeaseAlive(EtcdTransport& transport, int64_t lease_id, std::chrono::milliseconds timeout);
Result<void> RevokeLease(EtcdTransport& transport, int64_t lease_id);

// The end of the range of every key starting with `prefix`: the prefix with
// its last byte below 0xff incremented and what follows dropped; "\0" (every
// key) for a prefix that is empty or all 0xff.
std::string PrefixRangeEnd(std::string_view prefix);

// {"key"} for one key, or {"key", "range_end"} for every key under a
// prefix (etcd wants key "\0" rather than "" for the whole key space).
Json KeyRangeJson(const std::string& key, bool prefix);

}  // namespace cachet::cluster::detail
