// producer.hpp: the C++ producer library: send tasks, get their results back
// through the rpc:// convention (a private reply queue, reply_to and
// correlation_id). Thread-safe; runs its own io thread.
//
//   mb::client::Producer p({.url = "amqp://guest:guest@localhost:5672//"});
//   auto r = p.delay("add", {5, 5});
//   mb::task::TaskResult res = r.get(std::chrono::seconds(10));  // res.value == 10
#pragma once

#include <asio.hpp>
#include <chrono>
#include <atomic>
#include <condition_variable>
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
#include "common/task/message.hpp"

namespace mb::client {

inline constexpr std::string_view kDefaultQueue = "celery";  // Celery's default queue name

struct ProducerOptions {
  std::string url = std::string(kDefaultBrokerUrl);
  std::string queue = std::string(kDefaultQueue);
  task::WireFormat format = task::WireFormat::kCapnp;
  bool want_results = true;  // false: no reply queue (fire and forget)
};

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
};
}  // namespace detail

class AsyncResult {
 public:
  AsyncResult() = default;
  AsyncResult(std::string id, std::shared_ptr<detail::ResultSlot> slot) : id_(std::move(id)), slot_(std::move(slot)) {}
  const std::string& id() const { return id_; }
  bool ready() const;
  task::State state() const;
  // The final result (SUCCESS, FAILURE or REVOKED); throws TimeoutError.
  task::TaskResult get(std::chrono::duration<double> timeout) const;
  std::optional<task::TaskResult> wait(std::chrono::duration<double> timeout) const;

 private:
  std::string id_;
  std::shared_ptr<detail::ResultSlot> slot_;
};

class Producer {
 public:
  // Connects and declares; throws AmqpError / std::invalid_argument.
  explicit Producer(ProducerOptions options);
  ~Producer();
  Producer(const Producer&) = delete;
  Producer& operator=(const Producer&) = delete;

  AsyncResult delay(std::string name, task::List args = {}, task::Map kwargs = {});
  AsyncResult apply_async(std::string name, task::List args, task::Map kwargs, const CallOptions& options);
  bool connected() const;
  void close();

 private:
  asio::awaitable<void> setup(std::shared_ptr<std::promise<void>> ready);
  asio::awaitable<void> declare_queue(std::string queue, std::shared_ptr<std::promise<void>> done);
  void on_result(Delivery&& d);

  ProducerOptions options_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;
  std::shared_ptr<Connection> conn_;  // io thread only
  Channel* channel_ = nullptr;        // io thread only, HELD NOT OWNED
  std::string reply_queue_;
  std::string origin_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<detail::ResultSlot>> slots_;  // guarded by mu_
  std::set<std::string> declared_;                                      // guarded by mu_
  std::atomic<bool> connected_{false};
  std::string error_;  // why the connection was lost, guarded by mu_
};

}  // namespace mb::client
