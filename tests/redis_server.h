// RedisServer: Debian's redis-server, started by a test in a directory of its
// own, listening on a unix socket of its own or on a free loopback tcp port,
// with persistence off. Start() returns once the server answers PING (a
// socket file exists before Redis listens on it, so its presence proves
// nothing). The server runs as a ChildProcess: Stop() (SIGTERM) expects a
// clean exit, Kill() is the opt-out for outage tests; the destructor stops
// it and removes its directory.
//
// Tests using it link PkgConfig::HIREDIS and define REDIS_SERVER_PATH; in
// tests/CMakeLists.txt, cachet_test(... REDIS) does both and adds the label
// "redis".
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "child_process.h"
#include "test_util.h"

namespace cachet::testing {

class RedisServer {
 public:
  enum class Listen { kUnixSocket, kTcp };

  explicit RedisServer(Listen listen = Listen::kUnixSocket) : listen_(listen) {
    std::filesystem::create_directories(dir_);
  }
  ~RedisServer() {
    Stop();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // Starts redis-server and waits until it answers PING. A tcp server takes
  // a free port (tried again on another if the port was taken meanwhile);
  // a restart reuses its port or socket, so clients find it again.
  ::testing::AssertionResult Start() {
    if (child_) return ::testing::AssertionFailure() << "redis-server is already running";
    for (int attempt = 0; attempt < 5; ++attempt) {
      if (listen_ == Listen::kTcp && (port_ == 0 || attempt > 0)) port_ = FreeLoopbackPort();
      std::vector<std::string> args = {REDIS_SERVER_PATH, "--save", "",          "--appendonly",     "no",
                                       "--dir",           dir_,     "--logfile", dir_ + "/redis.log"};
      if (listen_ == Listen::kTcp) {
        args.insert(args.end(), {"--bind", "127.0.0.1", "--port", std::to_string(port_)});
      } else {
        args.insert(args.end(), {"--port", "0", "--unixsocket", socket_, "--unixsocketperm", "700"});
      }
      child_.emplace(ChildProcess::Exec(args));
      bool up = false;
      WaitUntil([&] { return (up = Ping()) || child_->Exited(); }, std::chrono::seconds(10));
      if (up) return ::testing::AssertionSuccess();
      const bool exited = child_->Exited();
      child_->Stop(ChildProcess::kAnyExit);
      child_.reset();
      if (!exited || listen_ != Listen::kTcp) break;  // only a taken port is worth another try
    }
    return ::testing::AssertionFailure() << "redis-server did not answer PING; its log:\n"
                                         << ReadFile(dir_ + "/redis.log");
  }

  // SIGTERM; redis-server must exit with 0.
  void Stop() {
    if (!child_) return;
    child_->Stop();
    child_.reset();
    unlink(socket_.c_str());
  }
  // SIGKILL: an outage, not a clean stop.
  void Kill() {
    if (!child_) return;
    child_->Kill();
    child_.reset();
  }

  // The address RedisRateLimiter::Connect takes: "unix:/path" or "127.0.0.1:port".
  std::string address() const {
    return listen_ == Listen::kTcp ? "127.0.0.1:" + std::to_string(port_) : "unix:" + socket_;
  }
  bool running() const { return child_.has_value(); }
  pid_t pid() const { return child_ ? child_->pid() : -1; }

  // One PING over a fresh connection: true if the answer is PONG.
  bool Ping() const {
    const timeval limit{1, 0};
    redisContext* c = listen_ == Listen::kTcp ? redisConnectWithTimeout("127.0.0.1", port_, limit)
                                              : redisConnectUnixWithTimeout(socket_.c_str(), limit);
    bool pong = false;
    if (c != nullptr && c->err == 0 && redisSetTimeout(c, limit) == REDIS_OK) {
      auto* reply = static_cast<redisReply*>(redisCommand(c, "PING"));
      pong = reply != nullptr && reply->type == REDIS_REPLY_STATUS && std::string(reply->str, reply->len) == "PONG";
      if (reply != nullptr) freeReplyObject(reply);
    }
    if (c != nullptr) redisFree(c);
    return pong;
  }

 private:
  const Listen listen_;
  const std::string dir_ = "/tmp/" + UniqueSegmentName("redis");
  const std::string socket_ = dir_ + "/redis.sock";
  int port_ = 0;
  std::optional<ChildProcess> child_;
};

}  // namespace cachet::testing
