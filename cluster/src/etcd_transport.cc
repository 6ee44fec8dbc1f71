#include "etcd_transport.h"

#include <charconv>
#include <exception>
#include <mutex>
#include <utility>

#include "etcd_base64.h"
#include "http_connection.h"

namespace cachet::cluster::detail {
namespace {

// More than any answer the control plane expects (the shard map, a range of
// a few thousand nodes); a bigger one is a broken or hostile server.
constexpr size_t kMaxAnswerBytes = 64u << 20;

std::string Trimmed(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return std::string(s);
}

Result<Endpoint> ParseEndpoint(std::string_view item) {
  const std::string text = Trimmed(item);
  std::string_view rest = text;
  const size_t scheme_end = rest.find("://");
  if (scheme_end != std::string_view::npos) {
    if (rest.substr(0, scheme_end) != "http") {
      return MakeError(ErrorCode::kInvalidArgument,
                       "etcd endpoint '" + text + "': only http:// is supported (the etcd client has no TLS)");
    }
    rest.remove_prefix(scheme_end + 3);
  }
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos) {
    return MakeError(ErrorCode::kInvalidArgument, "etcd endpoint '" + text + "': a client URL has no path");
  }
  std::string_view host;
  std::string_view port;
  if (!rest.empty() && rest.front() == '[') {  // [v6 address]:port
    const size_t close = rest.find(']');
    if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
      return MakeError(ErrorCode::kInvalidArgument, "etcd endpoint '" + text + "': expected [address]:port");
    }
    host = rest.substr(1, close - 1);
    port = rest.substr(close + 2);
  } else {
    const size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) {
      return MakeError(ErrorCode::kInvalidArgument, "etcd endpoint '" + text + "': expected host:port");
    }
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  int port_number = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), port_number);
  if (host.empty() || port.empty() || ec != std::errc() || end != port.data() + port.size() || port_number < 1 ||
      port_number > 65535) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "etcd endpoint '" + text + "': expected host:port with a port from 1 to 65535");
  }
  Endpoint e;
  e.host = std::string(host);
  e.port = port_number;
  const bool v6 = e.host.find(':') != std::string::npos;
  e.url = "http://" + (v6 ? "[" + e.host + "]" : e.host) + ":" + std::to_string(port_number);
  return e;
}

// The gRPC status codes the gateway puts in "code", as cachet errors.
ErrorCode CodeOfGrpc(int64_t grpc_code) {
  switch (grpc_code) {
    case 3:   // InvalidArgument
    case 9:   // FailedPrecondition
    case 11:  // OutOfRange (a compacted revision)
      return ErrorCode::kInvalidArgument;
    case 4:  // DeadlineExceeded: etcd gave up waiting for its raft
      return ErrorCode::kTimeout;
    case 5:  // NotFound (a lease)
      return ErrorCode::kNotFound;
    case 14:  // Unavailable: no leader, stopping
      return ErrorCode::kUnavailable;
    default: return ErrorCode::kInternal;
  }
}

std::string Excerpt(std::string_view text) {
  constexpr size_t kMax = 200;
  std::string out(text.substr(0, kMax));
  if (text.size() > kMax) out += "...";
  return out;
}

std::string DescribeTransportError(const HttpOutcome& outcome, std::chrono::milliseconds timeout) {
  switch (outcome.failure) {
    case HttpFailure::kNone: return "no error";
    case HttpFailure::kCannotConnect: return "cannot connect";
    case HttpFailure::kNoAnswer:
      return "no answer (connection closed, or nothing within " + std::to_string(timeout.count()) + " ms)";
    case HttpFailure::kCannotSend: return "cannot send the request";
    case HttpFailure::kCanceled: return "canceled";
    case HttpFailure::kOther: break;
  }
  return outcome.detail;
}

}  // namespace

Result<std::vector<Endpoint>> ParseEndpoints(std::string_view list) {
  std::vector<Endpoint> endpoints;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = std::min(list.find(',', start), list.size());
    const std::string_view item = list.substr(start, comma - start);
    if (Trimmed(item).empty()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "etcd endpoints '" + std::string(list) + "': an empty item (expected http://host:port,...)");
    }
    auto endpoint = ParseEndpoint(item);
    if (!endpoint) return tl::unexpected(endpoint.error());
    endpoints.push_back(std::move(*endpoint));
    start = comma + 1;
  }
  return endpoints;
}

struct EtcdTransport::Connection {
  Connection(Endpoint e, std::unique_ptr<HttpConnection> h) : endpoint(std::move(e)), http(std::move(h)) {}
  const Endpoint endpoint;
  std::mutex mu;  // held for a whole request: one at a time on `http`
  const std::unique_ptr<HttpConnection> http;
};

