// options.hpp: miniworker's settings. Every default is a named constant.
#pragma once

#include <string>
#include <vector>

#include "common/client/delayed.hpp"
#include "common/client/url.hpp"

namespace mb::worker {

inline constexpr unsigned kDefaultPrefetchMultiplier = 4;  // as Celery's worker_prefetch_multiplier
// Seconds of work the prefetch window may grow to hold, at the measured rate,
// past concurrency x multiplier (see prefetch_window.hpp).
inline constexpr double kDefaultPrefetchBudget = 0.010;
inline constexpr double kMaxPrefetchBudget = 60;  // a minute of reserved work is already far too much
inline constexpr const char* kDefaultQueue = "celery";     // Celery's default queue name
inline constexpr double kDefaultHeartbeatInterval = 2.0;   // seconds: Celery's worker-heartbeat `freq`

// Exit status when the pool cannot go on and a supervisor should restart the
// worker (threads stuck past their hard time limit): EX_SOFTWARE.
inline constexpr int kExitForRestart = 70;

enum class PoolKind { kPrefork, kThreads };

struct WorkerOptions {
  std::string broker_url = std::string(client::kDefaultBrokerUrl);
  std::vector<std::string> task_libraries;
  unsigned concurrency = 0;  // 0: number of cores
  PoolKind pool = PoolKind::kPrefork;
  std::vector<std::string> queues = {kDefaultQueue};
  unsigned prefetch_multiplier = kDefaultPrefetchMultiplier;
  double prefetch_budget = kDefaultPrefetchBudget;  // seconds, 0: the window stays concurrency x multiplier
  double time_limit = 0;       // hard, seconds, 0: none
  double soft_time_limit = 0;  // seconds, 0: none
  unsigned max_tasks_per_child = 0;
  unsigned max_abandoned_threads = 0;  // threads pool: stuck past the hard limit, at most; 0: concurrency
  std::string hostname;        // default miniworker@<host>
  bool ack_early = false;
  // Where tasks due later (countdown, eta, retries) wait: auto picks the
  // broker's delayed exchange when it has one.
  client::DelayMode delay_mode = client::DelayMode::kAuto;
  bool task_events = false;  // -E: task-* events on celeryev, as Celery's worker -E
  double heartbeat_interval = kDefaultHeartbeatInterval;  // worker-heartbeat period, 0: none
  std::string loglevel = "info";
};

}  // namespace mb::worker
