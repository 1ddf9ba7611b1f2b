// Channel state machine. See channel.hpp.
#include "broker/channel.hpp"

#include <spdlog/spdlog.h>

#include <charconv>
#include <random>

#include "broker/errors.hpp"
#include "common/amqp/properties.hpp"

namespace mb::broker {
namespace {

using access::Permission;

constexpr std::string_view kExchangeKind = "exchange";
constexpr std::string_view kQueueKind = "queue";
// RabbitMQ checks permissions on the default exchange under this name.
constexpr std::string_view kDefaultExchangeAlias = "amq.default";
// Declare arguments naming another exchange, which the declaring user must be able to write to.
constexpr std::string_view kAlternateExchangeArg = "alternate-exchange";
constexpr std::string_view kDeadLetterExchangeArg = "x-dead-letter-exchange";

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

std::string generate_consumer_tag() {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  static std::mt19937_64 rng{std::random_device{}()};
  std::string tag = "amq.ctag-";
  for (int i = 0; i < 22; ++i) tag.push_back(kAlphabet[rng() % 64]);
  return tag;
}

// The expiration property is a decimal number of milliseconds (RabbitMQ's rule).
std::int64_t parse_expiration(std::string_view s) {
  std::int64_t v = -1;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size() || v < 0)
    channel_error(ReplyCode::kPreconditionFailed, "invalid expiration '{}'", s);
  return v;
}

// The x-delay header (milliseconds) of a message published to an x-delayed-message exchange.
std::int64_t delay_of(const Message& msg) {
  if (!msg.has_headers) return 0;
  try {
    auto props = amqp::decode_properties(msg.properties());
    if (const auto* v = props.headers ? props.headers->find("x-delay") : nullptr) return v->as_int().value_or(0);
  } catch (const amqp::DecodeError&) {
  }
  return 0;
}

}  // namespace

Channel::Channel(std::uint16_t id, ChannelHost& host) : id_(id), host_(host) {}

Channel::~Channel() = default;

