// executor.hpp: runs one task from the registry and turns the SDK's Outcome
// into a TaskResult. Used in prefork children and by the threads pool.
#pragma once

#include <string>

#include "common/task/message.hpp"
#include "worker/registry.hpp"

namespace mb::worker {

struct Execution {
  task::TaskResult result;
  double retry_countdown = 0;  // state RETRY: seconds until due
};

// soft_time_limit: seconds (0: none). Unknown names give FAILURE NotRegistered.
Execution execute_task(const TaskRegistry& registry, const task::TaskMessage& msg, double soft_time_limit,
                       const std::string& hostname);

// Results the worker makes itself, not from a task run.
task::TaskResult make_error_result(const task::TaskMessage& msg, task::State state, std::string type,
                                   std::string message, const std::string& hostname);

}  // namespace mb::worker
