// A virtual host: its exchanges, queues and bindings, declare/delete rules, and
// routing that follows exchange-to-exchange bindings and alternate exchanges.
//
// Knows no sockets and no bytes beyond decoding message headers when a headers
// exchange or dead-lettering needs them. Peer errors are thrown as AmqpError
// with RabbitMQ's reply codes and texts.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "broker/exchange.hpp"
#include "broker/persistence.hpp"
#include "broker/queue.hpp"
#include "broker/string_map.hpp"
#include "common/amqp/properties.hpp"

namespace mb::broker {

// What a vhost needs from the broker around it.
class VhostEnv {
 public:
  virtual ~VhostEnv() = default;
  virtual std::int64_t now_ms() const = 0;
  virtual std::uint64_t next_message_id() = 0;
  virtual void schedule_dispatch(const QueuePtr& q) = 0;
  virtual Persistence& persistence() = 0;
  // Direct reply-to (amq.rabbitmq.reply-to): reply consumers by routing key suffix.
  virtual std::string register_direct_reply(const std::shared_ptr<Consumer>& c) = 0;
  virtual void unregister_direct_reply(const std::string& key) = 0;
  virtual std::shared_ptr<Consumer> find_direct_reply(std::string_view key) const = 0;
  // Queues a vhost may hold (RabbitMQ's max-queues vhost limit); 0: no limit.
  virtual std::size_t max_queues() const { return 0; }
  // The task tracker (broker/tasks/): every publish, before routing; true when
  // the message is a task message, whose deliveries are then reported.
  virtual bool task_published(std::string_view /*exchange*/, std::string_view /*routing_key*/,
                              const amqp::PropertiesSummary& /*props*/, std::string_view /*body*/) {
    return false;
  }
  virtual void task_delivered(const Message& /*msg*/) {}
};

inline constexpr std::string_view kDirectReplyQueue = "amq.rabbitmq.reply-to";
inline constexpr std::string_view kDirectReplyPrefix = "amq.rabbitmq.reply-to.";

struct ExchangeDeclare {
  std::string_view name, type;
  bool passive = false, durable = false, auto_delete = false, internal = false;
  const amqp::FieldTable* arguments = nullptr;
};

struct QueueDeclare {
  std::string_view name;
  bool passive = false, durable = false, exclusive = false, auto_delete = false;
  const amqp::FieldTable* arguments = nullptr;
  std::uint64_t connection_id = 0;
  bool server_named = false;  // name came from generate_queue_name(): its amq. prefix is ours
};

struct PublishOutcome {
  std::size_t routed = 0;  // queues that accepted the message
  bool rejected = false;   // some queue refused it (x-overflow reject-publish)
};

class Vhost : public QueueHooks {
 public:
  Vhost(std::string name, VhostEnv& env);
  // Breaks exchange-to-exchange binding cycles, which would otherwise keep their exchanges (and
  // every queue bound from them) alive.
  ~Vhost();
  Vhost(const Vhost&) = delete;
  Vhost& operator=(const Vhost&) = delete;

  const std::string& name() const { return name_; }

  ExchangePtr find_exchange(std::string_view name) const;
  QueuePtr find_queue(std::string_view name) const;
  // Throws 404 NOT_FOUND.
  ExchangePtr exchange_or_404(std::string_view name) const;
  QueuePtr queue_or_404(std::string_view name) const;
  // 405 RESOURCE_LOCKED when the queue is exclusive to another connection.
  void check_exclusive(const Queue& q, std::uint64_t connection_id) const;

  ExchangePtr declare_exchange(const ExchangeDeclare& d);
  void delete_exchange(std::string_view name, bool if_unused);
  // Returns the queue and whether it was created.
  std::pair<QueuePtr, bool> declare_queue(const QueueDeclare& d);
  // Returns the number of messages deleted.
  std::size_t delete_queue(std::string_view name, bool if_unused, bool if_empty, std::uint64_t connection_id);
  // Deletes unconditionally (exclusive owner gone, auto-delete, x-expires).
  void remove_queue(const QueuePtr& q);
  // A fresh "amq.gen-..." name for a server-named queue (declare with server_named).
  std::string generate_queue_name() const;

  void bind_queue(std::string_view queue, std::string_view exchange, std::string_view key,
                  const amqp::FieldTable& args, std::uint64_t connection_id);
  void unbind_queue(std::string_view queue, std::string_view exchange, std::string_view key,
                    const amqp::FieldTable& args, std::uint64_t connection_id);
  void bind_exchange(std::string_view destination, std::string_view source, std::string_view key,
                     const amqp::FieldTable& args);
  void unbind_exchange(std::string_view destination, std::string_view source, std::string_view key,
                       const amqp::FieldTable& args);

