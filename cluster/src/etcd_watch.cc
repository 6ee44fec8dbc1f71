#include "cachet/cluster/etcd_watch.h"

#include <atomic>
#include <exception>
#include <utility>

#include "etcd_transport.h"
#include "etcd_worker.h"

namespace cachet::cluster {

using detail::Answer;
using detail::Json;

Result<void> WatchOptions::Validate() const {
  if (start_revision < 1) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "watch start_revision must be at least 1, got " + std::to_string(start_revision));
  }
  if (idle_timeout < std::chrono::milliseconds(1) || retry_interval < std::chrono::milliseconds(1)) {
    return MakeError(ErrorCode::kInvalidArgument, "watch idle_timeout and retry_interval must be at least 1 ms");
  }
  return {};
}

struct EtcdWatch::Impl {
  Impl(std::unique_ptr<detail::EtcdTransport> t, WatchOptions o, Callback cb)
      : transport(std::move(t)),
        options(std::move(o)),
        callback(std::move(cb)),
        next_revision(options.start_revision) {}

  void Run();
  // How one stream went.
  struct StreamEnd {
    bool created = false;  // etcd confirmed the watch
    bool faulty = false;   // ended by a bad message or a cancel, not by the connection
    Error error;           // why it ended
  };
  StreamEnd RunStream();
  // Handles one message of the stream; false ends the stream (`end` says why).
  bool OnMessage(const Answer& message, StreamEnd& end);

  const std::unique_ptr<detail::EtcdTransport> transport;
  const WatchOptions options;
  const Callback callback;
  std::atomic<int64_t> next_revision;
  detail::EtcdWorker worker{*transport};  // last: stopped before the rest goes
};

void EtcdWatch::Impl::Run() {
  bool lost_reported = false;
  while (!worker.stopping()) {
    const auto opened_at = std::chrono::steady_clock::now();
    StreamEnd end = RunStream();
    if (worker.stopping()) break;
    const bool healthy = end.created && !end.faulty;
    if (healthy) {
      lost_reported = false;
    } else if (!lost_reported) {
      lost_reported = true;
      WatchUpdate update;
      update.kind = WatchUpdate::Kind::kLost;
      update.error = std::move(end.error);
      callback(update);
    }
    // A stream that ran a while is opened again at once; otherwise wait, so
    // an etcd that accepts and drops streams is not hammered.
    if (healthy && std::chrono::steady_clock::now() - opened_at >= options.retry_interval) continue;
    worker.WaitUntil(std::chrono::steady_clock::now() + options.retry_interval);
  }
}

EtcdWatch::Impl::StreamEnd EtcdWatch::Impl::RunStream() {
  Json create = detail::KeyRangeJson(options.key, options.prefix);
  create["start_revision"] = std::to_string(next_revision.load(std::memory_order_relaxed));
  std::string pending;  // bytes of a message not yet complete
  StreamEnd end;
  Error transport_error = transport->Stream(
      "/v3/watch", Json{{"create_request", create}}, options.idle_timeout,
      [&](std::string_view bytes, const std::string& endpoint) {
        pending.append(bytes);
        // The gateway ends each message with a newline (JSON never has a raw one).
        size_t start = 0;
        for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
          const std::string_view line(pending.data() + start, nl - start);
          if (line.find_first_not_of(" \r\t") == std::string_view::npos) continue;
          if (!OnMessage(Answer{Json::parse(line, nullptr, false), endpoint}, end)) return false;
        }
        pending.erase(0, start);
        if (pending.size() > (64u << 20)) {
          end.faulty = true;
          end.error = Error{ErrorCode::kProtocol, "etcd at " + endpoint + ": a watch message over 64 MiB"};
          return false;
        }
        return true;
      });
  if (end.error.code == ErrorCode::kOk) end.error = std::move(transport_error);
  return end;
}

