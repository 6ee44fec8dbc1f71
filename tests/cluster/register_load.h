// RegisterLoad: client threads that write and read a few registers through
// a cluster client until stopped, recording every operation in a history
// for the linearizability checker (linearizability.h). A write refused or
// timed out is recorded as unknown (it may have taken effect on a primary
// that then died); a failed read is dropped (a read changes nothing).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cachet/key_value_client.h"
#include "cluster/linearizability.h"

namespace cachet::testing {

class RegisterLoad {
 public:
  using Connect = std::function<std::unique_ptr<KeyValueClient>()>;

  // Starts `clients` threads over registers "reg:0" .. "reg:<keys - 1>",
  // each with a client from `connect`; two writes for every read.
  RegisterLoad(int clients, int keys, const Connect& connect) : keys_(keys) {
    for (int c = 0; c < clients; ++c) threads_.emplace_back([this, c, connect] { Run(c, connect()); });
  }
  ~RegisterLoad() { Stop(); }

  void Stop() {
    stop_ = true;
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  // After Stop: reads every register once more with `client` (as client
  // id `id`), so the history ends with the final values. Returns how many
  // of those reads failed.
  int ReadAll(KeyValueClient& client, int id) {
    int failed = 0;
    for (int i = 0; i < keys_; ++i) {
      const std::string key = "reg:" + std::to_string(i);
      const size_t op = history_.Invoke(id, key, OpKind::kRead);
      auto got = client.Get(key);
      failed += got ? 0 : 1;
      history_.Complete(op, got ? OpStatus::kOk : OpStatus::kFail, got ? *got : std::nullopt);
    }
    return failed;
  }

  HistoryRecorder& history() { return history_; }
  uint64_t acked_writes() const { return acked_writes_.load(); }

 private:
  void Run(int c, std::unique_ptr<KeyValueClient> client) {
    if (!client) return;
    for (uint64_t n = 1; !stop_; ++n) {
      const std::string key = "reg:" + std::to_string((n * 7 + static_cast<uint64_t>(c)) % keys_);
      if (n % 3 == 0) {
        const size_t op = history_.Invoke(c, key, OpKind::kRead);
        auto got = client->Get(key);
        history_.Complete(op, got ? OpStatus::kOk : OpStatus::kFail, got ? *got : std::nullopt);
        continue;
      }
      const std::string value = "c" + std::to_string(c) + "-" + std::to_string(n);
      const size_t op = history_.Invoke(c, key, OpKind::kWrite, value);
      if (client->Set(key, value)) {
        history_.Complete(op, OpStatus::kOk);
        ++acked_writes_;
      } else {
        history_.Complete(op, OpStatus::kUnknown);
      }
    }
  }

  const int keys_;
  HistoryRecorder history_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> acked_writes_{0};
  std::vector<std::thread> threads_;
};

}  // namespace cachet::testing