  // Routes from exchange x and enqueues to every matching queue, once each.
  PublishOutcome publish(const Exchange& x, const MessagePtr& msg);
  // The queues a message would reach (for tests and the management API).
  void route(const Exchange& x, const Message& msg, std::vector<Queue*>& out) const;

  // x-delayed-message: holds msg until due_ms, then routes it through x. A
  // durable one (persistent, durable exchange) is written to the store and,
  // once written, kept on disk only: the vhost remembers the earliest due time
  // and reads due records back in batches (persistence().load_due_delayed).
  void delay(const ExchangePtr& x, const MessagePtr& msg, std::int64_t due_ms);
  // At start-up: the earliest due time among the delayed messages on disk.
  void restore_delayed_due(std::optional<std::int64_t> due_ms) { disk_due_ = due_ms; }
  std::size_t delayed_in_memory() const { return delayed_.size(); }
  // Calls f(due_ms, exchange name, message) for each delayed message, soonest first.
  template <typename F>
  void visit_delayed(F&& f) const {
    for (const auto& [due, d] : delayed_) f(due, d.exchange, d.msg);
  }

  // Housekeeping run by the broker's timer: expiry at queue heads, x-expires.
  void tick(std::int64_t now_ms);

  const StringMap<ExchangePtr>& exchanges() const { return exchanges_; }
  const StringMap<QueuePtr>& queues() const { return queues_; }

  // QueueHooks
  void dead_letter(Queue& q, const QueueEntry& e, DeathReason reason) override;
  void wake(Queue& q) override;
  void removed(Queue& q, const QueueEntry& e) override;
  void enqueued(Queue& q, const QueueEntry& e) override;
  void delivered(Queue& q, const QueueEntry& e) override;
  bool load_tail(Queue& q, std::uint64_t from_seq, std::size_t max, std::vector<QueueEntry>& out) override;
  void tail_dropped(Queue& q, std::uint64_t from_seq) override;
  void when_written(Queue& q, std::function<void(bool ok)> done) override;

  // Restores entities from the store at start-up (no checks, no persistence calls).
  ExchangePtr restore_exchange(ExchangePtr x);
  QueuePtr restore_queue(QueuePtr q);

 private:
  void add_builtin(std::string name, ExchangeType type, bool internal = false);
  void maybe_auto_delete_exchange(const ExchangePtr& x);
  // Checks and builds a binding (403 default exchange, 404 missing, 405 exclusive).
  Binding queue_binding(std::string_view queue, std::string_view exchange, std::string_view key,
                        const amqp::FieldTable& args, std::uint64_t connection_id, ExchangePtr& source) const;
  Binding exchange_binding(std::string_view destination, std::string_view source_name, std::string_view key,
                           const amqp::FieldTable& args, ExchangePtr& source) const;
  // Adds or removes a binding, telling the store when both ends are durable.
  void add_binding(const ExchangePtr& source, const Binding& b);
  void remove_binding(const ExchangePtr& source, const Binding& b);
  void remove_exchange(const ExchangePtr& x);
  // Message headers, decoded at most once per routing and only if a headers exchange asks.
  struct HeaderCache {
    const Message& msg;
    std::optional<amqp::FieldTable> headers;
    bool decoded = false;
    const amqp::FieldTable* get();
  };
  void route_from(const Exchange& x, const Message& msg, std::vector<Queue*>& out, HeaderCache& message_headers) const;

  std::string name_;
  VhostEnv& env_;  // HELD NOT OWNED
  StringMap<ExchangePtr> exchanges_;
  StringMap<QueuePtr> queues_;
  mutable std::vector<const Destination*> route_scratch_;
  mutable std::vector<const Exchange*> visited_scratch_;
  std::vector<Queue*> publish_scratch_;
  void release_delayed(std::int64_t due_ms, std::uint64_t id);
  void route_due_from_disk(std::int64_t now_ms);

  struct Delayed {
    std::string exchange;
    MessagePtr msg;
    bool durable = false;  // written to the store (remove it there when routed)
  };
  // In memory: non-durable delayed messages, and durable ones until written.
  std::multimap<std::int64_t, Delayed> delayed_;  // by due time
  // On disk: the earliest due time (nullopt: none), and the last (due, id)
  // routed from disk; records up to it are being removed and are skipped when
  // read again before that removal is written.
  std::optional<std::int64_t> disk_due_;
  std::pair<std::int64_t, std::uint64_t> disk_cursor_{std::numeric_limits<std::int64_t>::min(), 0};
  std::vector<Persistence::DueDelayed> due_scratch_;
  // Store callbacks hold a weak reference: a vhost gone meanwhile is skipped.
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

}  // namespace mb::broker
