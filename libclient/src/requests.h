// What Client (one daemon) and ClusterClient (the node owning a key) both
// send and read: the arguments of the requests with more than a key, each
// with its op and count so the two cannot drift apart, and the readers of
// the replies they share. docs/protocol.md gives each op's arguments.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "cachet/cache.h"
#include "protocol.h"

namespace cachet::wire {

inline bool IsBytes(const msgpack::object& o) { return o.type == msgpack::type::BIN || o.type == msgpack::type::STR; }

// For a value IsBytes has accepted.
inline std::string ToString(const msgpack::object& o) {
  return o.type == msgpack::type::BIN ? std::string(o.via.bin.ptr, o.via.bin.size)
                                      : std::string(o.via.str.ptr, o.via.str.size);
}

// SET key value ttl_ms condition
struct SetArgs {
  static constexpr Op kOp = Op::kSet;
  static constexpr uint32_t kCount = 4;
  std::string_view key;
  std::string_view value;
  SetOptions options;
  void operator()(Writer& w) const {
    w.Bytes(key);
    w.Bytes(value);
    w.Int(options.ttl.count());
    w.Uint(static_cast<uint64_t>(options.condition == SetCondition::kIfAbsent    ? SetCond::kIfAbsent
                                 : options.condition == SetCondition::kIfPresent ? SetCond::kIfPresent
                                                                                 : SetCond::kAlways));
  }
};

// EXPIRE key ttl_ms
struct ExpireArgs {
  static constexpr Op kOp = Op::kExpire;
  static constexpr uint32_t kCount = 2;
  std::string_view key;
  std::chrono::milliseconds ttl;
  void operator()(Writer& w) const {
    w.Bytes(key);
    w.Int(ttl.count());
  }
};

// INCR key delta ttl_on_create_ms
struct IncrArgs {
  static constexpr Op kOp = Op::kIncr;
  static constexpr uint32_t kCount = 3;
  std::string_view key;
  int64_t delta;
  std::chrono::milliseconds ttl_on_create;
  void operator()(Writer& w) const {
    w.Bytes(key);
    w.Int(delta);
    w.Int(ttl_on_create.count());
  }
};

// DECR key delta
struct DecrArgs {
  static constexpr Op kOp = Op::kDecr;
  static constexpr uint32_t kCount = 2;
  std::string_view key;
  int64_t delta;
  void operator()(Writer& w) const {
    w.Bytes(key);
    w.Int(delta);
  }
};

// RATELIMIT key tier cost
struct RateLimitArgs {
  static constexpr Op kOp = Op::kRateLimit;
  static constexpr uint32_t kCount = 3;
  std::string_view key;
  std::string_view tier;
  uint64_t cost;
  void operator()(Writer& w) const {
    w.Bytes(key);
    w.Str(tier);
    w.Uint(cost);
  }
};

// GET's reply: true and `*value` set on a hit, false on a miss.
inline Result<bool> ValuePayload(const Result<Reply>& reply, std::string* value) {
  if (reply && reply->status == ErrorCode::kNotFound) return false;
  auto p = Payload(reply);
  if (!p) return tl::unexpected(p.error());
  auto bytes = BytesArg(**p, "GET's value");
  if (!bytes) return tl::unexpected(UnexpectedPayload("GET"));
  value->assign(bytes->data(), bytes->size());
  return true;
}

// TTL's reply: nullopt for a missing key, Cache::kNoExpiry for a key that
// never expires.
inline Result<std::optional<std::chrono::milliseconds>> TtlPayload(const Result<Reply>& reply) {
  using Ms = std::chrono::milliseconds;
  if (reply && reply->status == ErrorCode::kNotFound) return std::optional<Ms>();
  auto ms = IntPayload(reply, "TTL");
  if (!ms) return tl::unexpected(ms.error());
  return std::optional<Ms>(*ms < 0 ? Cache::kNoExpiry : Ms(*ms));
}

// RATELIMIT's reply.
inline Result<Decision> DecisionPayload(const Result<Reply>& reply) {
  auto p = Payload(reply);  // points into `reply`
  if (!p) return tl::unexpected(p.error());
  return ReadDecision(**p);
}

}  // namespace cachet::wire
