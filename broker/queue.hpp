// A queue: ready messages in order, its consumers, and what it owes the store.
//
// Knows nothing of sockets, channels or bytes. Deliveries go to a
// ConsumerSink (the channel), dead letters and scheduling requests to
// QueueHooks (the vhost). Ready messages are kept per priority level, each level
// ordered by sequence number, so a requeued message goes back to its original
// place. Expiry follows RabbitMQ: expired messages are dropped when they reach
// the head of the queue.
//
// Paging (durable queues over a store, see enable_paging): the queue keeps at
// most a window of ready messages in memory. Past it, messages routed to the
// queue are written to the store only; the queue keeps their count, bytes and
// the seq where they start (cursor_), and reads them back in batches, in seq
// order, when the head runs below half the window. Every entry at or after
// cursor_ is in that on-disk tail, every other one is in memory or delivered.
// A tail entry whose store write is not yet known durable is also held in
// memory (held_) until its commit completes, because the store's reads see
// only completed writes; memory for those is bounded by the store's pending
// bytes (publishers are blocked above that). Priority queues do not page:
// their levels would each need a tail, and they are meant to be short.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "broker/message.hpp"
#include "common/amqp/field_table.hpp"

namespace mb::broker {

class Queue;
struct Consumer;

struct QueueEntry {
  std::uint64_t seq = 0;  // position in the queue, for requeue in place
  MessagePtr msg;
  std::int64_t expires_at = 0;  // ms since the epoch; 0 = never
  std::uint32_t delivery_count = 0;
  bool redelivered = false;
  bool stored = false;  // this queue's entry is in the store (remove it there when it leaves)
  std::int64_t enqueued_at = 0;  // ms since the epoch; 0 when restored from the store (unknown)
};

// How much of a paging queue's ready messages stays in memory.
struct PagingLimits {
  std::size_t messages = 0;
  std::uint64_t bytes = 0;  // body bytes
};

enum class Overflow { kDropHead, kRejectPublish, kRejectPublishDlx };
enum class DeathReason { kRejected, kExpired, kMaxLen, kDeliveryLimit };
std::string_view death_reason_name(DeathReason r);

// Queue arguments, parsed and validated once at declare time.
struct QueueArgs {
  std::optional<std::int64_t> message_ttl;       // x-message-ttl, ms
  std::optional<std::int64_t> expires;           // x-expires, ms unused before deletion
  std::optional<std::int64_t> max_length;        // x-max-length, messages
  std::optional<std::int64_t> max_length_bytes;  // x-max-length-bytes, body bytes
  Overflow overflow = Overflow::kDropHead;       // x-overflow
  std::optional<std::string> dead_letter_exchange;     // x-dead-letter-exchange
  std::optional<std::string> dead_letter_routing_key;  // x-dead-letter-routing-key
  std::uint8_t max_priority = 0;                 // x-max-priority (0: no priorities)
  bool single_active_consumer = false;           // x-single-active-consumer
  std::optional<std::int64_t> delivery_limit;    // x-delivery-limit

  // Parses and validates; on error returns the reason text (the caller sends 406).
  static std::optional<std::string> parse(const amqp::FieldTable& args, QueueArgs& out);
};

// Receives deliveries for consumers; implemented by the channel.
class ConsumerSink {
 public:
  virtual ~ConsumerSink() = default;
  virtual bool can_deliver(const Consumer& c) const = 0;
  // The entry moves to the sink; with no_ack it is settled at once.
  virtual void deliver(Consumer& c, QueueEntry&& entry) = 0;
  // The queue went away: drop the consumer and tell the client (basic.cancel).
  virtual void cancelled_by_broker(Consumer& c) = 0;
};

struct Consumer : std::enable_shared_from_this<Consumer> {
  std::string tag;
  ConsumerSink* sink = nullptr;  // HELD NOT OWNED: the channel outlives its consumers
  std::shared_ptr<Queue> queue;
  std::uint64_t connection_id = 0;
  bool no_ack = false;
  bool exclusive = false;
  std::int32_t priority = 0;   // x-priority
  std::uint32_t prefetch = 0;  // per-consumer limit (basic.qos global=false); 0 = none
  std::uint32_t unacked = 0;
};

// What a queue needs from its surroundings.
class QueueHooks {
 public:
  virtual ~QueueHooks() = default;
  virtual void dead_letter(Queue& q, const QueueEntry& e, DeathReason reason) = 0;
  virtual void wake(Queue& q) = 0;                         // run dispatch() soon, once per turn
  virtual void removed(Queue& q, const QueueEntry& e) = 0;  // entry left the queue for good
  virtual void enqueued(Queue& q, const QueueEntry& e) = 0;  // entry joined the queue
  virtual void delivered(Queue& q, const QueueEntry& e) = 0;  // delivery count went up

