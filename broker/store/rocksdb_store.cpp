// RocksDbStore: see rocksdb_store.hpp. This file holds the RocksDB options,
// open and recovery, submission from the loop, and the reads; the storage
// thread's group commit is in rocksdb_commit.cpp.
#include "broker/store/rocksdb_store.hpp"

#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/table_properties_collectors.h>

#include <algorithm>
#include <filesystem>
#include <unordered_map>

#include "broker/store/keys.hpp"
#include "broker/store/rocksdb_internal.hpp"

namespace mb::store {

using namespace detail;

// ---- open -------------------------------------------------------------------

namespace {

rocksdb::ColumnFamilyOptions cf_options(const std::shared_ptr<rocksdb::Cache>& cache, std::size_t write_buffer,
                                        bool bloom) {
  rocksdb::ColumnFamilyOptions cf;
  cf.write_buffer_size = write_buffer;
  cf.max_write_buffer_number = 2;
  cf.level_compaction_dynamic_level_bytes = true;
  cf.table_properties_collector_factories.push_back(
      rocksdb::NewCompactOnDeletionCollectorFactory(kDeletionWindow, kDeletionTrigger, kDeletionRatio));
  const auto supported = rocksdb::GetSupportedCompressions();
  if (std::find(supported.begin(), supported.end(), rocksdb::kLZ4Compression) != supported.end()) {
    cf.compression = rocksdb::kLZ4Compression;
  }
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache;
  table.cache_index_and_filter_blocks = true;  // index memory counts against the cache
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  if (bloom) {
    // Message bodies are read in id order (a queue's head): bigger blocks
    // mean fewer block reads and a smaller index.
    table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
    table.block_size = kMessagesBlockSize;
  }
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return cf;
}

// Opens the database with all of `cfs` (the default family first). A fresh
// directory gets its families in one CreateColumnFamilies call: RocksDB then
// writes its OPTIONS file once, where create_missing_column_families writes
// and fsyncs it once per family.
rocksdb::Status open_db(const rocksdb::DBOptions& db_options, const std::string& dir,
                        const std::vector<rocksdb::ColumnFamilyDescriptor>& cfs,
                        std::vector<rocksdb::ColumnFamilyHandle*>& handles, rocksdb::DB*& db) {
  std::vector<std::string> existing;
  if (rocksdb::DB::ListColumnFamilies(db_options, dir, &existing).ok()) {
    rocksdb::DBOptions reopen = db_options;
    reopen.create_missing_column_families = true;  // a directory written by an older layout
    return rocksdb::DB::Open(reopen, dir, cfs, &handles, &db);
  }
  rocksdb::Status s = rocksdb::DB::Open(db_options, dir, {cfs.front()}, &handles, &db);
  if (!s.ok()) return s;
  std::vector<rocksdb::ColumnFamilyHandle*> created;
  s = db->CreateColumnFamilies({cfs.begin() + 1, cfs.end()}, &created);
  handles.insert(handles.end(), created.begin(), created.end());
  if (!s.ok()) {
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
    handles.clear();
    delete db;
    db = nullptr;
  }
  return s;
}

}  // namespace

RocksDbStore::RocksDbStore() : impl_(std::make_unique<Impl>()) {}

Status RocksDbStore::open(const RocksDbStoreOptions& options, PostFn post, std::unique_ptr<RocksDbStore>& out) {
  const std::string& dir = options.dir;
  if (dir.empty()) return Status::invalid_argument("no data directory given");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec && !std::filesystem::is_directory(dir)) {
    return Status::io_error("cannot create data directory " + dir + ": " + ec.message());
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    return Status::io_error("data directory " + dir + " is not a directory");
  }

  std::unique_ptr<RocksDbStore> store(new RocksDbStore());
  Impl& impl = *store->impl_;
  impl.options = options;
  store->post_ = std::move(post);

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.max_background_jobs = 2;
  db_options.max_total_wal_size = options.max_wal_bytes;
  db_options.db_write_buffer_size = kDbWriteBufferBytes;
  db_options.bytes_per_sync = 1u << 20;
  db_options.keep_log_file_num = 4;
  db_options.max_log_file_size = 8u << 20;

