// flood_bench: does one client that floods cachetd slow down another?
//
// A quiet client sends GETs one at a time and takes its p99; then a flooder
// on a connection of its own keeps --window GETs in flight (a reply in, a
// request out) while the quiet client measures again. Rounds alternate, so
// the host's noise falls on both figures; the report is the median p99 of
// each and their ratio. bench/flood_fairness.sh starts a cachetd for it.
//
//   flood_bench --endpoint tcp://127.0.0.1:7379 [--window 256] [--quiet 2000] [--rounds 7]
//   flood_bench --endpoint stream://127.0.0.1:7378 ...  (the stream endpoint)
//
// The flooder runs at SCHED_IDLE, as a stand-in for a client on another
// host: on a small host it would otherwise take the CPU the daemon and the
// quiet client need, and the figure would measure the scheduler.
#include <netdb.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <msgpack.hpp>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "cachet/client.h"
#include "stream.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string endpoint;
  int window = 256, quiet = 2000, rounds = 7;
};

constexpr const char* kUsage =
    "usage: flood_bench --endpoint tcp://HOST:PORT|stream://HOST:PORT [--window N] [--quiet N] [--rounds N]\n"
    "  --window N   GETs the flooder keeps in flight (256)\n"
    "  --quiet N    GETs the quiet client times per measure (2000)\n"
    "  --rounds N   quiet/flooded measures, alternating (7)\n";

bool Parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "flood_bench: %s needs a value\n%s", flag.c_str(), kUsage);
      return false;
    }
    const char* value = argv[++i];
    if (flag == "--endpoint") {
      o.endpoint = value;
    } else if (flag == "--window" || flag == "--quiet" || flag == "--rounds") {
      const int n = std::atoi(value);
      if (n < 1) {
        std::fprintf(stderr, "flood_bench: %s must be a positive number, got '%s'\n", flag.c_str(), value);
        return false;
      }
      (flag == "--window" ? o.window : flag == "--quiet" ? o.quiet : o.rounds) = n;
    } else {
      std::fprintf(stderr, "flood_bench: unknown option %s\n%s", flag.c_str(), kUsage);
      return false;
    }
  }
  if (o.endpoint.empty()) std::fprintf(stderr, "flood_bench: --endpoint is required\n%s", kUsage);
  return !o.endpoint.empty();
}

// [version, id, "GET", key] as docs/protocol.md gives it.
std::string GetRequest(uint64_t id, const std::string& key) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(&buf);
  pk.pack_array(4);
  pk.pack(1);
  pk.pack(id);
  pk.pack(std::string("GET"));
  pk.pack_bin(static_cast<uint32_t>(key.size()));
  pk.pack_bin_body(key.data(), static_cast<uint32_t>(key.size()));
  return std::string(buf.data(), buf.size());
}

// A blocking TCP connection to a stream endpoint's host:port, or -1.
int ConnectStream(const std::string& endpoint) {
  std::string host;
  uint16_t port = 0;
  if (!cachet::stream::SplitHostPort(endpoint.substr(cachet::stream::kScheme.size()), &host, &port)) return -1;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return -1;
  int fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0 && ::connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(found);
  return fd;
}

