#include "cachet/policy_file.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <vector>

namespace cachet {

namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> Words(std::string_view s) {
  std::vector<std::string_view> out;
  while (true) {
    s = Trim(s);
    if (s.empty()) return out;
    size_t end = 0;
    while (end < s.size() && !std::isspace(static_cast<unsigned char>(s[end]))) ++end;
    out.push_back(s.substr(0, end));
    s.remove_prefix(end);
  }
}

Result<uint64_t> Number(std::string_view s, const char* what) {
  if (s.empty() || s.size() > 18)
    return MakeError(ErrorCode::kInvalidArgument,
                     std::string(what) + " '" + std::string(s) + "' is not a whole number");
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') {
      return MakeError(ErrorCode::kInvalidArgument,
                       std::string(what) + " '" + std::string(s) + "' is not a whole number");
    }
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

Result<std::chrono::milliseconds> Window(std::string_view s) {
  size_t digits = 0;
  while (digits < s.size() && std::isdigit(static_cast<unsigned char>(s[digits]))) ++digits;
  auto n = Number(s.substr(0, digits), "window");
  if (!n) return tl::unexpected(n.error());
  const std::string_view unit = s.substr(digits);
  int64_t ms = 0;
  if (unit == "ms")
    ms = 1;
  else if (unit == "s")
    ms = 1000;
  else if (unit == "m")
    ms = 60'000;
  else if (unit == "h")
    ms = 3'600'000;
  else if (unit == "d")
    ms = 86'400'000;
  else {
    return MakeError(ErrorCode::kInvalidArgument, "window '" + std::string(s) + "' needs a unit: ms, s, m, h or d");
  }
  // Past a year Rule::Validate refuses it; past int64 milliseconds the
  // product would wrap (found by fuzzing: 25555555555555h read as a
  // negative or a small window).
  if (*n > static_cast<uint64_t>(INT64_MAX / ms)) {
    return MakeError(ErrorCode::kInvalidArgument, "window '" + std::string(s) + "' is too long; at most a year");
  }
  return std::chrono::milliseconds(static_cast<int64_t>(*n) * ms);
}

// "100/1m sliding_window burst=20 shadow local"
Result<Rule> ParseRule(std::string_view name, std::string_view spec) {
  Rule r;
  r.name = std::string(name);
  const std::vector<std::string_view> words = Words(spec);
  if (words.empty()) return MakeError(ErrorCode::kInvalidArgument, "rule '" + r.name + "' is empty");
  const size_t slash = words[0].find('/');
  if (words[0].rfind('-', 0) == 0) {
    return MakeError(ErrorCode::kInvalidArgument, "rule '" + r.name + "': the limit cannot be negative");
  }
  if (slash == std::string_view::npos) {
    return MakeError(ErrorCode::kInvalidArgument, "rule '" + r.name + "': expected LIMIT/WINDOW, e.g. 100/1m");
  }
  auto limit = Number(words[0].substr(0, slash), "limit");
  if (!limit) return MakeError(ErrorCode::kInvalidArgument, "rule '" + r.name + "': " + limit.error().message);
  r.limit = *limit;
  auto window = Window(words[0].substr(slash + 1));
  if (!window) return MakeError(ErrorCode::kInvalidArgument, "rule '" + r.name + "': " + window.error().message);
  r.window = *window;
  for (size_t i = 1; i < words.size(); ++i) {
    const std::string_view w = words[i];
    if (w == "shadow") {
      r.shadow = true;
    } else if (w == "local") {
      r.local = true;
    } else if (w.rfind("burst=", 0) == 0) {
      auto burst = Number(w.substr(6), "burst");
      if (!burst) return MakeError(ErrorCode::kInvalidArgument, "rule '" + r.name + "': " + burst.error().message);
      r.burst = *burst;
    } else {
      auto algorithm = ParseAlgorithm(w);
      if (!algorithm)
        return MakeError(ErrorCode::kInvalidArgument, "rule '" + r.name + "': " + algorithm.error().message);
      r.algorithm = *algorithm;
    }
  }
  if (auto ok = r.Validate(); !ok) return tl::unexpected(ok.error());
  return r;
}

}  // namespace

std::string PolicyFile::TierOf(std::string_view api_key, std::string_view fallback) const {
  auto it = key_tiers.find(std::string(api_key));
  return it == key_tiers.end() ? std::string(fallback) : it->second;
}

