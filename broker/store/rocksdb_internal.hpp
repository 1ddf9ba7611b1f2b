// Internals of RocksDbStore shared by rocksdb_store.cpp (open, submission,
// reads) and rocksdb_commit.cpp (the storage thread's group commit): the
// tuning constants, the submitted operation, and the RocksDB handles plus the
// state only the storage thread touches. Not for use outside broker/store/.
#pragma once

#include <rocksdb/db.h>
#include <rocksdb/status.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/store/rocksdb_store.hpp"

namespace mb::store::detail {

inline constexpr const char* kMetaCf = "meta";
inline constexpr const char* kMessagesCf = "messages";
inline constexpr const char* kEntriesCf = "entries";
inline constexpr const char* kDelayedCf = "delayed";
// Meta kind 0 is the store's own: high-water marks of the ids.
inline constexpr std::uint8_t kInternalMetaKind = 0;
inline constexpr std::string_view kHighWaterKey = "hw";
// CompactOnDeletionCollector: an SST in which some window of this many
// entries holds at least kDeletionTrigger deletes is compacted soon, so a
// drained queue does not leave tombstones for iterators to skip.
inline constexpr std::size_t kDeletionWindow = 32 * 1024;
inline constexpr std::size_t kDeletionTrigger = 8 * 1024;
inline constexpr double kDeletionRatio = 0.25;
// Total memtable memory across CFs (bounds RSS whatever the backlog).
inline constexpr std::size_t kDbWriteBufferBytes = 96u << 20;
inline constexpr std::size_t kScanReadahead = 2u << 20;
inline constexpr std::size_t kMessagesBlockSize = 16u << 10;
// Consecutive acks of one queue in one batch become a range delete from this
// many on.
inline constexpr Seq kMinRangeDeleteRun = 16;

inline std::int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline Status from_rocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::success();
  if (s.IsNotFound()) return Status::not_found(what);
  if (s.IsCorruption()) return Status::corruption(what + ": " + s.ToString());
  if (s.IsInvalidArgument()) return Status::invalid_argument(what + ": " + s.ToString());
  return Status::io_error(what + ": " + s.ToString());
}

}  // namespace mb::store::detail

namespace mb::store {

struct RocksDbStore::Op {
  enum class Kind : std::uint8_t {
    kPutMeta,
    kDeleteMeta,
    kEnqueue,
    kRemoveEntry,
    kUpdateCount,
    kPurgeQueue,
    kPutDelayed,
    kRemoveDelayed,
    kCommit,
  };
  Kind kind = Kind::kCommit;
  bool has_blob = false;
  // kCommit: commit() (a confirm, a tx, a paging queue waits on it), written
  // at once; false: commit_later(), which may be held (write-behind).
  bool urgent = false;
  // Set by the storage thread: the op's message was stored and fully removed
  // before this op was written, so it is skipped (see Round::find_transient).
  bool cancelled = false;
  std::uint8_t meta_kind = 0;
  std::uint32_t count = 0;
  std::uint64_t a = 0;  // queue id / due ms
  std::uint64_t b = 0;  // seq / delayed id / first seq of a purge (0: whole queue)
  std::uint64_t c = 0;  // message id
  std::string key;      // meta key
  std::string blob;     // meta value / message / delayed blob
  std::vector<Seq> keep;  // purge: entries left in place
  DoneFn done;
  std::int64_t at_ns = 0;  // kCommit: steady-clock time it was submitted

  std::size_t bytes() const { return sizeof(Op) + key.size() + blob.size() + keep.size() * sizeof(Seq); }
};

struct RocksDbStore::Impl {
  RocksDbStoreOptions options;
  rocksdb::DB* db = nullptr;  // owned; deleted in close_db()
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::ColumnFamilyHandle* meta = nullptr;
  rocksdb::ColumnFamilyHandle* messages = nullptr;
  rocksdb::ColumnFamilyHandle* entries = nullptr;
  rocksdb::ColumnFamilyHandle* delayed = nullptr;

  // ---- storage thread only ----
  // Reference counts >= 2 (absent: one entry refers to the message); `delta`
  // holds the current batch's changes, merged only once the batch is written.
  std::unordered_map<MessageId, std::uint32_t> multi_refs;
  std::unordered_map<MessageId, std::uint32_t> delta;
  MessageId hw_message = 0;
  DelayedId hw_delayed = 0;
  bool hw_dirty = false;
  bool needs_resume = false;
  std::optional<Status> sticky_failure;  // lost ops not yet reported to a commit

  std::mutex inject_mutex;
  std::optional<Status> injected;  // guarded by inject_mutex

  std::atomic<std::uint64_t> fsyncs{0}, write_batches{0}, operations{0}, messages_written{0},
      entries_written{0}, commits{0}, failed_batches{0}, transient_messages{0};

  std::uint32_t refs(MessageId m) const {
    if (auto it = delta.find(m); it != delta.end()) return it->second;
    if (auto it = multi_refs.find(m); it != multi_refs.end()) return it->second;
    return 1;
  }
  void set_refs(MessageId m, std::uint32_t n) { delta[m] = n; }
  void merge_delta() {
    for (const auto& [m, n] : delta) {
      if (n >= 2) {
        multi_refs[m] = n;
      } else {
        multi_refs.erase(m);
      }
    }
    delta.clear();
  }

  void close_db() {
    if (db == nullptr) return;
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
    handles.clear();
    db->Close();
    delete db;
    db = nullptr;
  }
};

}  // namespace mb::store
