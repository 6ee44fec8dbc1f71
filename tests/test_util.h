// Helpers shared by the tests.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace cachet::testing {

// A shared-memory name unique to this process and call, so tests never
// collide with each other or with a running cachetd.
inline std::string UniqueSegmentName(const std::string& what) {
  static std::atomic<int> counter{0};
  return "cachet-test-" + what + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
}

// The whole file, or "" if it cannot be read.
// The integer in environment variable `name`, or `fallback` when it is unset
// or not a number (for tests that a developer scales up by hand).
inline int EnvInt(const char* name, int fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr) return fallback;
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  return end != text && *end == '\0' ? static_cast<int>(v) : fallback;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The scheduler state of `pid` from /proc ('R', 'S', 'T' for stopped, ...),
// or '?' when it is gone.
inline char ProcessState(pid_t pid) {
  const std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() ? '?' : stat[close + 2];
}

// True when every thread of `pid` is stopped ('T'): a SIGSTOP reaches the
// threads one by one, and one not stopped yet (ZeroMQ's I/O thread) may
// still read from its sockets.
inline bool AllThreadsStopped(pid_t pid) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  DIR* dir = opendir(tasks.c_str());
  if (dir == nullptr) return false;
  bool all = true, any = false;
  while (const dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const std::string stat = ReadFile(tasks + "/" + e->d_name + "/stat");
    const size_t close = stat.rfind(')');
    any = true;
    all = all && close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'T';
  }
  closedir(dir);
  return any && all;
}

// Polls `done` every `interval` until it returns true (then true) or `limit`
// has passed (then false, after one last try). The one way tests wait for
// another process or thread: callers assert on the result, so a wait that
// never ends is a failure, not a hang.
template <typename Predicate>
bool WaitUntil(Predicate&& done, std::chrono::milliseconds limit = std::chrono::seconds(10),
               std::chrono::milliseconds interval = std::chrono::milliseconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(interval);  // polling another process, with a deadline
  }
  return done();
}

// A loopback TCP port nobody listens on now (the kernel's choice for port
// 0), or 0 if none could be had. Another process may take it before the
// caller binds it: servers started on it are tried again on another.
inline int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

// Bytes received by the kernel for the established tcp connections on
// local `port` and not yet read by their owner (rx_queue in /proc/net/tcp).
inline int64_t ReceiveQueued(int port) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);  // the header
  int64_t total = 0;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state, queues;
    fields >> slot >> local >> remote >> state >> queues;
    if (state != "01" || local.find(':') == std::string::npos || queues.find(':') == std::string::npos) continue;
    if (std::stoi(local.substr(local.find(':') + 1), nullptr, 16) != port) continue;
    total += std::stoll(queues.substr(queues.find(':') + 1), nullptr, 16);
  }
  return total;
}

// In a forked child about to exec a server: if the test process dies (a
// crash, a timeout kill), the server dies too instead of running on.
inline void DieWithParent() { prctl(PR_SET_PDEATHSIG, SIGKILL); }

// Starts `args` (args[0] is the program's path) as a child that dies with
// the test; its stdout and stderr go to `output` when given. Its exit is NOT
// checked: prefer ChildProcess (child_process.h), which checks it.
inline pid_t Launch(std::vector<std::string> args, const std::string& output = "") {
  const pid_t pid = fork();
  if (pid != 0) return pid;
  if (!output.empty()) {
    const int fd = open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  DieWithParent();
  execv(argv[0], argv.data());
  _exit(127);
}

}  // namespace cachet::testing
