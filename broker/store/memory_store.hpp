// MemoryStore: the Store interface over plain maps, for transient use and for
// the shared test suite. Not thread-safe: every call comes from the loop.
//
// Writes apply at once (so reads see them immediately); commit() completions
// are grouped like RocksDbStore's: the first commit after a flush posts one
// task, and that task completes every commit made until it runs (one "batch").
// The data lives in a MemoryStoreData the caller may share: a new MemoryStore
// over the same data is a "reopen" of a process that did not crash.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "broker/store/store.hpp"

namespace mb::store {

struct MemoryStoreData {
  struct Message {
    std::string blob;
    std::uint32_t refs = 0;
  };
  struct Entry {
    MessageId message_id = 0;
    std::uint32_t delivery_count = 0;
  };
  std::map<std::pair<std::uint8_t, std::string>, std::string> meta;
  std::unordered_map<MessageId, Message> messages;
  std::map<std::pair<QueueId, Seq>, Entry> entries;
  std::map<std::pair<std::uint64_t, DelayedId>, std::string> delayed;
  MessageId max_message_id = 0;
  DelayedId max_delayed_id = 0;
};

class MemoryStore final : public Store {
 public:
  // `post` runs completions on the loop; `data` is shared for reopen (null:
  // fresh, empty data).
  explicit MemoryStore(PostFn post, std::shared_ptr<MemoryStoreData> data = nullptr);
  ~MemoryStore() override;

  MemoryStore(const MemoryStore&) = delete;
  MemoryStore& operator=(const MemoryStore&) = delete;

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
  StoreCounters counters() const override { return counters_; }
  std::uint64_t pending_bytes() const override { return 0; }
  Status close() override;

  const std::shared_ptr<MemoryStoreData>& data() const { return data_; }

  // Test hook: while set, commits complete with this error (as a failed disk
  // write would); the data itself stays applied.
  void inject_write_failure_for_testing(std::optional<Status> failure) { injected_ = std::move(failure); }

 private:
  void unref(MessageId message);
  void flush_group();

  PostFn post_;
  std::shared_ptr<MemoryStoreData> data_;
  RecoveryInfo recovery_;
  StoreCounters counters_;
  std::uint64_t ops_since_flush_ = 0;
  std::vector<DoneFn> waiting_;  // commits since the last flush task
  // Shared with posted flush tasks so that a task outliving the store is harmless.
  std::shared_ptr<MemoryStore*> self_;
  std::optional<Status> injected_;
  bool closed_ = false;
};

}  // namespace mb::store
