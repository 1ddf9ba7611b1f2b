// Store: what the broker keeps on disk, in broker terms. It knows nothing of
// AMQP or sockets: metadata values and message bodies are opaque blobs the
// broker encodes. Two implementations pass one test suite
// (tests/unit/store_test.cpp): MemoryStore and RocksDbStore.
//
// Model
//   - metadata: (kind, key) -> blob, for exchanges, queues, bindings, vhosts...
//   - messages: message id -> blob, stored ONCE however many queues hold it;
//     the broker assigns ids, increasing.
//   - entries:  (queue id, seq) -> (message id, delivery count). A message
//     record lives while at least one entry refers to it: removing (or purging)
//     its last entry deletes it in the same batch.
//   - delayed:  (due time ms, id) -> blob, for x-delayed-message.
//
// Threading (the contract the broker relies on)
//   - Write calls (put_meta ... remove_delayed, commit) come from the broker's
//     event loop. They never block on I/O: they append to a pending batch and
//     return. They take effect in call order.
//   - commit(done) marks a point: done(status) runs once every write submitted
//     before it is durable (status ok) or has failed (status not ok: nack).
//   - commit_later(done) marks the same point when nothing waits on it (acks,
//     publishes without confirms): the store may hold those writes for a
//     bounded time (RocksDbStore: write_behind_ms, write_behind_bytes), and
//     a message whose every entry is removed within that time is never
//     written. A later commit() writes everything before it at once.
//     `done` is always invoked through the PostFn given at construction (the
//     broker binds it to asio::post on its io_context), so it runs on the loop,
//     never inside commit() itself. Callbacks run in commit order. After a
//     failure, the first commit that covers the lost writes reports it.
//   - Crash atomicity (RocksDbStore): the writes between two commits reach the
//     disk together or not at all (one WriteBatch), except across a purge or
//     beyond kDefaultMaxBatchBytes. So a publish routed to three queues, or a
//     transaction, followed by commit() is all-or-nothing after a crash.
//   - Reads (load_*, list_meta) are synchronous and safe to call from the loop;
//     they are short point/range reads. A read sees at least every write whose
//     commit callback has run; writes still pending may or may not be visible.
//   - RocksDbStore's write calls are also thread-safe (mutex-protected append);
//     MemoryStore is for one thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/store/status.hpp"

namespace mb::store {

using QueueId = std::uint64_t;
using Seq = std::uint64_t;
using MessageId = std::uint64_t;
using DelayedId = std::uint64_t;

// Runs a callback on the broker's loop (asio::post(io_context, fn)).
using PostFn = std::function<void(std::function<void()>)>;
// A commit's completion.
using DoneFn = std::function<void(Status)>;

// Kinds of metadata record; each kind has its own key space.
enum class MetaKind : std::uint8_t {
  kVhost = 1,
  kUser = 2,
  kExchange = 3,
  kQueue = 4,
  kBinding = 5,
  kGeneric = 6,  // anything else the broker wants kept (policies, ...)
  kPermission = 7,  // a user's configure/write/read patterns in one vhost
};

struct MetaRecord {
  MetaKind kind;
  std::string key;
  std::string value;
};

// One element of a queue as stored.
struct QueueEntry {
  Seq seq = 0;
  MessageId message_id = 0;
  std::uint32_t delivery_count = 0;  // > 0 means "redelivered" after restart
};

struct DelayedRecord {
  std::uint64_t due_ms = 0;
  DelayedId id = 0;
  std::string blob;
};

// What a queue held when the store was opened.
struct QueueSummary {
  std::uint64_t entries = 0;
  Seq first_seq = 0;
  Seq last_seq = 0;
};

// Computed once at open: what the broker needs to resume numbering and to
// rebuild its queues (then it pages entries in with load_entries).
struct RecoveryInfo {
  MessageId max_message_id = 0;  // highest message id ever written (0: none)
  DelayedId max_delayed_id = 0;  // highest delayed id ever written (0: none)
  std::map<QueueId, QueueSummary> queues;  // queues that have entries
};

// For measurement ("messages per fsync"); monotonically increasing.
struct StoreCounters {
  std::uint64_t fsyncs = 0;            // durable batches (synced WAL writes)
  std::uint64_t write_batches = 0;     // WriteBatches written (synced or not)
  std::uint64_t operations = 0;        // write operations applied
  std::uint64_t messages_written = 0;  // message blobs stored
  std::uint64_t entries_written = 0;   // queue entries stored
  std::uint64_t commits = 0;           // commit() points completed
  std::uint64_t failed_batches = 0;    // writes that returned an error
  std::uint64_t transient_messages = 0;  // stored and removed in one round: never written
};

class Store {
 public:
  virtual ~Store() = default;

