#include "segment_place.h"

#include <linux/magic.h>
#include <sys/statfs.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <vector>

namespace cachet::daemon {

namespace {

// How long a start waits for the writer lock of a segment it finds.
constexpr std::chrono::milliseconds kStartLockWait{2000};

bool IsHugetlbfs(const std::string& dir) {
  struct statfs fs {};
  return ::statfs(dir.c_str(), &fs) == 0 && fs.f_type == HUGETLBFS_MAGIC;
}

bool SameShape(const CacheOptions& have, const CacheOptions& want) {
  const uint64_t want_entries = want.max_entries ? want.max_entries : std::max<uint64_t>(1, want.capacity_bytes / 64);
  return have.capacity_bytes == want.capacity_bytes && have.max_entries == want_entries &&
         have.max_key_size == want.max_key_size && have.max_value_size == want.max_value_size &&
         have.policy == want.policy;
}

// The two places a segment of this name may be: /dev/shm, and the file on
// the hugetlbfs mount if there is one (looked for even under `off`, to find
// a segment an earlier run left there). `use_huge` says whether a new
// segment goes there.
struct Places {
  std::string shm;   // the POSIX shared-memory name
  std::string huge;  // the file on hugetlbfs, or empty
  bool use_huge = false;
  std::string no_huge_reason;
};

Result<Places> PlacesFor(const DaemonConfig& config) {
  Places p;
  p.shm = config.segment;
  auto mount = FindHugePageMount(config.huge_pages_dir);
  if (mount) p.huge = *mount + "/" + config.segment;
  if (config.huge_pages == HugePages::kOff) {
    p.no_huge_reason = "huge-pages = off";
  } else if (mount) {
    p.use_huge = true;
  } else if (config.huge_pages == HugePages::kOn) {
    return MakeError(ErrorCode::kInvalidArgument, "huge-pages = on, but " + mount.error().message);
  } else {
    p.no_huge_reason = mount.error().message;
  }
  return p;
}

// A segment found at start, with same-host writes revoked.
struct Found {
  std::string name;
  std::unique_ptr<Cache> cache;  // null: unusable (its error is logged)
  uint64_t generation = 0;
  int64_t heartbeat_ms = 0;
  std::string unusable;  // why it cannot be used, if it cannot
};

// Seconds since the epoch: a generation above any count of rebuilds, for a
// segment whose own header cannot be trusted.
uint64_t GenerationFromClock() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

}  // namespace

std::string SegmentLabel(const std::string& name) { return !name.empty() && name[0] == '/' ? name : "/" + name; }

Result<std::string> FindHugePageMount(const std::string& configured) {
  if (!configured.empty()) {
    if (!IsHugetlbfs(configured)) {
      return MakeError(ErrorCode::kInvalidArgument, "huge-pages-dir " + configured + " is not a hugetlbfs mount");
    }
    return configured;
  }
  std::ifstream mounts("/proc/mounts");
  std::string line, any, two_mib;
  while (std::getline(mounts, line)) {
    std::istringstream fields(line);
    std::string source, dir, type, options;
    if (!(fields >> source >> dir >> type >> options) || type != "hugetlbfs") continue;
    if (any.empty()) any = dir;
    if (two_mib.empty() && options.find("pagesize=2M") != std::string::npos) two_mib = dir;
  }
  if (!two_mib.empty()) return two_mib;
  if (!any.empty()) return any;
  return MakeError(ErrorCode::kNotFound,
                   "no hugetlbfs is mounted; mount one with 'mount -t hugetlbfs none /dev/hugepages' and reserve "
                   "pages with 'sysctl vm.nr_hugepages'");
}

Result<std::unique_ptr<Cache>> OpenSegment(const DaemonConfig& config, spdlog::logger& log) {
  auto places = PlacesFor(config);
  if (!places) return tl::unexpected(places.error());
  const CacheOptions want = config.CacheOptionsFor();

  // What earlier runs left, in either place.
  std::vector<Found> found;
  for (const std::string& name : {places->huge, places->shm}) {
    if (name.empty()) continue;
    auto existing = Cache::OpenNamed(name);
    if (!existing && existing.error().code == ErrorCode::kNotFound) continue;
    Found f{name, nullptr, GenerationFromClock(), 0, {}};
    if (!existing) {
      f.unusable = existing.error().ToString();
      found.push_back(std::move(f));
      continue;
    }
    {
      // A same-host client stopped while holding the writer lock would hang
      // this start: say who instead. Clients of the previous daemon may have
      // been granted same-host writes: none until this one decides
      // (Server::Run), none at all if it drops the segment.
      auto lease = (*existing)->LeaseWriter(kStartLockWait);
      if (!lease) {
        return MakeError(ErrorCode::kUnavailable, "segment " + SegmentLabel(name) + ": " + lease.error().message +
                                                      "; let that process go on or stop it, then start cachetd again");
      }
      (*existing)->SetClientWrites(false);
    }
    const CacheStats s = (*existing)->Stats();
    f.generation = s.generation;
    f.heartbeat_ms = s.heartbeat_ms;
    f.cache = std::move(*existing);
    found.push_back(std::move(f));
  }

  // Warm restart: the segment last served (the newest heartbeat) if it has
  // these options and is where the setting wants it (`auto`: either place).
  Found* last = nullptr;
  for (Found& f : found) {
    if (f.cache && (last == nullptr || f.heartbeat_ms > last->heartbeat_ms)) last = &f;
  }
  uint64_t generation = 1;
  for (const Found& f : found) generation = std::max(generation, f.generation + 1);
  auto drop_others = [&](const std::string& kept) {
    for (Found& f : found) {
      if (f.name == kept) continue;
      f.cache.reset();  // unmapped before it is removed
      if (auto removed = Cache::RemoveNamed(f.name); removed) {
        log.warn("removed segment {}: another run's, not the one served now", SegmentLabel(f.name));
      } else {
        log.error("could not remove segment {}: {}", SegmentLabel(f.name), removed.error().ToString());
      }
    }
  };
  for (const Found& f : found) {
    if (f.cache) continue;
    // Its header cannot be trusted, so neither can its generation: the time
    // stands in for it, larger than any count of rebuilds.
    log.warn("segment {} cannot be used ({}); {}", SegmentLabel(f.name), f.unusable,
             last != nullptr ? "removing it" : "rebuilding it empty (generation " + std::to_string(generation) + ")");
  }
  if (last != nullptr) {
    const bool on_huge = last->name == places->huge;
    const bool misplaced =
        (config.huge_pages == HugePages::kOn && !on_huge) || (config.huge_pages == HugePages::kOff && on_huge);
    if (!SameShape(last->cache->Options(), want)) {
      log.warn("segment {} was made with other options than the configuration's; rebuilding it empty (generation {})",
               SegmentLabel(last->name), generation);
    } else if (misplaced) {
      log.warn("segment {} is {} huge pages and huge-pages = {}; rebuilding it empty (generation {})",
               SegmentLabel(last->name), on_huge ? "on" : "not on", on_huge ? "off" : "on", generation);
    } else {
      size_t dropped = 0;
      {
        auto lease = last->cache->LeaseWriter(kStartLockWait);
        if (!lease)
          return MakeError(ErrorCode::kUnavailable,
                           "segment " + SegmentLabel(last->name) + ": " + lease.error().message);
        dropped = last->cache->Repair();
      }
      const CacheStats s = last->cache->Stats();
      log.info("warm restart: re-attached to segment {} (generation {}, {} entries); validation dropped {}",
               SegmentLabel(last->name), s.generation, s.entries, dropped);
      if (!on_huge && places->use_huge) {
        log.info("huge pages: segment {} stays in /dev/shm until it is rebuilt (huge-pages = on moves it)",
                 SegmentLabel(last->name));
      }
      std::unique_ptr<Cache> kept = std::move(last->cache);
      drop_others(kept->Name());
      return kept;
    }
  }

  // A new segment, made before any old one is removed: a start that fails
  // here leaves the old ones as they were.
  auto make = [&](const std::string& name) -> Result<std::unique_ptr<Cache>> {
    for (Found& f : found) {
      if (f.name != name) continue;
      f.cache.reset();
      (void)Cache::RemoveNamed(name);  // the same name: it must go first
    }
    return Cache::CreateNamed(name, want, SystemClock::Instance(), generation);
  };
  if (places->use_huge) {
    auto created = make(places->huge);
    if (created) {
      const CacheStats s = (*created)->Stats();
      log.info("created segment {} on huge pages ({} MiB in {} KiB pages, generation {})", places->huge,
               s.segment_bytes >> 20, s.page_bytes >> 10, generation);
      drop_others(places->huge);
      return created;
    }
    if (config.huge_pages == HugePages::kOn) {
      return MakeError(created.error().code, "huge-pages = on: " + created.error().message);
    }
    places->no_huge_reason = created.error().message;
  }
  auto created = make(places->shm);
  if (!created) return MakeError(created.error().code, "cannot create segment: " + created.error().message);
  log.info("created segment /{} ({} MiB mapped, generation {})", places->shm, (*created)->Stats().segment_bytes >> 20,
           generation);
  log.info("huge pages: not used, the segment is in /dev/shm: {}", places->no_huge_reason);
  drop_others(places->shm);
  return created;
}

}  // namespace cachet::daemon
