#include "cachet/cluster/etcd_client.h"

#include <exception>
#include <utility>

#include "etcd_base64.h"
#include "etcd_transport.h"

namespace cachet::cluster {

using detail::Answer;
using detail::Base64Encode;
using detail::Failover;
using detail::Json;

Result<void> EtcdOptions::Validate() const {
  if (request_timeout < std::chrono::milliseconds(1)) {
    return MakeError(ErrorCode::kInvalidArgument, "etcd request_timeout must be at least 1 ms, got " +
                                                      std::to_string(request_timeout.count()) + " ms");
  }
  auto endpoints_ok = detail::ParseEndpoints(endpoints);
  if (!endpoints_ok) return tl::unexpected(endpoints_ok.error());
  return {};
}

Compare Compare::Value(std::string key, Op op, std::string value) {
  Compare c;
  c.key = std::move(key);
  c.target = Target::kValue;
  c.op = op;
  c.value = std::move(value);
  return c;
}

namespace {

Compare NumberCompare(std::string key, Compare::Target target, Compare::Op op, int64_t number) {
  Compare c;
  c.key = std::move(key);
  c.target = target;
  c.op = op;
  c.number = number;
  return c;
}

TxnOp MakeOp(TxnOp::Type type, std::string key, bool prefix) {
  TxnOp op;
  op.type = type;
  op.key = std::move(key);
  op.prefix = prefix;
  return op;
}

}  // namespace

Compare Compare::Version(std::string key, Op op, int64_t version) {
  return NumberCompare(std::move(key), Target::kVersion, op, version);
}
Compare Compare::CreateRevision(std::string key, Op op, int64_t revision) {
  return NumberCompare(std::move(key), Target::kCreateRevision, op, revision);
}
Compare Compare::ModRevision(std::string key, Op op, int64_t revision) {
  return NumberCompare(std::move(key), Target::kModRevision, op, revision);
}

TxnOp TxnOp::Put(std::string key, std::string value, int64_t lease) {
  TxnOp op = MakeOp(Type::kPut, std::move(key), false);
  op.value = std::move(value);
  op.lease = lease;
  return op;
}
TxnOp TxnOp::Delete(std::string key) { return MakeOp(Type::kDelete, std::move(key), false); }
TxnOp TxnOp::DeletePrefix(std::string prefix) { return MakeOp(Type::kDelete, std::move(prefix), true); }
TxnOp TxnOp::Get(std::string key) { return MakeOp(Type::kRange, std::move(key), false); }
TxnOp TxnOp::Range(std::string prefix) { return MakeOp(Type::kRange, std::move(prefix), true); }

struct EtcdClient::Impl {
  std::unique_ptr<detail::EtcdTransport> transport;
};

namespace {

// {"key"} or {"key", "range_end"} for a key or a prefix.
Json KeyRange(const std::string& key, bool prefix) { return detail::KeyRangeJson(key, prefix); }

Json PutRequest(const std::string& key, const std::string& value, int64_t lease) {
  Json j = {{"key", Base64Encode(key)}, {"value", Base64Encode(value)}};
  if (lease != 0) j["lease"] = std::to_string(lease);
  return j;
}

Json CompareJson(const Compare& c) {
  // etcdserverpb.Compare: target and result by their enum names, the operand
  // in the oneof field named for the target.
  static const char* const kResult[] = {"EQUAL", "NOT_EQUAL", "GREATER", "LESS"};
  Json j = {{"key", Base64Encode(c.key)}, {"result", kResult[static_cast<int>(c.op)]}};
  switch (c.target) {
    case Compare::Target::kValue:
      j["target"] = "VALUE";
      j["value"] = Base64Encode(c.value);
      break;
    case Compare::Target::kVersion:
      j["target"] = "VERSION";
      j["version"] = std::to_string(c.number);
      break;
    case Compare::Target::kCreateRevision:
      j["target"] = "CREATE";
      j["create_revision"] = std::to_string(c.number);
      break;
    case Compare::Target::kModRevision:
      j["target"] = "MOD";
      j["mod_revision"] = std::to_string(c.number);
      break;
  }
  return j;
}

Json OpJson(const TxnOp& op) {
  switch (op.type) {
    case TxnOp::Type::kPut: return {{"request_put", PutRequest(op.key, op.value, op.lease)}};
    case TxnOp::Type::kDelete: return {{"request_delete_range", KeyRange(op.key, op.prefix)}};
    case TxnOp::Type::kRange: break;
  }
  return {{"request_range", KeyRange(op.key, op.prefix)}};
}

Result<DeleteResult> ParseDelete(const Answer& answer, const Json& response) {
  auto deleted = detail::Int64Field(answer, response, "deleted");
  if (!deleted) return tl::unexpected(deleted.error());
  auto revision = detail::HeaderRevision(answer, response);
  if (!revision) return tl::unexpected(revision.error());
  return DeleteResult{*deleted, *revision};
}

// Runs `body` and turns anything it throws into an error (the boundary).
template <typename T, typename Body>
Result<T> Guarded(const char* what, Body&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    return MakeError(ErrorCode::kInternal, std::string("etcd client: ") + what + ": " + e.what());
  }
}

}  // namespace