// Why one attempt on one endpoint failed.
struct AttemptFailure {
  Error error;
  bool sent = true;        // false: the endpoint was not reached, nothing was applied
  bool repeatable = true;  // another endpoint may answer better (timeouts, no leader)
};

namespace {

// One POST to one endpoint. `on_body` receives the body of a 200 answer as
// it arrives (returns false to stop); the body of any other status is
// collected into the failure. Returns the status (200) or the failure.
using BodyReceiver = std::function<bool(std::string_view bytes)>;

tl::expected<void, AttemptFailure> Post(EtcdTransport::Connection& c, const char* path, const std::string& body,
                                        std::chrono::milliseconds connect_timeout,
                                        std::chrono::milliseconds read_timeout, const BodyReceiver& on_body) {
  std::lock_guard<std::mutex> lock(c.mu);
  std::string refusal;  // the body of a non-200 answer
  bool too_large = false;
  const HttpOutcome outcome =
      c.http->Post(path, body, connect_timeout, read_timeout, [&](int status, std::string_view bytes) {
        if (status == 200) return on_body(bytes);
        if (refusal.size() + bytes.size() > kMaxAnswerBytes) {
          too_large = true;
          return false;
        }
        refusal.append(bytes);
        return true;
      });
  const int status = outcome.status;
  const bool ok = outcome.failure == HttpFailure::kNone;
  const std::string where = "etcd at " + c.endpoint.url + ": POST " + path + ": ";
  if (too_large) {
    return tl::unexpected(AttemptFailure{
        Error{ErrorCode::kProtocol, where + "an answer over " + std::to_string(kMaxAnswerBytes) + " bytes"}, true,
        true});
  }
  if (!ok && status == 0) {
    const bool unreachable = outcome.failure == HttpFailure::kCannotConnect;
    return tl::unexpected(
        AttemptFailure{Error{unreachable ? ErrorCode::kUnavailable : ErrorCode::kTimeout,
                             where + DescribeTransportError(outcome, unreachable ? connect_timeout : read_timeout)},
                       !unreachable, true});
  }
  if (status == 200) {
    if (ok) return {};
    return tl::unexpected(
        AttemptFailure{Error{outcome.failure == HttpFailure::kCanceled ? ErrorCode::kProtocol : ErrorCode::kUnavailable,
                             where + "the answer broke off: " + DescribeTransportError(outcome, read_timeout)},
                       true, true});
  }
  // A refusal: the gateway's {"error", "message", "code"}.
  const Json doc = Json::parse(refusal, nullptr, false);
  if (doc.is_object() && doc.contains("code") && doc["code"].is_number_integer()) {
    const int64_t code = doc["code"].get<int64_t>();
    std::string message;
    if (doc.contains("message") && doc["message"].is_string()) message = doc["message"].get<std::string>();
    const ErrorCode ours = CodeOfGrpc(code);
    return tl::unexpected(AttemptFailure{
        Error{ours, where + message + " (gRPC code " + std::to_string(code) + ", HTTP " + std::to_string(status) + ")"},
        true, ours == ErrorCode::kUnavailable || ours == ErrorCode::kTimeout});
  }
  return tl::unexpected(AttemptFailure{
      Error{ErrorCode::kProtocol, where + "HTTP " + std::to_string(status) +
                                      " that is not etcd's: " + Excerpt(refusal) +
                                      (ok ? "" : " (" + DescribeTransportError(outcome, read_timeout) + ")")},
      true, true});
}

}  // namespace

Result<std::unique_ptr<EtcdTransport>> EtcdTransport::Create(const EtcdOptions& options) {
  if (auto valid = options.Validate(); !valid) return tl::unexpected(valid.error());
  auto endpoints = ParseEndpoints(options.endpoints);
  if (!endpoints) return tl::unexpected(endpoints.error());
  std::vector<std::unique_ptr<Connection>> connections;
  for (Endpoint& e : *endpoints) {
    auto http = ConnectHttp(e.host, e.port);
    if (!http) return tl::unexpected(http.error());
    connections.push_back(std::make_unique<Connection>(std::move(e), std::move(*http)));
  }
  return std::unique_ptr<EtcdTransport>(new EtcdTransport(options, std::move(connections)));
}

EtcdTransport::EtcdTransport(EtcdOptions options, std::vector<std::unique_ptr<Connection>> connections)
    : options_(std::move(options)), connections_(std::move(connections)) {}

EtcdTransport::~EtcdTransport() = default;

void EtcdTransport::Stop() {
  stopped_.store(true, std::memory_order_release);
  for (auto& c : connections_) c->http->Stop();
}

