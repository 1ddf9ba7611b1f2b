// The task view's JSON endpoints, read by the dashboard (broker/http/static/):
//
//   GET /api/tasks?state=SUCCESS&name=add&limit=100&offset=0
//                              newest first: {"total": n, "items": [task...]}
//   GET /api/tasks/{id}        one task, 404 when not in the history
//   GET /api/task-types        per task name: queued, running, succeeded,
//                              failed, retried, revoked, runtimes
//   GET /api/task-summary      counts by state, history size and bound
//   GET /api/workers           hostname, state (online/offline/seen), last heartbeat
//
// Thin adapters: the data comes from broker::Broker::tasks() (the TaskTracker,
// broker/tasks/tracker/), read on the broker's loop. Errors use the shape of
// RabbitMQ's management API: {"error": ..., "reason": ...}.
#include <charconv>
#include <string>

#include "broker/broker.hpp"
#include "broker/http/routes.hpp"
#include "broker/http/server.hpp"

namespace mb::http {
namespace {

// A page of the task list. The dashboard asks for one screenful; the cap keeps
// a careless ?limit= from serialising the whole history (20,000 tasks) per poll.
constexpr std::size_t kDefaultPageSize = 100;
constexpr std::size_t kMaxPageSize = 1000;

void reply_bad_request(Response& res, const std::string& reason) {
  HttpServer::reply_json(res, 400, {{"error", "bad_request"}, {"reason", reason}});
}

// Parses a non-negative integer query parameter; false when present and not a number.
bool size_param(const Request& req, const char* key, std::size_t& out) {
  if (!req.has_param(key)) return true;
  const std::string v = req.get_param_value(key);
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  return ec == std::errc() && end == v.data() + v.size();
}

double now_seconds(const broker::Broker& broker) { return static_cast<double>(broker.now_ms()) / 1000.0; }

}  // namespace

void register_task_routes(HttpServer& http, broker::Broker& broker) {
  http.get("/api/tasks", [&http, &broker](const Request& req, Response& res) {
    tasks::TaskQuery q;
    q.limit = kDefaultPageSize;
    if (!size_param(req, "limit", q.limit) || !size_param(req, "offset", q.offset))
      return reply_bad_request(res, "limit and offset must be non-negative integers");
    q.limit = std::min(q.limit, kMaxPageSize);
    if (req.has_param("state") && !req.get_param_value("state").empty()) {
      q.state = tasks::state_from_name(req.get_param_value("state"));
      if (!q.state) return reply_bad_request(res, "unknown state '" + req.get_param_value("state") + "'");
    }
    if (req.has_param("name")) q.name = req.get_param_value("name");
    auto r = http.on_loop([&broker, q] { return broker.tasks().list_tasks(q); });
    if (!r) return HttpServer::reply_unavailable(res);
    HttpServer::reply_json(res, 200, *r);
  });
  http.get(R"(/api/tasks/([^/]+))", [&http, &broker](const Request& req, Response& res) {
    std::string id = req.matches[1];
    auto r = http.on_loop([&broker, id] { return broker.tasks().task(id); });
    if (!r) return HttpServer::reply_unavailable(res);
    if (!*r) return HttpServer::reply_not_found(res);
    HttpServer::reply_json(res, 200, **r);
  });
  http.get("/api/task-types", [&http, &broker](const Request&, Response& res) {
    auto r = http.on_loop([&broker] { return broker.tasks().task_types(); });
    if (!r) return HttpServer::reply_unavailable(res);
    HttpServer::reply_json(res, 200, *r);
  });
  http.get("/api/task-summary", [&http, &broker](const Request&, Response& res) {
    auto r = http.on_loop([&broker] { return broker.tasks().summary(); });
    if (!r) return HttpServer::reply_unavailable(res);
    HttpServer::reply_json(res, 200, *r);
  });
  http.get("/api/workers", [&http, &broker](const Request&, Response& res) {
    auto r = http.on_loop([&broker] { return broker.tasks().workers(now_seconds(broker)); });
    if (!r) return HttpServer::reply_unavailable(res);
    HttpServer::reply_json(res, 200, *r);
  });
}

}  // namespace mb::http
