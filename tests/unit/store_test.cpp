// The Store suite: every TEST_CASE_TEMPLATE runs over MemoryStore and
// RocksDbStore, each in its own temporary directory. RocksDB-only cases cover
// opening (locked, unopenable directories) and a real crash: a child process
// (this binary, --crash-child) writes with commits and is SIGKILLed.
//
// Concerns
//   [x] metadata put / list / delete, per kind, across reopen
//   [x] a message routed to several queues is stored once, lives until its
//       last entry is removed, reference counts rebuilt on reopen
//   [x] entries load in seq order, in bounded pages, never from another queue
//   [x] acks in runs (range deletes) and scattered remove exactly their entries
//   [x] purge keeps listed (unacked) entries and shared messages; delete queue;
//       enqueue after purge in the same commit survives
//   [x] delivery count written through and kept across reopen
//   [x] remove_entries_from: a queue's tail from a seq on, shared messages kept
//   [x] delayed records: put, next due, load due (bounded), remove, reopen
//   [x] reopen: recovery info (max ids, queue summaries) and all data; batched body loads
//   [x] group commit: many commits -> fewer batches, completions in order,
//       never run inside commit()
//   [x] a failed write reaches the commit callbacks; later commits succeed
//   [x] closed store: commits complete with "closed", reads fail
//   [x] RocksDB: second open -> "in use by another minibroker"; a file or a
//       corrupt directory -> clear status
//   [x] RocksDB: SIGKILL at random moments loses no acknowledged commit
//   [ ] real disk-full (ENOSPC) through RocksDB: covered by the injection hook only
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>

#include "broker/store/memory_store.hpp"
#include "broker/store/rocksdb_store.hpp"
#include "support/temp_dir.hpp"

extern char** environ;

