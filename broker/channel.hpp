// A channel: its consumers, unacked deliveries, prefetch limits, publisher
// confirms, transactions and the publish state machine (method -> header ->
// body*). Takes decoded methods and content frames; writes replies and
// deliveries through its ChannelHost (the connection). Never touches a socket.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "broker/access.hpp"
#include "broker/queue.hpp"
#include "broker/string_map.hpp"
#include "broker/vhost.hpp"
#include "common/amqp/frame.hpp"

namespace mb::broker {

// What a channel needs from its connection.
class ChannelHost {
 public:
  virtual ~ChannelHost() = default;
  virtual std::uint64_t connection_id() const = 0;
  virtual Vhost& vhost() = 0;
  virtual VhostEnv& env() = 0;
  // The outbound buffer; appending marks the connection for a flush this turn.
  virtual std::string& out() = 0;
  virtual std::uint32_t frame_max() const = 0;
  // False while the outbound buffer is over its high-water mark: hold deliveries.
  virtual bool can_write() const = 0;
  virtual bool consumer_cancel_notify() const = 0;
  virtual const std::string& user() const = 0;
  // The user's permissions in this vhost as they stand now; null when it has none.
  virtual const access::Grant* grant() = 0;
  virtual std::uint64_t max_message_size() const = 0;
  virtual void register_exclusive(const QueuePtr& q) = 0;
  // Consumers one channel may hold (RabbitMQ's consumer_max_per_channel); 0: no limit.
  virtual std::size_t max_consumers() const { return 0; }
};

class Channel : public ConsumerSink, public std::enable_shared_from_this<Channel> {
 public:
  Channel(std::uint16_t id, ChannelHost& host);
  ~Channel() override;

  std::uint16_t id() const { return id_; }
  // True between basic.publish (or get-ok) and the last body frame.
  bool expecting_content() const { return pending_.active; }

  // Each may throw AmqpError.
  void handle(const amqp::Method& m);
  void handle_header(std::string_view payload);
  void handle_body(std::string_view payload);

  // Sends pending coalesced publisher confirms (once per read batch).
  void flush_confirms();
  // Releases consumers and requeues unacked deliveries (channel or connection closed).
  void shutdown();
  // Called when the connection's outbound buffer drained: resume deliveries.
  void resume_deliveries();

  // ConsumerSink
  bool can_deliver(const Consumer& c) const override;
  void deliver(Consumer& c, QueueEntry&& entry) override;
  void cancelled_by_broker(Consumer& c) override;

  std::size_t consumer_count() const { return consumers_.size(); }
  std::size_t unacked_count() const { return unacked_live_; }
  std::uint32_t prefetch_count() const { return prefetch_count_; }
  std::uint32_t global_prefetch_count() const { return channel_prefetch_; }
  bool confirm_mode() const { return confirm_mode_; }
  bool tx_mode() const { return tx_mode_; }
  const StringMap<std::shared_ptr<Consumer>>& consumers() const { return consumers_; }
  // Calls f(delivery_tag, queue, consumer or null for basic.get, entry) for each
  // delivery not yet settled, oldest first (management API: browse unacked).
  template <typename F>
  void visit_unacked(F&& f) const {
    for (const Unacked& u : unacked_)
      if (!u.settled) f(u.tag, *u.queue, u.consumer.get(), u.entry);
  }

 private:
  struct Unacked {
    std::uint64_t tag = 0;
    QueuePtr queue;
    std::shared_ptr<Consumer> consumer;  // null for basic.get
    QueueEntry entry;
    bool settled = false;
  };
  struct PendingPublish {
    bool active = false;
    bool header_seen = false;
    ExchangePtr exchange;
    std::string routing_key;
    bool mandatory = false;
    std::shared_ptr<Message> msg;  // made at the content header; the body frames fill it
    std::uint64_t body_received = 0;
  };
  struct TxPublish {
    ExchangePtr exchange;
    MessagePtr msg;
    bool mandatory;
  };
  struct TxAck {
    std::uint64_t tag;
    bool multiple;
    bool reject;
    bool requeue;
  };

  template <typename M>
  void send(const M& m) {
    amqp::write_method(host_.out(), id_, m);
  }
  void send_content(const Message& msg);
  void send_delivery_content(const Queue* q, const QueueEntry& e);
  static std::string_view delivered_properties(const Queue* q, const QueueEntry& e, std::string& counted);

  void on_publish(const amqp::BasicPublish& m);
  void finish_publish();
  void route_and_confirm(const Exchange& x, const MessagePtr& msg, bool mandatory);
  void confirm(std::uint64_t seq, bool ok);
  void on_consume(const amqp::BasicConsume& m);
  void on_cancel(std::string_view tag, bool nowait, bool notify_client);
  void on_get(const amqp::BasicGet& m);
  void on_qos(const amqp::BasicQos& m);
  // Acks, rejects and nacks: validates the tag (406 when unknown).
  void settle(std::uint64_t tag, bool multiple, bool reject, bool requeue);
  void apply_settle(std::uint64_t tag, bool multiple, bool reject, bool requeue);
  Unacked* find_unacked(std::uint64_t tag);
  void settle_one(Unacked& u, bool reject, bool requeue);
  void requeue_all();
  void pop_settled();
  void wake_consumer_queues();
  void remove_consumer(const std::shared_ptr<Consumer>& c);
  void tx_commit();
  // 403 ACCESS_REFUSED (RabbitMQ's text) unless the user holds permission p on
  // the named exchange or queue.
  void require(access::Permission p, std::string_view kind, std::string_view name);
  // The checks of RabbitMQ's access-control table, one per method.
  void authorize_exchange_declare(const amqp::ExchangeDeclare& m);
  void authorize_queue_declare(std::string_view queue, const amqp::FieldTable& arguments);
  void authorize_publish(std::string_view exchange);

  std::uint16_t id_;
  ChannelHost& host_;  // HELD NOT OWNED: the connection owns its channels
  PendingPublish pending_;

  StringMap<std::shared_ptr<Consumer>> consumers_;
  std::deque<Unacked> unacked_;  // by delivery tag, ascending; settled ones popped from the front
  std::size_t unacked_live_ = 0;
  std::uint64_t next_tag_ = 1;
  std::uint32_t prefetch_count_ = 0;    // basic.qos global=false: per consumer
  std::uint32_t channel_prefetch_ = 0;  // basic.qos global=true: shared by the channel
  std::uint32_t channel_unacked_ = 0;   // deliveries to consumers, for channel_prefetch_
  bool flow_active_ = true;

  bool confirm_mode_ = false;
  std::uint64_t publish_seq_ = 0;
  std::string reply_key_;  // direct reply-to consumer on this channel, if any
  std::uint64_t ack_from_ = 0, ack_to_ = 0;  // coalesced confirms not yet sent
  std::size_t confirms_in_flight_ = 0;       // waiting for the store

  // basic.publish checks write permission once per (grant, exchange) run:
  // the last exchange found writable and the grant it was checked under.
  std::string writable_exchange_;
  std::uint64_t writable_grant_serial_ = 0;

  bool tx_mode_ = false;
  std::vector<TxPublish> tx_publishes_;
  std::vector<TxAck> tx_acks_;
};

using ChannelPtr = std::shared_ptr<Channel>;

}  // namespace mb::broker
