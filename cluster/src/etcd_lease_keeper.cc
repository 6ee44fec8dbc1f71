#include "cachet/cluster/etcd_lease_keeper.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <string>
#include <utility>

#include "etcd_transport.h"
#include "etcd_worker.h"

namespace cachet::cluster {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

Result<void> LeaseKeeperOptions::Validate() const {
  if (ttl_seconds < 1) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "lease TTL must be at least 1 second, got " + std::to_string(ttl_seconds));
  }
  if (interval < milliseconds(0) || interval >= std::chrono::seconds(ttl_seconds)) {
    return MakeError(ErrorCode::kInvalidArgument, "lease keepalive interval must be below the TTL (" +
                                                      std::to_string(ttl_seconds) + " s), got " +
                                                      std::to_string(interval.count()) + " ms");
  }
  return {};
}

struct LeaseKeeper::Impl {
  Impl(std::unique_ptr<detail::EtcdTransport> t, Lease l, milliseconds i, LostCallback cb, Clock::time_point granted)
      : transport(std::move(t)),
        lease(l),
        interval(i),
        on_lost(std::move(cb)),
        expires(granted + Seconds(l.ttl_seconds)),
        published_expiry(expires.time_since_epoch().count()) {}

  static milliseconds Seconds(int64_t seconds) { return milliseconds(seconds * 1000); }

  void Run();
  void Lose(Error why);

  const std::unique_ptr<detail::EtcdTransport> transport;
  const Lease lease;
  const milliseconds interval;
  const LostCallback on_lost;
  // The lease lives at least until here (only the keeper's thread moves it).
  Clock::time_point expires;
  std::atomic<Clock::rep> published_expiry;  // `expires`, for other threads
  std::atomic<bool> lost{false};
  detail::EtcdWorker worker{*transport};  // last: stopped before the rest goes
};

void LeaseKeeper::Impl::Lose(Error why) {
  lost.store(true, std::memory_order_release);
  on_lost(why);
}

void LeaseKeeper::Impl::Run() {
  // After a failed keepalive, try again sooner than the interval.
  const milliseconds retry = std::min(interval, milliseconds(50));
  Clock::time_point next = Clock::now() + interval;
  Error last_failure;
  const std::string name = "etcd lease " + std::to_string(lease.id);
  while (!worker.WaitUntil(std::min(next, expires))) {
    const Clock::time_point sent = Clock::now();
    if (sent >= expires) {
      Lose(Error{ErrorCode::kTimeout,
                 name + ": not renewed within its TTL of " + std::to_string(lease.ttl_seconds) +
                     " s; it may have expired" +
                     (last_failure.message.empty() ? "" : " (last: " + last_failure.message + ")")});
      break;
    }
    // Wait for an answer as long as one can still help (a slow etcd's late
    // answer extends the lease all the same), and no longer: the time the
    // lease surely lives, split over the endpoints a keepalive may try, so
    // that a loss is reported on time.
    const auto left = std::chrono::duration_cast<milliseconds>(expires - sent);
    const auto endpoints = static_cast<int64_t>(std::max<size_t>(1, transport->endpoint_count()));
    const milliseconds timeout = std::max(milliseconds(1), left / endpoints);
    auto ttl = detail::KeepLeaseAlive(*transport, lease.id, timeout);
    if (transport->stopped()) break;
    if (ttl && *ttl == 0) {
      Lose(Error{ErrorCode::kNotFound, name + ": etcd says it no longer exists (expired or revoked)"});
      break;
    }
    if (ttl) {
      expires = std::max(expires, sent + Impl::Seconds(*ttl));
      published_expiry.store(expires.time_since_epoch().count(), std::memory_order_release);
      next = sent + interval;
      last_failure = Error{};
    } else {
      last_failure = ttl.error();
      next = Clock::now() + retry;
    }
  }
}

Result<LeaseKeeper> LeaseKeeper::Start(const EtcdOptions& etcd, const LeaseKeeperOptions& options,
                                       LostCallback on_lost) {
  if (auto valid = options.Validate(); !valid) return tl::unexpected(valid.error());
  if (!on_lost) return MakeError(ErrorCode::kInvalidArgument, "lease keeper needs an on_lost callback");
  try {
    auto transport = detail::EtcdTransport::Create(etcd);
    if (!transport) return tl::unexpected(transport.error());
    const Clock::time_point asked = Clock::now();
    auto lease = detail::GrantLease(**transport, options.ttl_seconds);
    if (!lease) return tl::unexpected(lease.error());
    milliseconds interval = options.interval;
    if (interval == milliseconds(0)) interval = std::max(milliseconds(1), Impl::Seconds(lease->ttl_seconds) / 3);
    auto impl = std::make_unique<Impl>(std::move(*transport), *lease, interval, std::move(on_lost), asked);
    Impl* raw = impl.get();
    impl->worker.Start([raw] { raw->Run(); });
    return LeaseKeeper(std::move(impl));
  } catch (const std::exception& e) {
    return MakeError(ErrorCode::kInternal, std::string("etcd lease keeper: ") + e.what());
  }
}

LeaseKeeper::LeaseKeeper(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LeaseKeeper::LeaseKeeper(LeaseKeeper&&) noexcept = default;
LeaseKeeper& LeaseKeeper::operator=(LeaseKeeper&& other) noexcept {
  if (this != &other) {
    if (impl_) impl_->worker.Stop();
    impl_ = std::move(other.impl_);
  }
  return *this;
}
LeaseKeeper::~LeaseKeeper() {
  if (impl_) impl_->worker.Stop();
}

int64_t LeaseKeeper::lease_id() const { return impl_->lease.id; }
int64_t LeaseKeeper::ttl_seconds() const { return impl_->lease.ttl_seconds; }
bool LeaseKeeper::lost() const { return impl_->lost.load(std::memory_order_acquire); }
Clock::time_point LeaseKeeper::expires() const {
  return Clock::time_point(Clock::duration(impl_->published_expiry.load(std::memory_order_acquire)));
}

Result<void> LeaseKeeper::Revoke() {
  impl_->worker.Stop();
  // A fresh transport: Stop() has closed the keeper's own for good.
  auto transport = detail::EtcdTransport::Create(impl_->transport->options());
  if (!transport) return tl::unexpected(transport.error());
  try {
    return detail::RevokeLease(**transport, impl_->lease.id);
  } catch (const std::exception& e) {
    return MakeError(ErrorCode::kInternal, std::string("etcd lease revoke: ") + e.what());
  }
}

}  // namespace cachet::cluster
