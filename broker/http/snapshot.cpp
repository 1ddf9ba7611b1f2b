// The management API's data and commands over broker objects. See snapshot.hpp.
#include "broker/http/snapshot.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <limits>

#include "broker/broker.hpp"
#include "broker/connection.hpp"
#include "broker/errors.hpp"
#include "common/base64.hpp"
#include "common/amqp/properties.hpp"

namespace mb::mgmt {
namespace {

using broker::AmqpError;
using broker::ReplyCode;

// RabbitMQ's path name for the default exchange, whose real name is "".
constexpr std::string_view kDefaultExchangeAlias = "amq.default";
// Largest "count" a get may ask for: RabbitMQ has no cap, but a request
// holding the loop for millions of messages would stall every client.
constexpr std::int64_t kMaxGetCount = 10000;

json rate(double r) { return json{{"rate", r}}; }

std::string_view exchange_name_from_path(std::string_view name) {
  return name == kDefaultExchangeAlias ? std::string_view() : name;
}

// "host:port" -> (host, port); IPv6 hosts keep their colons.
std::pair<std::string, int> split_host_port(std::string_view s) {
  const std::size_t colon = s.rfind(':');
  if (colon == std::string_view::npos) return {std::string(s), 0};
  int port = 0;
  std::from_chars(s.data() + colon + 1, s.data() + s.size(), port);
  return {std::string(s.substr(0, colon)), port};
}

// Valid UTF-8 bodies are shown as strings, others base64, as RabbitMQ's "auto".
bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    i += n;
  }
  return true;
}

void put_payload(json& j, std::string_view body, bool force_base64) {
  if (!force_base64 && valid_utf8(body)) {
    j["payload"] = std::string(body);
    j["payload_encoding"] = "string";
  } else {
    j["payload"] = base64_encode(body);
    j["payload_encoding"] = "base64";
  }
}

json field_value_json(const amqp::FieldValue& v) {
  return std::visit(
      [](const auto& x) -> json {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, amqp::Void>) {
          return nullptr;
        } else if constexpr (std::is_same_v<T, amqp::Decimal>) {
          double d = x.value;
          for (int i = 0; i < x.scale; ++i) d /= 10;
          return d;
        } else if constexpr (std::is_same_v<T, amqp::FieldArray>) {
          json a = json::array();
          for (const auto& e : x) a.push_back(field_value_json(e));
          return a;
        } else if constexpr (std::is_same_v<T, amqp::Timestamp>) {
          return x.seconds;
        } else if constexpr (std::is_same_v<T, amqp::FieldTable>) {
          return to_json(x);
        } else if constexpr (std::is_same_v<T, amqp::ByteArray>) {
          return x.bytes;
        } else if constexpr (std::is_same_v<T, std::string>) {
          return valid_utf8(x) ? json(x) : json(base64_encode(x));
        } else {
          return x;
        }
      },
      v.v);
}

std::optional<amqp::FieldValue> field_value_from_json(const json& j) {
  switch (j.type()) {
    case json::value_t::boolean: return amqp::FieldValue(j.get<bool>());
    case json::value_t::number_integer: return amqp::FieldValue(j.get<std::int64_t>());
    case json::value_t::number_unsigned: {
      const auto u = j.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return std::nullopt;
      return amqp::FieldValue(static_cast<std::int64_t>(u));
    }
    case json::value_t::number_float: return amqp::FieldValue(j.get<double>());
    case json::value_t::string: return amqp::FieldValue(j.get<std::string>());
    case json::value_t::object: {
      std::optional<amqp::FieldTable> t = table_from_json(j);
      if (!t) return std::nullopt;
      return amqp::FieldValue(std::move(*t));
    }
    case json::value_t::array: {
      amqp::FieldArray a;
      for (const auto& e : j) {
        std::optional<amqp::FieldValue> v = field_value_from_json(e);
        if (!v) return std::nullopt;
        a.push_back(std::move(*v));
      }
      return amqp::FieldValue(std::move(a));
    }
    default: return std::nullopt;
  }
}

Outcome from_amqp_error(const AmqpError& e) {
  // RabbitMQ's management plugin answers a refused declare or delete with 400
  // (precondition, e.g. inequivalent arguments), 403 (access), 404, 405 (locked).
  switch (e.code()) {
    case ReplyCode::kNotFound: return error_outcome(404, e.what());
    case ReplyCode::kAccessRefused: return error_outcome(403, e.what());
    case ReplyCode::kResourceLocked: return error_outcome(405, e.what());
    default: return error_outcome(400, e.what());
  }
}

// A bool field of a request body: absent -> fallback; non-bool -> nullopt.
std::optional<bool> body_bool(const json& body, const char* key, bool fallback) {
  auto it = body.find(key);
  if (it == body.end()) return fallback;
  if (!it->is_boolean()) return std::nullopt;
  return it->get<bool>();
}

