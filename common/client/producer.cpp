// producer.cpp: producer library: connection on its own io thread, publish,
// reply-queue consumer that completes AsyncResults.
#include "common/client/producer.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <future>

#include "common/client/task_wire.hpp"

namespace mb::client {

bool AsyncResult::ready() const {
  std::lock_guard lock(slot_->mu);
  return slot_->ready;
}

task::State AsyncResult::state() const {
  std::lock_guard lock(slot_->mu);
  return slot_->result.state;
}

std::optional<task::TaskResult> AsyncResult::wait(std::chrono::duration<double> timeout) const {
  std::unique_lock lock(slot_->mu);
  if (!slot_->cv.wait_for(lock, timeout, [&] { return slot_->ready; })) return std::nullopt;
  return slot_->result;
}

task::TaskResult AsyncResult::get(std::chrono::duration<double> timeout) const {
  auto r = wait(timeout);
  if (!r) throw TimeoutError("task " + id_ + " did not finish within " + std::to_string(timeout.count()) + "s");
  return *r;
}

Producer::Producer(ProducerOptions options)
    : options_(std::move(options)), work_(asio::make_work_guard(io_)) {
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  origin_ = "gen" + std::to_string(getpid()) + "@" + host;
  auto ready = std::make_shared<std::promise<void>>();
  auto fut = ready->get_future();
  asio::co_spawn(io_, setup(ready), asio::detached);
  thread_ = std::thread([this] { io_.run(); });
  try {
    fut.get();
  } catch (...) {
    close();
    throw;
  }
}

Producer::~Producer() { close(); }

asio::awaitable<void> Producer::setup(std::shared_ptr<std::promise<void>> ready) {
  try {
    ConnectionOptions co;
    co.url = parse_broker_url(options_.url);
    co.heartbeat = 0;  // as kombu's producer connections: the broker must not expect heartbeats
    co.connection_name = "miniproducer " + origin_;
    conn_ = Connection::create(io_, co);
    co_await conn_->open();
    conn_->on_closed([this](const std::string& reason) {
      connected_ = false;
      std::lock_guard lock(mu_);
      error_ = reason;
    });
    channel_ = co_await conn_->open_channel();
    if (options_.want_results) {
      reply_queue_ = task::make_uuid();
      QueueOptions q;
      q.auto_delete = true;
      q.arguments.set("x-expires", static_cast<std::int32_t>(86400000));
      co_await channel_->queue_declare(reply_queue_, q);
      const Channel::DeliveryFn on_delivery = [this](Delivery&& d) { on_result(std::move(d)); };
      co_await channel_->consume(reply_queue_, "", true, on_delivery);
    }
    QueueOptions tq;
    tq.durable = true;
    co_await channel_->queue_declare(options_.queue, tq);
    {
      std::lock_guard lock(mu_);
      declared_.insert(options_.queue);
    }
    connected_ = true;
    ready->set_value();
  } catch (...) {
    ready->set_exception(std::current_exception());
  }
}

asio::awaitable<void> Producer::declare_queue(std::string queue, std::shared_ptr<std::promise<void>> done) {
  try {
    QueueOptions q;
    q.durable = true;
    co_await channel_->queue_declare(queue, q);
    done->set_value();
  } catch (...) {
    done->set_exception(std::current_exception());
  }
}

void Producer::on_result(Delivery&& d) {
  task::TaskResult r;
  try {
    r = parse_result_message(d.properties, d.body);
  } catch (const std::exception& e) {
    spdlog::warn("unreadable result message: {}", e.what());
    return;
  }
  std::string key = d.properties.correlation_id ? *d.properties.correlation_id : r.task_id;
  std::shared_ptr<detail::ResultSlot> slot;
  {
    std::lock_guard lock(mu_);
    auto it = slots_.find(key);
    if (it == slots_.end()) return;
    slot = it->second;
    if (r.ready()) slots_.erase(it);
  }
  {
    std::lock_guard lock(slot->mu);
    slot->result = std::move(r);
    slot->ready = slot->result.ready();
  }
  slot->cv.notify_all();
}

AsyncResult Producer::delay(std::string name, task::List args, task::Map kwargs) {
  return apply_async(std::move(name), std::move(args), std::move(kwargs), CallOptions{});
}

AsyncResult Producer::apply_async(std::string name, task::List args, task::Map kwargs, const CallOptions& o) {
  if (!connected_) {
    std::lock_guard lock(mu_);
    throw AmqpError(0, "producer is not connected" + (error_.empty() ? std::string() : ": " + error_));
  }
  std::string queue = o.queue.empty() ? options_.queue : o.queue;
  bool need_declare = false;
  {
    std::lock_guard lock(mu_);
    need_declare = declared_.insert(queue).second;
  }
  if (need_declare) {
    auto done = std::make_shared<std::promise<void>>();
    auto fut = done->get_future();
    asio::co_spawn(io_, declare_queue(queue, done), asio::detached);
    fut.get();
  }
  task::TaskMessage t;
  t.id = o.task_id.empty() ? task::make_uuid() : o.task_id;
  t.name = std::move(name);
  t.args = std::move(args);
  t.kwargs = std::move(kwargs);
  double now = task::unix_now();
  t.eta = o.eta > 0 ? o.eta : (o.countdown > 0 ? now + o.countdown : 0);
  t.expires = o.expires > 0 ? now + o.expires : 0;
  t.root_id = t.id;
  t.correlation_id = t.id;
  t.reply_to = (options_.want_results && !o.ignore_result) ? reply_queue_ : std::string();
  t.origin = origin_;
  t.soft_time_limit = o.soft_time_limit;
  t.time_limit = o.time_limit;
  t.ignore_result = o.ignore_result;
  t.format = options_.format;
  auto slot = std::make_shared<detail::ResultSlot>();
  slot->result.task_id = t.id;
  if (!t.reply_to.empty()) {
    std::lock_guard lock(mu_);
    slots_[t.id] = slot;
  }
  auto msg = std::make_shared<OutgoingMessage>(build_task_message(t, o.priority));
  asio::post(io_, [this, msg, queue] {
    if (channel_ && channel_->is_open()) channel_->publish("", queue, msg->properties, msg->body);
  });
  return AsyncResult(t.id, slot);
}

bool Producer::connected() const { return connected_; }

void Producer::close() {
  if (thread_.joinable()) {
    auto done = std::make_shared<std::promise<void>>();
    auto fut = done->get_future();
    asio::co_spawn(
        io_,
        [this, done]() -> asio::awaitable<void> {
          if (conn_) co_await conn_->close();
          done->set_value();
        },
        asio::detached);
    fut.wait_for(std::chrono::seconds(3));
    work_.reset();
    io_.stop();
    thread_.join();
  }
  connected_ = false;
}

}  // namespace mb::client
