// options.hpp: miniworker's settings. Every default is a named constant.
#pragma once

#include <string>
#include <vector>

#include "common/client/url.hpp"

namespace mb::worker {

inline constexpr unsigned kDefaultPrefetchMultiplier = 4;  // as Celery's worker_prefetch_multiplier
inline constexpr const char* kDefaultQueue = "celery";     // Celery's default queue name
inline constexpr double kMaxReconnectBackoff = 10.0;       // seconds between reconnect attempts, at most
inline constexpr double kFirstReconnectBackoff = 0.2;      // doubled on every failed attempt
inline constexpr double kDefaultHeartbeatInterval = 2.0;   // seconds: Celery's worker-heartbeat `freq`

enum class PoolKind { kPrefork, kThreads };

struct WorkerOptions {
  std::string broker_url = std::string(client::kDefaultBrokerUrl);
  std::vector<std::string> task_libraries;
  unsigned concurrency = 0;  // 0: number of cores
  PoolKind pool = PoolKind::kPrefork;
  std::vector<std::string> queues = {kDefaultQueue};
  unsigned prefetch_multiplier = kDefaultPrefetchMultiplier;
  double time_limit = 0;       // hard, seconds, 0: none
  double soft_time_limit = 0;  // seconds, 0: none
  unsigned max_tasks_per_child = 0;
  std::string hostname;        // default miniworker@<host>
  bool ack_early = false;
  bool task_events = false;  // -E: task-* events on celeryev, as Celery's worker -E
  double heartbeat_interval = kDefaultHeartbeatInterval;  // worker-heartbeat period, 0: none
  std::string loglevel = "info";
};

}  // namespace mb::worker
