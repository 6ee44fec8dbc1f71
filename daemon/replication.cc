#include "replication.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "cachet/cluster/shard_map.h"
#include "cachet/cluster/slot.h"
#include "zmq_io.h"

namespace cachet::daemon {

using cluster::SlotOf;

namespace {

// REPLICATE kinds (docs/protocol.md).
enum Kind : uint64_t { kStream = 0, kSyncBegin = 1, kSyncPage = 2, kSyncEnd = 3 };

// The bytes of entries a shard's log keeps for followers that fall behind;
// one further behind gets a full copy.
constexpr size_t kLogBytes = 32u << 20;
// Per STREAM message, and per pump for a follower being copied.
constexpr size_t kEntriesPerMessage = 512;
constexpr uint32_t kBucketsPerPage = 256;
constexpr int kPagesPerPump = 16;
// A probe unanswered this long is sent again; a follower silent this long
// while owing answers is probed afresh.
constexpr std::chrono::milliseconds kProbeEvery{200};
constexpr std::chrono::milliseconds kSilenceLimit{1000};
// Messages queued per peer before sends wait for the next pump.
constexpr int kPeerHighWater = 4096;

int64_t TtlMillis(std::optional<std::chrono::milliseconds> ttl) {
  // A key about to expire keeps at least 1 ms: 0 means "no expiry".
  return *ttl == Cache::kNoExpiry ? 0 : std::max<int64_t>(ttl->count(), 1);
}

}  // namespace

// A key's state after a write: its value and TTL, or its absence. An entry
// with an empty key marks the start of a term (it changes nothing).
struct Replication::Entry {
  ShardPosition position;
  std::string key;
  std::optional<std::string> value;  // nullopt: the key is gone
  int64_t ttl_ms = 0;                // 0: no expiry

  size_t bytes() const { return key.size() + (value ? value->size() : 0) + 48; }
};

// The recent entries of a shard: positions base+1 .. last, seqs contiguous.
struct Replication::Log {
  ShardPosition base;  // the position before the first entry kept
  std::deque<Entry> entries;
  size_t bytes = 0;