// Oldest enqueue time among a queue's ready messages (0: none known).
std::int64_t oldest_ready_at(const Queue& q) {
  std::int64_t oldest = 0;
  for (const auto& level : q.ready_levels())
    for (const auto& e : level) {
      if (e.enqueued_at == 0) continue;  // restored from the store: unknown
      if (oldest == 0 || e.enqueued_at < oldest) oldest = e.enqueued_at;
      break;  // each level is in queue order: its first known entry is its oldest
    }
  return oldest;
}

json age(std::int64_t since_ms, std::int64_t now_ms) {
  return since_ms == 0 ? json(nullptr) : json(std::max<std::int64_t>(0, now_ms - since_ms));
}

// Queue -> oldest enqueue time of its unacked deliveries, over every channel.
std::unordered_map<const Queue*, std::int64_t> oldest_unacked(const ChannelList& channels) {
  std::unordered_map<const Queue*, std::int64_t> out;
  for (const Channel* ch : channels)
    ch->visit_unacked([&](std::uint64_t, const Queue& q, const broker::Consumer*, const broker::QueueEntry& e) {
      if (e.enqueued_at == 0) return;
      auto [it, added] = out.emplace(&q, e.enqueued_at);
      if (!added && e.enqueued_at < it->second) it->second = e.enqueued_at;
    });
  return out;
}

json queue_json_with(const Vhost& vh, const Queue& q, const Rates* rates, std::int64_t oldest_unacked_at,
                     std::int64_t now_ms) {
  const std::size_t ready = q.ready_count(), unacked = q.unacked_count();
  const Rates::Sample* r = rates ? rates->find(q) : nullptr;
  json stats = {
      {"publish", q.published},         {"publish_details", rate(r ? r->publish : 0)},
      {"deliver_get", q.delivered},     {"deliver_get_details", rate(r ? r->deliver : 0)},
      {"ack", q.acked},                 {"ack_details", rate(r ? r->ack : 0)},
  };
  json consumer_tag = nullptr;
  for (const broker::Consumer* c : q.consumers())
    if (c->exclusive) consumer_tag = c->tag;
  return json{
      {"name", q.name()},
      {"vhost", vh.name()},
      {"durable", q.durable()},
      {"auto_delete", q.auto_delete()},
      {"exclusive", q.exclusive()},
      {"arguments", to_json(q.raw_args())},
      {"type", "classic"},
      {"state", "running"},
      {"node", kNodeName},
      {"policy", nullptr},
      {"exclusive_consumer_tag", consumer_tag},
      {"consumers", q.consumer_count()},
      {"messages", ready + unacked},
      {"messages_details", rate(0)},
      {"messages_ready", ready},
      {"messages_ready_details", rate(0)},
      {"messages_unacknowledged", unacked},
      {"messages_unacknowledged_details", rate(0)},
      {"message_bytes_ready", q.ready_bytes()},
      // What the ready messages' bodies hold; the closest honest figure to
      // RabbitMQ's per-process memory (bodies shared between queues count in each).
      {"memory", q.ready_bytes()},
      {"message_stats", std::move(stats)},
      {"oldest_ready_age_ms", age(oldest_ready_at(q), now_ms)},
      {"oldest_unacked_age_ms", age(oldest_unacked_at, now_ms)},
  };
}

json message_json(const broker::Message& m, std::size_t max_payload) {
  json j = {{"message_id_internal", m.id},
            {"exchange", m.exchange()},
            {"routing_key", m.routing_key()},
            {"payload_bytes", m.body_size()},
            {"properties", properties_json(m.properties())}};
  const bool truncated = m.body_size() > max_payload;
  put_payload(j, m.body().substr(0, max_payload), false);
  j["payload_truncated"] = truncated;
  return j;
}

std::vector<const Vhost*> vhost_list(Broker& b) {
  std::vector<const Vhost*> out;
  for (const auto& [_, vh] : b.vhosts()) out.push_back(vh.get());
  return out;
}

}  // namespace

json to_json(const amqp::FieldTable& t) {
  json j = json::object();
  for (const auto& e : t.entries) j[e.name] = field_value_json(e.value);
  return j;
}

std::optional<amqp::FieldTable> table_from_json(const json& j) {
  if (j.is_null()) return amqp::FieldTable{};
  if (!j.is_object()) return std::nullopt;
  amqp::FieldTable t;
  for (const auto& [k, v] : j.items()) {
    std::optional<amqp::FieldValue> fv = field_value_from_json(v);
    if (!fv) return std::nullopt;
    t.entries.push_back(amqp::FieldEntry{k, std::move(*fv)});
  }
  return t;
}