Result<EtcdClient> EtcdClient::Create(const EtcdOptions& options) {
  auto transport = detail::EtcdTransport::Create(options);
  if (!transport) return tl::unexpected(transport.error());
  auto impl = std::make_unique<Impl>();
  impl->transport = std::move(*transport);
  return EtcdClient(std::move(impl));
}

EtcdClient::EtcdClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EtcdClient::EtcdClient(EtcdClient&&) noexcept = default;
EtcdClient& EtcdClient::operator=(EtcdClient&&) noexcept = default;
EtcdClient::~EtcdClient() = default;

const EtcdOptions& EtcdClient::options() const { return impl_->transport->options(); }

Result<int64_t> EtcdClient::Put(const std::string& key, const std::string& value, int64_t lease) {
  return Guarded<int64_t>("put", [&]() -> Result<int64_t> {
    auto answer = impl_->transport->Call("/v3/kv/put", PutRequest(key, value, lease), Failover::kUnreachable);
    if (!answer) return tl::unexpected(answer.error());
    return detail::HeaderRevision(*answer, answer->body);
  });
}

Result<std::optional<KeyValue>> EtcdClient::Get(const std::string& key) {
  return Guarded<std::optional<KeyValue>>("get", [&]() -> Result<std::optional<KeyValue>> {
    auto answer = impl_->transport->Call("/v3/kv/range", KeyRange(key, false), Failover::kAnyFailure);
    if (!answer) return tl::unexpected(answer.error());
    auto range = detail::ParseRange(*answer, answer->body);
    if (!range) return tl::unexpected(range.error());
    if (range->kvs.empty()) return std::optional<KeyValue>();
    if (range->kvs.size() > 1 || range->kvs[0].key != key) {
      return tl::unexpected(detail::ProtocolError(*answer, "a get of one key returned other keys"));
    }
    return std::optional<KeyValue>(std::move(range->kvs[0]));
  });
}

Result<RangeResult> EtcdClient::Range(const std::string& prefix) {
  return Guarded<RangeResult>("range", [&]() -> Result<RangeResult> {
    auto answer = impl_->transport->Call("/v3/kv/range", KeyRange(prefix, true), Failover::kAnyFailure);
    if (!answer) return tl::unexpected(answer.error());
    return detail::ParseRange(*answer, answer->body);
  });
}

Result<DeleteResult> EtcdClient::Delete(const std::string& key) {
  return Guarded<DeleteResult>("delete", [&]() -> Result<DeleteResult> {
    auto answer = impl_->transport->Call("/v3/kv/deleterange", KeyRange(key, false), Failover::kUnreachable);
    if (!answer) return tl::unexpected(answer.error());
    return ParseDelete(*answer, answer->body);
  });
}

Result<DeleteResult> EtcdClient::DeletePrefix(const std::string& prefix) {
  return Guarded<DeleteResult>("delete prefix", [&]() -> Result<DeleteResult> {
    auto answer = impl_->transport->Call("/v3/kv/deleterange", KeyRange(prefix, true), Failover::kUnreachable);
    if (!answer) return tl::unexpected(answer.error());
    return ParseDelete(*answer, answer->body);
  });
}

