#include "protocol.h"

#include <array>
#include <cstring>

#include "cachet/cache.h"

namespace cachet::wire {

namespace {

constexpr std::array<const char*, 21> kOpNames = {
    "PING", "INFO", "GET",   "SET",   "DEL",    "EXISTS",    "EXPIRE",  "TTL", "INCR",     "DECR",     "MGET",
    "MSET", "SCAN", "FLUSH", "STATS", "RELOAD", "RATELIMIT", "CLUSTER", "ASK", "SLOTDUMP", "REPLICATE"};

// array, map, str, bin, ext, depth. The decoder allocates an array's or a
// map's items when it reads the header, before their bytes: as every item
// takes at least one byte, a header claiming more than the frame holds is
// refused before it can make a small frame allocate much. Extension types
// (ext size 0) are refused.
msgpack::unpack_limit Limits(size_t frame_size) {
  return msgpack::unpack_limit(std::min(kMaxArrayItems, frame_size), std::min(kMaxMapItems, frame_size / 2), 0xffffffff,
                               0xffffffff, 0, kMaxDepth);
}

const char* TypeName(const msgpack::object& o) {
  switch (o.type) {
    case msgpack::type::NIL: return "nil";
    case msgpack::type::BOOLEAN: return "boolean";
    case msgpack::type::POSITIVE_INTEGER:
    case msgpack::type::NEGATIVE_INTEGER: return "integer";
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: return "float";
    case msgpack::type::STR: return "string";
    case msgpack::type::BIN: return "binary";
    case msgpack::type::ARRAY: return "array";
    case msgpack::type::MAP: return "map";
    default: return "extension";
  }
}

Error WrongType(const msgpack::object& o, const char* what, const char* expected) {
  return Error{ErrorCode::kWrongType, std::string(what) + " must be " + expected + ", got " + TypeName(o)};
}

// Follows the parse of a request's first bytes up to its id: the second item
// of the top-level array. It stops the parse as soon as the id is read, or
// known to be unreadable, and never descends into nested values, so it costs
// the same whatever follows.
struct IdReader : msgpack::null_visitor {
  int depth = 0;      // containers open
  uint32_t item = 0;  // 1-based index of the current top-level item
  std::optional<uint64_t> id;