  // Paging (only for queues with enable_paging). Appends up to max entries of
  // the queue's stored tail with seq >= from_seq, in seq order, with their
  // messages; an entry whose message cannot be read has msg null (the store
  // side has logged and removed it). False on a read error.
  virtual bool load_tail(Queue& /*q*/, std::uint64_t /*from_seq*/, std::size_t /*max*/,
                         std::vector<QueueEntry>& /*out*/) {
    return false;
  }
  // Removes every stored entry of the queue with seq >= from_seq (purge).
  virtual void tail_dropped(Queue& /*q*/, std::uint64_t /*from_seq*/) {}
  // Runs done(ok) once every store write issued so far is durable (or failed).
  virtual void when_written(Queue& /*q*/, std::function<void(bool ok)> done) { done(true); }
};

class Queue : public std::enable_shared_from_this<Queue> {
 public:
  enum class EnqueueResult { kAccepted, kRejected };

  Queue(std::string name, bool durable, bool exclusive, bool auto_delete, amqp::FieldTable raw_args,
        QueueArgs args, std::uint64_t owner_connection, QueueHooks* hooks);

  const std::string& name() const { return name_; }
  bool durable() const { return durable_; }
  bool exclusive() const { return exclusive_; }
  bool auto_delete() const { return auto_delete_; }
  std::uint64_t owner() const { return owner_; }
  const amqp::FieldTable& raw_args() const { return raw_args_; }
  const QueueArgs& args() const { return args_; }

  // Adds a message at the tail. May drop or dead-letter the head (drop-head) or
  // refuse the message (reject-publish).
  EnqueueResult enqueue(MessagePtr msg, std::int64_t now_ms);
  // Delivers ready messages to consumers that can take them.
  void dispatch(std::int64_t now_ms);
  // basic.get: the next ready message, if any.
  std::optional<QueueEntry> get(std::int64_t now_ms, bool no_ack);
  // Puts a delivered message back at its original position, redelivered.
  void requeue(QueueEntry&& e);
  // A delivered message was acked (or rejected without requeue: dead_letter first).
  void settle(const QueueEntry& e);
  // A message delivered with no_ack (or basic.get no_ack) left the queue.
  void discard(const QueueEntry& e);
  void reject(QueueEntry&& e, bool requeue);
  std::size_t purge();
  // Drops expired messages at the head of each level. Returns the next expiry (0 = none).
  std::int64_t expire(std::int64_t now_ms);

  void add_consumer(Consumer* c);
  // Returns true when the queue should be auto-deleted now.
  bool remove_consumer(Consumer* c);
  const std::vector<Consumer*>& consumers() const { return consumers_; }
  bool has_exclusive_consumer() const;

  // Ready entries per priority level (index = priority), each in queue order.
  const std::vector<std::deque<QueueEntry>>& ready_levels() const { return levels_; }
  // Removes the ready entry with this sequence number (management API: delete
  // one message). Returns false when no ready entry has it.
  bool remove_ready(std::uint64_t seq);

