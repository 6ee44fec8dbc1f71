// A reader of the Prometheus text exposition format 0.0.4, strict enough to
// test what cachetd serves: every sample belongs to a family announced by
// one # HELP and one # TYPE line before it and next to its family's other
// lines, names, label sets and values are well-formed, counters end in
// _total, a histogram's samples are its _bucket, _sum and _count, and the
// text ends with a line feed. Samples are keyed by their text before the value,
// `name{label="value",...}`, labels in the order served.
#pragma once

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace cachet::testing {

struct Exposition {
  std::map<std::string, double> samples;     // `name{labels}` -> value
  std::map<std::string, std::string> types;  // family -> counter, gauge, histogram
  std::vector<std::string> problems;         // empty when the text follows the format

  // The value of `key`, or `absent` when not served.
  double Value(const std::string& key, double absent = 0) const {
    auto it = samples.find(key);
    return it == samples.end() ? absent : it->second;
  }
  bool Has(const std::string& key) const { return samples.count(key) != 0; }
};

inline bool IsMetricName(const std::string& name) {
  if (name.empty() || !(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_' || name[0] == ':')) {
    return false;
  }
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':')) return false;
  }
  return true;
}

// The family a sample name belongs to, given the families announced.
inline std::string FamilyOf(const std::string& name, const std::map<std::string, std::string>& types) {
  if (types.count(name)) return name;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string s = suffix;
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      const std::string base = name.substr(0, name.size() - s.size());
      auto it = types.find(base);
      if (it != types.end() && it->second == "histogram") return base;
    }
  }
  return "";
}

inline Exposition ParseExposition(const std::string& text) {
  Exposition e;
  auto problem = [&](const std::string& what, const std::string& line) { e.problems.push_back(what + ": " + line); };
  if (text.empty() || text.back() != '\n') e.problems.push_back("the text does not end with a line feed");
  std::set<std::string> helped, typed_with_samples;
  std::string current;  // the family whose lines are being read
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(at, end - at);
    at = end + 1;
    if (line.empty()) continue;
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      const bool help = line[2] == 'H';
      const size_t space = line.find(' ', 7);
      const std::string name = line.substr(7, space == std::string::npos ? std::string::npos : space - 7);
      if (!IsMetricName(name)) problem("bad family name", line);
      if (help) {
        if (!helped.insert(name).second) problem("second HELP", line);
      } else {
        const std::string type = space == std::string::npos ? "" : line.substr(space + 1);
        if (type != "counter" && type != "gauge" && type != "histogram") problem("unknown type", line);
        if (e.types.count(name)) problem("second TYPE", line);
        if (type == "counter" && (name.size() < 6 || name.substr(name.size() - 6) != "_total")) {
          problem("counter not ending in _total", line);
        }
        e.types[name] = type;
        current = name;
      }
      continue;
    }
    if (line[0] == '#') continue;  // a comment
    // name{labels} value
    const size_t brace = line.find('{');
    const size_t last_space = line.rfind(' ');
    if (last_space == std::string::npos) {
      problem("sample without a value", line);
      continue;
    }
    const std::string key = line.substr(0, last_space);
    const std::string name = line.substr(0, std::min(brace, last_space));
    if (!IsMetricName(name)) problem("bad sample name", line);
    if (brace != std::string::npos && brace < last_space) {
      // label="value" pairs, values escaped; ends with '}'
      size_t i = brace + 1;
      bool ok = true;
      while (ok && i < key.size() && key[i] != '}') {
        const size_t eq = key.find("=\"", i);
        if (eq == std::string::npos || !IsMetricName(key.substr(i, eq - i))) {
          ok = false;
          break;
        }
        i = eq + 2;
        while (i < key.size() && key[i] != '"') {
          if (key[i] == '\\') {
            if (i + 1 >= key.size() || (key[i + 1] != '\\' && key[i + 1] != '"' && key[i + 1] != 'n')) ok = false;
            ++i;
          }
          ++i;
        }
        if (i >= key.size()) ok = false;
        ++i;  // the closing quote
        if (i < key.size() && key[i] == ',') ++i;
      }
      if (!ok || key.back() != '}' || i != key.size() - 1) problem("bad label set", line);
    }
    const std::string value = line.substr(last_space + 1);
    char* parsed_end = nullptr;
    double v = std::strtod(value.c_str(), &parsed_end);
    if (value == "+Inf") v = HUGE_VAL;
    if (value.empty() || (parsed_end != value.c_str() + value.size() && value != "+Inf")) problem("bad value", line);
    const std::string family = FamilyOf(name, e.types);
    if (family.empty()) problem("sample of no announced family", line);
    if (!family.empty() && !helped.count(family)) problem("sample before its HELP", line);
    if (!family.empty() && family != current) problem("sample away from its family's lines", line);
    if (e.samples.count(key)) problem("second sample of one series", line);
    e.samples[key] = v;
  }
  return e;
}

}  // namespace cachet::testing