json properties_json(std::string_view encoded) {
  json j = json::object();
  amqp::BasicProperties p;
  try {
    p = amqp::decode_properties(encoded);
  } catch (const std::exception&) {
    return j;  // the broker accepted it; show what it can
  }
  auto put = [&j](const char* key, const auto& opt) {
    if (opt) j[key] = *opt;
  };
  put("content_type", p.content_type);
  put("content_encoding", p.content_encoding);
  if (p.headers) j["headers"] = to_json(*p.headers);
  put("delivery_mode", p.delivery_mode);
  put("priority", p.priority);
  put("correlation_id", p.correlation_id);
  put("reply_to", p.reply_to);
  put("expiration", p.expiration);
  put("message_id", p.message_id);
  put("timestamp", p.timestamp);
  put("type", p.type);
  put("user_id", p.user_id);
  put("app_id", p.app_id);
  put("cluster_id", p.cluster_id);
  return j;
}

// --- Rates ---

void Rates::sample(const std::vector<const Vhost*>& vhosts, std::int64_t now_ms) {
  Sample totals;
  totals.at_ms = now_ms;
  std::unordered_map<const Queue*, Entry> next;
  for (const Vhost* vh : vhosts) {
    for (const auto& [_, qp] : vh->queues()) {
      const Counters now{qp->published, qp->delivered, qp->acked};
      Entry e{qp, Sample{now, now_ms}};
      auto it = queues_.find(qp.get());
      if (it != queues_.end() && it->second.queue.lock() == qp && now_ms > it->second.sample.at_ms) {
        const Sample& prev = it->second.sample;
        const double secs = static_cast<double>(now_ms - prev.at_ms) / 1000.0;
        e.sample.publish = static_cast<double>(now.publish - prev.last.publish) / secs;
        e.sample.deliver = static_cast<double>(now.deliver - prev.last.deliver) / secs;
        e.sample.ack = static_cast<double>(now.ack - prev.last.ack) / secs;
      }
      totals.last.publish += now.publish;
      totals.last.deliver += now.deliver;
      totals.last.ack += now.ack;
      totals.publish += e.sample.publish;
      totals.deliver += e.sample.deliver;
      totals.ack += e.sample.ack;
      next.emplace(qp.get(), std::move(e));
    }
  }
  queues_.swap(next);
  totals_ = totals;
}

const Rates::Sample* Rates::find(const Queue& q) const {
  auto it = queues_.find(&q);
  if (it == queues_.end() || it->second.queue.lock().get() != &q) return nullptr;
  return &it->second.sample;
}

// --- listings ---

json queue_json(const Vhost& vh, const Queue& q, const Rates* rates, const ChannelList& channels, std::int64_t now_ms) {
  auto unacked = oldest_unacked(channels);
  auto it = unacked.find(&q);
  return queue_json_with(vh, q, rates, it == unacked.end() ? 0 : it->second, now_ms);
}

json exchange_json(const Vhost& vh, const Exchange& x) {
  return json{{"name", x.name()},
              {"vhost", vh.name()},
              {"type", std::string(x.type_name())},
              {"durable", x.durable()},
              {"auto_delete", x.auto_delete()},
              {"internal", x.internal()},
              {"arguments", to_json(x.arguments())},
              {"user_who_performed_action", "rmq-internal"}};
}

json bindings_json(const Vhost& vh) {
  json out = json::array();
  auto binding = [&vh](std::string_view source, std::string_view dest, std::string_view dest_type,
                       const std::string& key, const json& args) {
    // RabbitMQ's properties_key: the routing key, "~" plus a hash when arguments are set.
    std::string props_key = key.empty() ? "~" : key;
    if (!args.empty()) props_key += "~" + std::to_string(std::hash<std::string>{}(args.dump()) & 0xFFFFFF);
    return json{{"source", source},        {"vhost", vh.name()},       {"destination", dest},
                {"destination_type", dest_type}, {"routing_key", key}, {"arguments", args},
                {"properties_key", props_key}};
  };
  // The default exchange's implicit bindings come first, as RabbitMQ lists them.
  std::vector<std::string_view> queue_names;
  for (const auto& [name, _] : vh.queues()) queue_names.push_back(name);
  std::sort(queue_names.begin(), queue_names.end());
  for (std::string_view name : queue_names) out.push_back(binding("", name, "queue", std::string(name), json::object()));
  std::vector<const Exchange*> xs;
  for (const auto& [_, x] : vh.exchanges()) xs.push_back(x.get());
  std::sort(xs.begin(), xs.end(), [](const Exchange* a, const Exchange* b) { return a->name() < b->name(); });
  for (const Exchange* x : xs) {
    if (x->name().empty()) continue;
    for (const broker::Binding& b : x->bindings())
      out.push_back(binding(x->name(), b.destination.name(), b.destination.queue ? "queue" : "exchange",
                            b.routing_key, to_json(b.arguments)));
  }
  return out;
}