void Channel::handle(const amqp::Method& method) {
  Vhost& vh = host_.vhost();
  const std::uint64_t conn = host_.connection_id();
  std::visit(
      Overloaded{
          [&](const amqp::BasicPublish& m) { on_publish(m); },
          [&](const amqp::BasicAck& m) { settle(m.delivery_tag, m.multiple, false, false); },
          [&](const amqp::BasicReject& m) { settle(m.delivery_tag, false, true, m.requeue); },
          [&](const amqp::BasicNack& m) { settle(m.delivery_tag, m.multiple, true, m.requeue); },
          [&](const amqp::BasicConsume& m) { on_consume(m); },
          [&](const amqp::BasicCancel& m) { on_cancel(m.consumer_tag, m.no_wait, false); },
          [&](const amqp::BasicGet& m) { on_get(m); },
          [&](const amqp::BasicQos& m) { on_qos(m); },
          [&](const amqp::BasicRecover&) {
            requeue_all();
            send(amqp::BasicRecoverOk{});
          },
          [&](const amqp::BasicRecoverAsync&) { requeue_all(); },
          [&](const amqp::ExchangeDeclare& m) {
            authorize_exchange_declare(m);
            vh.declare_exchange(ExchangeDeclare{m.exchange, m.type, m.passive, m.durable, m.auto_delete, m.internal,
                                                &m.arguments});
            if (!m.no_wait) send(amqp::ExchangeDeclareOk{});
          },
          [&](const amqp::ExchangeDelete& m) {
            require(Permission::kConfigure, kExchangeKind, m.exchange);
            vh.delete_exchange(m.exchange, m.if_unused);
            if (!m.no_wait) send(amqp::ExchangeDeleteOk{});
          },
          [&](const amqp::ExchangeBind& m) {
            require(Permission::kWrite, kExchangeKind, m.destination);
            require(Permission::kRead, kExchangeKind, m.source);
            vh.bind_exchange(m.destination, m.source, m.routing_key, m.arguments);
            if (!m.no_wait) send(amqp::ExchangeBindOk{});
          },
          [&](const amqp::ExchangeUnbind& m) {
            require(Permission::kWrite, kExchangeKind, m.destination);
            require(Permission::kRead, kExchangeKind, m.source);
            vh.unbind_exchange(m.destination, m.source, m.routing_key, m.arguments);
            if (!m.no_wait) send(amqp::ExchangeUnbindOk{});
          },
          [&](const amqp::QueueDeclare& m) {
            if (m.queue == kDirectReplyQueue) {  // the pseudo-queue exists for every channel
              if (!m.no_wait) send(amqp::QueueDeclareOk{m.queue, 0, 0});
              return;
            }
            // A server-named queue is named before the checks, which apply to that name.
            const std::string generated = m.queue.empty() && !m.passive ? vh.generate_queue_name() : std::string();
            const std::string_view name = generated.empty() ? std::string_view(m.queue) : generated;
            if (!m.passive) authorize_queue_declare(name, m.arguments);
            auto [q, created] = vh.declare_queue(QueueDeclare{name, m.passive, m.durable, m.exclusive, m.auto_delete,
                                                              &m.arguments, conn, !generated.empty()});
            if (created && q->exclusive()) host_.register_exclusive(q);
            if (!m.no_wait)
              send(amqp::QueueDeclareOk{q->name(), static_cast<std::uint32_t>(q->ready_count()),
                                        static_cast<std::uint32_t>(q->consumer_count())});
          },
          [&](const amqp::QueueBind& m) {
            require(Permission::kWrite, kQueueKind, m.queue);
            require(Permission::kRead, kExchangeKind, m.exchange);
            vh.bind_queue(m.queue, m.exchange, m.routing_key, m.arguments, conn);
            if (!m.no_wait) send(amqp::QueueBindOk{});
          },
          [&](const amqp::QueueUnbind& m) {
            require(Permission::kWrite, kQueueKind, m.queue);
            require(Permission::kRead, kExchangeKind, m.exchange);
            vh.unbind_queue(m.queue, m.exchange, m.routing_key, m.arguments, conn);
            send(amqp::QueueUnbindOk{});
          },
          [&](const amqp::QueuePurge& m) {
            require(Permission::kRead, kQueueKind, m.queue);
            QueuePtr q = vh.queue_or_404(m.queue);
            vh.check_exclusive(*q, conn);
            const auto n = static_cast<std::uint32_t>(q->purge());
            if (!m.no_wait) send(amqp::QueuePurgeOk{n});
          },
          [&](const amqp::QueueDelete& m) {
            require(Permission::kConfigure, kQueueKind, m.queue);
            const auto n = static_cast<std::uint32_t>(vh.delete_queue(m.queue, m.if_unused, m.if_empty, conn));
            if (!m.no_wait) send(amqp::QueueDeleteOk{n});
          },
          [&](const amqp::ChannelFlow& m) {
            flow_active_ = m.active;
            send(amqp::ChannelFlowOk{m.active});
            if (flow_active_) wake_consumer_queues();
          },
          [&](const amqp::ChannelFlowOk&) {},
          [&](const amqp::ConfirmSelect& m) {
            if (tx_mode_) channel_error(ReplyCode::kPreconditionFailed, "cannot switch from tx to confirm mode");
            confirm_mode_ = true;
            if (!m.nowait) send(amqp::ConfirmSelectOk{});
          },
          [&](const amqp::TxSelect&) {
            if (confirm_mode_) channel_error(ReplyCode::kPreconditionFailed, "cannot switch from confirm to tx mode");
            tx_mode_ = true;
            send(amqp::TxSelectOk{});
          },
          [&](const amqp::TxCommit&) {
            if (!tx_mode_) channel_error(ReplyCode::kPreconditionFailed, "channel is not transactional");
            tx_commit();
          },
          [&](const amqp::TxRollback&) {
            if (!tx_mode_) channel_error(ReplyCode::kPreconditionFailed, "channel is not transactional");
            tx_publishes_.clear();
            tx_acks_.clear();
            send(amqp::TxRollbackOk{});
          },
          [&](const auto& m) {
            connection_error(ReplyCode::kCommandInvalid, "unexpected method {} on channel {}",
                             std::decay_t<decltype(m)>::kName, id_);
          },
      },
      method);
}

// ---- publishing -------------------------------------------------------------

