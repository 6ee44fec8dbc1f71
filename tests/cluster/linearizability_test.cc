// The linearizability checker the cluster tests rely on: it must accept
// every history a correct register can produce and reject the classic
// anomalies, with the statuses a cluster client reports (ok, fail, unknown).
#include "cluster/linearizability.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace cachet::testing {
namespace {

// Builds a history by hand; times are plain integers.
class History {
 public:
  History& Write(int client, const std::string& key, std::optional<std::string> value, int64_t t0, int64_t t1,
                 OpStatus status = OpStatus::kOk) {
    return Add(client, key, OpKind::kWrite, std::move(value), std::nullopt, t0, t1, status);
  }
  History& Read(int client, const std::string& key, std::optional<std::string> value, int64_t t0, int64_t t1,
                OpStatus status = OpStatus::kOk) {
    return Add(client, key, OpKind::kRead, std::nullopt, std::move(value), t0, t1, status);
  }
  History& Incr(int client, const std::string& key, int64_t delta, std::optional<int64_t> result, int64_t t0,
                int64_t t1, OpStatus status = OpStatus::kOk) {
    return Add(client, key, OpKind::kIncrement, std::to_string(delta),
               result ? std::optional<std::string>(std::to_string(*result)) : std::nullopt, t0, t1, status);
  }
  const std::vector<Operation>& ops() const { return ops_; }
  CheckResult Check(const CheckOptions& options = {}) const { return CheckLinearizable(ops_, options); }

