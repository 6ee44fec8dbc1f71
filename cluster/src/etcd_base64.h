// Base64 (RFC 4648, standard alphabet, with padding) for the etcd gateway,
// which carries every key and value as base64 in its JSON.
//
// Decoding is strict: only the standard alphabet, a length that is a multiple
// of four, padding only at the end, and no stray bits in the last group, so
// that a malformed answer from etcd (or from whatever answers in its place)
// is an error instead of a silently different key.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace cachet::cluster::detail {

std::string Base64Encode(std::string_view bytes);

// The decoded bytes, or nullopt if `text` is not canonical base64.
std::optional<std::string> Base64Decode(std::string_view text);

}  // namespace cachet::cluster::detail
