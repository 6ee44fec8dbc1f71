#include "http_connection.h"

#include <dlfcn.h>

#include <string>

namespace cachet::cluster::detail {
namespace {

using ConnectFn = HttpConnection* (*)(const char*, int);

// dlopen's search from this object: its run path, then the system's.
// Loaded once per process and never unloaded (connections may outlive any
// one caller); a failure is remembered, so every caller gets its reason.
Result<ConnectFn> LoadModule() {
  static const Result<ConnectFn> loaded = []() -> Result<ConnectFn> {
    const std::string hint = std::string("the cluster's HTTP module ") + kHttpModuleFile;
    void* module = dlopen(kHttpModuleFile, RTLD_NOW | RTLD_LOCAL);
    if (module == nullptr) {
      const char* why = dlerror();
      return MakeError(ErrorCode::kUnavailable,
                       hint + " cannot be loaded: " + (why != nullptr ? why : "unknown reason") +
                           " (it is installed beside libcachet; it needs cpp-httplib: scripts/install-deps.sh)");
    }
    auto abi = reinterpret_cast<int (*)()>(dlsym(module, "cachet_etcd_http_abi"));
    auto connect = reinterpret_cast<ConnectFn>(dlsym(module, "cachet_etcd_http_connect"));
    if (abi == nullptr || connect == nullptr) {
      return MakeError(ErrorCode::kUnavailable, hint + " lacks its entry points: not a cachet module");
    }
    if (abi() != kHttpModuleAbi) {
      return MakeError(ErrorCode::kUnavailable, hint + " is from another version of cachet (interface " +
                                                    std::to_string(abi()) + ", expected " +
                                                    std::to_string(kHttpModuleAbi) + ")");
    }
    return connect;
  }();
  return loaded;
}

}  // namespace

Result<std::unique_ptr<HttpConnection>> ConnectHttp(const std::string& host, int port) {
  auto connect = LoadModule();
  if (!connect) return tl::unexpected(connect.error());
  std::unique_ptr<HttpConnection> connection((*connect)(host.c_str(), port));
  if (!connection) return MakeError(ErrorCode::kInternal, "the cluster's HTTP module could not make a connection");
  return connection;
}

}  // namespace cachet::cluster::detail
