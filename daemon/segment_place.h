// Where cachetd's segment lives, and opening it at start.
//
// The segment is /dev/shm/<segment> (POSIX shared memory), or the file
// <mount>/<segment> on a hugetlbfs mount, whose huge pages spare a lookup
// most of its TLB misses. The `huge-pages` setting chooses (auto: the mount
// if one has room, else /dev/shm, with the reason in the log). A segment
// found in either place is re-attached (a warm restart) when it was made
// with the same options.
#pragma once

#include <memory>
#include <string>

#include "cachet/cache.h"
#include "cachet/result.h"
#include "config.h"

namespace spdlog {
class logger;
}

namespace cachet::daemon {

// The hugetlbfs mount to use: `configured` (checked to be one) or, when
// empty, the first in /proc/mounts with 2 MiB pages (else the first of any
// size). An error says why there is none.
Result<std::string> FindHugePageMount(const std::string& configured);

// The segment as the configuration wants it: re-attached if there is a
// usable one of the same options in either place (the grant of same-host
// writes revoked until the server decides), otherwise made anew, empty,
// with the next generation. Logs where it is and why.
Result<std::unique_ptr<Cache>> OpenSegment(const DaemonConfig& config, spdlog::logger& log);

// How logs name a segment: "/name" for POSIX shared memory, or its path.
std::string SegmentLabel(const std::string& name);

}  // namespace cachet::daemon
