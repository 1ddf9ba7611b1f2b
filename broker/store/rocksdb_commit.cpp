// RocksDbStore's storage thread: group commit. It takes the operations the
// loop submitted up to the last commit(), applies them to one WriteBatch,
// writes it with a synced WAL, and posts the commits' completions back;
// turns that end with a commit_later() are held first (write-behind).
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <unordered_map>

#include "broker/store/keys.hpp"
#include "broker/store/rocksdb_internal.hpp"

namespace mb::store {

using namespace detail;

// ---- storage thread -----------------------------------------------------------

namespace {

// One round of group commit: applies the first `cut` ops of `held` to
// WriteBatches, writes the last one synced, and returns the commits'
// completions with their statuses. The ops after `cut` (held back, younger)
// are only read, to find the messages removed before they were written.
class Round {
 public:
  Round(RocksDbStore::Impl& impl) : impl_(impl) {}

  void run(std::deque<RocksDbStore::Op>& held, std::size_t cut);
  std::vector<std::pair<DoneFn, Status>>& done() { return done_; }

 private:
  using Op = RocksDbStore::Op;
  // Messages first stored by an op this round writes and fully removed again
  // by the time the storage thread took the ops (every entry acked, in this
  // round or in the ops held back): none of their operations is written,
  // now or in a later round (Op::cancelled). RabbitMQ's message store
  // cancels such writes too; a confirm still waits for a round that writes
  // everything before it, so it never comes before the message is durable
  // or consumed.
  void find_transient(std::deque<Op>& held, std::size_t cut);
  Status apply(Op& op);
  Status purge(QueueId queue, Seq first, const std::vector<Seq>& keep);
  Status write(bool sync);

  RocksDbStore::Impl& impl_;
  void flush_removed_run();

