// The wire protocol between cachet clients and cachetd (docs/protocol.md).
//
// A request is one ZeroMQ frame holding one msgpack array:
//   [version, request id, op name, args...]
// A reply is one frame holding [request id, status, payload], where status
// is a cachet::ErrorCode number (0 = OK, 5 = NOT_FOUND for a miss) and the
// payload is the op's result, or an error message string.
//
// This header is shared by the client library and the daemon; decoding
// never throws and checks every type and count.
#pragma once

#include <msgpack.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "cachet/decision.h"
#include "cachet/result.h"

namespace cachet::wire {

inline constexpr uint32_t kProtocolVersion = 1;

enum class Op : uint8_t {
  kPing,
  kInfo,
  kGet,
  kSet,
  kDel,
  kExists,
  kExpire,
  kTtl,
  kIncr,
  kDecr,
  kMGet,
  kMSet,
  kScan,
  kFlush,
  kStats,
  kReload,
  kRateLimit,
  kCluster,
  kAsk,
  kSlotDump,
  kReplicate,
};
const char* OpName(Op op);
std::optional<Op> ParseOp(std::string_view name);

// SET's condition argument.
enum class SetCond : uint8_t { kAlways = 0, kIfAbsent = 1, kIfPresent = 2 };

// Bounds on what the decoder will build from untrusted bytes (docs/protocol.md,
// "Decoder limits"): more items in one array or map, or values nested deeper
// than kMaxDepth (the request array counts as 1), make a BAD_REQUEST.
inline constexpr size_t kMaxArrayItems = 1 << 20;
inline constexpr size_t kMaxMapItems = 1 << 12;
inline constexpr size_t kMaxDepth = 4;

// SCAN's count: index buckets per page, 1 to this.
inline constexpr uint64_t kMaxScanCount = 100000;

// A decoded request. `args` point into `handle`, which owns the memory.
struct Request {
  uint64_t id = 0;
  Op op = Op::kPing;
  const msgpack::object* args = nullptr;
  uint32_t arg_count = 0;
  msgpack::object_handle handle;
};

// On failure, `*id` holds the request id if it could be read (else 0), so
// the error can still be addressed to the request.
Result<Request> DecodeRequest(const char* data, size_t size, uint64_t* id);

// The id of a request, read from as much of its start as parses: the second
// item of a top-level array, if it is a non-negative integer. It is found in
// a frame that is truncated, has trailing bytes or breaks a decoder limit
// further on; nullopt when no id can be read.
std::optional<uint64_t> PeekRequestId(const char* data, size_t size);

struct Reply {
  uint64_t id = 0;
  ErrorCode status = ErrorCode::kOk;
  const msgpack::object* payload = nullptr;
  msgpack::object_handle handle;
};
Result<Reply> DecodeReply(const char* data, size_t size);

// Typed argument access: a clear WRONG_TYPE error naming the argument.
// One msgpack value filling the whole frame, decoded with limits: an array
// or map header that claims more items than the frame could hold, too deep
// a nesting, extension types and trailing bytes are refused (kBadRequest).
Result<msgpack::object_handle> Unpack(const char* data, size_t size);

Result<std::string_view> BytesArg(const msgpack::object& o, const char* what);  // str or bin
Result<int64_t> IntArg(const msgpack::object& o, const char* what);
Result<uint64_t> UintArg(const msgpack::object& o, const char* what);

// The rules on arguments, one per kind, shared by the daemon (which answers
// with the error) and the client (which refuses before sending), so every op
// refuses the same input with the same code (docs/protocol.md, "Limits").
//
// KEY_TOO_LARGE: a key is 1 to `max_key_size` bytes, for every op that takes
// one. `index`, for ops that take several, numbers it in the message ("key 3").
inline constexpr size_t kNoIndex = SIZE_MAX;
inline bool KeyFits(std::string_view key, uint32_t max_key_size) { return !key.empty() && key.size() <= max_key_size; }
Result<void> CheckKey(std::string_view key, uint32_t max_key_size, size_t index = kNoIndex);
// VALUE_TOO_LARGE: a value is at most `max_value_size` bytes.
Result<void> CheckValue(std::string_view value, uint32_t max_value_size, size_t index = kNoIndex);
// INVALID_ARGUMENT: no TTL is over Cache::kMaxTtl (about 100 years). SET and
// INCR take 0 for "no expiry" and refuse a negative one; EXPIRE takes
// ttl <= 0 as "expire now".
enum class TtlUse : uint8_t { kOnWrite, kExpire };
Result<std::chrono::milliseconds> CheckTtl(int64_t ttl_ms, TtlUse use);

// Typed access and the rule in one call, for the daemon.
Result<std::string_view> KeyArg(const msgpack::object& o, uint32_t max_key_size, size_t index = kNoIndex);
Result<std::string_view> ValueArg(const msgpack::object& o, uint32_t max_value_size, size_t index = kNoIndex);
Result<std::chrono::milliseconds> TtlArg(const msgpack::object& o, TtlUse use);

class Writer;

// The payload of a MOVED or ASK reply: where the key's slot is served, and
// the map epoch the node answered by.
struct Redirect {
  std::string message;
  uint64_t epoch = 0;
  uint32_t slot = 0;
  std::string endpoint;
};
void WriteRedirect(Writer& out, uint64_t id, ErrorCode status, const Redirect& redirect);
// Nullopt unless `payload` is a well-formed redirect map.
std::optional<Redirect> ReadRedirect(const msgpack::object& payload);
// The error a non-OK reply stands for: its code and message (for MOVED and
// ASK, the redirect's message).
Error ReplyError(ErrorCode status, const msgpack::object& payload);

// A reply's payload when its status is OK; else the daemon's error (or the
// call's own). The pointer is into `reply`, so a temporary reply is refused
// at compile time: keep the reply in a variable.
Result<const msgpack::object*> Payload(const Result<Reply>& reply);
Result<const msgpack::object*> Payload(Result<Reply>&& reply) = delete;
// The payload as a bool, an integer or nothing; a payload of another type
// is a protocol error naming `op`.
Result<bool> BoolPayload(const Result<Reply>& reply, const char* op);
Result<int64_t> IntPayload(const Result<Reply>& reply, const char* op);
Result<void> VoidPayload(const Result<Reply>& reply);
Error UnexpectedPayload(const char* op);

// RATELIMIT's payload: [allowed, limit, remaining, reset_ms, retry_after_ms,
// window_ms, rule, shadow_denied].
void WriteDecision(Writer& out, const cachet::Decision& d);
Result<cachet::Decision> ReadDecision(const msgpack::object& o);

// Builds one message in a buffer the caller sends.
class Writer {
 public:
  Writer() : packer_(&buffer_) {}
  void Clear() {
    buffer_.clear();
    status_ = ErrorCode::kOk;
  }
  // A request header; `args` is the number of argument values that follow.
  void BeginRequest(uint64_t id, Op op, uint32_t args);
  // A reply header; exactly one payload value must follow.
  void BeginReply(uint64_t id, ErrorCode status);
  void ErrorReply(uint64_t id, const Error& error);

  void Bytes(std::string_view b) {
    packer_.pack_bin(static_cast<uint32_t>(b.size())).pack_bin_body(b.data(), static_cast<uint32_t>(b.size()));
  }
  void Str(std::string_view s) {
    packer_.pack_str(static_cast<uint32_t>(s.size())).pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
  }
  void Int(int64_t v) { packer_.pack_int64(v); }
  void Uint(uint64_t v) { packer_.pack_uint64(v); }
  void Bool(bool v) { v ? packer_.pack_true() : packer_.pack_false(); }
  void Nil() { packer_.pack_nil(); }
  void Array(uint32_t n) { packer_.pack_array(n); }
  void Map(uint32_t n) { packer_.pack_map(n); }

  const char* data() const { return buffer_.data(); }
  size_t size() const { return buffer_.size(); }
  // The status of the last reply header written since Clear (the daemon's
  // metrics count replies by it).
  ErrorCode status() const { return status_; }

 private:
  msgpack::sbuffer buffer_;
  ErrorCode status_ = ErrorCode::kOk;
  msgpack::packer<msgpack::sbuffer> packer_;
};

}  // namespace cachet::wire
