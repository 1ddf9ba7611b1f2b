// thread_pool.hpp: the `--pool threads` option for the fastest trivial tasks:
// N threads in this process run tasks; results are posted back to the
// io_context. No hard time limit and no crash isolation: a task that crashes
// takes the worker with it (the broker then redelivers its unacked tasks).
#pragma once

#include <asio.hpp>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "worker/pool.hpp"
#include "worker/registry.hpp"

namespace mb::worker {

class ThreadPool : public Pool {
 public:
  // registry: HELD NOT OWNED.
  ThreadPool(asio::io_context& io, const TaskRegistry& registry, unsigned concurrency, std::string hostname);
  ~ThreadPool() override;

  void start(DoneFn on_done) override;
  bool has_free_slot() const override { return !stopping_ && busy_ < threads_.size(); }
  void submit(Job job) override;
  std::size_t running() const override { return busy_; }
  void stop(std::function<void()> done) override;
  void terminate() override;

 private:
  void run_thread();
  void join_all();

  asio::io_context& io_;
  const TaskRegistry& registry_;
  unsigned concurrency_;
  std::string hostname_;
  DoneFn on_done_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;  // guarded by mu_
  bool quit_ = false;      // guarded by mu_
  std::size_t busy_ = 0;   // loop thread only
  bool stopping_ = false;  // loop thread only
  std::function<void()> stop_done_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;  // keeps io alive for results
};

}  // namespace mb::worker