  std::size_t ready_count() const { return ready_count_; }
  std::uint64_t ready_bytes() const { return ready_bytes_; }
  std::size_t unacked_count() const { return unacked_count_; }
  std::size_t consumer_count() const { return consumers_.size(); }
  bool had_consumer() const { return had_consumer_; }

  // x-expires bookkeeping: time of last use (declare, consume, get).
  void touch(std::int64_t now_ms) { last_used_ms_ = now_ms; }
  std::int64_t last_used() const { return last_used_ms_; }

  bool deleted() const { return deleted_; }
  void mark_deleted() { deleted_ = true; }
  bool wake_pending = false;  // owned by the scheduler (QueueHooks::wake)
  std::uint64_t store_id = 0;  // the durable store's id for this queue (0: not stored)

  // Appends an entry recovered from the store (no hooks, no limits).
  void restore(QueueEntry e);
  // After restore(): the rest of the stored queue, left on disk (paging only):
  // `count` entries with seqs in [from_seq, last_seq], about `bytes` body bytes.
  void restore_tail(std::size_t count, std::uint64_t bytes, std::uint64_t from_seq, std::uint64_t last_seq);

  // Keeps at most `limits` of ready messages in memory; the rest stays in the
  // store (see the file comment). Call before the queue holds messages.
  void enable_paging(PagingLimits limits);
  bool paging() const { return paging_.has_value(); }
  std::size_t paged_out_count() const { return tail_count_; }
  std::size_t in_memory_count() const { return ready_count_ - tail_count_; }

  // Counters for the management API.
  std::uint64_t published = 0, delivered = 0, acked = 0;

 private:
  std::deque<QueueEntry>& level_for(std::uint8_t priority);
  std::deque<QueueEntry>* head_level();
  QueueEntry pop_head(std::deque<QueueEntry>& level);
  Consumer* pick_consumer();
  void enforce_limits(std::int64_t now_ms);
  bool over_limit(std::size_t extra_count, std::uint64_t extra_bytes) const;
  std::int64_t expiry_for(const Message& m, std::int64_t now_ms) const;
  // Paging.
  bool goes_to_tail(std::uint64_t body_size) const;
  void page_in();
  void request_written();
  void written(std::uint64_t up_to_seq, bool ok);

  std::string name_;
  bool durable_;
  bool exclusive_;
  bool auto_delete_;
  amqp::FieldTable raw_args_;
  QueueArgs args_;
  std::uint64_t owner_;
  QueueHooks* hooks_;  // HELD NOT OWNED

  std::vector<std::deque<QueueEntry>> levels_;  // index = priority
  std::size_t ready_count_ = 0;
  std::uint64_t ready_bytes_ = 0;
  std::size_t unacked_count_ = 0;
  std::uint64_t next_seq_ = 1;

  // Paging state; see the file comment.
  std::optional<PagingLimits> paging_;
  std::uint64_t memory_bytes_ = 0;  // body bytes of the ready messages in memory (levels_)
  std::size_t tail_count_ = 0;      // ready messages in the on-disk tail (included in ready_count_)
  std::uint64_t tail_bytes_ = 0;    // their body bytes (estimated after a restart, see restore_tail)
  std::uint64_t cursor_ = 1;        // first seq of the tail
  // Entries at or below this seq come from an earlier run: a transient one
  // read back from the tail is dropped (RabbitMQ loses transient messages on restart).
  std::uint64_t run_start_seq_ = 1;
  std::deque<QueueEntry> held_;     // tail entries whose write is not yet known durable, in seq order
  std::uint64_t failed_up_to_seq_ = 0;  // held_ entries up to here failed to write: kept for good
  bool written_pending_ = false;    // a when_written request is out
  std::vector<QueueEntry> page_scratch_;

  std::vector<Consumer*> consumers_;  // sorted by priority, highest first (registration order within)
  std::size_t rr_ = 0;
  bool had_consumer_ = false;
  bool deleted_ = false;
  std::int64_t last_used_ms_ = 0;
};

using QueuePtr = std::shared_ptr<Queue>;

}  // namespace mb::broker