void Channel::on_publish(const amqp::BasicPublish& m) {
  if (m.immediate) connection_error(ReplyCode::kNotImplemented, "immediate=true");
  authorize_publish(m.exchange);
  ExchangePtr x = host_.vhost().exchange_or_404(m.exchange);
  if (x->internal())
    channel_error(ReplyCode::kAccessRefused, "cannot publish to internal exchange '{}' in vhost '{}'", m.exchange,
                  host_.vhost().name());
  pending_.active = true;
  pending_.header_seen = false;
  pending_.exchange = std::move(x);
  pending_.routing_key.assign(m.routing_key);
  pending_.mandatory = m.mandatory;
}

void Channel::handle_header(std::string_view payload) {
  if (!pending_.active || pending_.header_seen)
    connection_error(ReplyCode::kUnexpectedFrame, "content header frame without a content method on channel {}", id_);
  amqp::ContentHeader h = amqp::decode_content_header(payload);
  if (h.class_id != 60) connection_error(ReplyCode::kFrameError, "content header for class {} (expected 60)", h.class_id);
  if (h.body_size > host_.max_message_size()) {
    pending_.active = false;
    channel_error(ReplyCode::kPreconditionFailed, "message size {} is larger than configured max size {}", h.body_size,
                  host_.max_message_size());
  }
  pending_.header_seen = true;
  pending_.msg = Message::create(pending_.exchange->name(), pending_.routing_key, h.properties, h.body_size);
  pending_.body_received = 0;
  if (h.body_size == 0) finish_publish();
}

void Channel::handle_body(std::string_view payload) {
  if (!pending_.active || !pending_.header_seen)
    connection_error(ReplyCode::kUnexpectedFrame, "content body frame without a content header on channel {}", id_);
  Message& msg = *pending_.msg;
  if (payload.size() > msg.body_size() - pending_.body_received)
    connection_error(ReplyCode::kFrameError, "content body exceeds the size in its header on channel {}", id_);
  std::memcpy(msg.body_buffer() + pending_.body_received, payload.data(), payload.size());
  pending_.body_received += payload.size();
  if (pending_.body_received == msg.body_size()) finish_publish();
}

void Channel::finish_publish() {
  pending_.active = false;
  VhostEnv& env = host_.env();
  std::shared_ptr<Message> msg = std::move(pending_.msg);
  amqp::PropertiesSummary s = amqp::summarize_properties(msg->properties());
  if (s.has_user_id && s.user_id != host_.user())
    channel_error(ReplyCode::kPreconditionFailed, "user_id property set to '{}' but authenticated user was '{}'",
                  s.user_id, host_.user());
  // Before the direct reply-to rewrite below, which invalidates the views in s.
  const bool task = env.task_published(msg->exchange(), msg->routing_key(), s, msg->body());
  const std::optional<std::int64_t> expiration_ms =
      s.has_expiration ? std::optional(parse_expiration(s.expiration)) : std::nullopt;
  if (s.reply_to == kDirectReplyQueue) {
    if (reply_key_.empty())
      channel_error(ReplyCode::kPreconditionFailed, "fast reply consumer does not exist");
    amqp::BasicProperties props = amqp::decode_properties(msg->properties());
    props.reply_to = std::string(kDirectReplyPrefix) + reply_key_;
    msg = Message::create(msg->exchange(), msg->routing_key(), amqp::encode_properties(props), msg->body());
  }
  msg->task = task;
  msg->expiration_ms = expiration_ms;
  msg->delivery_mode = s.delivery_mode;
  msg->priority = s.priority;
  msg->has_headers = s.has_headers;
  msg->id = env.next_message_id();
  ExchangePtr x = std::move(pending_.exchange);
  if (tx_mode_) {
    tx_publishes_.push_back(TxPublish{std::move(x), std::move(msg), pending_.mandatory});
    return;
  }
  route_and_confirm(*x, msg, pending_.mandatory);
}

