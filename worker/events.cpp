// events.cpp: Celery events: pure encoding, and publishing on celeryev.
#include "worker/events.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdlib>
#include <ctime>

#include "common/client/headers.hpp"
#include "common/task/celery.hpp"

namespace mb::worker {

namespace {

using nlohmann::json;

constexpr std::uint8_t kTransient = 1;  // Celery's event_queue delivery_mode

void append_py_string(std::string& out, std::string_view s) {
  // Python prefers single quotes, and double quotes when the text has a ' but no ".
  const bool has_single = s.find('\'') != std::string_view::npos;
  const char quote = has_single && s.find('"') == std::string_view::npos ? '"' : '\'';
  out += quote;
  for (char c : s) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c == quote) out += '\\';
        out += c;
    }
  }
  out += quote;
}

void append_py_repr(std::string& out, const task::Value& v);

void append_py_double(std::string& out, double d) {
  if (std::isnan(d)) {
    out += "nan";
  } else if (std::isinf(d)) {
    out += d < 0 ? "-inf" : "inf";
  } else {
    std::string s = fmt::format("{}", d);  // shortest round-trip, as Python's repr
    if (s.find_first_of(".e") == std::string::npos) s += ".0";
    out += s;
  }
}

void append_py_repr(std::string& out, const task::Value& v) {
  switch (v.kind()) {
    case task::Kind::kNull: out += "None"; break;
    case task::Kind::kBool: out += v.as_bool() ? "True" : "False"; break;
    case task::Kind::kInt: out += std::to_string(v.as_int()); break;
    case task::Kind::kDouble: append_py_double(out, v.as_double()); break;
    case task::Kind::kString: append_py_string(out, v.as_string()); break;
    case task::Kind::kBytes:
      out += 'b';
      append_py_string(out, v.as_bytes().data);
      break;
    case task::Kind::kList: {
      out += '[';
      bool first = true;
      for (const auto& e : v.as_list()) {
        if (!first) out += ", ";
        first = false;
        append_py_repr(out, e);
      }
      out += ']';
      break;
    }
    case task::Kind::kMap: {
      out += '{';
      bool first = true;
      for (const auto& [k, e] : v.as_map()) {
        if (!first) out += ", ";
        first = false;
        append_py_string(out, k);
        out += ": ";
        append_py_repr(out, e);
      }
      out += '}';
      break;
    }
  }
}

json optional_time(double t) { return t > 0 ? json(task::format_iso8601(t)) : json(nullptr); }
json optional_text(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

std::chrono::steady_clock::duration seconds_d(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

}  // namespace

std::string py_repr(const task::Value& v) {
  std::string out;
  append_py_repr(out, v);
  return out;
}

std::string py_args_repr(const task::List& args) {
  std::string out = "(";
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (i > 0) out += ", ";
    append_py_repr(out, args[i]);
  }
  if (args.size() == 1) out += ',';
  out += ')';
  return out;
}

std::string py_exception_repr(std::string_view type, std::string_view message) {
  std::string out(type);
  out += '(';
  append_py_string(out, message);
  out += ')';
  return out;
}

json make_event(std::string_view type, const EventSource& source, std::uint64_t clock, double timestamp,
                json fields) {
  json e = std::move(fields);
  if (!e.is_object()) e = json::object();
  e["hostname"] = source.hostname;
  e["utcoffset"] = utcoffset_hours();
  e["pid"] = source.pid;
  e["clock"] = clock;
  e["timestamp"] = timestamp;
  e["type"] = type;
  return e;
}

std::string event_routing_key(std::string_view type) {
  std::string key(type);
  for (char& c : key)
    if (c == '-') c = '.';
  return key;
}

int utcoffset_hours() {
  tzset();
  // As celery.utils.time.utcoffset(): seconds west of UTC, in whole hours.
  const long west = daylight ? timezone - 3600 : timezone;
  return static_cast<int>(west / 3600);
}

