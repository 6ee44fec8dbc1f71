#include "cachet/redis_rate_limiter.h"

#include <hiredis/hiredis.h>
#include <signal.h>

#include <ctime>
#include <mutex>

#include "store_health.h"

namespace cachet {

namespace {

// KEYS: one state hash per rule. ARGV: now_ms, cost, then per rule:
// algorithm (1 fixed, 3 sliding, 4 token bucket), limit, window_ms, burst,
// shadow (0/1). The same arithmetic as rate_limit.cc, in doubles (exact for
// these magnitudes). Returns {allowed, rule index (1-based), limit, remaining,
// reset_ms, retry_after_ms, window_ms, shadow_denied}.
constexpr const char* kScript = R"lua(
local now = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local function ceil_ms(us) if us <= 0 then return 0 end return math.floor((us + 999) / 1000) end
local out = {}
local allowed = true
local shadow_denied = 0
for i = 1, #KEYS do
  local p = 2 + (i - 1) * 5
  local algo, limit, w = tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3])
  local burst, shadow = tonumber(ARGV[p + 4]), tonumber(ARGV[p + 5])
  local s = redis.call('HMGET', KEYS[i], 'a', 'b', 'c')
  local a, b, c = tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or 0
  local r = {ok = false, limit = limit, remaining = 0, reset = 0, retry = 0}
  -- A window never moves back: a request whose time reads before the
  -- window already counted counts in it.
  local t = now
  if algo ~= 4 and a > t then t = a end
  if algo == 1 then
    local start = t - (t % w)
    local count = 0
    if a == start then count = b end
    r.reset = start + w - t
    if cost <= limit and count + cost <= limit then
      r.ok, r.remaining, r.a, r.b, r.c = true, limit - count - cost, start, count + cost, 0
    else
      r.remaining, r.retry = limit - math.min(count, limit), r.reset
    end
  elseif algo == 3 then
    local start = t - (t % w)
    local elapsed = t - start
    local curr, prev = 0, 0
    if a == start then curr, prev = b, c elseif a == start - w then prev = b end
    local estimate = prev * (w - elapsed) / w + curr
    if estimate + cost <= limit then
      r.ok, r.remaining, r.reset = true, math.floor(limit - estimate - cost), w - elapsed + w
      r.a, r.b, r.c = start, curr + cost, prev
    else
      if estimate >= limit then r.remaining = 0 else r.remaining = math.floor(limit - estimate) end
      r.reset = w - elapsed
      if curr > 0 then r.reset = r.reset + w end
      if cost > limit then
        r.retry = r.reset
      else
        local room = limit - cost - curr
        local wait
        if room >= 0 and prev > 0 then
          wait = (w - elapsed) - room * w / prev
        else
          local into = 0
          if curr > 0 then into = math.max(0, w - (limit - cost) * w / curr) end
          wait = (w - elapsed) + into
        end
        r.retry = math.max(1, math.ceil(wait))
      end
    end
  else
    local size = limit
    if burst > 0 then size = burst end
    r.limit = size
    local now_us = now * 1000
    local interval = math.max(1, math.floor(w * 1000 / limit))
    local capacity = interval * size
    local tat = math.max(a, now_us)
    local lead = tat - now_us
    if cost > size then
      r.remaining, r.reset, r.retry = math.max(0, math.floor((capacity - lead) / interval)), ceil_ms(lead), w
    else
      local new_lead = lead + interval * cost
      if new_lead <= capacity then
        r.ok, r.remaining, r.reset, r.a = true, math.floor((capacity - new_lead) / interval), ceil_ms(new_lead), now_us + new_lead
        r.b, r.c = 0, 0
      else
        r.remaining, r.reset = math.max(0, math.floor((capacity - lead) / interval)), ceil_ms(lead)
        r.retry = ceil_ms(new_lead - capacity)
      end
    end
  end
  r.w, r.shadow = w, shadow
  out[i] = r
  if shadow == 1 then
    if not r.ok then shadow_denied = 1 end
  elseif not r.ok then
    allowed = false
  end
end
local pick = 0
for i = 1, #KEYS do
  local r = out[i]
  if r.shadow == 0 then
    if pick == 0 then pick = i
    elseif allowed and r.remaining < out[pick].remaining then pick = i
    elseif not allowed and not r.ok and (out[pick].ok or r.retry > out[pick].retry) then pick = i end
  end
end
if pick == 0 then pick = 1 end
if allowed then
  for i = 1, #KEYS do
    local r = out[i]
    if r.ok then
      redis.call('HSET', KEYS[i], 'a', r.a, 'b', r.b, 'c', r.c)
      redis.call('PEXPIRE', KEYS[i], 2 * r.w + 1000)
    end
  end
