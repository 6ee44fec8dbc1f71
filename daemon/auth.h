// Who may talk to cachetd: the authorized-keys file, and the ZAP handler
// (ZeroMQ's authentication protocol, RFC 27) that admits connections.
//
// The file lists one client per line:
//   PUBLIC-KEY  NAME  [ACCESS]  [PREFIXES]
// ACCESS is read (GET, MGET, EXISTS, TTL, SCAN, STATS, PING), write (read,
// and SET, DEL, INCR, EXPIRE, MSET, RATELIMIT; the default) or admin
// (everything, FLUSH and RELOAD included). PREFIXES is a comma-separated
// list of key prefixes the client may touch, or * (the default) for all.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "cachet/result.h"
#include "protocol.h"
#include "zap_handler.h"

namespace spdlog {
class logger;
}

namespace cachet::daemon {

enum class Access : uint8_t { kRead = 1, kWrite = 2, kAdmin = 3 };

struct AuthorizedKey {
  std::string public_key;  // Z85
  std::string name;        // in logs and errors; the connection's User-Id is public_key
  Access access = Access::kWrite;
  std::vector<std::string> prefixes;  // empty: every key

  bool MayTouch(std::string_view key) const;
};

// What an op needs: read, write or admin.
Access Required(wire::Op op);

// Whether `client` may run `request`: its access covers the op, and every
// key the request names (for SCAN, its pattern) is inside its prefixes.
// Arguments of the wrong type are left to the handler to refuse.
Result<void> Permit(const AuthorizedKey& client, const wire::Request& request);

Result<std::vector<AuthorizedKey>> ParseAuthorizedKeys(std::string_view text, const std::string& source);
Result<std::vector<AuthorizedKey>> LoadAuthorizedKeys(const std::string& path);

// Decides the ZAP requests of every socket of one ZeroMQ context (the
// protocol is zap::ZapHandler's). Owned and driven by the server loop: its
// socket is polled there and Answer() called when it is readable, so the
// admitted keys change only between requests. The socket must be bound
// (Start) before any socket of the context binds, as ZeroMQ admits everyone
// while no handler is bound.
class Authenticator {
 public:
  Authenticator(zmq::context_t& context, std::shared_ptr<spdlog::logger> log);
  ~Authenticator();

  Result<void> Start();
  // Admits these keys from the next handshake on. `own` is the daemon's own
  // public key, admitted as admin: the nodes of a cluster share one key pair.
  void SetKeys(std::vector<AuthorizedKey> keys, const std::string& own);
  // Connections beyond `max` (counted by the caller) are refused.
  void SetConnectionLimit(uint64_t max) { max_connections_ = max; }
  // Answers every pending request; `connections` is how many are open now.
  void Answer(int64_t connections);
  // Counts a refused connection and logs `text`, at most kLogBurst lines a
  // second (the rest summed up in a later line).
  void Refuse(const std::string& text);
  // Logs what refusals the once-a-second burst limit held back.
  void Tick() { log_refusals_.Tick(); }
  // The client behind a CURVE connection, by its ZeroMQ User-Id (the
  // client's public key, as Answer sets it); null for
  // connections without CURVE (ipc), which are trusted by file mode.
  const AuthorizedKey* Find(std::string_view user_id) const;

  zmq::socket_t& socket() { return zap_.socket(); }
  uint64_t refused() const { return refused_; }
  size_t key_count() const { return by_key_.size(); }

 private:
  zap::Verdict Decide(const zap::Request& request, int64_t connections) const;

  zap::ZapHandler zap_;
  zap::RefusalLog log_refusals_;
  std::map<std::string, AuthorizedKey, std::less<>> by_key_;  // Z85 public key -> client
  uint64_t max_connections_ = UINT64_MAX;
  uint64_t refused_ = 0;
};

}  // namespace cachet::daemon
