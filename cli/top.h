// `cachectl top`: the daemon's load, refreshed. Each refresh asks STATS
// (through cachet::Client) and shows the rates between it and the refresh
// before: ops/s, hit ratio, sets, evictions and errors per second, with
// entries, memory and clients. Single-threaded; it owns nothing but its
// samples.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>

#include "cachet/client.h"

namespace cachet::cli {

struct TopOptions {
  std::chrono::milliseconds interval{1000};
  int64_t count = 0;     // refreshes before returning; 0: until interrupted
  bool json = false;     // one JSON object per refresh, one per line
  bool redraw = false;   // redraw a terminal screen rather than print lines
  std::string endpoint;  // shown in the redrawn screen's title
};

// "500ms", "2s", "1.5s" or a bare number of seconds ("2"); at least 10 ms.
std::optional<std::chrono::milliseconds> ParseInterval(const std::string& text);

// Takes a first sample, then `count` refreshes `interval` apart, printed to
// `out`. Returns 0, or what `fail` returns for the error of a STATS that
// failed.
int RunTop(Client& client, const TopOptions& options, FILE* out, const std::function<int(const Error&)>& fail);

}  // namespace cachet::cli