end
local r = out[pick]
local ok = 0
if allowed then ok = 1 end
local retry = r.retry
if allowed then retry = 0 end
return {ok, pick, r.limit, r.remaining, r.reset, retry, r.w, shadow_denied}
)lua";

// hiredis writes with write(2): a Redis that died would kill the whole
// process with SIGPIPE. While this is alive the calling thread blocks
// SIGPIPE; one raised meanwhile is consumed, and the mask restored. The
// process's own SIGPIPE handling is left alone.
class ScopedSigpipeBlock {
 public:
  ScopedSigpipeBlock() {
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    already_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe, &old_);
  }
  ~ScopedSigpipeBlock() {
    if (!already_pending_) {
      sigset_t pipe;
      sigemptyset(&pipe);
      sigaddset(&pipe, SIGPIPE);
      const timespec zero{0, 0};
      while (sigtimedwait(&pipe, nullptr, &zero) > 0) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  ScopedSigpipeBlock(const ScopedSigpipeBlock&) = delete;
  ScopedSigpipeBlock& operator=(const ScopedSigpipeBlock&) = delete;

 private:
  sigset_t old_;
  bool already_pending_ = false;
};

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

Result<void> CheckPolicy(const RateLimitPolicy& policy) {
  return policy.Validate([](const Rule& r) -> Result<void> {
    if (r.algorithm == Algorithm::kSlidingLog) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "rule '" + r.name + "': the Redis store does not keep sliding logs; use sliding_window");
    }
    return {};
  });
}

}  // namespace

class RedisRateLimiter::Impl {
 public:
  Impl(std::string address, RateLimitPolicy policy, const DaemonRateLimiterOptions& options,
       std::unique_ptr<RateLimiter> fallback, const Clock& clock)
      : address_(std::move(address)),
        options_(options),
        policy_(std::make_shared<const RateLimitPolicy>(std::move(policy))),
        clock_(clock),
        health_("redis", options, std::move(fallback), clock) {}

  ~Impl() {
    if (context_) redisFree(context_);
  }