  ShardPosition last() const { return entries.empty() ? base : entries.back().position; }
  void Reset(ShardPosition at) {
    base = at;
    entries.clear();
    bytes = 0;
  }
  void Append(Entry e) {
    bytes += e.bytes();
    entries.push_back(std::move(e));
    while (bytes > kLogBytes && entries.size() > 1) {
      bytes -= entries.front().bytes();
      base = entries.front().position;
      entries.pop_front();
    }
  }
  // The entry at `seq`, if kept.
  const Entry* At(uint64_t seq) const {
    if (seq <= base.seq || seq > last().seq) return nullptr;
    return &entries[seq - base.seq - 1];
  }
  // A copy at `p` shares this log's history up to p.
  bool Holds(ShardPosition p) const {
    if (p == base) return true;
    const Entry* e = At(p.seq);
    return e != nullptr && e->position.term == p.term;
  }
};

// This node's copy of a shard.
struct Replication::Copy {
  Log log;
  uint64_t known_term = 0;    // the newest term seen: older ones are refused
  uint64_t syncing_term = 0;  // a full copy from this term is under way
  bool whole = false;
};

struct Replication::Follower {
  enum State { kProbe, kSync, kStreaming };  // not kStream: that is a message Kind
  std::string node;
  std::string endpoint;  // empty while the node is not registered
  State state = kProbe;
  uint64_t valid_from = 0;  // answers to requests older than this are stale
  uint64_t next_seq = 0;    // the next entry to send
  uint64_t acked = 0;       // the last seq it holds (counts when whole)
  bool whole = false;
  uint64_t cursor = 0;  // kSync: the next index bucket to copy
  bool pages_done = false;
  Clock::time_point last_sent{};
  Clock::time_point last_heard{};
};

struct Replication::Led {
  uint64_t term = 0;
  size_t copies = 1;       // the shard's nodes, this one included
  uint64_t first_seq = 0;  // the term's start marker: reads wait until it commits
  uint64_t commit = 0;     // every seq up to here is held by a majority
  std::vector<Follower> followers;
  std::map<std::string, uint64_t, std::less<>> pending;  // key -> its last uncommitted seq
  std::deque<std::pair<uint64_t, std::string>> pending_order;
};

struct Replication::Peer {
  zmq::socket_t socket;
  std::string endpoint;
};

Replication::Replication(ClusterNode& node, Cache& cache, zmq::context_t& context, std::shared_ptr<spdlog::logger> log)
    : node_(node), cache_(cache), context_(context), log_(std::move(log)), self_(node.settings().node_id) {}

Replication::~Replication() = default;

// ------------------------------------------------------------ following the view

void Replication::Follow() {
  std::shared_ptr<const ClusterView> v = node_.view();
  if (v != view_) Adopt(std::move(v));
  for (uint32_t shard : node_.TakeResyncs()) {
    auto led = led_.find(shard);
    if (led == led_.end()) continue;
    for (Follower& f : led->second->followers) StartSync(shard, *led->second, f);
  }
}

void Replication::Adopt(std::shared_ptr<const ClusterView> v) {
  const std::shared_ptr<const ClusterView> before = view_;
  view_ = v;
  std::set<uint32_t> held_here;
  if (v->map) {
    for (const cluster::Shard& shard : v->map->shards()) {
      if (std::find(shard.nodes.begin(), shard.nodes.end(), self_) == shard.nodes.end()) continue;
      held_here.insert(shard.id);
      auto& copy = copies_[shard.id];
      if (!copy) copy = std::make_unique<Copy>();
      auto primary = v->primaries.find(shard.id);
      const bool mine = primary != v->primaries.end() && primary->second.node == self_;
      auto led = led_.find(shard.id);
      if (mine && (led == led_.end() || led->second->term != primary->second.term)) {
        if (led != led_.end()) StopLeading(shard.id, "elected again", &failed_);
        StartLeading(shard.id, primary->second.term, shard);
        led = led_.find(shard.id);
      } else if (!mine && led != led_.end()) {
        StopLeading(
            shard.id,
            primary == v->primaries.end() ? "its lease is gone" : "node '" + primary->second.node + "' leads it",
            &failed_);
        led = led_.end();
      }
      if (led != led_.end()) SetFollowers(*led->second, shard, *v);
      // A follower fences the previous primary as soon as it hears of the
      // new one, not only once the new one writes to it.
      if (!mine && primary != v->primaries.end() && primary->second.term > copy->known_term) {
        copy->known_term = primary->second.term;
        copy->syncing_term = 0;
      }
    }
  }
  // A copy whose shard gained slots lacks them until the primary sends a
  // full copy (after its import); a shard no longer held is forgotten.
  if (before && before->map && v->map && before->epoch != v->epoch) {
    std::set<uint32_t> grown;
    for (uint32_t s = 0; s < cluster::kSlotCount; ++s) {
      const uint32_t now_in = v->map->ShardForSlot(s).id;
      if (before->map->ShardForSlot(s).id != now_in) grown.insert(now_in);
    }
    for (uint32_t shard : grown) {
      auto copy = copies_.find(shard);
      if (copy == copies_.end() || led_.count(shard) != 0) continue;
      copy->second->whole = false;
      Publish(shard);
    }
  }
  for (auto it = led_.begin(); it != led_.end();) {
    auto next = std::next(it);
    if (held_here.count(it->first) == 0) StopLeading(it->first, "the map no longer gives it this node", &failed_);
    it = next;
  }
  for (auto it = copies_.begin(); it != copies_.end();) {
    it = held_here.count(it->first) == 0 ? copies_.erase(it) : std::next(it);
  }
}

void Replication::StartLeading(uint32_t shard, uint64_t term, const cluster::Shard& layout) {
  auto led = std::make_unique<Led>();
  led->term = term;
  led->copies = layout.nodes.size();
  Copy& copy = *copies_[shard];
  copy.known_term = std::max(copy.known_term, term);
  copy.syncing_term = 0;
  // Elected, this node's copy is the shard: whatever it holds is the
  // history its followers continue from (or copy whole).
  copy.whole = true;
  if (led->copies > 1) {
    Entry marker;
    marker.position = {term, copy.log.last().seq + 1};
    led->first_seq = marker.position.seq;
    copy.log.Append(std::move(marker));
  }
  log_->info("replication: leading shard {} at term {} from seq {} ({} copies)", shard, term, copy.log.last().seq,
             led->copies);
  led_[shard] = std::move(led);
  Publish(shard);
}

void Replication::StopLeading(uint32_t shard, const std::string& why, std::vector<HeldReply>* failed) {
  auto it = led_.find(shard);
  if (it == led_.end()) return;
  Led& led = *it->second;
  for (auto h = held_.begin(); h != held_.end();) {
    const bool waits_here =
        std::any_of(h->waits.begin(), h->waits.end(), [&](const CommitWait& w) { return w.shard == shard; });
    if (!waits_here) {
      ++h;
      continue;
    }
    Fail(h->reply, "shard " + std::to_string(shard) + " changed primary (" + why +
                       ") before this write reached a majority of its copies: it may or may not persist");
    failed->push_back(std::move(h->reply));
    h = held_.erase(h);
  }
  log_->info("replication: no longer leading shard {} (term {}): {}", shard, led.term, why);
  led_.erase(it);
  Publish(shard);
}

void Replication::SetFollowers(Led& led, const cluster::Shard& layout, const ClusterView& view) {
  led.copies = layout.nodes.size();
  std::vector<Follower> next;
  for (const std::string& node : layout.nodes) {
    if (node == self_) continue;
    auto old =
        std::find_if(led.followers.begin(), led.followers.end(), [&](const Follower& f) { return f.node == node; });
    Follower f = old != led.followers.end() ? std::move(*old) : Follower{};
    f.node = node;
    auto endpoint = view.endpoints.find(node);
    const std::string now = endpoint == view.endpoints.end() ? std::string() : endpoint->second;
    if (now != f.endpoint) {  // (re)registered, maybe elsewhere: start over
      f.endpoint = now;
      f.state = Follower::kProbe;
      f.whole = false;
      f.last_sent = {};
    }
    next.push_back(std::move(f));
  }
  led.followers = std::move(next);
}

// ------------------------------------------------------------ the primary

Replication::Led* Replication::LedFor(std::string_view key, uint32_t* shard) const {
  if (led_.empty() || !view_ || !view_->map) return nullptr;
  *shard = view_->map->ShardForSlot(SlotOf(key)).id;
  auto it = led_.find(*shard);
  return it == led_.end() ? nullptr : it->second.get();
}

void Replication::Record(std::string_view key, std::vector<CommitWait>& waits) {
  uint32_t shard = 0;
  Led* led = LedFor(key, &shard);
  if (led == nullptr || led->copies <= 1) return;
  Copy& copy = *copies_[shard];
  Entry e;
  e.position = {led->term, copy.log.last().seq + 1};
  e.key.assign(key);
  std::string value;
  if (const auto ttl = cache_.Peek(key, &value)) {
    e.value = std::move(value);
    e.ttl_ms = TtlMillis(ttl);
  }
  const uint64_t seq = e.position.seq;
  copy.log.Append(std::move(e));
  if (!view_->strong) return;
  led->pending[std::string(key)] = seq;
  led->pending_order.emplace_back(seq, std::string(key));
  waits.push_back({shard, seq});
}

void Replication::ReadBarrier(std::string_view key, std::vector<CommitWait>& waits) const {
  uint32_t shard = 0;
  const Led* led = view_ && view_->strong ? LedFor(key, &shard) : nullptr;
  if (led == nullptr) return;
  uint64_t seq = led->commit < led->first_seq ? led->first_seq : 0;
  auto pending = led->pending.find(key);
  if (pending != led->pending.end() && pending->second > led->commit) seq = std::max(seq, pending->second);
  if (seq != 0) waits.push_back({shard, seq});
}

bool Replication::Committed(const std::vector<CommitWait>& waits) const {
  // Waits are only made for shards this node leads. One it no longer leads
  // is never committed here: the write may be lost or overwritten by the
  // new primary, so its reply fails at its deadline rather than acknowledge
  // it (a primary stopped past its lease used to acknowledge on resuming).
  return std::all_of(waits.begin(), waits.end(), [&](const CommitWait& w) {
    auto it = led_.find(w.shard);
    return it != led_.end() && it->second->commit >= w.seq;
  });
}

void Replication::Hold(std::vector<CommitWait> waits, HeldReply reply) {
  reply.deadline = Clock::now() + kCommitTimeout;
  held_.push_back(Held{std::move(waits), std::move(reply)});
}

bool Replication::Pump(std::vector<HeldReply>& ready) {
  for (auto& [endpoint, peer] : peers_) ReadReplies(*peer);
  const auto now = Clock::now();
  bool busy = false;
  for (auto& [shard, led] : led_) {
    for (Follower& f : led->followers) busy = PumpFollower(shard, *led, f, now) || busy;
    AdvanceCommit(shard, *led);
  }
  Release(ready, now);
  for (HeldReply& r : failed_) ready.push_back(std::move(r));
  failed_.clear();
  return busy;
}

void Replication::StopAll(std::vector<HeldReply>& ready) {
  while (!led_.empty()) StopLeading(led_.begin()->first, "this node is stopping", &failed_);
  for (HeldReply& r : failed_) ready.push_back(std::move(r));
  failed_.clear();
}

bool Replication::PumpFollower(uint32_t shard, Led& led, Follower& f, Clock::time_point now) {
  if (f.endpoint.empty()) return false;
  const bool owes = f.state == Follower::kSync || f.next_seq > f.acked + 1;
  if (f.state != Follower::kProbe && owes && now - f.last_heard > kSilenceLimit && now - f.last_sent > kProbeEvery) {
    // Owes answers and has said nothing for a while: it may have restarted,
    // or a message to it was lost with its connection.
    log_->warn("replication: shard {}: follower '{}' at {} has not answered for {} ms; probing it", shard, f.node,
               f.endpoint, kSilenceLimit.count());
    f.state = Follower::kProbe;
    f.whole = false;
    f.last_sent = {};
  }
  switch (f.state) {
    case Follower::kProbe: {
      if (now - f.last_sent < kProbeEvery) return false;
      const ShardPosition last = copies_[shard]->log.last();
      wire::Writer w;
      f.valid_from = next_request_++;
      w.BeginRequest(f.valid_from, wire::Op::kReplicate, 5);
      w.Uint(shard);
      w.Uint(led.term);
      w.Uint(kStream);
      w.Uint(last.term);
      w.Uint(last.seq);
      if (Send(PeerFor(f.endpoint), w)) f.last_sent = now;
      return false;
    }
    case Follower::kStreaming: SendStream(shard, led, f); return false;
    case Follower::kSync:
      if (!SendStream(shard, led, f)) return false;
      return SendPages(shard, led, f);
  }
  return false;
}

void Replication::StartSync(uint32_t shard, Led& led, Follower& f) {
  if (f.endpoint.empty()) return;
  const Copy& copy = *copies_[shard];
  const ShardPosition at = copy.log.last();
  wire::Writer w;
  f.valid_from = next_request_++;
  std::vector<cluster::SlotRange> ranges;
  if (const cluster::Shard* layout = view_->map ? view_->map->FindShard(shard) : nullptr) ranges = layout->slots;
  w.BeginRequest(f.valid_from, wire::Op::kReplicate, static_cast<uint32_t>(5 + 2 * ranges.size()));
  w.Uint(shard);
  w.Uint(led.term);
  w.Uint(kSyncBegin);
  w.Uint(at.term);
  w.Uint(at.seq);
  for (const cluster::SlotRange& r : ranges) {
    w.Uint(r.first);
    w.Uint(r.last);
  }
  f.state = Follower::kSync;
  f.whole = false;
  f.next_seq = at.seq + 1;
  f.cursor = 0;
  f.pages_done = false;
  if (!Send(PeerFor(f.endpoint), w)) {
    f.state = Follower::kProbe;  // its queue is full: try again later
    return;
  }
  f.last_sent = Clock::now();
  ++full_syncs_;
  log_->info("replication: shard {}: sending follower '{}' a full copy (from seq {})", shard, f.node, at.seq);
}

// Sends the entries the follower lacks. False if the socket is full or the
// follower fell out of the log (then it is being copied afresh).
bool Replication::SendStream(uint32_t shard, Led& led, Follower& f) {
  const Log& log = copies_[shard]->log;
  while (f.next_seq <= log.last().seq) {
    if (f.next_seq <= log.base.seq) {
      log_->warn("replication: shard {}: follower '{}' fell behind what the log keeps; copying the shard afresh", shard,
                 f.node);
      StartSync(shard, led, f);
      return false;
    }
    const ShardPosition prev = f.next_seq - 1 == log.base.seq ? log.base : log.At(f.next_seq - 1)->position;
    const uint64_t n = std::min<uint64_t>(kEntriesPerMessage, log.last().seq - f.next_seq + 1);
    wire::Writer w;
    w.BeginRequest(next_request_++, wire::Op::kReplicate, static_cast<uint32_t>(5 + 5 * n));
    w.Uint(shard);
    w.Uint(led.term);
    w.Uint(kStream);
    w.Uint(prev.term);
    w.Uint(prev.seq);
    for (uint64_t s = f.next_seq; s < f.next_seq + n; ++s) {
      const Entry& e = *log.At(s);
      w.Uint(e.position.term);
      w.Uint(e.position.seq);
      w.Bytes(e.key);
      if (e.value) {
        w.Bytes(*e.value);
      } else {
        w.Nil();
      }
      w.Int(e.ttl_ms);
    }
    if (!Send(PeerFor(f.endpoint), w)) return false;
    f.next_seq += n;
    f.last_sent = Clock::now();
  }
  return true;
}

// A few pages of the shard's keys. True while more remain.
bool Replication::SendPages(uint32_t shard, Led& led, Follower& f) {
  if (f.pages_done) return false;
  const cluster::ShardMap* map = view_->map.get();
  for (int page = 0; page < kPagesPerPump; ++page) {
    const Cache::ScanPage keys = cache_.Scan(f.cursor, {}, kBucketsPerPage);
    wire::Writer w;
    std::vector<std::pair<const std::string*, int64_t>> items;
    std::vector<std::string> values;
    values.reserve(keys.keys.size());
    for (const std::string& key : keys.keys) {
      if (map == nullptr || map->ShardForSlot(SlotOf(key)).id != shard) continue;
      std::string value;
      const auto ttl = cache_.Peek(key, &value);
      if (!ttl) continue;  // gone meanwhile
      values.push_back(std::move(value));
      items.emplace_back(&key, TtlMillis(ttl));
    }
    w.BeginRequest(next_request_++, wire::Op::kReplicate, static_cast<uint32_t>(3 + 3 * items.size()));
    w.Uint(shard);
    w.Uint(led.term);
    w.Uint(kSyncPage);
    for (size_t i = 0; i < items.size(); ++i) {
      w.Bytes(*items[i].first);
      w.Bytes(values[i]);
      w.Int(items[i].second);
    }
    if (!Send(PeerFor(f.endpoint), w)) return false;  // this page again next time
    f.cursor = keys.cursor;
    f.last_sent = Clock::now();
    if (f.cursor == 0) {
      wire::Writer end;
      end.BeginRequest(next_request_++, wire::Op::kReplicate, 3);
      end.Uint(shard);
      end.Uint(led.term);
      end.Uint(kSyncEnd);
      if (!Send(PeerFor(f.endpoint), end)) {
        StartSync(shard, led, f);  // cannot happen often: the queue was open a moment ago
        return false;
      }
      f.pages_done = true;
      return false;
    }
  }
  return true;
}

void Replication::ReadReplies(Peer& peer) {
  for (;;) {
    zmq::message_t frame;
    try {
      if (!zmqio::Recv(peer.socket, frame, zmq::recv_flags::dontwait)) return;
    } catch (const zmq::error_t& e) {
      log_->warn("replication: receiving from {}: {}", peer.endpoint, e.what());
      return;
    }
    auto reply = wire::DecodeReply(static_cast<const char*>(frame.data()), frame.size());
    if (!reply) {
      log_->warn("replication: a malformed answer from {}: {}", peer.endpoint, reply.error().ToString());
      continue;
    }
    if (reply->status != ErrorCode::kOk) {
      // Most often a node that has not read the newest map yet (it holds
      // no copy of the shard in its view): what it refused was not
      // applied, so it is probed again, and continues from where it is.
      // (The reply does not say which shard it refused: every stream to
      // that node starts over with a probe, which costs a round trip.)
      for (auto& [shard, led] : led_) {
        for (Follower& f : led->followers) {
          if (f.endpoint != peer.endpoint) continue;
          f.last_heard = Clock::now();
          if (f.state == Follower::kProbe) continue;
          f.state = Follower::kProbe;
          f.whole = false;
          f.last_sent = {};
        }
      }
      log_->debug("replication: {} refused a REPLICATE: {}", peer.endpoint,
                  wire::ReplyError(reply->status, *reply->payload).ToString());
      continue;
    }
    OnReply(peer.endpoint, reply->id, *reply->payload);
  }
}

// [shard, accepted, known_term, last_term, last_seq, whole]
void Replication::OnReply(const std::string& endpoint, uint64_t id, const msgpack::object& p) {
  if (p.type != msgpack::type::ARRAY || p.via.array.size != 6) return;
  const msgpack::object* a = p.via.array.ptr;
  auto shard = wire::UintArg(a[0], "shard");
  auto known = wire::UintArg(a[2], "known_term");
  auto last_term = wire::UintArg(a[3], "last_term");
  auto last_seq = wire::UintArg(a[4], "last_seq");
  if (!shard || !known || !last_term || !last_seq || a[1].type != msgpack::type::BOOLEAN ||
      a[5].type != msgpack::type::BOOLEAN) {
    return;
  }
  const bool accepted = a[1].via.boolean;
  const bool whole = a[5].via.boolean;
  auto it = led_.find(static_cast<uint32_t>(*shard));
  if (it == led_.end()) return;
  Led& led = *it->second;
  auto f = std::find_if(led.followers.begin(), led.followers.end(),
                        [&](const Follower& x) { return x.endpoint == endpoint; });
  if (f == led.followers.end() || id < f->valid_from) return;
  f->last_heard = Clock::now();
  if (*known > led.term) {
    StopLeading(it->first, "follower '" + f->node + "' has seen term " + std::to_string(*known), &failed_);
    return;
  }
  const ShardPosition at{*last_term, *last_seq};
  const Log& log = copies_[it->first]->log;
  switch (f->state) {
    case Follower::kProbe:
      if (whole && log.Holds(at)) {
        f->state = Follower::kStreaming;
        f->whole = true;
        f->next_seq = at.seq + 1;
        f->acked = at.seq;
        log_->info("replication: shard {}: follower '{}' continues from seq {}", it->first, f->node, at.seq);
      } else {
        StartSync(it->first, led, *f);
      }
      return;
    case Follower::kSync:
      if (!accepted) {
        StartSync(it->first, led, *f);
        return;
      }
      if (whole && !f->whole) {
        f->whole = true;
        f->state = Follower::kStreaming;
        log_->info("replication: shard {}: follower '{}' holds a full copy", it->first, f->node);
      }
      f->acked = std::max(f->acked, at.seq);
      return;
    case Follower::kStreaming:
      if (!accepted) {
        f->state = Follower::kProbe;
        f->whole = false;
        f->last_sent = {};
        return;
      }
      f->acked = std::max(f->acked, at.seq);
      return;
  }
}

void Replication::AdvanceCommit(uint32_t shard, Led& led) {
  const Log& log = copies_[shard]->log;
  std::vector<uint64_t> held{log.last().seq};
  for (const Follower& f : led.followers) {
    if (f.whole && f.state == Follower::kStreaming) held.push_back(f.acked);
  }
  const size_t majority = led.copies / 2 + 1;
  if (held.size() < majority) return;
  std::nth_element(held.begin(), held.begin() + static_cast<long>(majority - 1), held.end(), std::greater<>());
  const uint64_t candidate = held[majority - 1];
  // Only an entry of this term commits by count (the rest with it): an
  // older term's entry on a majority may still be lost to a newer primary.
  const Entry* e = log.At(candidate);
  if (candidate <= led.commit || e == nullptr || e->position.term != led.term) return;
  led.commit = candidate;
  while (!led.pending_order.empty() && led.pending_order.front().first <= led.commit) {
    auto& [seq, key] = led.pending_order.front();
    auto p = led.pending.find(key);
    if (p != led.pending.end() && p->second == seq) led.pending.erase(p);
    led.pending_order.pop_front();
  }
}

void Replication::Release(std::vector<HeldReply>& ready, Clock::time_point now) {
  if (held_.empty()) return;
  // A primary whose lease may have lapsed acknowledges nothing: another may
  // lead the shard by now.
  const bool fresh = node_.LeaseFresh();
  for (auto it = held_.begin(); it != held_.end();) {
    if (fresh && Committed(it->waits)) {
      ready.push_back(std::move(it->reply));
      it = held_.erase(it);
    } else if (it->reply.deadline <= now) {
      ++commit_timeouts_;
      Fail(it->reply, fresh ? "the write did not reach a majority of its shard's copies within " +
                                  std::to_string(kCommitTimeout.count()) + " ms: it may or may not persist"
                            : "this primary's lease may have lapsed before the write reached a majority of its "
                              "shard's copies: it may or may not persist");
      ready.push_back(std::move(it->reply));
      it = held_.erase(it);
    } else {
      ++it;
    }
  }
}

void Replication::Fail(HeldReply& reply, const std::string& why) {
  wire::Writer out;
  out.ErrorReply(reply.request_id, Error{ErrorCode::kTimeout, why});
  reply.data.assign(out.data(), out.size());
}

Replication::Peer& Replication::PeerFor(const std::string& endpoint) {
  auto& peer = peers_[endpoint];
  if (!peer) {
    peer = std::make_unique<Peer>();
    peer->endpoint = endpoint;
    peer->socket = zmq::socket_t(context_, zmq::socket_type::dealer);
    peer->socket.set(zmq::sockopt::linger, 0);
    peer->socket.set(zmq::sockopt::immediate, 1);  // queue nothing for a peer not connected
    peer->socket.set(zmq::sockopt::sndhwm, kPeerHighWater);
    zmqio::UseCurveClient(peer->socket, node_.settings().curve);
    zmqio::Connect(peer->socket, endpoint);
  }
  return *peer;
}

bool Replication::Send(Peer& peer, const wire::Writer& request) {
  try {
    return zmqio::Send(peer.socket, zmq::const_buffer(request.data(), request.size()), zmq::send_flags::dontwait)
        .has_value();
  } catch (const zmq::error_t& e) {
    log_->warn("replication: sending to {}: {}", peer.endpoint, e.what());
    return false;
  }
}

void Replication::AddPollItems(std::vector<zmq::pollitem_t>& items) {
  for (auto& [endpoint, peer] : peers_) items.push_back({peer->socket.handle(), 0, ZMQ_POLLIN, 0});
}

// ------------------------------------------------------------ the replica

namespace {

// Why a REPLICATE request is malformed, or nullopt: every argument of the
// kind checked before anything is applied, so a bad request changes nothing.
std::optional<std::string> Malformed(const msgpack::object* a, uint32_t n, uint64_t kind) {
  auto is_uint = [&](uint32_t i) { return a[i].type == msgpack::type::POSITIVE_INTEGER; };
  auto is_bytes = [&](uint32_t i) { return a[i].type == msgpack::type::STR || a[i].type == msgpack::type::BIN; };
  auto is_ttl = [&](uint32_t i) { return is_uint(i); };  // ms >= 0
  switch (kind) {
    case kStream: {
      if (n < 5 || (n - 5) % 5 != 0) return "STREAM takes prev_term, prev_seq and entries of 5 values";
      if (!is_uint(3) || !is_uint(4)) return "prev_term and prev_seq are unsigned integers";
      uint64_t seq = a[4].via.u64;
      for (uint32_t i = 5; i < n; i += 5) {
        if (!is_uint(i) || !is_uint(i + 1) || !is_bytes(i + 2) ||
            !(is_bytes(i + 3) || a[i + 3].type == msgpack::type::NIL) || !is_ttl(i + 4)) {
          return "entry " + std::to_string((i - 5) / 5) + " is not term, seq, key, value or nil, ttl_ms >= 0";
        }
        if (a[i + 1].via.u64 != ++seq)
          return "entry " + std::to_string((i - 5) / 5) + " does not follow seq " + std::to_string(seq - 1);
      }
      return std::nullopt;
    }
    case kSyncBegin:
      if (n < 5 || (n - 5) % 2 != 0) return "SYNC_BEGIN takes term, seq and first_slot, last_slot pairs";
      if (!is_uint(3) || !is_uint(4)) return "term and seq are unsigned integers";
      for (uint32_t i = 5; i < n; i += 2) {
        if (!is_uint(i) || !is_uint(i + 1) || a[i].via.u64 > a[i + 1].via.u64 ||
            a[i + 1].via.u64 >= cluster::kSlotCount) {
          return "slot range " + std::to_string((i - 5) / 2) + " is not first <= last < 16384";
        }
      }
      return std::nullopt;
    case kSyncPage:
      if ((n - 3) % 3 != 0) return "SYNC_PAGE takes key, value, ttl_ms triples";
      for (uint32_t i = 3; i < n; i += 3) {
        if (!is_bytes(i) || !is_bytes(i + 1) || !is_ttl(i + 2)) {
          return "item " + std::to_string((i - 3) / 3) + " is not key, value, ttl_ms >= 0";
        }
      }
      return std::nullopt;
    case kSyncEnd:
      if (n != 3) return "SYNC_END takes no arguments of its own";
      return std::nullopt;
    default: return "kind " + std::to_string(kind) + " is not 0 (STREAM), 1, 2 or 3 (SYNC_BEGIN, _PAGE, _END)";
  }
}

}  // namespace

void Replication::Handle(uint64_t id, const msgpack::object* a, uint32_t n, wire::Writer& out) {
  auto bad = [&](const std::string& why) {
    out.ErrorReply(id, Error{ErrorCode::kInvalidArgument, "REPLICATE: " + why});
  };
  if (n < 3) return bad("takes shard, term, kind and the kind's arguments");
  auto shard = wire::UintArg(a[0], "shard");
  auto term = wire::UintArg(a[1], "term");
  auto kind = wire::UintArg(a[2], "kind");
  if (!shard || !term || !kind) return bad("shard, term and kind are unsigned integers");
  if (auto why = Malformed(a, n, *kind)) return bad(*why);
  auto found = copies_.find(static_cast<uint32_t>(*shard));
  if (found == copies_.end()) {
    return out.ErrorReply(id, Error{ErrorCode::kClusterDown, "REPLICATE: this node holds no copy of shard " +
                                                                 std::to_string(*shard) + " in its map"});
  }
  Copy& copy = *found->second;
  bool accepted = false;
  auto answer = [&] {
    out.BeginReply(id, ErrorCode::kOk);
    out.Array(6);
    out.Uint(*shard);
    out.Bool(accepted);
    out.Uint(copy.known_term);
    out.Uint(copy.log.last().term);
    out.Uint(copy.log.last().seq);
    out.Bool(copy.whole);
  };
  if (*term < copy.known_term) return answer();  // a deposed primary: fenced off
  auto led = led_.find(found->first);
  if (led != led_.end()) {
    if (led->second->term >= *term) return answer();
    StopLeading(found->first, "a primary of term " + std::to_string(*term) + " writes to it", &failed_);
  }
  if (*term > copy.known_term) {
    copy.known_term = *term;
    copy.syncing_term = 0;
  }
  const bool syncing = copy.syncing_term == *term;
  // Malformed() has checked every argument's type and shape.
  auto bytes = [&](uint32_t i) { return *wire::BytesArg(a[i], "bytes"); };
  auto ttl_of = [&](uint32_t i) {
    SetOptions options;
    options.ttl = std::chrono::milliseconds(static_cast<int64_t>(a[i].via.u64));
    return options;
  };
  switch (*kind) {
    case kStream: {
      if (!(copy.whole || syncing) || copy.log.last() != ShardPosition{a[3].via.u64, a[4].via.u64}) return answer();
      for (uint32_t i = 5; i < n; i += 5) {
        Entry e;
        e.position = {a[i].via.u64, a[i + 1].via.u64};
        const std::string_view key = bytes(i + 2);
        if (!key.empty()) {  // an empty key marks a term's start
          e.key.assign(key);
          if (a[i + 3].type == msgpack::type::NIL) {
            cache_.Erase(key);
          } else {
            const std::string_view value = bytes(i + 3);
            if (auto stored = cache_.Set(key, value, ttl_of(i + 4)); !stored) {
              log_->warn("replication: shard {}: cannot store a key of {} bytes: {}", *shard, value.size(),
                         stored.error().ToString());
            }
            e.value.emplace(value);
            e.ttl_ms = static_cast<int64_t>(a[i + 4].via.u64);
          }
          ++entries_applied_;
        }
        copy.log.Append(std::move(e));
      }
      accepted = true;
      break;
    }
    case kSyncBegin: {
      std::vector<uint8_t> slots(cluster::kSlotCount, 0);
      for (uint32_t i = 5; i < n; i += 2) {
        std::fill(slots.begin() + static_cast<long>(a[i].via.u64),
                  slots.begin() + static_cast<long>(a[i + 1].via.u64) + 1, 1);
      }
      // What this copy held of the shard goes: the pages bring it all.
      const size_t dropped = DropKeysOfSlots(cache_, slots);
      copy.whole = false;
      copy.syncing_term = *term;
      copy.log.Reset({a[3].via.u64, a[4].via.u64});
      log_->info("replication: shard {}: receiving a full copy from the primary of term {} ({} old keys dropped)",
                 *shard, *term, dropped);
      accepted = true;
      break;
    }
    case kSyncPage:
      if (!syncing) return answer();
      for (uint32_t i = 3; i < n; i += 3) {
        if (auto stored = cache_.Set(bytes(i), bytes(i + 1), ttl_of(i + 2)); !stored) {
          log_->warn("replication: shard {}: cannot store a copied key: {}", *shard, stored.error().ToString());
        }
      }
      accepted = true;
      break;
    case kSyncEnd:
      if (!syncing) return answer();
      copy.whole = true;
      copy.syncing_term = 0;
      log_->info("replication: shard {}: full copy received, at seq {}", *shard, copy.log.last().seq);
      accepted = true;
      break;
  }
  Publish(found->first);
  answer();
}

bool Replication::Whole(uint32_t shard) const {
  auto it = copies_.find(shard);
  return it != copies_.end() && it->second->whole;
}

void Replication::Publish(uint32_t shard) {
  auto it = copies_.find(shard);
  if (it == copies_.end()) return;
  node_.SetPosition(shard, it->second->log.last(), it->second->whole);
}

// ------------------------------------------------------------ stats

// Entries the slowest follower of `led` is behind; one still being copied
// counts as the whole log.
uint64_t Replication::WorstLag(const Led& led, uint64_t last) {
  uint64_t worst = 0;
  for (const Follower& f : led.followers) worst = std::max(worst, f.whole ? last - f.acked : last);
  return worst;
}

Replication::Stats Replication::stats() const {
  Stats s;
  s.led_shards = led_.size();
  s.followed_shards = copies_.size() - led_.size();
  s.held = held_.size();
  for (const auto& [shard, led] : led_)
    s.max_lag = std::max(s.max_lag, WorstLag(*led, copies_.at(shard)->log.last().seq));
  s.commit_timeouts = commit_timeouts_;
  s.full_syncs = full_syncs_;
  s.entries_applied = entries_applied_;
  return s;
}

std::vector<Replication::ShardRow> Replication::Shards() const {
  std::vector<ShardRow> rows;
  for (const auto& [shard, copy] : copies_) {
    ShardRow row{shard, copy->whole ? Role::kReplica : Role::kCopying, copy->known_term, copy->log.last().seq, 0};
    if (auto led = led_.find(shard); led != led_.end()) {
      row.role = Role::kPrimary;
      row.term = led->second->term;
      row.lag = WorstLag(*led->second, row.seq);
    }
    rows.push_back(row);
  }
  return rows;
}

std::map<std::string, int64_t> Replication::Lag() const {
  std::map<std::string, int64_t> lag;
  for (const auto& [shard, led] : led_) {
    const uint64_t last = copies_.at(shard)->log.last().seq;
    for (const Follower& f : led->followers) {
      const int64_t behind = f.whole ? static_cast<int64_t>(last - f.acked) : -1;
      auto& worst = lag[f.node];
      worst = (behind < 0 || worst < 0) ? -1 : std::max(worst, behind);
    }
  }
  return lag;
}

}  // namespace cachet::daemon
