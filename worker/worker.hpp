// worker.hpp: the worker's parent process logic: hold the AMQP connection,
// consume, decide (unknown, expired, held until its eta), hand tasks to the
// pool, publish results to reply_to, acknowledge after the result is
// published, retry, reconnect with backoff, shut down gracefully.
// Everything runs on one io_context thread.
#pragma once

#include <asio.hpp>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>

#include "common/client/connection.hpp"
#include "common/client/task_wire.hpp"
#include "worker/control.hpp"
#include "worker/events.hpp"
#include "worker/options.hpp"
#include "worker/pool.hpp"
#include "worker/prefetch_window.hpp"
#include "worker/registry.hpp"

namespace mb::worker {

class Worker {
 public:
  // registry and pool: HELD NOT OWNED.
  Worker(asio::io_context& io, WorkerOptions options, const TaskRegistry& registry, Pool& pool);
  void start();
  // First SIGTERM/SIGINT: stop consuming, finish running tasks, publish, ack, close.
  void shutdown_gracefully();
  // Second signal: leave at once (the broker requeues what was unacked).
  [[noreturn]] void shutdown_now();
  // The pool cannot go on: close the connection (what was published goes out
  // first; the broker requeues what was unacked) and exit kExitForRestart.
  void exit_for_restart(const std::string& why);
  int exit_code() const { return exit_code_; }

 private:
  struct Job {
    // Shared with the pool while it runs, so never changed: a retry replaces it.
    std::shared_ptr<const task::TaskMessage> task;
    std::uint64_t delivery_tag = 0;
    std::uint64_t epoch = 0;  // connection generation the delivery tag belongs to
    std::string queue;
    std::string exchange;      // as delivered, for `inspect active`
    bool redelivered = false;
    std::uint8_t priority = 0;
    double time_start = 0;     // unix seconds when it started (see Pool::started); 0: not started or not told
    bool acked = false;
    bool held = false;       // waiting for its eta in this worker
    bool deferring = false;  // a copy is on its way to the broker; settled when confirmed
    std::unique_ptr<asio::steady_timer> timer;
  };

  asio::awaitable<void> run();
  asio::awaitable<void> session();
  void on_delivery(client::Delivery&& d, const std::string& queue);
  void hold(std::uint64_t seq);
  void defer(std::uint64_t seq, std::string exchange, client::OutgoingMessage msg, bool ran);
  asio::awaitable<void> publish_deferred(std::uint64_t seq, std::string exchange, client::OutgoingMessage msg,
                                         bool ran);
  void enqueue(std::uint64_t seq);
  void dispatch();
  void on_started(std::uint64_t seq, double time_start);
  void on_done(JobDone done);
  void publish_result(const Job& job, const task::TaskResult& r);
  void republish_retry(std::uint64_t seq, double countdown);
  void revoke_expired(std::uint64_t seq);
  void settle(Job& job, bool ack, bool requeue = false);
  void finish_job(std::uint64_t seq);
  void update_qos();
  void tick_window();
  void on_window_tick();
  void ramp_window();
  void release_excess();
  void on_connection_lost();
  void maybe_finish_shutdown();
  std::uint16_t prefetch() const;
  WorkerStatus status() const;
  WorkerLoad load() const;

  asio::io_context& io_;
  WorkerOptions options_;
  const TaskRegistry& registry_;
  Pool& pool_;
  std::shared_ptr<client::Connection> conn_;
  client::Channel* channel_ = nullptr;          // HELD NOT OWNED: owned by conn_
  client::Channel* confirm_channel_ = nullptr;  // HELD NOT OWNED: republishes, in confirm mode
  bool broker_delays_ = false;                  // this session has the broker's delayed exchange
  std::vector<std::string> consumer_tags_;
  std::uint64_t epoch_ = 0;
  std::uint64_t next_seq_ = 1;
  std::map<std::uint64_t, Job> jobs_;
  std::deque<std::uint64_t> ready_;
  std::size_t held_ = 0;
  // The window's size follows the rate tasks finish at, measured over each
  // kWindowTick while the worker has tasks (see prefetch_window.hpp).
  PrefetchWindow window_;
  asio::steady_timer window_timer_;
  bool window_ticking_ = false;
  std::uint64_t processed_at_tick_ = 0;
  std::chrono::steady_clock::time_point tick_start_;
  std::size_t deferring_ = 0;  // republishes awaiting their confirm
  bool connected_ = false;
  bool stopping_ = false;
  bool finished_ = false;
  int exit_code_ = 0;
  std::uint64_t processed_ = 0;
  std::map<std::string, std::uint64_t, std::less<>> totals_;  // finished tasks by name (inspect stats)
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  LamportClock clock_;
  EventPublisher events_;
  ControlPlane control_;
  std::unique_ptr<asio::steady_timer> closed_signal_;
};

}  // namespace mb::worker
