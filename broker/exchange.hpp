// Exchanges and routing: (exchange, routing key, headers) -> destinations.
//
// Pure: no I/O, no bytes. Each exchange type matches its bindings; the vhost
// follows exchange-to-exchange bindings and alternate exchanges (vhost.cpp).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/queue.hpp"
#include "broker/string_map.hpp"
#include "common/amqp/field_table.hpp"

namespace mb::broker {

class Exchange;
using ExchangePtr = std::shared_ptr<Exchange>;

enum class ExchangeType { kDirect, kFanout, kTopic, kHeaders };

std::optional<ExchangeType> parse_exchange_type(std::string_view name);
std::string_view exchange_type_name(ExchangeType t);

// A binding's destination: a queue, or an exchange (exchange.bind).
struct Destination {
  QueuePtr queue;
  ExchangePtr exchange;
  bool operator==(const Destination& o) const { return queue == o.queue && exchange == o.exchange; }
  const std::string& name() const;
};

struct Binding {
  Destination destination;
  std::string routing_key;
  amqp::FieldTable arguments;
  bool operator==(const Binding& o) const {
    return destination == o.destination && routing_key == o.routing_key && arguments == o.arguments;
  }
};

// Topic pattern matching: '*' is exactly one word, '#' zero or more.
bool topic_matches(std::string_view pattern, std::string_view routing_key);
// Headers matching with x-match all/any (and all-with-x/any-with-x).
bool headers_match(const amqp::FieldTable& binding_args, const amqp::FieldTable* message_headers);

class Exchange {
 public:
  Exchange(std::string name, ExchangeType type, bool durable, bool auto_delete, bool internal,
           amqp::FieldTable arguments);

  const std::string& name() const { return name_; }
  ExchangeType type() const { return type_; }
  // For x-delayed-message the routing type is x-delayed-type; type_name() says "x-delayed-message".
  std::string_view type_name() const;
  bool durable() const { return durable_; }
  bool auto_delete() const { return auto_delete_; }
  bool internal() const { return internal_; }
  bool delayed() const { return delayed_; }
  void set_delayed(bool d) { delayed_ = d; }
  const amqp::FieldTable& arguments() const { return arguments_; }
  const std::optional<std::string>& alternate_exchange() const { return alternate_; }

  bool bind(Binding b);  // false if the same binding exists
  bool unbind(const Binding& b);
  // Removes every binding to the destination; returns how many.
  std::size_t unbind_all(const Destination& d);
  // Drops every binding (the exchange is going away): bindings own their destinations, so
  // exchange-to-exchange bindings can form cycles (a -> b -> a, a -> a) that only this breaks.
  void clear_bindings();
  const std::vector<Binding>& bindings() const { return bindings_; }
  bool has_bindings() const { return !bindings_.empty(); }
  bool needs_headers() const { return type_ == ExchangeType::kHeaders; }

  // Appends matching destinations (possibly with duplicates) to out.
  void route(std::string_view routing_key, const amqp::FieldTable* headers, std::vector<const Destination*>& out) const;

 private:
  std::string name_;
  ExchangeType type_;
  bool durable_;
  bool auto_delete_;
  bool internal_;
  bool delayed_ = false;
  amqp::FieldTable arguments_;
  std::optional<std::string> alternate_;
  std::vector<Binding> bindings_;
  StringMap<std::vector<std::size_t>> direct_;  // routing key -> binding indexes
  void reindex();
};

}  // namespace mb::broker
