// AMQP errors raised while handling a peer's method.
//
// Handlers throw AmqpError; the connection's dispatcher catches it at one place
// and turns it into channel.close (soft errors) or connection.close (hard
// errors) with the class and method ids of the offending method, plus a log
// line. Text follows RabbitMQ: "NOT_FOUND - no queue 'q' in vhost '/'".
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/amqp/methods.gen.hpp"

namespace mb::broker {

using amqp::ReplyCode;

class AmqpError : public std::runtime_error {
 public:
  AmqpError(ReplyCode code, std::string text, bool connection_level)
      : std::runtime_error(text), code_(code), connection_level_(connection_level) {}
  ReplyCode code() const { return code_; }
  bool connection_level() const { return connection_level_; }
  // "CODE_NAME - text", as RabbitMQ writes reply texts.
  std::string reply_text() const {
    return fmt::format("{} - {}", amqp::reply_code_name(static_cast<std::uint16_t>(code_)), what());
  }

 private:
  ReplyCode code_;
  bool connection_level_;
};

template <typename... Args>
[[noreturn]] void channel_error(ReplyCode code, fmt::format_string<Args...> f, Args&&... args) {
  throw AmqpError(code, fmt::format(f, std::forward<Args>(args)...), false);
}

template <typename... Args>
[[noreturn]] void connection_error(ReplyCode code, fmt::format_string<Args...> f, Args&&... args) {
  throw AmqpError(code, fmt::format(f, std::forward<Args>(args)...), true);
}

}  // namespace mb::broker
