// events.hpp: the worker's Celery event stream. Celery workers announce
// themselves on the `celeryev` topic exchange (worker-online, a
// worker-heartbeat every 2 s, worker-offline on a warm shutdown) whether or not
// task events are on; with -E they also send task-received, task-started,
// task-succeeded, task-failed and task-retried, so `celery events --dump`,
// flower and `celery status` see a miniworker as they see a Python worker.
//
// The encoding is pure (make_event and the *_fields functions, unit tested in
// tests/unit/worker_celery_test.cpp); EventPublisher is the AMQP side: its own
// channel on the worker's connection, one publish per event with the routing
// key Celery derives from the type (task-succeeded -> task.succeeded).
#pragma once

#include <nlohmann/json.hpp>

#include <asio.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/client/connection.hpp"
#include "common/task/message.hpp"
#include "worker/options.hpp"

namespace mb::worker {

inline constexpr std::string_view kEventExchange = "celeryev";  // topic, durable, as Celery declares it
// What the worker reports as its software in every worker event; flower and
// `celery events` show it next to py-celery workers.
inline constexpr std::string_view kSoftwareIdent = "miniworker";
inline constexpr std::string_view kSoftwareVersion = "5.2.6";  // the Celery protocol version spoken

// Lamport clock shared by events and control replies, as Celery's app.clock:
// forwarded on every send, adjusted to what arrives.
class LamportClock {
 public:
  std::uint64_t forward() { return ++value_; }
  void adjust(std::uint64_t other) { value_ = std::max(value_, other) + 1; }
  std::uint64_t value() const { return value_; }

 private:
  std::uint64_t value_ = 0;
};

struct EventSource {
  std::string hostname;  // node name, e.g. celery@host
  std::int64_t pid = 0;
};

// Python's repr() of a task value: what Celery puts in event fields such as
// task-succeeded's "result" (10 -> "10", "a" -> "'a'", true -> "True").
std::string py_repr(const task::Value& v);
// The argsrepr of a call: a Python tuple, "(5, 5)", "(1,)", "()".
std::string py_args_repr(const task::List& args);
// "ValueError('boom')": how Celery shows an exception in task-failed.
std::string py_exception_repr(std::string_view type, std::string_view message);

// `type` with Celery's common fields: hostname, utcoffset, pid, clock, timestamp.
nlohmann::json make_event(std::string_view type, const EventSource& source, std::uint64_t clock, double timestamp,
                          nlohmann::json fields);
// task-succeeded -> task.succeeded
std::string event_routing_key(std::string_view type);
// Celery's utcoffset(): hours west of UTC (0 on a UTC machine).
int utcoffset_hours();

struct WorkerLoad {
  double freq = kDefaultHeartbeatInterval;
  std::size_t active = 0;
  std::uint64_t processed = 0;
};
nlohmann::json worker_event_fields(const WorkerLoad& load);
nlohmann::json task_received_fields(const task::TaskMessage& t);
nlohmann::json task_started_fields(const task::TaskMessage& t);
nlohmann::json task_succeeded_fields(const task::TaskResult& r);
// task-failed and task-retried: "exception" repr and "traceback".
nlohmann::json task_error_fields(const task::TaskResult& r);
// task-revoked: a task dropped before it ran (only expiry, for now).
nlohmann::json task_revoked_fields(const std::string& id, bool expired);

class EventPublisher {
 public:
  using LoadFn = std::function<WorkerLoad()>;

  // clock: HELD NOT OWNED. heartbeat_interval 0: no heartbeats.
  EventPublisher(asio::io_context& io, EventSource source, LamportClock& clock, bool task_events,
                 double heartbeat_interval, LoadFn load);

  // Opens the publisher's channel on conn, declares celeryev, sends
  // worker-online and starts the heartbeat. conn: HELD NOT OWNED, valid until detach().
  asio::awaitable<void> attach(client::Connection& conn);
  // The connection is gone: stop publishing until the next attach.
  void detach();
  // worker-offline, then no more heartbeats (warm shutdown).
  void go_offline();

  bool task_events() const { return task_events_; }
  // Sends a task event when task events are on (-E).
  void task_event(std::string_view type, nlohmann::json fields);
  // worker-heartbeat now (the `heartbeat` control command, and the timer).
  void heartbeat();

 private:
  void send(std::string_view type, nlohmann::json fields);
  nlohmann::json worker_fields() const;
  void schedule_heartbeat();

  asio::io_context& io_;
  EventSource source_;
  LamportClock& clock_;
  bool task_events_;
  double heartbeat_interval_;
  LoadFn load_;
  client::Channel* channel_ = nullptr;  // HELD NOT OWNED: owned by the worker's connection
  asio::steady_timer heartbeat_timer_;
  amqp::BasicProperties properties_;  // the same for every event
  bool offline_ = false;
};

}  // namespace mb::worker
