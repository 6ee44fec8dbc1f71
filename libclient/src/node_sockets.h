// NodeSockets: ClusterClient's connections, one ZeroMQ DEALER per node
// endpoint, and the one way requests go out on them: every request of a
// batch is sent before any reply is awaited, so a split MGET costs one round
// trip to the slowest node, not the sum.
//
// A socket whose request failed (unreachable, timed out, broken) is closed,
// so a late reply can never be taken for a later request's; the next request
// to that endpoint connects again.
//
// Not thread-safe: the owner serializes calls (ClusterClient's mutex).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cachet/curve.h"
#include "protocol.h"

namespace zmq {
class socket_t;
}

namespace cachet {

// A request for one node, ready to send, and what came of it.
struct Exchange {
  std::string endpoint;
  uint64_t id = 0;
  std::string frame;
  std::optional<Result<wire::Reply>> result;  // set by NodeSockets::Run
};

class NodeSockets {
 public:
  // `curve`: the nodes' public key and this client's pair; empty: plaintext.
  explicit NodeSockets(CurveClientKeys curve = {});
  ~NodeSockets();
  NodeSockets(const NodeSockets&) = delete;
  NodeSockets& operator=(const NodeSockets&) = delete;

  // Sends every exchange, then collects the replies; each gets its result
  // (a reply with its id, or UNAVAILABLE / TIMEOUT / PROTOCOL naming the
  // endpoint) within `timeout` of the call.
  // REQUIRES: no two exchanges go to the same endpoint.
  void Run(std::vector<Exchange>& exchanges, std::chrono::milliseconds timeout);

 private:
  Result<zmq::socket_t*> Open(const std::string& endpoint);

  const CurveClientKeys curve_;
  std::map<std::string, std::unique_ptr<zmq::socket_t>> sockets_;
};

}  // namespace cachet
