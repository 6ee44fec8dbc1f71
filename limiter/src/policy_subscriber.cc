#include "cachet/policy_subscriber.h"

#include <atomic>
#include <mutex>
#include <thread>
#include <zmq.hpp>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "zmq_io.h"

namespace cachet {

class PolicySubscriber::Impl {
 public:
  explicit Impl(Installer install) : install_(std::move(install)) {}

  ~Impl() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }

  Result<void> Start(const std::string& endpoint, const CurveClientKeys& curve) {
    try {
      socket_.set(zmq::sockopt::linger, 0);
      socket_.set(zmq::sockopt::subscribe, "cachet.policy");
      if (endpoint.rfind("tcp://", 0) == 0) zmqio::UseCurveClient(socket_, curve);
      zmqio::Connect(socket_, endpoint);
    } catch (const zmq::error_t& e) {
      return MakeError(ErrorCode::kInvalidArgument, "cannot subscribe to '" + endpoint + "': " + e.what());
    }
    thread_ = std::thread([this] { Run(); });
    return {};
  }

  uint64_t version() const { return version_.load(); }
  uint64_t rejected() const { return rejected_.load(); }
  std::string last_error() const {
    std::lock_guard<std::mutex> lock(mu_);
    return last_error_;
  }

 private:
  void Run() {
    while (!stop_.load()) {
      zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
      try {
        if (zmqio::Poll(&item, 1, std::chrono::milliseconds(100)) == 0) continue;
        std::vector<zmq::message_t> frames;
        if (!zmqio::RecvMultipart(socket_, frames, zmq::recv_flags::dontwait)) continue;
        if (frames.size() == 3) Apply(frames[1].to_string(), frames[2].to_string());
      } catch (const zmq::error_t& e) {
        Fail(std::string("subscriber socket: ") + e.what());
      }
    }
  }

  void Apply(const std::string& version_text, const std::string& text) {
    uint64_t version = 0;
    try {
      version = std::stoull(version_text);
    } catch (const std::exception&) {
      return Fail("published version '" + version_text + "' is not a number");
    }
    // Seen before only if both the version and the text match: a publisher
    // whose versions repeat (one that counts from 1 at each start) must
    // not keep its new policy from us.
    const uint64_t digest = VersionOf(text);
    if ((version == version_.load() && digest == installed_digest_) ||
        (version == last_rejected_ && digest == rejected_digest_)) {
      return;
    }
    auto refuse = [&](const std::string& why) {
      last_rejected_ = version;
      rejected_digest_ = digest;
      rejected_.fetch_add(1);
      Fail(why);
    };
    auto parsed = ParsePolicy(text, "published policy v" + version_text);
    if (!parsed) return refuse(parsed.error().message);
    if (auto ok = install_(*parsed); !ok) return refuse(ok.error().message);
    installed_digest_ = digest;
    version_.store(version);
  }

  void Fail(const std::string& message) {
    std::lock_guard<std::mutex> lock(mu_);
    last_error_ = message;
  }

  const Installer install_;
  zmq::context_t context_{1};
  zmq::socket_t socket_{context_, zmq::socket_type::sub};  // used by the thread only, after Start
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> version_{0};
  std::atomic<uint64_t> rejected_{0};
  uint64_t last_rejected_ = 0;     // thread only
  uint64_t rejected_digest_ = 0;   // thread only: VersionOf the text last rejected
  uint64_t installed_digest_ = 0;  // thread only: VersionOf the text installed
  mutable std::mutex mu_;
  std::string last_error_;  // guarded by mu_
};

PolicySubscriber::PolicySubscriber(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PolicySubscriber::~PolicySubscriber() = default;

Result<std::unique_ptr<PolicySubscriber>> PolicySubscriber::Start(const std::string& endpoint, RateLimiter& limiter,
                                                                  std::function<void(const PolicyFile&)> on_policy,
                                                                  const CurveClientKeys& curve) {
  return Start(
      endpoint,
      [&limiter, on_policy = std::move(on_policy)](const PolicyFile& file) -> Result<void> {
        if (auto ok = limiter.SetPolicy(file.policy); !ok) return ok;
        if (on_policy) on_policy(file);
        return {};
      },
      curve);
}

Result<std::unique_ptr<PolicySubscriber>> PolicySubscriber::Start(const std::string& endpoint, Installer install,
                                                                  const CurveClientKeys& curve) {
  if (!install) return MakeError(ErrorCode::kInvalidArgument, "a policy subscriber needs an installer");
  auto impl = std::make_unique<Impl>(std::move(install));
  if (auto ok = impl->Start(endpoint, curve); !ok) return tl::unexpected(ok.error());
  return std::unique_ptr<PolicySubscriber>(new PolicySubscriber(std::move(impl)));
}

uint64_t PolicySubscriber::VersionOf(std::string_view policy_text) {
  const uint64_t hash = XXH3_64bits(policy_text.data(), policy_text.size());
  return hash == 0 ? 1 : hash;
}

uint64_t PolicySubscriber::version() const { return impl_->version(); }
uint64_t PolicySubscriber::rejected() const { return impl_->rejected(); }
std::string PolicySubscriber::last_error() const { return impl_->last_error(); }

}  // namespace cachet
