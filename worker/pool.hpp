// pool.hpp: the interface between the worker's dispatcher and whatever runs
// tasks (prefork children or threads). All calls and callbacks happen on the
// worker's io_context thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/task/message.hpp"

namespace mb::worker {

struct Job {
  std::uint64_t seq = 0;
  task::TaskMessage task;
  double soft_time_limit = 0;  // seconds, 0: none
  double time_limit = 0;       // hard limit, seconds, 0: none
};

struct JobDone {
  std::uint64_t seq = 0;
  task::TaskResult result;
  double retry_countdown = 0;
};

class Pool {
 public:
  using DoneFn = std::function<void(JobDone)>;
  virtual ~Pool() = default;
  virtual void start(DoneFn on_done) = 0;
  // Called (posted) when a slot frees up without a job finishing (a child was
  // replaced), so the dispatcher can hand out the next job.
  void on_slot_free(std::function<void()> fn) { on_slot_free_ = std::move(fn); }
  // Called when the pool cannot go on (the threads pool: too many threads
  // stuck past their hard time limit); the worker should exit and be restarted.
  void on_exhausted(std::function<void(const std::string& why)> fn) { on_exhausted_ = std::move(fn); }
  // True when submit() would start the job at once.
  virtual bool has_free_slot() const = 0;
  virtual void submit(Job job) = 0;
  virtual std::size_t running() const = 0;
  // The processes that run tasks (prefork children); empty when tasks run in
  // this process.
  virtual std::vector<pid_t> child_pids() const { return {}; }
  // Graceful: no new jobs; `done` runs once every running job has reported.
  virtual void stop(std::function<void()> done) = 0;
  // At once: kills what runs (prefork), reports nothing more.
  virtual void terminate() = 0;

 protected:
  std::function<void()> on_slot_free_;
  std::function<void(const std::string&)> on_exhausted_;
};

}  // namespace mb::worker
