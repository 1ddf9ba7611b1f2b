// thread_pool.cpp: worker threads that run tasks in-process.
#include "worker/thread_pool.hpp"

#include "worker/executor.hpp"

namespace mb::worker {

ThreadPool::ThreadPool(asio::io_context& io, const TaskRegistry& registry, unsigned concurrency, std::string hostname)
    : io_(io), registry_(registry), concurrency_(concurrency ? concurrency : 1), hostname_(std::move(hostname)) {}

ThreadPool::~ThreadPool() { join_all(); }

void ThreadPool::start(DoneFn on_done) {
  on_done_ = std::move(on_done);
  work_.emplace(asio::make_work_guard(io_));
  for (unsigned i = 0; i < concurrency_; ++i) threads_.emplace_back([this] { run_thread(); });
}

void ThreadPool::submit(Job job) {
  ++busy_;
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void ThreadPool::run_thread() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return quit_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    Execution ex = execute_task(registry_, job.task, job.soft_time_limit, hostname_);
    JobDone done{job.seq, std::move(ex.result), ex.retry_countdown};
    asio::post(io_, [this, done = std::move(done)]() mutable {
      --busy_;
      on_done_(std::move(done));
      if (stopping_ && busy_ == 0 && stop_done_) {
        auto f = std::move(stop_done_);
        stop_done_ = nullptr;
        work_.reset();
        f();
      }
    });
  }
}

void ThreadPool::stop(std::function<void()> done) {
  stopping_ = true;
  if (busy_ == 0) {
    work_.reset();
    asio::post(io_, std::move(done));
  } else {
    stop_done_ = std::move(done);
  }
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
  for (auto& t : threads_)
    if (t.joinable()) t.detach();
  threads_.clear();
}

void ThreadPool::join_all() {
  {
    std::lock_guard lock(mu_);
    quit_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

}  // namespace mb::worker