Result<Answer> EtcdTransport::Call(const char* path, const Json& request, Failover failover,
                                   std::chrono::milliseconds timeout) {
  try {
    const std::string body = request.dump();
    std::string tried;
    const size_t n = connections_.size();
    const size_t first = preferred_.load(std::memory_order_relaxed) % n;
    ErrorCode code = ErrorCode::kUnavailable;
    for (size_t k = 0; k < n; ++k) {
      if (stopped()) return MakeError(ErrorCode::kUnavailable, "etcd client stopped");
      const size_t i = (first + k) % n;
      Connection& c = *connections_[i];
      std::string answer;
      bool too_large = false;
      auto posted = Post(c, path, body, timeout, timeout, [&](std::string_view bytes) {
        if (answer.size() + bytes.size() > kMaxAnswerBytes) {
          too_large = true;
          return false;
        }
        answer.append(bytes);
        return true;
      });
      if (too_large) {  // the receiver ended it
        posted = tl::unexpected(AttemptFailure{
            Error{ErrorCode::kProtocol, "etcd at " + c.endpoint.url + ": POST " + path + ": an answer over " +
                                            std::to_string(kMaxAnswerBytes) + " bytes"},
            true, true});
      }
      if (posted) {
        Answer out{Json::parse(answer, nullptr, false), c.endpoint.url};
        if (!out.body.is_object()) {
          return MakeError(ErrorCode::kProtocol, "etcd at " + c.endpoint.url + ": POST " + path +
                                                     ": the answer is not a JSON object: " + Excerpt(answer));
        }
        preferred_.store(i, std::memory_order_relaxed);
        return out;
      }
      const AttemptFailure& f = posted.error();
      const bool next = !f.sent || (failover == Failover::kAnyFailure && f.repeatable);
      if (!next) return tl::unexpected(f.error);
      if (f.sent) code = f.error.code;
      tried += (tried.empty() ? "" : "; ") + f.error.message;
    }
    if (code != ErrorCode::kUnavailable && code != ErrorCode::kTimeout) return MakeError(code, tried);
    return MakeError(ErrorCode::kUnavailable, "no etcd endpoint answered (tried " + std::to_string(n) + "): " + tried);
  } catch (const std::exception& e) {
    return MakeError(ErrorCode::kInternal, std::string("etcd client: POST ") + path + ": " + e.what());
  }
}

Error EtcdTransport::Stream(const char* path, const Json& request, std::chrono::milliseconds idle_timeout,
                            const StreamReceiver& receiver) {
  try {
    const std::string body = request.dump();
    std::string tried;
    const size_t n = connections_.size();
    const size_t first = preferred_.load(std::memory_order_relaxed) % n;
    for (size_t k = 0; k < n; ++k) {
      if (stopped()) return Error{ErrorCode::kUnavailable, "etcd client stopped"};
      const size_t i = (first + k) % n;
      Connection& c = *connections_[i];
      bool opened = false;
      auto posted = Post(c, path, body, options_.request_timeout, idle_timeout, [&](std::string_view bytes) {
        if (!opened) preferred_.store(i, std::memory_order_relaxed);
        opened = true;
        return receiver(bytes, c.endpoint.url);
      });
      const std::string where = "etcd at " + c.endpoint.url + ": POST " + path + ": ";
      if (opened) return posted ? Error{ErrorCode::kUnavailable, where + "the stream ended"} : posted.error().error;
      tried += (tried.empty() ? "" : "; ") + (posted ? where + "an empty answer" : posted.error().error.message);
    }
    return Error{ErrorCode::kUnavailable, "no etcd endpoint answered (tried " + std::to_string(n) + "): " + tried};
  } catch (const std::exception& e) {
    return Error{ErrorCode::kInternal, std::string("etcd client: POST ") + path + ": " + e.what()};
  }
}

Error ProtocolError(const Answer& answer, const std::string& what) {
  return Error{ErrorCode::kProtocol, "etcd at " + answer.endpoint + ": unexpected answer: " + what};
}

Result<const Json*> StreamResult(const Answer& answer, const Json& message) {
  if (!message.is_object()) return tl::unexpected(ProtocolError(answer, "a stream message that is not an object"));
  if (const auto result = message.find("result"); result != message.end() && result->is_object()) return &*result;
  const auto error = message.find("error");
  if (error == message.end() || !error->is_object()) {
    return tl::unexpected(
        ProtocolError(answer, "a stream message with neither result nor error: " + Excerpt(message.dump())));
  }
  auto code = Int64Field(answer, *error, "grpc_code");
  if (!code) return tl::unexpected(code.error());
  std::string text;
  if (const auto m = error->find("message"); m != error->end() && m->is_string()) text = m->get<std::string>();
  return MakeError(CodeOfGrpc(*code),
                   "etcd at " + answer.endpoint + ": " + text + " (gRPC code " + std::to_string(*code) + ")");
}

