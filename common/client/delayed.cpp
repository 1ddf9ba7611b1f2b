// delayed.cpp: the delayed exchange: probe, declare and bind, x-delay.
#include "common/client/delayed.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "common/task/message.hpp"

namespace mb::client {
namespace {

// The plugin keeps x-delay in an unsigned 32-bit timer: about 49.7 days.
constexpr double kMaxDelayMs = 4294967295.0;

amqp::FieldTable delayed_arguments() {
  amqp::FieldTable args;
  args.set("x-delayed-type", "direct");
  return args;
}

}  // namespace

DelayMode parse_delay_mode(std::string_view text) {
  if (text == "auto") return DelayMode::kAuto;
  if (text == "broker") return DelayMode::kBroker;
  if (text == "worker") return DelayMode::kWorker;
  throw std::invalid_argument("delay mode must be auto, broker or worker, not '" + std::string(text) + "'");
}

asio::awaitable<bool> probe_delayed_exchange(asio::io_context& io, ConnectionOptions options) {
  options.heartbeat = 0;
  options.connection_name += " (delayed exchange probe)";
  auto conn = Connection::create(io, options);
  co_await conn->open();  // a failure to connect propagates: the caller retries later
  bool supported = false;
  try {
    Channel* ch = co_await conn->open_channel();
    const amqp::FieldTable args = delayed_arguments();
    co_await ch->exchange_declare(kDelayedExchange, kDelayedExchangeType, true, false, args);
    supported = true;
  } catch (const AmqpError& e) {
    spdlog::debug("delayed exchange probe: {} ({})", e.what(), e.code());
  }
  if (conn->is_open()) co_await conn->close();
  co_return supported;
}

asio::awaitable<void> bind_delayed(Channel& ch, std::string_view queue) {
  const amqp::FieldTable args = delayed_arguments();
  co_await ch.exchange_declare(kDelayedExchange, kDelayedExchangeType, true, false, args);
  co_await ch.queue_bind(queue, kDelayedExchange, queue);
}

void set_delay(amqp::BasicProperties& properties, double due) {
  const double ms = std::clamp(std::ceil((due - task::unix_now()) * 1000.0), 0.0, kMaxDelayMs);
  if (!properties.headers) properties.headers.emplace();
  properties.headers->set("x-delay", static_cast<std::int64_t>(ms));
}

}  // namespace mb::client
