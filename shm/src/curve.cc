#include "cachet/curve.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace cachet {

namespace {

constexpr std::string_view kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// "NAME = VALUE" into its parts; false if the line has no '='.
bool SplitSetting(std::string_view line, std::string_view* name, std::string_view* value) {
  const size_t eq = line.find('=');
  if (eq == std::string_view::npos) return false;
  *name = Trim(line.substr(0, eq));
  *value = Trim(line.substr(eq + 1));
  // A quoted value, as czmq's certificates write them.
  if (value->size() >= 2 && value->front() == '"' && value->back() == '"') *value = value->substr(1, value->size() - 2);
  return true;
}

Result<CurveKeyPair> ParseKeyFile(const std::string& text, const std::string& path) {
  CurveKeyPair keys;
  std::istringstream in(text);
  std::string raw;
  int number = 0;
  while (std::getline(in, raw)) {
    ++number;
    const std::string_view line = Trim(raw);
    if (line.empty() || line.front() == '#') continue;
    std::string_view name, value;
    if (!SplitSetting(line, &name, &value)) {
      if (IsCurveKey(line) && keys.public_key.empty()) {
        keys.public_key = std::string(line);
        continue;
      }
      return MakeError(ErrorCode::kInvalidArgument,
                       path + ":" + std::to_string(number) + ": expected 'public-key = KEY' or 'secret-key = KEY'");
    }
    std::string* slot = name == "public-key" ? &keys.public_key : name == "secret-key" ? &keys.secret_key : nullptr;
    if (slot == nullptr) {
      return MakeError(ErrorCode::kInvalidArgument,
                       path + ":" + std::to_string(number) + ": unknown setting '" + std::string(name) + "'");
    }
    if (!IsCurveKey(value)) {
      return MakeError(ErrorCode::kInvalidArgument, path + ":" + std::to_string(number) + ": " + std::string(name) +
                                                        " is not a CURVE key (40 characters of Z85)");
    }
    *slot = std::string(value);
  }
  if (keys.public_key.empty()) return MakeError(ErrorCode::kInvalidArgument, path + ": holds no public-key");
  return keys;
}

Result<void> WriteFile(const std::string& path, const std::string& text, mode_t mode, bool overwrite) {
  const int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (overwrite ? O_TRUNC : O_EXCL);
  const int fd = ::open(path.c_str(), flags, mode);
  if (fd < 0) {
    if (errno == EEXIST) {
      return MakeError(ErrorCode::kAlreadyExists, path + " exists; remove it first (or pass --force)");
    }
    return MakeError(ErrorCode::kIo, "cannot write " + path + ": " + std::strerror(errno));
  }
  // The mode of a file that existed stays as it was unless set here.
  bool ok = ::fchmod(fd, mode) == 0;
  size_t done = 0;
  while (ok && done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  const int saved = errno;
  ok = ::close(fd) == 0 && ok;
  if (!ok) return MakeError(ErrorCode::kIo, "cannot write " + path + ": " + std::strerror(saved));
  return {};
}

}  // namespace

bool IsCurveKey(std::string_view text) {
  if (text.size() != 40) return false;
  for (char c : text) {
    if (kZ85Alphabet.find(c) == std::string_view::npos) return false;
  }
  return true;
}

Result<CurveKeyPair> ReadCurveKeyFile(const std::string& path, bool need_secret) {
  std::ifstream in(path);
  if (!in) return MakeError(ErrorCode::kIo, "cannot read key file " + path + ": " + std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  auto keys = ParseKeyFile(text.str(), path);
  if (!keys) return keys;
  if (!need_secret) return keys;
  if (keys->secret_key.empty()) {
    return MakeError(ErrorCode::kInvalidArgument,
                     path + " holds no secret-key: give the .key file that `cachectl keygen` wrote, not the .pub");
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return MakeError(ErrorCode::kInvalidArgument,
                     path + " holds a secret key but is mode " + mode + ", readable by others; run: chmod 600 " + path);
  }
  return keys;
}

Result<void> WriteCurveKeyFiles(const std::string& base, const CurveKeyPair& keys, bool overwrite) {
  if (!IsCurveKey(keys.public_key) || !IsCurveKey(keys.secret_key)) {
    return MakeError(ErrorCode::kInvalidArgument, "not a CURVE key pair");
  }
  const std::string secret_text = "# cachet CURVE key pair: keep secret (mode 0600)\npublic-key = " + keys.public_key +
                                  "\nsecret-key = " + keys.secret_key + "\n";
  const std::string public_text = "# cachet CURVE public key\npublic-key = " + keys.public_key + "\n";
  for (const std::string& path : {base + ".key", base + ".pub"}) {
    if (!overwrite && ::access(path.c_str(), F_OK) == 0) {
      return MakeError(ErrorCode::kAlreadyExists, path + " exists; remove it first (or pass --force)");
    }
  }
  if (auto ok = WriteFile(base + ".pub", public_text, 0644, overwrite); !ok) return ok;
  return WriteFile(base + ".key", secret_text, 0600, overwrite);
}

Result<CurveClientKeys> CurveClientKeys::Load(const std::string& server_key_file, const std::string& key_file) {
  CurveClientKeys keys;
  if (server_key_file.empty() && key_file.empty()) return keys;
  if (server_key_file.empty() || key_file.empty()) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "CURVE needs both the server's public key file and this client's key file");
  }
  auto server = ReadCurveKeyFile(server_key_file, false);
  if (!server) return tl::unexpected(server.error());
  auto own = ReadCurveKeyFile(key_file, true);
  if (!own) return tl::unexpected(own.error());
  keys.server_public_key = server->public_key;
  keys.public_key = own->public_key;
  keys.secret_key = own->secret_key;
  return keys;
}

bool IsLoopbackEndpoint(const std::string& endpoint) {
  if (endpoint.rfind("ipc://", 0) == 0 || endpoint.rfind("inproc://", 0) == 0) return true;
  if (endpoint.rfind("tcp://", 0) != 0) return false;
  std::string host = endpoint.substr(6);
  const size_t colon = host.rfind(':');
  if (colon != std::string::npos) host.resize(colon);
  // A "source;destination" pair connects from source: the destination decides.
  if (const size_t semi = host.find(';'); semi != std::string::npos) host = host.substr(semi + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return host == "localhost" || host == "lo" || host == "::1" || host.rfind("127.", 0) == 0;
}

}  // namespace cachet
