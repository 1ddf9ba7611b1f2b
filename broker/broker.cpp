// Broker: accept loop, timers, scheduling and shutdown. See broker.hpp.
#include "broker/broker.hpp"

#include <spdlog/spdlog.h>

#include <chrono>

#include "broker/durable.hpp"
#include "broker/store/rocksdb_store.hpp"

namespace mb::broker {
namespace {

constexpr auto kTickInterval = std::chrono::milliseconds(100);  // TTL and x-expires resolution
constexpr auto kAcceptRetry = std::chrono::milliseconds(100);   // after EMFILE/ENFILE
constexpr auto kShutdownGrace = std::chrono::milliseconds(500);  // for close frames to reach clients

}  // namespace

Broker::Broker(Options options, std::unique_ptr<Persistence> persistence)
    : options_(std::move(options)),
      acceptor_(io_),
      tick_timer_(io_),
      accept_retry_timer_(io_),
      signals_(io_),
      persistence_(persistence ? std::move(persistence) : std::make_unique<Persistence>()),
      tasks_(std::make_unique<tasks::TaskTracker>(tasks::TrackerOptions{}, nullptr)) {
  vhosts_.emplace("/", std::make_unique<Vhost>("/", *this));
}

Broker::~Broker() = default;

std::string Broker::open_store(const std::string& dir) {
  std::unique_ptr<store::RocksDbStore> db;
  store::RocksDbStoreOptions opts;
  opts.dir = dir;
  store::Status s = store::RocksDbStore::open(opts, [this](std::function<void()> fn) { asio::post(io_, std::move(fn)); }, db);
  if (!s.ok()) return s.to_string();
  store_ = std::move(db);
  auto p = std::make_unique<StorePersistence>(*store_, [this](std::function<void()> fn) { asio::post(io_, std::move(fn)); });
  last_message_id_ = std::max(last_message_id_, p->restore(*vhosts_.at("/")));
  persistence_ = std::move(p);
  tasks_ = std::make_unique<tasks::TaskTracker>(tasks::TrackerOptions{}, store_.get());
  tasks_->restore();
  spdlog::info("data directory {}", dir);
  return {};
}

std::uint16_t Broker::start() {
  asio::ip::tcp::endpoint ep(asio::ip::make_address(options_.bind), options_.port);
  acceptor_.open(ep.protocol());
  acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true));
  acceptor_.bind(ep);
  acceptor_.listen(asio::socket_base::max_listen_connections);
  const std::uint16_t port = acceptor_.local_endpoint().port();
  if (!ep.address().is_loopback())
    spdlog::warn("listening on {} (not loopback): reachable from other hosts", options_.bind);
  spdlog::info("minibroker listening on {}:{}", options_.bind, port);
  accept();
  arm_tick();
  return port;
}

void Broker::run(bool handle_signals) {
  if (handle_signals) {
    signals_.add(SIGINT);
    signals_.add(SIGTERM);
    signals_.async_wait([this](const asio::error_code& ec, int sig) {
      if (ec) return;
      spdlog::info("signal {} received: closing {} connection(s)", sig, connections_.size());
      stop();
    });
  }
  io_.run();
}

void Broker::stop() {
  if (stopping_) return;
  stopping_ = true;
  asio::error_code ignored;
  acceptor_.close(ignored);
  tick_timer_.cancel();
  accept_retry_timer_.cancel();
  signals_.cancel(ignored);
  auto conns = connections_;
  for (auto& [_, c] : conns)
    c->close(ReplyCode::kConnectionForced, "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'");
  tasks_->flush();
  persistence_->after_commit([](bool) {});  // whatever the last turn wrote
  if (store_) {
    const store::StoreCounters c = store_->counters();
    spdlog::info("store: {} fsyncs, {} messages and {} queue entries written ({:.1f} entries per fsync)", c.fsyncs,
                 c.messages_written, c.entries_written,
                 c.fsyncs ? static_cast<double>(c.entries_written) / static_cast<double>(c.fsyncs) : 0.0);
  }
  auto grace = std::make_shared<asio::steady_timer>(io_, kShutdownGrace);
  grace->async_wait([this, grace](const asio::error_code&) { io_.stop(); });
}

void Broker::accept() {
  acceptor_.async_accept([this](const asio::error_code& ec, asio::ip::tcp::socket socket) {
    if (stopping_) return;
    if (ec) {
      if (ec == asio::error::operation_aborted) return;
      // Out of descriptors (EMFILE/ENFILE) or a transient error: pause accepting
      // and retry; existing clients, queues and the store keep working.
      spdlog::warn("accept failed: {}; retrying in {} ms", ec.message(), kAcceptRetry.count());
      accept_retry_timer_.expires_after(kAcceptRetry);
      accept_retry_timer_.async_wait([this](const asio::error_code& e) {
        if (!e) accept();
      });
      return;
    }
    const std::uint64_t id = ++next_connection_id_;
    auto conn = std::make_shared<Connection>(*this, std::move(socket), id);
    connections_.emplace(id, conn);
    conn->start();
    accept();
  });
}

void Broker::arm_tick() {
  tick_timer_.expires_after(kTickInterval);
  tick_timer_.async_wait([this](const asio::error_code& ec) {
    if (ec) return;
    const std::int64_t now = now_ms();
    for (auto& [_, vh] : vhosts_) vh->tick(now);
    tasks_->tick(static_cast<double>(now) / 1000.0);
    arm_tick();
  });
}

std::uint16_t Broker::amqp_port() const {
  asio::error_code ec;
  const auto ep = acceptor_.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

Vhost* Broker::find_vhost(std::string_view name) {
  auto it = vhosts_.find(std::string(name));
  return it == vhosts_.end() ? nullptr : it->second.get();
}

std::string Broker::authenticate(std::string_view user, std::string_view password, bool loopback) const {
  if (user == "guest" && password == "guest") {
    if (!loopback) return "User can only log in via localhost";
    return {};
  }
  return "Login was refused using authentication mechanism PLAIN. For details see the broker logfile.";
}

std::string Broker::register_direct_reply(const std::shared_ptr<Consumer>& c) {
  // Unguessable enough for a local broker: a counter and the consumer's address hashed.
  const std::uint64_t n = ++direct_reply_counter_;
  std::string key = fmt::format("g{:016x}{:08x}", std::hash<const void*>{}(c.get()) ^ (n * 0x9E3779B97F4A7C15ull), n);
  direct_replies_[key] = c;
  return key;
}

std::shared_ptr<Consumer> Broker::find_direct_reply(std::string_view key) const {
  auto it = direct_replies_.find(key);
  return it == direct_replies_.end() ? nullptr : it->second.lock();
}

void Broker::remove_connection(std::uint64_t id) { connections_.erase(id); }

std::int64_t Broker::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void Broker::schedule_dispatch(const QueuePtr& q) {
  dispatch_pending_.push_back(q);
  if (dispatch_posted_) return;
  dispatch_posted_ = true;
  asio::post(io_, [this] { run_dispatch(); });
}

void Broker::run_dispatch() {
  dispatch_posted_ = false;
  std::vector<QueuePtr> pending;
  pending.swap(dispatch_pending_);
  const std::int64_t now = now_ms();
  for (auto& q : pending) {
    q->wake_pending = false;
    if (!q->deleted()) q->dispatch(now);
  }
}

}  // namespace mb::broker
