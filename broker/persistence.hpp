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
  // x-delayed-message: a message held until due_ms, and its release.
  virtual void delayed_added(std::string_view /*vhost*/, const Exchange&, const Message&, std::int64_t /*due_ms*/) {}
  virtual void delayed_removed(const Message&, std::int64_t /*due_ms*/) {}
  // The vhost was deleted: forget every durable record it had.
  virtual void vhost_deleted(std::string_view /*vhost*/) {}
  // Runs done(true) once every write issued before this call is durable, or
  // done(false) if writing failed. May run it before returning.
  virtual void after_commit(std::function<void(bool ok)> done) { done(true); }
};

}  // namespace mb::broker