namespace {

using namespace mb::store;
namespace fs = std::filesystem;
using mb::test::TempDir;

// Stands in for the broker's io_context: post() from any thread, run here.
class Completions {
 public:
  PostFn poster() {
    return [this](std::function<void()> fn) {
      {
        std::lock_guard lock(mutex_);
        queue_.push_back(std::move(fn));
      }
      cv_.notify_all();
    };
  }
  // Runs posted tasks until pred() holds; false on timeout.
  template <class Pred>
  bool run_until(Pred pred, std::chrono::seconds timeout = std::chrono::seconds(30)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
      std::function<void()> fn;
      {
        std::unique_lock lock(mutex_);
        if (!cv_.wait_until(lock, deadline, [&] { return !queue_.empty(); })) return false;
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
    }
    return true;
  }
  void run_pending() {
    for (;;) {
      std::function<void()> fn;
      {
        std::lock_guard lock(mutex_);
        if (queue_.empty()) return;
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
};

struct MemoryBackend {
  static constexpr bool kDurable = false;  // a reopen keeps data, a failed write too
  std::shared_ptr<MemoryStoreData> data = std::make_shared<MemoryStoreData>();

  std::unique_ptr<Store> open(const std::string&, PostFn post) { return std::make_unique<MemoryStore>(post, data); }
  static void inject_failure(Store& store, std::optional<Status> failure) {
    static_cast<MemoryStore&>(store).inject_write_failure_for_testing(std::move(failure));
  }
};

struct RocksBackend {
  static constexpr bool kDurable = true;
  std::uint32_t write_behind_ms = kDefaultWriteBehindMs;

  std::unique_ptr<Store> open(const std::string& dir, PostFn post) {
    std::unique_ptr<RocksDbStore> store;
    RocksDbStoreOptions options;
    options.dir = dir + "/data";
    options.write_behind_ms = write_behind_ms;
    Status s = RocksDbStore::open(options, std::move(post), store);
    REQUIRE_MESSAGE(s.ok(), s.to_string());
    return store;
  }
  static void inject_failure(Store& store, std::optional<Status> failure) {
    static_cast<RocksDbStore&>(store).inject_write_failure_for_testing(std::move(failure));
  }
};

template <class Backend>
class Fixture {
 public:
  Fixture() { store_ = backend_.open(dir_.path(), completions_.poster()); }
  ~Fixture() {
    if (store_) store_->close();
    completions_.run_pending();
  }

  Store& store() { return *store_; }
  Backend& backend() { return backend_; }
  Completions& completions() { return completions_; }

  // A clean restart: close (pending writes land), then open the same place.
  void reopen() {
    store_->close();
    completions_.run_pending();
    store_.reset();
    store_ = backend_.open(dir_.path(), completions_.poster());
  }

  Status commit() {
    std::optional<Status> result;
    store_->commit([&](Status s) { result = std::move(s); });
    REQUIRE(completions_.run_until([&] { return result.has_value(); }));
    return *result;
  }

  std::vector<QueueEntry> entries(QueueId queue, std::size_t page = 7) {
    std::vector<QueueEntry> all;
    Seq next = 0;
    for (;;) {
      std::vector<QueueEntry> batch;
      Status s = store_->load_entries(queue, next, page, batch);
      REQUIRE_MESSAGE(s.ok(), s.to_string());
      REQUIRE(batch.size() <= page);
      if (batch.empty()) return all;
      for (const auto& e : batch) {
        if (!all.empty()) REQUIRE(e.seq > all.back().seq);
        all.push_back(e);
      }
      if (batch.back().seq == ~Seq{0}) return all;
      next = batch.back().seq + 1;
    }
  }

  std::optional<std::string> message(MessageId id) {
    std::string blob;
    Status s = store_->load_message(id, blob);
    if (s.is_not_found()) return std::nullopt;
    REQUIRE_MESSAGE(s.ok(), s.to_string());
    return blob;
  }

 private:
  TempDir dir_;
  Completions completions_;
  Backend backend_;
  std::unique_ptr<Store> store_;
};

std::string body_of(MessageId id) { return "body-" + std::to_string(id) + std::string(id % 50, 'x'); }

std::vector<Seq> seqs_of(const std::vector<QueueEntry>& entries) {
  std::vector<Seq> out;
  for (const auto& e : entries) out.push_back(e.seq);
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE("metadata: put, list by kind, delete, reopen", B, MemoryBackend, RocksBackend) {
  Fixture<B> f;
  f.store().put_meta(MetaKind::kExchange, "/|ex1", "direct");
  f.store().put_meta(MetaKind::kExchange, "/|ex2", "topic");
  f.store().put_meta(MetaKind::kQueue, "/|q1", std::string("args\0with nul", 13));
  f.store().put_meta(MetaKind::kBinding, "/|ex1|q1|rk", "");
  f.store().put_meta(MetaKind::kExchange, "/|ex1", "fanout");  // overwrite
  REQUIRE(f.commit().ok());

  std::vector<MetaRecord> ex;
  REQUIRE(f.store().list_meta(MetaKind::kExchange, ex).ok());
  REQUIRE(ex.size() == 2);
  CHECK(ex[0].key == "/|ex1");
  CHECK(ex[0].value == "fanout");
  CHECK(ex[1].key == "/|ex2");

  f.store().delete_meta(MetaKind::kExchange, "/|ex2");
  REQUIRE(f.commit().ok());
  f.reopen();

  ex.clear();
  REQUIRE(f.store().list_meta(MetaKind::kExchange, ex).ok());
  REQUIRE(ex.size() == 1);
  CHECK(ex[0].value == "fanout");
  std::vector<MetaRecord> queues, bindings, users;
  REQUIRE(f.store().list_meta(MetaKind::kQueue, queues).ok());
  REQUIRE(f.store().list_meta(MetaKind::kBinding, bindings).ok());
  REQUIRE(f.store().list_meta(MetaKind::kUser, users).ok());
  REQUIRE(queues.size() == 1);
  CHECK(queues[0].value == std::string("args\0with nul", 13));
  REQUIRE(bindings.size() == 1);
  CHECK(bindings[0].value.empty());
  CHECK(users.empty());
}

TEST_CASE_TEMPLATE("a message routed to three queues is stored once and outlives all but its last entry", B,
                   MemoryBackend, RocksBackend) {
  Fixture<B> f;
  const auto before = f.store().counters();
  f.store().enqueue(1, 10, 77, body_of(77));
  f.store().enqueue(2, 20, 77, std::nullopt);
  f.store().enqueue(3, 30, 77, std::nullopt);
  f.store().enqueue(1, 11, 78, body_of(78));  // single-queue neighbour
  REQUIRE(f.commit().ok());
  const auto after = f.store().counters();
  CHECK(after.messages_written - before.messages_written == 2);
  CHECK(after.entries_written - before.entries_written == 4);

  f.store().remove_entry(2, 20, 77);
  REQUIRE(f.commit().ok());
  CHECK(f.message(77) == body_of(77));

  f.reopen();  // reference counts rebuilt from the entries
  CHECK(f.store().recovery_info().max_message_id == 78);
  f.store().remove_entry(1, 10, 77);
  REQUIRE(f.commit().ok());
  CHECK(f.message(77) == body_of(77));
  f.store().remove_entry(3, 30, 77);
  f.store().remove_entry(1, 11, 78);
  REQUIRE(f.commit().ok());
  CHECK_FALSE(f.message(77).has_value());
  CHECK_FALSE(f.message(78).has_value());
  f.reopen();
  CHECK_FALSE(f.message(77).has_value());
  CHECK(f.entries(1).empty());
  CHECK(f.store().recovery_info().queues.empty());
  CHECK(f.store().recovery_info().max_message_id == 78);  // ids never go back
}

TEST_CASE_TEMPLATE("entries load in order, in bounded pages, one queue at a time", B, MemoryBackend, RocksBackend) {
  Fixture<B> f;
  // Three queues interleaved; queue ids and seqs at the edges of the key space.
  const std::vector<QueueId> queues = {0, 5, ~QueueId{0}};
  MessageId id = 1;
  for (Seq seq = 0; seq < 300; ++seq) {
    for (QueueId q : queues) {
      f.store().enqueue(q, seq * 3, id, body_of(id));
      ++id;
    }
  }
  f.store().enqueue(5, ~Seq{0}, id, body_of(id));
  REQUIRE(f.commit().ok());

  for (QueueId q : queues) {
    auto all = f.entries(q, 64);
    REQUIRE(all.size() == (q == 5 ? 301u : 300u));
    for (std::size_t i = 0; i < 300; ++i) CHECK(all[i].seq == i * 3);
    CHECK(all[0].delivery_count == 0);
  }
  // A page starts at first_seq (inclusive), between existing seqs too.
  std::vector<QueueEntry> page;
  REQUIRE(f.store().load_entries(5, 31, 4, page).ok());
  CHECK(seqs_of(page) == std::vector<Seq>{33, 36, 39, 42});
  // Removed entries disappear from pages; the rest keep their order.
  for (Seq seq = 0; seq < 90; seq += 3) {
    f.store().remove_entry(5, seq, (seq / 3) * 3 + 2);
  }
  REQUIRE(f.commit().ok());
  page.clear();
  REQUIRE(f.store().load_entries(5, 0, 2, page).ok());
  CHECK(seqs_of(page) == std::vector<Seq>{90, 93});
  CHECK(page[0].message_id == 30 * 3 + 2);
  f.reopen();
  auto q5 = f.entries(5, 1000);
  REQUIRE(q5.size() == 271);
  CHECK(q5.back().seq == ~Seq{0});
  const auto& summary = f.store().recovery_info().queues.at(5);
  CHECK(summary.entries == 271);
  CHECK(summary.first_seq == 90);
  CHECK(summary.last_seq == ~Seq{0});
}

TEST_CASE_TEMPLATE("acks remove exactly their entries, in runs or scattered", B, MemoryBackend, RocksBackend) {
  Fixture<B> f;
  for (MessageId m = 1; m <= 400; ++m) {
    f.store().enqueue(1, m, m, body_of(m));
    f.store().enqueue(2, m, 1000 + m, body_of(1000 + m));
  }
  REQUIRE(f.commit().ok());
  // One commit: a long run (a range delete in RocksDB), a short run, a
  // scattered ack, another queue in between, then a run again.
  for (Seq seq = 10; seq < 110; ++seq) f.store().remove_entry(1, seq, seq);
  for (Seq seq = 200; seq < 205; ++seq) f.store().remove_entry(1, seq, seq);
  f.store().remove_entry(1, 300, 300);
  f.store().remove_entry(2, 5, 1005);
  f.store().remove_entry(1, 301, 301);
  f.store().update_delivery_count(1, 302, 302, 2);
  for (Seq seq = 303; seq < 340; ++seq) f.store().remove_entry(1, seq, seq);
  f.store().enqueue(1, 401, 401, body_of(401));
  REQUIRE(f.commit().ok());
  f.reopen();
  std::vector<Seq> expected;
  for (Seq seq = 1; seq <= 401; ++seq) {
    const bool acked = (seq >= 10 && seq < 110) || (seq >= 200 && seq < 205) || seq == 300 || seq == 301 ||
                       (seq >= 303 && seq < 340);
    if (!acked) expected.push_back(seq);
  }
  auto q1 = f.entries(1, 50);
  CHECK(seqs_of(q1) == expected);
  for (const auto& e : q1) CHECK(e.delivery_count == (e.seq == 302 ? 2u : 0u));
  CHECK(f.entries(2).size() == 399);
  CHECK_FALSE(f.message(50).has_value());
  CHECK(f.message(110) == body_of(110));
  CHECK(f.message(9) == body_of(9));
  CHECK_FALSE(f.message(1005).has_value());
  CHECK(f.store().recovery_info().queues.at(1).entries == expected.size());
}

TEST_CASE_TEMPLATE("remove_entries_from drops a queue's tail only, shared messages kept", B, MemoryBackend,
                   RocksBackend) {
  Fixture<B> f;
  for (MessageId m = 1; m <= 100; ++m) {
    f.store().enqueue(1, m, m, body_of(m));
    if (m % 10 == 0) f.store().enqueue(2, m, m, std::nullopt);  // shared with queue 2
  }
  REQUIRE(f.commit().ok());
  f.reopen();  // from reference counts rebuilt at open

  f.store().remove_entries_from(1, 61);  // a paged-out tail: seqs 61..100
  f.store().enqueue(1, 101, 101, body_of(101));  // after it, in the same commit: kept
  REQUIRE(f.commit().ok());
  std::vector<Seq> expected;
  for (Seq s = 1; s <= 60; ++s) expected.push_back(s);
  expected.push_back(101);
  CHECK(seqs_of(f.entries(1)) == expected);
  CHECK(f.entries(2).size() == 10);
  CHECK(f.message(60) == body_of(60));
  CHECK(f.message(70) == body_of(70));  // queue 2 holds it
  CHECK_FALSE(f.message(71).has_value());
  CHECK(f.message(101) == body_of(101));
  f.reopen();
  CHECK(seqs_of(f.entries(1)) == expected);
  CHECK_FALSE(f.message(99).has_value());
}

TEST_CASE_TEMPLATE("purge keeps unacked entries and shared messages; delete removes all", B, MemoryBackend,
                   RocksBackend) {
  Fixture<B> f;
  for (MessageId m = 1; m <= 100; ++m) {
    f.store().enqueue(1, m, m, body_of(m));
    if (m % 10 == 0) f.store().enqueue(2, m, m, std::nullopt);  // shared with queue 2
  }
  REQUIRE(f.commit().ok());
  f.reopen();  // purge must also work from reference counts rebuilt at open

  f.store().purge_queue(1, {5, 50, 51});  // 5, 50, 51 are delivered, unacked
  REQUIRE(f.commit().ok());
  CHECK(seqs_of(f.entries(1)) == std::vector<Seq>{5, 50, 51});
  CHECK(f.entries(2).size() == 10);
  CHECK(f.message(5) == body_of(5));
  CHECK(f.message(20) == body_of(20));  // still in queue 2
  CHECK_FALSE(f.message(21).has_value());

  // Acks of the kept entries after the purge.
  f.store().remove_entry(1, 5, 5);
  f.store().remove_entry(1, 50, 50);
  REQUIRE(f.commit().ok());
  CHECK_FALSE(f.message(5).has_value());
  CHECK(f.message(50) == body_of(50));  // queue 2 holds it

  // Enqueue, purge, enqueue again in one commit: only the later ones stay.
  f.store().enqueue(3, 1, 201, body_of(201));
  f.store().enqueue(3, 2, 202, body_of(202));
  f.store().purge_queue(3, {});
  f.store().enqueue(3, 3, 203, body_of(203));
  REQUIRE(f.commit().ok());
  CHECK(seqs_of(f.entries(3)) == std::vector<Seq>{3});
  CHECK_FALSE(f.message(201).has_value());

  f.store().delete_queue(2);
  f.store().delete_queue(1);
  REQUIRE(f.commit().ok());
  f.reopen();
  CHECK(f.entries(1).empty());
  CHECK(f.entries(2).empty());
  CHECK_FALSE(f.message(50).has_value());
  CHECK_FALSE(f.message(20).has_value());
  CHECK(f.message(203) == body_of(203));
  CHECK(f.store().recovery_info().queues.size() == 1);
}

TEST_CASE_TEMPLATE("delivery count is written through and kept", B, MemoryBackend, RocksBackend) {
  Fixture<B> f;
  f.store().enqueue(1, 1, 1, body_of(1));
  f.store().enqueue(1, 2, 2, body_of(2));
  f.store().enqueue(2, 1, 1, std::nullopt);
  REQUIRE(f.commit().ok());
  f.store().update_delivery_count(1, 1, 1, 1);
  f.store().update_delivery_count(1, 1, 1, 3);
  REQUIRE(f.commit().ok());
  f.reopen();
  auto q1 = f.entries(1);
  REQUIRE(q1.size() == 2);
  CHECK(q1[0].delivery_count == 3);
  CHECK(q1[0].message_id == 1);
  CHECK(q1[1].delivery_count == 0);
  CHECK(f.entries(2)[0].delivery_count == 0);  // per entry, not per message
  // The count update did not disturb reference counting.
  f.store().remove_entry(1, 1, 1);
  REQUIRE(f.commit().ok());
  CHECK(f.message(1).has_value());
  f.store().remove_entry(2, 1, 1);
  REQUIRE(f.commit().ok());
  CHECK_FALSE(f.message(1).has_value());
}

TEST_CASE_TEMPLATE("delayed records: put, next due, load due, remove, reopen", B, MemoryBackend, RocksBackend) {
  Fixture<B> f;
  std::optional<std::uint64_t> due;
  REQUIRE(f.store().next_delayed_due(due).ok());
  CHECK_FALSE(due.has_value());

  f.store().put_delayed(5000, 3, "c");
  f.store().put_delayed(1000, 2, "b");
  f.store().put_delayed(1000, 1, "a");
  f.store().put_delayed(~std::uint64_t{0}, 4, "never");
  REQUIRE(f.commit().ok());
  REQUIRE(f.store().next_delayed_due(due).ok());
  CHECK(due == 1000u);

  std::vector<DelayedRecord> out;
  REQUIRE(f.store().load_due_delayed(999, 10, out).ok());
  CHECK(out.empty());
  REQUIRE(f.store().load_due_delayed(1000, 10, out).ok());
  REQUIRE(out.size() == 2);
  CHECK(out[0].id == 1);
  CHECK(out[0].blob == "a");
  CHECK(out[1].id == 2);
  out.clear();
  REQUIRE(f.store().load_due_delayed(10000, 1, out).ok());  // bounded
  CHECK(out.size() == 1);

  f.store().remove_delayed(1000, 1);
  f.store().remove_delayed(1000, 2);
  REQUIRE(f.commit().ok());
  f.reopen();
  CHECK(f.store().recovery_info().max_delayed_id == 4);
  REQUIRE(f.store().next_delayed_due(due).ok());
  CHECK(due == 5000u);
  out.clear();
  REQUIRE(f.store().load_due_delayed(~std::uint64_t{0}, 10, out).ok());
  REQUIRE(out.size() == 2);
  CHECK(out[0].blob == "c");
  CHECK(out[1].blob == "never");
}

TEST_CASE_TEMPLATE("reopen keeps everything committed", B, MemoryBackend, RocksBackend) {
  Fixture<B> f;
  for (MessageId m = 1; m <= 500; ++m) f.store().enqueue(m % 4, m, m, body_of(m));
  f.store().put_meta(MetaKind::kVhost, "/", "default");
  f.store().put_delayed(42, 9, "later");
  REQUIRE(f.commit().ok());
  for (int round = 0; round < 2; ++round) {
    f.reopen();
    const auto& info = f.store().recovery_info();
    CHECK(info.max_message_id == 500);
    CHECK(info.max_delayed_id == 9);
    REQUIRE(info.queues.size() == 4);
    CHECK(info.queues.at(1).entries == 125);
    CHECK(info.queues.at(1).first_seq == 1);
    CHECK(info.queues.at(0).last_seq == 500);
    for (MessageId m = 1; m <= 500; m += 37) CHECK(f.message(m) == body_of(m));
    CHECK(f.entries(2).size() == 125);
    std::vector<std::optional<std::string>> blobs;
    REQUIRE(f.store().load_messages({3, 9999, 1, 500}, blobs).ok());
    REQUIRE(blobs.size() == 4);
    CHECK(blobs[0] == body_of(3));
    CHECK_FALSE(blobs[1].has_value());
    CHECK(blobs[2] == body_of(1));
    CHECK(blobs[3] == body_of(500));
    // Consecutive ids (one iterator pass), with duplicates and missing ones.
    REQUIRE(f.store().load_messages({499, 500, 501, 500, 10, 11}, blobs).ok());
    REQUIRE(blobs.size() == 6);
    CHECK(blobs[0] == body_of(499));
    CHECK(blobs[1] == body_of(500));
    CHECK_FALSE(blobs[2].has_value());
    CHECK(blobs[3] == body_of(500));
    CHECK(blobs[4] == body_of(10));
    CHECK(blobs[5] == body_of(11));
  }
}

TEST_CASE_TEMPLATE("group commit: many commits, fewer batches, every completion in order", B, MemoryBackend,
                   RocksBackend) {
  Fixture<B> f;
  constexpr int kCommits = 2000;
  const auto before = f.store().counters();
  std::vector<int> completed;
  for (int i = 0; i < kCommits; ++i) {
    const auto id = static_cast<MessageId>(i + 1);
    f.store().enqueue(1, id, id, body_of(id));
    f.store().commit([&completed, i](Status s) {
      CHECK(s.ok());
      completed.push_back(i);
    });
  }
  CHECK(completed.empty());  // completions come through post, never inside commit()
  REQUIRE(f.completions().run_until([&] { return completed.size() == kCommits; }));
  for (int i = 0; i < kCommits; ++i) REQUIRE(completed[i] == i);
  const auto after = f.store().counters();
  const auto batches = after.fsyncs - before.fsyncs;
  MESSAGE("2000 commits written in " << batches << " fsyncs");
  CHECK(batches >= 1);
  CHECK(batches < kCommits / 4);
  CHECK(after.messages_written - before.messages_written == kCommits);
  CHECK(after.commits - before.commits == kCommits);
  CHECK(f.store().pending_bytes() == 0);
  CHECK(f.entries(1, 500).size() == kCommits);
}

TEST_CASE("rocksdb: a message consumed within one round is never written; a partly consumed one is") {
  Fixture<RocksBackend> f;
  f.store().enqueue(1, 5, 40, body_of(40));  // written in an earlier round, removed in the next
  REQUIRE(f.commit().ok());
  const auto before = f.store().counters();
  f.store().remove_entry(1, 5, 40);
  f.store().enqueue(1, 6, 41, body_of(41));  // fan-out to two queues, both acked, redelivered once
  f.store().enqueue(2, 1, 41, std::nullopt);
  f.store().update_delivery_count(1, 6, 41, 1);
  f.store().remove_entry(2, 1, 41);
  f.store().remove_entry(1, 6, 41);
  f.store().enqueue(1, 7, 42, body_of(42));  // fan-out, one of two entries acked
  f.store().enqueue(2, 2, 42, std::nullopt);
  f.store().remove_entry(2, 2, 42);
  REQUIRE(f.commit().ok());
  const auto after = f.store().counters();
  CHECK(after.transient_messages - before.transient_messages == 1);
  CHECK(after.messages_written - before.messages_written == 1);  // 42 only
  CHECK(after.entries_written - before.entries_written == 2);    // (1,7) and (2,2)
  CHECK_FALSE(f.message(40).has_value());
  CHECK_FALSE(f.message(41).has_value());
  CHECK(f.message(42) == body_of(42));
  f.reopen();
  CHECK(seqs_of(f.entries(1)) == std::vector<Seq>{7});
  CHECK(f.entries(2).empty());
  CHECK_FALSE(f.message(41).has_value());
  f.store().remove_entry(1, 7, 42);
  REQUIRE(f.commit().ok());
  CHECK_FALSE(f.message(42).has_value());
}

// Write-behind (commit_later): the hold is long here (2 s, rounds write the
// turns older than 1.5 s) so that the timing below holds on a loaded machine.
TEST_CASE("rocksdb: commit_later holds writes; a message removed meanwhile is never written, even a round later") {
  Fixture<RocksBackend> f;
  f.backend().write_behind_ms = 2000;
  f.reopen();
  using Clock = std::chrono::steady_clock;
  const auto before = f.store().counters();
  std::vector<int> done;
  auto later = [&](int n) {
    f.store().commit_later([&done, n](Status s) {
      CHECK(s.ok());
      done.push_back(n);
    });
  };
  const auto t0 = Clock::now();
  f.store().enqueue(1, 1, 60, body_of(60));  // removed in the same hold
  later(1);
  f.store().enqueue(1, 2, 61, body_of(61));  // removed after the round that writes turn 2 took it
  later(2);
  f.store().enqueue(1, 3, 62, body_of(62));  // kept
  f.store().remove_entry(1, 1, 60);
  later(3);
  std::this_thread::sleep_for(std::chrono::milliseconds(1600));
  f.store().update_delivery_count(1, 2, 61, 1);
  f.store().remove_entry(1, 2, 61);  // a younger turn: held back when turns 1-3 are written
  later(4);
  REQUIRE(f.completions().run_until([&] { return done.size() == 3; }));
  const auto first_round = Clock::now() - t0;
  CHECK(first_round >= std::chrono::milliseconds(1900));  // held, not written at once
  CHECK(done == std::vector<int>{1, 2, 3});
  CHECK(f.message(62) == body_of(62));
  CHECK_FALSE(f.message(60).has_value());
  CHECK_FALSE(f.message(61).has_value());
  REQUIRE(f.completions().run_until([&] { return done.size() == 4; }));
  const auto after = f.store().counters();
  CHECK(after.transient_messages - before.transient_messages == 2);
  CHECK(after.messages_written - before.messages_written == 1);  // 62 only
  CHECK(after.entries_written - before.entries_written == 1);
  f.reopen();
  CHECK(seqs_of(f.entries(1)) == std::vector<Seq>{3});
  CHECK_FALSE(f.message(61).has_value());
}

TEST_CASE("rocksdb: a commit() writes everything held before it at once, in order") {
  Fixture<RocksBackend> f;
  f.backend().write_behind_ms = 1000;
  f.reopen();
  std::vector<int> done;
  f.store().enqueue(1, 1, 70, body_of(70));
  f.store().commit_later([&](Status s) {
    CHECK(s.ok());
    done.push_back(1);
  });
  f.store().enqueue(1, 2, 71, body_of(71));
  f.store().commit([&](Status s) {
    CHECK(s.ok());
    done.push_back(2);
  });
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(f.completions().run_until([&] { return done.size() == 2; }));
  MESSAGE("commit() after a held commit_later() took "
          << std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() << " ms");
  CHECK(done == std::vector<int>{1, 2});
  CHECK(f.message(70) == body_of(70));
  CHECK(f.message(71) == body_of(71));
  CHECK(f.store().pending_bytes() == 0);
}

TEST_CASE("rocksdb: close() writes what commit_later() holds") {
  Fixture<RocksBackend> f;
  f.backend().write_behind_ms = 1000;
  f.reopen();
  f.store().enqueue(1, 1, 80, body_of(80));
  f.store().commit_later([](Status) {});
  f.reopen();
  CHECK(f.message(80) == body_of(80));
  CHECK(seqs_of(f.entries(1)) == std::vector<Seq>{1});
}

TEST_CASE("rocksdb: a round with a purge writes every operation as submitted") {
  Fixture<RocksBackend> f;
  f.store().enqueue(1, 1, 50, body_of(50));
  f.store().remove_entry(1, 1, 50);
  f.store().enqueue(1, 2, 51, body_of(51));
  f.store().purge_queue(1, {});
  f.store().enqueue(1, 3, 52, body_of(52));
  REQUIRE(f.commit().ok());
  CHECK(f.store().counters().transient_messages == 0);
  CHECK_FALSE(f.message(50).has_value());
  CHECK_FALSE(f.message(51).has_value());
  CHECK(seqs_of(f.entries(1)) == std::vector<Seq>{3});
}

TEST_CASE_TEMPLATE("a failed write fails its commits, and the store carries on", B, MemoryBackend, RocksBackend) {
  Fixture<B> f;
  f.store().enqueue(1, 1, 1, body_of(1));
  REQUIRE(f.commit().ok());

  B::inject_failure(f.store(), Status::io_error("No space left on device"));
  f.store().enqueue(1, 2, 2, body_of(2));
  f.store().remove_entry(1, 1, 1);
  Status failed = f.commit();
  CHECK(failed.code() == Status::Code::kIoError);
  CHECK(failed.message().find("No space") != std::string::npos);
  CHECK(f.store().counters().failed_batches >= 1);

  B::inject_failure(f.store(), std::nullopt);
  f.store().enqueue(1, 3, 3, body_of(3));
  REQUIRE(f.commit().ok());
  f.reopen();
  CHECK(f.message(3) == body_of(3));
  if constexpr (B::kDurable) {
    // The failed batch never reached the disk: 1 is still there, 2 is not.
    CHECK(seqs_of(f.entries(1)) == std::vector<Seq>{1, 3});
    CHECK(f.message(1) == body_of(1));
    CHECK_FALSE(f.message(2).has_value());
  }
}

TEST_CASE_TEMPLATE("a closed store completes commits with 'closed' and refuses reads", B, MemoryBackend,
                   RocksBackend) {
  Fixture<B> f;
  f.store().enqueue(1, 1, 1, body_of(1));
  std::optional<Status> pending;
  f.store().commit([&](Status s) { pending = s; });
  REQUIRE(f.store().close().ok());
  REQUIRE(f.completions().run_until([&] { return pending.has_value(); }));
  CHECK(pending->ok());  // submitted before close: written by close
  std::optional<Status> late;
  f.store().commit([&](Status s) { late = s; });
  REQUIRE(f.completions().run_until([&] { return late.has_value(); }));
  CHECK(late->code() == Status::Code::kClosed);
  std::string blob;
  CHECK(f.store().load_message(1, blob).code() == Status::Code::kClosed);
  CHECK(f.store().close().ok());  // idempotent
  f.reopen();
  CHECK(f.message(1) == body_of(1));
}

// ---- RocksDB only ------------------------------------------------------------

TEST_CASE("rocksdb: a second open of the same directory fails with a clear message") {
  TempDir dir;
  const std::string data = dir.path() + "/nested/data";  // created, parents too
  std::unique_ptr<RocksDbStore> first, second;
  REQUIRE(RocksDbStore::open({.dir = data}, nullptr, first).ok());
  Status s = RocksDbStore::open({.dir = data}, nullptr, second);
  CHECK(s.code() == Status::Code::kInUse);
  CHECK(s.message() == "data directory " + data + " is in use by another minibroker");
  CHECK(second == nullptr);
  first->close();
  CHECK(RocksDbStore::open({.dir = data}, nullptr, second).ok());
}

TEST_CASE("rocksdb: a directory RocksDB cannot open gives a clear status, not a crash") {
  TempDir dir;
  std::unique_ptr<RocksDbStore> store;
  {
    const std::string file = dir.path() + "/a-file";
    std::ofstream(file) << "not a directory";
    Status s = RocksDbStore::open({.dir = file}, nullptr, store);
    CHECK_FALSE(s.ok());
    CHECK(s.message().find(file) != std::string::npos);
    s = RocksDbStore::open({.dir = file + "/below"}, nullptr, store);
    CHECK_FALSE(s.ok());
    CHECK(s.message().find("cannot create data directory") != std::string::npos);
  }
  {
    const std::string data = dir.path() + "/garbled";
    REQUIRE(RocksDbStore::open({.dir = data}, nullptr, store).ok());
    store->close();
    store.reset();
    std::ofstream(data + "/CURRENT", std::ios::trunc) << "MANIFEST-999999\n";
    Status s = RocksDbStore::open({.dir = data}, nullptr, store);
    CHECK_FALSE(s.ok());
    CHECK(s.message().find("cannot open data directory " + data) != std::string::npos);
    MESSAGE("garbled CURRENT: " << s.to_string());
  }
  CHECK(RocksDbStore::open({.dir = ""}, nullptr, store).code() == Status::Code::kInvalidArgument);
}

namespace {

// Crash child: round r enqueues ids r*10 .. r*10+9 to queue 1 (even ones to
// queue 2 as well), acks round r-5 from queue 1, sets the delivery count of
// round r-3's first entry to r, commits, and prints r once that is durable.
constexpr MessageId kPerRound = 10;
constexpr std::uint64_t kAckLag = 5;
constexpr std::uint64_t kCountLag = 3;

int crash_child(const std::string& dir) {
  std::unique_ptr<RocksDbStore> store;
  Status s = RocksDbStore::open({.dir = dir}, nullptr, store);
  if (!s.ok()) {
    std::fprintf(stderr, "crash child: %s\n", s.to_string().c_str());
    return 1;
  }
  std::atomic<int> inflight{0};
  for (std::uint64_t r = 1; r < 1'000'000; ++r) {
    for (MessageId k = 0; k < kPerRound; ++k) {
      const MessageId id = r * kPerRound + k;
      store->enqueue(1, id, id, body_of(id));
      if (k % 2 == 0) store->enqueue(2, id, id, std::nullopt);
    }
    if (r > kAckLag) {
      for (MessageId k = 0; k < kPerRound; ++k) {
        const MessageId id = (r - kAckLag) * kPerRound + k;
        store->remove_entry(1, id, id);
      }
    }
    if (r > kCountLag) {
      const MessageId id = (r - kCountLag) * kPerRound;
      store->update_delivery_count(1, id, id, static_cast<std::uint32_t>(r));
    }
    ++inflight;
    store->commit([r, &inflight](Status st) {  // runs on the storage thread (no post)
      if (st.ok()) {
        const std::string line = std::to_string(r) + "\n";
        if (::write(1, line.data(), line.size()) < 0) std::_Exit(3);
      }
      --inflight;
    });
    while (inflight.load() >= 4) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return 0;
}

}  // namespace

TEST_CASE("rocksdb: SIGKILL at random moments loses no acknowledged commit") {
  std::mt19937 rng(std::random_device{}());
  for (int attempt = 0; attempt < 4; ++attempt) {
    TempDir dir;
    const std::string data = dir.path() + "/data";
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    std::string self = fs::read_symlink("/proc/self/exe").string();
    std::string flag = "--crash-child";
    char* argv[] = {self.data(), flag.data(), const_cast<char*>(data.c_str()), nullptr};
    pid_t child = 0;
    REQUIRE(posix_spawn(&child, self.c_str(), &actions, nullptr, argv, environ) == 0);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);

    // Read acknowledgements until a random round, then kill at once.
    const std::uint64_t target = 20 + rng() % 300;
    std::uint64_t acked = 0;
    std::string buffer;
    char chunk[4096];
    while (acked < target) {
      const ssize_t n = read(fds[0], chunk, sizeof chunk);
      if (n <= 0) break;
      buffer.append(chunk, static_cast<std::size_t>(n));
      std::size_t nl;
      while ((nl = buffer.find('\n')) != std::string::npos) {
        acked = std::max<std::uint64_t>(acked, std::stoull(buffer.substr(0, nl)));
        buffer.erase(0, nl + 1);
      }
    }
    kill(child, SIGKILL);
    int wstatus = 0;
    waitpid(child, &wstatus, 0);
    close(fds[0]);
    REQUIRE(acked >= target);  // the child ran until killed
    CHECK(WIFSIGNALED(wstatus));

    // Every round up to `acked` is durable; later ones are all there or absent.
    std::unique_ptr<RocksDbStore> store;
    Status s = RocksDbStore::open({.dir = data}, nullptr, store);
    REQUIRE_MESSAGE(s.ok(), s.to_string());
    std::vector<QueueEntry> q1;
    Seq next = 0;
    for (;;) {
      std::vector<QueueEntry> page;
      REQUIRE(store->load_entries(1, next, 64, page).ok());
      if (page.empty()) break;
      q1.insert(q1.end(), page.begin(), page.end());
      next = page.back().seq + 1;
    }
    std::set<Seq> present;
    for (const auto& e : q1) {
      REQUIRE(e.seq == e.message_id);
      present.insert(e.seq);
    }
    std::uint64_t last_round = 0;
    if (!q1.empty()) last_round = q1.back().seq / kPerRound;
    INFO("acked " << acked << ", last round on disk " << last_round);
    CHECK(last_round >= acked);
    CHECK(store->recovery_info().max_message_id >= acked * kPerRound + kPerRound - 1);
    for (std::uint64_t r = 1; r <= last_round; ++r) {
      std::size_t in_q1 = 0;
      for (MessageId k = 0; k < kPerRound; ++k) in_q1 += present.count(r * kPerRound + k);
      // Round r was acked by round r+5: gone if that round is on disk.
      const bool acked_away = r + kAckLag <= last_round;
      CHECK_MESSAGE(in_q1 == (acked_away ? 0 : kPerRound), "round " << r);
      for (MessageId k = 0; k < kPerRound; ++k) {
        const MessageId id = r * kPerRound + k;
        std::string blob;
        Status ls = store->load_message(id, blob);
        if (k % 2 == 0 || !acked_away) {
          REQUIRE_MESSAGE(ls.ok(), "message " << id << ": " << ls.to_string());
          CHECK(blob == body_of(id));
        } else {
          CHECK(ls.is_not_found());
        }
      }
    }
    // Delivery counts: round r's first entry got count r+3 if that round is on disk.
    for (const auto& e : q1) {
      if (e.seq % kPerRound != 0) {
        CHECK(e.delivery_count == 0);
        continue;
      }
      const std::uint64_t r = e.seq / kPerRound;
      CHECK(e.delivery_count == (r + kCountLag <= last_round ? r + kCountLag : 0));
    }
    std::vector<QueueEntry> q2;
    REQUIRE(store->load_entries(2, 0, 1'000'000, q2).ok());
    CHECK(q2.size() == last_round * kPerRound / 2);
  }
}

int main(int argc, char** argv) {
  if (argc >= 3 && std::string(argv[1]) == "--crash-child") return crash_child(argv[2]);
  doctest::Context context;
  context.applyCommandLine(argc, argv);
  return context.run();
}