  auto cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {rocksdb::kDefaultColumnFamilyName, cf_options(cache, 4u << 20, false)},
      {kMetaCf, cf_options(cache, 4u << 20, false)},
      {kMessagesCf, cf_options(cache, options.messages_write_buffer_bytes, true)},
      {kEntriesCf, cf_options(cache, options.entries_write_buffer_bytes, false)},
      {kDelayedCf, cf_options(cache, 8u << 20, false)},
  };
  rocksdb::Status s = open_db(db_options, dir, cfs, impl.handles, impl.db);
  if (!s.ok()) {
    impl.db = nullptr;
    if (s.IsIOError() && s.ToString().find("LOCK") != std::string::npos) {
      return Status::in_use("data directory " + dir + " is in use by another minibroker");
    }
    return from_rocks(s, "cannot open data directory " + dir);
  }
  impl.meta = impl.handles[1];
  impl.messages = impl.handles[2];
  impl.entries = impl.handles[3];
  impl.delayed = impl.handles[4];

  // ---- recovery: high-water marks, queue summaries, reference counts ----
  RecoveryInfo& info = store->recovery_;
  std::string hw;
  s = impl.db->Get(rocksdb::ReadOptions(), impl.meta, keys::meta_key(kInternalMetaKind, kHighWaterKey), &hw);
  if (s.ok() && hw.size() == 16) {
    impl.hw_message = keys::read_u64(hw, 0);
    impl.hw_delayed = keys::read_u64(hw, 8);
  } else if (!s.ok() && !s.IsNotFound()) {
    return from_rocks(s, "cannot read data directory " + dir);
  }
  rocksdb::ReadOptions scan;
  scan.fill_cache = false;
  scan.readahead_size = kScanReadahead;
  {
    std::unique_ptr<rocksdb::Iterator> it(impl.db->NewIterator(scan, impl.messages));
    it->SeekToLast();
    if (it->Valid() && it->key().size() == 8) {
      impl.hw_message = std::max(impl.hw_message, keys::read_u64({it->key().data(), 8}));
    }
    if (!it->status().ok()) return from_rocks(it->status(), "cannot read data directory " + dir);
  }
  std::vector<MessageId> ids;
  {
    std::unique_ptr<rocksdb::Iterator> it(impl.db->NewIterator(scan, impl.entries));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const std::string_view k{it->key().data(), it->key().size()};
      const std::string_view v{it->value().data(), it->value().size()};
      if (k.size() != keys::kPairKeySize || v.size() != keys::kEntryValueSize) {
        return Status::corruption("data directory " + dir + ": malformed queue entry");
      }
      const QueueId q = keys::read_u64(k, 0);
      const Seq seq = keys::read_u64(k, 8);
      auto [qs, fresh] = info.queues.try_emplace(q);
      if (fresh) qs->second.first_seq = seq;
      qs->second.last_seq = seq;
      ++qs->second.entries;
      ids.push_back(keys::read_u64(v, 0));
    }
    if (!it->status().ok()) return from_rocks(it->status(), "cannot read data directory " + dir);
  }
  std::sort(ids.begin(), ids.end());
  for (std::size_t i = 0; i < ids.size();) {
    std::size_t j = i + 1;
    while (j < ids.size() && ids[j] == ids[i]) ++j;
    if (j - i >= 2) impl.multi_refs[ids[i]] = static_cast<std::uint32_t>(j - i);
    impl.hw_message = std::max(impl.hw_message, ids[i]);
    i = j;
  }
  info.max_message_id = impl.hw_message;
  info.max_delayed_id = impl.hw_delayed;

  store->thread_ = std::thread([raw = store.get()] { raw->storage_thread_main(); });
  out = std::move(store);
  return Status::success();
}

RocksDbStore::~RocksDbStore() { close(); }

