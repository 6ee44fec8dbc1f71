// How cachetd's log lines look: `text` for people (the default), or `json`,
// one object per line for log shippers:
//   {"time":"2026-12-05T14:03:07.412Z","level":"info","pid":4242,"msg":"listening on ..."}
// The message is escaped as a JSON string (quotes, backslashes, control
// bytes; other bytes pass through, so a message must be UTF-8 to be valid
// JSON; the daemon never logs key or value bytes above debug level).
#pragma once

#include <string>

namespace spdlog {
class logger;
}

namespace cachet::daemon {

// REQUIRES: format is "text" or "json" (DaemonConfig::Validate).
void SetLogFormat(spdlog::logger& log, const std::string& format);

}  // namespace cachet::daemon