json worker_event_fields(const WorkerLoad& load) {
  double avg[3] = {0, 0, 0};
  if (getloadavg(avg, 3) != 3) avg[0] = avg[1] = avg[2] = 0;
  // Celery rounds the load average to two decimals.
  auto r2 = [](double x) { return std::round(x * 100.0) / 100.0; };
  return json{{"freq", load.freq},
              {"active", load.active},
              {"processed", load.processed},
              {"loadavg", json::array({r2(avg[0]), r2(avg[1]), r2(avg[2])})},
              {"sw_ident", kSoftwareIdent},
              {"sw_ver", kSoftwareVersion},
              {"sw_sys", "Linux"}};
}

json task_received_fields(const task::TaskMessage& t) {
  return json{{"uuid", t.id},
              {"name", t.name},
              {"args", py_args_repr(t.args)},
              {"kwargs", py_repr(task::Value(t.kwargs))},
              {"root_id", t.root_id.empty() ? json(t.id) : json(t.root_id)},
              {"parent_id", optional_text(t.parent_id)},
              {"retries", t.retries},
              {"eta", optional_time(t.eta)},
              {"expires", optional_time(t.expires)}};
}

json task_started_fields(const task::TaskMessage& t) { return json{{"uuid", t.id}}; }

json task_succeeded_fields(const task::TaskResult& r) {
  return json{{"uuid", r.task_id}, {"result", py_repr(r.value)}, {"runtime", r.runtime}};
}

json task_error_fields(const task::TaskResult& r) {
  return json{{"uuid", r.task_id},
              {"exception", py_exception_repr(r.error_type, r.error_message)},
              {"traceback", r.traceback}};
}

json task_revoked_fields(const std::string& id, bool expired) {
  return json{{"uuid", id}, {"terminated", false}, {"signum", nullptr}, {"expired", expired}};
}

EventPublisher::EventPublisher(asio::io_context& io, EventSource source, LamportClock& clock, bool task_events,
                               double heartbeat_interval, LoadFn load)
    : io_(io),
      source_(std::move(source)),
      clock_(clock),
      task_events_(task_events),
      heartbeat_interval_(heartbeat_interval),
      load_(std::move(load)),
      heartbeat_timer_(io) {
  properties_.content_type = std::string(task::kJsonContentType);
  properties_.content_encoding = "utf-8";
  task::Map headers{{"hostname", task::Value(source_.hostname)}};
  properties_.headers = client::map_to_table(headers);
  properties_.delivery_mode = kTransient;
  properties_.priority = 0;
}

asio::awaitable<void> EventPublisher::attach(client::Connection& conn) {
  client::Channel* ch = co_await conn.open_channel();
  const amqp::FieldTable no_arguments;
  co_await ch->exchange_declare(kEventExchange, "topic", true, false, no_arguments);
  channel_ = ch;
  if (offline_) co_return;
  send("worker-online", worker_fields());
  schedule_heartbeat();
}

void EventPublisher::detach() {
  channel_ = nullptr;
  heartbeat_timer_.cancel();
}

void EventPublisher::go_offline() {
  if (offline_) return;
  offline_ = true;
  heartbeat_timer_.cancel();
  send("worker-offline", worker_fields());
}

void EventPublisher::task_event(std::string_view type, json fields) {
  if (task_events_) send(type, std::move(fields));
}

void EventPublisher::heartbeat() {
  if (!offline_) send("worker-heartbeat", worker_fields());
}

json EventPublisher::worker_fields() const {
  WorkerLoad load = load_();
  load.freq = heartbeat_interval_ > 0 ? heartbeat_interval_ : kDefaultHeartbeatInterval;
  return worker_event_fields(load);
}

void EventPublisher::send(std::string_view type, json fields) {
  if (!channel_ || !channel_->is_open()) return;  // Celery drops events while offline too
  const json event = make_event(type, source_, clock_.forward(), task::unix_now(), std::move(fields));
  channel_->publish(kEventExchange, event_routing_key(type), properties_, event.dump());
}

void EventPublisher::schedule_heartbeat() {
  if (heartbeat_interval_ <= 0) return;
  heartbeat_timer_.expires_after(seconds_d(heartbeat_interval_));
  heartbeat_timer_.async_wait([this](std::error_code ec) {
    if (ec || !channel_ || offline_) return;
    heartbeat();
    schedule_heartbeat();
  });
}

}  // namespace mb::worker