Result<TxnResult> EtcdClient::Txn(const std::vector<Compare>& compares, const std::vector<TxnOp>& success,
                                  const std::vector<TxnOp>& failure) {
  return Guarded<TxnResult>("txn", [&]() -> Result<TxnResult> {
    Json request = {{"compare", Json::array()}, {"success", Json::array()}, {"failure", Json::array()}};
    for (const Compare& c : compares) request["compare"].push_back(CompareJson(c));
    for (const TxnOp& op : success) request["success"].push_back(OpJson(op));
    for (const TxnOp& op : failure) request["failure"].push_back(OpJson(op));
    auto answer = impl_->transport->Call("/v3/kv/txn", request, Failover::kUnreachable);
    if (!answer) return tl::unexpected(answer.error());
    const Json& body = answer->body;
    TxnResult out;
    auto succeeded = detail::BoolField(*answer, body, "succeeded");
    if (!succeeded) return tl::unexpected(succeeded.error());
    out.succeeded = *succeeded;
    auto revision = detail::HeaderRevision(*answer, body);
    if (!revision) return tl::unexpected(revision.error());
    out.revision = *revision;
    // One response per op of the branch that ran, in order.
    const std::vector<TxnOp>& branch = out.succeeded ? success : failure;
    const auto responses = body.find("responses");
    const size_t count = responses == body.end() || responses->is_null() ? 0 : responses->size();
    if (count != branch.size() || (count > 0 && !responses->is_array())) {
      return tl::unexpected(detail::ProtocolError(*answer, "a txn with " + std::to_string(branch.size()) +
                                                               " ops answered with " + std::to_string(count) +
                                                               " responses"));
    }
    for (size_t i = 0; i < branch.size(); ++i) {
      if (branch[i].type != TxnOp::Type::kRange) continue;
      const Json& r = (*responses)[i];
      const auto range = r.is_object() ? r.find("response_range") : r.end();
      if (!r.is_object() || range == r.end()) {
        return tl::unexpected(detail::ProtocolError(*answer, "txn response " + std::to_string(i) + " is not a range"));
      }
      auto parsed = detail::ParseRange(*answer, *range);
      if (!parsed) return tl::unexpected(parsed.error());
      out.ranges.push_back(std::move(*parsed));
    }
    return out;
  });
}

namespace detail {

Result<Lease> GrantLease(EtcdTransport& transport, int64_t ttl_seconds) {
  if (ttl_seconds < 1) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "lease TTL must be at least 1 second, got " + std::to_string(ttl_seconds));
  }
  auto answer = transport.Call("/v3/lease/grant", Json{{"TTL", std::to_string(ttl_seconds)}}, Failover::kUnreachable);
  if (!answer) return tl::unexpected(answer.error());
  const Json& body = answer->body;
  if (const auto e = body.find("error"); e != body.end() && e->is_string() && !e->get<std::string>().empty()) {
    return MakeError(ErrorCode::kInternal,
                     "etcd at " + answer->endpoint + " refused the lease: " + e->get<std::string>());
  }
  auto id = Int64Field(*answer, body, "ID");
  if (!id) return tl::unexpected(id.error());
  auto ttl = Int64Field(*answer, body, "TTL");
  if (!ttl) return tl::unexpected(ttl.error());
  if (*id == 0 || *ttl < 1) return tl::unexpected(ProtocolError(*answer, "a lease grant without an ID or TTL"));
  return Lease{*id, *ttl};
}

Result<int64_t> KeepLeaseAlive(EtcdTransport& transport, int64_t lease_id, std::chrono::milliseconds timeout) {
  // A keepalive can be repeated: any endpoint may take it.
  auto answer =
      transport.Call("/v3/lease/keepalive", Json{{"ID", std::to_string(lease_id)}}, Failover::kAnyFailure, timeout);
  if (!answer) return tl::unexpected(answer.error());
  return ParseKeepAlive(*answer, answer->body, lease_id);
}

Result<void> RevokeLease(EtcdTransport& transport, int64_t lease_id) {
  auto answer = transport.Call("/v3/lease/revoke", Json{{"ID", std::to_string(lease_id)}}, Failover::kUnreachable);
  if (!answer) return tl::unexpected(answer.error());
  auto revision = HeaderRevision(*answer, answer->body);
  if (!revision) return tl::unexpected(revision.error());
  return {};
}

}  // namespace detail

Result<Lease> EtcdClient::LeaseGrant(int64_t ttl_seconds) {
  return Guarded<Lease>("lease grant", [&] { return detail::GrantLease(*impl_->transport, ttl_seconds); });
}

Result<int64_t> EtcdClient::LeaseKeepAliveOnce(int64_t lease_id) {
  return Guarded<int64_t>("lease keepalive", [&] {
    return detail::KeepLeaseAlive(*impl_->transport, lease_id, impl_->transport->options().request_timeout);
  });
}

Result<void> EtcdClient::LeaseRevoke(int64_t lease_id) {
  return Guarded<void>("lease revoke", [&] { return detail::RevokeLease(*impl_->transport, lease_id); });
}

}  // namespace cachet::cluster
