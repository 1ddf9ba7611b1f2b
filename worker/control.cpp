// control.cpp: pidbox commands in, replies out (see control.hpp).
#include "worker/control.hpp"

#include <fnmatch.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <algorithm>
#include <regex>

#include "common/client/headers.hpp"
#include "common/task/message.hpp"

namespace mb::worker {

namespace {

using nlohmann::json;

constexpr std::uint8_t kTransient = 1;  // kombu publishes replies with delivery_mode transient

std::string string_field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

json rusage_json() {
  rusage u{};
  if (getrusage(RUSAGE_SELF, &u) != 0) return "N/A";
  auto secs = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return json{{"utime", secs(u.ru_utime)},   {"stime", secs(u.ru_stime)},   {"maxrss", u.ru_maxrss},
              {"ixrss", u.ru_ixrss},         {"idrss", u.ru_idrss},         {"isrss", u.ru_isrss},
              {"minflt", u.ru_minflt},       {"majflt", u.ru_majflt},       {"nswap", u.ru_nswap},
              {"inblock", u.ru_inblock},     {"oublock", u.ru_oublock},     {"msgsnd", u.ru_msgsnd},
              {"msgrcv", u.ru_msgrcv},       {"nsignals", u.ru_nsignals},   {"nvcsw", u.ru_nvcsw},
              {"nivcsw", u.ru_nivcsw}};
}

// Celery's Worker.stats(): info, pool, consumer (broker, prefetch_count), rusage.
json stats_reply(const WorkerStatus& s) {
  json pool;
  pool["max-concurrency"] = s.concurrency;
  if (s.pool == "threads") {
    pool["threads"] = s.concurrency;
  } else {
    pool["processes"] = s.processes;
    pool["max-tasks-per-child"] = s.max_tasks_per_child > 0 ? json(s.max_tasks_per_child) : json("N/A");
    pool["put-guarded-by-semaphore"] = false;
    pool["timeouts"] = json::array({0, 0});
  }
  json broker{{"hostname", s.broker_host},
              {"userid", s.broker_user},
              {"virtual_host", s.broker_vhost},
              {"port", s.broker_port},
              {"insist", false},
              {"ssl", false},
              {"transport", "amqp"},
              {"connect_timeout", 4},
              {"transport_options", json::object()},
              {"login_method", "PLAIN"},
              {"uri_prefix", nullptr},
              {"heartbeat", static_cast<double>(s.broker_heartbeat)},
              {"failover_strategy", "round-robin"},
              {"alternates", json::array()}};
  return json{{"total", s.total},
              {"pid", s.pid},
              {"clock", std::to_string(s.clock)},  // a string in Celery's reply too
              {"uptime", static_cast<std::int64_t>(s.uptime + 0.5)},
              {"pool", std::move(pool)},
              {"broker", std::move(broker)},
              {"prefetch_count", s.prefetch_count},
              {"rusage", rusage_json()}};
}

// Celery's Request.info(safe=True).
json active_reply(const WorkerStatus& s) {
  json out = json::array();
  for (const auto& t : s.active) {
    out.push_back(json{{"id", t.id},
                       {"name", t.name},
                       {"args", t.args},
                       {"kwargs", t.kwargs},
                       {"type", t.name},
                       {"hostname", s.hostname},
                       {"time_start", t.time_start},
                       {"acknowledged", t.acknowledged},
                       {"delivery_info",
                        {{"exchange", t.exchange},
                         {"routing_key", t.routing_key},
                         {"priority", t.priority},
                         {"redelivered", t.redelivered}}},
                       {"worker_pid", t.worker_pid > 0 ? json(t.worker_pid) : json(nullptr)}});
  }
  return out;
}

}  // namespace

std::optional<ControlRequest> parse_control_request(std::string_view body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  ControlRequest r;
  r.method = string_field(j, "method");
  if (r.method.empty()) return std::nullopt;
  if (auto it = j.find("arguments"); it != j.end() && it->is_object()) r.arguments = *it;
  if (auto it = j.find("destination"); it != j.end() && it->is_array())
    for (const auto& d : *it)
      if (d.is_string()) r.destination.push_back(d.get<std::string>());
  r.pattern = string_field(j, "pattern");
  r.matcher = string_field(j, "matcher");
  r.ticket = string_field(j, "ticket");
  if (auto it = j.find("reply_to"); it != j.end() && it->is_object()) {
    r.reply_exchange = string_field(*it, "exchange");
    r.reply_routing_key = string_field(*it, "routing_key");
  }
  return r;
}

bool addressed_to(const ControlRequest& request, std::string_view hostname) {
  if (!request.destination.empty())
    return std::find(request.destination.begin(), request.destination.end(), hostname) != request.destination.end();
  if (request.pattern.empty() || request.matcher.empty()) return true;
  const std::string host(hostname);
  if (request.matcher == "glob") return fnmatch(request.pattern.c_str(), host.c_str(), 0) == 0;
  if (request.matcher == "pcre") {
    try {
      // Python's re.match: anchored at the start only.
      return std::regex_search(host, std::regex(request.pattern), std::regex_constants::match_continuous);
    } catch (const std::regex_error&) {
      return false;
    }
  }
  return false;  // kombu raises for an unknown matcher: nobody runs the command
}

json control_reply(const ControlRequest& request, const WorkerStatus& status) {
  const std::string& m = request.method;
  if (m == "ping") return json{{"ok", "pong"}};
  if (m == "stats") return stats_reply(status);
  if (m == "active") return active_reply(status);
  if (m == "registered") return status.registered;
  if (m == "clock") return json{{"clock", status.clock}};
  if (m == "heartbeat") return nullptr;
  if (m == "hello") {  // mingle from a Python worker starting up: nothing revoked to share
    if (string_field(request.arguments, "from_node") == status.hostname) return nullptr;
    return json{{"revoked", json::object()}, {"clock", status.clock}};
  }
  std::string repr = "KeyError('" + m + "')";
  return json{{"error", repr}};
}

std::string encode_control_reply(std::string_view hostname, const json& reply) {
  json body = json::object();
  body[std::string(hostname)] = reply;
  return body.dump();
}

ControlPlane::ControlPlane(std::string hostname, LamportClock& clock, EventPublisher& events, StatusFn status)
    : hostname_(std::move(hostname)), clock_(clock), events_(events), status_(std::move(status)) {}

asio::awaitable<void> ControlPlane::attach(client::Connection& conn) {
  client::Channel* ch = co_await conn.open_channel();
  const amqp::FieldTable no_arguments;
  co_await ch->exchange_declare(kPidboxExchange, "fanout", false, false, no_arguments);
  co_await ch->exchange_declare(kPidboxReplyExchange, "direct", false, false, no_arguments);
  client::QueueOptions q;
  q.auto_delete = true;
  q.arguments.set("x-expires", amqp::FieldValue(kPidboxQueueExpiresMs));
  q.arguments.set("x-message-ttl", amqp::FieldValue(kPidboxMessageTtlMs));
  const std::string queue = hostname_ + std::string(kPidboxQueueSuffix);
  co_await ch->queue_declare(queue, q);
  co_await ch->queue_bind(queue, kPidboxExchange, "");
  const client::Channel::DeliveryFn fn = [this](client::Delivery&& d) { on_command(std::move(d)); };
  co_await ch->consume(queue, "", true, fn);
  ch->on_closed([this, ch](const client::AmqpError& e) {
    spdlog::error("pidbox channel closed by the broker: {} {}", e.code(), e.what());
    if (channel_ == ch) channel_ = nullptr;
  });
  channel_ = ch;
}

void ControlPlane::on_command(client::Delivery&& d) {
  auto request = parse_control_request(d.body);
  if (!request) {
    spdlog::warn("pidbox: ignoring a message that is not a control command ({} bytes)", d.body.size());
    return;
  }
  // The `expires` header is for the requester's reply collector: a kombu
  // Node answers late commands too, and so do we (no clock skew trouble).
  if (d.properties.headers)
    if (const auto* c = d.properties.headers->find("clock"); c && c->as_int())
      clock_.adjust(static_cast<std::uint64_t>(*c->as_int()));
  if (!addressed_to(*request, hostname_)) return;
  spdlog::debug("pidbox: {} (reply to {})", request->method, request->reply_routing_key);
  if (request->method == "heartbeat") events_.heartbeat();
  if (request->reply_exchange.empty()) return;
  json reply = control_reply(*request, status_());
  if (reply.contains("error")) spdlog::warn("pidbox: unknown command {}", request->method);
  if (!channel_ || !channel_->is_open()) return;
  amqp::BasicProperties p;
  p.content_type = std::string(task::kJsonContentType);
  p.content_encoding = "utf-8";
  amqp::FieldTable headers;
  headers.set("ticket", amqp::FieldValue(request->ticket));
  headers.set("clock", amqp::FieldValue(static_cast<std::int64_t>(clock_.forward())));
  p.headers = std::move(headers);
  p.delivery_mode = kTransient;
  p.priority = 0;
  channel_->publish(request->reply_exchange, request->reply_routing_key, p,
                    encode_control_reply(hostname_, reply));
}

}  // namespace mb::worker
