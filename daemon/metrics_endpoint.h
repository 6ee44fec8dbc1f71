// MetricsEndpoint: cachetd's Prometheus endpoint, `GET /metrics` over HTTP
// on the `metrics` address (docs/operations.md, "Monitor"). It serves on
// threads of its own (a listener and a small pool, from cpp-httplib), which
// read only the SnapshotBoard they are given: never the cache, the sockets
// or the loop's counters. Other paths are 404.
//
// Start binds and returns once the listener runs; the destructor stops it
// and joins its threads (within about a second: an idle keep-alive
// connection is given up). The board must outlive the endpoint. The
// threads block SIGTERM, SIGINT and SIGHUP, so those reach the serving
// loop's thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "cachet/result.h"
#include "server_stats.h"

namespace httplib {
class Server;
}

namespace cachet::daemon {

class MetricsEndpoint {
 public:
  // `address` is host:port ([v6]:port); port 0 takes a free port. Fails
  // with kIo naming the address and why (a port in use, a bad host).
  static Result<std::unique_ptr<MetricsEndpoint>> Start(const std::string& address, const SnapshotBoard& board);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // The port bound (the one chosen, for port 0).
  uint16_t port() const { return port_; }
  // http://host:port/metrics
  const std::string& url() const { return url_; }

 private:
  explicit MetricsEndpoint(const SnapshotBoard& board);

  const SnapshotBoard& board_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};  // set by thread_ as it ends
  uint16_t port_ = 0;
  std::string url_;
};

}  // namespace cachet::daemon
