// Command-line helpers shared by the load tools (cachet-load, cachet-soak):
// a refusal that names the tool, gives the reason and the usage text, and
// exits with 2; and whole-number options checked against a range.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace cachet::bench {

struct ToolUsage {
  const char* tool;  // "cachet-load"
  const char* text;  // the --help text
};

[[noreturn]] inline void RefuseArguments(const ToolUsage& usage, const std::string& why) {
  std::fprintf(stderr, "%s: %s\n\n%s", usage.tool, why.c_str(), usage.text);
  std::exit(2);
}

// `text` as a whole number in [min, max], or the tool exits with 2 naming `flag`.
inline int64_t ParseWholeNumber(const ToolUsage& usage, const std::string& flag, const std::string& text, int64_t min,
                                int64_t max) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || v < min || v > max) {
    RefuseArguments(usage, flag + " takes a whole number from " + std::to_string(min) + " to " + std::to_string(max) +
                               ", got '" + text + "'");
  }
  return v;
}

// xorshift64*: a cheap generator, one per thread. `s` must not be 0.
inline uint64_t NextRandom(uint64_t& s) {
  s ^= s >> 12;
  s ^= s << 25;
  s ^= s >> 27;
  return s * 2685821657736338717ull;
}

}  // namespace cachet::bench