  bool Scalar() { return depth == 1 && item == 1; }  // the version: any scalar, keep going
  bool visit_nil() { return Scalar(); }
  bool visit_boolean(bool) { return Scalar(); }
  bool visit_positive_integer(uint64_t v) {
    if (depth == 1 && item == 2) id = v;
    return Scalar();
  }
  bool visit_negative_integer(int64_t) { return Scalar(); }
  bool visit_float32(float) { return Scalar(); }
  bool visit_float64(double) { return Scalar(); }
  bool visit_str(const char*, uint32_t) { return Scalar(); }
  bool visit_bin(const char*, uint32_t) { return Scalar(); }
  bool visit_ext(const char*, uint32_t) { return Scalar(); }
  bool start_array(uint32_t n) { return depth++ == 0 && n >= 2; }  // the request array only
  bool start_array_item() {
    ++item;
    return true;
  }
  bool start_map(uint32_t) { return false; }
};

// "key", or "key 3" for one of several.
std::string Named(const char* what, size_t index) {
  return index == kNoIndex ? std::string(what) : std::string(what) + " " + std::to_string(index);
}

}  // namespace

Result<msgpack::object_handle> Unpack(const char* data, size_t size) {
  try {
    msgpack::object_handle handle;
    std::size_t offset = 0;
    msgpack::unpack(handle, data, size, offset, nullptr, nullptr, Limits(size));
    if (offset != size) {
      return MakeError(ErrorCode::kBadRequest,
                       "frame has " + std::to_string(size - offset) + " bytes after the msgpack value");
    }
    return handle;
  } catch (const std::exception& e) {
    return MakeError(ErrorCode::kBadRequest, std::string("frame is not valid msgpack: ") + e.what());
  }
}

const char* OpName(Op op) { return kOpNames[static_cast<size_t>(op)]; }

std::optional<Op> ParseOp(std::string_view name) {
  for (size_t i = 0; i < kOpNames.size(); ++i) {
    if (name == kOpNames[i]) return static_cast<Op>(i);
  }
  return std::nullopt;
}

Result<std::string_view> BytesArg(const msgpack::object& o, const char* what) {
  if (o.type == msgpack::type::BIN) return std::string_view(o.via.bin.ptr, o.via.bin.size);
  if (o.type == msgpack::type::STR) return std::string_view(o.via.str.ptr, o.via.str.size);
  return tl::unexpected(WrongType(o, what, "a string or binary"));
}

Result<int64_t> IntArg(const msgpack::object& o, const char* what) {
  if (o.type == msgpack::type::NEGATIVE_INTEGER) return o.via.i64;
  if (o.type == msgpack::type::POSITIVE_INTEGER) {
    if (o.via.u64 > static_cast<uint64_t>(INT64_MAX)) {
      return MakeError(ErrorCode::kWrongType, std::string(what) + " is out of the 64-bit signed range");
    }
    return static_cast<int64_t>(o.via.u64);
  }
  return tl::unexpected(WrongType(o, what, "an integer"));
}

Result<uint64_t> UintArg(const msgpack::object& o, const char* what) {
  if (o.type == msgpack::type::POSITIVE_INTEGER) return o.via.u64;
  return tl::unexpected(WrongType(o, what, "a non-negative integer"));
}

std::optional<uint64_t> PeekRequestId(const char* data, size_t size) {
  IdReader reader;
  std::size_t offset = 0;
  (void)msgpack::parse(data, size, offset, reader);  // stopped, short or whole: the id was read or not
  return reader.id;
}

Result<Request> DecodeRequest(const char* data, size_t size, uint64_t* id) {
  // Read first, so that every error below is addressed to the request.
  *id = PeekRequestId(data, size).value_or(0);
  auto handle = Unpack(data, size);
  if (!handle) return tl::unexpected(handle.error());
  const msgpack::object& root = handle->get();
  if (root.type != msgpack::type::ARRAY || root.via.array.size < 3) {
    return MakeError(ErrorCode::kBadRequest, "a request is an array [version, id, op, args...]");
  }
  const msgpack::object* items = root.via.array.ptr;
  auto request_id = UintArg(items[1], "request id");
  if (!request_id) return MakeError(ErrorCode::kBadRequest, request_id.error().message);
  auto version = UintArg(items[0], "protocol version");
  if (!version) return MakeError(ErrorCode::kBadRequest, version.error().message);
  if (*version != kProtocolVersion) {
    return MakeError(ErrorCode::kUnsupportedVersion, "protocol version " + std::to_string(*version) +
                                                         " is not supported; this daemon speaks " +
                                                         std::to_string(kProtocolVersion));
  }
  auto op_name = BytesArg(items[2], "op");
  if (!op_name) return MakeError(ErrorCode::kBadRequest, op_name.error().message);
  const std::optional<Op> op = ParseOp(*op_name);
  if (!op) {
    const std::string shown(op_name->substr(0, 32));
    return MakeError(ErrorCode::kUnknownOp, "unknown op '" + shown + "'");
  }
  Request r;
  r.id = *request_id;
  r.op = *op;
  r.args = items + 3;
  r.arg_count = root.via.array.size - 3;
  r.handle = std::move(*handle);
  return r;
}

Result<void> CheckKey(std::string_view key, uint32_t max_key_size, size_t index) {
  if (KeyFits(key, max_key_size)) return {};
  return MakeError(ErrorCode::kKeyTooLarge, Named("key", index) + " is " + std::to_string(key.size()) +
                                                " bytes; keys must be 1 to " + std::to_string(max_key_size) +
                                                " bytes (max_key_size)");
}

Result<void> CheckValue(std::string_view value, uint32_t max_value_size, size_t index) {
  if (value.size() <= max_value_size) return {};
  return MakeError(ErrorCode::kValueTooLarge, Named("value", index) + " is " + std::to_string(value.size()) +
                                                  " bytes; values must be at most " + std::to_string(max_value_size) +
                                                  " bytes (max_value_size)");
}

Result<std::chrono::milliseconds> CheckTtl(int64_t ttl_ms, TtlUse use) {
  const int64_t min = use == TtlUse::kExpire ? INT64_MIN : 0;
  if (ttl_ms >= min && ttl_ms <= Cache::kMaxTtl.count()) return std::chrono::milliseconds(ttl_ms);
  return MakeError(ErrorCode::kInvalidArgument, "ttl_ms is " + std::to_string(ttl_ms) + "; it must be " +
                                                    (use == TtlUse::kExpire ? "at most " : "0 (no expiry) to ") +
                                                    std::to_string(Cache::kMaxTtl.count()) + " (about 100 years)");
}

Result<std::string_view> KeyArg(const msgpack::object& o, uint32_t max_key_size, size_t index) {
  auto key = BytesArg(o, "key");
  if (!key) return key;
  if (auto ok = CheckKey(*key, max_key_size, index); !ok) return tl::unexpected(ok.error());
  return key;
}

Result<std::string_view> ValueArg(const msgpack::object& o, uint32_t max_value_size, size_t index) {
  auto value = BytesArg(o, "value");
  if (!value) return value;
  if (auto ok = CheckValue(*value, max_value_size, index); !ok) return tl::unexpected(ok.error());
  return value;
}

Result<std::chrono::milliseconds> TtlArg(const msgpack::object& o, TtlUse use) {
  auto ttl = IntArg(o, "ttl_ms");
  if (!ttl) return tl::unexpected(ttl.error());
  return CheckTtl(*ttl, use);
}

Result<Reply> DecodeReply(const char* data, size_t size) {
  auto handle = Unpack(data, size);
  if (!handle) return MakeError(ErrorCode::kProtocol, handle.error().message);
  const msgpack::object& root = handle->get();
  if (root.type != msgpack::type::ARRAY || root.via.array.size != 3 ||
      root.via.array.ptr[0].type != msgpack::type::POSITIVE_INTEGER ||
      root.via.array.ptr[1].type != msgpack::type::POSITIVE_INTEGER || root.via.array.ptr[1].via.u64 > 0xffff) {
    return MakeError(ErrorCode::kProtocol, "a reply is an array [id, status, payload]");
  }
  Reply r;
  r.id = root.via.array.ptr[0].via.u64;
  r.status = static_cast<ErrorCode>(root.via.array.ptr[1].via.u64);
  r.payload = &root.via.array.ptr[2];
  r.handle = std::move(*handle);
  return r;
}

void WriteDecision(Writer& out, const cachet::Decision& d) {
  out.Array(8);
  out.Bool(d.allowed);
  out.Uint(d.limit);
  out.Uint(d.remaining);
  out.Int(d.reset.count());
  out.Int(d.retry_after.count());
  out.Int(d.window.count());
  out.Str(d.rule);
  out.Bool(d.shadow_denied);
}

Result<cachet::Decision> ReadDecision(const msgpack::object& o) {
  const auto bad = [] { return MakeError(ErrorCode::kProtocol, "RATELIMIT reply is not a decision"); };
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 8) return bad();
  const msgpack::object* f = o.via.array.ptr;
  auto limit = UintArg(f[1], "limit");
  auto remaining = UintArg(f[2], "remaining");
  auto reset = IntArg(f[3], "reset");
  auto retry = IntArg(f[4], "retry_after");
  auto window = IntArg(f[5], "window");
  auto rule = BytesArg(f[6], "rule");
  if (f[0].type != msgpack::type::BOOLEAN || f[7].type != msgpack::type::BOOLEAN || !limit || !remaining || !reset ||
      !retry || !window || !rule) {
    return bad();
  }
  cachet::Decision d;
  d.allowed = f[0].via.boolean;
  d.limit = *limit;
  d.remaining = *remaining;
  d.reset = std::chrono::milliseconds(*reset);
  d.retry_after = std::chrono::milliseconds(*retry);
  d.window = std::chrono::milliseconds(*window);
  d.rule = std::string(*rule);
  d.shadow_denied = f[7].via.boolean;
  return d;
}

