#include "cachet/client.h"

#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <mutex>
#include <thread>
#include <zmq.hpp>

#include "protocol.h"
#include "requests.h"
#include "stream.h"
#include "zmq_io.h"

namespace cachet {

using wire::Op;

namespace {

// Shared-memory reads re-check the daemon's segment (INFO) at most this often,
// each re-check waiting this long for the answer (a reader must not stall on
// a daemon that is down). Connect waits up to the client's timeout instead:
// a busy host must not leave a new client reading over the socket.
constexpr std::chrono::milliseconds kSegmentCheckInterval{1000};
constexpr std::chrono::milliseconds kSegmentCheckTimeout{100};

}  // namespace

// One ZeroMQ context (one I/O thread) for every Client and ClusterClient of
// the process: a service with many clients must not get a thread per
// client. Deliberately never destroyed: zmq_ctx_term at exit would wait for
// sockets of clients that static destructors have not closed yet. A forked
// child gets its own (a context's I/O thread does not survive fork).
zmq::context_t& zmqio::SharedContext() {
  static std::mutex mu;
  static zmq::context_t* context = nullptr;
  static pid_t owner = 0;
  std::lock_guard<std::mutex> lock(mu);
  if (context == nullptr || owner != getpid()) {
    context = new zmq::context_t(1);
    owner = getpid();
  }
  return *context;
}

namespace {

// CLOCK_MONOTONIC_COARSE in milliseconds: a few nanoseconds a read (vDSO,
// no syscall) at the kernel tick's resolution, plenty for a 1 s interval,
// so shared-memory reads can afford to look at it every time.
int64_t CoarseSteadyMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

}  // namespace

class Client::Impl {
 public:
  Impl(std::string endpoint, const ClientOptions& options) : endpoint_(std::move(endpoint)), options_(options) {}

  ~Impl() {
    std::lock_guard<std::mutex> lock(mu_);
    socket_.reset();
  }

