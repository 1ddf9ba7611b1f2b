// thread_pool.hpp: the `--pool threads` option for the fastest trivial tasks:
// N threads in this process run tasks; results are posted back to the
// io_context. No crash isolation: a task that crashes takes the worker with
// it (the broker then redelivers its unacked tasks).
//
// The worker hands it every task ready to run (the prefetched ones), as
// Celery's pools do, not one per free thread: the threads take them from one
// queue and sleep only when it is empty, so a busy pool costs no wake-up per
// task. A task starts when a thread takes it: only then is its expiry
// checked, its start reported (on_started, with the hard time limit armed
// from that moment) and its soft deadline set. Queued tasks can be taken
// back (recall) and are dropped by stop().
//
// Hard time limit: a thread cannot be killed, so at the limit the task gets
// its FAILURE TimeLimitExceeded at once, its thread is abandoned (it exits
// when the task returns, its result dropped) and a new thread takes its
// place, so the pool keeps its capacity. More than `max_abandoned` threads
// stuck at once and the pool gives up (on_exhausted): the worker exits so that
// a supervisor restarts it, and the broker requeues what was unacked.
#pragma once

#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "worker/pool.hpp"
#include "worker/registry.hpp"

namespace mb::worker {

struct ThreadPoolOptions {
  unsigned concurrency = 1;
  unsigned max_abandoned = 0;  // threads stuck past their hard time limit, at most; 0: concurrency
  std::string hostname;
};

class ThreadPool : public Pool {
 public:
  // registry: HELD NOT OWNED.
  ThreadPool(asio::io_context& io, const TaskRegistry& registry, ThreadPoolOptions options);
  ~ThreadPool() override;

  void start(DoneFn on_done) override;
  bool queues_jobs() const override { return true; }
  bool has_free_slot() const override { return !stopping_; }
  void submit(Job job) override;
  std::size_t running() const override { return busy_; }
  std::size_t active() const override;
  std::vector<std::pair<std::uint64_t, double>> started() const override;
  std::vector<std::uint64_t> recall() override;
  void stop(std::function<void()> done) override;
  void terminate() override;
  // Threads still stuck in a task past its hard time limit.
  std::size_t abandoned();

 private:
  // One thread, shared with it: an abandoned thread touches nothing else of
  // the pool once its task returns (the pool may be gone by then).
  struct Runner {
    enum State { kRunning, kDone, kAbandoned, kGone };
    std::thread thread;
    // kRunning -> kDone by the thread when its task returns, or -> kAbandoned
    // by the pool at the hard limit; an abandoned thread ends in kGone.
    std::atomic<State> state{kDone};
  };

  // A start the loop thread must hear of: the job asked (task events) or has
  // a hard time limit, armed from `mono`.
  struct StartNotice {
    std::uint64_t seq = 0;
    double time_start = 0;  // unix seconds
    std::chrono::steady_clock::time_point mono;
    double time_limit = 0;
    task::TaskMessage brief;  // id, name, retries: what a TimeLimitExceeded result needs
  };
  struct RunningJob {
    std::shared_ptr<Runner> runner;
    double time_start = 0;  // unix seconds
  };

  void add_runner();
  void run_thread(const std::shared_ptr<Runner>& self);
  void flush_submitted();
  void on_result(JobDone done);
  void drain_done();
  void arm_time_limit(StartNotice& s);
  void on_time_limit(std::uint64_t seq, double limit, const task::TaskMessage& task);
  void maybe_finish_stop();
  void join_all();

  asio::io_context& io_;
  const TaskRegistry& registry_;
  ThreadPoolOptions options_;
  DoneFn on_done_;
  std::vector<std::shared_ptr<Runner>> runners_;    // loop thread
  std::vector<std::shared_ptr<Runner>> abandoned_;  // loop thread: detached, stuck in a task (or gone since)
  std::map<std::uint64_t, std::unique_ptr<asio::steady_timer>> limits_;  // loop thread: hard limits by seq
  std::vector<Job> submitted_;  // loop thread: submitted this turn, queued by flush_submitted()
  bool flush_posted_ = false;   // loop thread
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;                     // guarded by mu_
  std::map<std::uint64_t, RunningJob> running_;  // guarded by mu_: which thread runs which job
  bool quit_ = false;                         // guarded by mu_
  // Starts and results wait here for the loop thread, which takes them all at
  // once: one wake-up of the loop for as many as happened meanwhile. A job's
  // start is always taken before (or with) its result, and handled first.
  std::vector<StartNotice> starts_;           // guarded by mu_
  std::vector<JobDone> done_;                 // guarded by mu_
  bool drain_posted_ = false;                 // guarded by mu_
  std::vector<StartNotice> starting_;         // loop thread: the batch being handled
  std::vector<JobDone> draining_;             // loop thread: the batch being handled
  std::size_t busy_ = 0;   // loop thread only
  bool stopping_ = false;  // loop thread only
  std::function<void()> stop_done_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;  // keeps io alive for results
};

}  // namespace mb::worker