json connection_json(const Connection& c) {
  const std::string& name = c.name();
  const std::size_t arrow = name.find(" -> ");
  auto [peer_host, peer_port] = split_host_port(c.peer());
  auto [host, port] = arrow == std::string::npos ? std::pair<std::string, int>{"", 0}
                                                  : split_host_port(std::string_view(name).substr(arrow + 4));
  const Vhost* vh = c.vhost_if_open();
  return json{{"name", name},
              {"node", kNodeName},
              {"type", "network"},
              {"protocol", "AMQP 0-9-1"},
              {"auth_mechanism", "PLAIN"},
              {"ssl", false},
              {"state", c.open() ? "running" : "starting"},
              {"user", c.user()},
              {"vhost", vh ? json(vh->name()) : json(nullptr)},
              {"host", host},
              {"port", port},
              {"peer_host", peer_host},
              {"peer_port", peer_port},
              {"channels", c.channel_count()},
              {"channel_max", c.channel_max()},
              {"frame_max", c.frame_max()},
              {"timeout", c.heartbeat()},
              {"connected_at", c.connected_at_ms()},
              {"client_properties", to_json(c.client_properties())},
              {"user_provided_name", c.client_properties().find("connection_name")
                                         ? field_value_json(*c.client_properties().find("connection_name"))
                                         : json(nullptr)}};
}

json channel_json(const Connection& c, const Channel& ch) {
  auto [peer_host, peer_port] = split_host_port(c.peer());
  const Vhost* vh = c.vhost_if_open();
  return json{{"name", c.name() + " (" + std::to_string(ch.id()) + ")"},
              {"number", ch.id()},
              {"node", kNodeName},
              {"user", c.user()},
              {"vhost", vh ? json(vh->name()) : json(nullptr)},
              {"state", "running"},
              {"connection_details", {{"name", c.name()}, {"peer_host", peer_host}, {"peer_port", peer_port}}},
              {"consumer_count", ch.consumer_count()},
              {"messages_unacknowledged", ch.unacked_count()},
              {"prefetch_count", ch.prefetch_count()},
              {"global_prefetch_count", ch.global_prefetch_count()},
              {"confirm", ch.confirm_mode()},
              {"transactional", ch.tx_mode()}};
}

json consumer_json(const Vhost& vh, const Channel& ch, const Connection* c, const broker::Consumer& consumer) {
  json details = {{"number", ch.id()}, {"node", kNodeName}};
  if (c) {
    auto [peer_host, peer_port] = split_host_port(c->peer());
    details["connection_name"] = c->name();
    details["name"] = c->name() + " (" + std::to_string(ch.id()) + ")";
    details["peer_host"] = peer_host;
    details["peer_port"] = peer_port;
    details["user"] = c->user();
  }
  return json{{"consumer_tag", consumer.tag},
              {"queue", {{"name", consumer.queue ? consumer.queue->name() : ""}, {"vhost", vh.name()}}},
              {"channel_details", std::move(details)},
              {"ack_required", !consumer.no_ack},
              {"exclusive", consumer.exclusive},
              {"prefetch_count", consumer.prefetch},
              {"active", true},
              {"activity_status", "up"},
              {"arguments", consumer.priority != 0 ? json{{"x-priority", consumer.priority}} : json::object()}};
}

json vhost_json(const Vhost& vh) {
  std::size_t ready = 0, unacked = 0;
  for (const auto& [_, q] : vh.queues()) {
    ready += q->ready_count();
    unacked += q->unacked_count();
  }
  const char* description = vh.name() == "/" ? "Default virtual host" : "";
  return json{{"name", vh.name()},
              {"description", description},
              {"tags", json::array()},
              {"metadata", {{"description", description}, {"tags", json::array()}}},
              {"default_queue_type", "undefined"},
              {"tracing", false},
              {"messages", ready + unacked},
              {"messages_ready", ready},
              {"messages_unacknowledged", unacked}};
}

ChannelList all_channels(Broker& b) {
  ChannelList out;
  for (const auto& [_, c] : b.connections())
    for (const auto& [__, ch] : c->channels()) out.push_back(ch.get());
  return out;
}

json list_queues(Broker& b, const Rates& rates, const Vhost* only) {
  const auto unacked = oldest_unacked(all_channels(b));
  const std::int64_t now = b.now_ms();
  json out = json::array();
  for (const Vhost* vh : vhost_list(b)) {
    if (only && vh != only) continue;
    std::vector<const Queue*> qs;
    for (const auto& [_, q] : vh->queues()) qs.push_back(q.get());
    std::sort(qs.begin(), qs.end(), [](const Queue* a, const Queue* b) { return a->name() < b->name(); });
    for (const Queue* q : qs) {
      auto it = unacked.find(q);
      out.push_back(queue_json_with(*vh, *q, &rates, it == unacked.end() ? 0 : it->second, now));
    }
  }
  return out;
}

