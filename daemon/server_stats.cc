#include "server_stats.h"

#include "cachet/result.h"

#include "../libclient/src/protocol.h"

namespace cachet::daemon {

static_assert(static_cast<size_t>(wire::Op::kReplicate) + 1 == kInvalidOpRow,
              "a wire op was added: give it a row (kOpRows) before the INVALID one");
static_assert(static_cast<size_t>(ErrorCode::kBusy) + 1 == kStatusColumns,
              "an ErrorCode was added: give it a column (kStatusColumns)");

const char* OpRowName(size_t row) {
  if (row >= kInvalidOpRow) return "INVALID";
  return wire::OpName(static_cast<wire::Op>(row));
}

const char* StatusColumnName(size_t column) { return ErrorCodeName(static_cast<ErrorCode>(column)); }

}  // namespace cachet::daemon
