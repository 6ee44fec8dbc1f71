// EtcdServer: Debian's etcd (3.4), started by a test as a one-member
// cluster on free loopback client and peer ports, with a data directory of
// its own. Start() returns once etcd answers /health with a leader elected
// (the ports are open well before that). The server runs as a ChildProcess:
// Stop() (SIGTERM) expects a clean shutdown, Kill() is the opt-out for
// outage tests, Pause()/Resume() hang it with SIGSTOP/SIGCONT; the
// destructor stops it and removes its directory.
//
// Tests using it define ETCD_PATH and link cpp-httplib; in
// tests/CMakeLists.txt, cachet_test(... LABELS etcd) does both.
#pragma once

#include <signal.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "child_process.h"
#include "test_util.h"

namespace cachet::testing {

class EtcdServer {
 public:
  // etcd ends its clean shutdown by raising SIGTERM again on itself.
  static constexpr int kCleanExit = 128 + SIGTERM;

  EtcdServer() { std::filesystem::create_directories(dir_); }
  ~EtcdServer() {
    Stop();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  EtcdServer(const EtcdServer&) = delete;
  EtcdServer& operator=(const EtcdServer&) = delete;

  // Starts etcd and waits until it is healthy. Ports are taken afresh
  // (again if one was taken meanwhile); a restart keeps its ports and its
  // data, so clients and leases find it again.
  ::testing::AssertionResult Start() {
    if (child_) return ::testing::AssertionFailure() << "etcd is already running";
    std::string log;
    for (int attempt = 0; attempt < 5; ++attempt) {
      if (client_port_ == 0 || attempt > 0) {
        client_port_ = FreeLoopbackPort();
        peer_port_ = FreeLoopbackPort();
      }
      const std::string client_url = "http://127.0.0.1:" + std::to_string(client_port_);
      const std::string peer_url = "http://127.0.0.1:" + std::to_string(peer_port_);
      // A 50 ms heartbeat and a 500 ms election timeout (10 heartbeats, as
      // etcd's defaults of 100/1000) let leases of 1 s live as asked: etcd
      // raises every TTL to at least 1.5 election timeouts, which with the
      // defaults would turn a node's 1 s lease into 2 s.
      child_.emplace(ChildProcess::Exec({ETCD_PATH,
                                         "--name",
                                         "cachet-test",
                                         "--data-dir",
                                         dir_ + "/data",
                                         "--listen-client-urls",
                                         client_url,
                                         "--advertise-client-urls",
                                         client_url,
                                         "--listen-peer-urls",
                                         peer_url,
                                         "--initial-advertise-peer-urls",
                                         peer_url,
                                         "--initial-cluster",
                                         "cachet-test=" + peer_url,
                                         "--initial-cluster-state",
                                         "new",
                                         "--heartbeat-interval",
                                         "50",
                                         "--election-timeout",
                                         "500",
                                         "--logger",
                                         "zap",
                                         "--log-outputs",
                                         "stderr",
                                         "--log-level",
                                         "warn"}));
      bool up = false;
      WaitUntil([&] { return (up = Healthy()) || child_->Exited(); }, std::chrono::seconds(20),
                std::chrono::milliseconds(20));
      if (up) return ::testing::AssertionSuccess();
      const bool exited = child_->Exited();
      log = child_->err();
      child_->Stop(ChildProcess::kAnyExit);
      child_.reset();
      if (!exited) break;  // hung, not a taken port: no point in another try
      std::error_code ignored;
      std::filesystem::remove_all(dir_ + "/data", ignored);
    }
    return ::testing::AssertionFailure() << "etcd did not become healthy; its log:\n" << log;
  }

  // SIGTERM: etcd must shut down cleanly and log nothing fatal.
  void Stop() {
    if (!child_) return;
    child_->Stop(kCleanExit);
    CheckLog();
    child_.reset();
  }
  // SIGKILL: an outage, not a clean stop.
  void Kill() {
    if (!child_) return;
    child_->Kill();
    child_.reset();
  }
  // SIGSTOP / SIGCONT: a hung etcd (its sockets stay open; nothing answers).
  // Returns once every thread of etcd is stopped: a SIGSTOP reaches them
  // one by one, and one still running can answer a request sent meanwhile.
  void Pause() {
    if (!child_) return;
    child_->Signal(SIGSTOP);
    const pid_t pid = child_->pid();
    if (!WaitUntil([pid] { return AllThreadsStopped(pid); }, std::chrono::seconds(5), std::chrono::milliseconds(1))) {
      ADD_FAILURE() << "etcd (pid " << pid << ") did not stop within 5 s of SIGSTOP";
    }
  }
  void Resume() {
    if (child_) child_->Signal(SIGCONT);
  }

  // The client URL, as EtcdOptions::endpoints takes it.
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(client_port_); }
  int client_port() const { return client_port_; }
  bool running() const { return child_.has_value(); }

  // GET /health within 1 s says {"health":"true"}: a leader is elected and
  // the member serves requests.
  bool Healthy() const {
    httplib::Client client("127.0.0.1", client_port_);
    client.set_connection_timeout(std::chrono::seconds(1));
    client.set_read_timeout(std::chrono::seconds(1));
    const httplib::Result res = client.Get("/health");
    return res && res->status == 200 && res->body.find("\"health\":\"true\"") != std::string::npos;
  }

 private:
  void CheckLog() const {
    const std::string log = child_->err();
    for (const char* bad : {"\"level\":\"fatal\"", "\"level\":\"panic\"", "panic:", "DATA RACE"}) {
      if (log.find(bad) != std::string::npos) ADD_FAILURE() << "etcd logged " << bad << ":\n" << log;
    }
  }

  const std::string dir_ = "/tmp/" + UniqueSegmentName("etcd");
  int client_port_ = 0;
  int peer_port_ = 0;
  std::optional<ChildProcess> child_;
};

}  // namespace cachet::testing
