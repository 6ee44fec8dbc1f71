// client_example: a service's view of cachet. Connects to cachetd, stores a
// value with a TTL, reads it back, counts a visit, and prints what it saw.
//
//   client_example [ENDPOINT]      (default ipc:///tmp/cachetd.sock)
#include <cachet/client.h>

#include <cstdio>

int main(int argc, char** argv) {
  const char* endpoint = argc > 1 ? argv[1] : "ipc:///tmp/cachetd.sock";
  auto client = cachet::Client::Connect(endpoint);
  if (!client) {
    std::fprintf(stderr, "connect: %s\n", client.error().ToString().c_str());
    return 1;
  }
  cachet::SetOptions options;
  options.ttl = std::chrono::minutes(5);
  if (auto stored = (*client)->Set("example:greeting", "hello from cachet", options); !stored) {
    std::fprintf(stderr, "set: %s\n", stored.error().ToString().c_str());
    return 1;
  }
  auto value = (*client)->Get("example:greeting");
  if (!value || !*value) {
    std::fprintf(stderr, "get: %s\n", value ? "miss" : value.error().ToString().c_str());
    return 1;
  }
  auto visits = (*client)->Incr("example:visits");
  if (!visits) {
    std::fprintf(stderr, "incr: %s\n", visits.error().ToString().c_str());
    return 1;
  }
  std::printf("value=%s visits=%lld shared_memory_reads=%s\n", (*value)->c_str(), static_cast<long long>(*visits),
              (*client)->ReadsSharedMemory() ? "yes" : "no");
  return 0;
}
