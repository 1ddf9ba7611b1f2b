// RocksDbStore: the Store interface on RocksDB, with ONE storage thread doing
// group commit.
//
// The loop's write calls append an operation to a mutex-protected pending list
// and return; commit() also wakes the storage thread. The thread takes
// everything pending up to the last commit, applies it to one
// rocksdb::WriteBatch (so the writes between two commits land atomically,
// unless a purge or more than max_batch_bytes splits them), writes it with a
// synced WAL (one fsync for all of it), then posts the completions of the
// commits it covered through the PostFn (one post per batch). Writes ending
// with a commit_later() (nobody waits on them) are held up to
// write_behind_ms first, so that a message removed meanwhile is never
// written (see storage_thread_main in rocksdb_commit.cpp). A failed write
// (disk full) completes those commits with the error; the thread calls
// DB::Resume() before its next write, and the broker carries on.
//
// The storage thread owns the message reference counts (which entries refer to
// a message): only counts >= 2 are kept in memory, rebuilt at open from the
// entries; a message with no count has exactly one entry. Purge iterates the
// queue's entries on the storage thread, so the loop never waits for it.
//
// Reads run on the caller's thread (RocksDB reads are thread-safe). Column
// families and key layout: see keys.hpp.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "broker/store/store.hpp"

namespace mb::store {

// Defaults, each chosen for the 256 MiB RSS target with a 1 GiB backlog.
inline constexpr std::size_t kDefaultBlockCacheBytes = 32u << 20;      // shared by all CFs
inline constexpr std::size_t kDefaultMessagesWriteBuffer = 32u << 20;  // memtable, messages CF
inline constexpr std::size_t kDefaultEntriesWriteBuffer = 16u << 20;   // memtable, entries CF
inline constexpr std::size_t kDefaultMaxWalBytes = 128u << 20;         // bounds WAL replay at restart
// The storage thread starts a round without waiting for commit() once this
// much is pending, and splits a round's WriteBatch at about this size.
inline constexpr std::size_t kDefaultMaxBatchBytes = 32u << 20;
// Write-behind: writes before a commit_later() (no confirm, no transaction
// waits on them) are held this long at most before they are written and
// synced, so that a message acked meanwhile (a task a worker ran at once) is
// never written, as RabbitMQ's message store cancels such writes. A commit()
// writes everything held at once. Bounded by time and by bytes held.
inline constexpr std::uint32_t kDefaultWriteBehindMs = 200;
inline constexpr std::size_t kDefaultWriteBehindBytes = 8u << 20;

struct RocksDbStoreOptions {
  std::string dir;            // created if missing
  bool sync = true;           // false only for benchmarks of the non-durable path
  std::size_t block_cache_bytes = kDefaultBlockCacheBytes;
  std::size_t messages_write_buffer_bytes = kDefaultMessagesWriteBuffer;
  std::size_t entries_write_buffer_bytes = kDefaultEntriesWriteBuffer;
  std::size_t max_wal_bytes = kDefaultMaxWalBytes;
  std::size_t max_batch_bytes = kDefaultMaxBatchBytes;
  std::uint32_t write_behind_ms = kDefaultWriteBehindMs;  // 0: commit_later() is commit()
  std::size_t write_behind_bytes = kDefaultWriteBehindBytes;
};

class RocksDbStore final : public Store {
 public:
  // Opens (creating if needed) options.dir. Fails with Status::in_use when
  // another process holds the directory, with a clear io_error/corruption
  // otherwise. `post` runs completions on the loop (null: run them on the
  // storage thread, for tools and tests that have no loop).
  static Status open(const RocksDbStoreOptions& options, PostFn post, std::unique_ptr<RocksDbStore>& out);

  ~RocksDbStore() override;  // close()
  RocksDbStore(const RocksDbStore&) = delete;
  RocksDbStore& operator=(const RocksDbStore&) = delete;

  void put_meta(MetaKind kind, std::string_view key, std::string_view value) override;
  void delete_meta(MetaKind kind, std::string_view key) override;
  void enqueue(QueueId queue, Seq seq, MessageId message,
               std::optional<std::string_view> blob_if_new) override;
  void remove_entry(QueueId queue, Seq seq, MessageId message) override;
  void update_delivery_count(QueueId queue, Seq seq, MessageId message,
                             std::uint32_t delivery_count) override;
  void purge_queue(QueueId queue, std::vector<Seq> keep) override;
  void remove_entries_from(QueueId queue, Seq first_seq) override;
  void delete_queue(QueueId queue) override;
  void put_delayed(std::uint64_t due_ms, DelayedId id, std::string_view blob) override;
  void remove_delayed(std::uint64_t due_ms, DelayedId id) override;
  void commit(DoneFn done) override;
  void commit_later(DoneFn done) override;

  Status load_entries(QueueId queue, Seq first_seq, std::size_t max_count,
                      std::vector<QueueEntry>& out) override;
  Status load_message(MessageId message, std::string& blob) override;
  Status load_messages(const std::vector<MessageId>& ids,
                       std::vector<std::optional<std::string>>& blobs) override;
  Status load_due_delayed(std::uint64_t up_to_ms, std::size_t max_count,
                          std::vector<DelayedRecord>& out) override;
  Status next_delayed_due(std::optional<std::uint64_t>& due_ms) override;
  Status list_meta(MetaKind kind, std::vector<MetaRecord>& out) override;

  const RecoveryInfo& recovery_info() const override { return recovery_; }
  StoreCounters counters() const override;
  std::uint64_t pending_bytes() const override { return pending_bytes_.load(std::memory_order_relaxed); }
  Status close() override;

  // Test hook: while set, every write fails with this status instead of
  // reaching RocksDB (as a full disk would), so the failure path is exercised.
  void inject_write_failure_for_testing(std::optional<Status> failure);

  // Compacts the entries and messages CFs now (drops tombstones); for tools.
  Status compact_for_testing();

  struct Impl;  // RocksDB handles and the storage thread's state (rocksdb_store.cpp)
  struct Op;    // one submitted write (rocksdb_store.cpp)

 private:
  RocksDbStore();
  void submit(Op&& op, bool is_commit);
  void storage_thread_main();

  std::unique_ptr<Impl> impl_;
  PostFn post_;
  RecoveryInfo recovery_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Op> pending_;  // guarded by mutex_
  bool has_commit_ = false;  // guarded: a commit() or commit_later() is pending
  bool urgent_commit_ = false;  // guarded: a commit() is pending
  std::size_t last_commit_ = 0;  // guarded: its index in pending_
  std::int64_t first_commit_at_ns_ = 0;  // guarded: when the oldest pending one was submitted
  // guarded: pending_ stores a message (an enqueue with its blob). Holding
  // turns pays only if a message stored in them may be removed before it is
  // written; turns of acks alone (a backlog drained) are written at once.
  bool pending_stores_ = false;
  bool stopping_ = false;    // guarded
  bool closed_ = false;      // guarded
  std::atomic<std::uint64_t> pending_bytes_{0};
  std::thread thread_;
};

}  // namespace mb::store