Status RocksDbStore::close() {
  {
    std::lock_guard lock(mutex_);
    if (closed_) return Status::success();
    closed_ = true;
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
  impl_->close_db();
  return Status::success();
}

// ---- submission (loop thread) ---------------------------------------------

void RocksDbStore::submit(Op&& op, bool is_commit) {
  const std::size_t bytes = op.bytes();
  bool closed = false, wake = false;
  {
    std::lock_guard lock(mutex_);
    if (closed_) {
      closed = true;
    } else {
      if (is_commit) {
        // A commit() wakes the storage thread; of the commit_later()s only
        // the first since it last took work, so it knows when to come back.
        wake = op.urgent || !has_commit_ || impl_->options.write_behind_ms == 0;
        if (!has_commit_) first_commit_at_ns_ = op.at_ns;
        has_commit_ = true;
        urgent_commit_ = urgent_commit_ || op.urgent;
      }
      if (op.kind == Op::Kind::kEnqueue && op.has_blob) pending_stores_ = true;
      pending_.push_back(std::move(op));
      if (is_commit) last_commit_ = pending_.size() - 1;
      const std::uint64_t total = pending_bytes_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
      const std::uint64_t limit = std::min(impl_->options.max_batch_bytes, impl_->options.write_behind_bytes);
      wake = wake || (total >= limit && total - bytes < limit) || total >= impl_->options.max_batch_bytes;
    }
  }
  if (closed) {
    if (op.done) {
      auto done = std::move(op.done);
      if (post_) {
        post_([done = std::move(done)] { done(Status::closed()); });
      } else {
        done(Status::closed());
      }
    }
    return;
  }
  if (wake) wake_.notify_one();
}

void RocksDbStore::put_meta(MetaKind kind, std::string_view key, std::string_view value) {
  Op op;
  op.kind = Op::Kind::kPutMeta;
  op.meta_kind = static_cast<std::uint8_t>(kind);
  op.key.assign(key);
  op.blob.assign(value);
  submit(std::move(op), false);
}

void RocksDbStore::delete_meta(MetaKind kind, std::string_view key) {
  Op op;
  op.kind = Op::Kind::kDeleteMeta;
  op.meta_kind = static_cast<std::uint8_t>(kind);
  op.key.assign(key);
  submit(std::move(op), false);
}

void RocksDbStore::enqueue(QueueId queue, Seq seq, MessageId message, std::optional<std::string_view> blob_if_new) {
  Op op;
  op.kind = Op::Kind::kEnqueue;
  op.a = queue;
  op.b = seq;
  op.c = message;
  if (blob_if_new) {
    op.has_blob = true;
    op.blob.assign(*blob_if_new);
  }
  submit(std::move(op), false);
}

void RocksDbStore::remove_entry(QueueId queue, Seq seq, MessageId message) {
  Op op;
  op.kind = Op::Kind::kRemoveEntry;
  op.a = queue;
  op.b = seq;
  op.c = message;
  submit(std::move(op), false);
}

void RocksDbStore::update_delivery_count(QueueId queue, Seq seq, MessageId message, std::uint32_t delivery_count) {
  Op op;
  op.kind = Op::Kind::kUpdateCount;
  op.a = queue;
  op.b = seq;
  op.c = message;
  op.count = delivery_count;
  submit(std::move(op), false);
}

void RocksDbStore::purge_queue(QueueId queue, std::vector<Seq> keep) {
  Op op;
  op.kind = Op::Kind::kPurgeQueue;
  op.a = queue;
  std::sort(keep.begin(), keep.end());
  op.keep = std::move(keep);
  submit(std::move(op), false);
}

void RocksDbStore::remove_entries_from(QueueId queue, Seq first_seq) {
  Op op;
  op.kind = Op::Kind::kPurgeQueue;
  op.a = queue;
  op.b = first_seq;
  submit(std::move(op), false);
}

void RocksDbStore::delete_queue(QueueId queue) { purge_queue(queue, {}); }

void RocksDbStore::put_delayed(std::uint64_t due_ms, DelayedId id, std::string_view blob) {
  Op op;
  op.kind = Op::Kind::kPutDelayed;
  op.a = due_ms;
  op.b = id;
  op.blob.assign(blob);
  submit(std::move(op), false);
}

void RocksDbStore::remove_delayed(std::uint64_t due_ms, DelayedId id) {
  Op op;
  op.kind = Op::Kind::kRemoveDelayed;
  op.a = due_ms;
  op.b = id;
  submit(std::move(op), false);
}

void RocksDbStore::commit(DoneFn done) {
  Op op;
  op.kind = Op::Kind::kCommit;
  op.urgent = true;
  op.at_ns = steady_now_ns();
  op.done = std::move(done);
  submit(std::move(op), true);
}

void RocksDbStore::commit_later(DoneFn done) {
  Op op;
  op.kind = Op::Kind::kCommit;
  op.at_ns = steady_now_ns();
  op.done = std::move(done);
  submit(std::move(op), true);
}

void RocksDbStore::inject_write_failure_for_testing(std::optional<Status> failure) {
  std::lock_guard lock(impl_->inject_mutex);
  impl_->injected = std::move(failure);
}


// ---- reads (any thread) ---------------------------------------------------------

StoreCounters RocksDbStore::counters() const {
  StoreCounters c;
  c.fsyncs = impl_->fsyncs.load();
  c.write_batches = impl_->write_batches.load();
  c.operations = impl_->operations.load();
  c.messages_written = impl_->messages_written.load();
  c.entries_written = impl_->entries_written.load();
  c.transient_messages = impl_->transient_messages.load();
  c.commits = impl_->commits.load();
  c.failed_batches = impl_->failed_batches.load();
  return c;
}

Status RocksDbStore::load_entries(QueueId queue, Seq first_seq, std::size_t max_count, std::vector<QueueEntry>& out) {
  if (impl_->db == nullptr) return Status::closed();
  // Bounds keep the iterator inside the queue and start it at first_seq, so
  // tombstones of acked entries before first_seq are never visited.
  const std::string lower = keys::pair_key(queue, first_seq);
  const std::string upper = keys::pair_end_key(queue);
  rocksdb::Slice lower_slice(lower), upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_lower_bound = &lower_slice;
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->entries));
  for (it->Seek(lower_slice); it->Valid() && max_count > 0; it->Next(), --max_count) {
    const std::string_view k{it->key().data(), it->key().size()};
    const std::string_view v{it->value().data(), it->value().size()};
    if (k.size() != keys::kPairKeySize || v.size() != keys::kEntryValueSize) {
      return Status::corruption("malformed queue entry");
    }
    out.push_back(QueueEntry{keys::read_u64(k, 8), keys::read_u64(v, 0), keys::read_u32(v, 8)});
  }
  return from_rocks(it->status(), "cannot read queue entries");
}