bool SendAll(int fd, const std::string& bytes) {
  for (size_t sent = 0; sent < bytes.size();) {
    const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

// Keeps `window` GETs in flight on a stream connection of its own until
// `stop`, as a pipelining client does: each read takes what replies have
// come, and one write sends as many new requests. Returns the replies it
// took, or -1 on an error.
int64_t FloodStream(const std::string& endpoint, int window, const std::atomic<bool>& stop) {
  const int fd = ConnectStream(endpoint);
  if (fd < 0) {
    std::fprintf(stderr, "flood_bench: flooder: cannot connect to %s\n", endpoint.c_str());
    return -1;
  }
  const timeval tick{0, 100'000};  // to see `stop` while no reply comes
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof tick);
  uint64_t id = 0;
  std::string requests;
  const auto queue = [&](int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const std::string body = GetRequest(++id, "k");
      char header[cachet::stream::kHeaderBytes];
      cachet::stream::PutLength(header, static_cast<uint32_t>(body.size()));
      requests.append(header, sizeof header).append(body);
    }
  };
  queue(window);
  int64_t replies = 0;
  std::string in(1 << 16, '\0');
  size_t have = 0;
  bool ok = SendAll(fd, requests);
  while (ok && !stop.load(std::memory_order_relaxed)) {
    const ssize_t n = ::recv(fd, in.data() + have, in.size() - have, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
    if (n <= 0) {
      std::fprintf(stderr, "flood_bench: flooder: the connection ended\n");
      ok = false;
      break;
    }
    have += static_cast<size_t>(n);
    // Whole replies out of the buffer; a partial one stays at its front.
    size_t at = 0;
    int64_t whole = 0;
    while (have - at >= cachet::stream::kHeaderBytes) {
      const size_t length = cachet::stream::GetLength(in.data() + at);
      if (have - at < cachet::stream::kHeaderBytes + length) break;
      at += cachet::stream::kHeaderBytes + length;
      ++whole;
    }
    std::memmove(in.data(), in.data() + at, have - at);
    have -= at;
    if (have == in.size()) in.resize(in.size() * 2);  // one reply larger than the buffer
    replies += whole;
    requests.clear();
    queue(whole);
    ok = SendAll(fd, requests);
  }
  ::close(fd);
  return ok ? replies : -1;
}

// Keeps `window` GETs in flight on a connection of its own until `stop`.
// Returns the replies it took, or -1 on an error.
int64_t Flood(const std::string& endpoint, int window, const std::atomic<bool>& stop) {
  const sched_param idle{};
  if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &idle) != 0) {
    std::fprintf(stderr, "flood_bench: cannot run the flooder at SCHED_IDLE; it competes for CPU\n");
  }
  if (endpoint.rfind(cachet::stream::kScheme, 0) == 0) return FloodStream(endpoint, window, stop);
  zmq::context_t context(1);
  zmq::socket_t dealer(context, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(endpoint);
  uint64_t id = 0;
  for (int i = 0; i < window; ++i) dealer.send(zmq::buffer(GetRequest(++id, "k")));
  int64_t replies = 0;
  while (!stop.load(std::memory_order_relaxed)) {
    zmq::pollitem_t in{static_cast<void*>(dealer), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&in, 1, std::chrono::milliseconds(50)) == 0) continue;
    zmq::message_t reply;
    while (dealer.recv(reply, zmq::recv_flags::dontwait)) {
      ++replies;
      dealer.send(zmq::buffer(GetRequest(++id, "k")));
    }
  }
  return replies;
}

// The quiet client's p99 over `n` GETs, in microseconds; -1 if one failed.
int64_t QuietP99(cachet::Client& client, int n) {
  std::vector<int64_t> us;
  us.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const auto t0 = Clock::now();
    auto value = client.Get("k");
    us.push_back(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
    if (!value || value->value_or("") != "v") {
      std::fprintf(stderr, "flood_bench: quiet GET failed: %s\n",
                   value ? "wrong value" : value.error().ToString().c_str());
      return -1;
    }
  }
  std::sort(us.begin(), us.end());
  return us[us.size() * 99 / 100];
}

int64_t Median(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!Parse(argc, argv, o)) return 2;
  auto client = cachet::Client::Connect(o.endpoint);
  if (!client) {
    std::fprintf(stderr, "flood_bench: %s\n", client.error().ToString().c_str());
    return 1;
  }
  if (auto ok = (*client)->Set("k", "v"); !ok) {
    std::fprintf(stderr, "flood_bench: %s\n", ok.error().ToString().c_str());
    return 1;
  }
  std::vector<int64_t> quiet, flooded;
  int64_t flood_replies = 0;
  Clock::duration flood_time{};
  for (int round = 0; round < o.rounds; ++round) {
    quiet.push_back(QuietP99(**client, o.quiet));
    std::atomic<bool> stop{false};
    int64_t replies = 0;
    const auto started = Clock::now();
    std::thread flooder([&] { replies = Flood(o.endpoint, o.window, stop); });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the flood under way
    flooded.push_back(QuietP99(**client, o.quiet));
    stop = true;
    flooder.join();
    flood_time += Clock::now() - started;
    flood_replies += replies;
    if (quiet.back() < 0 || flooded.back() < 0 || replies < 0) return 1;
  }
  const int64_t q = Median(quiet), f = Median(flooded);
  // The flood's rate over the time it ran (a faster quiet client makes the
  // flooded measures, and so the flood, shorter).
  const double flood_per_s = static_cast<double>(flood_replies) / std::chrono::duration<double>(flood_time).count();
  std::printf("quiet_p99_us=%lld flooded_p99_us=%lld ratio=%.2f flood_replies=%lld flood_per_s=%.0f rounds=%d\n",
              static_cast<long long>(q), static_cast<long long>(f), static_cast<double>(f) / static_cast<double>(q),
              static_cast<long long>(flood_replies), flood_per_s, o.rounds);
  return 0;
}
