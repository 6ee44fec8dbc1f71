// The public face of Cache: options, factories, and thin forwarding.
#include "cachet/cache.h"

#include <algorithm>
#include <cctype>

#include "cache_impl.h"
#include "layout.h"
#include "segment.h"

namespace cachet {

using namespace detail;

const char* ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk: return "OK";
    case ErrorCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case ErrorCode::kKeyTooLarge: return "KEY_TOO_LARGE";
    case ErrorCode::kValueTooLarge: return "VALUE_TOO_LARGE";
    case ErrorCode::kNoSpace: return "NO_SPACE";
    case ErrorCode::kNotFound: return "NOT_FOUND";
    case ErrorCode::kAlreadyExists: return "ALREADY_EXISTS";
    case ErrorCode::kVersionMismatch: return "VERSION_MISMATCH";
    case ErrorCode::kCorrupt: return "CORRUPT";
    case ErrorCode::kIo: return "IO";
    case ErrorCode::kNotInteger: return "NOT_INTEGER";
    case ErrorCode::kOverflow: return "OVERFLOW";
    case ErrorCode::kInternal: return "INTERNAL";
    case ErrorCode::kBadRequest: return "BAD_REQUEST";
    case ErrorCode::kUnsupportedVersion: return "UNSUPPORTED_VERSION";
    case ErrorCode::kUnknownOp: return "UNKNOWN_OP";
    case ErrorCode::kWrongArity: return "WRONG_ARITY";
    case ErrorCode::kWrongType: return "WRONG_TYPE";
    case ErrorCode::kFrameTooLarge: return "FRAME_TOO_LARGE";
    case ErrorCode::kTimeout: return "TIMEOUT";
    case ErrorCode::kUnavailable: return "UNAVAILABLE";
    case ErrorCode::kProtocol: return "PROTOCOL";
    case ErrorCode::kMoved: return "MOVED";
    case ErrorCode::kAsk: return "ASK";
    case ErrorCode::kClusterDown: return "CLUSTER_DOWN";
    case ErrorCode::kPermissionDenied: return "PERMISSION_DENIED";
    case ErrorCode::kBusy: return "BUSY";
  }
  return "UNKNOWN";
}

std::string Error::ToString() const { return std::string(ErrorCodeName(code)) + ": " + message; }

const char* EvictionPolicyName(EvictionPolicy policy) {
  switch (policy) {
    case EvictionPolicy::kFifo: return "fifo";
    case EvictionPolicy::kClock: return "clock";
    case EvictionPolicy::kS3Fifo: return "s3fifo";
  }
  return "unknown";
}

Result<EvictionPolicy> ParseEvictionPolicy(std::string_view name) {
  std::string n(name);
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::tolower(c); });
  if (n == "fifo") return EvictionPolicy::kFifo;
  if (n == "clock" || n == "lru") return EvictionPolicy::kClock;
  if (n == "s3fifo" || n == "s3-fifo") return EvictionPolicy::kS3Fifo;
  return MakeError(ErrorCode::kInvalidArgument,
                   "unknown eviction policy '" + std::string(name) + "'; expected fifo, clock (or lru) or s3fifo");
}

Result<void> CacheOptions::Validate() const {
  auto bad = [](const std::string& m) { return MakeError(ErrorCode::kInvalidArgument, m); };
  if (max_key_size < 1 || max_key_size > 65535) return bad("max_key_size must be 1 to 65535 bytes");
  if (max_value_size > (1u << 30)) return bad("max_value_size must be at most 1 GiB");
  if (policy != EvictionPolicy::kFifo && policy != EvictionPolicy::kClock && policy != EvictionPolicy::kS3Fifo) {
    return bad("policy must be fifo, clock or s3fifo");
  }
  if (capacity_bytes > kMaxSegmentBytes) {
    return bad("capacity_bytes must be at most " + std::to_string(kMaxSegmentBytes >> 20) + " MiB");
  }
  const uint64_t max_item = ItemBytes(max_key_size, max_value_size);
  if (capacity_bytes < max_item) {
    return bad("capacity_bytes (" + std::to_string(capacity_bytes) +
               ") must hold at least one item of max_key_size + " + "max_value_size (" + std::to_string(max_item) +
               " bytes with its header)");
  }
  if (max_entries > (1ull << 31)) return bad("max_entries must be at most 2^31");
  const Geometry g = ComputeGeometry(*this);
  if (g.segment_bytes > kMaxSegmentBytes) {
    return bad("these options need a " + std::to_string(g.segment_bytes >> 20) + " MiB segment; the most is " +
               std::to_string(kMaxSegmentBytes >> 20) + " MiB");
  }
  return {};
}

