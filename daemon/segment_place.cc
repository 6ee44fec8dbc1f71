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

// Where a new segment goes: the hugetlbfs file, or /dev/shm when huge
// pages are off, or (auto) when there is no mount. Empty `huge` means /dev/shm.
struct Places {
  std::string shm;   // the POSIX shared-memory name
  std::string huge;  // the file on hugetlbfs, or empty
  std::string no_huge_reason;
};

Result<Places> PlacesFor(const DaemonConfig& config) {
  Places p;
  p.shm = config.segment;
  if (config.huge_pages == HugePages::kOff) {
    p.no_huge_reason = "huge-pages = off";
    return p;
  }
  auto mount = FindHugePageMount(config.huge_pages_dir);
  if (mount) {
    p.huge = *mount + "/" + config.segment;
  } else if (config.huge_pages == HugePages::kOn) {
    return MakeError(ErrorCode::kInvalidArgument, "huge-pages = on, but " + mount.error().message);
  } else {
    p.no_huge_reason = mount.error().message;
  }
  return p;
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
  uint64_t generation = 1;

  // Warm restart: the previous run's segment, wherever it is (hugetlbfs first).
  std::vector<std::string> candidates;
  if (!places->huge.empty()) candidates.push_back(places->huge);
  candidates.push_back(places->shm);
  for (const std::string& name : candidates) {
    auto existing = Cache::OpenNamed(name);
    if (!existing && existing.error().code == ErrorCode::kNotFound) continue;
    if (existing) {
      // A same-host client stopped while holding the writer lock would hang
      // this start: say who instead. Held to the end of this block (on this
      // thread, before the server takes over).
      auto lease = (*existing)->LeaseWriter(kStartLockWait);
      if (!lease) {
        return MakeError(ErrorCode::kUnavailable, "segment " + SegmentLabel(name) + ": " + lease.error().message +
                                                      "; let that process go on or stop it, then start cachetd again");
      }
      // Clients of the previous daemon may have been granted same-host
      // writes: none until this one decides (Server::Run), none at all if
      // it drops the segment.
      (*existing)->SetClientWrites(false);
      const bool moving = config.huge_pages == HugePages::kOn && name == places->shm;
      if (SameShape((*existing)->Options(), want) && !moving) {
        const size_t dropped = (*existing)->Repair();
        const CacheStats s = (*existing)->Stats();
        log.info("warm restart: re-attached to segment {} (generation {}, {} entries); validation dropped {}",
                 SegmentLabel(name), s.generation, s.entries, dropped);
        if (s.page_bytes <= 4096 && !places->huge.empty()) {
          log.info("huge pages: segment {} stays in /dev/shm until it is rebuilt (huge-pages = on moves it)",
                   SegmentLabel(name));
        }
        return std::move(*existing);
      }
      generation = std::max(generation, (*existing)->Stats().generation + 1);
      log.warn("segment {} was made {}; rebuilding it empty (generation {})", SegmentLabel(name),
               moving ? "outside hugetlbfs and huge-pages = on" : "with other options than the configuration's",
               generation);
    } else {
      // Its header cannot be trusted, so neither can its generation: use the
      // time, which is larger than any count of rebuilds.
      generation =
          std::max<uint64_t>(generation, static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                                                   std::chrono::system_clock::now().time_since_epoch())
                                                                   .count()));
      log.warn("segment {} cannot be used ({}); rebuilding it empty (generation {})", SegmentLabel(name),
               existing.error().ToString(), generation);
    }
    if (existing) existing->reset();  // unmapped before it is removed
    (void)Cache::RemoveNamed(name);
  }

  if (!places->huge.empty()) {
    auto created = Cache::CreateNamed(places->huge, want, SystemClock::Instance(), generation);
    if (created) {
      const CacheStats s = (*created)->Stats();
      log.info("created segment {} on huge pages ({} MiB in {} KiB pages, generation {})", places->huge,
               s.segment_bytes >> 20, s.page_bytes >> 10, generation);
      return created;
    }
    if (config.huge_pages == HugePages::kOn) {
      return MakeError(created.error().code, "huge-pages = on: " + created.error().message);
    }
    places->no_huge_reason = created.error().message;
  }
  auto created = Cache::CreateNamed(places->shm, want, SystemClock::Instance(), generation);
  if (!created) return MakeError(created.error().code, "cannot create segment: " + created.error().message);
  log.info("created segment /{} ({} MiB mapped, generation {})", places->shm, (*created)->Stats().segment_bytes >> 20,
           generation);
  log.info("huge pages: not used, the segment is in /dev/shm: {}", places->no_huge_reason);
  return created;
}

}  // namespace cachet::daemon