void Channel::route_and_confirm(const Exchange& x, const MessagePtr& msg, bool mandatory) {
  PublishOutcome out;
  if (x.name().empty() && msg->routing_key().starts_with(kDirectReplyPrefix)) {
    if (auto c = host_.env().find_direct_reply(msg->routing_key().substr(kDirectReplyPrefix.size()))) {
      c->sink->deliver(*c, QueueEntry{0, msg});
      out.routed = 1;
    }
  } else if (auto delay = x.delayed() ? delay_of(*msg) : 0; delay > 0) {
    host_.vhost().delay(host_.vhost().exchange_or_404(x.name()), msg, host_.env().now_ms() + delay);
    out.routed = 1;  // held by the exchange; routed when due
  } else {
    out = host_.vhost().publish(x, msg);
  }
  SPDLOG_TRACE("conn {} ch {}: publish to '{}' rk '{}' routed {}", host_.connection_id(), id_, msg->exchange(), msg->routing_key(), out.routed);
  if (out.routed == 0 && !out.rejected && mandatory) {
    send(amqp::BasicReturn{312, "NO_ROUTE", msg->exchange(), msg->routing_key()});
    send_content(*msg);
  }
  if (!confirm_mode_) return;
  const std::uint64_t seq = ++publish_seq_;
  if (out.rejected) {
    confirm(seq, false);
    return;
  }
  const bool durable = msg->persistent() && out.routed > 0;
  if (!durable && confirms_in_flight_ == 0) {
    confirm(seq, true);
    return;
  }
  ++confirms_in_flight_;
  std::weak_ptr<Channel> self = weak_from_this();
  host_.env().persistence().after_commit([self, seq](bool ok) {
    if (auto ch = self.lock()) {
      --ch->confirms_in_flight_;
      ch->confirm(seq, ok);
      ch->flush_confirms();
    }
  });
}

void Channel::confirm(std::uint64_t seq, bool ok) {
  if (ok) {
    if (ack_to_ != 0 && seq == ack_to_ + 1) {
      ack_to_ = seq;
      return;
    }
    flush_confirms();
    ack_from_ = ack_to_ = seq;
    return;
  }
  flush_confirms();
  send(amqp::BasicNack{seq, false, false});
}

void Channel::flush_confirms() {
  if (ack_to_ == 0) return;
  send(amqp::BasicAck{ack_to_, ack_to_ != ack_from_});
  ack_from_ = ack_to_ = 0;
}

void Channel::send_content(const Message& msg) {
  amqp::write_content(host_.out(), id_, msg.properties(), msg.body(), host_.frame_max());
}

// The encoded properties a delivery (or get-ok) carries: as published, except
// that queues with x-delivery-limit count deliveries as RabbitMQ's quorum
// queues do, and a redelivery carries x-delivery-count = earlier deliveries
// (re-encoded into `counted`).
std::string_view Channel::delivered_properties(const Queue* q, const QueueEntry& e, std::string& counted) {
  if (q == nullptr || !q->args().delivery_limit || e.delivery_count <= 1) return e.msg->properties();
  try {
    amqp::BasicProperties p = amqp::decode_properties(e.msg->properties());
    if (!p.headers) p.headers.emplace();
    p.headers->set("x-delivery-count", static_cast<std::int64_t>(e.delivery_count - 1));
    counted = amqp::encode_properties(p);
    return counted;
  } catch (const amqp::DecodeError&) {
    return e.msg->properties();  // unparseable headers: the properties as published
  }
}

void Channel::send_delivery_content(const Queue* q, const QueueEntry& e) {
  if (e.msg->task) host_.env().task_delivered(*e.msg);
  std::string counted;
  amqp::write_content(host_.out(), id_, delivered_properties(q, e, counted), e.msg->body(), host_.frame_max());
}

// ---- consuming --------------------------------------------------------------