namespace detail {

Geometry ComputeGeometry(const CacheOptions& o) {
  auto round8 = [](uint64_t x) { return (x + 7) & ~uint64_t{7}; };
  Geometry g;
  g.max_entries = o.max_entries ? o.max_entries : std::max<uint64_t>(1, o.capacity_bytes / 64);
  // At most 6 of every 7 slots used: probes stay short without tombstones.
  g.bucket_count = std::max<uint64_t>(1, (g.max_entries + 5) / 6);
  const uint64_t max_item = ItemBytes(o.max_key_size, o.max_value_size);
  // Room for dead space (replaced and erased items not yet passed by head)
  // and for padding at the wrap.
  auto log_bytes = [&](uint64_t live) { return round8(live + live / 8 + 2 * max_item); };
  g.main_log_bytes = log_bytes(o.capacity_bytes);
  if (o.policy == EvictionPolicy::kS3Fifo) {
    g.small_target_bytes = o.capacity_bytes / 10;
    g.small_target_items = std::max<uint64_t>(1, g.max_entries / 10);
    g.small_log_bytes = log_bytes(g.small_target_bytes);
    g.ghost_slots = (g.max_entries + kGhostWays - 1) / kGhostWays * kGhostWays;
  }
  g.move_buffer_bytes = max_item;
  g.segment_bytes = kHeaderBytes + g.bucket_count * sizeof(Bucket) + ((g.ghost_slots * 8 + 63) & ~uint64_t{63}) +
                    g.main_log_bytes + g.small_log_bytes + g.move_buffer_bytes;
  return g;
}

}  // namespace detail

Cache::Cache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Cache::~Cache() = default;

Result<std::unique_ptr<Cache>> Cache::CreatePrivate(const CacheOptions& options, const Clock& clock) {
  if (auto ok = options.Validate(); !ok) return tl::unexpected(ok.error());
  const Geometry g = ComputeGeometry(options);
  auto segment = Segment::CreatePrivate(g.segment_bytes);
  if (!segment) return tl::unexpected(segment.error());
  return std::unique_ptr<Cache>(new Cache(Impl::Format(std::move(*segment), options, g, clock, 1)));
}

Result<std::unique_ptr<Cache>> Cache::CreateNamed(const std::string& name, const CacheOptions& options,
                                                  const Clock& clock, uint64_t generation) {
  if (generation == 0) return MakeError(ErrorCode::kInvalidArgument, "generation must be at least 1");
  if (auto ok = options.Validate(); !ok) return tl::unexpected(ok.error());
  const Geometry g = ComputeGeometry(options);
  auto segment = Segment::CreateNamed(name, g.segment_bytes);
  if (!segment) return tl::unexpected(segment.error());
  return std::unique_ptr<Cache>(new Cache(Impl::Format(std::move(*segment), options, g, clock, generation)));
}

Result<std::unique_ptr<Cache>> Cache::OpenNamed(const std::string& name, const Clock& clock) {
  auto segment = Segment::OpenNamed(name);
  if (!segment) return tl::unexpected(segment.error());
  auto impl = Impl::Attach(std::move(*segment), clock);
  if (!impl) return tl::unexpected(impl.error());
  return std::unique_ptr<Cache>(new Cache(std::move(*impl)));
}

Result<void> Cache::RemoveNamed(const std::string& name) { return Segment::RemoveNamed(name); }

std::optional<std::string> Cache::Get(std::string_view key) {
  std::string value;
  if (!GetInto(key, &value)) return std::nullopt;
  return value;
}

bool Cache::GetInto(std::string_view key, std::string* value) {
  int64_t expires_at = 0;
  return impl_->Lookup(key, value, &expires_at);
}

void Cache::Prefetch(const std::string_view* keys, size_t count) const { impl_->Prefetch(keys, count); }

bool Cache::Contains(std::string_view key) {
  int64_t expires_at = 0;
  return impl_->Lookup(key, nullptr, &expires_at, /*touch=*/false);
}

