#include "metrics_endpoint.h"

#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "config.h"
#include "prometheus.h"

namespace cachet::daemon {

namespace {

// The listener's and the pool's threads: two workers are enough for a
// scraper and a person with curl, and an idle keep-alive connection holds
// a worker (and the stop) for at most a second.
constexpr size_t kWorkers = 2;
constexpr time_t kKeepAliveSeconds = 1;
constexpr time_t kIoTimeoutSeconds = 2;

// Blocks the stop and reload signals in this thread while it lives, so
// that threads started meanwhile inherit the mask; restores it after.
class BlockedSignals {
 public:
  BlockedSignals() {
    sigset_t block;
    sigemptyset(&block);
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&block, sig);
    pthread_sigmask(SIG_BLOCK, &block, &previous_);
  }
  ~BlockedSignals() { pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }
  BlockedSignals(const BlockedSignals&) = delete;
  BlockedSignals& operator=(const BlockedSignals&) = delete;

 private:
  sigset_t previous_;
};

}  // namespace

MetricsEndpoint::MetricsEndpoint(const SnapshotBoard& board)
    : board_(board), http_(std::make_unique<httplib::Server>()) {}

MetricsEndpoint::~MetricsEndpoint() {
  if (!thread_.joinable()) return;
  http_->stop();
  thread_.join();
}

Result<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(const std::string& address,
                                                                const SnapshotBoard& board) {
  std::string host;
  uint16_t port = 0;
  if (!SplitHostPort(address, &host, &port)) {
    return MakeError(ErrorCode::kInvalidArgument, "metrics must be host:port, got '" + address + "'");
  }
  std::unique_ptr<MetricsEndpoint> endpoint(new MetricsEndpoint(board));
  httplib::Server& http = *endpoint->http_;
  // SO_REUSEADDR (a restart binds at once, past connections in TIME_WAIT)
  // but not cpp-httplib's default SO_REUSEPORT, with which a second cachetd
  // on the same port would bind too and take half of the scrapes.
  http.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  http.new_task_queue = [] { return new httplib::ThreadPool(kWorkers); };
  http.set_keep_alive_timeout(kKeepAliveSeconds);
  http.set_read_timeout(kIoTimeoutSeconds);
  http.set_write_timeout(kIoTimeoutSeconds);
  http.set_payload_max_length(4096);
  const SnapshotBoard* from = &board;
  http.Get("/metrics", [from](const httplib::Request&, httplib::Response& res) {
    const std::shared_ptr<const MetricsSnapshot> snapshot = from->Latest();
    if (!snapshot) {
      res.status = 503;
      res.set_content("cachetd is starting; no metrics yet\n", "text/plain");
      return;
    }
    res.set_content(RenderPrometheus(*snapshot), kPrometheusContentType);
  });
  http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.status == 404) res.set_content("not found: cachetd serves /metrics only\n", "text/plain");
  });
  errno = 0;
  int bound = -1;
  if (port == 0) {
    bound = http.bind_to_any_port(host);
  } else if (http.bind_to_port(host, port)) {
    bound = port;
  }
  if (bound < 0) {
    const int error = errno;
    return MakeError(ErrorCode::kIo, "cannot bind metrics " + address + ": " +
                                         (error != 0 ? std::strerror(error) : "the address cannot be used"));
  }
  endpoint->port_ = static_cast<uint16_t>(bound);
  const bool v6 = host.find(':') != std::string::npos;
  endpoint->url_ = "http://" + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(endpoint->port_) + "/metrics";
  {
    BlockedSignals blocked;
    MetricsEndpoint* self = endpoint.get();
    endpoint->thread_ = std::thread([self] {
      self->http_->listen_after_bind();
      self->listen_returned_ = true;
    });
  }
  // stop() is lost on a server not listening yet, so the endpoint is
  // handed out only once it listens (a stop right after Start would
  // otherwise leave the thread in accept for good). Listening follows the
  // bind at once; the wait is the thread's start.
  while (!http.is_running()) {
    if (endpoint->listen_returned_) {
      endpoint->thread_.join();
      return MakeError(ErrorCode::kIo, "the metrics endpoint on " + address + " could not listen");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return endpoint;
}

}  // namespace cachet::daemon
