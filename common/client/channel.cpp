// channel.cpp: client channel: reply matching, content assembly, publish/ack.
#include "common/client/channel.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "common/amqp/field_table.hpp"
#include "common/client/connection.hpp"

namespace mb::client {

void decode_headers(Delivery& d) {
  if (d.encoded_headers.empty()) return;
  amqp::Reader r(d.encoded_headers);
  d.properties.headers = amqp::decode_table(r);
  d.encoded_headers.clear();
}

// Synchronous methods (qos, cancel, close...) go out after the acks the
// caller gave before them, as they would without the gathering.
void Channel::send_bytes(std::string_view bytes) {
  conn_.write_gathered_acks();
  conn_.out().append(bytes);
  conn_.flush();
}

asio::awaitable<std::string> Channel::expect(const Extract& extract, const std::function<void()>& send) {
  if (id_ != 0 && !open_) throw AmqpError(504, "CHANNEL_ERROR - channel is closed");
  auto& io = conn_.io();
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>, void(std::exception_ptr, std::string)>(
      [this, &io, &extract, &send](auto handler) {
        auto h = std::make_shared<decltype(handler)>(std::move(handler));
        pending_.push_back(Pending{extract, [h, &io](std::exception_ptr e, std::string s) {
                                     asio::post(io, [h, e, s = std::move(s)]() mutable { std::move (*h)(e, std::move(s)); });
                                   }});
        send();
      },
      asio::use_awaitable);
}

asio::awaitable<void> Channel::qos(std::uint16_t prefetch_count, bool global) {
  const amqp::BasicQos m{0, prefetch_count, global};
  const Extract ex = expect_reply<amqp::BasicQosOk>();
  co_await call(m, ex);
}

asio::awaitable<std::string> Channel::queue_declare(std::string_view name, const QueueOptions& o) {
  amqp::QueueDeclare m;
  m.queue = name;
  m.passive = o.passive;
  m.durable = o.durable;
  m.exclusive = o.exclusive;
  m.auto_delete = o.auto_delete;
  m.arguments = o.arguments;
  const Extract ex = [](const amqp::Method& r) -> std::string {
    auto* ok = std::get_if<amqp::QueueDeclareOk>(&r);
    if (!ok) throw AmqpError(505, "UNEXPECTED_FRAME - expected queue.declare-ok");
    return std::string(ok->queue);
  };
  std::string name_ok = co_await call(m, ex);
  co_return name_ok;
}

asio::awaitable<void> Channel::exchange_declare(std::string_view name, std::string_view type, bool durable,
                                                bool auto_delete, const amqp::FieldTable& arguments) {
  amqp::ExchangeDeclare m;
  m.exchange = name;
  m.type = type;
  m.durable = durable;
  m.auto_delete = auto_delete;
  m.arguments = arguments;
  const Extract ex = expect_reply<amqp::ExchangeDeclareOk>();
  co_await call(m, ex);
}

asio::awaitable<void> Channel::queue_delete(std::string_view name) {
  amqp::QueueDelete m;
  m.queue = name;
  const Extract ex = expect_reply<amqp::QueueDeleteOk>();
  co_await call(m, ex);
}

asio::awaitable<void> Channel::queue_bind(std::string_view queue, std::string_view exchange,
                                          std::string_view routing_key) {
  amqp::QueueBind m;
  m.queue = queue;
  m.exchange = exchange;
  m.routing_key = routing_key;
  const Extract ex = expect_reply<amqp::QueueBindOk>();
  co_await call(m, ex);
}

asio::awaitable<std::string> Channel::consume(std::string_view queue, std::string_view tag, bool no_ack,
                                              const DeliveryFn& fn, HeadersForm headers) {
  amqp::BasicConsume m;
  m.queue = queue;
  m.consumer_tag = tag;
  m.no_ack = no_ack;
  // The consumer is registered when consume-ok is read, before any delivery for it.
  const Extract ex = [this, fn, no_ack, headers](const amqp::Method& r) -> std::string {
    auto* ok = std::get_if<amqp::BasicConsumeOk>(&r);
    if (!ok) throw AmqpError(505, "UNEXPECTED_FRAME - expected basic.consume-ok");
    consumers_[std::string(ok->consumer_tag)] = Consumer{fn, no_ack, headers};
    return std::string(ok->consumer_tag);
  };
  std::string tag_ok = co_await call(m, ex);
  co_return tag_ok;
}

asio::awaitable<void> Channel::cancel(std::string_view tag) {
  std::string t(tag);
  const amqp::BasicCancel m{t, false};
  const Extract ex = expect_reply<amqp::BasicCancelOk>();
  co_await call(m, ex);
  consumers_.erase(t);
}

asio::awaitable<void> Channel::close() {
  if (!open_) co_return;
  const amqp::ChannelClose m{200, "bye", 0, 0};
  const Extract ex = expect_reply<amqp::ChannelCloseOk>();
  co_await call(m, ex);
  open_ = false;
}

asio::awaitable<void> Channel::confirm_select() {
  const amqp::ConfirmSelect m{false};
  const Extract ex = expect_reply<amqp::ConfirmSelectOk>();
  co_await call(m, ex);
  confirm_mode_ = true;
}

void Channel::publish(std::string_view exchange, std::string_view routing_key, const amqp::BasicProperties& properties,
                      std::string_view body) {
  std::string& out = conn_.out();
  amqp::BasicPublish m;
  m.exchange = exchange;
  m.routing_key = routing_key;
  amqp::write_method(out, id_, m);
  amqp::write_content(out, id_, amqp::encode_properties(properties), body, conn_.frame_max());
  conn_.flush();
  if (confirm_mode_) ++publish_seq_;
}

asio::awaitable<void> Channel::publish_confirmed(std::string_view exchange, std::string_view routing_key,
                                                 const amqp::BasicProperties& properties, std::string_view body) {
  if (!open_) throw AmqpError(504, "CHANNEL_ERROR - channel is closed");
  if (!confirm_mode_) throw std::logic_error("publish_confirmed on a channel not in confirm mode");
  auto& io = conn_.io();
  co_await asio::async_initiate<const asio::use_awaitable_t<>, void(std::exception_ptr)>(
      [&](auto handler) {
        auto h = std::make_shared<decltype(handler)>(std::move(handler));
        publish(exchange, routing_key, properties, body);
        confirms_.emplace(publish_seq_, [h, &io](std::exception_ptr e) {
          asio::post(io, [h, e]() mutable { std::move (*h)(e); });
        });
      },
      asio::use_awaitable);
}

void Channel::on_confirm(std::uint64_t tag, bool multiple, bool ack) {
  auto first = multiple ? confirms_.begin() : confirms_.find(tag);
  auto last = multiple ? confirms_.upper_bound(tag) : (first == confirms_.end() ? first : std::next(first));
  std::vector<ConfirmFn> done;
  for (auto it = first; it != last; ++it) done.push_back(std::move(it->second));
  confirms_.erase(first, last);
  auto error = ack ? nullptr : std::make_exception_ptr(AmqpError(0, "the broker nacked the message"));
  for (auto& fn : done) fn(error);
}

void Channel::ack(std::uint64_t delivery_tag, bool multiple) {
  if (!multiple) {
    if (Unsettled* u = find_unsettled(delivery_tag); u && !u->settled) {
      u->settled = true;
      acks_.push_back(delivery_tag);
      conn_.flush_acks_of(this);
      return;
    }
  } else {
    write_acks();  // the gathered ones first: they may lie above delivery_tag
    for (auto& u : unsettled_) {
      if (u.tag > delivery_tag) break;
      u.settled = true;
    }
  }
  amqp::write_method(conn_.out(), id_, amqp::BasicAck{delivery_tag, multiple});
  conn_.flush();
}

void Channel::reject(std::uint64_t delivery_tag, bool requeue) {
  if (Unsettled* u = find_unsettled(delivery_tag)) u->settled = true;
  amqp::write_method(conn_.out(), id_, amqp::BasicReject{delivery_tag, requeue});
  conn_.flush();
}

// Every tracked delivery below the first unsettled one is settled: acked
// before, rejected before, or in acks_ now. So one ack multiple=true with the
// greatest of acks_ below it acks exactly those of acks_ (and nothing the
// caller still holds); deliveries to no_ack consumers are not unacked at all.
void Channel::write_acks() {
  if (acks_.empty()) return;
  drop_settled();
  const std::uint64_t first_unsettled =
      unsettled_.empty() ? std::numeric_limits<std::uint64_t>::max() : unsettled_.front().tag;
  std::sort(acks_.begin(), acks_.end());
  auto above = std::lower_bound(acks_.begin(), acks_.end(), first_unsettled);
  std::string& out = conn_.out();
  if (above != acks_.begin()) amqp::write_method(out, id_, amqp::BasicAck{*(above - 1), above - acks_.begin() > 1});
  for (auto it = above; it != acks_.end(); ++it) amqp::write_method(out, id_, amqp::BasicAck{*it, false});
  acks_.clear();
  if (unsettled_.size() >= compact_at_) {
    std::erase_if(unsettled_, [](const Unsettled& u) { return u.settled; });
    compact_at_ = std::max(kMinCompact, 2 * unsettled_.size());
  }
}

Channel::Unsettled* Channel::find_unsettled(std::uint64_t tag) {
  auto it = std::lower_bound(unsettled_.begin(), unsettled_.end(), tag,
                             [](const Unsettled& u, std::uint64_t t) { return u.tag < t; });
  return it != unsettled_.end() && it->tag == tag ? &*it : nullptr;
}

void Channel::drop_settled() {
  while (!unsettled_.empty() && unsettled_.front().settled) unsettled_.pop_front();
}

void Channel::fail(const AmqpError& error) {
  open_ = false;
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& p : pending) p.done(std::make_exception_ptr(error), {});
  auto confirms = std::move(confirms_);
  confirms_.clear();
  for (auto& [seq, fn] : confirms) fn(std::make_exception_ptr(error));
  consumers_.clear();
  unsettled_.clear();
  acks_.clear();
  incoming_.reset();
}