  Result<Decision> Check(std::string_view key, std::string_view tier_name, uint64_t cost) {
    if (cost == 0) return MakeError(ErrorCode::kInvalidArgument, "cost must be at least 1");
    std::shared_ptr<const RateLimitPolicy> policy;
    {
      std::lock_guard<std::mutex> lock(policy_mu_);
      policy = policy_;
    }
    auto resolved = policy->Resolve(key, tier_name);
    if (!resolved) return tl::unexpected(resolved.error());
    const std::vector<Rule>* rules = resolved->rules;
    const std::string owner(resolved->owner);
    if (!health_.ShouldTry()) return health_.Fallback(key, tier_name, cost);

    std::vector<std::string> args = {"EVALSHA", sha_, std::to_string(rules->size())};
    for (const Rule& r : *rules) args.push_back("cachet:rl:" + owner + "/" + r.name + ":" + std::string(key));
    args.push_back(std::to_string(clock_.NowMs()));
    args.push_back(std::to_string(cost));
    for (const Rule& r : *rules) {
      args.push_back(std::to_string(static_cast<int>(r.algorithm)));
      args.push_back(std::to_string(r.limit));
      args.push_back(std::to_string(r.window.count()));
      args.push_back(std::to_string(r.burst));
      args.push_back(r.shadow ? "1" : "0");
    }
    std::lock_guard<std::mutex> lock(connection_mu_);
    const ScopedSigpipeBlock no_sigpipe;
    auto reply = Eval(args);
    if (!reply) {
      if (reply.error().code == ErrorCode::kUnavailable) {
        health_.Failed(reply.error());
        return health_.Fallback(key, tier_name, cost);
      }
      return tl::unexpected(reply.error());
    }
    health_.Succeeded();
    const redisReply* r = reply->get();
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 8) {
      return MakeError(ErrorCode::kProtocol, "unexpected reply from the rate-limit script");
    }
    auto at = [&](size_t i) { return r->element[i]->integer; };
    Decision d;
    d.allowed = at(0) == 1;
    const size_t pick = static_cast<size_t>(at(1)) - 1;
    d.rule = pick < rules->size() ? (*rules)[pick].name : "";
    d.limit = static_cast<uint64_t>(at(2));
    d.remaining = static_cast<uint64_t>(at(3));
    d.reset = std::chrono::milliseconds(at(4));
    d.retry_after = std::chrono::milliseconds(at(5));
    d.window = std::chrono::milliseconds(at(6));
    d.shadow_denied = at(7) == 1;
    return d;
  }

  Result<void> SetPolicy(RateLimitPolicy policy) {
    if (auto ok = CheckPolicy(policy); !ok) return ok;
    std::lock_guard<std::mutex> lock(policy_mu_);
    policy_ = std::make_shared<const RateLimitPolicy>(std::move(policy));
    return {};
  }

  bool healthy() const { return health_.healthy(); }

 private:
  // REQUIRES: connection_mu_ held.
  Result<void> ConnectLocked() {
    if (context_) return {};
    const timeval tv{options_.timeout.count() / 1000, static_cast<suseconds_t>(options_.timeout.count() % 1000 * 1000)};
    if (address_.rfind("unix:", 0) == 0) {
      context_ = redisConnectUnixWithTimeout(address_.substr(5).c_str(), tv);
    } else {
      const size_t colon = address_.rfind(':');
      context_ =
          redisConnectWithTimeout(address_.substr(0, colon).c_str(), std::atoi(address_.c_str() + colon + 1), tv);
    }
    if (context_ == nullptr || context_->err) {
      const std::string why = context_ ? context_->errstr : "out of memory";
      if (context_) redisFree(context_);
      context_ = nullptr;
      return MakeError(ErrorCode::kUnavailable, "cannot connect to redis at " + address_ + ": " + why);
    }
    redisSetTimeout(context_, tv);
    ReplyPtr loaded(static_cast<redisReply*>(redisCommand(context_, "SCRIPT LOAD %s", kScript)));
    if (!loaded || loaded->type != REDIS_REPLY_STRING) {
      const std::string why = loaded && loaded->type == REDIS_REPLY_ERROR ? loaded->str : "no reply";
      redisFree(context_);
      context_ = nullptr;
      return MakeError(ErrorCode::kUnavailable, "cannot load the rate-limit script into redis: " + why);
    }
    sha_.assign(loaded->str, loaded->len);
    return {};
  }

  // REQUIRES: connection_mu_ held.
  Result<ReplyPtr> Eval(std::vector<std::string>& args) {
    // A Redis that lost the script (SCRIPT FLUSH, a restart, a failover)
    // answers NOSCRIPT: load it again and ask once more, so that costs no
    // outage.
    for (int attempt = 0;; ++attempt) {
      if (auto ok = ConnectLocked(); !ok) return tl::unexpected(ok.error());
      args[1] = sha_;
      std::vector<const char*> argv;
      std::vector<size_t> lens;
      for (const std::string& a : args) {
        argv.push_back(a.data());
        lens.push_back(a.size());
      }
      ReplyPtr reply(static_cast<redisReply*>(
          redisCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lens.data())));
      if (!reply) {
        const std::string why = context_->errstr;
        redisFree(context_);
        context_ = nullptr;  // reconnect on the next call
        return MakeError(ErrorCode::kUnavailable, "redis at " + address_ + ": " + why);
      }
      if (reply->type != REDIS_REPLY_ERROR) return reply;
      const std::string why(reply->str, reply->len);
      if (why.rfind("NOSCRIPT", 0) != 0) return MakeError(ErrorCode::kInternal, "redis: " + why);
      redisFree(context_);
      context_ = nullptr;  // ConnectLocked loads the script again
      if (attempt == 1) {
        return MakeError(ErrorCode::kUnavailable, "redis at " + address_ +
                                                      " lost the rate-limit script again after "
                                                      "loading it: " +
                                                      why);
      }
    }
  }

  const std::string address_;
  const DaemonRateLimiterOptions options_;
  std::mutex policy_mu_;
  std::shared_ptr<const RateLimitPolicy> policy_;  // guarded by policy_mu_
  const Clock& clock_;
  detail::StoreHealth health_;
  std::mutex connection_mu_;
  redisContext* context_ = nullptr;  // guarded by connection_mu_
  std::string sha_;                  // guarded by connection_mu_
};

RedisRateLimiter::RedisRateLimiter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RedisRateLimiter::~RedisRateLimiter() = default;

Result<std::unique_ptr<RedisRateLimiter>> RedisRateLimiter::Connect(const std::string& address, RateLimitPolicy policy,
                                                                    DaemonRateLimiterOptions options,
                                                                    const Clock& clock) {
  if (auto ok = CheckPolicy(policy); !ok) return tl::unexpected(ok.error());
  if (address.rfind("unix:", 0) != 0 && address.find(':') == std::string::npos) {
    return MakeError(ErrorCode::kInvalidArgument, "redis address '" + address + "' must be unix:/path or host:port");
  }
  auto fallback = detail::MakeFallback(options, clock);
  if (!fallback) return tl::unexpected(fallback.error());
  return std::unique_ptr<RedisRateLimiter>(
      new RedisRateLimiter(std::make_unique<Impl>(address, std::move(policy), options, std::move(*fallback), clock)));
}

Result<Decision> RedisRateLimiter::Check(std::string_view key, std::string_view tier, uint64_t cost) {
  return impl_->Check(key, tier, cost);
}

Result<void> RedisRateLimiter::SetPolicy(RateLimitPolicy policy) { return impl_->SetPolicy(std::move(policy)); }

bool RedisRateLimiter::healthy() const { return impl_->healthy(); }

}  // namespace cachet