void Channel::on_consume(const amqp::BasicConsume& m) {
  Vhost& vh = host_.vhost();
  // RabbitMQ checks the limit first, and only for a tag not in use: 530, a connection error.
  if (const std::size_t limit = host_.max_consumers();
      limit != 0 && consumers_.size() >= limit && !consumers_.contains(m.consumer_tag))
    connection_error(ReplyCode::kNotAllowed, "reached maximum ({}) of consumers per channel", limit);
  if (m.queue == kDirectReplyQueue) {
    if (!m.no_ack) channel_error(ReplyCode::kPreconditionFailed, "reply consumer cannot acknowledge");
    if (!reply_key_.empty()) channel_error(ReplyCode::kPreconditionFailed, "reply consumer already set");
    std::string tag = m.consumer_tag.empty() ? generate_consumer_tag() : std::string(m.consumer_tag);
    if (consumers_.contains(tag)) connection_error(ReplyCode::kNotAllowed, "attempt to reuse consumer tag '{}'", tag);
    auto c = std::make_shared<Consumer>();
    c->tag = tag;
    c->sink = this;
    c->connection_id = host_.connection_id();
    c->no_ack = true;
    reply_key_ = host_.env().register_direct_reply(c);
    if (!m.no_wait) send(amqp::BasicConsumeOk{tag});
    consumers_.emplace(std::move(tag), std::move(c));
    return;
  }
  require(Permission::kRead, kQueueKind, m.queue);
  QueuePtr q = vh.queue_or_404(m.queue);
  vh.check_exclusive(*q, host_.connection_id());
  std::string tag = m.consumer_tag.empty() ? generate_consumer_tag() : std::string(m.consumer_tag);
  if (consumers_.contains(tag))
    connection_error(ReplyCode::kNotAllowed, "attempt to reuse consumer tag '{}'", tag);
  if (q->has_exclusive_consumer() || (m.exclusive && q->consumer_count() > 0))
    channel_error(ReplyCode::kAccessRefused, "queue '{}' in vhost '{}' in exclusive use", q->name(), vh.name());
  auto c = std::make_shared<Consumer>();
  c->tag = tag;
  c->sink = this;
  c->queue = q;
  c->connection_id = host_.connection_id();
  c->no_ack = m.no_ack;
  c->exclusive = m.exclusive;
  c->prefetch = prefetch_count_;
  if (const auto* p = m.arguments.find("x-priority")) {
    auto v = p->as_int();
    if (!v) channel_error(ReplyCode::kPreconditionFailed, "invalid x-priority for consumer '{}'", tag);
    c->priority = static_cast<std::int32_t>(*v);
  }
  q->touch(host_.env().now_ms());
  if (!m.no_wait) send(amqp::BasicConsumeOk{tag});
  consumers_.emplace(std::move(tag), c);
  q->add_consumer(c.get());
}

void Channel::remove_consumer(const std::shared_ptr<Consumer>& c) {
  QueuePtr q = c->queue;
  if (!q) {  // the direct reply-to consumer
    host_.env().unregister_direct_reply(reply_key_);
    reply_key_.clear();
    return;
  }
  if (q->remove_consumer(c.get())) host_.vhost().remove_queue(q);
}

void Channel::on_cancel(std::string_view tag, bool nowait, bool /*notify_client*/) {
  auto it = consumers_.find(tag);
  if (it != consumers_.end()) {
    std::shared_ptr<Consumer> c = std::move(it->second);
    consumers_.erase(it);
    remove_consumer(c);
  }
  if (!nowait) send(amqp::BasicCancelOk{tag});
}

void Channel::cancelled_by_broker(Consumer& c) {
  auto it = consumers_.find(c.tag);
  if (it == consumers_.end()) return;
  std::shared_ptr<Consumer> keep = std::move(it->second);
  consumers_.erase(it);
  keep->queue->remove_consumer(keep.get());
  if (host_.consumer_cancel_notify()) send(amqp::BasicCancel{keep->tag, true});
}

bool Channel::can_deliver(const Consumer& c) const {
  if (!flow_active_ || !host_.can_write()) return false;
  if (c.no_ack) return true;
  if (c.prefetch != 0 && c.unacked >= c.prefetch) return false;
  return channel_prefetch_ == 0 || channel_unacked_ < channel_prefetch_;
}

void Channel::deliver(Consumer& c, QueueEntry&& e) {
  const std::uint64_t tag = next_tag_++;
  const Message& msg = *e.msg;
  SPDLOG_TRACE("conn {} ch {}: deliver '{}' tag {} to {}", host_.connection_id(), id_, msg.routing_key(), tag, c.tag);
  if (msg.task) host_.env().task_delivered(msg);
  std::string counted;  // stays empty (no allocation) unless the queue counts deliveries
  amqp::write_delivery(host_.out(), id_, {c.tag, tag, e.redelivered, msg.exchange(), msg.routing_key()},
                       delivered_properties(c.queue.get(), e, counted), msg.body(), host_.frame_max());
  if (c.no_ack) {
    if (c.queue) c.queue->discard(e);
    return;
  }
  ++c.unacked;
  ++channel_unacked_;
  ++unacked_live_;
  unacked_.push_back(Unacked{tag, c.queue, c.shared_from_this(), std::move(e), false});
}