void Channel::on_frame(const amqp::Frame& f) {
  switch (f.type) {
    case amqp::FrameType::kMethod: {
      amqp::Method m;
      try {
        m = amqp::decode_method(f.payload);
      } catch (const amqp::DecodeError& e) {
        conn_.fail(std::string("malformed method from server: ") + e.what());
        return;
      }
      on_method(m);
      return;
    }
    case amqp::FrameType::kHeader: {
      if (!incoming_ || incoming_header_) {
        conn_.fail("unexpected content header from server");
        return;
      }
      try {
        auto h = amqp::decode_content_header(f.payload);
        incoming_->properties = incoming_headers_ == HeadersForm::kEncoded
                                    ? amqp::decode_properties(h.properties, incoming_->encoded_headers)
                                    : amqp::decode_properties(h.properties);
        incoming_size_ = h.body_size;
        incoming_->body.reserve(h.body_size);
      } catch (const amqp::DecodeError& e) {
        conn_.fail(std::string("malformed content header: ") + e.what());
        return;
      }
      incoming_header_ = true;
      deliver_if_complete();
      return;
    }
    case amqp::FrameType::kBody:
      if (!incoming_ || !incoming_header_) {
        conn_.fail("unexpected content body from server");
        return;
      }
      incoming_->body.append(f.payload);
      deliver_if_complete();
      return;
    case amqp::FrameType::kHeartbeat:
      return;
  }
}

