// channel.hpp: one AMQP channel of a client Connection: synchronous methods
// as awaitables (replies matched in order, as the spec guarantees per channel),
// asynchronous ones (publish, ack, reject) as plain calls, and content
// assembly for deliveries. Channel 0 uses the same machinery for the
// connection handshake.
#pragma once

#include <asio.hpp>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "common/amqp/field_table.hpp"
#include "common/amqp/frame.hpp"
#include "common/amqp/methods.gen.hpp"
#include "common/amqp/properties.hpp"

namespace mb::client {

class Connection;

// The server closed the channel or connection (reply code and text), or the
// connection was lost (code 0).
class AmqpError : public std::runtime_error {
 public:
  AmqpError(std::uint16_t code, const std::string& text) : std::runtime_error(text), code_(code) {}
  std::uint16_t code() const { return code_; }

 private:
  std::uint16_t code_;
};

struct Delivery {
  std::string consumer_tag;
  std::uint64_t delivery_tag = 0;
  bool redelivered = false;
  std::string exchange;
  std::string routing_key;
  amqp::BasicProperties properties;
  // From a consumer with HeadersForm::kEncoded: the headers table as sent,
  // length prefix included (properties.headers is then empty); see decode_headers.
  std::string encoded_headers;
  std::string body;
};

// How a consumer's deliveries carry the message headers.
enum class HeadersForm {
  kDecoded,  // in properties.headers
  kEncoded,  // in encoded_headers, for a reader of a few keys (decoding a whole table allocates for every entry)
};

// Moves a delivery's encoded headers into properties.headers (to re-publish
// it, say); throws amqp::DecodeError when they are malformed.
void decode_headers(Delivery& d);

struct QueueOptions {
  bool durable = false;
  bool exclusive = false;
  bool auto_delete = false;
  bool passive = false;
  amqp::FieldTable arguments;
};

// unsettled_ is compacted (settled entries behind a long-unsettled one
// dropped) when it grows past this many entries, at least.
inline constexpr std::size_t kMinCompact = 1024;

class Channel {
 public:
  using DeliveryFn = std::function<void(Delivery&&)>;
  // Extracts what the caller needs from the reply while its bytes are alive;
  // throws AmqpError if the method is not the expected reply.
  using Extract = std::function<std::string(const amqp::Method&)>;

  Channel(Connection& conn, std::uint16_t id) : conn_(conn), id_(id) {}  // conn: HELD NOT OWNED (owns us)
  std::uint16_t id() const { return id_; }
  bool is_open() const { return open_; }

  asio::awaitable<void> qos(std::uint16_t prefetch_count, bool global = false);
  asio::awaitable<std::string> queue_declare(std::string_view name, const QueueOptions& options);
  asio::awaitable<void> exchange_declare(std::string_view name, std::string_view type, bool durable,
                                         bool auto_delete, const amqp::FieldTable& arguments);
  asio::awaitable<void> queue_delete(std::string_view name);
  asio::awaitable<void> queue_bind(std::string_view queue, std::string_view exchange, std::string_view routing_key);
  asio::awaitable<std::string> consume(std::string_view queue, std::string_view tag, bool no_ack, const DeliveryFn& fn,
                                       HeadersForm headers = HeadersForm::kDecoded);
  asio::awaitable<void> cancel(std::string_view tag);
  asio::awaitable<void> close();
  // Puts the channel in publisher-confirm mode (confirm.select).
  asio::awaitable<void> confirm_select();

  void publish(std::string_view exchange, std::string_view routing_key, const amqp::BasicProperties& properties,
               std::string_view body);
  // In confirm mode: publishes, then completes when the broker confirms the
  // message; throws AmqpError when it nacks it or the channel goes away first.
  // The arguments are used before the first suspension only.
  asio::awaitable<void> publish_confirmed(std::string_view exchange, std::string_view routing_key,
                                          const amqp::BasicProperties& properties, std::string_view body);
  // A single ack is gathered with the others of the same loop turn and written
  // at its end (see write_acks): nothing else changes for the caller.
  void ack(std::uint64_t delivery_tag, bool multiple = false);
  void reject(std::uint64_t delivery_tag, bool requeue);

