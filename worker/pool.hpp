// pool.hpp: the interface between the worker's dispatcher and whatever runs
// tasks (prefork children or threads). All calls and callbacks happen on the
// worker's io_context thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/task/message.hpp"

namespace mb::worker {

struct Job {
  std::uint64_t seq = 0;
  std::shared_ptr<const task::TaskMessage> task;  // the worker's, shared, not copied
  double soft_time_limit = 0;  // seconds, 0: none
  double time_limit = 0;       // hard limit, seconds, 0: none
  // The worker wants on_started for this job even without a hard time limit
  // (task events are on). Pools that start jobs at submit() ignore it.
  bool report_start = false;
};

struct JobDone {
  std::uint64_t seq = 0;
  task::TaskResult result;
  double retry_countdown = 0;
  // Not run: it had expired by the time a pool thread took it (pools that
  // queue jobs, see Pool::queues_jobs); `result` is empty.
  bool expired = false;
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
  // Pools that queue jobs (queues_jobs()) call this when a job really starts
  // (unix seconds), if the job asked for it (report_start) or has a hard time
  // limit; a job's on_started comes before its result.
  void on_started(std::function<void(std::uint64_t seq, double time_start)> fn) { on_started_ = std::move(fn); }
  // False: submit() starts the job at once, and only while has_free_slot().
  // True: submit() queues it (has_free_slot() stays true while the pool runs)
  // and the pool checks expiry when a thread takes it, then reports
  // on_started; jobs still queued can be taken back with recall().
  virtual bool queues_jobs() const { return false; }
  virtual bool has_free_slot() const = 0;
  virtual void submit(Job job) = 0;
  // Jobs submitted and not reported yet (queued ones included).
  virtual std::size_t running() const = 0;
  // Jobs started and not reported yet.
  virtual std::size_t active() const { return running(); }
  // Started jobs with their start time (unix seconds), for pools that queue
  // jobs (the others: the worker knows, as they start at submit()).
  virtual std::vector<std::pair<std::uint64_t, double>> started() const { return {}; }
  // Takes back the jobs not started yet: they will not be reported.
  virtual std::vector<std::uint64_t> recall() { return {}; }
  // The processes that run tasks (prefork children); empty when tasks run in
  // this process.
  virtual std::vector<pid_t> child_pids() const { return {}; }
  // Graceful: no new jobs, queued ones are dropped (recall() them first to
  // know which); `done` runs once every started job has reported.
  virtual void stop(std::function<void()> done) = 0;
  // At once: kills what runs (prefork), reports nothing more.
  virtual void terminate() = 0;

 protected:
  std::function<void()> on_slot_free_;
  std::function<void(std::uint64_t, double)> on_started_;
  std::function<void(const std::string&)> on_exhausted_;
};

}  // namespace mb::worker
