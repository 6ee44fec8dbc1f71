#include "auth.h"

#include <spdlog/spdlog.h>

#include <fstream>
#include <sstream>

#include "cachet/curve.h"

namespace cachet::daemon {

namespace {

constexpr const char* kOwnName = "cachet-node";
constexpr int kLogBurst = 10;

std::vector<std::string> Words(std::string_view line) {
  std::vector<std::string> words;
  std::istringstream in{std::string(line)};
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

std::vector<std::string> SplitCommas(const std::string& text) {
  std::vector<std::string> parts;
  std::istringstream in(text);
  for (std::string part; std::getline(in, part, ',');) parts.push_back(part);
  return parts;
}

Result<AuthorizedKey> ParseLine(const std::vector<std::string>& words, const std::string& where) {
  auto bad = [&](const std::string& why) { return MakeError(ErrorCode::kInvalidArgument, where + ": " + why); };
  if (words.size() < 2 || words.size() > 4) return bad("expected PUBLIC-KEY NAME [ACCESS] [PREFIXES]");
  AuthorizedKey key;
  if (!IsCurveKey(words[0])) return bad("'" + words[0] + "' is not a CURVE public key (40 characters of Z85)");
  key.public_key = words[0];
  key.name = words[1];
  for (char c : key.name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return bad("name '" + key.name + "' may hold only letters, digits, '-', '_' and '.'");
    }
  }
  if (words.size() >= 3) {
    const std::string& a = words[2];
    if (a == "read")
      key.access = Access::kRead;
    else if (a == "write")
      key.access = Access::kWrite;
    else if (a == "admin")
      key.access = Access::kAdmin;
    else
      return bad("access must be read, write or admin, got '" + a + "'");
  }
  if (words.size() == 4 && words[3] != "*") {
    for (const std::string& prefix : SplitCommas(words[3])) {
      if (prefix.empty()) return bad("an empty key prefix in '" + words[3] + "'");
      key.prefixes.push_back(prefix);
    }
  }
  return key;
}

const char* AccessName(Access a) {
  switch (a) {
    case Access::kRead: return "read";
    case Access::kWrite: return "write";
    case Access::kAdmin: return "admin";
  }
  return "?";
}

// The prefix a SCAN pattern fixes: the characters before its first glob
// character.
std::string_view LiteralPrefix(std::string_view pattern) {
  const size_t glob = pattern.find_first_of("*?[\\");
  return pattern.substr(0, glob);
}

}  // namespace

Access Required(wire::Op op) {
  using wire::Op;
  switch (op) {
    case Op::kPing:
    case Op::kInfo:
    case Op::kGet:
    case Op::kExists:
    case Op::kTtl:
    case Op::kMGet:
    case Op::kScan:
    case Op::kStats:
    case Op::kCluster:
    case Op::kAsk: return Access::kRead;
    case Op::kSet:
    case Op::kDel:
    case Op::kExpire:
    case Op::kIncr:
    case Op::kDecr:
    case Op::kMSet:
    case Op::kRateLimit: return Access::kWrite;
    case Op::kFlush:
    case Op::kReload:
    case Op::kSlotDump:
    case Op::kReplicate: return Access::kAdmin;
  }
  return Access::kAdmin;
}

Result<void> Permit(const AuthorizedKey& client, const wire::Request& request) {
  using wire::Op;
  const Access need = Required(request.op);
  if (need > client.access) {
    return MakeError(ErrorCode::kPermissionDenied, std::string(wire::OpName(request.op)) + " needs " +
                                                       AccessName(need) + " access; key '" + client.name + "' has " +
                                                       AccessName(client.access));
  }
  if (client.prefixes.empty()) return {};
  // Which arguments are keys: [first, end) stepping by `step`.
  uint32_t first = 0, end = 0, step = 1;
  switch (request.op) {
    case Op::kGet:
    case Op::kSet:
    case Op::kDel:
    case Op::kExists:
    case Op::kExpire:
    case Op::kTtl:
    case Op::kIncr:
    case Op::kDecr:
    case Op::kRateLimit: end = std::min<uint32_t>(1, request.arg_count); break;
    case Op::kMGet: end = request.arg_count; break;
    case Op::kMSet: end = request.arg_count, step = 2; break;
    case Op::kAsk: first = 1, end = request.arg_count; break;  // the op's name, then GET/EXISTS/TTL/MGET keys
    case Op::kScan: {
      std::string_view pattern;
      if (request.arg_count >= 2) {
        auto p = wire::BytesArg(request.args[1], "pattern");
        if (p) pattern = *p;
      }
      if (client.MayTouch(LiteralPrefix(pattern)) && !LiteralPrefix(pattern).empty()) return {};
      return MakeError(ErrorCode::kPermissionDenied, "key '" + client.name +
                                                         "' may scan only patterns that start with one of its "
                                                         "prefixes");
    }
    case Op::kFlush:
      return MakeError(ErrorCode::kPermissionDenied,
                       "FLUSH removes every key; key '" + client.name + "' is limited to some prefixes");
    default: return {};
  }
  for (uint32_t i = first; i < end; i += step) {
    auto key = wire::BytesArg(request.args[i], "key");
    if (!key) continue;  // the handler refuses the type
    if (!client.MayTouch(*key)) {
      return MakeError(ErrorCode::kPermissionDenied,
                       "key '" + client.name + "' may not touch '" + std::string(*key) + "' (outside its prefixes)");
    }
  }
  return {};
}

bool AuthorizedKey::MayTouch(std::string_view key) const {
  if (prefixes.empty()) return true;
  for (const std::string& p : prefixes) {
    if (key.substr(0, p.size()) == p) return true;
  }
  return false;
}

Result<std::vector<AuthorizedKey>> ParseAuthorizedKeys(std::string_view text, const std::string& source) {
  std::vector<AuthorizedKey> keys;
  std::istringstream in{std::string(text)};
  int number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    // Comments are whole lines: '#' is a Z85 digit, so keys may hold one.
    const std::vector<std::string> words = Words(line);
    if (words.empty() || words[0][0] == '#') continue;
    const std::string where = source + ":" + std::to_string(number);
    auto key = ParseLine(words, where);
    if (!key) return tl::unexpected(key.error());
    for (const AuthorizedKey& other : keys) {
      if (other.public_key == key->public_key || other.name == key->name) {
        return MakeError(ErrorCode::kInvalidArgument,
                         where + ": key or name '" + key->name + "' is listed twice (first as '" + other.name + "')");
      }
    }
    keys.push_back(std::move(*key));
  }
  return keys;
}