void Channel::on_get(const amqp::BasicGet& m) {
  Vhost& vh = host_.vhost();
  require(Permission::kRead, kQueueKind, m.queue);
  QueuePtr q = vh.queue_or_404(m.queue);
  vh.check_exclusive(*q, host_.connection_id());
  std::optional<QueueEntry> e = q->get(host_.env().now_ms(), m.no_ack);
  if (!e) {
    send(amqp::BasicGetEmpty{});
    return;
  }
  const std::uint64_t tag = next_tag_++;
  const Message& msg = *e->msg;
  send(amqp::BasicGetOk{tag, e->redelivered, msg.exchange(), msg.routing_key(),
                        static_cast<std::uint32_t>(q->ready_count())});
  send_delivery_content(q.get(), *e);
  if (m.no_ack) {
    q->discard(*e);
    return;
  }
  ++unacked_live_;
  unacked_.push_back(Unacked{tag, q, nullptr, std::move(*e), false});
}

void Channel::on_qos(const amqp::BasicQos& m) {
  if (m.prefetch_size != 0)
    connection_error(ReplyCode::kNotImplemented, "prefetch_size!=0 ({})", m.prefetch_size);
  if (m.global) {
    channel_prefetch_ = m.prefetch_count;
  } else {
    // RabbitMQ applies global=false to consumers created afterwards; we also
    // apply it to the channel's existing consumers, because Celery raises and
    // lowers its prefetch with live consumers while it holds countdown tasks.
    prefetch_count_ = m.prefetch_count;
    for (auto& [_, c] : consumers_) c->prefetch = m.prefetch_count;
  }
  send(amqp::BasicQosOk{});
  wake_consumer_queues();
}

// ---- acknowledgements -------------------------------------------------------

Channel::Unacked* Channel::find_unacked(std::uint64_t tag) {
  // Tags ascend but have gaps (no_ack deliveries use tags too): search by value.
  // Acks usually name the oldest delivery, so try the front first.
  if (unacked_.empty()) return nullptr;
  if (unacked_.front().tag == tag) return &unacked_.front();
  auto it = std::lower_bound(unacked_.begin(), unacked_.end(), tag,
                             [](const Unacked& u, std::uint64_t t) { return u.tag < t; });
  return it != unacked_.end() && it->tag == tag ? &*it : nullptr;
}

void Channel::settle(std::uint64_t tag, bool multiple, bool reject, bool requeue) {
  if (tag == 0 && multiple) {
    tag = next_tag_ - 1;
    if (unacked_.empty()) return;
  } else if (Unacked* u = find_unacked(tag); u == nullptr || u->settled) {
    channel_error(ReplyCode::kPreconditionFailed, "unknown delivery tag {}", tag);
  }
  if (tx_mode_) {
    tx_acks_.push_back(TxAck{tag, multiple, reject, requeue});
    return;
  }
  apply_settle(tag, multiple, reject, requeue);
}

void Channel::apply_settle(std::uint64_t tag, bool multiple, bool reject, bool requeue) {
  if (multiple) {
    for (std::size_t i = 0; i < unacked_.size() && unacked_[i].tag <= tag; ++i)
      if (!unacked_[i].settled) settle_one(unacked_[i], reject, requeue);
  } else if (Unacked* u = find_unacked(tag); u != nullptr && !u->settled) {
    settle_one(*u, reject, requeue);
  }
  pop_settled();
  // A channel-wide limit frees capacity for every consumer on the channel.
  if (channel_prefetch_ != 0) wake_consumer_queues();
}

void Channel::settle_one(Unacked& u, bool reject, bool requeue) {
  u.settled = true;
  --unacked_live_;
  if (u.consumer) {
    --u.consumer->unacked;
    --channel_unacked_;
    host_.vhost().wake(*u.queue);
  }
  if (reject) {
    u.queue->reject(std::move(u.entry), requeue);
  } else {
    u.queue->settle(u.entry);
  }
  u.queue.reset();
  u.consumer.reset();
}

