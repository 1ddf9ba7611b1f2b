// executor.cpp: one task run: bind the request, call the library, time it.
#include "worker/executor.hpp"

#include <chrono>

namespace mb::worker {

task::TaskResult make_error_result(const task::TaskMessage& msg, task::State state, std::string type,
                                   std::string message, const std::string& hostname) {
  task::TaskResult r;
  r.task_id = msg.id;
  r.state = state;
  r.error_type = std::move(type);
  r.error_message = std::move(message);
  if (state == task::State::kFailure) r.traceback = r.error_type + ": " + r.error_message + "\n";
  r.worker = hostname;
  r.retries = msg.retries;
  return r;
}

Execution execute_task(const TaskRegistry& registry, const task::TaskMessage& msg, double soft_time_limit,
                       const std::string& hostname) {
  Execution ex;
  const task::TaskDef* def = registry.find(msg.name);
  if (!def) {
    ex.result = make_error_result(msg, task::State::kFailure, "NotRegistered", "'" + msg.name + "'", hostname);
    return ex;
  }
  task::Request req;
  req.id = msg.id;
  req.name = msg.name;
  req.retries = msg.retries;
  req.eta = msg.eta;
  req.expires = msg.expires;
  req.parent_id = msg.parent_id;
  req.root_id = msg.root_id;
  req.hostname = hostname;
  auto start = std::chrono::steady_clock::now();
  if (soft_time_limit > 0) req.soft_deadline = task::monotonic_now() + soft_time_limit;
  task::Outcome out = def->run(task::Call{msg.args, msg.kwargs, req});
  auto& r = ex.result;
  r.runtime = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.task_id = msg.id;
  r.worker = hostname;
  r.retries = msg.retries;
  switch (out.kind) {
    case task::Outcome::Kind::kSuccess:
      r.state = task::State::kSuccess;
      r.value = std::move(out.value);
      break;
    case task::Outcome::Kind::kFailure:
      r.state = task::State::kFailure;
      break;
    case task::Outcome::Kind::kRetry:
      r.state = task::State::kRetry;
      ex.retry_countdown = out.retry_countdown;
      break;
  }
  r.error_type = std::move(out.error_type);
  r.error_message = std::move(out.error_message);
  r.traceback = std::move(out.traceback);
  return ex;
}

}  // namespace mb::worker