  rocksdb::WriteBatch batch_;
  // Acks in seq order (a queue drained from its head) become one range
  // delete per run instead of a point tombstone each: see flush_removed_run.
  struct RemovedRun {
    QueueId queue = 0;
    Seq first = 0;
    Seq end = 0;  // exclusive; first == end: no run
  } run_;
  std::uint64_t batch_ops_ = 0, batch_messages_ = 0, batch_entries_ = 0;
  bool wrote_unsynced_ = false;
  std::vector<std::pair<DoneFn, Status>> done_;
  // find_transient: live entries of each message first stored in this round.
  std::unordered_map<MessageId, std::uint32_t> born_;
};

// The steady-clock time of the oldest commit point in `held` (which ends with one).
std::int64_t oldest_commit_ns(const std::deque<RocksDbStore::Op>& held) {
  for (const auto& op : held) {
    if (op.kind == RocksDbStore::Op::Kind::kCommit) return op.at_ns;
  }
  return 0;
}

// How many ops of `held` a round writes: every whole turn (up to a commit
// point) submitted at or before `up_to_ns`.
std::size_t cut_at(const std::deque<RocksDbStore::Op>& held, std::int64_t up_to_ns) {
  std::size_t cut = 0;
  for (std::size_t i = 0; i < held.size(); ++i) {
    if (held[i].kind != RocksDbStore::Op::Kind::kCommit) continue;
    if (held[i].at_ns > up_to_ns) break;
    cut = i + 1;
  }
  return cut;
}

}  // namespace

// Write-behind: a round starts when a commit() is pending (a confirm, a
// transaction, a paging queue or the shutdown waits on it: everything held is
// written at once, as it always was), when the oldest commit_later() has been
// held write_behind_ms, or when more than write_behind_bytes are pending. A
// round on time writes the turns older than three quarters of the hold, so
// that rounds come about every quarter of it, and keeps the younger ones.
void RocksDbStore::storage_thread_main() {
  std::deque<Op> held;  // whole turns taken from pending_, not yet written; storage thread only
  bool held_stores = false;  // held has an enqueue with its blob
  const std::int64_t hold_ns = std::int64_t{impl_->options.write_behind_ms} * 1'000'000;
  const std::uint64_t hold_bytes = std::min(impl_->options.write_behind_bytes, impl_->options.max_batch_bytes);
  for (;;) {
    bool write_all = false;
    {
      std::unique_lock lock(mutex_);
      for (;;) {
        const std::uint64_t bytes = pending_bytes_.load(std::memory_order_relaxed);
        if (stopping_ || urgent_commit_ || bytes >= impl_->options.max_batch_bytes) {
          write_all = true;
          break;
        }
        if (held.empty() && !has_commit_) {
          wake_.wait(lock);
          continue;
        }
        // Past the byte bound, or nothing held or pending that a hold could
        // cancel (no message stored): write now.
        if (bytes >= hold_bytes || (!held_stores && !pending_stores_)) {
          write_all = true;
          break;
        }
        const std::int64_t due = (held.empty() ? first_commit_at_ns_ : oldest_commit_ns(held)) + hold_ns;
        if (steady_now_ns() >= due) break;
        wake_.wait_until(lock, std::chrono::steady_clock::time_point(std::chrono::nanoseconds(due)));
      }
      if (pending_.empty() && held.empty()) {
        if (stopping_) return;
        has_commit_ = urgent_commit_ = false;
        continue;
      }
      // Take whole turns: everything up to the last commit; the ops after it
      // (the loop is mid-way through its next turn) wait for their own
      // commit, so that what lies between two commits lands in one
      // WriteBatch: atomically. A wake on size alone (no commit pending), or
      // the shutdown, takes everything.
      if (has_commit_ && last_commit_ + 1 < pending_.size()) {
        const auto end = pending_.begin() + static_cast<std::ptrdiff_t>(last_commit_ + 1);
        held.insert(held.end(), std::make_move_iterator(pending_.begin()), std::make_move_iterator(end));
        pending_.erase(pending_.begin(), end);
        held_stores = held_stores || pending_stores_;  // pending_stores_ stays: it may be the rest's
      } else if (has_commit_ || stopping_ ||
                 pending_bytes_.load(std::memory_order_relaxed) >= impl_->options.max_batch_bytes) {
        held.insert(held.end(), std::make_move_iterator(pending_.begin()), std::make_move_iterator(pending_.end()));
        pending_.clear();
        held_stores = held_stores || pending_stores_;
        pending_stores_ = false;
      }
      has_commit_ = false;
      urgent_commit_ = false;
    }
    const std::size_t cut = write_all ? held.size() : cut_at(held, steady_now_ns() - hold_ns + hold_ns / 4);
    if (cut == 0) continue;
    std::size_t bytes = 0;
    for (std::size_t i = 0; i < cut; ++i) bytes += held[i].bytes();
    Round round(*impl_);
    round.run(held, cut);
    held.erase(held.begin(), held.begin() + static_cast<std::ptrdiff_t>(cut));
    held_stores = std::any_of(held.begin(), held.end(), [](const Op& op) { return op.kind == Op::Kind::kEnqueue && op.has_blob; });
    pending_bytes_.fetch_sub(bytes, std::memory_order_relaxed);
    auto& done = round.done();
    if (done.empty()) continue;
    impl_->commits.fetch_add(done.size(), std::memory_order_relaxed);
    auto run_all = [done = std::move(done)]() mutable {
      for (auto& [fn, status] : done) fn(status);
    };
    if (post_) {
      post_(std::move(run_all));
    } else {
      run_all();
    }
  }
}

namespace {

void Round::find_transient(std::deque<Op>& held, std::size_t cut) {
  for (std::size_t i = 0; i < held.size(); ++i) {
    const Op& op = held[i];
    if (op.kind == Op::Kind::kPurgeQueue) {
      born_.clear();  // a purge reads what is written: keep this round literal
      return;
    }
    if (op.cancelled) continue;
    if (op.kind == Op::Kind::kEnqueue) {
      if (op.has_blob) {
        if (i < cut) born_[op.c] = 1;
      } else if (auto it = born_.find(op.c); it != born_.end()) {
        ++it->second;
      }
    } else if (op.kind == Op::Kind::kRemoveEntry) {
      if (auto it = born_.find(op.c); it != born_.end()) --it->second;
    }
  }
  std::erase_if(born_, [](const auto& kv) { return kv.second != 0; });
  if (born_.empty()) return;
  impl_.transient_messages.fetch_add(born_.size(), std::memory_order_relaxed);
  for (Op& op : held) {
    if ((op.kind == Op::Kind::kEnqueue || op.kind == Op::Kind::kRemoveEntry || op.kind == Op::Kind::kUpdateCount) &&
        born_.contains(op.c))
      op.cancelled = true;
  }
}

void Round::run(std::deque<Op>& held, std::size_t cut) {
  find_transient(held, cut);
  Status status;
  bool trailing_ops = false;  // ops after the last commit of the round
  for (std::size_t i = 0; i < cut; ++i) {
    Op& op = held[i];
    if (op.kind == Op::Kind::kCommit) {
      done_.emplace_back(std::move(op.done), Status());
      trailing_ops = false;
      continue;
    }
    trailing_ops = true;
    if (!status.ok()) continue;  // the round failed: drop the rest
    if (op.cancelled) continue;
    status = apply(op);
    if (status.ok() && batch_.GetDataSize() >= impl_.options.max_batch_bytes) status = write(false);
  }
  if (status.ok()) {
    flush_removed_run();
    if (batch_.Count() > 0) {
      status = write(impl_.options.sync);
    } else if (wrote_unsynced_ && impl_.options.sync) {
      rocksdb::Status s = impl_.db->SyncWAL();
      if (s.ok()) {
        impl_.fsyncs.fetch_add(1, std::memory_order_relaxed);
      } else {
        impl_.needs_resume = true;
        status = from_rocks(s, "cannot sync the write-ahead log");
      }
    }
  }
  impl_.delta.clear();  // merged on success, discarded on failure
  // The first commit after lost ops reports their failure.
  std::optional<Status> earlier = std::move(impl_.sticky_failure);
  impl_.sticky_failure.reset();
  for (auto& [fn, s] : done_) {
    s = status;
    if (s.ok() && earlier) s = *earlier;
    earlier.reset();
  }
  if (!status.ok() && trailing_ops) {
    impl_.sticky_failure = status;
  } else if (earlier) {
    impl_.sticky_failure = earlier;  // no commit in this round took it
  }
}

Status Round::apply(Op& op) {
  ++batch_ops_;
  if (op.kind == Op::Kind::kRemoveEntry && run_.first != run_.end && op.a == run_.queue && op.b == run_.end &&
      op.b != ~Seq{0}) {
    run_.end = op.b + 1;  // extends the run; its message is handled below
  } else {
    flush_removed_run();  // keeps every other write in call order
    if (op.kind == Op::Kind::kRemoveEntry && op.b != ~Seq{0}) run_ = {op.a, op.b, op.b + 1};
  }
  switch (op.kind) {
    case Op::Kind::kPutMeta:
      batch_.Put(impl_.meta, keys::meta_key(op.meta_kind, op.key), op.blob);
      break;
    case Op::Kind::kDeleteMeta:
      batch_.Delete(impl_.meta, keys::meta_key(op.meta_kind, op.key));
      break;
    case Op::Kind::kEnqueue:
      if (op.has_blob) {
        batch_.Put(impl_.messages, keys::u64_key(op.c), op.blob);
        impl_.set_refs(op.c, 1);
        ++batch_messages_;
        if (op.c > impl_.hw_message) {
          impl_.hw_message = op.c;
          impl_.hw_dirty = true;
        }
      } else {
        impl_.set_refs(op.c, impl_.refs(op.c) + 1);
      }
      batch_.Put(impl_.entries, keys::pair_key(op.a, op.b), keys::entry_value(op.c, 0));
      ++batch_entries_;
      break;
    case Op::Kind::kRemoveEntry: {
      if (op.b == ~Seq{0}) batch_.Delete(impl_.entries, keys::pair_key(op.a, op.b));  // else in run_
      const std::uint32_t refs = impl_.refs(op.c);
      if (refs <= 1) {
        batch_.Delete(impl_.messages, keys::u64_key(op.c));
        impl_.set_refs(op.c, 0);
      } else {
        impl_.set_refs(op.c, refs - 1);
      }
      break;
    }
    case Op::Kind::kUpdateCount:
      batch_.Put(impl_.entries, keys::pair_key(op.a, op.b), keys::entry_value(op.c, op.count));
      break;
    case Op::Kind::kPurgeQueue:
      return purge(op.a, op.b, op.keep);  // op.b: first seq (0: whole queue)
    case Op::Kind::kPutDelayed:
      batch_.Put(impl_.delayed, keys::pair_key(op.a, op.b), op.blob);
      if (op.b > impl_.hw_delayed) {
        impl_.hw_delayed = op.b;
        impl_.hw_dirty = true;
      }
      break;
    case Op::Kind::kRemoveDelayed:
      batch_.Delete(impl_.delayed, keys::pair_key(op.a, op.b));
      break;
    case Op::Kind::kCommit:
      break;
  }
  return Status();
}

// Reads the queue's entries as written so far (so it first writes the batch
// built up to here, unsynced: the round's final synced write makes it
// durable), drops their references, and deletes the entries as ranges
// between the kept ones.
// Entry keys are fixed-size, so the keys of seqs [first, end) of one queue are
// exactly the range [key(first), key(end)): a run of consecutive acks is
// deleted with one range tombstone, which iterators and compaction skip in
// one step, where a million point tombstones would each be visited. Short
// runs stay point deletes (a range tombstone costs more to keep than a few).
void Round::flush_removed_run() {
  if (run_.first == run_.end) return;
  if (run_.end - run_.first >= kMinRangeDeleteRun) {
    batch_.DeleteRange(impl_.entries, keys::pair_key(run_.queue, run_.first), keys::pair_key(run_.queue, run_.end));
  } else {
    for (Seq seq = run_.first; seq != run_.end; ++seq) batch_.Delete(impl_.entries, keys::pair_key(run_.queue, seq));
  }
  run_ = {};
}

Status Round::purge(QueueId queue, Seq first, const std::vector<Seq>& keep) {
  if (batch_.Count() > 0) {
    Status s = write(false);
    if (!s.ok()) return s;
  }
  const std::string lower = keys::pair_key(queue, first);
  const std::string upper = keys::pair_end_key(queue);
  rocksdb::Slice lower_slice(lower), upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_lower_bound = &lower_slice;
  ro.iterate_upper_bound = &upper_slice;
  ro.fill_cache = false;
  ro.readahead_size = kScanReadahead;
  std::unique_ptr<rocksdb::Iterator> it(impl_.db->NewIterator(ro, impl_.entries));
  for (it->Seek(lower_slice); it->Valid(); it->Next()) {
    if (it->key().size() != keys::kPairKeySize || it->value().size() != keys::kEntryValueSize) continue;
    const Seq seq = keys::read_u64({it->key().data(), it->key().size()}, 8);
    if (std::binary_search(keep.begin(), keep.end(), seq)) continue;
    const MessageId m = keys::read_u64({it->value().data(), it->value().size()}, 0);
    const std::uint32_t refs = impl_.refs(m);
    if (refs <= 1) {
      batch_.Delete(impl_.messages, keys::u64_key(m));
      impl_.set_refs(m, 0);
    } else {
      impl_.set_refs(m, refs - 1);
    }
  }
  if (!it->status().ok()) return from_rocks(it->status(), "cannot read queue entries");
  it.reset();
  Seq from = first;
  for (Seq k : keep) {
    if (k > from) batch_.DeleteRange(impl_.entries, keys::pair_key(queue, from), keys::pair_key(queue, k));
    if (k == ~Seq{0}) return Status();
    from = k + 1;
  }
  batch_.DeleteRange(impl_.entries, keys::pair_key(queue, from), upper);
  return Status();
}

Status Round::write(bool sync) {
  flush_removed_run();
  if (impl_.hw_dirty) {
    std::string hw;
    keys::append_u64(hw, impl_.hw_message);
    keys::append_u64(hw, impl_.hw_delayed);
    batch_.Put(impl_.meta, keys::meta_key(kInternalMetaKind, kHighWaterKey), hw);
    impl_.hw_dirty = false;
  }
  Status status;
  {
    std::lock_guard lock(impl_.inject_mutex);
    if (impl_.injected) status = *impl_.injected;
  }
  if (status.ok() && impl_.needs_resume) {
    rocksdb::Status s = impl_.db->Resume();
    if (s.ok()) {
      impl_.needs_resume = false;
    } else {
      status = from_rocks(s, "storage is still failing");
    }
  }
  if (status.ok()) {
    rocksdb::WriteOptions wo;
    wo.sync = sync;
    rocksdb::Status s = impl_.db->Write(wo, &batch_);
    if (!s.ok()) {
      impl_.needs_resume = true;
      status = from_rocks(s, "write failed");
    }
  }
  if (status.ok()) {
    impl_.merge_delta();
    impl_.write_batches.fetch_add(1, std::memory_order_relaxed);
    if (sync) impl_.fsyncs.fetch_add(1, std::memory_order_relaxed);
    if (!sync) wrote_unsynced_ = true;
    impl_.operations.fetch_add(batch_ops_, std::memory_order_relaxed);
    impl_.messages_written.fetch_add(batch_messages_, std::memory_order_relaxed);
    impl_.entries_written.fetch_add(batch_entries_, std::memory_order_relaxed);
  } else {
    impl_.failed_batches.fetch_add(1, std::memory_order_relaxed);
    impl_.delta.clear();
    impl_.hw_dirty = true;  // rewrite the marks with the next batch
  }
  batch_.Clear();
  batch_ops_ = batch_messages_ = batch_entries_ = 0;
  return status;
}

}  // namespace

}  // namespace mb::store
