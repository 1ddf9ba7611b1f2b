// thread_pool.cpp: worker threads that run tasks in-process.
#include "worker/thread_pool.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "common/task/message.hpp"
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
  submitted_.push_back(std::move(job));
  if (!std::exchange(flush_posted_, true)) asio::post(io_, [this] { flush_submitted(); });
}

// The tasks submitted during one turn of the loop (the deliveries of one
// read, say) go to the queue under one lock, and wake at most as many
// threads as there are tasks: the threads do not fight the loop for the lock
// task by task.
void ThreadPool::flush_submitted() {
  flush_posted_ = false;
  if (submitted_.empty()) return;
  const std::size_t n = submitted_.size();
  {
    std::lock_guard lock(mu_);
    for (auto& j : submitted_) queue_.push_back(std::move(j));
  }
  submitted_.clear();
  if (n >= runners_.size())
    cv_.notify_all();
  else
    for (std::size_t i = 0; i < n; ++i) cv_.notify_one();  // no system call when no thread waits
}

std::size_t ThreadPool::active() const {
  std::lock_guard lock(mu_);
  return running_.size();
}

std::vector<std::pair<std::uint64_t, double>> ThreadPool::started() const {
  std::vector<std::pair<std::uint64_t, double>> out;
  std::lock_guard lock(mu_);
  out.reserve(running_.size());
  for (const auto& [seq, r] : running_) out.emplace_back(seq, r.time_start);
  return out;
}

std::vector<std::uint64_t> ThreadPool::recall() {
  std::deque<Job> taken;
  {
    std::lock_guard lock(mu_);
    taken.swap(queue_);
  }
  std::vector<std::uint64_t> seqs;
  seqs.reserve(taken.size() + submitted_.size());
  for (const auto& j : taken) seqs.push_back(j.seq);
  for (const auto& j : submitted_) seqs.push_back(j.seq);
  busy_ -= seqs.size();
  submitted_.clear();
  return seqs;
}

void ThreadPool::run_thread(const std::shared_ptr<Runner>& self) {
  for (;;) {
    Job job;
    bool post = false;
    bool expired = false;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return quit_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      // The task starts now: expiry is checked, and the start reported, at
      // this moment rather than when it was queued.
      const double now = task::unix_now();
      expired = job.task->expires > 0 && now >= job.task->expires;
      if (expired) {
        JobDone d;
        d.seq = job.seq;
        d.expired = true;
        done_.push_back(std::move(d));
        post = !std::exchange(drain_posted_, true);
      } else {
        self->state = Runner::kRunning;
        running_[job.seq] = RunningJob{self, now};
        if (job.report_start || job.time_limit > 0) {
          StartNotice n;
          n.seq = job.seq;
          n.time_start = now;
          n.mono = std::chrono::steady_clock::now();
          n.time_limit = job.time_limit;
          if (job.time_limit > 0) {
            n.brief.id = job.task->id;
            n.brief.name = job.task->name;
            n.brief.retries = job.task->retries;
          }
          starts_.push_back(std::move(n));
          post = !std::exchange(drain_posted_, true);
        }
      }
    }
    if (post) asio::post(io_, [this] { drain_done(); });
    if (expired) continue;
    Execution ex = execute_task(registry_, *job.task, job.soft_time_limit, options_.hostname);
    auto running = Runner::kRunning;
    if (!self->state.compare_exchange_strong(running, Runner::kDone)) {
      // Abandoned at the hard limit: its failure was reported, a new thread
      // took its place, and the pool may be gone. Touch nothing but self.
      self->state = Runner::kGone;
      return;
    }
    post = false;
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
    starting_.swap(starts_);
    draining_.swap(done_);
    drain_posted_ = false;
  }
  for (auto& s : starting_) {
    if (s.time_limit > 0) arm_time_limit(s);
    if (on_started_) on_started_(s.seq, s.time_start);
  }
  starting_.clear();
  for (auto& d : draining_) on_result(std::move(d));
  draining_.clear();
}

void ThreadPool::arm_time_limit(StartNotice& s) {
  auto timer = std::make_unique<asio::steady_timer>(io_);
  timer->expires_at(s.mono + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                 std::chrono::duration<double>(s.time_limit)));
  timer->async_wait([this, seq = s.seq, limit = s.time_limit, brief = std::move(s.brief)](std::error_code ec) {
    if (!ec) on_time_limit(seq, limit, brief);
  });
  limits_[s.seq] = std::move(timer);
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
    if (it == running_.end()) return;  // its result is on its way
    auto running = Runner::kRunning;
    if (!it->second.runner->state.compare_exchange_strong(running, Runner::kAbandoned)) return;  // just finished
    stuck = std::move(it->second.runner);
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
  recall();  // not started: the worker leaves them unacked (or took them back first)
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
  submitted_.clear();
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