json list_exchanges(Broker& b, const Vhost* only) {
  json out = json::array();
  for (const Vhost* vh : vhost_list(b)) {
    if (only && vh != only) continue;
    std::vector<const Exchange*> xs;
    for (const auto& [_, x] : vh->exchanges()) xs.push_back(x.get());
    std::sort(xs.begin(), xs.end(), [](const Exchange* a, const Exchange* b) { return a->name() < b->name(); });
    for (const Exchange* x : xs) out.push_back(exchange_json(*vh, *x));
  }
  return out;
}

json list_bindings(Broker& b, const Vhost* only) {
  json out = json::array();
  for (const Vhost* vh : vhost_list(b)) {
    if (only && vh != only) continue;
    for (auto& j : bindings_json(*vh)) out.push_back(std::move(j));
  }
  return out;
}

json list_connections(Broker& b) {
  json out = json::array();
  for (const auto& [_, c] : b.connections()) out.push_back(connection_json(*c));
  return out;
}

json list_channels(Broker& b) {
  json out = json::array();
  for (const auto& [_, c] : b.connections())
    for (const auto& [__, ch] : c->channels()) out.push_back(channel_json(*c, *ch));
  return out;
}

json list_consumers(Broker& b, const Vhost* only) {
  json out = json::array();
  for (const auto& [_, c] : b.connections()) {
    const Vhost* vh = c->vhost_if_open();
    if (vh == nullptr || (only && vh != only)) continue;
    for (const auto& [__, ch] : c->channels())
      for (const auto& [___, consumer] : ch->consumers()) out.push_back(consumer_json(*vh, *ch, c.get(), *consumer));
  }
  return out;
}

json list_vhosts(Broker& b) {
  json out = json::array();
  for (const Vhost* vh : vhost_list(b)) out.push_back(vhost_json(*vh));
  return out;
}

json overview(Broker& b, const Rates& rates) {
  std::size_t queues = 0, exchanges = 0, ready = 0, unacked = 0, consumers = 0, channels = 0;
  for (const Vhost* vh : vhost_list(b)) {
    exchanges += vh->exchanges().size();
    for (const auto& [_, q] : vh->queues()) {
      ++queues;
      ready += q->ready_count();
      unacked += q->unacked_count();
      consumers += q->consumer_count();
    }
  }
  for (const auto& [_, c] : b.connections()) channels += c->channel_count();
  const Rates::Sample t = rates.totals();
  json exchange_types = json::array();
  for (const char* type : {"direct", "fanout", "topic", "headers", "x-delayed-message"})
    exchange_types.push_back({{"name", type}, {"description", ""}, {"enabled", true}});
  return json{
      {"management_version", kManagementVersion},
      {"rates_mode", "basic"},
      {"product_name", "minibroker"},
      {"product_version", "0.1.0"},
      // Tools gate features on this: the RabbitMQ version whose API we follow.
      {"rabbitmq_version", kManagementVersion},
      {"cluster_name", kNodeName},
      {"node", kNodeName},
      {"exchange_types", std::move(exchange_types)},
      {"message_stats",
       {{"publish", t.last.publish},
        {"publish_details", rate(t.publish)},
        {"deliver_get", t.last.deliver},
        {"deliver_get_details", rate(t.deliver)},
        {"ack", t.last.ack},
        {"ack_details", rate(t.ack)}}},
      {"queue_totals",
       {{"messages", ready + unacked},
        {"messages_details", rate(0)},
        {"messages_ready", ready},
        {"messages_ready_details", rate(0)},
        {"messages_unacknowledged", unacked},
        {"messages_unacknowledged_details", rate(0)}}},
      {"object_totals",
       {{"channels", channels},
        {"connections", b.connection_count()},
        {"consumers", consumers},
        {"exchanges", exchanges},
        {"queues", queues}}},
      {"listeners",
       json::array({{{"node", kNodeName},
                     {"protocol", "amqp"},
                     {"ip_address", b.options().bind},
                     {"port", b.amqp_port()}}})},
  };
}

Connection* find_connection(Broker& b, std::string_view name) {
  for (const auto& [_, c] : b.connections())
    if (c->name() == name) return c.get();
  return nullptr;
}

// --- browse ---