Status RocksDbStore::load_message(MessageId message, std::string& blob) {
  if (impl_->db == nullptr) return Status::closed();
  rocksdb::Status s = impl_->db->Get(rocksdb::ReadOptions(), impl_->messages, keys::u64_key(message), &blob);
  return from_rocks(s, "message " + std::to_string(message));
}

Status RocksDbStore::load_messages(const std::vector<MessageId>& ids,
                                   std::vector<std::optional<std::string>>& blobs) {
  if (impl_->db == nullptr) return Status::closed();
  blobs.assign(ids.size(), std::nullopt);
  if (ids.empty()) return Status::success();
  // A queue's head usually holds consecutive ids: one bounded iterator pass
  // is cheaper than a point lookup per id. Sparse ids take MultiGet.
  const auto [lo, hi] = std::minmax_element(ids.begin(), ids.end());
  if (*hi - *lo < 2 * ids.size() && *hi != ~MessageId{0}) {
    std::unordered_map<MessageId, std::size_t> wanted;
    wanted.reserve(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) wanted.emplace(ids[i], i);
    const std::string lower = keys::u64_key(*lo);
    const std::string upper = keys::u64_key(*hi + 1);
    rocksdb::Slice lower_slice(lower), upper_slice(upper);
    rocksdb::ReadOptions ro;
    ro.iterate_lower_bound = &lower_slice;
    ro.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->messages));
    for (it->Seek(lower_slice); it->Valid(); it->Next()) {
      if (it->key().size() != 8) continue;
      const MessageId id = keys::read_u64({it->key().data(), 8});
      if (auto w = wanted.find(id); w != wanted.end()) {
        blobs[w->second].emplace(it->value().data(), it->value().size());
      }
    }
    if (!it->status().ok()) return from_rocks(it->status(), "cannot read messages");
    for (std::size_t i = 0; i < ids.size(); ++i) {  // duplicate ids in the request
      if (!blobs[i] && wanted[ids[i]] != i && blobs[wanted[ids[i]]]) blobs[i] = blobs[wanted[ids[i]]];
    }
    return Status::success();
  }
  std::vector<std::string> key_bytes;
  key_bytes.reserve(ids.size());
  for (MessageId id : ids) key_bytes.push_back(keys::u64_key(id));
  std::vector<rocksdb::Slice> key_slices(key_bytes.begin(), key_bytes.end());
  std::vector<rocksdb::PinnableSlice> values(ids.size());
  std::vector<rocksdb::Status> statuses(ids.size());
  impl_->db->MultiGet(rocksdb::ReadOptions(), impl_->messages, ids.size(), key_slices.data(), values.data(),
                      statuses.data());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (statuses[i].ok()) {
      blobs[i].emplace(values[i].data(), values[i].size());
    } else if (!statuses[i].IsNotFound()) {
      return from_rocks(statuses[i], "message " + std::to_string(ids[i]));
    }
  }
  return Status::success();
}

