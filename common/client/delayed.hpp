// delayed.hpp: delayed delivery through the broker, for countdowns, etas and
// retries: the x-delayed-message exchange type (minibroker; RabbitMQ with the
// rabbitmq_delayed_message_exchange plugin). A message published to it with an
// `x-delay` header (milliseconds) is routed, as by a direct exchange, once the
// delay has passed; each task queue is bound to it under its own name.
// Brokers without the type (Debian's rabbitmq-server) get the eta header only,
// and the worker holds such a message unacked until due (Celery's way).
#pragma once

#include <asio.hpp>
#include <string_view>

#include "common/amqp/properties.hpp"
#include "common/client/connection.hpp"

namespace mb::client {

inline constexpr std::string_view kDelayedExchange = "miniworker.delayed";
inline constexpr std::string_view kDelayedExchangeType = "x-delayed-message";
// Countdowns shorter than this are not worth a trip through the exchange.
inline constexpr double kMinBrokerDelay = 0.05;  // seconds

// Where a message that is due later waits.
enum class DelayMode {
  kAuto,    // the broker's delayed exchange if it has one, else the worker
  kBroker,  // the broker's delayed exchange; an error if it has none
  kWorker,  // the worker, holding it unacked until due
};

// "auto", "broker", "worker"; throws std::invalid_argument.
DelayMode parse_delay_mode(std::string_view text);

// Whether the broker has the x-delayed-message type: declares kDelayedExchange
// on a short-lived connection of its own, because RabbitMQ answers an unknown
// exchange type by closing the whole connection (503; 3.11+ the channel, 406).
// Throws AmqpError with code 0 when it cannot connect at all.
asio::awaitable<bool> probe_delayed_exchange(asio::io_context& io, ConnectionOptions options);

// Declares kDelayedExchange on ch (durable, direct routing) and binds queue to it.
asio::awaitable<void> bind_delayed(Channel& ch, std::string_view queue);

// Sets the x-delay header for a message due at `due` (unix seconds), rounded
// up, clamped to what the plugin accepts (a message due later than that comes
// back early and is delayed again by the worker).
void set_delay(amqp::BasicProperties& properties, double due);

}  // namespace mb::client
