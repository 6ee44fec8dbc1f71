// Writes the fuzz targets' seed corpora: one small meaningful file per case
// (a request of every op, replies of every payload shape, a full config, a
// full policy, each kind of segment damage), under DIR/<target>/, named for
// what it holds. Run by `tests/fuzz/run.sh --remake-corpus`; the output is
// committed as tests/fuzz/corpus/.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "protocol.h"

namespace {

using namespace cachet;
using wire::Op;
namespace fs = std::filesystem;

fs::path g_root;

void Put(const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path dir = g_root / target;
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

std::string Bytes(const wire::Writer& w) { return std::string(w.data(), w.size()); }

// One request frame: the header, then `args` writes its arguments.
std::string Request(uint64_t id, Op op, uint32_t count, const std::function<void(wire::Writer&)>& args = {}) {
  wire::Writer w;
  w.BeginRequest(id, op, count);
  if (args) args(w);
  return Bytes(w);
}

// Requests, named for their op, in the order a session might send them.
std::vector<std::pair<std::string, std::string>> Requests() {
  // One request a line:
  // clang-format off
  return {
      {"ping", Request(1, Op::kPing, 0)},
      {"info", Request(2, Op::kInfo, 0)},
      {"set", Request(3, Op::kSet, 2, [](wire::Writer& w) { w.Bytes("user:1"); w.Bytes("alice"); })},
      {"set_ttl_nx", Request(4, Op::kSet, 4, [](wire::Writer& w) { w.Bytes("session"); w.Bytes("tok"); w.Int(60000); w.Uint(1); })},
      {"get", Request(5, Op::kGet, 1, [](wire::Writer& w) { w.Bytes("user:1"); })},
      {"exists", Request(6, Op::kExists, 1, [](wire::Writer& w) { w.Bytes("user:1"); })},
      {"expire", Request(7, Op::kExpire, 2, [](wire::Writer& w) { w.Bytes("user:1"); w.Int(1000); })},
      {"ttl", Request(8, Op::kTtl, 1, [](wire::Writer& w) { w.Bytes("user:1"); })},
      {"incr", Request(9, Op::kIncr, 3, [](wire::Writer& w) { w.Bytes("hits"); w.Int(5); w.Int(60000); })},
      {"decr", Request(10, Op::kDecr, 2, [](wire::Writer& w) { w.Bytes("hits"); w.Int(2); })},
      {"mset", Request(11, Op::kMSet, 4, [](wire::Writer& w) { w.Bytes("a"); w.Bytes("1"); w.Bytes("b"); w.Bytes("2"); })},
      {"mget", Request(12, Op::kMGet, 3, [](wire::Writer& w) { w.Bytes("a"); w.Bytes("b"); w.Bytes("zz"); })},
      {"scan", Request(13, Op::kScan, 3, [](wire::Writer& w) { w.Uint(0); w.Bytes("a*"); w.Uint(16); })},
      {"del", Request(14, Op::kDel, 1, [](wire::Writer& w) { w.Bytes("a"); })},
      {"stats", Request(15, Op::kStats, 0)},
      {"ratelimit", Request(16, Op::kRateLimit, 2, [](wire::Writer& w) { w.Bytes("client-7"); w.Bytes("free"); })},
      {"ratelimit_cost", Request(17, Op::kRateLimit, 3, [](wire::Writer& w) { w.Bytes("vip"); w.Bytes("paid"); w.Uint(3); })},
      {"ask_get", Request(18, Op::kAsk, 2, [](wire::Writer& w) { w.Str("GET"); w.Bytes("user:1"); })},
      {"cluster", Request(19, Op::kCluster, 0)},
      {"slotdump", Request(20, Op::kSlotDump, 5, [](wire::Writer& w) { for (int i = 0; i < 5; ++i) w.Uint(i); })},
      {"reload", Request(21, Op::kReload, 0)},
      {"flush", Request(22, Op::kFlush, 0)},
  };
  // clang-format on
}

void WireCorpus() {
  for (const auto& [name, frame] : Requests()) Put("fuzz_wire", "request_" + name, frame);
  wire::Writer w;
  w.BeginReply(1, ErrorCode::kOk);
  w.Str("PONG");
  Put("fuzz_wire", "reply_pong", Bytes(w));
  w.Clear();
  w.BeginReply(2, ErrorCode::kNotFound);
  w.Nil();
  Put("fuzz_wire", "reply_miss", Bytes(w));
  w.Clear();
  w.BeginReply(3, ErrorCode::kOk);
  w.Int(42);
  Put("fuzz_wire", "reply_int", Bytes(w));
  w.Clear();
  w.BeginReply(4, ErrorCode::kOk);
  w.Bool(true);
  Put("fuzz_wire", "reply_bool", Bytes(w));
  w.Clear();
  w.ErrorReply(5, Error{ErrorCode::kWrongType, "key must be binary, got integer"});
  Put("fuzz_wire", "reply_error", Bytes(w));
  w.Clear();
  wire::WriteRedirect(w, 6, ErrorCode::kMoved, {"slot 7 is served elsewhere", 3, 7, "tcp://127.0.0.1:7001"});
  Put("fuzz_wire", "reply_moved", Bytes(w));
  w.Clear();
  w.BeginReply(7, ErrorCode::kOk);
  Decision d;
  d.allowed = true;
  d.limit = 10;
  d.remaining = 9;
  d.rule = "per_second";
  wire::WriteDecision(w, d);
  Put("fuzz_wire", "reply_decision", Bytes(w));
  w.Clear();
  w.BeginReply(8, ErrorCode::kOk);
  w.Array(2);
  w.Uint(0);
  w.Array(2);
  w.Bytes("a");
  w.Bytes("b");
  Put("fuzz_wire", "reply_scan", Bytes(w));
}

// Frames joined by fuzz_server's separator.
std::string Session(const std::vector<std::string>& frames) {
  std::string joined;
  for (const std::string& f : frames) {
    if (!joined.empty()) joined += '\xc1';
    joined += f;
  }
  return joined;
}

void ServerCorpus() {
  const auto requests = Requests();
  for (const auto& [name, frame] : requests) Put("fuzz_server", "one_" + name, frame);
  std::vector<std::string> all;
  for (const auto& [name, frame] : requests) all.push_back(frame);
  Put("fuzz_server", "session_every_op", Session(all));
  auto set = [](const std::string& k, const std::string& v) {
    return Request(1, Op::kSet, 2, [&](wire::Writer& w) {
      w.Bytes(k);
      w.Bytes(v);
    });
  };
  auto one = [](Op op, const std::string& k) { return Request(2, op, 1, [&](wire::Writer& w) { w.Bytes(k); }); };
  Put("fuzz_server", "session_set_get_del",
      Session({set("k", "v"), one(Op::kGet, "k"), one(Op::kDel, "k"), one(Op::kGet, "k")}));
  Put("fuzz_server", "session_incr_not_integer", Session({set("n", "abc"), one(Op::kIncr, "n")}));
  std::vector<std::string> limited(8, Request(3, Op::kRateLimit, 2, [](wire::Writer& w) {
                                     w.Bytes("c");
                                     w.Bytes("free");
                                   }));
  Put("fuzz_server", "session_ratelimit_denied", Session(limited));
  Put("fuzz_server", "bad_not_array", "\x92\x01");
  Put("fuzz_server", "bad_unknown_op", Request(9, Op::kPing, 0).replace(3, 5, "\xa4NOPE"));
}

void ConfigCorpus() {
  Put("fuzz_config", "full.conf",
      "# cachetd configuration\n"
      "segment = cachet-test\n"
      "ipc = ipc:///tmp/cachetd-test.sock\n"
      "tcp = tcp://127.0.0.1:7379\n"
      "capacity = 256MiB\n"
      "max-entries = 100000\n"
      "max-key-size = 250\n"
      "max-value-size = 1MiB\n"
      "policy = clock\n"
      "max-frame = 0\n"
      "log-level = warn\n"
      "log-file = /var/log/cachetd.log\n"
      "remove-segment-on-exit = false\n"
      "rate-limit-policy = /etc/cachet/policy.ini\n"
      "rate-limit-capacity = 65536\n"
      "pub = tcp://127.0.0.1:7380\n"
      "reply-backlog-per-client = 16MiB\n"
      "reply-backlog-total = 256MiB\n");
  Put("fuzz_config", "cluster.conf",
      "cluster = prod\n"
      "node-id = node-1\n"
      "advertise = tcp://10.0.0.1:7379\n"
      "etcd = http://10.0.0.9:2379,http://10.0.0.10:2379\n"
      "replication = 3\n"
      "consistency = eventual\n");
  Put("fuzz_config", "sizes.conf", "capacity = 64k\nmax-value-size = 4096\nmax-frame = 1G\n");
  Put("fuzz_config", "empty.conf", "");
  Put("fuzz_config", "bad_unit.conf", "capacity = 12 parsecs\n");
  // Found by fuzzing: Boost's error message substituted this name into itself forever (config.cc).
  Put("fuzz_config", "found_placeholder_hang.conf", "clusteoption '%canonical_option%'etcd = http://10.0.1.9:2379\n");
}

void PolicyCorpus() {
  Put("fuzz_policy", "full.ini",
      "# tiers\n"
      "[tier.regular]\n"
      "per_minute = 100/1m sliding_window\n"
      "per_hour   = 1000/1h fixed_window local   # each host its share\n"
      "\n"
      "[tier.premium]\n"
      "per_minute = 1000/1m token_bucket burst=200\n"
      "trial      = 500/1m shadow\n"
      "exact      = 50/10s sliding_log\n"
      "\n"
      "[override.key-vip]\n"
      "per_minute = 5000/1m\n"
      "\n"
      "[keys]\n"
      "key-abc = premium\n"
      "key-def = regular\n"
      "\n"
      "[peers]\n"
      "web-1 = tcp://10.0.0.1:7400\n"
      "web-2 = tcp://10.0.0.2:7400\n");
  Put("fuzz_policy", "units.ini", "[tier.t]\na = 1/250ms\nb = 2/30s\nc = 3/5m\nd = 4/2h\ne = 5/1d\n");
  Put("fuzz_policy", "extremes.ini",
      "[tier.t]\nhuge = 18446744073709551615/1d token_bucket burst=18446744073709551615\n"
      "long = 1/36500d fixed_window\n");
  Put("fuzz_policy", "bad_line.ini", "[tier.t]\nper_minute = lots\n");
  // Found by fuzzing: its window's milliseconds passed int64 (policy_file.cc, Window).
  Put("fuzz_policy", "found_window_overflow.ini", "[tier.t]\nr = 10/25555555555555h\n");
}

// [mode][offset LE32][length LE32][patch]: see fuzz_segment.cc.
std::string SegmentInput(uint8_t mode, uint32_t offset, uint32_t length, const std::string& patch) {
  std::string s(9, '\0');
  s[0] = static_cast<char>(mode);
  std::memcpy(&s[1], &offset, 4);
  std::memcpy(&s[5], &length, 4);
  return s + patch;
}

void SegmentCorpus() {
  const std::string junk = std::string(64, '\xff') + std::string(64, '\x00') + "\x01\x02\x03\x04\x05\x06\x07\x08";
  const char* policies[3] = {"fifo", "clock", "s3fifo"};
  for (uint8_t p = 0; p < 3; ++p) {
    const uint8_t cache = static_cast<uint8_t>(p << 3);
    const std::string tag = policies[p];
    Put("fuzz_segment", "cache_" + tag + "_intact", SegmentInput(cache | 2 << 1, 0, 0xffffffff, ""));
    Put("fuzz_segment", "cache_" + tag + "_index_junk", SegmentInput(cache, 64, 0, junk));
    Put("fuzz_segment", "cache_" + tag + "_log_junk", SegmentInput(cache, 20000, 0, junk));
    Put("fuzz_segment", "cache_" + tag + "_truncated", SegmentInput(cache | 1 << 1, 0, 9000, ""));
    Put("fuzz_segment", "cache_" + tag + "_header_move",
        SegmentInput(cache | 3 << 1, 0x1d0, 0, "\x08\x00\x00\x00\x01"));
  }
  Put("fuzz_segment", "table_intact_write", SegmentInput(1 | 0x20, 0, 0, ""));
  Put("fuzz_segment", "table_slots_junk", SegmentInput(1 | 0x20, 32, 0, junk));
  Put("fuzz_segment", "table_truncated", SegmentInput(1 | 1 << 1, 0, 5000, ""));
  // Found by fuzzing: a capacity of 2^59 + 256 whose size wrapped to the mapping's (counter_table.cc, Validate).
  Put("fuzz_segment", "found_table_forged_capacity", SegmentInput(1 | 3 << 1, 15, 0, "\x08"));
  Put("fuzz_segment", "table_header_capacity", SegmentInput(1 | 3 << 1, 8, 0, std::string("\x00\x01\x00\x00", 4)));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus DIR\n");
    return 2;
  }
  g_root = argv[1];
  WireCorpus();
  ServerCorpus();
  ConfigCorpus();
  PolicyCorpus();
  SegmentCorpus();
  return 0;
}