Status RocksDbStore::load_due_delayed(std::uint64_t up_to_ms, std::size_t max_count, std::vector<DelayedRecord>& out) {
  if (impl_->db == nullptr) return Status::closed();
  const std::string upper = keys::pair_end_key(up_to_ms);  // after every (up_to_ms, id)
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->delayed));
  for (it->SeekToFirst(); it->Valid() && max_count > 0; it->Next(), --max_count) {
    const std::string_view k{it->key().data(), it->key().size()};
    if (k.size() != keys::kPairKeySize) return Status::corruption("malformed delayed record");
    out.push_back(DelayedRecord{keys::read_u64(k, 0), keys::read_u64(k, 8), it->value().ToString()});
  }
  return from_rocks(it->status(), "cannot read delayed records");
}

Status RocksDbStore::next_delayed_due(std::optional<std::uint64_t>& due_ms) {
  if (impl_->db == nullptr) return Status::closed();
  due_ms.reset();
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->delayed));
  it->SeekToFirst();
  if (it->Valid() && it->key().size() == keys::kPairKeySize) {
    due_ms = keys::read_u64({it->key().data(), it->key().size()}, 0);
  }
  return from_rocks(it->status(), "cannot read delayed records");
}

Status RocksDbStore::list_meta(MetaKind kind, std::vector<MetaRecord>& out) {
  if (impl_->db == nullptr) return Status::closed();
  const auto k = static_cast<std::uint8_t>(kind);
  const std::string lower(1, static_cast<char>(k));
  const std::string upper(1, static_cast<char>(k + 1));
  rocksdb::Slice lower_slice(lower), upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_lower_bound = &lower_slice;
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->meta));
  for (it->Seek(lower_slice); it->Valid(); it->Next()) {
    out.push_back(MetaRecord{kind, it->key().ToString().substr(1), it->value().ToString()});
  }
  return from_rocks(it->status(), "cannot read metadata");
}

Status RocksDbStore::compact_for_testing() {
  if (impl_->db == nullptr) return Status::closed();
  for (auto* cf : {impl_->entries, impl_->messages}) {
    rocksdb::Status s = impl_->db->CompactRange(rocksdb::CompactRangeOptions(), cf, nullptr, nullptr);
    if (!s.ok()) return from_rocks(s, "compaction failed");
  }
  return Status::success();
}


}  // namespace mb::store
