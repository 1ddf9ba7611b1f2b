// StorePersistence: the Persistence seam implemented over mb::store::Store.
//
// Durable exchanges, queues (with their arguments) and bindings are metadata
// records encoded as AMQP field tables; persistent messages routed to durable
// queues are one message record each plus an entry per queue. Every write is
// appended to the store's pending batch; commits are requested by publishers
// (after_commit: confirms, tx.commit-ok; written at once) and once per loop
// turn when writes are pending (acks, deletes, publishes without confirms:
// commit_later, which the store may hold for its write-behind bound).
//
// Paging: with PagingLimits, every durable queue that can page (not a priority
// queue) keeps only a head window in memory and reads its tail back through
// load_tail; restore() loads only that window per queue.
#pragma once

#include <functional>
#include <memory>
#include <string_view>

#include "broker/persistence.hpp"
#include "broker/store/store.hpp"

namespace mb::broker {

class Vhost;

class StorePersistence : public Persistence {
 public:
  // post runs a function on the loop after the current handler (asio::post).
  // paging: the window each durable queue keeps in memory (nullopt: no paging).
  // now_ms: the wall clock, stamped on message records for TTLs read back.
  StorePersistence(store::Store& store, std::function<void(std::function<void()>)> post,
                   std::optional<PagingLimits> paging = std::nullopt,
                   std::function<std::int64_t()> now_ms = nullptr);

  void exchange_declared(std::string_view vhost, const Exchange& x) override;
  void exchange_deleted(std::string_view vhost, const Exchange& x) override;
  void queue_declared(std::string_view vhost, Queue& q) override;
  void queue_deleted(std::string_view vhost, const Queue& q) override;
  void binding_added(std::string_view vhost, const Exchange& source, const Binding& b) override;
  void binding_removed(std::string_view vhost, const Exchange& source, const Binding& b) override;
  void message_enqueued(const Queue& q, const QueueEntry& e) override;
  void message_removed(const Queue& q, const QueueEntry& e) override;
  void message_delivered(const Queue& q, const QueueEntry& e) override;
  bool load_tail(const Queue& q, std::uint64_t from_seq, std::size_t max, std::vector<QueueEntry>& out) override;
  void tail_dropped(const Queue& q, std::uint64_t from_seq) override;
  void delayed_added(std::string_view vhost, const Exchange& x, const Message& m, std::int64_t due_ms) override;
  void delayed_removed(const Message& m, std::int64_t due_ms) override;
  bool keeps_delayed() const override { return true; }
  void load_due_delayed(std::int64_t up_to_ms, std::size_t max, std::vector<DueDelayed>& out) override;
  std::optional<std::int64_t> next_delayed_due() override;
  void after_commit(std::function<void(bool ok)> done) override;
  // Deletes every durable record of the vhost (purge_vhost_records) once the
  // writes issued before this call are visible to the store's reads.
  void vhost_deleted(std::string_view vhost) override;

  // Rebuilds the vhost's durable exchanges, queues, bindings, messages and
  // delayed messages from the store. Returns the highest message id seen.
  std::uint64_t restore(Vhost& vhost);

  store::Store& store() { return store_; }

 private:
  void touched();
  bool pages(const Queue& q) const { return paging_ && q.args().max_priority == 0; }
  // Reads entries [from_seq, ...) of a queue with their messages; see load_tail.
  store::Status read_entries(const Queue& q, std::uint64_t from_seq, std::size_t max, std::vector<QueueEntry>& out);
  // Body bytes of a queue's stored entries from from_seq on (a scan; restart only).
  std::uint64_t stored_bytes(std::uint64_t queue_id, std::uint64_t from_seq);

  store::Store& store_;  // HELD NOT OWNED
  std::function<void(std::function<void()>)> post_;
  std::uint64_t next_queue_id_ = 1;
  bool dirty_ = false;        // writes since the last commit request
  bool flush_posted_ = false;  // a commit for this turn is scheduled
  std::optional<PagingLimits> paging_;
  std::function<std::int64_t()> now_ms_;
  // Scratch for page-in reads, reused so the loop does not allocate per batch.
  std::vector<store::QueueEntry> page_entries_;
  std::vector<store::MessageId> page_ids_;
  std::vector<std::optional<std::string>> page_blobs_;
  std::vector<store::DelayedRecord> delayed_scratch_;
};

// Deletes every durable record of the vhost: exchanges, queues with their
// messages, bindings, delayed messages. Reads the store, so it must run when
// earlier writes are visible (after their commit, or offline); the caller
// commits. Returns how many exchanges and queues it deleted.
std::size_t purge_vhost_records(store::Store& store, std::string_view vhost);

// Message record encoding (exchange, routing key, encoded properties, body).
// Message record encoding (exchange, routing key, encoded properties, body,
// then the time it was stored, ms; records written before paging lack it).
std::string encode_message_record(const Message& m, std::int64_t stored_at_ms);
std::shared_ptr<Message> decode_message_record(std::uint64_t id, std::string_view blob);

}  // namespace mb::broker
