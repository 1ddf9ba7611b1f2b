// producer.hpp: the C++ producer library: send tasks, get their results back
// through the rpc:// convention (a private reply queue, reply_to and
// correlation_id). Thread-safe; runs its own io thread.
//
// When the broker connection drops, the producer reconnects with backoff,
// declares its reply queue again under the same name and goes on; calls made
// meanwhile are sent once it is back. Results in flight: the reply queue is
// not durable and outlives a dropped connection by kReplyQueueExpiry, so a
// result published while the producer reconnects waits there, but one
// published while the broker restarts (the queue is gone) is lost, as with
// Celery's rpc:// backend; get() then times out with a TimeoutError that says
// the connection was lost after the task was sent.
//
//   mb::client::Producer p({.url = "amqp://guest:guest@localhost:5672//"});
//   auto r = p.delay("add", {5, 5});
//   mb::task::TaskResult res = r.get(std::chrono::seconds(10));  // res.value == 10
#pragma once

#include <asio.hpp>
#include <chrono>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

#include "common/client/connection.hpp"
#include "common/client/delayed.hpp"
#include "common/client/task_wire.hpp"
#include "common/task/message.hpp"

namespace mb::client {

inline constexpr std::string_view kDefaultQueue = "celery";  // Celery's default queue name

struct ProducerOptions {
  std::string url = std::string(kDefaultBrokerUrl);
  std::string queue = std::string(kDefaultQueue);
  task::WireFormat format = task::WireFormat::kCapnp;
  bool want_results = true;  // false: no reply queue (fire and forget)
  // Where a countdown or eta waits: auto uses the broker's delayed exchange
  // when it has one (probed at the first such call), else the task goes
  // straight to its queue with its eta and the worker holds it.
  DelayMode delay_mode = DelayMode::kAuto;
};

// How long the reply queue outlives the producer's connection (x-expires).
inline constexpr std::chrono::seconds kReplyQueueExpiry{300};
// Calls kept while the producer reconnects, at most; past it apply_async throws.
inline constexpr std::size_t kMaxUnsent = 100000;

struct CallOptions {
  double countdown = 0;  // seconds from now
  double eta = 0;        // unix seconds (overrides countdown)
  double expires = 0;    // seconds from now
  std::string queue;     // empty: the producer's default
  int priority = -1;     // < 0: none
  double soft_time_limit = 0;
  double time_limit = 0;
  bool ignore_result = false;
  std::string task_id;   // empty: a new uuid
};

class TimeoutError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
struct ResultSlot {
  std::mutex mu;
  std::condition_variable cv;
  task::TaskResult result;  // state kPending until something arrives
  bool ready = false;
  std::uint64_t sent_in = 0;  // the producer's connection generation when it was sent
  // The producer's connection generation now: shared by its slots.
  std::shared_ptr<const std::atomic<std::uint64_t>> generation;
};
}  // namespace detail

class AsyncResult {
 public:
  AsyncResult() = default;
  AsyncResult(std::string id, std::shared_ptr<detail::ResultSlot> slot) : id_(std::move(id)), slot_(std::move(slot)) {}
  const std::string& id() const { return id_; }
  bool ready() const;
  task::State state() const;
  // The final result (SUCCESS, FAILURE or REVOKED); throws TimeoutError,
  // which says when the connection was lost after the task was sent.
  task::TaskResult get(std::chrono::duration<double> timeout) const;
  std::optional<task::TaskResult> wait(std::chrono::duration<double> timeout) const;

 private:
  std::string id_;
  std::shared_ptr<detail::ResultSlot> slot_;
};

class Producer {
 public:
  // Connects and declares; throws AmqpError / std::invalid_argument when the
  // first connection fails (later ones are retried with backoff).
  explicit Producer(ProducerOptions options);
  ~Producer();
  Producer(const Producer&) = delete;
  Producer& operator=(const Producer&) = delete;

  AsyncResult delay(std::string name, task::List args = {}, task::Map kwargs = {});
  AsyncResult apply_async(std::string name, task::List args, task::Map kwargs, const CallOptions& options);
  bool connected() const;
  void close();

 private:
  struct Unsent {
    std::string exchange;
    std::string routing_key;
    OutgoingMessage message;
  };

  asio::awaitable<void> run(std::shared_ptr<std::promise<void>> ready);
  asio::awaitable<void> connect();
  asio::awaitable<void> shut_down();
  // Runs `step` on the io thread and waits for it; rethrows what it throws.
  void run_on_io(std::function<asio::awaitable<void>()> step);
  // Declares the queue (once per connection) and, for a delayed call through
  // the broker, binds it to the delayed exchange; returns whether the broker
  // takes the delay.
  bool prepare_queue(const std::string& queue, bool delayed);
  void send(Unsent u);
  void on_result(Delivery&& d);

  ProducerOptions options_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;
  std::shared_ptr<Connection> conn_;  // io thread only
  Channel* channel_ = nullptr;        // io thread only, HELD NOT OWNED
  std::unique_ptr<asio::steady_timer> wake_;  // io thread only: connection lost, or close()
  std::deque<Unsent> unsent_;                 // io thread only: calls made while reconnecting
  std::string reply_queue_;
  std::string reply_consumer_;  // io thread only: its consumer tag on this connection
  std::string origin_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<detail::ResultSlot>> slots_;  // guarded by mu_
  std::set<std::string> declared_;  // queues declared on this connection, guarded by mu_
  std::set<std::string> bound_;     // queues bound to the delayed exchange on this connection, guarded by mu_
  std::optional<bool> broker_delays_;  // probed on this connection, guarded by mu_
  std::atomic<bool> connected_{false};
  std::atomic<bool> closing_{false};
  std::atomic<std::size_t> unsent_count_{0};
  std::shared_ptr<std::atomic<std::uint64_t>> generation_ = std::make_shared<std::atomic<std::uint64_t>>(0);
};

}  // namespace mb::client
