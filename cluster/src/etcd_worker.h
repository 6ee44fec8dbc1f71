// EtcdWorker: the thread an EtcdWatch or a LeaseKeeper runs on, and how it
// is stopped without waiting on etcd. Private to the cluster library.
//
// Stop() raises the stop flag, wakes the body from WaitUntil(), and shuts
// the transport down, which ends any request the body is blocked in; it
// shuts it again every 10 ms until the body has returned, so that a
// connection being opened when it was first shut is shut too. Then it
// joins. Stop() may be called from any thread but the worker's, any number
// of times.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "etcd_transport.h"

namespace cachet::cluster::detail {

class EtcdWorker {
 public:
  explicit EtcdWorker(EtcdTransport& transport) : transport_(transport) {}
  ~EtcdWorker() { Stop(); }
  EtcdWorker(const EtcdWorker&) = delete;
  EtcdWorker& operator=(const EtcdWorker&) = delete;

  // Runs `body` on the worker's thread (may throw std::system_error).
  // REQUIRES: called once.
  void Start(std::function<void()> body);

  // For the body: waits until `deadline` or Stop(); true once stopped.
  bool WaitUntil(std::chrono::steady_clock::time_point deadline);
  bool stopping();

  void Stop();

 private:
  EtcdTransport& transport_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // GUARDED_BY(mu_)
  bool done_ = true;   // GUARDED_BY(mu_): no body is running
  std::thread thread_;
};

}  // namespace cachet::cluster::detail