void Channel::pop_settled() {
  while (!unacked_.empty() && unacked_.front().settled) unacked_.pop_front();
}

void Channel::requeue_all() {
  // Requeue in reverse so each message lands before the ones after it.
  for (auto it = unacked_.rbegin(); it != unacked_.rend(); ++it)
    if (!it->settled) settle_one(*it, true, true);
  unacked_.clear();
}

void Channel::wake_consumer_queues() {
  for (auto& [_, c] : consumers_)
    if (c->queue) host_.vhost().wake(*c->queue);
}

void Channel::resume_deliveries() { wake_consumer_queues(); }

void Channel::tx_commit() {
  std::vector<TxPublish> publishes = std::move(tx_publishes_);
  std::vector<TxAck> acks = std::move(tx_acks_);
  tx_publishes_.clear();
  tx_acks_.clear();
  tx_mode_ = false;  // apply directly, then return to tx mode
  for (auto& p : publishes) route_and_confirm(*p.exchange, p.msg, p.mandatory);
  for (const auto& a : acks) apply_settle(a.tag, a.multiple, a.reject, a.requeue);
  tx_mode_ = true;
  std::weak_ptr<Channel> self = weak_from_this();
  host_.env().persistence().after_commit([self](bool) {
    if (auto ch = self.lock()) ch->send(amqp::TxCommitOk{});
  });
}

void Channel::shutdown() {
  pending_.active = false;
  auto consumers = std::move(consumers_);
  consumers_.clear();
  for (auto& [_, c] : consumers) remove_consumer(c);
  requeue_all();
  tx_publishes_.clear();
  tx_acks_.clear();
}

// ---- access control ------------------------------------------------------------
//
// RabbitMQ's table (access-control guide), what each method needs:
//   exchange.declare   configure on it (not when passive); with alternate-exchange,
//                      read on it and write on the alternate
//   exchange.delete    configure on it
//   exchange.(un)bind  write on the destination, read on the source
//   queue.declare      configure on it (not when passive); with x-dead-letter-exchange,
//                      read on it and write on the dead-letter exchange
//   queue.delete       configure on it
//   queue.(un)bind     write on the queue, read on the exchange
//   queue.purge, basic.get, basic.consume   read on the queue
//   basic.publish      write on the exchange

void Channel::require(Permission p, std::string_view kind, std::string_view name) {
  if (kind == kExchangeKind && name.empty()) name = kDefaultExchangeAlias;
  const access::Grant* g = host_.grant();
  if (g != nullptr && g->allows(p, name)) return;
  channel_error(ReplyCode::kAccessRefused, "access to {} '{}' in vhost '{}' refused for user '{}'", kind, name,
                host_.vhost().name(), host_.user());
}

void Channel::authorize_exchange_declare(const amqp::ExchangeDeclare& m) {
  if (m.passive) return;
  require(Permission::kConfigure, kExchangeKind, m.exchange);
  if (const auto* ae = m.arguments.find(kAlternateExchangeArg)) {
    if (auto name = ae->as_string()) {
      require(Permission::kRead, kExchangeKind, m.exchange);
      require(Permission::kWrite, kExchangeKind, *name);
    }
  }
}

void Channel::authorize_queue_declare(std::string_view queue, const amqp::FieldTable& arguments) {
  require(Permission::kConfigure, kQueueKind, queue);
  if (const auto* dlx = arguments.find(kDeadLetterExchangeArg)) {
    if (auto name = dlx->as_string()) {
      require(Permission::kRead, kQueueKind, queue);
      require(Permission::kWrite, kExchangeKind, *name);
    }
  }
}

void Channel::authorize_publish(std::string_view exchange) {
  // The hot path: a publisher usually sends many messages to one exchange.
  const access::Grant* g = host_.grant();
  if (g != nullptr && g->serial() == writable_grant_serial_ && exchange == writable_exchange_) return;
  require(Permission::kWrite, kExchangeKind, exchange);
  writable_grant_serial_ = g->serial();
  writable_exchange_.assign(exchange);
}

}  // namespace mb::broker