std::optional<std::chrono::milliseconds> Cache::Peek(std::string_view key, std::string* value) {
  int64_t expires_at = 0;
  if (!impl_->Lookup(key, value, &expires_at, /*touch=*/false)) return std::nullopt;
  if (expires_at == 0) return kNoExpiry;
  return std::chrono::milliseconds(std::max<int64_t>(0, expires_at - impl_->clock().NowMs()));
}

std::optional<std::chrono::milliseconds> Cache::Ttl(std::string_view key) {
  int64_t expires_at = 0;
  if (!impl_->Lookup(key, nullptr, &expires_at, /*touch=*/false)) return std::nullopt;
  if (expires_at == 0) return kNoExpiry;
  return std::chrono::milliseconds(std::max<int64_t>(0, expires_at - impl_->clock().NowMs()));
}

namespace {
// Writes allocate (staging, moves); a failure there is reported, not thrown.
template <typename Fn>
auto NoThrow(Fn fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kNoSpace, "out of process memory while writing");
  } catch (const std::exception& e) {
    return MakeError(ErrorCode::kInternal, std::string("write failed: ") + e.what());
  }
}
}  // namespace

using Writer = Cache::Impl::Writer;

Result<bool> Cache::Set(std::string_view key, std::string_view value, const SetOptions& options) {
  return NoThrow([&] { return impl_->Set(key, value, options, Writer::kOwner); });
}

Result<int64_t> Cache::Incr(std::string_view key, int64_t delta, std::chrono::milliseconds ttl_on_create) {
  return NoThrow([&] { return impl_->Incr(key, delta, ttl_on_create, Writer::kOwner); });
}

Cache::ScanPage Cache::Scan(uint64_t cursor, std::string_view pattern, size_t max_buckets) {
  return impl_->Scan(cursor, pattern, max_buckets);
}

// An owner's write is never refused for want of a grant: the values are there.
bool Cache::Erase(std::string_view key) { return *impl_->Erase(key, Writer::kOwner); }

bool Cache::Expire(std::string_view key, std::chrono::milliseconds ttl) {
  return *impl_->SetExpiry(key, ttl, Writer::kOwner);
}

bool Cache::Persist(std::string_view key) { return *impl_->SetExpiry(key, std::nullopt, Writer::kOwner); }

void Cache::SetClientWrites(bool granted) { impl_->SetClientWrites(granted); }

Cache::WriterLease::~WriterLease() {
  if (impl_ != nullptr) impl_->EndLease();
}

Result<Cache::WriterLease> Cache::LeaseWriter(std::chrono::milliseconds wait) {
  if (auto ok = impl_->LeaseWriter(wait); !ok) return tl::unexpected(ok.error());
  return WriterLease(impl_.get());
}

bool Cache::ClientWritesGranted() const { return impl_->ClientWritesGranted(); }

Result<bool> Cache::GuestSet(std::string_view key, std::string_view value, const SetOptions& options) {
  return NoThrow([&] { return impl_->Set(key, value, options, Writer::kGuest); });
}

Result<int64_t> Cache::GuestIncr(std::string_view key, int64_t delta, std::chrono::milliseconds ttl_on_create) {
  return NoThrow([&] { return impl_->Incr(key, delta, ttl_on_create, Writer::kGuest); });
}

Result<bool> Cache::GuestErase(std::string_view key) {
  return NoThrow([&] { return impl_->Erase(key, Writer::kGuest); });
}

Result<bool> Cache::GuestExpire(std::string_view key, std::chrono::milliseconds ttl) {
  return NoThrow([&] { return impl_->SetExpiry(key, ttl, Writer::kGuest); });
}

void Cache::EndHeartbeat() { impl_->EndHeartbeat(); }

void Cache::Clear() { impl_->Clear(); }

size_t Cache::ReclaimExpired(size_t max_buckets) { return impl_->ReclaimExpired(max_buckets); }

size_t Cache::Repair() { return impl_->Repair(); }

void Cache::Heartbeat() { impl_->Heartbeat(); }

size_t Cache::Size() const { return impl_->Size(); }

CacheStats Cache::Stats() const { return impl_->Stats(); }

const std::string& Cache::Name() const { return impl_->name(); }

const CacheOptions& Cache::Options() const { return impl_->options(); }

}  // namespace cachet
