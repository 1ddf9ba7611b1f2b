// The broker's storage seam: what the vhost tells the store, in broker terms.
//
// The default implementation keeps nothing (every entity and message lives in
// memory). A durable implementation writes durable entities and persistent
// messages routed to durable queues, and runs `after_commit` callbacks once
// everything written before them is durable (publisher confirms, tx.commit-ok).
#pragma once

#include <functional>
#include <string_view>

#include "broker/exchange.hpp"
#include "broker/queue.hpp"

namespace mb::broker {

class Persistence {
 public:
  virtual ~Persistence() = default;
  // Entities are named within their vhost: `vhost` is the vhost's name.
  virtual void exchange_declared(std::string_view /*vhost*/, const Exchange&) {}
  virtual void exchange_deleted(std::string_view /*vhost*/, const Exchange&) {}
  virtual void queue_declared(std::string_view /*vhost*/, Queue&) {}
  virtual void queue_deleted(std::string_view /*vhost*/, const Queue&) {}
  virtual void binding_added(std::string_view /*vhost*/, const Exchange& /*source*/, const Binding&) {}
  virtual void binding_removed(std::string_view /*vhost*/, const Exchange& /*source*/, const Binding&) {}
  virtual void message_enqueued(const Queue&, const QueueEntry&) {}
  virtual void message_removed(const Queue&, const QueueEntry&) {}
  virtual void message_delivered(const Queue&, const QueueEntry&) {}
  // A paging queue's tail (see queue.hpp): reads entries with seq >= from_seq,
  // messages included; removes those from from_seq on.
  virtual bool load_tail(const Queue&, std::uint64_t /*from_seq*/, std::size_t /*max*/,
                         std::vector<QueueEntry>& /*out*/) {
    return false;
  }
  virtual void tail_dropped(const Queue&, std::uint64_t /*from_seq*/) {}
  // x-delayed-message: a message held until due_ms, and its release.
  virtual void delayed_added(std::string_view /*vhost*/, const Exchange&, const Message&, std::int64_t /*due_ms*/) {}
  virtual void delayed_removed(const Message&, std::int64_t /*due_ms*/) {}
  // The vhost was deleted: forget every durable record it had.
  virtual void vhost_deleted(std::string_view /*vhost*/) {}
  // Whether delayed_added records can be read back (load_due_delayed): then the
  // vhost keeps a durable delayed message in memory only until it is written.
  virtual bool keeps_delayed() const { return false; }
  struct DueDelayed {
    std::int64_t due_ms = 0;
    std::string vhost;  // the vhost whose exchange it goes through
    std::string exchange;
    MessagePtr msg;  // null: unreadable (logged); its record is removed with delayed_removed
    std::uint64_t id = 0;
  };
  // Up to max delayed records due at or before up_to_ms, in (due, id) order.
  virtual void load_due_delayed(std::int64_t /*up_to_ms*/, std::size_t /*max*/, std::vector<DueDelayed>& /*out*/) {}
  // The earliest due time on disk, if any.
  virtual std::optional<std::int64_t> next_delayed_due() { return std::nullopt; }
  // Runs done(true) once every write issued before this call is durable, or
  // done(false) if writing failed. May run it before returning.
  virtual void after_commit(std::function<void(bool ok)> done) { done(true); }
};

}  // namespace mb::broker