void Writer::BeginRequest(uint64_t id, Op op, uint32_t args) {
  packer_.pack_array(3 + args);
  packer_.pack_uint32(kProtocolVersion);
  packer_.pack_uint64(id);
  Str(OpName(op));
}

void Writer::BeginReply(uint64_t id, ErrorCode status) {
  status_ = status;
  packer_.pack_array(3);
  packer_.pack_uint64(id);
  packer_.pack_uint16(static_cast<uint16_t>(status));
}

void WriteRedirect(Writer& out, uint64_t id, ErrorCode status, const Redirect& r) {
  out.BeginReply(id, status);
  out.Map(4);
  out.Str("message");
  out.Str(r.message);
  out.Str("epoch");
  out.Uint(r.epoch);
  out.Str("slot");
  out.Uint(r.slot);
  out.Str("endpoint");
  out.Str(r.endpoint);
}

std::optional<Redirect> ReadRedirect(const msgpack::object& payload) {
  if (payload.type != msgpack::type::MAP) return std::nullopt;
  Redirect r;
  int seen = 0;
  for (const msgpack::object_kv& kv : payload.via.map) {
    if (kv.key.type != msgpack::type::STR) continue;
    const std::string_view name(kv.key.via.str.ptr, kv.key.via.str.size);
    const msgpack::object& v = kv.val;
    if (name == "message" && v.type == msgpack::type::STR) {
      r.message.assign(v.via.str.ptr, v.via.str.size);
      seen |= 1;
    } else if (name == "epoch" && v.type == msgpack::type::POSITIVE_INTEGER) {
      r.epoch = v.via.u64;
      seen |= 2;
    } else if (name == "slot" && v.type == msgpack::type::POSITIVE_INTEGER && v.via.u64 <= UINT32_MAX) {
      r.slot = static_cast<uint32_t>(v.via.u64);
      seen |= 4;
    } else if (name == "endpoint" && v.type == msgpack::type::STR) {
      r.endpoint.assign(v.via.str.ptr, v.via.str.size);
      seen |= 8;
    }
  }
  if (seen != 15) return std::nullopt;
  return r;
}

