// cachet_shm_demo: the store shared between two processes.
//
// The parent creates a named segment, fills it with more items than fit (so
// the eviction policy works), then a second process attaches to the same
// segment and reads every key back without a lock or a syscall. The parent
// prints what each side saw and removes the segment.
//
//   cachet_shm_demo [--keys N] [--capacity-kib K] [--policy fifo|clock|s3fifo]
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cachet/cache.h"

namespace {

struct Args {
  int keys = 20000;
  uint64_t capacity_kib = 1024;
  cachet::EvictionPolicy policy = cachet::EvictionPolicy::kS3Fifo;
};

[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr, "cachet_shm_demo: %s\nusage: cachet_shm_demo [--keys N] [--capacity-kib K] [--policy P]\n", why);
  std::exit(2);
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) Usage(("missing value for " + flag).c_str());
    const char* v = argv[++i];
    if (flag == "--keys") {
      a.keys = std::atoi(v);
      if (a.keys <= 0) Usage("--keys must be a positive number");
    } else if (flag == "--capacity-kib") {
      a.capacity_kib = std::strtoull(v, nullptr, 10);
      if (a.capacity_kib < 16) Usage("--capacity-kib must be at least 16");
    } else if (flag == "--policy") {
      auto p = cachet::ParseEvictionPolicy(v);
      if (!p) Usage(p.error().message.c_str());
      a.policy = *p;
    } else {
      Usage(("unknown option " + flag).c_str());
    }
  }
  return a;
}

std::string Key(int i) { return "user:" + std::to_string(i); }
std::string Value(int i) { return "profile of user " + std::to_string(i) + std::string(80, '.'); }

// The second process: attach, read every key, report through the exit code.
int ReadBack(const std::string& name, int keys) {
  auto cache = cachet::Cache::OpenNamed(name);
  if (!cache) {
    std::fprintf(stderr, "reader: %s\n", cache.error().ToString().c_str());
    return 1;
  }
  int hits = 0, wrong = 0;
  std::string value;
  for (int i = 0; i < keys; ++i) {
    if (!(*cache)->GetInto(Key(i), &value)) continue;
    ++hits;
    if (value != Value(i)) ++wrong;
  }
  std::printf("reader process %d: attached to /%s, read %d keys: %d hits, %d misses, %d wrong values\n", getpid(),
              name.c_str(), keys, hits, keys - hits, wrong);
  std::fflush(stdout);  // the child leaves with _exit, which does not flush
  return wrong == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = Parse(argc, argv);
  const std::string name = "cachet-demo-" + std::to_string(getpid());
  cachet::CacheOptions options;
  options.capacity_bytes = args.capacity_kib << 10;
  options.max_value_size = 4096;
  options.policy = args.policy;
  auto made = cachet::Cache::CreateNamed(name, options);
  if (!made) {
    std::fprintf(stderr, "cachet_shm_demo: %s\n", made.error().ToString().c_str());
    return 1;
  }
  auto& cache = *made;
  for (int i = 0; i < args.keys; ++i) {
    if (auto ok = cache->Set(Key(i), Value(i)); !ok) {
      std::fprintf(stderr, "set %s: %s\n", Key(i).c_str(), ok.error().ToString().c_str());
      return 1;
    }
    if (i % 10 == 0) (void)cache->Get(Key(i / 2));  // some keys are read again: they matter more
  }
  std::printf("writer process %d: wrote %d keys into /%s (%llu KiB capacity, %s eviction)\n", getpid(), args.keys,
              name.c_str(), static_cast<unsigned long long>(args.capacity_kib),
              cachet::EvictionPolicyName(args.policy));
  std::fflush(stdout);

  const pid_t child = fork();
  if (child == 0) _exit(ReadBack(name, args.keys));
  int status = 0;
  waitpid(child, &status, 0);

  const cachet::CacheStats s = cache->Stats();
  std::printf(
      "segment stats: %llu entries, %llu of %llu bytes used, %llu sets, %llu evictions, "
      "%llu hits, %llu misses (both processes)\n",
      static_cast<unsigned long long>(s.entries), static_cast<unsigned long long>(s.live_bytes),
      static_cast<unsigned long long>(s.capacity_bytes), static_cast<unsigned long long>(s.sets),
      static_cast<unsigned long long>(s.evictions), static_cast<unsigned long long>(s.hits),
      static_cast<unsigned long long>(s.misses));
  (void)cachet::Cache::RemoveNamed(name);
  const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  std::printf("%s\n", ok ? "demo ok" : "demo FAILED: the reader saw a wrong value or could not attach");
  return ok ? 0 : 1;
}