Result<std::vector<AuthorizedKey>> LoadAuthorizedKeys(const std::string& path) {
  std::ifstream in(path);
  if (!in) return MakeError(ErrorCode::kIo, "cannot read authorized keys '" + path + "'");
  std::stringstream text;
  text << in.rdbuf();
  return ParseAuthorizedKeys(text.str(), path);
}

Authenticator::Authenticator(zmq::context_t& context, std::shared_ptr<spdlog::logger> log)
    : zap_(context),
      log_refusals_([log = std::move(log)](const std::string& line) { log->warn("{}", line); }, kLogBurst,
                    std::chrono::seconds(1)) {}

Authenticator::~Authenticator() = default;

Result<void> Authenticator::Start() { return zap_.Start(); }

void Authenticator::SetKeys(std::vector<AuthorizedKey> keys, const std::string& own) {
  by_key_.clear();
  for (AuthorizedKey& key : keys) {
    by_key_[key.public_key] = std::move(key);
  }
  if (!own.empty()) {
    by_key_[own] = AuthorizedKey{own, kOwnName, Access::kAdmin, {}};
  }
}

const AuthorizedKey* Authenticator::Find(std::string_view user_id) const {
  auto key = by_key_.find(user_id);
  return key == by_key_.end() ? nullptr : &key->second;
}

zap::Verdict Authenticator::Decide(const zap::Request& request, int64_t connections) const {
  const std::string from = request.address.empty() ? "a local client" : request.address;
  if (connections > 0 && static_cast<uint64_t>(connections) > max_connections_) {
    return zap::Verdict::Refuse("refused a connection from " + from + ": " + std::to_string(connections - 1) +
                                    " connections open, max-connections is " + std::to_string(max_connections_),
                                zap::Status::kTemporaryError);
  }
  if (request.mechanism != "CURVE") return zap::Verdict::Admit();  // ipc: trusted by the socket file's mode
  if (by_key_.count(request.client_key) == 0) {
    return zap::Verdict::Refuse("refused a connection from " + from + ": CURVE key " + request.client_key +
                                " is not in curve-authorized-keys");
  }
  // The User-Id is the key itself, not its name: names are the file's to
  // choose, and one could copy another's (or the nodes').
  return zap::Verdict::Admit(request.client_key);
}

void Authenticator::Answer(int64_t connections) {
  zap_.Answer([&](const zap::Request& request) { return Decide(request, connections); },
              [&](const std::string& why) { Refuse(why); });
}

void Authenticator::Refuse(const std::string& text) {
  ++refused_;
  log_refusals_.Log(text);
}

}  // namespace cachet::daemon