 private:
  History& Add(int client, const std::string& key, OpKind kind, std::optional<std::string> input,
               std::optional<std::string> output, int64_t t0, int64_t t1, OpStatus status) {
    Operation op;
    op.client = client;
    op.key = key;
    op.kind = kind;
    op.input = std::move(input);
    op.output = std::move(output);
    op.invoke_ns = t0;
    op.return_ns = status == OpStatus::kUnknown ? Operation::kNever : t1;
    op.status = status;
    ops_.push_back(std::move(op));
    return *this;
  }
  std::vector<Operation> ops_;
};

void ExpectLinearizable(const History& h) {
  const CheckResult r = h.Check();
  EXPECT_EQ(r.outcome, CheckOutcome::kLinearizable) << r.explanation;
}

// Rejected, on `key`, naming the operation with index `blocked`.
void ExpectRejected(const History& h, const std::string& key, size_t blocked) {
  const CheckResult r = h.Check();
  ASSERT_EQ(r.outcome, CheckOutcome::kNotLinearizable);
  EXPECT_FALSE(r.linearizable());
  EXPECT_EQ(r.key, key);
  EXPECT_NE(r.explanation.find("key " + key + ":"), std::string::npos) << r.explanation;
  EXPECT_NE(r.explanation.find("cannot place #" + std::to_string(blocked) + " "), std::string::npos) << r.explanation;
}

TEST(LinearizabilityTest, AcceptsConcurrentWritesThenReadsOfEither) {
  for (const char* seen : {"a", "b"}) {
    History h;
    h.Write(0, "k", "a", 0, 10).Write(1, "k", "b", 2, 12).Read(2, "k", seen, 20, 30).Read(0, "k", seen, 31, 40);
    ExpectLinearizable(h);
  }
}

TEST(LinearizabilityTest, AcceptsAReadOverlappingAWriteSeeingOldOrNew) {
  for (const char* seen : {"1", "2"}) {
    History h;
    h.Write(0, "k", "1", 0, 10).Write(0, "k", "2", 20, 40).Read(1, "k", seen, 25, 30);
    ExpectLinearizable(h);
  }
  // Two reads inside the write: old then new is fine...
  History h;
  h.Write(0, "k", "1", 0, 10).Write(0, "k", "2", 20, 100).Read(1, "k", "1", 30, 40).Read(1, "k", "2", 50, 60);
  ExpectLinearizable(h);
  // ...and a read of a key never written is a miss.
  History miss;
  miss.Read(0, "k", std::nullopt, 0, 5).Write(1, "k", "x", 3, 9).Read(2, "k", std::nullopt, 4, 6);
  ExpectLinearizable(miss);
}

TEST(LinearizabilityTest, RejectsAStaleReadAfterTheWriteReturned) {
  History h;
  h.Write(0, "k", "1", 0, 10).Write(0, "k", "2", 20, 30).Read(1, "k", "1", 40, 50);
  ExpectRejected(h, "k", 2);
}

TEST(LinearizabilityTest, RejectsReadsThatSeeAWriteThenDoNotSeeIt) {
  History h;
  h.Write(0, "k", "1", 0, 10).Write(0, "k", "2", 20, 100).Read(1, "k", "2", 30, 40).Read(1, "k", "1", 50, 60);
  ExpectRejected(h, "k", 3);
}

TEST(LinearizabilityTest, RejectsConcurrentWritesSeenInTwoOrders) {
  History h;
  h.Write(0, "k", "a", 0, 10)
      .Write(1, "k", "b", 0, 10)
      .Read(2, "k", "a", 20, 30)
      .Read(2, "k", "b", 40, 50)
      .Read(2, "k", "a", 60, 70);
  ExpectRejected(h, "k", 3);
}

TEST(LinearizabilityTest, RejectsAReadOfAValueNeverWritten) {
  History h;
  h.Write(0, "k", "1", 0, 10).Read(1, "k", "7", 5, 15);
  ExpectRejected(h, "k", 1);
}

TEST(LinearizabilityTest, RejectsALostAcknowledgedWrite) {
  History h;
  h.Write(0, "k", "1", 0, 10).Read(1, "k", std::nullopt, 20, 30);
  ExpectRejected(h, "k", 1);
  // Also when the key held a value before: the write is lost, the old one read.
  History h2;
  h2.Write(0, "k", "new", 0, 10).Read(1, "k", "old", 20, 30);
  CheckOptions options;
  options.initial["k"] = "old";
  EXPECT_EQ(h2.Check(options).outcome, CheckOutcome::kNotLinearizable);
  History h3;
  h3.Read(1, "k", "old", 0, 1).Write(0, "k", "new", 2, 10).Read(1, "k", "new", 20, 30);
  EXPECT_EQ(h3.Check(options).outcome, CheckOutcome::kLinearizable) << h3.Check(options).explanation;
  EXPECT_EQ(h3.Check().outcome, CheckOutcome::kNotLinearizable);  // without the initial value, "old" was never written
}

TEST(LinearizabilityTest, AFailedWriteNeverTookEffect) {
  History seen;
  seen.Write(0, "k", "1", 0, 10, OpStatus::kFail).Read(1, "k", "1", 20, 30);
  ExpectRejected(seen, "k", 1);
  History not_seen;
  not_seen.Write(0, "k", "1", 0, 10, OpStatus::kFail).Read(1, "k", std::nullopt, 20, 30);
  ExpectLinearizable(not_seen);
  // A failed read tells nothing, whatever output it carries.
  History failed_read;
  failed_read.Write(0, "k", "1", 0, 10).Read(1, "k", "junk", 20, 30, OpStatus::kFail);
  ExpectLinearizable(failed_read);
}

TEST(LinearizabilityTest, AnUnknownWriteMayHaveTakenEffectAtAnyLaterTime) {
  for (const std::optional<std::string>& seen : {std::optional<std::string>("1"), std::optional<std::string>()}) {
    History h;
    h.Write(0, "k", "1", 0, 0, OpStatus::kUnknown).Read(1, "k", seen, 20, 30).Read(1, "k", seen, 1000, 1001);
    ExpectLinearizable(h);
  }
  // Not seen, then seen long after the client gave up: still allowed.
  History late;
  late.Write(0, "k", "1", 0, 0, OpStatus::kUnknown).Read(1, "k", std::nullopt, 20, 30).Read(1, "k", "1", 500, 510);
  ExpectLinearizable(late);
  // But once seen it cannot be unseen.
  History flicker;
  flicker.Write(0, "k", "1", 0, 0, OpStatus::kUnknown).Read(1, "k", "1", 20, 30).Read(1, "k", std::nullopt, 40, 50);
  ExpectRejected(flicker, "k", 2);
  // It cannot take effect before it was invoked.
  History early;
  early.Read(1, "k", "1", 0, 10).Write(0, "k", "1", 20, 0, OpStatus::kUnknown);
  ExpectRejected(early, "k", 0);
  // Read before another write of the same value: either may be the source.
  History twin;
  twin.Write(0, "k", "1", 0, 0, OpStatus::kUnknown)
      .Read(1, "k", "1", 5, 10)
      .Write(2, "k", "1", 100, 110)
      .Read(1, "k", "1", 200, 210);
  ExpectLinearizable(twin);
  // An unknown read constrains nothing.
  History unknown_read;
  unknown_read.Write(0, "k", "1", 0, 10).Read(1, "k", "junk", 20, 0, OpStatus::kUnknown);
  ExpectLinearizable(unknown_read);
}

TEST(LinearizabilityTest, IncrementsAreCheckedAgainstTheCounter) {
  History ok;
  ok.Incr(0, "n", 1, 2, 0, 10).Incr(1, "n", 1, 1, 0, 10).Read(2, "n", "2", 20, 30);
  ExpectLinearizable(ok);
  History twice;
  twice.Incr(0, "n", 1, 1, 0, 10).Incr(1, "n", 1, 1, 0, 10);
  ExpectRejected(twice, "n", 1);
  // An increment that may have applied: the next one returns either 6 or 11.
  for (int64_t result : {6, 11}) {
    History maybe;
    maybe.Write(0, "n", "1", 0, 1)
        .Incr(0, "n", 5, std::nullopt, 2, 0, OpStatus::kUnknown)
        .Incr(1, "n", 5, result, 10, 20);
    ExpectLinearizable(maybe);
  }
  History wrong;
  wrong.Write(0, "n", "1", 0, 1).Incr(0, "n", 5, std::nullopt, 2, 0, OpStatus::kUnknown).Incr(1, "n", 5, 7, 10, 20);
  ExpectRejected(wrong, "n", 2);
  // Of a value that is not a number: a register would have refused it.
  History text;
  text.Write(0, "n", "abc", 0, 1).Incr(1, "n", 1, 1, 2, 3);
  ExpectRejected(text, "n", 1);
}

TEST(LinearizabilityTest, KeysAreCheckedApart) {
  History h;
  h.Write(0, "a", "1", 0, 10).Write(1, "b", "1", 0, 10).Read(2, "a", "1", 20, 30).Read(2, "b", std::nullopt, 20, 30);
  ExpectRejected(h, "b", 3);
  History fine;
  fine.Write(0, "a", "1", 0, 10).Write(1, "b", "2", 0, 10).Read(2, "a", "1", 20, 30).Read(2, "b", "2", 20, 30);
  ExpectLinearizable(fine);
}

TEST(LinearizabilityTest, TheExplanationNamesTheOrderFoundAndThePendingOps) {
  constexpr int64_t kMs = 1'000'000;
  History h;
  h.Write(0, "k", "1", 5 * kMs, 10 * kMs).Write(0, "k", "2", 20 * kMs, 30 * kMs).Read(1, "k", "1", 40 * kMs, 50 * kMs);
  const CheckResult r = h.Check();
  ASSERT_EQ(r.outcome, CheckOutcome::kNotLinearizable);
  EXPECT_EQ(r.explanation,
            "key k: longest order found places 2 of 3 operations:\n"
            "    #0 client 0 write k \"1\" [0.000 ms, 5.000 ms]\n"
            "    #1 client 0 write k \"2\" [15.000 ms, 25.000 ms]\n"
            "  register then holds \"2\"\n"
            "  cannot place #2 client 1 read k -> \"1\" [35.000 ms, 45.000 ms] before it returns: "
            "no pending operation fits next. Pending:\n"
            "    #2 client 1 read k -> \"1\" [35.000 ms, 45.000 ms]");
}

TEST(LinearizabilityTest, AnOperationReturningBeforeItsInvocationIsAnInvalidHistory) {
  History h;
  h.Write(0, "k", "1", 10, 5);
  const CheckResult r = h.Check();
  EXPECT_EQ(r.outcome, CheckOutcome::kInvalidHistory);
  EXPECT_NE(r.explanation.find("returns before it is invoked"), std::string::npos) << r.explanation;
  History bad_delta;
  bad_delta.Write(0, "n", "1", 0, 1);
  std::vector<Operation> ops = bad_delta.ops();
  ops[0].kind = OpKind::kIncrement;
  ops[0].input = "one";
  EXPECT_EQ(CheckLinearizable(ops).outcome, CheckOutcome::kInvalidHistory);
}

// A real sequential execution: each client runs its operations one after
// another; each operation takes effect at one instant inside its interval,
// and the outputs are those of a register applying them in that order.
// Some writes fail (never applied) and some end unknown (applied or not).
struct Generated {
  std::vector<Operation> ops;
};

Generated Generate(uint32_t seed, int clients, int ops_per_client, int keys, bool faults, bool counter = true) {
  std::mt19937 rng(seed);
  const auto uniform = [&rng](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  struct Timed {
    Operation op;
    int64_t point;
  };
  std::vector<Timed> timed;
  for (int c = 0; c < clients; ++c) {
    int64_t t = uniform(0, 5);
    for (int j = 0; j < ops_per_client; ++j) {
      Timed x;
      x.op.client = c;
      x.op.invoke_ns = t;
      x.point = t + uniform(0, 20);
      x.op.return_ns = x.point + uniform(0, 20);
      t = x.op.return_ns + uniform(1, 10);
      timed.push_back(std::move(x));
    }
  }
  std::stable_sort(timed.begin(), timed.end(), [](const Timed& a, const Timed& b) { return a.point < b.point; });
  // With `counter`, key 0 is a counter (increments, reads, numeric writes);
  // the rest are plain registers with unique values.
  std::map<std::string, std::optional<std::string>> state;
  int next_value = 0;
  Generated g;
  for (Timed& x : timed) {
    Operation& op = x.op;
    const int k = uniform(0, keys - 1);
    op.key = "k" + std::to_string(k);
    const bool is_counter = counter && k == 0;
    const int roll = uniform(0, 99);
    std::optional<std::string>& value = state[op.key];
    if (roll < 45) {
      op.kind = OpKind::kRead;
      op.output = value;
    } else {
      const bool increment = is_counter && roll >= 75;
      op.kind = increment ? OpKind::kIncrement : OpKind::kWrite;
      op.input = increment ? std::to_string(uniform(1, 3))
                           : (is_counter ? std::to_string(1000 + next_value++) : "v" + std::to_string(next_value++));
      const int fault = faults ? uniform(0, 99) : 100;
      bool applies = true;
      if (fault < 5) {
        op.status = OpStatus::kFail;
        applies = false;
      } else if (fault < 10) {
        op.status = OpStatus::kUnknown;
        op.return_ns = Operation::kNever;
        applies = uniform(0, 1) == 1;
      }
      if (applies) {
        if (increment) {
          value = std::to_string((value ? std::stoll(*value) : 0) + std::stoll(*op.input));
          if (op.status == OpStatus::kOk) op.output = value;
        } else {
          value = op.input;
        }
      }
    }
    g.ops.push_back(std::move(op));
  }
  // The checker must not depend on the order the history is listed in.
  std::shuffle(g.ops.begin(), g.ops.end(), rng);
  return g;
}

TEST(LinearizabilityTest, RandomSequentialExecutionsAreAcceptedAndOneAlteredReadIsRejected) {
  int rejected = 0;
  for (uint32_t seed = 1; seed <= 300; ++seed) {
    Generated g = Generate(seed, 1 + seed % 5, 6 + seed % 10, 1 + seed % 3, /*faults=*/seed % 2 == 0);
    const CheckResult r = CheckLinearizable(g.ops);
    ASSERT_EQ(r.outcome, CheckOutcome::kLinearizable) << "seed " << seed << ": " << r.explanation;

    std::vector<size_t> reads;
    for (size_t i = 0; i < g.ops.size(); ++i) {
      if (g.ops[i].kind == OpKind::kRead && g.ops[i].status == OpStatus::kOk) reads.push_back(i);
    }
    if (reads.empty()) continue;
    const size_t altered = reads[seed % reads.size()];
    g.ops[altered].output = "never-written";
    const CheckResult bad = CheckLinearizable(g.ops);
    ASSERT_EQ(bad.outcome, CheckOutcome::kNotLinearizable) << "seed " << seed;
    EXPECT_EQ(bad.key, g.ops[altered].key);
    ++rejected;
  }
  EXPECT_GT(rejected, 250);  // almost every history has a read to alter
}

// Checks a 1,000-op history within `accept_bound` steps and, with one read
// altered (every fortieth read in turn), its rejection within `reject_bound`
// (rejecting means trying every order up to the bad read).
void CheckThousandOps(const Generated& g, uint64_t accept_bound, uint64_t reject_bound) {
  ASSERT_EQ(g.ops.size(), 1000u);
  const CheckResult r = CheckLinearizable(g.ops);
  ASSERT_EQ(r.outcome, CheckOutcome::kLinearizable) << r.explanation;
  EXPECT_LE(r.steps, accept_bound);
  EXPECT_GE(r.steps, 900u);  // nearly every operation placed at least once
  std::vector<size_t> reads;
  for (size_t i = 0; i < g.ops.size(); ++i) {
    if (g.ops[i].kind == OpKind::kRead && g.ops[i].status == OpStatus::kOk) reads.push_back(i);
  }
  ASSERT_GT(reads.size(), 300u);
  uint64_t most = 0;
  for (size_t n = 0; n < reads.size(); n += 40) {
    std::vector<Operation> altered = g.ops;
    altered[reads[n]].output = "never-written";
    const CheckResult bad = CheckLinearizable(altered);
    ASSERT_EQ(bad.outcome, CheckOutcome::kNotLinearizable) << "read " << reads[n];
    EXPECT_NE(bad.explanation.find("cannot place #" + std::to_string(reads[n]) + " "), std::string::npos)
        << bad.explanation;
    most = std::max(most, bad.steps);
  }
  EXPECT_LE(most, reject_bound);
  std::printf("1000 ops, 8 clients, one key: %llu steps; altered: at most %llu\n",
              static_cast<unsigned long long>(r.steps), static_cast<unsigned long long>(most));
}

TEST(LinearizabilityTest, AThousandOpsFromEightClientsOnOneRegisterCheckWithinABound) {
  // With failed and unknown writes.
  CheckThousandOps(Generate(42, 8, 125, 1, /*faults=*/true, /*counter=*/false), 100'000, 1'000'000);
}

TEST(LinearizabilityTest, AThousandOpsFromEightClientsOnOneCounterCheckWithinABound) {
  CheckThousandOps(Generate(43, 8, 125, 1, /*faults=*/false, /*counter=*/true), 100'000, 1'000'000);
}

TEST(LinearizabilityTest, AHistoryBeyondTheBudgetIsTooLargeNotAHang) {
  const Generated g = Generate(7, 8, 125, 1, /*faults=*/false);
  CheckOptions options;
  options.max_steps = 200;
  const CheckResult r = CheckLinearizable(g.ops, options);
  EXPECT_EQ(r.outcome, CheckOutcome::kTooLarge);
  EXPECT_EQ(r.steps, 200u);
  EXPECT_EQ(r.key, "k0");
  EXPECT_NE(r.explanation.find("gave up after 200 steps"), std::string::npos) << r.explanation;
}

// Threads drive a real register (a map under a mutex) and record through one
// HistoryRecorder: the history is linearizable; with one read's output
// altered it is not.
TEST(HistoryRecorderTest, RecordsALinearizableHistoryFromManyThreads) {
  HistoryRecorder recorder;
  std::mutex mu;
  std::map<std::string, std::string> store;
  constexpr int kThreads = 6, kOps = 150;
  std::vector<std::thread> threads;
  for (int c = 0; c < kThreads; ++c) {
    threads.emplace_back([&, c] {
      std::mt19937 rng(c);
      for (int i = 0; i < kOps; ++i) {
        const std::string key = "k" + std::to_string(rng() % 3);
        if (rng() % 2 == 0) {
          const std::string value = std::to_string(c) + "-" + std::to_string(i);
          const size_t op = recorder.Invoke(c, key, OpKind::kWrite, value);
          {
            std::lock_guard<std::mutex> lock(mu);
            store[key] = value;
          }
          recorder.Complete(op, OpStatus::kOk);
        } else {
          const size_t op = recorder.Invoke(c, key, OpKind::kRead);
          std::optional<std::string> value;
          {
            std::lock_guard<std::mutex> lock(mu);
            const auto it = store.find(key);
            if (it != store.end()) value = it->second;
          }
          recorder.Complete(op, OpStatus::kOk, value);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::vector<Operation> history = recorder.History();
  ASSERT_EQ(history.size(), size_t{kThreads * kOps});
  ASSERT_EQ(recorder.size(), history.size());
  for (const Operation& op : history) {
    ASSERT_EQ(op.status, OpStatus::kOk);
    ASSERT_LE(op.invoke_ns, op.return_ns);
  }
  const CheckResult r = CheckLinearizable(history);
  ASSERT_EQ(r.outcome, CheckOutcome::kLinearizable) << r.explanation;
  for (Operation& op : history) {
    if (op.kind == OpKind::kRead && op.output) {
      op.output = "never-written";
      break;
    }
  }
  EXPECT_EQ(CheckLinearizable(history).outcome, CheckOutcome::kNotLinearizable);
}

TEST(HistoryRecorderTest, UncompletedAndUnknownOperationsNeverReturn) {
  HistoryRecorder recorder;
  const size_t a = recorder.Invoke(0, "k", OpKind::kWrite, "1");
  const size_t b = recorder.Invoke(1, "k", OpKind::kWrite, "2");
  const size_t c = recorder.Invoke(2, "k", OpKind::kWrite, "3");
  recorder.Complete(a, OpStatus::kUnknown);
  recorder.Complete(c, OpStatus::kFail);
  const std::vector<Operation> history = recorder.History();
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(b, 1u);
  EXPECT_EQ(history[0].status, OpStatus::kUnknown);
  EXPECT_EQ(history[0].return_ns, Operation::kNever);
  EXPECT_EQ(history[1].status, OpStatus::kUnknown);
  EXPECT_EQ(history[1].return_ns, Operation::kNever);
  EXPECT_EQ(history[2].status, OpStatus::kFail);
  EXPECT_LE(history[2].invoke_ns, history[2].return_ns);
  EXPECT_EQ(*history[1].input, "2");
  EXPECT_LE(history[0].invoke_ns, history[1].invoke_ns);
}

}  // namespace
}  // namespace cachet::testing
