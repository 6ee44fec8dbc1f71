#include "node_sockets.h"

#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <zmq.hpp>

#include "zmq_io.h"

namespace cachet {

using Ms = std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

namespace {

Ms Left(SteadyClock::time_point deadline) {
  return std::max(Ms(0), std::chrono::duration_cast<Ms>(deadline - SteadyClock::now()));
}

}  // namespace

NodeSockets::NodeSockets(CurveClientKeys curve) : curve_(std::move(curve)) {}
NodeSockets::~NodeSockets() = default;

Result<zmq::socket_t*> NodeSockets::Open(const std::string& endpoint) {
  auto it = sockets_.find(endpoint);
  if (it != sockets_.end()) return it->second.get();
  try {
    auto socket = std::make_unique<zmq::socket_t>(zmqio::SharedContext(), zmq::socket_type::dealer);
    socket->set(zmq::sockopt::linger, 0);
    socket->set(zmq::sockopt::immediate, 1);  // queue only to a live connection
    if (endpoint.rfind("tcp://", 0) == 0) zmqio::UseCurveClient(*socket, curve_);
    zmqio::Connect(*socket, endpoint);
    return (sockets_[endpoint] = std::move(socket)).get();
  } catch (const zmq::error_t& e) {
    return MakeError(ErrorCode::kInvalidArgument, "cannot connect to '" + endpoint + "': " + e.what());
  }
}

// Sends every exchange before waiting for any reply; each gets a result
// within `timeout`. A socket whose request failed is closed, so a late
// reply can never be taken for a later request's.
void NodeSockets::Run(std::vector<Exchange>& xs, Ms timeout) {
  const auto deadline = SteadyClock::now() + timeout;
  std::vector<size_t> unsent;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (auto ok = Open(xs[i].endpoint); !ok) {
      xs[i].result = tl::unexpected(ok.error());
    } else {
      unsent.push_back(i);
    }
  }
  auto fail = [&](Exchange& x, ErrorCode code, const std::string& message) {
    sockets_.erase(x.endpoint);
    x.result = tl::unexpected(Error{code, message});
  };
  std::vector<size_t> waiting;
  try {
    // Out: each request as soon as its node has a connection.
    while (!unsent.empty()) {
      std::vector<zmq::pollitem_t> items;
      for (size_t i : unsent) items.push_back({static_cast<void*>(*sockets_[xs[i].endpoint]), 0, ZMQ_POLLOUT, 0});
      const Ms left = Left(deadline);
      if (zmqio::Poll(items.data(), items.size(), left) == 0 || left.count() == 0) break;
      std::vector<size_t> still;
      for (size_t k = 0; k < unsent.size(); ++k) {
        Exchange& x = xs[unsent[k]];
        if (!(items[k].revents & ZMQ_POLLOUT)) {
          still.push_back(unsent[k]);
          continue;
        }
        if (!zmqio::Send(*sockets_[x.endpoint], zmq::const_buffer(x.frame.data(), x.frame.size()),
                         zmq::send_flags::dontwait)) {
          fail(x, ErrorCode::kUnavailable, "cannot send to cachetd at " + x.endpoint + ": its queue is full");
          continue;
        }
        waiting.push_back(unsent[k]);
      }
      unsent.swap(still);
    }
    for (size_t i : unsent) {
      fail(xs[i], ErrorCode::kUnavailable,
           "cannot reach cachetd at " + xs[i].endpoint + " within " + std::to_string(timeout.count()) + " ms");
    }
    // In: every reply, as they come.
    while (!waiting.empty()) {
      std::vector<zmq::pollitem_t> items;
      for (size_t i : waiting) items.push_back({static_cast<void*>(*sockets_[xs[i].endpoint]), 0, ZMQ_POLLIN, 0});
      if (zmqio::Poll(items.data(), items.size(), Left(deadline)) == 0) break;
      std::vector<size_t> still;
      for (size_t k = 0; k < waiting.size(); ++k) {
        Exchange& x = xs[waiting[k]];
        std::optional<Result<wire::Reply>> got;
        if (items[k].revents & ZMQ_POLLIN) {
          zmq::message_t frame;
          while (!got && zmqio::Recv(*sockets_[x.endpoint], frame, zmq::recv_flags::dontwait)) {
            auto reply = wire::DecodeReply(static_cast<const char*>(frame.data()), frame.size());
            if (!reply) {
              got = tl::unexpected(Error{reply.error().code, reply.error().message + " (from " + x.endpoint + ")"});
            } else if (reply->id == x.id) {
              got = std::move(reply);
            }  // else: a reply to an earlier request; dropped
          }
        }
        if (got) {
          x.result = std::move(*got);
        } else {
          still.push_back(waiting[k]);
        }
      }
      waiting.swap(still);
    }
    for (size_t i : waiting) {
      fail(xs[i], ErrorCode::kTimeout,
           "no reply from cachetd at " + xs[i].endpoint + " within " + std::to_string(timeout.count()) + " ms");
    }
  } catch (const zmq::error_t& e) {
    for (Exchange& x : xs) {
      if (!x.result) fail(x, ErrorCode::kUnavailable, "socket error talking to " + x.endpoint + ": " + e.what());
    }
  }
}

}  // namespace cachet
