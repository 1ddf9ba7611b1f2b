// worker.cpp: consume -> decide -> pool -> result -> ack, with reconnects.
#include "worker/worker.hpp"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>

#include "common/client/task_wire.hpp"
#include "common/task/celery.hpp"
#include "worker/executor.hpp"

namespace mb::worker {

namespace {

// The prefetch window is the channel's (basic.qos global=true), shared by the
// consumers of every queue. RabbitMQ applies a per-consumer limit
// (global=false) only to consumers created after it, so raising the window
// while a task is held would not reach the live consumer; a channel-wide limit
// changes at once on RabbitMQ and on minibroker. Celery's worker does the same
// on RabbitMQ.
constexpr bool kChannelWideWindow = true;

// How often the prefetch window is sized again while the worker has tasks
// (PrefetchWindow judges kSpan of these together, but for the ramp).
constexpr auto kWindowTick = std::chrono::milliseconds(5);

std::size_t celery_window(const WorkerOptions& o) {
  return static_cast<std::size_t>(std::max(1u, o.concurrency)) * o.prefetch_multiplier;
}

std::chrono::steady_clock::duration seconds_d(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

}  // namespace

Worker::Worker(asio::io_context& io, WorkerOptions options, const TaskRegistry& registry, Pool& pool)
    : io_(io),
      options_(std::move(options)),
      registry_(registry),
      pool_(pool),
      // Unlimited (multiplier 0) and ack-early windows have nothing to size.
      window_(celery_window(options_),
              options_.prefetch_multiplier == 0 || options_.ack_early ? 0.0 : options_.prefetch_budget),
      window_timer_(io),
      events_(io, EventSource{options_.hostname, static_cast<std::int64_t>(getpid())}, clock_, options_.task_events,
              options_.heartbeat_interval, [this] { return load(); }),
      control_(options_.hostname, clock_, events_, [this] { return status(); }) {}

WorkerLoad Worker::load() const {
  WorkerLoad l;
  l.active = pool_.active();
  l.processed = processed_;
  return l;
}

WorkerStatus Worker::status() const {
  WorkerStatus s;
  s.hostname = options_.hostname;
  s.pid = getpid();
  s.clock = clock_.value();
  s.uptime = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  s.total.insert(totals_.begin(), totals_.end());
  s.registered = registry_.names();
  const bool threads = options_.pool == PoolKind::kThreads;
  std::map<std::uint64_t, double> started;  // pools that queue jobs know which ones started
  for (const auto& [seq, t] : pool_.started()) started.emplace(seq, t);
  for (const auto& [seq, job] : jobs_) {
    double time_start = job.time_start;
    if (auto st = started.find(seq); st != started.end()) time_start = st->second;
    if (time_start <= 0) continue;
    ActiveTask a;
    a.id = job.task->id;
    a.name = job.task->name;
    a.args = py_args_repr(job.task->args);
    a.kwargs = py_repr(task::Value(job.task->kwargs));
    a.time_start = time_start;
    a.acknowledged = job.acked;
    a.exchange = job.exchange;
    a.routing_key = job.queue;
    a.priority = job.priority;
    a.redelivered = job.redelivered;
    a.worker_pid = threads ? s.pid : 0;  // which child runs it is the pool's business
    s.active.push_back(std::move(a));
  }
  s.pool = threads ? "threads" : "prefork";
  s.concurrency = options_.concurrency;
  s.max_tasks_per_child = options_.max_tasks_per_child;
  for (pid_t p : pool_.child_pids()) s.processes.push_back(p);
  s.prefetch_count = prefetch();
  if (conn_) {
    const auto url = client::parse_broker_url(options_.broker_url);
    s.broker_host = url.host;
    s.broker_port = url.port;
    s.broker_user = url.user;
    s.broker_vhost = url.vhost;
    s.broker_heartbeat = conn_->heartbeat();
  }
  return s;
}

std::uint16_t Worker::prefetch() const {
  if (options_.prefetch_multiplier == 0) return 0;  // unlimited
  // Messages held for their eta do not take the window (Celery's way).
  return static_cast<std::uint16_t>(std::min<std::size_t>(window_.size() + held_, 65535));
}

void Worker::start() {
  pool_.on_slot_free([this] { dispatch(); });
  pool_.on_started([this](std::uint64_t seq, double time_start) { on_started(seq, time_start); });
  pool_.on_exhausted([this](const std::string& why) { exit_for_restart(why); });
  pool_.start([this](JobDone d) { on_done(std::move(d)); });
  asio::co_spawn(io_, run(), [](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      spdlog::critical("worker loop failed: {}", ex.what());
    }
  });
}

asio::awaitable<void> Worker::run() {
  double backoff = client::kFirstReconnectBackoff;
  while (!stopping_) {
    try {
      co_await session();
      backoff = client::kFirstReconnectBackoff;
    } catch (const std::exception& e) {
      spdlog::error("broker connection: {}", e.what());
    }
    on_connection_lost();
    if (stopping_) break;
    spdlog::warn("reconnecting in {:.1f}s", backoff);
    asio::steady_timer t(io_);
    t.expires_after(seconds_d(backoff));
    co_await t.async_wait(asio::use_awaitable);
    backoff = std::min(backoff * 2, client::kMaxReconnectBackoff);
  }
  maybe_finish_shutdown();
}

asio::awaitable<void> Worker::session() {
  client::ConnectionOptions co;
  co.url = client::parse_broker_url(options_.broker_url);
  co.connection_name = "miniworker " + options_.hostname;
  broker_delays_ = false;
  if (options_.delay_mode != client::DelayMode::kWorker) {
    broker_delays_ = co_await client::probe_delayed_exchange(io_, co);
    if (!broker_delays_ && options_.delay_mode == client::DelayMode::kBroker) {
      spdlog::critical("--delay-mode broker: the broker has no {} exchange type", client::kDelayedExchangeType);
      exit_code_ = 2;
      shutdown_gracefully();
      co_return;
    }
  }
  auto conn = client::Connection::create(io_, co);
  conn_ = conn;
  closed_signal_ = std::make_unique<asio::steady_timer>(io_, asio::steady_timer::time_point::max());
  conn->on_closed([this, conn](const std::string& reason) {
    if (conn_ == conn) {
      if (!stopping_) spdlog::warn("broker connection lost: {}", reason);
      connected_ = false;
      if (closed_signal_) closed_signal_->cancel();
    }
  });
  co_await conn->open();
  channel_ = co_await conn->open_channel();
  channel_->on_closed([conn](const client::AmqpError& e) { conn->abort(std::string("channel closed: ") + e.what()); });
  confirm_channel_ = co_await conn->open_channel();
  confirm_channel_->on_closed(
      [conn](const client::AmqpError& e) { conn->abort(std::string("confirm channel closed: ") + e.what()); });
  co_await confirm_channel_->confirm_select();
  co_await channel_->qos(prefetch(), kChannelWideWindow);
  connected_ = true;  // before consuming: a delivery may finish before the setup below does
  client::QueueOptions q;
  q.durable = true;
  consumer_tags_.clear();
  for (const auto& queue : options_.queues) {
    co_await channel_->queue_declare(queue, q);
    if (broker_delays_) co_await client::bind_delayed(*channel_, queue);
    const client::Channel::DeliveryFn fn = [this, queue](client::Delivery&& d) { on_delivery(std::move(d), queue); };
    // The worker reads 10 of the ~17 headers a Celery task carries: left
    // encoded, the others are stepped over instead of decoded.
    std::string tag = co_await channel_->consume(queue, "", false, fn, client::HeadersForm::kEncoded);
    consumer_tags_.push_back(tag);
  }
  co_await control_.attach(*conn);
  co_await events_.attach(*conn);
  spdlog::info("{} ready: consuming {} from {}:{} ({} pool, concurrency {}, prefetch {})", options_.hostname,
               fmt::join(options_.queues, ","), co.url.host, co.url.port,
               options_.pool == PoolKind::kPrefork ? "prefork" : "threads", options_.concurrency, prefetch());
  if (broker_delays_)
    spdlog::info("tasks due later wait in the broker: {} exchange '{}'", client::kDelayedExchangeType,
                 client::kDelayedExchange);
  else
    spdlog::info("tasks due later wait in this worker, unacked until due{}",
                 options_.delay_mode == client::DelayMode::kWorker ? " (--delay-mode worker)"
                                                                    : " (the broker has no delayed exchange)");
  std::error_code ec;
  co_await closed_signal_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

void Worker::on_connection_lost() {
  control_.detach();
  events_.detach();
  connected_ = false;
  channel_ = nullptr;
  confirm_channel_ = nullptr;
  ++epoch_;
  // Tasks queued in the pool have not started: take them back with the rest.
  for (std::uint64_t seq : pool_.recall()) ready_.push_back(seq);
  // Tasks that are not running will be redelivered by the broker: forget them
  // (a republish awaiting its confirm may or may not have reached the broker:
  // at least once).
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    const Job& job = it->second;
    bool running = std::find(ready_.begin(), ready_.end(), it->first) == ready_.end() && !job.held && !job.deferring;
    if (!running) {
      if (it->second.timer) it->second.timer->cancel();
      it = jobs_.erase(it);
    } else {
      ++it;
    }
  }
  ready_.clear();
  held_ = 0;
  window_.reset();  // the new session starts from Celery's window
}

void Worker::on_delivery(client::Delivery&& d, const std::string& queue) {
  task::TaskMessage t;
  try {
    t = client::parse_task_message(d);
  } catch (const std::exception& e) {
    spdlog::error("rejecting unreadable message (delivery {} from {}): {}", d.delivery_tag, queue, e.what());
    channel_->reject(d.delivery_tag, false);
    return;
  }
  std::uint64_t seq = next_seq_++;
  tick_window();
  Job& job = jobs_[seq];
  job.task = std::make_shared<const task::TaskMessage>(std::move(t));
  job.delivery_tag = d.delivery_tag;
  job.epoch = epoch_;
  job.queue = queue;
  job.exchange = std::move(d.exchange);
  job.redelivered = d.redelivered;
  job.priority = d.properties.priority.value_or(0);
  spdlog::debug("received {}[{}] retries={}", job.task->name, job.task->id, job.task->retries);

  if (!registry_.find(job.task->name)) {
    spdlog::error("received unregistered task {}[{}]: rejected", job.task->name, job.task->id);
    publish_result(job, make_error_result(*job.task, task::State::kFailure, "NotRegistered",
                                          "'" + job.task->name + "'", options_.hostname));
    settle(job, false, false);
    jobs_.erase(seq);
    return;
  }
  if (events_.task_events()) events_.task_event("task-received", task_received_fields(*job.task));
  if (options_.ack_early) settle(job, true);
  double now = task::unix_now();
  if (job.task->expires > 0 && now >= job.task->expires) {
    revoke_expired(seq);
    return;
  }
  if (job.task->eta - now >= client::kMinBrokerDelay && broker_delays_) {
    // Sent by a producer that could not use the delayed exchange (a Celery
    // client, say): the same message goes back through it, headers and all.
    try {
      client::decode_headers(d);
    } catch (const amqp::DecodeError& e) {  // its task headers read, but another entry is malformed
      spdlog::error("rejecting unreadable message {}[{}]: headers: {}", job.task->name, job.task->id, e.what());
      settle(job, false, false);
      jobs_.erase(seq);
      return;
    }
    defer(seq, std::string(client::kDelayedExchange), client::OutgoingMessage{std::move(d.properties), std::move(d.body)},
          false);
    return;
  }
  if (job.task->eta > now) {
    hold(seq);
    return;
  }
  enqueue(seq);
}

// Held unacked until due, as Celery does; the prefetch window grows by one so
// held tasks do not starve the pool.
void Worker::hold(std::uint64_t seq) {
  Job& job = jobs_.at(seq);
  spdlog::info("task {}[{}] held here until {}", job.task->name, job.task->id, task::format_iso8601(job.task->eta));
  job.held = true;
  ++held_;
  update_qos();
  job.timer = std::make_unique<asio::steady_timer>(io_);
  job.timer->expires_after(seconds_d(std::max(0.0, job.task->eta - task::unix_now())));
  job.timer->async_wait([this, seq](std::error_code ec) {
    if (ec) return;
    auto it = jobs_.find(seq);
    if (it == jobs_.end() || !it->second.held) return;
    it->second.held = false;
    if (held_ > 0) --held_;
    update_qos();
    enqueue(seq);
  });
}

// Publishes msg (the task again, due later) to `exchange` with publisher
// confirms, and acknowledges the job's delivery only once the broker has
// confirmed it: nothing is lost, and this worker holds nothing meanwhile.
// ran: the job has run (a retry), as opposed to deferred on receipt.
void Worker::defer(std::uint64_t seq, std::string exchange, client::OutgoingMessage msg, bool ran) {
  Job& job = jobs_.at(seq);
  if (!confirm_channel_ || !connected_) {  // the broker redelivers the original
    jobs_.erase(seq);
    maybe_finish_shutdown();
    return;
  }
  if (!exchange.empty()) client::set_delay(msg.properties, job.task->eta);
  job.deferring = true;
  ++deferring_;
  asio::co_spawn(io_, publish_deferred(seq, std::move(exchange), std::move(msg), ran), asio::detached);
}

asio::awaitable<void> Worker::publish_deferred(std::uint64_t seq, std::string exchange, client::OutgoingMessage msg,
                                               bool ran) {
  std::string error = "not connected";
  if (auto it = jobs_.find(seq); it != jobs_.end() && confirm_channel_) {
    const std::string queue = it->second.queue;
    try {
      co_await confirm_channel_->publish_confirmed(exchange, queue, msg.properties, msg.body);
      error.clear();
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  --deferring_;
  auto it = jobs_.find(seq);
  if (it == jobs_.end()) {  // the connection was lost meanwhile: the broker redelivers the original
    maybe_finish_shutdown();
    co_return;
  }
  Job& job = it->second;
  job.deferring = false;
  if (error.empty()) {
    spdlog::info("task {}[{}] due at {} waits in {}", job.task->name, job.task->id, task::format_iso8601(job.task->eta),
                 exchange.empty() ? "the queue" : "the broker");
    finish_job(seq);
  } else if (!ran) {
    spdlog::warn("task {}[{}]: the broker did not take it back ({}): held here until due", job.task->name,
                 job.task->id, error);
    hold(seq);
  } else {
    spdlog::error("task {}[{}]: retry not republished ({}): requeued to run again", job.task->name, job.task->id,
                  error);
    settle(job, false, true);
    jobs_.erase(it);
    maybe_finish_shutdown();
  }
}

// Celery's way with a task that expired before it could start: a REVOKED
// result, a task-revoked event, and an ack (not a reject).
void Worker::revoke_expired(std::uint64_t seq) {
  Job& job = jobs_.at(seq);
  spdlog::info("task {}[{}] expired: revoked", job.task->name, job.task->id);
  publish_result(job, make_error_result(*job.task, task::State::kRevoked, "TaskRevokedError", "expired",
                                        options_.hostname));
  if (events_.task_events())
    events_.task_event("task-revoked", task_revoked_fields(job.task->id, /*expired=*/true));
  finish_job(seq);
}

void Worker::update_qos() {
  if (!channel_ || !connected_) return;
  asio::co_spawn(io_, channel_->qos(prefetch(), kChannelWideWindow), asio::detached);
}

// Starts measuring the rate tasks finish at, unless it is measured already.
void Worker::tick_window() {
  if (window_ticking_ || stopping_) return;
  window_ticking_ = true;
  processed_at_tick_ = processed_;
  tick_start_ = std::chrono::steady_clock::now();
  window_timer_.expires_at(tick_start_ + kWindowTick);
  window_timer_.async_wait([this](std::error_code ec) {
    window_ticking_ = false;
    if (!ec) on_window_tick();
  });
}

void Worker::on_window_tick() {
  const auto now = std::chrono::steady_clock::now();
  const std::size_t before = window_.size();
  const bool changed =
      window_.update(processed_ - processed_at_tick_, std::chrono::duration<double>(now - tick_start_).count());
  // Measuring stops once the worker has nothing to run (tasks held for an eta
  // do not count) and the window is back at base: an idle worker, or one that
  // paused between bursts, has it shrink within kSpan, as nothing finishes.
  if (jobs_.size() > held_ || window_.size() > window_.base()) tick_window();
  if (!changed) return;
  spdlog::debug("prefetch window {} -> {} ({} held)", before, window_.size(), held_);
  update_qos();
  if (window_.size() < before) release_excess();
}

// Twice the window finished before the tick: the window may be what bounds
// the rate, so the ramp rule is applied now (PrefetchWindow::ramp). The
// timer keeps its expiry: the interval that ends then is measured from here.
void Worker::ramp_window() {
  const auto now = std::chrono::steady_clock::now();
  const std::size_t before = window_.size();
  if (!window_.ramp(processed_ - processed_at_tick_, std::chrono::duration<double>(now - tick_start_).count())) return;
  processed_at_tick_ = processed_;
  tick_start_ = now;
  spdlog::debug("prefetch window {} -> {} ({} held), before the tick", before, window_.size(), held_);
  update_qos();
}

// The window shrank (long tasks came after short ones): the tasks this worker
// has not started beyond it go back to the broker, so that another worker can
// start them now. They were never started, so this runs nothing twice.
void Worker::release_excess() {
  if (!channel_ || !connected_ || stopping_ || options_.ack_early) return;
  const std::size_t window = static_cast<std::size_t>(prefetch());
  std::size_t unacked = 0;
  for (const auto& [seq, job] : jobs_) unacked += !job.acked && job.epoch == epoch_ ? 1 : 0;  // this session's
  if (unacked <= window) return;
  const auto recalled = pool_.recall();  // queued in the pool, in order, before ready_
  ready_.insert(ready_.begin(), recalled.begin(), recalled.end());
  std::size_t released = 0;
  while (unacked > window && !ready_.empty()) {
    const std::uint64_t seq = ready_.back();  // the newest go back
    ready_.pop_back();
    auto it = jobs_.find(seq);
    if (it == jobs_.end()) continue;
    settle(it->second, false, true);
    jobs_.erase(it);
    --unacked;
    ++released;
  }
  if (released > 0) spdlog::debug("prefetch window shrank: {} task(s) not started given back", released);
  dispatch();
}

void Worker::enqueue(std::uint64_t seq) {
  if (stopping_) return;  // left unacked: requeued when the connection closes
  ready_.push_back(seq);
  dispatch();
}

void Worker::dispatch() {
  const bool queues = pool_.queues_jobs();
  while (!ready_.empty() && pool_.has_free_slot()) {
    std::uint64_t seq = ready_.front();
    ready_.pop_front();
    auto it = jobs_.find(seq);
    if (it == jobs_.end()) continue;
    Job& job = it->second;
    if (!queues && job.task->expires > 0 && task::unix_now() >= job.task->expires) {
      revoke_expired(seq);
      continue;
    }
    worker::Job pj;
    pj.seq = seq;
    pj.task = job.task;
    pj.soft_time_limit = job.task->soft_time_limit > 0 ? job.task->soft_time_limit : options_.soft_time_limit;
    pj.time_limit = job.task->time_limit > 0 ? job.task->time_limit : options_.time_limit;
    pj.report_start = events_.task_events();
    // A pool that queues jobs checks expiry and reports the start (on_started)
    // when a thread takes the job; the others start it here.
    if (!queues) on_started(seq, task::unix_now());
    pool_.submit(std::move(pj));
  }
}

void Worker::on_started(std::uint64_t seq, double time_start) {
  auto it = jobs_.find(seq);
  if (it == jobs_.end()) return;
  Job& job = it->second;
  job.time_start = time_start;
  if (events_.task_events()) events_.task_event("task-started", task_started_fields(*job.task));
}

void Worker::on_done(JobDone done) {
  auto it = jobs_.find(done.seq);
  if (it == jobs_.end()) {
    dispatch();
    return;
  }
  if (done.expired) {  // a pool thread took it too late
    revoke_expired(done.seq);
    return;
  }
  Job& job = it->second;
  auto& r = done.result;
  ++processed_;
  if (window_ticking_ && processed_ - processed_at_tick_ == 2 * window_.size()) ramp_window();
  ++totals_[job.task->name];
  if (r.state == task::State::kRetry) {
    spdlog::info("task {}[{}] retry in {}s: {}", job.task->name, job.task->id, done.retry_countdown, r.error_message);
    publish_result(job, r);
    if (events_.task_events()) events_.task_event("task-retried", task_error_fields(r));
    republish_retry(done.seq, done.retry_countdown);  // acknowledged once the broker has the new copy
    dispatch();
    return;
  } else if (r.state == task::State::kSuccess) {
    spdlog::info("task {}[{}] succeeded in {:.6f}s", job.task->name, job.task->id, r.runtime);
    publish_result(job, r);
    if (events_.task_events()) events_.task_event("task-succeeded", task_succeeded_fields(r));
  } else {
    spdlog::error("task {}[{}] {}: {}: {}", job.task->name, job.task->id, task::state_name(r.state), r.error_type,
                  r.error_message);
    publish_result(job, r);
    if (events_.task_events()) events_.task_event("task-failed", task_error_fields(r));
  }
  finish_job(done.seq);
}

void Worker::publish_result(const Job& job, const task::TaskResult& r) {
  if (job.task->reply_to.empty() || job.task->ignore_result) return;
  if (!channel_ || !connected_) {
    spdlog::warn("result of {}[{}] not sent: not connected (the task will be redelivered)", job.task->name, job.task->id);
    return;
  }
  auto msg = client::build_result_message(r, job.task->format, job.task->correlation_id);
  channel_->publish("", job.task->reply_to, msg.properties, msg.body);
}

// The task again with retries + 1 and its countdown, through the delayed
// exchange when the broker has one, else straight to its queue with the eta
// (and the worker that gets it holds it).
void Worker::republish_retry(std::uint64_t seq, double countdown) {
  Job& job = jobs_.at(seq);
  auto t = std::make_shared<task::TaskMessage>(*job.task);  // a pool thread may still read the old one
  t->retries += 1;
  t->eta = countdown > 0 ? task::unix_now() + countdown : 0;
  if (t->parent_id.empty()) t->parent_id = t->id;
  job.task = std::move(t);
  const bool through_broker = broker_delays_ && countdown >= client::kMinBrokerDelay;
  defer(seq, through_broker ? std::string(client::kDelayedExchange) : std::string(),
        client::build_task_message(*job.task, job.priority), true);
}

void Worker::settle(Job& job, bool ack, bool requeue) {
  if (job.acked) return;
  job.acked = true;
  if (!channel_ || !connected_ || job.epoch != epoch_) return;  // the broker redelivers it
  if (ack)
    channel_->ack(job.delivery_tag);
  else
    channel_->reject(job.delivery_tag, requeue);
}

void Worker::finish_job(std::uint64_t seq) {
  auto it = jobs_.find(seq);
  if (it != jobs_.end()) {
    settle(it->second, true);  // after the result was published on the same channel
    jobs_.erase(it);
  }
  dispatch();
  maybe_finish_shutdown();
}

void Worker::shutdown_gracefully() {
  if (stopping_) return;
  stopping_ = true;
  spdlog::info("warm shutdown: finishing {} running task(s)", pool_.active());
  for (auto& [seq, job] : jobs_)
    if (job.timer) job.timer->cancel();
  window_timer_.cancel();
  ready_.clear();
  pool_.recall();  // not started: left unacked, requeued when the connection closes
  if (channel_ && connected_) {
    auto ch = channel_;
    auto tags = consumer_tags_;
    asio::co_spawn(
        io_,
        [ch, tags]() -> asio::awaitable<void> {
          for (const auto& t : tags) co_await ch->cancel(t);
        },
        asio::detached);
  }
  pool_.stop([this] {
    spdlog::info("pool stopped");
    maybe_finish_shutdown();
  });
  if (!connected_ && closed_signal_) closed_signal_->cancel();
  maybe_finish_shutdown();
}

void Worker::maybe_finish_shutdown() {
  if (!stopping_ || finished_ || pool_.running() > 0 || deferring_ > 0) return;
  finished_ = true;
  events_.go_offline();
  auto conn = conn_;
  asio::co_spawn(
      io_,
      [this, conn]() -> asio::awaitable<void> {
        if (conn && conn->is_open()) co_await conn->close();  // unstarted deliveries are requeued by the broker
        spdlog::info("{} stopped after {} task(s)", options_.hostname, processed_);
        pool_.terminate();
        io_.stop();
      },
      asio::detached);
}

void Worker::exit_for_restart(const std::string& why) {
  if (finished_) return;
  finished_ = stopping_ = true;
  spdlog::critical("{}: exiting for a supervisor to restart the worker; the broker requeues unacked tasks", why);
  auto conn = conn_;
  asio::co_spawn(
      io_,
      [conn]() -> asio::awaitable<void> {
        if (conn && conn->is_open()) co_await conn->close();
        std::_Exit(kExitForRestart);  // not exit(): stuck threads cannot be joined
      },
      asio::detached);
}

void Worker::shutdown_now() {
  spdlog::warn("cold shutdown");
  pool_.terminate();
  std::_Exit(1);
}

}  // namespace mb::worker
