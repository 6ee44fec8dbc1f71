// The HTTP module: HttpConnection over cpp-httplib. Built as
// libcachet_etcd_http.so and loaded by the cluster library when a node or
// client first talks to etcd (cluster/src/http_connection.h).
#include <httplib.h>

#include <exception>
#include <mutex>

#include "http_connection.h"

namespace cachet::cluster::detail {
namespace {

HttpFailure FailureOf(httplib::Error e) {
  switch (e) {
    case httplib::Error::Success: return HttpFailure::kNone;
    case httplib::Error::Connection:
    case httplib::Error::ConnectionTimeout: return HttpFailure::kCannotConnect;
    case httplib::Error::Read: return HttpFailure::kNoAnswer;
    case httplib::Error::Write: return HttpFailure::kCannotSend;
    case httplib::Error::Canceled: return HttpFailure::kCanceled;
    default: return HttpFailure::kOther;
  }
}

class HttplibConnection final : public HttpConnection {
 public:
  HttplibConnection(const std::string& host, int port) : client_(host, port) {
    client_.set_keep_alive(true);
    // httplib writes a request's headers and its body separately: with
    // Nagle's algorithm on, the body waits for the ACK of the headers,
    // which the server delays by 40 ms (measured: 45-48 ms a call, against
    // etcd on loopback, instead of well under one).
    client_.set_tcp_nodelay(true);
  }

  HttpOutcome Post(const char* path, const std::string& body, std::chrono::milliseconds connect_timeout,
                   std::chrono::milliseconds read_timeout, const HttpBodyReceiver& receiver) override {
    client_.set_connection_timeout(connect_timeout);
    client_.set_read_timeout(read_timeout);
    client_.set_write_timeout(connect_timeout);
    httplib::Request req;
    req.method = "POST";
    req.path = path;
    req.body = body;
    req.set_header("Content-Type", "application/json");
    HttpOutcome out;
    req.response_handler = [&out](const httplib::Response& res) {
      out.status = res.status;
      return true;
    };
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      return receiver(out.status, std::string_view(data, n));
    };
    httplib::Response res;
    httplib::Error error = httplib::Error::Success;
    try {
      client_.send(req, res, error);
    } catch (const std::exception& e) {
      out.failure = HttpFailure::kOther;
      out.detail = e.what();
      return out;
    }
    out.failure = FailureOf(error);
    if (out.failure == HttpFailure::kOther) out.detail = "HTTP client error " + httplib::to_string(error);
    return out;
  }

  void Stop() override { client_.stop(); }  // thread-safe in httplib: shuts the socket down

 private:
  httplib::ClientImpl client_;
};

}  // namespace
}  // namespace cachet::cluster::detail

extern "C" {

__attribute__((visibility("default"))) int cachet_etcd_http_abi() { return cachet::cluster::detail::kHttpModuleAbi; }

__attribute__((visibility("default"))) cachet::cluster::detail::HttpConnection* cachet_etcd_http_connect(
    const char* host, int port) {
  try {
    return new cachet::cluster::detail::HttplibConnection(host, port);
  } catch (const std::exception&) {
    return nullptr;
  }
}

}  // extern "C"
