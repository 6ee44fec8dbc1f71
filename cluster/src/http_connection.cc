#include "http_connection.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

namespace cachet::cluster::detail {
namespace {

using ConnectFn = HttpConnection* (*)(const char*, int);

// The folder of the program or library this code is linked into.
std::string OwnFolder() {
  Dl_info info{};
  std::string path;
  if (dladdr(reinterpret_cast<void*>(&OwnFolder), &info) != 0 && info.dli_fname != nullptr) path = info.dli_fname;
  // The main program is named as it was started (argv[0], maybe relative).
  if (path.empty() || path[0] != '/' || path == program_invocation_name) {
    char exe[4096];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    path = n > 0 ? std::string(exe, static_cast<size_t>(n)) : std::string();
  }
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

// The canonical form of `path` ("" if it does not exist).
std::string RealPath(const std::string& path) {
  char* real = realpath(path.c_str(), nullptr);
  if (real == nullptr) return "";
  std::string out(real);
  free(real);
  return out;
}

// Where the module may be. A program or library run from the build tree
// takes the one built beside it; an installed one looks beside itself (an
// installed libcachet) and in ../lib (an installed cachetd or cachectl),
// never in a build tree. Absolute paths: dlopen with a bare name searches
// the run path of its caller, and under a sanitizer the caller is the
// sanitizer's interceptor.
std::vector<std::string> Candidates() {
  const std::string here = RealPath(OwnFolder());
  const std::string build = RealPath(CACHET_BUILD_ROOT);
  if (!here.empty() && !build.empty() && (here + "/").rfind(build + "/", 0) == 0) {
    return {std::string(CACHET_HTTP_MODULE_BUILD_DIR "/") + kHttpModuleFile};
  }
  if (here.empty()) return {kHttpModuleFile};  // the system's search, as a last resort
  return {here + "/" + kHttpModuleFile, here + "/../" CACHET_INSTALL_LIBDIR "/" + kHttpModuleFile};
}

// Loaded once per process and never unloaded (connections may outlive any
// one caller); a failure is remembered, so every caller gets its reason.
Result<ConnectFn> LoadModule() {
  static const Result<ConnectFn> loaded = []() -> Result<ConnectFn> {
    const std::string hint = std::string("the cluster's HTTP module ") + kHttpModuleFile;
    void* module = nullptr;
    std::string tried;
    for (const std::string& path : Candidates()) {
      if (path.find('/') != std::string::npos && access(path.c_str(), F_OK) != 0) {
        tried += (tried.empty() ? "" : ", ") + path;
        continue;
      }
      module = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (module != nullptr) break;
      const char* why = dlerror();
      return MakeError(ErrorCode::kUnavailable, hint + " cannot be loaded: " + (why != nullptr ? why : path) +
                                                    " (it needs cpp-httplib: scripts/install-deps.sh)");
    }
    if (module == nullptr) {
      return MakeError(ErrorCode::kUnavailable,
                       hint + " is not installed (looked for " + tried + "); it is installed beside libcachet");
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
