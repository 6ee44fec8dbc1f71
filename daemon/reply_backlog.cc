#include "reply_backlog.h"

#include <cstring>
#include <new>

namespace cachet::daemon {

// Precedes the reply's bytes in one allocation; the message's hint.
struct ReplyBacklog::Block {
  std::atomic<uint64_t>* total;
  Account* account;
  uint64_t charged;
};

ReplyBacklog::ReplyBacklog(uint64_t per_connection, uint64_t total)
    : per_connection_(per_connection), total_limit_(total) {}

ReplyBacklog::~ReplyBacklog() = default;

void ReplyBacklog::SetLimits(uint64_t per_connection, uint64_t total) {
  per_connection_ = per_connection;
  total_limit_ = total;
}

std::optional<zmq::message_t> ReplyBacklog::Make(std::string_view routing_id, const char* data, size_t size) {
  auto it = accounts_.find(std::string(routing_id));
  if (it == accounts_.end()) it = accounts_.emplace(std::string(routing_id), std::make_unique<Account>()).first;
  Account* account = it->second.get();
  const uint64_t owed = account->bytes.load(std::memory_order_relaxed);
  if (owed != 0 && (owed >= per_connection_ || total_.load(std::memory_order_relaxed) >= total_limit_)) {
    return std::nullopt;
  }
  char* raw = static_cast<char*>(::operator new(sizeof(Block) + size));
  auto* block = new (raw) Block{&total_, account, size + kOverheadPerReply};
  std::memcpy(raw + sizeof(Block), data, size);
  // Release after the copy: the I/O thread that frees the block acquires
  // through these counters first.
  total_.fetch_add(block->charged, std::memory_order_release);
  account->replies.fetch_add(1, std::memory_order_relaxed);
  account->bytes.fetch_add(block->charged, std::memory_order_release);
  return zmq::message_t(raw + sizeof(Block), size, &ReplyBacklog::Release, block);
}

// On ZeroMQ's I/O thread (or the daemon's, for a message never sent).
void ReplyBacklog::Release(void* /*data*/, void* hint) {
  auto* block = static_cast<Block*>(hint);
  Account* account = block->account;
  const uint64_t charged = block->charged;
  block->total->fetch_sub(charged, std::memory_order_acq_rel);
  ::operator delete(static_cast<void*>(block));
  account->replies.fetch_sub(1, std::memory_order_relaxed);
  // Last: once the account reads 0 the daemon may delete it.
  account->bytes.fetch_sub(charged, std::memory_order_acq_rel);
}

uint64_t ReplyBacklog::RepliesOwed(std::string_view routing_id) const {
  auto it = accounts_.find(std::string(routing_id));
  return it == accounts_.end() ? 0 : it->second->replies.load(std::memory_order_relaxed);
}

void ReplyBacklog::Sweep() {
  for (auto it = accounts_.begin(); it != accounts_.end();) {
    if (it->second->bytes.load(std::memory_order_acquire) == 0) {
      it = accounts_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace cachet::daemon