json browse_queue(const Vhost& vh, const Queue& q, const ChannelList& channels, std::int64_t now_ms,
                  std::size_t limit) {
  json ready = json::array(), unacked = json::array(), delayed = json::array();
  std::size_t position = 0;
  const auto& levels = q.ready_levels();
  // Delivery order: the highest priority level first, each in queue order.
  for (auto level = levels.rbegin(); level != levels.rend() && ready.size() < limit; ++level) {
    for (const broker::QueueEntry& e : *level) {
      if (ready.size() >= limit) break;
      json m = message_json(*e.msg, kBrowsePayloadBytes);
      m["position"] = position++;
      m["redelivered"] = e.redelivered;
      m["age_ms"] = age(e.enqueued_at, now_ms);
      m["expires_at"] = e.expires_at == 0 || e.expires_at == std::numeric_limits<std::int64_t>::max()
                            ? json(nullptr) : json(e.expires_at);
      ready.push_back(std::move(m));
    }
  }
  for (const Channel* ch : channels) {
    ch->visit_unacked([&](std::uint64_t tag, const Queue& owner, const broker::Consumer* c, const broker::QueueEntry& e) {
      if (&owner != &q || unacked.size() >= limit) return;
      json m = message_json(*e.msg, kBrowsePayloadBytes);
      m["delivery_tag"] = tag;
      m["channel"] = ch->id();
      m["consumer_tag"] = c ? json(c->tag) : json(nullptr);  // null: taken by basic.get
      m["age_ms"] = age(e.enqueued_at, now_ms);
      unacked.push_back(std::move(m));
    });
  }
  std::vector<Queue*> reached;
  vh.visit_delayed([&](std::int64_t due, const std::string& exchange, const broker::MessagePtr& msg) {
    if (delayed.size() >= limit) return;
    broker::ExchangePtr x = vh.find_exchange(exchange);
    if (!x) return;
    reached.clear();
    vh.route(*x, *msg, reached);
    if (std::find(reached.begin(), reached.end(), &q) == reached.end()) return;
    json m = message_json(*msg, kBrowsePayloadBytes);
    m["due_at"] = due;
    m["due_in_ms"] = std::max<std::int64_t>(0, due - now_ms);
    delayed.push_back(std::move(m));
  });
  return json{{"name", q.name()},
              {"vhost", vh.name()},
              {"messages_ready", q.ready_count()},
              {"messages_unacknowledged", q.unacked_count()},
              {"ready", std::move(ready)},
              {"unacked", std::move(unacked)},
              {"delayed", std::move(delayed)}};
}

// --- commands ---

Outcome error_outcome(int status, std::string reason) {
  static constexpr std::pair<int, const char*> kErrors[] = {
      {400, "bad_request"}, {401, "not_authorised"}, {403, "access_refused"}, {404, "Object Not Found"},
      {405, "resource_locked"}};
  const char* error = "error";
  for (const auto& [code, name] : kErrors)
    if (code == status) error = name;
  return Outcome{status, json{{"error", error}, {"reason", std::move(reason)}}};
}

Outcome put_queue(Vhost& vh, const std::string& name, const json& body) {
  if (!body.is_object()) return error_outcome(400, "body must be a JSON object");
  // RabbitMQ's HTTP API declares durable queues unless told otherwise.
  std::optional<bool> durable = body_bool(body, "durable", true);
  std::optional<bool> auto_delete = body_bool(body, "auto_delete", false);
  if (!durable || !auto_delete) return error_outcome(400, "durable and auto_delete must be booleans");
  std::optional<amqp::FieldTable> args = table_from_json(body.value("arguments", json::object()));
  if (!args) return error_outcome(400, "arguments must be an object of AMQP values");
  if (name.empty()) return error_outcome(400, "queue name must not be empty");
  try {
    broker::QueueDeclare d;
    d.name = name;
    d.durable = *durable;
    d.auto_delete = *auto_delete;
    d.arguments = &*args;
    if (auto existing = vh.find_queue(name); existing && existing->exclusive()) d.connection_id = existing->owner();
    auto [q, created] = vh.declare_queue(d);
    return Outcome{created ? 201 : 204, {}};
  } catch (const AmqpError& e) {
    return from_amqp_error(e);
  }
}

Outcome delete_queue(Vhost& vh, const std::string& name, bool if_unused, bool if_empty) {
  broker::QueuePtr q = vh.find_queue(name);
  if (!q) return error_outcome(404, "Not Found");
  try {
    // The management API may delete another connection's exclusive queue.
    vh.delete_queue(name, if_unused, if_empty, q->owner());
    return Outcome{204, {}};
  } catch (const AmqpError& e) {
    return from_amqp_error(e);
  }
}

Outcome purge_queue(Vhost& vh, const std::string& name) {
  broker::QueuePtr q = vh.find_queue(name);
  if (!q) return error_outcome(404, "Not Found");
  q->purge();
  return Outcome{204, {}};
}

Outcome put_exchange(Vhost& vh, const std::string& path_name, const json& body) {
  if (!body.is_object()) return error_outcome(400, "body must be a JSON object");
  // RabbitMQ declares a direct exchange when the body names no type.
  auto type = body.find("type");
  if (type != body.end() && !type->is_string()) return error_outcome(400, "type must be a string");
  std::optional<bool> durable = body_bool(body, "durable", true);
  std::optional<bool> auto_delete = body_bool(body, "auto_delete", false);
  std::optional<bool> internal = body_bool(body, "internal", false);
  if (!durable || !auto_delete || !internal) return error_outcome(400, "durable, auto_delete and internal must be booleans");
  std::optional<amqp::FieldTable> args = table_from_json(body.value("arguments", json::object()));
  if (!args) return error_outcome(400, "arguments must be an object of AMQP values");
  const std::string type_name = type == body.end() ? "direct" : type->get<std::string>();
  try {
    broker::ExchangeDeclare d;
    d.name = exchange_name_from_path(path_name);
    d.type = type_name;
    d.durable = *durable;
    d.auto_delete = *auto_delete;
    d.internal = *internal;
    d.arguments = &*args;
    const bool existed = vh.find_exchange(d.name) != nullptr;
    vh.declare_exchange(d);
    return Outcome{existed ? 204 : 201, {}};
  } catch (const AmqpError& e) {
    return from_amqp_error(e);
  }
}

