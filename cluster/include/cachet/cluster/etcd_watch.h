// EtcdWatch: the changes to a key, or to every key under a prefix, from a
// given revision on, delivered in order to a callback on a thread of the
// watch's own, through the gateway's streaming /v3/watch.
//
// The watch keeps its place: it resumes from the revision after the last
// event it delivered whenever it opens the stream again, so a broken
// connection, an etcd restart or a move to another endpoint loses and
// repeats nothing. The owner hears of two things it must act on:
//   kCompacted  etcd has compacted away revisions the watch still needed:
//               events were missed. Re-read the state (a Range), and ignore
//               events at or below the revision that read returned; the
//               watch goes on from the first revision etcd still has.
//   kLost       the stream is down and could not be opened again (error
//               says why, naming the endpoints). The owner's view is stale
//               from now on; the watch keeps trying every retry_interval
//               and, once back, delivers what it missed.
// A stream on which nothing arrives for idle_timeout is opened again, so an
// etcd that hangs (SIGSTOP, a dead host) is noticed within idle_timeout plus
// the request timeout.
//
// The callback runs on the watch's thread, one update at a time; it must
// not destroy the watch. Destroying the watch stops it promptly (it shuts
// the connection down; no wait on etcd), after any callback under way
// returns; no callback runs after. Movable, not copyable.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cachet/cluster/etcd_client.h"
#include "cachet/result.h"

namespace cachet::cluster {

struct WatchEvent {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  // The key as the event left it. For kDelete only key and mod_revision
  // (the revision of the delete) are set.
  KeyValue kv;
};

struct WatchUpdate {
  enum class Kind { kEvents, kCompacted, kLost };
  Kind kind = Kind::kEvents;
  std::vector<WatchEvent> events;  // kEvents: in revision order
  // kEvents: the store's revision when etcd sent them. kCompacted: the
  // first revision etcd still has (the watch resumes there).
  int64_t revision = 0;
  Error error;  // kLost
};

struct WatchOptions {
  std::string key;
  bool prefix = false;         // every key starting with `key`
  int64_t start_revision = 1;  // the first revision delivered; at least 1
  std::chrono::milliseconds idle_timeout{5000};
  std::chrono::milliseconds retry_interval{200};

  Result<void> Validate() const;
};

class EtcdWatch {
 public:
  using Callback = std::function<void(const WatchUpdate&)>;

  // Starts watching at once; the stream is opened on the watch's thread (an
  // etcd that cannot be reached is reported as kLost, not here).
  static Result<EtcdWatch> Start(const EtcdOptions& etcd, WatchOptions options, Callback callback);

  EtcdWatch(EtcdWatch&&) noexcept;
  EtcdWatch& operator=(EtcdWatch&&) noexcept;
  ~EtcdWatch();

  // Where the watch would resume: the revision after the last one delivered.
  int64_t next_revision() const;

 private:
  struct Impl;
  explicit EtcdWatch(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachet::cluster
