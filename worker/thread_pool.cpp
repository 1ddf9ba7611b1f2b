// thread_pool.cpp: worker threads that run tasks in-process.
#include "worker/thread_pool.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "worker/executor.hpp"

namespace mb::worker {

ThreadPool::ThreadPool(asio::io_context& io, const TaskRegistry& registry, ThreadPoolOptions options)
    : io_(io), registry_(registry), options_(std::move(options)) {
  if (options_.concurrency == 0) options_.concurrency = 1;
  if (options_.max_abandoned == 0) options_.max_abandoned = options_.concurrency;
}

ThreadPool::~ThreadPool() { join_all(); }

void ThreadPool::start(DoneFn on_done) {
  on_done_ = std::move(on_done);
  work_.emplace(asio::make_work_guard(io_));
  for (unsigned i = 0; i < options_.concurrency; ++i) add_runner();
}

void ThreadPool::add_runner() {
  auto r = std::make_shared<Runner>();
  r->thread = std::thread([this, r] { run_thread(r); });
  runners_.push_back(std::move(r));
}

std::size_t ThreadPool::abandoned() {
  std::erase_if(abandoned_, [](const auto& r) { return r->state == Runner::kGone; });
  return abandoned_.size();
}

void ThreadPool::submit(Job job) {
  ++busy_;
  if (job.time_limit > 0) {
    auto timer = std::make_unique<asio::steady_timer>(io_);
    timer->expires_after(std::chrono::duration_cast<asio::steady_timer::duration>(
        std::chrono::duration<double>(job.time_limit)));
    task::TaskMessage brief;  // what its failure result needs, not the arguments
    brief.id = job.task.id;
    brief.name = job.task.name;
    brief.retries = job.task.retries;
    timer->async_wait([this, seq = job.seq, limit = job.time_limit, brief = std::move(brief)](std::error_code ec) {
      if (!ec) on_time_limit(seq, limit, brief);
    });
    limits_[job.seq] = std::move(timer);
  }
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void ThreadPool::run_thread(const std::shared_ptr<Runner>& self) {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return quit_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      self->state = Runner::kRunning;
      running_[job.seq] = self;
    }
    Execution ex = execute_task(registry_, job.task, job.soft_time_limit, options_.hostname);
    auto running = Runner::kRunning;
    if (!self->state.compare_exchange_strong(running, Runner::kDone)) {
      // Abandoned at the hard limit: its failure was reported, a new thread
      // took its place, and the pool may be gone. Touch nothing but self.
      self->state = Runner::kGone;
      return;
    }
    bool post = false;
    {
      std::lock_guard lock(mu_);
      running_.erase(job.seq);
      done_.push_back(JobDone{job.seq, std::move(ex.result), ex.retry_countdown});
      post = !std::exchange(drain_posted_, true);
    }
    if (post) asio::post(io_, [this] { drain_done(); });
  }
}

void ThreadPool::drain_done() {
  {
    std::lock_guard lock(mu_);
    draining_.swap(done_);
    drain_posted_ = false;
  }
  for (auto& d : draining_) on_result(std::move(d));
  draining_.clear();
}

void ThreadPool::on_result(JobDone done) {
  limits_.erase(done.seq);
  --busy_;
  on_done_(std::move(done));
  maybe_finish_stop();
}

void ThreadPool::on_time_limit(std::uint64_t seq, double limit, const task::TaskMessage& task) {
  limits_.erase(seq);
  std::shared_ptr<Runner> stuck;
  {
    std::lock_guard lock(mu_);
    auto it = running_.find(seq);
    if (it == running_.end()) return;  // not started, or its result is on its way
    auto running = Runner::kRunning;
    if (!it->second->state.compare_exchange_strong(running, Runner::kAbandoned)) return;  // just finished
    stuck = std::move(it->second);
    running_.erase(it);
  }
  stuck->thread.detach();
  std::erase(runners_, stuck);
  abandoned_.push_back(stuck);
  if (!stopping_) add_runner();
  const std::size_t stuck_now = abandoned();
  spdlog::error("pool: task {}[{}] passed its hard time limit ({}s); its thread is abandoned ({} stuck, at most {})",
                task.name, task.id, limit, stuck_now, options_.max_abandoned);
  --busy_;
  on_done_(JobDone{seq, make_error_result(task, task::State::kFailure, "TimeLimitExceeded",
                                          "TimeLimitExceeded(" + std::to_string(limit) + ")", options_.hostname)});
  if (stuck_now > options_.max_abandoned && on_exhausted_)
    on_exhausted_(std::to_string(stuck_now) + " threads are stuck in tasks past their hard time limit");
  maybe_finish_stop();
}

void ThreadPool::stop(std::function<void()> done) {
  stopping_ = true;
  stop_done_ = std::move(done);
  maybe_finish_stop();
}

void ThreadPool::maybe_finish_stop() {
  if (!stopping_ || busy_ > 0 || !stop_done_) return;
  auto done = std::move(stop_done_);
  stop_done_ = nullptr;
  work_.reset();
  asio::post(io_, std::move(done));
}

void ThreadPool::terminate() {
  // Threads cannot be killed; they are detached so exit() does not wait for them.
  work_.reset();
  {
    std::lock_guard lock(mu_);
    quit_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  for (auto& r : runners_)
    if (r->thread.joinable()) r->thread.detach();
  runners_.clear();
}

void ThreadPool::join_all() {
  {
    std::lock_guard lock(mu_);
    quit_ = true;
  }
  cv_.notify_all();
  for (auto& r : runners_)
    if (r->thread.joinable()) r->thread.join();
  runners_.clear();
}

}  // namespace mb::worker