Result<int64_t> ParseKeepAlive(const Answer& answer, const Json& message, int64_t lease_id) {
  auto result = StreamResult(answer, message);
  if (!result) return tl::unexpected(result.error());
  auto id = Int64Field(answer, **result, "ID");
  if (!id) return tl::unexpected(id.error());
  if (*id != lease_id) {
    return tl::unexpected(ProtocolError(
        answer, "a keepalive of lease " + std::to_string(lease_id) + " answered for lease " + std::to_string(*id)));
  }
  auto ttl = Int64Field(answer, **result, "TTL");
  if (!ttl) return tl::unexpected(ttl.error());
  if (*ttl < 0) return tl::unexpected(ProtocolError(answer, "a negative TTL"));
  return *ttl;
}

Result<std::string> BytesField(const Answer& answer, const Json& object, const char* field) {
  const auto it = object.find(field);
  if (it == object.end() || it->is_null()) return std::string();
  if (!it->is_string()) return tl::unexpected(ProtocolError(answer, std::string(field) + " is not a string"));
  auto bytes = Base64Decode(it->get_ref<const std::string&>());
  if (!bytes) return tl::unexpected(ProtocolError(answer, std::string(field) + " is not base64"));
  return std::move(*bytes);
}

Result<int64_t> Int64Field(const Answer& answer, const Json& object, const char* field) {
  const auto it = object.find(field);
  if (it == object.end() || it->is_null()) return int64_t{0};
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    int64_t value = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (!s.empty() && ec == std::errc() && end == s.data() + s.size()) return value;
  }
  return tl::unexpected(ProtocolError(answer, std::string(field) + " is not a 64-bit integer: " + Excerpt(it->dump())));
}

Result<bool> BoolField(const Answer& answer, const Json& object, const char* field) {
  const auto it = object.find(field);
  if (it == object.end() || it->is_null()) return false;
  if (!it->is_boolean()) return tl::unexpected(ProtocolError(answer, std::string(field) + " is not a boolean"));
  return it->get<bool>();
}

Result<int64_t> HeaderRevision(const Answer& answer, const Json& response) {
  const auto it = response.find("header");
  if (it == response.end() || !it->is_object()) return tl::unexpected(ProtocolError(answer, "no header"));
  return Int64Field(answer, *it, "revision");
}

Result<KeyValue> ParseKeyValue(const Answer& answer, const Json& kv) {
  if (!kv.is_object()) return tl::unexpected(ProtocolError(answer, "a key-value that is not an object"));
  KeyValue out;
  auto key = BytesField(answer, kv, "key");
  auto value = BytesField(answer, kv, "value");
  auto create = Int64Field(answer, kv, "create_revision");
  auto mod = Int64Field(answer, kv, "mod_revision");
  auto version = Int64Field(answer, kv, "version");
  auto lease = Int64Field(answer, kv, "lease");
  for (const Error* e :
       {key ? nullptr : &key.error(), value ? nullptr : &value.error(), create ? nullptr : &create.error(),
        mod ? nullptr : &mod.error(), version ? nullptr : &version.error(), lease ? nullptr : &lease.error()}) {
    if (e != nullptr) return tl::unexpected(*e);
  }
  out.key = std::move(*key);
  out.value = std::move(*value);
  out.create_revision = *create;
  out.mod_revision = *mod;
  out.version = *version;
  out.lease = *lease;
  return out;
}

Result<RangeResult> ParseRange(const Answer& answer, const Json& response) {
  if (!response.is_object()) return tl::unexpected(ProtocolError(answer, "a range response that is not an object"));
  RangeResult out;
  auto revision = HeaderRevision(answer, response);
  if (!revision) return tl::unexpected(revision.error());
  out.revision = *revision;
  const auto kvs = response.find("kvs");
  if (kvs == response.end() || kvs->is_null()) return out;
  if (!kvs->is_array()) return tl::unexpected(ProtocolError(answer, "kvs is not an array"));
  for (const Json& item : *kvs) {
    auto kv = ParseKeyValue(answer, item);
    if (!kv) return tl::unexpected(kv.error());
    out.kvs.push_back(std::move(*kv));
  }
  return out;
}

std::string PrefixRangeEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

Json KeyRangeJson(const std::string& key, bool prefix) {
  if (!prefix) return Json{{"key", Base64Encode(key)}};
  return Json{{"key", Base64Encode(key.empty() ? std::string(1, '\0') : key)},
              {"range_end", Base64Encode(PrefixRangeEnd(key))}};
}

}  // namespace cachet::cluster::detail