Outcome delete_exchange(Vhost& vh, const std::string& path_name, bool if_unused) {
  const std::string_view name = exchange_name_from_path(path_name);
  if (!vh.find_exchange(name)) return error_outcome(404, "Not Found");
  try {
    vh.delete_exchange(name, if_unused);
    return Outcome{204, {}};
  } catch (const AmqpError& e) {
    return from_amqp_error(e);
  }
}

Outcome get_messages(Vhost& vh, broker::VhostEnv& env, const std::string& name, const json& body) {
  broker::QueuePtr q = vh.find_queue(name);
  if (!q) return error_outcome(404, "Not Found");
  if (!body.is_object()) return error_outcome(400, "body must be a JSON object");
  auto count_it = body.find("count");
  auto mode_it = body.find("ackmode");
  auto enc_it = body.find("encoding");
  if (count_it == body.end() || !count_it->is_number_integer()) return error_outcome(400, "{key_missing,count}");
  if (mode_it == body.end() || !mode_it->is_string()) return error_outcome(400, "{key_missing,ackmode}");
  if (enc_it == body.end() || !enc_it->is_string()) return error_outcome(400, "{key_missing,encoding}");
  const std::string mode = mode_it->get<std::string>(), encoding = enc_it->get<std::string>();
  const bool requeue = mode == "ack_requeue_true" || mode == "reject_requeue_true";
  const bool reject = mode == "reject_requeue_true" || mode == "reject_requeue_false";
  if (!requeue && !reject && mode != "ack_requeue_false") return error_outcome(400, "unknown ackmode " + mode);
  if (encoding != "auto" && encoding != "base64") return error_outcome(400, "unknown encoding " + encoding);
  const std::int64_t count = std::clamp<std::int64_t>(count_it->get<std::int64_t>(), 0, kMaxGetCount);
  std::size_t truncate = std::numeric_limits<std::size_t>::max();
  if (auto t = body.find("truncate"); t != body.end() && t->is_number_integer() && t->get<std::int64_t>() >= 0)
    truncate = t->get<std::size_t>();

  const std::int64_t now = env.now_ms();
  std::vector<broker::QueueEntry> taken;
  for (std::int64_t i = 0; i < count; ++i) {
    std::optional<broker::QueueEntry> e = q->get(now, false);
    if (!e) break;
    taken.push_back(std::move(*e));
  }
  json out = json::array();
  for (std::size_t i = 0; i < taken.size(); ++i) {
    const broker::QueueEntry& e = taken[i];
    const broker::Message& m = *e.msg;
    json j = {{"payload_bytes", m.body_size()},
              {"redelivered", e.redelivered},
              {"exchange", m.exchange()},
              {"routing_key", m.routing_key()},
              // Messages left after this one, as basic.get-ok's message-count.
              {"message_count", q->ready_count() + (requeue ? taken.size() : 0) - (requeue ? i + 1 : 0)},
              {"properties", properties_json(m.properties())}};
    put_payload(j, m.body().substr(0, truncate), encoding == "base64");
    out.push_back(std::move(j));
  }
  // Settle after building the reply: requeue puts entries back in place, marked redelivered.
  for (auto& e : taken) {
    if (requeue) q->requeue(std::move(e));
    else if (reject) q->reject(std::move(e), false);
    else q->settle(e);
  }
  return Outcome{200, std::move(out)};
}

