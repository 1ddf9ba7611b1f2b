// The management API's data and commands, as plain functions over the broker's
// objects: JSON in RabbitMQ's shapes (field names of RabbitMQ 3.10's
// management plugin), no HTTP. Every function here runs on the broker's loop
// (the HTTP handlers post them there); unit tests call them directly on a
// Vhost built in-process (tests/unit/mgmt_snapshot_test.cpp).
//
// Beyond RabbitMQ: browse_queue() lists a queue's messages without consuming
// them (ready, unacked with the consumer holding them, delayed with their due
// time), delete_message() removes one ready message, and queue_json() carries
// the age of the oldest ready and oldest unacked message.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/channel.hpp"
#include "broker/exchange.hpp"
#include "broker/queue.hpp"
#include "broker/vhost.hpp"
#include "common/amqp/field_table.hpp"

namespace mb::broker {
class Broker;
class Connection;
}  // namespace mb::broker

namespace mb::mgmt {

using json = nlohmann::json;
using broker::Broker;
using broker::Channel;
using broker::Connection;
using broker::Exchange;
using broker::Queue;
using broker::Vhost;

// "Node" name reported where RabbitMQ reports its Erlang node.
inline constexpr const char* kNodeName = "minibroker@localhost";
// The management API version whose shapes we follow (tools read it to pick a dialect).
inline constexpr const char* kManagementVersion = "3.10.0";
// RabbitMQ's collect_statistics_interval default: rates are computed over this.
inline constexpr std::int64_t kRateSampleMs = 5000;
// Messages a browse returns at most per section when the caller gives no limit.
inline constexpr std::size_t kDefaultBrowseLimit = 100;
// Body bytes a browse shows per message (get has its own "truncate").
inline constexpr std::size_t kBrowsePayloadBytes = 1024;

// Field tables <-> JSON the way RabbitMQ renders them (integers as numbers,
// strings as strings, nested tables as objects, byte arrays as strings).
json to_json(const amqp::FieldTable& t);
// JSON arguments from a request body -> field table; nullopt when a value has
// no AMQP equivalent (null).
std::optional<amqp::FieldTable> table_from_json(const json& j);
// Basic properties as RabbitMQ's "properties" object (absent fields omitted).
json properties_json(std::string_view encoded_properties);

// Message counters sampled every kRateSampleMs, giving the publish, deliver
// and ack rates per queue and in total (RabbitMQ's message_stats *_details.rate).
class Rates {
 public:
  struct Counters {
    std::uint64_t publish = 0, deliver = 0, ack = 0;
  };
  struct Sample {
    Counters last;
    std::int64_t at_ms = 0;
    double publish = 0, deliver = 0, ack = 0;  // per second over the last interval
  };
  // Takes a sample of every queue in the vhosts (call every kRateSampleMs).
  void sample(const std::vector<const Vhost*>& vhosts, std::int64_t now_ms);
  const Sample* find(const Queue& q) const;
  // Sum over the live queues' rates.
  Sample totals() const { return totals_; }

 private:
  struct Entry {
    std::weak_ptr<const Queue> queue;  // a freed Queue's address may be reused
    Sample sample;
  };
  std::unordered_map<const Queue*, Entry> queues_;
  Sample totals_;
};

// A view of the channels and their unacked deliveries, for browsing (the
// broker's connections in production; a test's channels in unit tests).
using ChannelList = std::vector<const Channel*>;

// --- listings (GET) ---
json queue_json(const Vhost& vh, const Queue& q, const Rates* rates, const ChannelList& channels, std::int64_t now_ms);
json exchange_json(const Vhost& vh, const Exchange& x);
// Every binding of the vhost, the default exchange's implicit ones included.
json bindings_json(const Vhost& vh);
json connection_json(const Connection& c);
json channel_json(const Connection& c, const Channel& ch);
json consumer_json(const Vhost& vh, const Channel& ch, const Connection* c, const broker::Consumer& consumer);
json vhost_json(const Vhost& vh);

// Broker-wide, for the HTTP handlers: vhost == nullptr means every vhost.
json list_queues(Broker& b, const Rates& rates, const Vhost* vhost);
json list_exchanges(Broker& b, const Vhost* vhost);
json list_bindings(Broker& b, const Vhost* vhost);
json list_connections(Broker& b);
json list_channels(Broker& b);
json list_consumers(Broker& b, const Vhost* vhost);
json list_vhosts(Broker& b);
json overview(Broker& b, const Rates& rates);
ChannelList all_channels(Broker& b);
Connection* find_connection(Broker& b, std::string_view name);

// --- browse (beyond RabbitMQ) ---
// {"ready": [...], "unacked": [...], "delayed": [...]}, each at most `limit`
// messages, in queue order; positions count from 0 at the head of ready.
json browse_queue(const Vhost& vh, const Queue& q, const ChannelList& channels, std::int64_t now_ms, std::size_t limit);

// --- commands ---
// An outcome with RabbitMQ's HTTP status and, for errors, its JSON body.
struct Outcome {
  int status = 204;
  json body;  // empty for 201/204
};
Outcome error_outcome(int status, std::string reason);

Outcome put_queue(Vhost& vh, const std::string& name, const json& body);
Outcome delete_queue(Vhost& vh, const std::string& name, bool if_unused, bool if_empty);
Outcome purge_queue(Vhost& vh, const std::string& name);
Outcome put_exchange(Vhost& vh, const std::string& name, const json& body);
Outcome delete_exchange(Vhost& vh, const std::string& name, bool if_unused);
// POST .../get: {"count", "ackmode", "encoding", "truncate"}.
Outcome get_messages(Vhost& vh, broker::VhostEnv& env, const std::string& queue, const json& body);
// POST /api/exchanges/.../publish: {"routing_key", "payload", "payload_encoding", "properties"}.
Outcome publish_message(Vhost& vh, broker::VhostEnv& env, const std::string& exchange, const json& body);
// Deletes one ready message, chosen by {"position": n} or {"message_id": "..."}.
Outcome delete_message(Vhost& vh, const std::string& queue, const json& body);

}  // namespace mb::mgmt
