// control.hpp: the worker's Celery control plane (kombu's pidbox). Celery
// broadcasts remote-control commands on the `celery.pidbox` fanout exchange;
// each worker consumes them from `<hostname>.celery.pidbox` and, when the
// command carries reply_to, answers `{"<hostname>": <reply>}` on
// `reply.celery.pidbox` with the requester's ticket. This is what
// `celery inspect ping|registered|active|stats` and `celery status` use.
//
// Parsing, addressing and the replies are pure (unit tested in
// tests/unit/worker_celery_test.cpp); ControlPlane is the AMQP side.
#pragma once

#include <nlohmann/json.hpp>

#include <asio.hpp>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/client/connection.hpp"
#include "worker/events.hpp"

namespace mb::worker {

inline constexpr std::string_view kPidboxExchange = "celery.pidbox";             // fanout, transient
inline constexpr std::string_view kPidboxReplyExchange = "reply.celery.pidbox";  // direct, transient
inline constexpr std::string_view kPidboxQueueSuffix = ".celery.pidbox";
// The pidbox queue's arguments, as a Celery 5.2 worker declares them: an
// abandoned mailbox goes away after 10 s, commands older than 5 min are dropped.
inline constexpr std::int32_t kPidboxQueueExpiresMs = 10000;
inline constexpr std::int32_t kPidboxMessageTtlMs = 300000;

struct ControlRequest {
  std::string method;
  nlohmann::json arguments = nlohmann::json::object();
  std::vector<std::string> destination;  // empty: every worker
  std::string pattern;                   // with matcher "glob" or "pcre"
  std::string matcher;
  std::string ticket;
  std::string reply_exchange;  // empty: a cast, no reply
  std::string reply_routing_key;
};

// nullopt when the body is not a pidbox command object.
std::optional<ControlRequest> parse_control_request(std::string_view body);
// kombu's Node.handle_message: destination list, else pattern/matcher, else everyone.
bool addressed_to(const ControlRequest& request, std::string_view hostname);

struct ActiveTask {
  std::string id;
  std::string name;
  std::string args;    // Python repr, as Celery shows it with safe=True
  std::string kwargs;
  double time_start = 0;  // unix seconds
  bool acknowledged = false;
  std::string exchange;
  std::string routing_key;
  std::int64_t priority = 0;
  bool redelivered = false;
  std::int64_t worker_pid = 0;  // 0: not known
};

// What the worker is doing, taken when a command arrives.
struct WorkerStatus {
  std::string hostname;
  std::int64_t pid = 0;
  std::uint64_t clock = 0;
  double uptime = 0;  // seconds
  std::map<std::string, std::uint64_t> total;  // finished tasks by name
  std::vector<std::string> registered;
  std::vector<ActiveTask> active;
  std::string pool;  // "prefork" or "threads"
  unsigned concurrency = 0;
  unsigned max_tasks_per_child = 0;
  std::vector<std::int64_t> processes;
  unsigned prefetch_count = 0;
  std::string broker_host;
  std::uint16_t broker_port = 0;
  std::string broker_user;
  std::string broker_vhost;
  std::uint16_t broker_heartbeat = 0;
};

// The reply Celery's worker gives to `method`, or, like kombu for a handler
// it does not have, {"error": "KeyError('<method>')"}.
nlohmann::json control_reply(const ControlRequest& request, const WorkerStatus& status);
// The reply body: {"<hostname>": reply}.
std::string encode_control_reply(std::string_view hostname, const nlohmann::json& reply);

class ControlPlane {
 public:
  using StatusFn = std::function<WorkerStatus()>;

  // clock, events: HELD NOT OWNED (the `heartbeat` command makes events send one).
  ControlPlane(std::string hostname, LamportClock& clock, EventPublisher& events, StatusFn status);

  // Opens the mailbox channel on conn and starts consuming; conn: HELD NOT
  // OWNED, valid until detach().
  asio::awaitable<void> attach(client::Connection& conn);
  void detach() { channel_ = nullptr; }

 private:
  void on_command(client::Delivery&& d);

  std::string hostname_;
  LamportClock& clock_;
  EventPublisher& events_;
  StatusFn status_;
  client::Channel* channel_ = nullptr;  // HELD NOT OWNED: owned by the worker's connection
};

}  // namespace mb::worker