Result<PolicyFile> ParsePolicy(std::string_view text, std::string_view source) {
  PolicyFile out;
  enum class Section { kNone, kTier, kOverride, kKeys, kPeers } section = Section::kNone;
  std::vector<std::string> peer_names;
  std::vector<Rule>* rules = nullptr;
  std::vector<std::pair<size_t, std::string>> key_lines;  // to check tiers once all are known
  size_t line_no = 0;
  auto fail = [&](const std::string& message) {
    return MakeError(ErrorCode::kInvalidArgument, std::string(source) + ":" + std::to_string(line_no) + ": " + message);
  };
  std::string_view rest = text;
  while (!rest.empty()) {
    ++line_no;
    const size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    if (const size_t hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    line = Trim(line);
    if (line.empty()) continue;
    if (line.front() == '[') {
      if (line.back() != ']') return fail("section header must end with ']'");
      const std::string_view name = Trim(line.substr(1, line.size() - 2));
      if (name.rfind("tier.", 0) == 0 && name.size() > 5) {
        section = Section::kTier;
        out.policy.tiers.push_back({std::string(name.substr(5)), {}});
        rules = &out.policy.tiers.back().rules;
        for (size_t i = 0; i + 1 < out.policy.tiers.size(); ++i) {
          if (out.policy.tiers[i].name == out.policy.tiers.back().name) {
            return fail("tier '" + out.policy.tiers.back().name + "' is defined twice");
          }
        }
      } else if (name.rfind("override.", 0) == 0 && name.size() > 9) {
        section = Section::kOverride;
        rules = &out.policy.overrides[std::string(name.substr(9))];
      } else if (name == "keys") {
        section = Section::kKeys;
        rules = nullptr;
      } else if (name == "peers") {
        if (out.peers) return fail("section [peers] appears twice");
        section = Section::kPeers;
        rules = nullptr;
        out.peers.emplace();
      } else {
        return fail("unknown section [" + std::string(name) +
                    "]; expected [tier.NAME], [override.KEY], [keys] or [peers]");
      }
      continue;
    }
    const size_t eq = line.find('=');
    if (eq == std::string_view::npos) return fail("expected NAME = VALUE");
    const std::string_view name = Trim(line.substr(0, eq));
    const std::string_view value = Trim(line.substr(eq + 1));
    if (name.empty()) return fail("a name is missing before '='");
    switch (section) {
      case Section::kNone: return fail("'" + std::string(name) + "' is outside any section");
      case Section::kKeys:
        out.key_tiers[std::string(name)] = std::string(value);
        key_lines.emplace_back(line_no, std::string(value));
        break;
      case Section::kPeers:
        if (value.rfind("tcp://", 0) != 0 && value.rfind("ipc://", 0) != 0) {
          return fail("peer '" + std::string(name) + "': expected an endpoint tcp://HOST:PORT or ipc://PATH, not '" +
                      std::string(value) + "'");
        }
        if (std::find(peer_names.begin(), peer_names.end(), name) != peer_names.end()) {
          return fail("peer '" + std::string(name) + "' appears twice");
        }
        peer_names.emplace_back(name);
        out.peers->emplace_back(value);
        break;
      case Section::kTier:
      case Section::kOverride: {
        auto rule = ParseRule(name, value);
        if (!rule) return fail(rule.error().message);
        for (const Rule& r : *rules) {
          if (r.name == rule->name) return fail("rule '" + r.name + "' appears twice in this section");
        }
        rules->push_back(*rule);
        break;
      }
    }
  }
  for (const auto& [at, tier] : key_lines) {
    if (out.policy.FindTier(tier) == nullptr) {
      line_no = at;
      return fail("unknown tier '" + tier + "'");
    }
  }
  if (auto ok = out.policy.Validate(); !ok) {
    return MakeError(ErrorCode::kInvalidArgument, std::string(source) + ": " + ok.error().message);
  }
  return out;
}

Result<PolicyFile> LoadPolicyFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return MakeError(ErrorCode::kIo, "cannot read policy file '" + path + "'");
  std::stringstream text;
  text << in.rdbuf();
  return ParsePolicy(text.str(), path);
}

}  // namespace cachet
