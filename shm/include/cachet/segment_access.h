// Who may open a named shared-memory segment (/dev/shm/NAME). cachet makes
// its segments readable by their owner only; a daemon serving clients that
// run as other users widens that to a group (cachetd's access-mode and
// access-group settings).
#pragma once

#include <sys/types.h>

#include <string>

#include "cachet/result.h"

namespace cachet {

struct SegmentAccess {
  mode_t mode = 0600;                    // permission bits, at most 0666 (no execute bits)
  gid_t group = static_cast<gid_t>(-1);  // -1: leave the group as it is
};

// Sets the mode and group of /dev/shm/`name`. Processes that opened the
// segment before keep their mapping: narrow access before clients attach.
Result<void> SetSegmentAccess(const std::string& name, const SegmentAccess& access);

// "0660" -> 0660; octal, at most 0666.
Result<mode_t> ParseAccessMode(const std::string& text);

}  // namespace cachet
