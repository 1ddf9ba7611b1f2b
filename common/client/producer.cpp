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
  if (r) return *r;
  std::string what = "task " + id_ + " did not finish within " + std::to_string(timeout.count()) + "s";
  if (slot_->generation && *slot_->generation > slot_->sent_in)
    what += " (the broker connection was lost after it was sent: a result published while the reply queue was "
            "gone is lost, as with Celery's rpc:// backend)";
  throw TimeoutError(what);
}

Producer::Producer(ProducerOptions options)
    : options_(std::move(options)), work_(asio::make_work_guard(io_)) {
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  origin_ = "gen" + std::to_string(getpid()) + "@" + host;
  if (options_.want_results) reply_queue_ = task::make_uuid();  // the same name across reconnects
  auto ready = std::make_shared<std::promise<void>>();
  auto fut = ready->get_future();
  asio::co_spawn(io_, run(ready), asio::detached);
  thread_ = std::thread([this] { io_.run(); });
  try {
    fut.get();
  } catch (...) {
    close();
    throw;
  }
}

Producer::~Producer() { close(); }

// Connect, serve until the connection is lost, reconnect with backoff; the
// first failure to connect goes to the constructor instead.
asio::awaitable<void> Producer::run(std::shared_ptr<std::promise<void>> ready) {
  double backoff = kFirstReconnectBackoff;
  wake_ = std::make_unique<asio::steady_timer>(io_);
  while (!closing_) {
    try {
      co_await connect();
      if (ready) {
        ready->set_value();
        ready.reset();
      } else {
        spdlog::info("producer: reconnected to the broker");
      }
      backoff = kFirstReconnectBackoff;
      wake_->expires_at(asio::steady_timer::time_point::max());
      std::error_code ec;
      if (conn_->is_open()) co_await wake_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    } catch (const std::exception& e) {
      if (ready) {
        ready->set_exception(std::current_exception());
        co_return;
      }
      spdlog::warn("producer: cannot reconnect: {}", e.what());
    }
    connected_ = false;
    channel_ = nullptr;
    if (closing_) break;
    spdlog::warn("producer: broker connection lost; reconnecting in {:.1f}s", backoff);
    wake_->expires_after(std::chrono::duration_cast<asio::steady_timer::duration>(std::chrono::duration<double>(backoff)));
    std::error_code ec;
    co_await wake_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    backoff = std::min(backoff * 2, kMaxReconnectBackoff);
  }
}

asio::awaitable<void> Producer::connect() {
  ConnectionOptions co;
  co.url = parse_broker_url(options_.url);
  co.heartbeat = 0;  // as kombu's producer connections: the broker must not expect heartbeats
  co.connection_name = "miniproducer " + origin_;
  auto conn = Connection::create(io_, co);
  conn_ = conn;
  {
    std::lock_guard lock(mu_);
    declared_.clear();
    bound_.clear();
    broker_delays_.reset();
  }
  co_await conn->open();
  conn->on_closed([this, conn](const std::string& reason) {
    if (conn_ != conn) return;
    if (!closing_) spdlog::warn("producer: {}", reason);
    connected_ = false;
    ++*generation_;
    wake_->cancel();
  });
  channel_ = co_await conn->open_channel();
  channel_->on_closed([conn](const AmqpError& e) { conn->abort(std::string("channel closed: ") + e.what()); });
  if (options_.want_results) {
    // Not auto-delete: it outlives a dropped connection for a while, so results
    // published while we reconnect wait for us; close() deletes it.
    QueueOptions q;
    q.arguments.set("x-expires", static_cast<std::int32_t>(std::chrono::milliseconds(kReplyQueueExpiry).count()));
    co_await channel_->queue_declare(reply_queue_, q);
    const Channel::DeliveryFn on_delivery = [this](Delivery&& d) { on_result(std::move(d)); };
    reply_consumer_ = co_await channel_->consume(reply_queue_, "", true, on_delivery);
  }
  std::set<std::string> queues{options_.queue};
  for (const auto& u : unsent_) queues.insert(u.routing_key);
  QueueOptions tq;
  tq.durable = true;
  for (const auto& queue : queues) co_await channel_->queue_declare(queue, tq);
  {
    std::lock_guard lock(mu_);
    declared_ = std::move(queues);
  }
  connected_ = true;
  // Calls made while reconnecting go straight to their queues: a delay left
  // to the eta header, which the worker honours.
  while (!unsent_.empty() && channel_->is_open()) {
    Unsent& u = unsent_.front();
    if (!u.exchange.empty()) {
      u.exchange.clear();
      u.message.properties.headers->erase("x-delay");
    }
    channel_->publish(u.exchange, u.routing_key, u.message.properties, u.message.body);
    unsent_.pop_front();
    --unsent_count_;
  }
}

