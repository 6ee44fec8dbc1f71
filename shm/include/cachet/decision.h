// cachet::Decision: the outcome of one rate-limit check. Here, beside the
// other types both libraries share, because the limiter (libcachet_limiter)
// makes decisions and the daemon's client (libcachet) reads them off the
// wire (Client::RateLimit), and neither links the other.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace cachet {

// The outcome of one check, with what HTTP rate-limit headers need.
struct Decision {
  bool allowed = true;
  uint64_t limit = 0;
  std::chrono::milliseconds window{0};  // the deciding rule's window
  uint64_t remaining = 0;
  std::chrono::milliseconds reset{0};        // until the window (or bucket) is fully available again
  std::chrono::milliseconds retry_after{0};  // denied: wait at least this long; 0 when allowed
  std::string rule;                          // the rule that decided (the tightest)
  bool shadow_denied = false;                // a shadow rule would have denied
};

}  // namespace cachet
