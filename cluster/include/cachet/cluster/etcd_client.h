// EtcdClient: the cluster's way into etcd (3.4), through etcd's v3 JSON
// gateway: one HTTP/1.1 POST per call to /v3/kv/..., /v3/lease/...
// (docs/design.md, "Cluster control plane"). EtcdWatch (etcd_watch.h) and
// LeaseKeeper (etcd_lease_keeper.h) are built on the same options.
//
// Keys and values are arbitrary bytes. Every call returns a Result and
// nothing throws. A call goes to the endpoint that answered last and moves
// on to the next one when an endpoint cannot be reached; reads (and lease
// keepalives) also move on after a timeout or an etcd without a leader.
// Writes do not: an endpoint that took a write and did not answer may have
// applied it. Errors name the endpoints tried and what etcd or the network
// said:
//   kUnavailable      no endpoint could answer (each one's reason is given)
//   kTimeout          a write was sent and not answered in time: it may or
//                     may not have been applied; re-read to find out
//   kProtocol         the answer was not what the gateway sends (bad JSON,
//                     bad base64, a field of the wrong type)
//   kInvalidArgument  etcd refused the request as invalid
//   kNotFound         etcd has no such lease
//   kInternal         any other refusal by etcd (its message is kept)
// request_timeout bounds the connect and each wait for the answer, per
// endpoint tried.
//
// Thread-safe: calls from several threads are serialized per endpoint.
// Movable, not copyable.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cachet/result.h"

namespace cachet::cluster {

struct EtcdOptions {
  // Comma-separated client URLs: "http://127.0.0.1:2379,http://10.0.0.2:2379".
  // Only http:// (the scheme may be left out); no path.
  std::string endpoints;
  // Bounds the connect and each wait for an answer, per endpoint tried.
  std::chrono::milliseconds request_timeout{1000};

  Result<void> Validate() const;
};

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;  // number of puts since the key was (re)created
  int64_t lease = 0;    // 0: bound to no lease
};

struct RangeResult {
  std::vector<KeyValue> kvs;  // in key order
  int64_t revision = 0;       // the store's revision the range was read at
};

struct DeleteResult {
  int64_t deleted = 0;
  int64_t revision = 0;
};

// One condition of a transaction, on one key. A key that does not exist has
// value "", version 0, create_revision 0 and mod_revision 0: the election's
// "nobody holds it" is CreateRevision(key, kEqual, 0).
struct Compare {
  enum class Target { kValue, kVersion, kCreateRevision, kModRevision };
  enum class Op { kEqual, kNotEqual, kGreater, kLess };

  static Compare Value(std::string key, Op op, std::string value);
  static Compare Version(std::string key, Op op, int64_t version);
  static Compare CreateRevision(std::string key, Op op, int64_t revision);
  static Compare ModRevision(std::string key, Op op, int64_t revision);

  std::string key;
  Target target = Target::kValue;
  Op op = Op::kEqual;
  std::string value;   // kValue
  int64_t number = 0;  // the other targets
};

// One operation of a transaction branch.
struct TxnOp {
  enum class Type { kPut, kDelete, kRange };

  static TxnOp Put(std::string key, std::string value, int64_t lease = 0);
  static TxnOp Delete(std::string key);
  static TxnOp DeletePrefix(std::string prefix);
  static TxnOp Get(std::string key);
  static TxnOp Range(std::string prefix);

  Type type = Type::kPut;
  std::string key;
  bool prefix = false;  // kDelete, kRange: every key starting with `key`
  std::string value;    // kPut
  int64_t lease = 0;    // kPut
};

struct TxnResult {
  bool succeeded = false;  // the compares held and the success branch ran
  int64_t revision = 0;    // the store's revision after the transaction
  // One result per kRange op of the branch that ran, in the branch's order.
  std::vector<RangeResult> ranges;
};

struct Lease {
  int64_t id = 0;
  int64_t ttl_seconds = 0;  // as granted by etcd (it may raise a short TTL)
};

class EtcdClient {
 public:
  // Checks the options; connects only when a call is made.
  static Result<EtcdClient> Create(const EtcdOptions& options);

  EtcdClient(EtcdClient&&) noexcept;
  EtcdClient& operator=(EtcdClient&&) noexcept;
  ~EtcdClient();

  // Returns the store's revision after the put.
  [[nodiscard]] Result<int64_t> Put(const std::string& key, const std::string& value, int64_t lease = 0);
  [[nodiscard]] Result<std::optional<KeyValue>> Get(const std::string& key);
  // Every key starting with `prefix` ("" is every key).
  [[nodiscard]] Result<RangeResult> Range(const std::string& prefix);
  [[nodiscard]] Result<DeleteResult> Delete(const std::string& key);
  [[nodiscard]] Result<DeleteResult> DeletePrefix(const std::string& prefix);
  // All of `compares` hold: runs `success`, else `failure`; atomically.
  [[nodiscard]] Result<TxnResult> Txn(const std::vector<Compare>& compares, const std::vector<TxnOp>& success,
                                      const std::vector<TxnOp>& failure);

  [[nodiscard]] Result<Lease> LeaseGrant(int64_t ttl_seconds);
  // Renews the lease once. Returns its TTL from now, 0 if the lease no
  // longer exists (expired or revoked).
  [[nodiscard]] Result<int64_t> LeaseKeepAliveOnce(int64_t lease_id);
  // Ends the lease at once and deletes every key bound to it.
  [[nodiscard]] Result<void> LeaseRevoke(int64_t lease_id);

  const EtcdOptions& options() const;

 private:
  struct Impl;
  explicit EtcdClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachet::cluster
