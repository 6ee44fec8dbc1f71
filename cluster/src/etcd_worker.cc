#include "etcd_worker.h"

#include <utility>

namespace cachet::cluster::detail {

void EtcdWorker::Start(std::function<void()> body) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = false;
  }
  thread_ = std::thread([this, body = std::move(body)] {
    body();
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    cv_.notify_all();
  });
}

bool EtcdWorker::WaitUntil(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_until(lock, deadline, [this] { return stop_; });
}

bool EtcdWorker::stopping() {
  std::lock_guard<std::mutex> lock(mu_);
  return stop_;
}

void EtcdWorker::Stop() {
  std::unique_lock<std::mutex> lock(mu_);
  stop_ = true;
  cv_.notify_all();
  while (!done_) {
    lock.unlock();
    transport_.Stop();
    lock.lock();
    cv_.wait_for(lock, std::chrono::milliseconds(10), [this] { return done_; });
  }
  lock.unlock();
  if (thread_.joinable()) thread_.join();
}

}  // namespace cachet::cluster::detail
