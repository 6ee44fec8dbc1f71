// CURVE keys (ZeroMQ's CurveZMQ: encryption and authentication of tcp
// links), the files that hold them, and which endpoints need them. Here, beside the other types every
// cachet library shares, because the daemon, its client (libcachet) and the
// limiter's peer sync (libcachet_limiter) all read them.
//
// A key is 32 bytes written as 40 characters of Z85 text. Key files are
// what `cachectl keygen NAME` writes:
//   NAME.key  mode 0600   public-key = <Z85>
//                         secret-key = <Z85>
//   NAME.pub              public-key = <Z85>
// Lines starting with '#' are comments. A file holding only a bare key is
// read as a public key.
#pragma once

#include <string>
#include <string_view>

#include "cachet/result.h"

namespace cachet {

struct CurveKeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters; empty when read from a .pub file
};

// True for 40 characters of the Z85 alphabet.
bool IsCurveKey(std::string_view text);

// Reads a key file. With `need_secret`, the file must hold the secret key
// and be readable by its owner only (an error names the mode and the fix).
Result<CurveKeyPair> ReadCurveKeyFile(const std::string& path, bool need_secret);

// Writes `base`.key (mode 0600, both keys) and `base`.pub; refuses to
// replace existing files unless `overwrite`.
Result<void> WriteCurveKeyFiles(const std::string& base, const CurveKeyPair& keys, bool overwrite);

// What one side of a link needs to speak CURVE as a client: the server's
// public key and its own pair. All empty: plaintext.
struct CurveClientKeys {
  std::string server_public_key;
  std::string public_key;
  std::string secret_key;

  bool enabled() const { return !server_public_key.empty(); }
  // Reads the server's public key file and this side's key file; both or
  // neither must be given.
  static Result<CurveClientKeys> Load(const std::string& server_key_file, const std::string& key_file);
};

// True for ipc and inproc endpoints and tcp ones on a loopback address
// (127.0.0.0/8, ::1, localhost, lo): reachable from this host only. The
// secure default of cachetd and of the gossip limiter: an endpoint this
// says false for is served with CURVE, or in clear text only when the
// operator says `insecure`.
bool IsLoopbackEndpoint(const std::string& endpoint);

}  // namespace cachet