void Channel::deliver_if_complete() {
  if (!incoming_ || !incoming_header_ || incoming_->body.size() < incoming_size_) return;
  Delivery d = std::move(*incoming_);
  incoming_.reset();
  incoming_header_ = false;
  if (incoming_is_return_) {
    spdlog::warn("message returned by the broker (exchange '{}', routing key '{}')", d.exchange, d.routing_key);
    return;
  }
  auto it = consumers_.find(d.consumer_tag);
  if (it == consumers_.end()) return;  // cancelled meanwhile: the broker requeues it when we close
  it->second.fn(std::move(d));
}

void Channel::on_method(const amqp::Method& m) {
  if (auto* d = std::get_if<amqp::BasicDeliver>(&m)) {
    incoming_.emplace();
    incoming_->consumer_tag = d->consumer_tag;
    incoming_->delivery_tag = d->delivery_tag;
    incoming_->redelivered = d->redelivered;
    incoming_->exchange = d->exchange;
    incoming_->routing_key = d->routing_key;
    incoming_header_ = false;
    incoming_is_return_ = false;
    // Unacked at the broker unless its consumer is no_ack (one cancelled
    // meanwhile counts as unacked: it is never acked, so never covered).
    auto c = consumers_.find(d->consumer_tag);
    if (c == consumers_.end() || !c->second.no_ack) unsettled_.push_back(Unsettled{d->delivery_tag, false});
    incoming_headers_ = c == consumers_.end() ? HeadersForm::kDecoded : c->second.headers;
    incoming_size_ = 0;
    return;
  }
  if (auto* r = std::get_if<amqp::BasicReturn>(&m)) {
    incoming_.emplace();
    incoming_->exchange = r->exchange;
    incoming_->routing_key = r->routing_key;
    incoming_header_ = false;
    incoming_is_return_ = true;
    incoming_headers_ = HeadersForm::kDecoded;
    return;
  }
  if (auto* c = std::get_if<amqp::ChannelClose>(&m)) {
    AmqpError err(c->reply_code, std::string(c->reply_text));
    amqp::write_method(conn_.out(), id_, amqp::ChannelCloseOk{});
    conn_.flush();
    spdlog::warn("channel {} closed by the broker: {} {}", id_, c->reply_code, c->reply_text);
    fail(err);
    if (on_closed_) on_closed_(err);
    return;
  }
  if (auto* c = std::get_if<amqp::ConnectionClose>(&m)) {
    std::string text = std::to_string(c->reply_code) + " " + std::string(c->reply_text);
    amqp::write_method(conn_.out(), 0, amqp::ConnectionCloseOk{});
    conn_.flush();
    conn_.fail("connection closed by the broker: " + text);
    return;
  }
  if (auto* c = std::get_if<amqp::BasicCancel>(&m)) {
    spdlog::warn("consumer {} cancelled by the broker", c->consumer_tag);
    auto it = consumers_.find(c->consumer_tag);
    if (it != consumers_.end()) consumers_.erase(it);
    if (!c->no_wait) amqp::write_method(conn_.out(), id_, amqp::BasicCancelOk{c->consumer_tag});
    conn_.flush();
    if (on_closed_) on_closed_(AmqpError(0, "consumer cancelled by the broker"));
    return;
  }
  if (auto* a = std::get_if<amqp::BasicAck>(&m)) {
    on_confirm(a->delivery_tag, a->multiple, true);
    return;
  }
  if (auto* n = std::get_if<amqp::BasicNack>(&m)) {
    on_confirm(n->delivery_tag, n->multiple, false);
    return;
  }
  if (auto* f = std::get_if<amqp::ChannelFlow>(&m)) {
    amqp::write_method(conn_.out(), id_, amqp::ChannelFlowOk{f->active});
    conn_.flush();
    return;
  }
  if (std::holds_alternative<amqp::ConnectionBlocked>(m) || std::holds_alternative<amqp::ConnectionUnblocked>(m))
    return;
  if (pending_.empty()) {
    spdlog::warn("unexpected {} on channel {}", amqp::method_name(m), id_);
    return;
  }
  Pending p = std::move(pending_.front());
  pending_.pop_front();
  try {
    std::string s = p.extract(m);
    p.done(nullptr, std::move(s));
  } catch (...) {
    p.done(std::current_exception(), {});
  }
}

}  // namespace mb::client
