// HttpConnection: one keep-alive HTTP/1.1 connection that POSTs JSON, the
// only thing the etcd client needs of an HTTP library.
//
// cpp-httplib implements it in a module the cluster library loads on first
// use (cluster/http/), so that cachetd and libcachet need cpp-httplib only
// when a cluster is configured: a single node has no new dependency at run
// time (docs/design.md, "Cluster control plane"). The module and this
// header are built together; kHttpModuleAbi guards against a stale module.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cachet/result.h"

namespace cachet::cluster::detail {

// Raised whenever HttpConnection or HttpOutcome changes.
inline constexpr int kHttpModuleAbi = 1;
// The module's file name: installed beside libcachet, and found there from
// the program or library that links the cluster code (http_connection.cc).
inline constexpr const char* kHttpModuleFile = "libcachet_etcd_http.so";

enum class HttpFailure {
  kNone,
  kCannotConnect,  // nothing was sent
  kNoAnswer,       // connection closed, or nothing within the read timeout
  kCannotSend,
  kCanceled,  // the body receiver returned false
  kOther,
};

struct HttpOutcome {
  int status = 0;  // 0: no status line arrived
  HttpFailure failure = HttpFailure::kNone;
  std::string detail;  // the library's words for kOther
};

// Receives the answer's status and body bytes as they arrive; false ends
// the request (kCanceled).
using HttpBodyReceiver = std::function<bool(int status, std::string_view bytes)>;

class HttpConnection {
 public:
  virtual ~HttpConnection() = default;
  // POSTs `body` as application/json. Not thread-safe: one request at a time.
  virtual HttpOutcome Post(const char* path, const std::string& body, std::chrono::milliseconds connect_timeout,
                           std::chrono::milliseconds read_timeout, const HttpBodyReceiver& receiver) = 0;
  // Shuts the socket down; a blocked Post returns. Thread-safe.
  virtual void Stop() = 0;
};

// A connection to host:port (connected on the first Post), made by the
// module; fails (kUnavailable) with dlopen's reason when it cannot be loaded.
Result<std::unique_ptr<HttpConnection>> ConnectHttp(const std::string& host, int port);

}  // namespace cachet::cluster::detail

// The module's two entry points (C names, for dlsym).
extern "C" {
int cachet_etcd_http_abi();
cachet::cluster::detail::HttpConnection* cachet_etcd_http_connect(const char* host, int port);
}