Error ReplyError(ErrorCode status, const msgpack::object& payload) {
  if (payload.type == msgpack::type::STR) return Error{status, std::string(payload.via.str.ptr, payload.via.str.size)};
  if (std::optional<Redirect> r = ReadRedirect(payload)) return Error{status, r->message};
  return Error{status, std::string("daemon replied ") + ErrorCodeName(status)};
}

Result<const msgpack::object*> Payload(const Result<Reply>& reply) {
  if (!reply) return tl::unexpected(reply.error());
  if (reply->status != ErrorCode::kOk) return tl::unexpected(ReplyError(reply->status, *reply->payload));
  return reply->payload;
}

Error UnexpectedPayload(const char* op) {
  return Error{ErrorCode::kProtocol, std::string("unexpected reply payload for ") + op};
}

Result<bool> BoolPayload(const Result<Reply>& reply, const char* op) {
  auto p = Payload(reply);
  if (!p) return tl::unexpected(p.error());
  if ((*p)->type != msgpack::type::BOOLEAN) return tl::unexpected(UnexpectedPayload(op));
  return (*p)->via.boolean;
}

Result<int64_t> IntPayload(const Result<Reply>& reply, const char* op) {
  auto p = Payload(reply);
  if (!p) return tl::unexpected(p.error());
  auto v = IntArg(**p, op);
  if (!v) return tl::unexpected(UnexpectedPayload(op));
  return *v;
}

Result<void> VoidPayload(const Result<Reply>& reply) {
  auto p = Payload(reply);
  if (!p) return tl::unexpected(p.error());
  return {};
}

void Writer::ErrorReply(uint64_t id, const Error& error) {
  BeginReply(id, error.code);
  Str(error.message);
}

}  // namespace cachet::wire
