#include "protocol.h"

#include <array>
#include <cstring>

namespace cachet::wire {

namespace {

constexpr std::array<const char*, 17> kOpNames = {"PING",   "INFO",  "GET",   "SET",    "DEL",      "EXISTS",
                                                  "EXPIRE", "TTL",   "INCR",  "DECR",   "MGET",     "MSET",
                                                  "SCAN",   "FLUSH", "STATS", "RELOAD", "RATELIMIT"};

msgpack::unpack_limit Limits() {
  // array, map, str, bin, ext, depth: a request is at most two levels deep.
  return msgpack::unpack_limit(kMaxArrayItems, kMaxMapItems, 0xffffffff, 0xffffffff, 0, 4);
}

Result<msgpack::object_handle> Unpack(const char* data, size_t size) {
  try {
    msgpack::object_handle handle;
    std::size_t offset = 0;
    msgpack::unpack(handle, data, size, offset, nullptr, nullptr, Limits());
    if (offset != size) {
      return MakeError(ErrorCode::kBadRequest,
                       "frame has " + std::to_string(size - offset) + " bytes after the msgpack value");
    }
    return handle;
  } catch (const std::exception& e) {
    return MakeError(ErrorCode::kBadRequest, std::string("frame is not valid msgpack: ") + e.what());
  }
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

}  // namespace

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

Result<Request> DecodeRequest(const char* data, size_t size, uint64_t* id) {
  *id = 0;
  auto handle = Unpack(data, size);
  if (!handle) return tl::unexpected(handle.error());
  const msgpack::object& root = handle->get();
  if (root.type != msgpack::type::ARRAY || root.via.array.size < 3) {
    return MakeError(ErrorCode::kBadRequest, "a request is an array [version, id, op, args...]");
  }
  const msgpack::object* items = root.via.array.ptr;
  auto version = UintArg(items[0], "protocol version");
  if (!version) return MakeError(ErrorCode::kBadRequest, version.error().message);
  auto request_id = UintArg(items[1], "request id");
  if (!request_id) return MakeError(ErrorCode::kBadRequest, request_id.error().message);
  *id = *request_id;
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
  packer_.pack_array(3);
  packer_.pack_uint64(id);
  packer_.pack_uint16(static_cast<uint16_t>(status));
}

void Writer::ErrorReply(uint64_t id, const Error& error) {
  BeginReply(id, error.code);
  Str(error.message);
}

}  // namespace cachet::wire