Outcome publish_message(Vhost& vh, broker::VhostEnv& env, const std::string& path_name, const json& body) {
  if (!body.is_object()) return error_outcome(400, "body must be a JSON object");
  for (const char* key : {"routing_key", "payload", "payload_encoding", "properties"})
    if (!body.contains(key)) return error_outcome(400, std::string("{key_missing,") + key + "}");
  if (!body["routing_key"].is_string() || !body["payload"].is_string() || !body["payload_encoding"].is_string() ||
      !body["properties"].is_object())
    return error_outcome(400, "routing_key, payload and payload_encoding must be strings, properties an object");
  broker::ExchangePtr x = vh.find_exchange(exchange_name_from_path(path_name));
  if (!x) return error_outcome(404, "Not Found");
  std::string payload = body["payload"].get<std::string>();
  const std::string enc = body["payload_encoding"].get<std::string>();
  if (enc == "base64") {
    std::optional<std::string> decoded = base64_decode(payload);
    if (!decoded) return error_outcome(400, "payload is not valid base64");
    payload = std::move(*decoded);
  } else if (enc != "string") {
    return error_outcome(400, "payload_encoding must be string or base64");
  }
  const json& pj = body["properties"];
  amqp::BasicProperties props;
  try {
    auto str = [&pj](const char* k) -> std::optional<std::string> {
      auto it = pj.find(k);
      if (it == pj.end()) return std::nullopt;
      return it->get<std::string>();
    };
    props.content_type = str("content_type");
    props.content_encoding = str("content_encoding");
    props.correlation_id = str("correlation_id");
    props.reply_to = str("reply_to");
    props.expiration = str("expiration");
    props.message_id = str("message_id");
    props.type = str("type");
    props.user_id = str("user_id");
    props.app_id = str("app_id");
    props.cluster_id = str("cluster_id");
    if (auto it = pj.find("delivery_mode"); it != pj.end()) props.delivery_mode = it->get<std::uint8_t>();
    if (auto it = pj.find("priority"); it != pj.end()) props.priority = it->get<std::uint8_t>();
    if (auto it = pj.find("timestamp"); it != pj.end()) props.timestamp = it->get<std::uint64_t>();
    if (auto it = pj.find("headers"); it != pj.end()) {
      std::optional<amqp::FieldTable> h = table_from_json(*it);
      if (!h) return error_outcome(400, "headers must be an object of AMQP values");
      props.headers = std::move(*h);
    }
  } catch (const json::exception& e) {
    return error_outcome(400, std::string("bad properties: ") + e.what());
  }
  std::optional<std::int64_t> expiration;
  if (props.expiration) {
    std::int64_t v = -1;
    const std::string& s = *props.expiration;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size() || v < 0) return error_outcome(400, "invalid expiration " + s);
    expiration = v;
  }
  const std::string routing_key = body["routing_key"].get<std::string>();
  if (routing_key.size() > 255) return error_outcome(400, "routing_key is longer than 255 bytes");
  auto msg = broker::Message::create(x->name(), routing_key, amqp::encode_properties(props),
                                     payload);
  msg->id = env.next_message_id();
  msg->delivery_mode = props.delivery_mode.value_or(0);
  msg->priority = props.priority.value_or(0);
  msg->has_headers = props.headers.has_value();
  msg->expiration_ms = expiration;
  const amqp::PropertiesSummary summary = amqp::summarize_properties(msg->properties());
  msg->task = env.task_published(msg->exchange(), msg->routing_key(), summary, msg->body());
  std::int64_t delay = 0;
  if (x->delayed() && props.headers)
    if (const auto* v = props.headers->find("x-delay")) delay = v->as_int().value_or(0);
  try {
    if (delay > 0) {
      vh.delay(x, msg, env.now_ms() + delay);
      return Outcome{200, json{{"routed", true}}};
    }
    const broker::PublishOutcome routed = vh.publish(*x, msg);
    return Outcome{200, json{{"routed", routed.routed > 0}}};
  } catch (const AmqpError& e) {
    return from_amqp_error(e);
  }
}

Outcome delete_message(Vhost& vh, const std::string& name, const json& body) {
  broker::QueuePtr q = vh.find_queue(name);
  if (!q) return error_outcome(404, "Not Found");
  if (!body.is_object()) return error_outcome(400, "body must be a JSON object");
  auto pos_it = body.find("position");
  auto id_it = body.find("message_id");
  if ((pos_it == body.end()) == (id_it == body.end()))
    return error_outcome(400, "give exactly one of position and message_id");
  if (pos_it != body.end() && !(pos_it->is_number_integer() && pos_it->get<std::int64_t>() >= 0))
    return error_outcome(400, "position must be an integer >= 0");
  if (id_it != body.end() && !id_it->is_string()) return error_outcome(400, "message_id must be a string");
  std::size_t position = 0;
  const auto& levels = q->ready_levels();
  for (auto level = levels.rbegin(); level != levels.rend(); ++level) {
    for (const broker::QueueEntry& e : *level) {
      bool match = false;
      if (pos_it != body.end()) {
        match = position == pos_it->get<std::size_t>();
      } else {
        try {
          const amqp::BasicProperties p = amqp::decode_properties(e.msg->properties());
          match = p.message_id && *p.message_id == id_it->get<std::string>();
        } catch (const std::exception&) {
          // properties the broker cannot decode carry no message id it can match
        }
      }
      if (match) {
        const std::uint64_t seq = e.seq;
        q->remove_ready(seq);  // invalidates e
        return Outcome{204, {}};
      }
      ++position;
    }
  }
  return error_outcome(404, "no such ready message");
}

}  // namespace mb::mgmt
