// The Prometheus text exposition format (version 0.0.4) of a
// MetricsSnapshot: what GET /metrics answers. A pure function of the
// snapshot, safe from any thread. The metric names, types and labels are
// listed in docs/operations.md ("Monitor").
#pragma once

#include <string>
#include <string_view>

#include "server_stats.h"

namespace cachet::daemon {

inline constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4";

// Every family has its # HELP and # TYPE lines; counters end in _total;
// label values are escaped (\\, \", \n). Series of a labelled family appear
// once they have counted something; families of features not configured
// (rate limits, cluster) are left out.
std::string RenderPrometheus(const MetricsSnapshot& snapshot);

// A label value as the format wants it: backslash, double quote and line
// feed escaped.
std::string EscapeLabelValue(std::string_view value);

}  // namespace cachet::daemon
