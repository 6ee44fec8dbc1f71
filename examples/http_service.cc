// http_service: an API behind cachet's rate limiter (cpp-httplib).
//
//   http_service --policy limits.ini [--port 8080] [--pub tcp://127.0.0.1:7380]
//                [--trusted-proxy 127.0.0.1] [--default-tier anonymous]
//
// GET /api/...   the API. A request with an X-API-Key listed in the policy's
//                [keys] is limited per key in that key's tier; any other is
//                limited per client address in the default tier. Every
//                response carries the rate-limit headers; a denied one is
//                429 Too Many Requests with Retry-After.
// GET /auth      for nginx's auth_request: 204 when allowed, 403 when denied
//                (auth_request accepts only 2xx, 401 and 403), with the same
//                headers, reading the client from X-Real-IP / X-Forwarded-For
//                (trusted proxies only) and X-API-Key. docs/operations.md
//                shows the nginx side.
//
// With --pub the limits follow cachetd's published policy (SIGHUP to the
// daemon changes them here within a second); without it, the file is read
// once at start.
#include <httplib.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "cachet/http.h"
#include "cachet/policy_file.h"
#include "cachet/policy_subscriber.h"
#include "cachet/rate_limiter.h"
#include "cachet/tier_resolver.h"

namespace {

struct Args {
  std::string policy, pub, host = "127.0.0.1", default_tier = "anonymous";
  int port = 8080;
  std::vector<std::string> trusted;
};

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "http_service: %s\nusage: http_service --policy FILE [--port N] [--host H] [--pub ENDPOINT] "
               "[--trusted-proxy CIDR]... [--default-tier NAME]\n",
               why.c_str());
  std::exit(2);
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (i + 1 >= argc) Usage("missing value for " + f);
    const std::string v = argv[++i];
    if (f == "--policy")
      a.policy = v;
    else if (f == "--pub")
      a.pub = v;
    else if (f == "--host")
      a.host = v;
    else if (f == "--default-tier")
      a.default_tier = v;
    else if (f == "--trusted-proxy")
      a.trusted.push_back(v);
    else if (f == "--port")
      a.port = std::atoi(v.c_str());
    else
      Usage("unknown option " + f);
  }
  if (a.policy.empty()) Usage("--policy is required");
  if (a.port < 0 || a.port > 65535) Usage("--port must be 0 to 65535");
  return a;
}

httplib::Server* g_server = nullptr;
extern "C" void OnStop(int) {
  if (g_server) g_server->stop();
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = Parse(argc, argv);
  auto file = cachet::LoadPolicyFile(args.policy);
  if (!file) Usage(file.error().message);
  if (file->policy.FindTier(args.default_tier) == nullptr)
    Usage("--default-tier '" + args.default_tier + "' is not in the policy");
  auto trusted = cachet::TrustedProxies::Parse(args.trusted);
  if (!trusted) Usage(trusted.error().message);
  auto limiter = cachet::RateLimiter::Create(file->policy);
  if (!limiter) Usage(limiter.error().message);
  cachet::TierResolver tiers(args.default_tier);
  tiers.Set(*file);
  std::unique_ptr<cachet::PolicySubscriber> subscriber;
  if (!args.pub.empty()) {
    auto sub = cachet::PolicySubscriber::Start(args.pub, **limiter, [&](const cachet::PolicyFile& p) { tiers.Set(p); });
    if (!sub) Usage(sub.error().message);
    subscriber = std::move(*sub);
  }

  // Decides for one request and writes the headers; false when denied.
  auto decide = [&](const httplib::Request& req, httplib::Response& res, const std::string& peer) {
    std::string key, tier;
    const std::string api_key = req.get_header_value("X-API-Key");
    if (!api_key.empty() && tiers.Knows(api_key)) {
      key = "key:" + api_key;
      tier = tiers.TierOf(api_key);
    } else {
      std::string forwarded = req.get_header_value("X-Forwarded-For");
      if (forwarded.empty()) forwarded = req.get_header_value("X-Real-IP");
      auto address = cachet::ClientAddress(peer, forwarded, *trusted);
      if (!address) {
        res.status = 400;
        res.set_content(address.error().message + "\n", "text/plain");
        return false;
      }
      key = "ip:" + *address;
      tier = args.default_tier;
    }
    auto d = (*limiter)->Check(key, tier);
    if (!d) {  // e.g. a tier the new policy dropped: fail closed, loudly
      res.status = 503;
      res.set_content(d.error().message + "\n", "text/plain");
      return false;
    }
    for (const auto& h : cachet::RateLimitHeaders(*d, d->rule)) res.set_header(h.name, h.value);
    return d->allowed;
  };

  httplib::Server server;
  server.Get(R"(/api/.*)", [&](const httplib::Request& req, httplib::Response& res) {
    if (decide(req, res, req.remote_addr)) {
      res.set_content("{\"ok\":true}\n", "application/json");
    } else if (res.status < 400) {
      res.status = cachet::kHttpTooManyRequests;
      res.set_content("{\"error\":\"too many requests\"}\n", "application/json");
    }
  });
  server.Get("/auth", [&](const httplib::Request& req, httplib::Response& res) {
    if (decide(req, res, req.remote_addr)) {
      res.status = 204;
    } else if (res.status < 400) {
      res.status = 403;  // auth_request's "deny"; nginx turns it into 429
    }
  });
  g_server = &server;
  std::signal(SIGTERM, OnStop);
  std::signal(SIGINT, OnStop);
  const int port = args.port == 0 ? server.bind_to_any_port(args.host)
                                  : (server.bind_to_port(args.host, args.port) ? args.port : -1);
  if (port < 0) {
    std::fprintf(stderr, "http_service: cannot listen on %s:%d\n", args.host.c_str(), args.port);
    return 1;
  }
  std::printf("listening on http://%s:%d\n", args.host.c_str(), port);
  std::fflush(stdout);
  server.listen_after_bind();
  return 0;
}
