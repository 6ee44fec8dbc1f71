// Fuzz target: the wire codec's decoders (libclient/src/protocol.h), as the
// daemon meets a request frame and a client meets a reply frame. Every
// decoder and typed accessor must refuse bad bytes with an error value:
// never crash, read out of bounds, overflow or allocate without bound.
#include <cstddef>
#include <cstdint>

#include "protocol.h"

namespace {

using namespace cachet;

// Every typed read of one decoded value, as the ops do.
void ReadArg(const msgpack::object& o) {
  (void)wire::BytesArg(o, "arg");
  (void)wire::IntArg(o, "arg");
  (void)wire::UintArg(o, "arg");
  (void)wire::KeyArg(o, 250, 3);
  (void)wire::ValueArg(o, 1024);
  (void)wire::TtlArg(o, wire::TtlUse::kOnWrite);
  (void)wire::TtlArg(o, wire::TtlUse::kExpire);
}

void FuzzRequest(const char* data, size_t size) {
  uint64_t id = 0;
  auto request = wire::DecodeRequest(data, size, &id);
  (void)wire::PeekRequestId(data, size);
  if (!request) return;
  (void)wire::OpName(request->op);
  for (uint32_t i = 0; i < request->arg_count; ++i) ReadArg(request->args[i]);
}

void FuzzReply(const char* data, size_t size) {
  auto reply = wire::DecodeReply(data, size);
  if (!reply) return;
  const msgpack::object& payload = *reply->payload;
  (void)wire::ReplyError(reply->status, payload);
  (void)wire::ReadRedirect(payload);
  (void)wire::ReadDecision(payload);
  (void)wire::Payload(reply);
  (void)wire::BoolPayload(reply, "fuzz");
  (void)wire::IntPayload(reply, "fuzz");
  (void)wire::VoidPayload(reply);
  ReadArg(payload);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* bytes = reinterpret_cast<const char*>(data);
  FuzzRequest(bytes, size);
  FuzzReply(bytes, size);
  // The frame's bytes with nothing past them: no decoder may read on.
  (void)wire::Unpack(bytes, size);
  return 0;
}
