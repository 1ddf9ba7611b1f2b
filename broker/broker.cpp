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
      persistence_(persistence ? std::move(persistence) : std::make_unique<Persistence>()) {
  access_.load();  // in memory until open_store(): vhost "/" and guest
  for (const auto& name : access_.vhosts()) vhosts_.emplace(name, std::make_unique<Vhost>(name, *this));
}

Broker::~Broker() = default;

std::string Broker::open_store(const std::string& dir) {
  std::unique_ptr<store::RocksDbStore> db;
  store::RocksDbStoreOptions opts;
  opts.dir = dir;
  store::Status s = store::RocksDbStore::open(opts, [this](std::function<void()> fn) { asio::post(io_, std::move(fn)); }, db);
  if (!s.ok()) return s.to_string();
  store_ = std::move(db);
  access_ = access::AccessControl(store_.get());
  s = access_.load();
  if (!s.ok()) return s.to_string();
  auto p = std::make_unique<StorePersistence>(
      *store_, [this](std::function<void()> fn) { asio::post(io_, std::move(fn)); },
      PagingLimits{options_.queue_memory_messages, options_.queue_memory_bytes}, [this] { return now_ms(); });
  vhosts_.clear();
  for (const auto& name : access_.vhosts()) {
    auto vh = std::make_unique<Vhost>(name, *this);
    last_message_id_ = std::max(last_message_id_, p->restore(*vh));
    vhosts_.emplace(name, std::move(vh));
  }
  persistence_ = std::move(p);
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
    arm_tick();
  });
}

Vhost* Broker::find_vhost(std::string_view name) {
  auto it = vhosts_.find(std::string(name));
  return it == vhosts_.end() ? nullptr : it->second.get();
}

std::string Broker::authenticate(std::string_view user, std::string_view password, bool loopback) const {
  return access_.authenticate(user, password, loopback).refusal;
}

template <typename Pred>
void Broker::force_close(Pred pred, const std::string& text) {
  std::vector<ConnectionPtr> doomed;
  for (auto& [_, c] : connections_)
    if (pred(*c)) doomed.push_back(c);
  for (auto& c : doomed) {
    spdlog::info("connection {} ({}): closing: {}", c->connection_id(), c->peer(), text);
    c->close(ReplyCode::kConnectionForced, "CONNECTION_FORCED - " + text);
  }
}

access::Result Broker::add_vhost(std::string_view name) {
  access::Result r = access_.add_vhost(name);
  if (r.ok()) {
    vhosts_.emplace(std::string(name), std::make_unique<Vhost>(std::string(name), *this));
    spdlog::info("vhost '{}' added", name);
  }
  return r;
}

access::Result Broker::delete_vhost(std::string_view name) {
  access::Result r = access_.delete_vhost(name);
  if (!r.ok()) return r;
  auto it = vhosts_.find(std::string(name));
  if (it == vhosts_.end()) return r;
  std::unique_ptr<Vhost> vh = std::move(it->second);
  vhosts_.erase(it);
  force_close([&](const Connection& c) { return c.open_vhost() == vh.get(); },
              fmt::format("vhost '{}' is deleted", name));
  // Consumers are gone with their channels; drop the queues (and their
  // messages) now, then every durable record of the vhost once the writes
  // before this point are visible to the store's reads.
  std::vector<QueuePtr> queues;
  for (const auto& [_, q] : vh->queues()) queues.push_back(q);
  for (auto& q : queues) vh->remove_queue(q);
  persistence_->vhost_deleted(name);
  retired_vhosts_.push_back(std::move(vh));
  spdlog::info("vhost '{}' deleted", name);
  return r;
}

access::Result Broker::delete_user(std::string_view name) {
  access::Result r = access_.delete_user(name);
  if (r.ok())
    force_close([&](const Connection& c) { return c.user() == name; }, fmt::format("user '{}' is deleted", name));
  return r;
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
