#include "cachet/daemon_rate_limiter.h"

#include "cachet/client.h"
#include "store_health.h"

namespace cachet {

class DaemonRateLimiter::Impl {
 public:
  Impl(std::unique_ptr<Client> client, const DaemonRateLimiterOptions& options, std::unique_ptr<RateLimiter> fallback,
       const Clock& clock)
      : client_(std::move(client)), health_("cachetd", options, std::move(fallback), clock) {}

  Result<Decision> Check(std::string_view key, std::string_view tier, uint64_t cost) {
    if (cost == 0) return MakeError(ErrorCode::kInvalidArgument, "cost must be at least 1");
    if (!health_.ShouldTry()) return health_.Fallback(key, tier, cost);
    auto d = client_->RateLimit(key, tier, cost);
    if (d || (d.error().code != ErrorCode::kUnavailable && d.error().code != ErrorCode::kTimeout)) {
      health_.Succeeded();  // the daemon answered, even if to say the request is wrong
      return d;
    }
    health_.Failed(d.error());
    return health_.Fallback(key, tier, cost);
  }

  bool healthy() const { return health_.healthy(); }

 private:
  std::unique_ptr<Client> client_;
  detail::StoreHealth health_;
};

DaemonRateLimiter::DaemonRateLimiter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DaemonRateLimiter::~DaemonRateLimiter() = default;

Result<std::unique_ptr<DaemonRateLimiter>> DaemonRateLimiter::Connect(const std::string& endpoint,
                                                                      DaemonRateLimiterOptions options,
                                                                      const Clock& clock) {
  auto fallback = detail::MakeFallback(options, clock);
  if (!fallback) return tl::unexpected(fallback.error());
  ClientOptions client_options;
  client_options.timeout = options.timeout;
  client_options.retries = 0;
  client_options.shared_memory_reads = false;
  auto client = Client::Connect(endpoint, client_options);
  if (!client) return tl::unexpected(client.error());
  return std::unique_ptr<DaemonRateLimiter>(
      new DaemonRateLimiter(std::make_unique<Impl>(std::move(*client), options, std::move(*fallback), clock)));
}

Result<Decision> DaemonRateLimiter::Check(std::string_view key, std::string_view tier, uint64_t cost) {
  return impl_->Check(key, tier, cost);
}

bool DaemonRateLimiter::healthy() const { return impl_->healthy(); }

}  // namespace cachet