bool EtcdWatch::Impl::OnMessage(const Answer& message, StreamEnd& end) {
  // Any failure below is a fault of the stream, not of the connection.
  end.faulty = true;
  Error& ended = end.error;
  auto result = detail::StreamResult(message, message.body);
  if (!result) {
    ended = result.error();
    return false;
  }
  const Json& r = **result;
  auto was_created = detail::BoolField(message, r, "created");
  auto canceled = detail::BoolField(message, r, "canceled");
  auto compact_revision = detail::Int64Field(message, r, "compact_revision");
  for (const auto* e : {was_created ? nullptr : &was_created.error(), canceled ? nullptr : &canceled.error(),
                        compact_revision ? nullptr : &compact_revision.error()}) {
    if (e != nullptr) {
      ended = *e;
      return false;
    }
  }
  if (*was_created) end.created = true;
  if (*compact_revision > 0) {
    // Reported here, not a loss: the watch resumes where etcd's history starts.
    end.faulty = false;
    end.created = true;
    next_revision.store(*compact_revision, std::memory_order_relaxed);
    WatchUpdate update;
    update.kind = WatchUpdate::Kind::kCompacted;
    update.revision = *compact_revision;
    callback(update);
    ended = Error{ErrorCode::kInvalidArgument, "etcd at " + message.endpoint + ": history compacted up to revision " +
                                                   std::to_string(*compact_revision)};
    return false;
  }
  if (*canceled) {
    std::string reason;
    if (const auto it = r.find("cancel_reason"); it != r.end() && it->is_string()) reason = it->get<std::string>();
    ended = Error{ErrorCode::kUnavailable, "etcd at " + message.endpoint + " canceled the watch: " + reason};
    return false;
  }
  end.faulty = false;
  const auto events = r.find("events");
  if (events == r.end() || events->is_null()) return true;  // created, or a progress notice
  end.faulty = true;
  if (!events->is_array()) {
    ended = detail::ProtocolError(message, "watch events is not an array");
    return false;
  }
  auto revision = detail::HeaderRevision(message, r);
  if (!revision) {
    ended = revision.error();
    return false;
  }
  WatchUpdate update;
  update.kind = WatchUpdate::Kind::kEvents;
  update.revision = *revision;
  const int64_t from = next_revision.load(std::memory_order_relaxed);
  int64_t last = 0;
  for (const Json& e : *events) {
    const auto kv = e.is_object() ? e.find("kv") : e.end();
    if (!e.is_object() || kv == e.end()) {
      ended = detail::ProtocolError(message, "a watch event without kv");
      return false;
    }
    WatchEvent event;
    if (const auto type = e.find("type"); type != e.end() && !type->is_null()) {
      if (*type == "DELETE" || *type == 1) {
        event.type = WatchEvent::Type::kDelete;
      } else if (!(*type == "PUT" || *type == 0)) {
        ended = detail::ProtocolError(message, "a watch event of type " + type->dump());
        return false;
      }
    }
    auto parsed = detail::ParseKeyValue(message, *kv);
    if (!parsed) {
      ended = parsed.error();
      return false;
    }
    event.kv = std::move(*parsed);
    if (event.kv.mod_revision < from) continue;  // already delivered before a reconnect
    if (event.kv.mod_revision < last) {
      ended = detail::ProtocolError(message, "watch events out of revision order");
      return false;
    }
    last = event.kv.mod_revision;
    update.events.push_back(std::move(event));
  }
  end.faulty = false;
  if (update.events.empty()) return true;
  next_revision.store(last + 1, std::memory_order_relaxed);
  callback(update);
  return true;
}

Result<EtcdWatch> EtcdWatch::Start(const EtcdOptions& etcd, WatchOptions options, Callback callback) {
  if (auto valid = options.Validate(); !valid) return tl::unexpected(valid.error());
  if (!callback) return MakeError(ErrorCode::kInvalidArgument, "watch needs a callback");
  auto transport = detail::EtcdTransport::Create(etcd);
  if (!transport) return tl::unexpected(transport.error());
  try {
    auto impl = std::make_unique<Impl>(std::move(*transport), std::move(options), std::move(callback));
    Impl* raw = impl.get();
    impl->worker.Start([raw] { raw->Run(); });
    return EtcdWatch(std::move(impl));
  } catch (const std::exception& e) {
    return MakeError(ErrorCode::kInternal, std::string("etcd watch: cannot start its thread: ") + e.what());
  }
}

EtcdWatch::EtcdWatch(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EtcdWatch::EtcdWatch(EtcdWatch&&) noexcept = default;
EtcdWatch& EtcdWatch::operator=(EtcdWatch&& other) noexcept {
  if (this != &other) {
    if (impl_) impl_->worker.Stop();
    impl_ = std::move(other.impl_);
  }
  return *this;
}
EtcdWatch::~EtcdWatch() {
  if (impl_) impl_->worker.Stop();
}

int64_t EtcdWatch::next_revision() const { return impl_->next_revision.load(std::memory_order_relaxed); }

}  // namespace cachet::cluster