  // ---- writes: from the loop, non-blocking, applied in call order ----------

  virtual void put_meta(MetaKind kind, std::string_view key, std::string_view value) = 0;
  virtual void delete_meta(MetaKind kind, std::string_view key) = 0;

  // Adds entry (queue, seq) -> message. With a blob, the message is new and is
  // stored; without, the message must already have a live entry (fan-out to
  // several queues: pass the blob with the first enqueue only).
  virtual void enqueue(QueueId queue, Seq seq, MessageId message,
                       std::optional<std::string_view> blob_if_new) = 0;
  // Ack/reject/expiry: removes the entry; the message goes with its last entry.
  virtual void remove_entry(QueueId queue, Seq seq, MessageId message) = 0;
  // Writes the entry's delivery count through (x-delivery-count, redelivered).
  // The entry must exist (not removed before this call).
  virtual void update_delivery_count(QueueId queue, Seq seq, MessageId message,
                                     std::uint32_t delivery_count) = 0;
  // Removes every entry of the queue except those whose seq is in `keep` (the
  // delivered-but-unacked ones, which queue.purge leaves), as range deletes,
  // and the messages no other entry refers to.
  virtual void purge_queue(QueueId queue, std::vector<Seq> keep) = 0;
  // Removes every entry of the queue with seq >= first_seq, as one range
  // delete, and the messages no other entry refers to: the purge of a queue's
  // paged-out tail (the broker holds none of those entries in memory).
  virtual void remove_entries_from(QueueId queue, Seq first_seq) = 0;
  // Removes every entry of the queue; the broker deletes the queue's metadata
  // record separately (delete_meta), in the same commit.
  virtual void delete_queue(QueueId queue) = 0;

  virtual void put_delayed(std::uint64_t due_ms, DelayedId id, std::string_view blob) = 0;
  virtual void remove_delayed(std::uint64_t due_ms, DelayedId id) = 0;

  // Completion point; see the threading notes above.
  virtual void commit(DoneFn done) = 0;
  // A completion point nobody waits on; see the threading notes above.
  virtual void commit_later(DoneFn done) { commit(std::move(done)); }

  // ---- reads: synchronous ---------------------------------------------------

  // Up to max_count entries of the queue with seq >= first_seq, in seq order,
  // appended to out. Page a long queue in with first_seq = last loaded + 1.
  virtual Status load_entries(QueueId queue, Seq first_seq, std::size_t max_count,
                              std::vector<QueueEntry>& out) = 0;
  // not_found if the message is not stored.
  virtual Status load_message(MessageId message, std::string& blob) = 0;
  // Several bodies at once (RocksDB: one MultiGet, much faster than a
  // load_message per id when paging in a queue's head). blobs is resized to
  // ids.size(); blobs[i] is nullopt when ids[i] is not stored.
  virtual Status load_messages(const std::vector<MessageId>& ids,
                               std::vector<std::optional<std::string>>& blobs) = 0;
  // Up to max_count delayed records with due_ms <= up_to_ms, in (due, id)
  // order, appended to out.
  virtual Status load_due_delayed(std::uint64_t up_to_ms, std::size_t max_count,
                                  std::vector<DelayedRecord>& out) = 0;
  // Earliest due time, or nullopt when nothing is delayed.
  virtual Status next_delayed_due(std::optional<std::uint64_t>& due_ms) = 0;
  // Every record of one kind, in key order, appended to out.
  virtual Status list_meta(MetaKind kind, std::vector<MetaRecord>& out) = 0;

  virtual const RecoveryInfo& recovery_info() const = 0;
  virtual StoreCounters counters() const = 0;
  // Bytes submitted but not yet written: the broker blocks publishers
  // (connection.blocked) when this grows past its limit.
  virtual std::uint64_t pending_bytes() const = 0;

  // Writes everything pending, runs the remaining completions (posted), and
  // releases the data directory. Later calls fail with Status::closed().
  virtual Status close() = 0;
};

}  // namespace mb::store