void Producer::run_on_io(std::function<asio::awaitable<void>()> step) {
  auto done = std::make_shared<std::promise<void>>();
  auto fut = done->get_future();
  asio::co_spawn(
      io_,
      [step = std::move(step), done]() -> asio::awaitable<void> {
        try {
          co_await step();
          done->set_value();
        } catch (...) {
          done->set_exception(std::current_exception());
        }
      },
      asio::detached);
  fut.get();
}

bool Producer::prepare_queue(const std::string& queue, bool delayed) {
  const bool want_broker = delayed && options_.delay_mode != DelayMode::kWorker;
  {
    std::lock_guard lock(mu_);
    if (declared_.contains(queue) && (!want_broker || bound_.contains(queue) || broker_delays_ == false))
      return want_broker && bound_.contains(queue);
  }
  run_on_io([this, &queue, want_broker]() -> asio::awaitable<void> {
    Channel* ch = channel_;  // run() drops channel_ when the connection goes: ch then fails, safely
    if (!connected_ || !ch) throw AmqpError(0, "producer is not connected");
    std::unique_lock lock(mu_);
    const bool declared = declared_.contains(queue);
    std::optional<bool> delays = broker_delays_;
    lock.unlock();
    if (!declared) {
      QueueOptions q;
      q.durable = true;
      co_await ch->queue_declare(queue, q);
    }
    if (want_broker && !delays) {
      ConnectionOptions co;
      co.url = parse_broker_url(options_.url);
      co.connection_name = "miniproducer " + origin_;
      delays = co_await probe_delayed_exchange(io_, co);
      spdlog::debug("producer: tasks due later wait in {}", *delays ? "the broker's delayed exchange" : "the worker");
    }
    if (want_broker && *delays) co_await bind_delayed(*ch, queue);
    lock.lock();
    declared_.insert(queue);
    if (delays) broker_delays_ = delays;
    if (want_broker && *delays) bound_.insert(queue);
  });
  std::lock_guard lock(mu_);
  if (want_broker && options_.delay_mode == DelayMode::kBroker && broker_delays_ == false)
    throw AmqpError(0, "--delay-mode broker: the broker has no " + std::string(kDelayedExchangeType) + " exchange type");
  return want_broker && bound_.contains(queue);
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
  if (closing_) throw AmqpError(0, "producer is closed");
  if (unsent_count_ >= kMaxUnsent)
    throw AmqpError(0, "producer is not connected and holds " + std::to_string(kMaxUnsent) + " unsent calls already");
  std::string queue = o.queue.empty() ? options_.queue : o.queue;
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
  // A connection lost now: the queue is declared on the next one, and the
  // delay goes with the eta header alone (the worker holds the task).
  bool through_broker = false;
  if (connected_) {
    try {
      through_broker = prepare_queue(queue, t.eta - now >= kMinBrokerDelay);
    } catch (const AmqpError&) {
      if (connected_ || options_.delay_mode == DelayMode::kBroker) throw;
    }
  }
  auto slot = std::make_shared<detail::ResultSlot>();
  slot->result.task_id = t.id;
  slot->generation = generation_;
  slot->sent_in = *generation_;
  if (!t.reply_to.empty()) {
    std::lock_guard lock(mu_);
    slots_[t.id] = slot;
  }
  Unsent u{through_broker ? std::string(kDelayedExchange) : std::string(), queue, build_task_message(t, o.priority)};
  // The header carries the eta as well: a consumer that reads it (a Celery
  // worker, miniworker) gets the task when due and runs it at once.
  if (through_broker) set_delay(u.message.properties, t.eta);
  send(std::move(u));
  return AsyncResult(t.id, slot);
}

// Publishes on the io thread, or keeps the message until the connection is back.
void Producer::send(Unsent u) {
  ++unsent_count_;
  asio::post(io_, [this, u = std::move(u)]() mutable {
    if (connected_ && channel_ && channel_->is_open()) {
      channel_->publish(u.exchange, u.routing_key, u.message.properties, u.message.body);
      --unsent_count_;
    } else {
      unsent_.push_back(std::move(u));
    }
  });
}

bool Producer::connected() const { return connected_; }

// On the io thread: delete the reply queue, close, and let run() end.
asio::awaitable<void> Producer::shut_down() {
  auto conn = conn_;
  Channel* ch = channel_;
  if (conn && conn->is_open()) {
    if (ch && ch->is_open() && !reply_queue_.empty()) {
      try {
        co_await ch->cancel(reply_consumer_);  // else the broker tells us it cancelled it
        co_await ch->queue_delete(reply_queue_);
      } catch (const AmqpError& e) {
        spdlog::debug("producer: reply queue not deleted: {}", e.what());
      }
    }
    co_await conn->close();
  }
  if (wake_) wake_->cancel();
}

void Producer::close() {
  if (thread_.joinable()) {
    closing_ = true;
    auto done = std::make_shared<std::promise<void>>();
    auto fut = done->get_future();
    asio::co_spawn(
        io_,
        [this, done]() -> asio::awaitable<void> {
          co_await shut_down();
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
