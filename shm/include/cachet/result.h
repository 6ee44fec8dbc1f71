// Result<T> and Error: how cachet reports failures without exceptions.
//
// Expected outcomes (a miss, a denied request) are plain values such as
// std::optional. Failures (bad arguments, oversized keys, a corrupt segment)
// are Result<T> holding an Error with a stable code and a human message.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include <tl/expected.hpp>

namespace cachet {

// Stable numbers: never renumber or reuse a value (they travel on the wire).
enum class ErrorCode : uint16_t {
  kOk = 0,
  kInvalidArgument = 1,  // a parameter is out of its documented range
  kKeyTooLarge = 2,      // key longer than the configured max_key_size
  kValueTooLarge = 3,    // value longer than the configured max_value_size
  kNoSpace = 4,          // the item can never fit in this cache
  kNotFound = 5,         // a named segment or key does not exist
  kAlreadyExists = 6,    // a named segment exists and exclusive create was asked
  kVersionMismatch = 7,  // segment made by another layout version
  kCorrupt = 8,          // segment header or contents failed validation
  kIo = 9,               // the operating system refused (shm_open, mmap, ...)
  kNotInteger = 10,      // INCR of a value that is not a decimal 64-bit integer
  kOverflow = 11,        // INCR would leave the 64-bit range
  kInternal = 12,        // a bug or an environment failure; the message says which
  // Wire and client errors (docs/protocol.md).
  kBadRequest = 13,          // not a msgpack array of [version, id, op, args...]
  kUnsupportedVersion = 14,  // protocol version this daemon does not speak
  kUnknownOp = 15,
  kWrongArity = 16,     // wrong number of arguments for the op
  kWrongType = 17,      // an argument of the wrong msgpack type
  kFrameTooLarge = 18,  // request frame over the daemon's max_frame_bytes
  kTimeout = 19,        // client: no reply within the timeout (after retries)
  kUnavailable = 20,    // client: the daemon cannot be reached
  kProtocol = 21,       // client: the reply was not a valid protocol reply
  // Cluster (docs/protocol.md, "Cluster").
  kMoved = 22,        // the key's slot is served by another node (the reply names it)
  kAsk = 23,          // the slot is being imported here and the key is not here yet: ask the old owner
  kClusterDown = 24,  // the node cannot serve the slot now (no map yet, control plane lost)
  // Security (docs/protocol.md, "Permissions").
  kPermissionDenied = 25,  // this client's key may not run the op, or not on this key
  // Abuse limits (docs/protocol.md, "Limits").
  kBusy = 26,  // the connection has max-in-flight replies it has not taken; the request was not run
};

const char* ErrorCodeName(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::kOk;
  std::string message;

  // "KEY_TOO_LARGE: key is 300 bytes, max_key_size is 250"
  std::string ToString() const;
};

template <typename T>
using Result = tl::expected<T, Error>;

inline tl::unexpected<Error> MakeError(ErrorCode code, std::string message) {
  return tl::unexpected<Error>(Error{code, std::move(message)});
}

}  // namespace cachet