  // Called when the server closes this channel (after close-ok is sent).
  void on_closed(std::function<void(const AmqpError&)> fn) { on_closed_ = std::move(fn); }

  // --- for Connection --------------------------------------------------------
  // Coroutine parameters are references to the caller's named objects: GCC 12
  // destroys non-trivial temporaries in a co_await expression twice, so
  // callers never pass temporaries such as lambdas or tables here.
  template <typename M>
  asio::awaitable<std::string> call(const M& method, const Extract& extract);
  // Registers a waiter for a reply that is not a response to a request of ours
  // (connection.start), then runs `send`.
  asio::awaitable<std::string> expect(const Extract& extract, const std::function<void()>& send);
  void on_frame(const amqp::Frame& f);
  void fail(const AmqpError& error);
  void mark_open() { open_ = true; }
  void send_bytes(std::string_view bytes);
  // Writes the acks gathered this turn: one basic.ack multiple=true for those
  // below the oldest delivery still unsettled (RabbitMQ's batching), single
  // acks for the others. Called by the Connection just before it writes.
  void write_acks();

 private:
  struct Pending {
    Extract extract;
    std::function<void(std::exception_ptr, std::string)> done;
  };
  using ConfirmFn = std::function<void(std::exception_ptr)>;
  void on_method(const amqp::Method& m);
  void deliver_if_complete();
  void on_confirm(std::uint64_t tag, bool multiple, bool ack);
  struct Consumer {
    DeliveryFn fn;
    bool no_ack = false;
    HeadersForm headers = HeadersForm::kDecoded;
  };
  // A delivery the broker holds unacked, by tag; settled once acked or rejected.
  struct Unsettled {
    std::uint64_t tag;
    bool settled;
  };
  Unsettled* find_unsettled(std::uint64_t tag);
  void drop_settled();

  Connection& conn_;
  std::uint16_t id_;
  bool open_ = false;
  std::deque<Pending> pending_;
  std::map<std::string, Consumer, std::less<>> consumers_;
  std::deque<Unsettled> unsettled_;  // deliveries not yet acked or rejected, in tag order
  std::size_t compact_at_ = kMinCompact;  // unsettled_ size at which settled entries are dropped
  std::vector<std::uint64_t> acks_;  // single acks gathered this turn, not yet written
  std::optional<Delivery> incoming_;  // delivery being assembled
  std::uint64_t incoming_size_ = 0;
  bool incoming_header_ = false;
  bool incoming_is_return_ = false;
  HeadersForm incoming_headers_ = HeadersForm::kDecoded;
  bool confirm_mode_ = false;
  std::uint64_t publish_seq_ = 0;            // confirm mode: sequence number of the last publish
  std::map<std::uint64_t, ConfirmFn> confirms_;  // awaiting basic.ack / basic.nack, by sequence number
  std::function<void(const AmqpError&)> on_closed_;
};

}  // namespace mb::client

// ---- template definitions ----------------------------------------------------
namespace mb::client {

// The Extract for a reply of type R that carries nothing the caller needs.
template <typename R>
Channel::Extract expect_reply() {
  return [](const amqp::Method& m) -> std::string {
    if (!std::holds_alternative<R>(m))
      throw AmqpError(505, std::string("UNEXPECTED_FRAME - expected ") + std::string(R::kName) + ", got " +
                               std::string(amqp::method_name(m)));
    return {};
  };
}

template <typename M>
asio::awaitable<std::string> Channel::call(const M& method, const Extract& extract) {
  std::string frame;
  amqp::write_method(frame, id_, method);  // encoded now: method's views may dangle after suspension
  const std::function<void()> send = [this, &frame] { send_bytes(frame); };
  std::string result = co_await expect(extract, send);
  co_return result;
}

}  // namespace mb::client