  Result<void> Start() {
    if (endpoint_.rfind("ipc://", 0) != 0 && endpoint_.rfind("tcp://", 0) != 0 && !IsStream()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "endpoint '" + endpoint_ + "' must start with ipc:// (same host), tcp:// or stream://");
    }
    if (IsStream() && options_.curve.enabled()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "stream:// endpoints are clear text: use the daemon's tcp:// "
                       "endpoint for CURVE");
    }
    if (options_.timeout.count() <= 0 || options_.retries < 0 || options_.backoff.count() < 0) {
      return MakeError(ErrorCode::kInvalidArgument, "timeout must be positive; retries and backoff not negative");
    }
    if (auto ok = CheckIpcAccess(); !ok) return ok;
    if (endpoint_.rfind("ipc://", 0) == 0 && options_.shared_memory_reads) {
      std::lock_guard<std::mutex> lock(mu_);
      // Without the daemon there is no segment yet: reads go over the socket
      // until a later check attaches.
      last_check_ms_.store(CoarseSteadyMs(), std::memory_order_relaxed);
      (void)RefreshSegmentLocked(options_.timeout);
    }
    return {};
  }

  // One request/reply round trip with retries. `fill` appends the args.
  template <typename Fill>
  Result<wire::Reply> Call(Op op, uint32_t nargs, bool idempotent, Fill fill) {
    std::lock_guard<std::mutex> lock(mu_);
    return CallLocked(op, nargs, idempotent, fill);
  }

  // A request whose op, count and arguments are one of requests.h's Args.
  template <typename Args>
  Result<wire::Reply> Call(const Args& args, bool idempotent) {
    return Call(Args::kOp, Args::kCount, idempotent, args);
  }

  template <typename Fill>
  Result<wire::Reply> CallLocked(Op op, uint32_t nargs, bool idempotent, Fill fill) {
    return CallLocked(op, nargs, idempotent ? options_.retries + 1 : 1, options_.timeout, fill);
  }

  template <typename Fill>
  Result<wire::Reply> CallLocked(Op op, uint32_t nargs, int attempts, std::chrono::milliseconds timeout, Fill fill) {
    Error last{ErrorCode::kUnavailable, "no attempt made"};
    for (int attempt = 0; attempt < attempts; ++attempt) {
      if (attempt > 0) std::this_thread::sleep_for(options_.backoff * (1 << std::min(attempt - 1, 10)));
      const uint64_t id = next_id_++;
      writer_.Clear();
      writer_.BeginRequest(id, op, nargs);
      fill(writer_);
      auto reply = RoundTripLocked(id, timeout);
      if (reply) return reply;
      last = reply.error();
      if (last.code == ErrorCode::kProtocol) break;  // a confused peer: retrying will not help
    }
    return tl::unexpected(last);
  }

  // Lock-free read through the segment, or nullptr when not attached.
  Cache* SharedMemory() {
    Cache* shm = shm_.load(std::memory_order_acquire);
    // Once the check interval has passed, ask the daemon again (attached:
    // has it rebuilt the segment? not attached: is there one now?). By the
    // clock, not by a count of reads: a client that reads rarely must notice
    // a rebuilt segment as soon as one that reads all the time.
    if (shm == nullptr ||
        CoarseSteadyMs() - last_check_ms_.load(std::memory_order_relaxed) >= kSegmentCheckInterval.count()) {
      MaybeRecheckSegment();
      shm = shm_.load(std::memory_order_acquire);
    }
    return shm;
  }

  // Called after a socket failure on an ipc endpoint: the daemon may be back
  // with a new segment, or there may be one to attach for the first time.
  void MaybeRecheckSegment() {
    if (endpoint_.rfind("ipc://", 0) != 0 || !options_.shared_memory_reads) return;
    const int64_t now = CoarseSteadyMs();
    if (now - last_check_ms_.load(std::memory_order_relaxed) < kSegmentCheckInterval.count()) return;
    std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
    if (!lock.owns_lock()) return;  // another thread is talking to the daemon; check later
    last_check_ms_.store(now, std::memory_order_relaxed);
    (void)RefreshSegmentLocked(kSegmentCheckTimeout);
  }

  // A write through the segment when the daemon grants same-host writes:
  // its result, or nullopt to send the request over the socket instead (no
  // segment, no grant, or the grant withdrawn, as seen under the writer lock).
  template <typename Write>
  auto SharedWrite(Write write) -> std::optional<decltype(write(std::declval<Cache&>()))> {
    if (!options_.shared_memory_writes) return std::nullopt;
    Cache* shm = SharedMemory();
    if (shm == nullptr || !shm->ClientWritesGranted()) return std::nullopt;
    auto result = write(*shm);
    if (!result && result.error().code == ErrorCode::kUnavailable) {
      MaybeRecheckSegment();  // a rebuilt segment, or a daemon that changed its mind
      return std::nullopt;
    }
    return result;
  }

  bool writes_shared_memory() const {
    const Cache* shm = shm_.load(std::memory_order_acquire);
    return options_.shared_memory_writes && shm != nullptr && shm->ClientWritesGranted();
  }

  const std::string& endpoint() const { return endpoint_; }
  bool attached() const { return shm_.load(std::memory_order_acquire) != nullptr; }

  // The daemon's own rules (wire::CheckKey, CheckValue), applied before a
  // request goes out or a shared-memory read is made, so a key the daemon
  // would refuse is refused here with the same code, never read as a miss.
  // Until INFO tells the daemon's limits, the widest any daemon allows.
  Result<void> CheckKey(std::string_view key, size_t index = wire::kNoIndex) const {
    return wire::CheckKey(key, max_key_size_.load(std::memory_order_relaxed), index);
  }
  // For the same-host GET, which builds no Result unless the key is
  // refused: the limit read once, for the check and for the error.
  uint32_t max_key_size() const { return max_key_size_.load(std::memory_order_relaxed); }
  Result<void> CheckValue(std::string_view value, size_t index = wire::kNoIndex) const {
    return wire::CheckValue(value, max_value_size_.load(std::memory_order_relaxed), index);
  }

 private:
  // A socket file this process may not use would look like a daemon that
  // never answers: say why instead. (No file yet is fine: the daemon may
  // start later.)
  Result<void> CheckIpcAccess() const {
    if (endpoint_.rfind("ipc://", 0) != 0) return {};
    const std::string path = endpoint_.substr(6);
    if (::access(path.c_str(), R_OK | W_OK) == 0 || errno != EACCES) return {};
    struct stat st {};
    char mode[8] = "?";
    if (::stat(path.c_str(), &st) == 0)
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return MakeError(ErrorCode::kUnavailable, "permission denied on " + path + " (mode " + mode + ", uid " +
                                                  std::to_string(st.st_uid) + ", gid " + std::to_string(st.st_gid) +
                                                  "): the daemon's access-mode and access-group say "
                                                  "who may connect");
  }

  bool IsTcp() const { return endpoint_.rfind("tcp://", 0) == 0; }
  bool IsStream() const { return endpoint_.rfind(stream::kScheme, 0) == 0; }

  // A connection that never completes its handshake looks like a daemon
  // that is not there; over tcp, say what else it may be.
  std::string HandshakeHint() const {
    if (!IsTcp()) return "";
    if (options_.curve.enabled()) {
      return " (or it refused the handshake: is this client's public key in the daemon's curve-authorized-keys, "
             "and the server key the daemon's?)";
    }
    return " (or it refused the handshake: a daemon with CURVE admits only clients with keys)";
  }

  Result<void> OpenSocketLocked() {
    try {
      socket_ = std::make_unique<zmq::socket_t>(zmqio::SharedContext(), zmq::socket_type::dealer);
      socket_->set(zmq::sockopt::linger, 0);
      socket_->set(zmq::sockopt::immediate, 1);  // queue only to a live connection
      if (IsTcp()) zmqio::UseCurveClient(*socket_, options_.curve);
      zmqio::Connect(*socket_, endpoint_);
      return {};
    } catch (const zmq::error_t& e) {
      socket_.reset();
      return MakeError(ErrorCode::kInvalidArgument, "cannot connect to '" + endpoint_ + "': " + e.what());
    }
  }

  Result<wire::Reply> RoundTripLocked(uint64_t id, std::chrono::milliseconds timeout) {
    if (IsStream()) return StreamRoundTripLocked(id, timeout);
    if (!socket_) {
      if (auto ok = OpenSocketLocked(); !ok) return tl::unexpected(ok.error());
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    // Rounded up: a wait never ends before the deadline (truncating let an
    // attempt give up to a millisecond early).
    auto remaining = [&] {
      return std::max<int64_t>(
          0, std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
    };
    try {
      // Wait for a connection the request can go out on.
      zmq::pollitem_t out{static_cast<void*>(*socket_), 0, ZMQ_POLLOUT, 0};
      if (zmqio::Poll(&out, 1, std::chrono::milliseconds(remaining())) == 0) {
        socket_.reset();
        return MakeError(ErrorCode::kUnavailable, "cannot reach cachetd at " + endpoint_ + " within " +
                                                      std::to_string(timeout.count()) + " ms" + HandshakeHint());
      }
      if (!zmqio::Send(*socket_, zmq::const_buffer(writer_.data(), writer_.size()), zmq::send_flags::dontwait)) {
        socket_.reset();
        return MakeError(ErrorCode::kUnavailable, "cannot send to cachetd at " + endpoint_ + ": its queue is full");
      }
      for (;;) {
        zmq::pollitem_t in{static_cast<void*>(*socket_), 0, ZMQ_POLLIN, 0};
        if (zmqio::Poll(&in, 1, std::chrono::milliseconds(remaining())) == 0) {
          socket_.reset();  // a late reply must not be taken for the next request's
          return MakeError(ErrorCode::kTimeout, "no reply from cachetd at " + endpoint_ + " within " +
                                                    std::to_string(timeout.count()) + " ms");
        }
        zmq::message_t frame;
        if (!zmqio::Recv(*socket_, frame, zmq::recv_flags::dontwait)) continue;
        auto reply = wire::DecodeReply(static_cast<const char*>(frame.data()), frame.size());
        if (!reply) return tl::unexpected(reply.error());
        if (reply->id != id) continue;  // a reply to an earlier request that timed out
        return reply;
      }
    } catch (const zmq::error_t& e) {
      socket_.reset();
      return MakeError(ErrorCode::kUnavailable, "socket error talking to " + endpoint_ + ": " + e.what());
    }
  }

  // The same round trip on a stream endpoint: one sendmsg, one recv.
  Result<wire::Reply> StreamRoundTripLocked(uint64_t id, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    if (!stream_.connected()) {
      if (auto ok = stream_.Connect(endpoint_.substr(stream::kScheme.size()), timeout); !ok)
        return tl::unexpected(ok.error());
    }
    if (auto sent = stream_.Send(writer_.data(), writer_.size(), deadline); !sent) return tl::unexpected(sent.error());
    for (;;) {
      auto frame = stream_.Receive(deadline, kWidestReply);
      if (!frame) return tl::unexpected(frame.error());
      auto reply = wire::DecodeReply(frame->data(), frame->size());
      if (!reply) {
        stream_.Close();  // what follows in the stream cannot be trusted
        return tl::unexpected(reply.error());
      }
      if (reply->id == id) return reply;
    }
  }

  // Asks the daemon which segment it serves and attaches to it if new.
  // One attempt of INFO, waiting at most `wait` (and the client's timeout).
  Result<void> RefreshSegmentLocked(std::chrono::milliseconds wait) {
    auto reply = CallLocked(Op::kInfo, 0, 1, std::min(options_.timeout, wait), [](wire::Writer&) {});
    if (!reply) return tl::unexpected(reply.error());
    if (reply->status != ErrorCode::kOk || reply->payload->type != msgpack::type::MAP) {
      return tl::unexpected(wire::UnexpectedPayload("INFO"));
    }
    std::string segment;
    uint64_t generation = 0;
    const msgpack::object_map& map = reply->payload->via.map;
    for (uint32_t i = 0; i < map.size; ++i) {
      const std::string name = wire::ToString(map.ptr[i].key);
      if (name == "segment" && wire::IsBytes(map.ptr[i].val)) segment = wire::ToString(map.ptr[i].val);
      if (map.ptr[i].val.type != msgpack::type::POSITIVE_INTEGER) continue;
      const uint64_t v = map.ptr[i].val.via.u64;
      if (name == "generation") generation = v;
      if (name == "max_key_size" && v <= kWidestKey) max_key_size_.store(static_cast<uint32_t>(v));
      if (name == "max_value_size" && v <= kWidestValue) max_value_size_.store(static_cast<uint32_t>(v));
    }
    if (segment.empty()) {
      // The daemon offers no segment (a strong-mode cluster node): reads go
      // over the socket. Mappings stay alive for readers still using one.
      shm_.store(nullptr, std::memory_order_release);
      return {};
    }
    if (shm_.load(std::memory_order_relaxed) != nullptr && segment == segment_ && generation == generation_) return {};
    auto opened = Cache::OpenNamed(segment);
    if (!opened) return tl::unexpected(opened.error());
    if ((*opened)->Stats().generation != generation) {
      return MakeError(ErrorCode::kUnavailable, "segment changed while attaching; will retry");
    }
    // Old mappings stay alive: a reader in another thread may still use one.
    mappings_.push_back(std::move(*opened));
    segment_ = segment;
    generation_ = generation;
    shm_.store(mappings_.back().get(), std::memory_order_release);
    return {};
  }

  const std::string endpoint_;
  const ClientOptions options_;
  std::mutex mu_;  // guards everything below except the atomics
  std::unique_ptr<zmq::socket_t> socket_;
  stream::Connection stream_;  // stream:// endpoints, instead of socket_
  uint64_t next_id_ = 1;
  wire::Writer writer_;
  std::vector<std::unique_ptr<Cache>> mappings_;
  std::string segment_;
  uint64_t generation_ = 0;
  std::atomic<Cache*> shm_{nullptr};
  std::atomic<int64_t> last_check_ms_{0};
  // The widest limits CacheOptions::Validate lets a daemon have.
  static constexpr uint32_t kWidestKey = 65535;
  static constexpr uint32_t kWidestValue = 1u << 30;
  // No reply is larger than an MGET of a full frame's worth of values.
  static constexpr size_t kWidestReply = size_t{4} << 30;
  std::atomic<uint32_t> max_key_size_{kWidestKey};
  std::atomic<uint32_t> max_value_size_{kWidestValue};
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

Result<std::unique_ptr<Client>> Client::Connect(const std::string& endpoint, const ClientOptions& options) {
  auto impl = std::make_unique<Impl>(endpoint, options);
  if (auto ok = impl->Start(); !ok) return tl::unexpected(ok.error());
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

bool Client::ReadsSharedMemory() const { return impl_->attached(); }
bool Client::WritesSharedMemory() const { return impl_->writes_shared_memory(); }
const std::string& Client::endpoint() const { return impl_->endpoint(); }

Result<void> Client::Ping() {
  return wire::VoidPayload(impl_->Call(Op::kPing, 0, true, [](wire::Writer&) {}));
}

Result<std::optional<std::string>> Client::Get(std::string_view key) {
  std::string value;
  auto found = GetInto(key, &value);
  if (!found) return tl::unexpected(found.error());
  if (!*found) return std::optional<std::string>();
  return std::optional<std::string>(std::move(value));
}

Result<bool> Client::GetInto(std::string_view key, std::string* value) {
  if (const uint32_t max = impl_->max_key_size(); !wire::KeyFits(key, max)) {
    return tl::unexpected(wire::CheckKey(key, max).error());
  }
  if (Cache* shm = impl_->SharedMemory()) return shm->GetInto(key, value);
  auto found = wire::ValuePayload(impl_->Call(Op::kGet, 1, true, [&](wire::Writer& w) { w.Bytes(key); }), value);
  if (!found) impl_->MaybeRecheckSegment();
  return found;
}

Result<bool> Client::Set(std::string_view key, std::string_view value, const SetOptions& options) {
  const bool idempotent = options.condition == SetCondition::kAlways;
  if (auto ok = impl_->CheckKey(key); !ok) return tl::unexpected(ok.error());
  if (auto ok = impl_->CheckValue(value); !ok) return tl::unexpected(ok.error());
  if (auto ok = wire::CheckTtl(options.ttl.count(), wire::TtlUse::kOnWrite); !ok) return tl::unexpected(ok.error());
  if (auto done = impl_->SharedWrite([&](Cache& shm) { return shm.GuestSet(key, value, options); })) return *done;
  return wire::BoolPayload(impl_->Call(wire::SetArgs{key, value, options}, idempotent), "SET");
}

Result<bool> Client::Del(std::string_view key) {
  if (auto ok = impl_->CheckKey(key); !ok) return tl::unexpected(ok.error());
  if (auto done = impl_->SharedWrite([&](Cache& shm) { return shm.GuestErase(key); })) return *done;
  return wire::BoolPayload(impl_->Call(Op::kDel, 1, true, [&](wire::Writer& w) { w.Bytes(key); }), "DEL");
}

Result<bool> Client::Exists(std::string_view key) {
  if (auto ok = impl_->CheckKey(key); !ok) return tl::unexpected(ok.error());
  if (Cache* shm = impl_->SharedMemory()) return shm->Contains(key);
  return wire::BoolPayload(impl_->Call(Op::kExists, 1, true, [&](wire::Writer& w) { w.Bytes(key); }), "EXISTS");
}

Result<bool> Client::Expire(std::string_view key, std::chrono::milliseconds ttl) {
  if (auto ok = impl_->CheckKey(key); !ok) return tl::unexpected(ok.error());
  if (auto ok = wire::CheckTtl(ttl.count(), wire::TtlUse::kExpire); !ok) return tl::unexpected(ok.error());
  if (auto done = impl_->SharedWrite([&](Cache& shm) { return shm.GuestExpire(key, ttl); })) return *done;
  return wire::BoolPayload(impl_->Call(wire::ExpireArgs{key, ttl}, true), "EXPIRE");
}

Result<std::optional<std::chrono::milliseconds>> Client::Ttl(std::string_view key) {
  if (auto ok = impl_->CheckKey(key); !ok) return tl::unexpected(ok.error());
  if (Cache* shm = impl_->SharedMemory()) return shm->Ttl(key);
  return wire::TtlPayload(impl_->Call(Op::kTtl, 1, true, [&](wire::Writer& w) { w.Bytes(key); }));
}

Result<int64_t> Client::Incr(std::string_view key, int64_t delta, std::chrono::milliseconds ttl_on_create) {
  if (auto ok = impl_->CheckKey(key); !ok) return tl::unexpected(ok.error());
  if (auto ok = wire::CheckTtl(ttl_on_create.count(), wire::TtlUse::kOnWrite); !ok) {
    return tl::unexpected(ok.error());
  }
  if (auto done = impl_->SharedWrite([&](Cache& shm) { return shm.GuestIncr(key, delta, ttl_on_create); })) {
    return *done;
  }
  return wire::IntPayload(impl_->Call(wire::IncrArgs{key, delta, ttl_on_create}, false), "INCR");
}

Result<int64_t> Client::Decr(std::string_view key, int64_t delta) {
  if (auto ok = impl_->CheckKey(key); !ok) return tl::unexpected(ok.error());
  // -2^63 has no negation: the daemon refuses it, with its own message.
  if (delta != INT64_MIN) {
    if (auto done =
            impl_->SharedWrite([&](Cache& shm) { return shm.GuestIncr(key, -delta, std::chrono::milliseconds(0)); }))
      return *done;
  }
  return wire::IntPayload(impl_->Call(wire::DecrArgs{key, delta}, false), "DECR");
}

Result<std::vector<std::optional<std::string>>> Client::MGet(const std::vector<std::string>& keys) {
  std::vector<std::optional<std::string>> out(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    if (auto ok = impl_->CheckKey(keys[i], i); !ok) return tl::unexpected(ok.error());
  }
  if (keys.empty()) return out;  // the wire has no empty MGET
  if (Cache* shm = impl_->SharedMemory()) {
    for (size_t i = 0; i < keys.size(); ++i) {
      shm->PrefetchAhead(i, keys.size(), [&](size_t k) { return std::string_view(keys[k]); });
      out[i] = shm->Get(keys[i]);
    }
    return out;
  }
  // The payload points into the reply: keep the reply alive while reading it.
  const auto reply = impl_->Call(Op::kMGet, static_cast<uint32_t>(keys.size()), true, [&](wire::Writer& w) {
    for (const std::string& k : keys) w.Bytes(k);
  });
  auto p = wire::Payload(reply);
  if (!p) return tl::unexpected(p.error());
  if ((*p)->type != msgpack::type::ARRAY || (*p)->via.array.size != keys.size()) {
    return tl::unexpected(wire::UnexpectedPayload("MGET"));
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    const msgpack::object& v = (*p)->via.array.ptr[i];
    if (wire::IsBytes(v)) out[i] = wire::ToString(v);
  }
  return out;
}

Result<void> Client::MSet(const std::vector<std::pair<std::string, std::string>>& items) {
  for (size_t i = 0; i < items.size(); ++i) {
    if (auto ok = impl_->CheckKey(items[i].first, i); !ok) return tl::unexpected(ok.error());
    if (auto ok = impl_->CheckValue(items[i].second, i); !ok) {
      return tl::unexpected(ok.error());
    }
  }
  if (items.empty()) return {};  // the wire has no empty MSET
  // Item by item, as the daemon's MSET stores them. If the grant goes
  // midway, the whole batch goes over the socket: SETs may be repeated.
  auto shared = impl_->SharedWrite([&](Cache& shm) -> Result<void> {
    for (size_t i = 0; i < items.size(); ++i) {
      shm.PrefetchAhead(i, items.size(), [&](size_t k) { return std::string_view(items[k].first); });
      if (auto stored = shm.GuestSet(items[i].first, items[i].second); !stored) {
        return tl::unexpected(stored.error());
      }
    }
    return {};
  });
  if (shared) return *shared;
  return wire::VoidPayload(impl_->Call(Op::kMSet, static_cast<uint32_t>(items.size() * 2), true, [&](wire::Writer& w) {
    for (const auto& [k, v] : items) {
      w.Bytes(k);
      w.Bytes(v);
    }
  }));
}

Result<Cache::ScanPage> Client::Scan(uint64_t cursor, std::string_view pattern, uint32_t count) {
  const auto reply = impl_->Call(Op::kScan, 3, true, [&](wire::Writer& w) {
    w.Uint(cursor);
    w.Bytes(pattern);
    w.Uint(count);
  });
  auto p = wire::Payload(reply);
  if (!p) return tl::unexpected(p.error());
  const msgpack::object& o = **p;
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 2 ||
      o.via.array.ptr[0].type != msgpack::type::POSITIVE_INTEGER || o.via.array.ptr[1].type != msgpack::type::ARRAY) {
    return tl::unexpected(wire::UnexpectedPayload("SCAN"));
  }
  Cache::ScanPage page;
  page.cursor = o.via.array.ptr[0].via.u64;
  const msgpack::object_array& keys = o.via.array.ptr[1].via.array;
  for (uint32_t i = 0; i < keys.size; ++i) {
    if (!wire::IsBytes(keys.ptr[i])) return tl::unexpected(wire::UnexpectedPayload("SCAN"));
    page.keys.push_back(wire::ToString(keys.ptr[i]));
  }
  return page;
}

Result<StatsList> Client::Stats() {
  const auto reply = impl_->Call(Op::kStats, 0, true, [](wire::Writer&) {});
  auto p = wire::Payload(reply);
  if (!p) return tl::unexpected(p.error());
  if ((*p)->type != msgpack::type::MAP) return tl::unexpected(wire::UnexpectedPayload("STATS"));
  StatsList out;
  const msgpack::object_map& map = (*p)->via.map;
  for (uint32_t i = 0; i < map.size; ++i) {
    auto v = wire::IntArg(map.ptr[i].val, "stat");
    if (!wire::IsBytes(map.ptr[i].key) || !v) return tl::unexpected(wire::UnexpectedPayload("STATS"));
    out.emplace_back(wire::ToString(map.ptr[i].key), *v);
  }
  return out;
}

Result<void> Client::Flush() {
  return wire::VoidPayload(impl_->Call(Op::kFlush, 0, true, [](wire::Writer&) {}));
}

Result<Decision> Client::RateLimit(std::string_view key, std::string_view tier, uint64_t cost) {
  return wire::DecisionPayload(impl_->Call(wire::RateLimitArgs{key, tier, cost}, false));
}

Result<void> Client::Reload() {
  return wire::VoidPayload(impl_->Call(Op::kReload, 0, false, [](wire::Writer&) {}));
}

}  // namespace cachet
