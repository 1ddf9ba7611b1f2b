// Broker: accept loop, timers, scheduling and shutdown. See broker.hpp.
#include "broker/broker.hpp"

#include <spdlog/spdlog.h>

#include <malloc.h>
#include <sys/statvfs.h>

#include <chrono>

#include "broker/durable.hpp"
#include "broker/openssl/loader.hpp"
#include "broker/store/rocksdb_store.hpp"

#if defined(__SANITIZE_ADDRESS__)  // GCC; clang: __has_feature(address_sanitizer)
#define MB_ADDRESS_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MB_ADDRESS_SANITIZER 1
#endif
#endif
#ifdef MB_ADDRESS_SANITIZER
// ASan's runtime (declared in sanitizer/allocator_interface.h, which GCC does not install).
extern "C" std::size_t __sanitizer_get_current_allocated_bytes();
#endif

namespace mb::broker {
namespace {

constexpr auto kTickInterval = std::chrono::milliseconds(100);  // TTL and x-expires resolution
constexpr auto kAcceptRetry = std::chrono::milliseconds(100);   // after EMFILE/ENFILE
constexpr auto kShutdownGrace = std::chrono::milliseconds(500);  // for close frames to reach clients
// Resource sampling, in ticks: memory each second (RabbitMQ samples every 2.5 s),
// disk every 5 s (a statvfs call; free space changes slowly).
constexpr std::int64_t kMemoryCheckTicks = 10;
constexpr std::int64_t kDiskCheckTicks = 50;

// Bytes the process has allocated through malloc (arenas in use plus mmapped
// chunks): what was freed is no longer counted, unlike RSS, so the alarm clears
// once queues drain. Walks the arenas' free lists: cheap at one call a second.
// Under AddressSanitizer malloc is ASan's, which glibc's mallinfo2() does not
// see: ask ASan's allocator instead (freed chunks in its quarantine not counted).
std::uint64_t allocated_bytes() {
#ifdef MB_ADDRESS_SANITIZER
  return __sanitizer_get_current_allocated_bytes();
#else
  const struct mallinfo2 mi = mallinfo2();
  return static_cast<std::uint64_t>(mi.uordblks) + static_cast<std::uint64_t>(mi.hblkhd);
#endif
}

}  // namespace

Broker::Broker(Options options, std::unique_ptr<Persistence> persistence)
    : options_(std::move(options)),
      acceptor_(io_),
      tls_acceptor_(io_),
      tick_timer_(io_),
      accept_retry_timer_(io_),
      signals_(io_),
      persistence_(persistence ? std::move(persistence) : std::make_unique<Persistence>()),
      tasks_(std::make_unique<tasks::TaskTracker>(tracker_options(), nullptr)) {
  access_.load();  // in memory until open_store(): vhost "/" and guest
  for (const auto& name : access_.vhosts()) vhosts_.emplace(name, std::make_unique<Vhost>(name, *this));
}

Broker::~Broker() = default;

tasks::TrackerOptions Broker::tracker_options() const {
  tasks::TrackerOptions t;
  t.max_tasks = options_.task_history;
  return t;
}

std::string Broker::open_store(const std::string& dir) {
  std::unique_ptr<store::RocksDbStore> db;
  store::RocksDbStoreOptions opts;
  opts.dir = dir;
  opts.write_behind_ms = options_.store_write_behind_ms;
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
  tasks_ = std::make_unique<tasks::TaskTracker>(tracker_options(), store_.get());
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
  if (!options_.tls_cert.empty()) {
    if (std::string error; !openssl::load(&error)) throw std::runtime_error("AMQPS: " + error);
    tls_context_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    tls_context_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                              asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                              asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
    tls_context_->use_certificate_chain_file(options_.tls_cert);
    tls_context_->use_private_key_file(options_.tls_key, asio::ssl::context::pem);
    if (!options_.tls_ca.empty()) {
      tls_context_->load_verify_file(options_.tls_ca);
      tls_context_->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
    }
    asio::ip::tcp::endpoint tls_ep(ep.address(), options_.tls_port);
    tls_acceptor_.open(tls_ep.protocol());
    tls_acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true));
    tls_acceptor_.bind(tls_ep);
    tls_acceptor_.listen(asio::socket_base::max_listen_connections);
    tls_port_ = tls_acceptor_.local_endpoint().port();
    spdlog::info("minibroker listening for AMQPS on {}:{} (client certificates {})", options_.bind, tls_port_,
                 options_.tls_ca.empty() ? "not requested" : "required");
    accept_tls();
  }
  if (options_.memory_high_watermark != 0)
    spdlog::info("memory high watermark {} bytes ({} allocated now)", options_.memory_high_watermark,
                 allocated_bytes());
  check_resources(0);
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
  tls_acceptor_.close(ignored);
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
    spdlog::info(
        "store: {} fsyncs, {} messages and {} queue entries written ({:.1f} entries per fsync), {} messages "
        "consumed before they were written",
        c.fsyncs, c.messages_written, c.entries_written,
        c.fsyncs ? static_cast<double>(c.entries_written) / static_cast<double>(c.fsyncs) : 0.0, c.transient_messages);
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
    add_connection(Stream(std::in_place_type<asio::ip::tcp::socket>, std::move(socket)));
    if (accept_full()) {
      accept_paused_ = true;
      spdlog::warn("{} connections (twice --max-connections): accepting paused until one closes", connections_.size());
      return;
    }
    accept();
  });
}

void Broker::accept_tls() {
  tls_acceptor_.async_accept([this](const asio::error_code& ec, asio::ip::tcp::socket socket) {
    if (stopping_) return;
    if (ec) {
      if (ec == asio::error::operation_aborted) return;
      spdlog::warn("AMQPS accept failed: {}; retrying in {} ms", ec.message(), kAcceptRetry.count());
      auto retry = std::make_shared<asio::steady_timer>(io_, kAcceptRetry);
      retry->async_wait([this, retry](const asio::error_code& e) {
        if (!e) accept_tls();
      });
      return;
    }
    add_connection(Stream(std::in_place_type<TlsStream>, std::move(socket), *tls_context_));
    if (accept_full()) {
      tls_accept_paused_ = true;
      return;
    }
    accept_tls();
  });
}

void Broker::add_connection(Stream stream) {
  const std::uint64_t id = ++next_connection_id_;
  auto conn = std::make_shared<Connection>(*this, std::move(stream), id);
  connections_.emplace(id, conn);
  conn->start();
}

bool Broker::take_connection_slot() {
  if (options_.max_connections != 0 && admitted_connections_ >= options_.max_connections) return false;
  ++admitted_connections_;
  return true;
}

void Broker::arm_tick() {
  tick_timer_.expires_after(kTickInterval);
  tick_timer_.async_wait([this](const asio::error_code& ec) {
    if (ec) return;
    const std::int64_t now = now_ms();
    for (auto& [_, vh] : vhosts_) vh->tick(now);
    check_resources(++ticks_);
    if (tasks_->tick(static_cast<double>(now) / 1000.0)) write_task_history();
    arm_tick();
  });
}

// The rest of the task history's round, a slice per turn of the loop, so
// that clients are served between slices.
void Broker::write_task_history() {
  asio::post(io_, [this] {
    if (tasks_->flush_slice()) write_task_history();
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

void Broker::remove_connection(std::uint64_t id) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return;
  if (it->second->admitted()) --admitted_connections_;
  connections_.erase(it);
  if (stopping_ || accept_full()) return;
  if (accept_paused_) {
    accept_paused_ = false;
    spdlog::info("accepting connections again");
    accept();
  }
  if (tls_accept_paused_) {
    tls_accept_paused_ = false;
    accept_tls();
  }
}

void Broker::check_resources(std::int64_t tick) {
  bool memory = memory_alarm_, disk = disk_alarm_;
  if (options_.memory_high_watermark != 0 && tick % kMemoryCheckTicks == 0) {
    const std::uint64_t used = allocated_bytes();
    memory = used > options_.memory_high_watermark;
    if (memory != memory_alarm_)
      spdlog::warn("memory alarm {}: {} bytes allocated, high watermark {}", memory ? "set" : "cleared", used,
                   options_.memory_high_watermark);
  }
  if (options_.disk_free_limit != 0 && store_ && tick % kDiskCheckTicks == 0) {
    struct statvfs st {};
    if (statvfs(options_.data_dir.c_str(), &st) == 0) {
      const std::uint64_t free = static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
      disk = free < options_.disk_free_limit;
      if (disk != disk_alarm_)
        spdlog::warn("disk alarm {}: {} bytes free in {}, limit {}", disk ? "set" : "cleared", free,
                     options_.data_dir, options_.disk_free_limit);
    }
  }
  if (memory == memory_alarm_ && disk == disk_alarm_) return;
  memory_alarm_ = memory;
  disk_alarm_ = disk;
  // RabbitMQ's connection.blocked reasons: "low on memory", "low on disk", "low on memory & disk".
  alarm_ = !memory && !disk ? "" : fmt::format("low on {}", memory && disk ? "memory & disk" : memory ? "memory" : "disk");
  if (!alarm_.empty()) spdlog::warn("*** publishers will be blocked until this alarm clears ({}) ***", alarm_);
  auto conns = connections_;  // unblocking handles buffered frames, which may close a connection
  for (auto& [_, c] : conns) c->on_alarm(alarm_);
}

std::int64_t Broker::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void Broker::schedule_dispatch(const QueuePtr& q) {
  dispatch_pending_.push_back(q);
  post_end_turn();
}

void Broker::schedule_flush(ConnectionPtr c) {
  flush_pending_.push_back(std::move(c));
  post_end_turn();
}

void Broker::post_end_turn() {
  if (turn_posted_ || turn_open_) return;
  turn_posted_ = true;
  asio::post(io_, [this] {
    turn_posted_ = false;
    end_turn();
  });
}

void Broker::end_turn() {
  if (ending_turn_) return;
  ending_turn_ = turn_open_ = true;
  // A dispatch writes deliveries (more flushes); a flush never dispatches
  // (its completion comes in a later turn), so one pass of each suffices,
  // but a dispatch may wake another queue (dead-lettering): loop until idle.
  while (!dispatch_pending_.empty() || !flush_pending_.empty()) {
    if (!dispatch_pending_.empty()) {
      dispatching_.swap(dispatch_pending_);
      const std::int64_t now = now_ms();
      for (auto& q : dispatching_) {
        q->wake_pending = false;
        if (!q->deleted()) q->dispatch(now);
      }
      dispatching_.clear();
      continue;
    }
    flushing_.swap(flush_pending_);
    for (auto& c : flushing_) c->flush_scheduled();
    flushing_.clear();
  }
  ending_turn_ = turn_open_ = false;
}

}  // namespace mb::broker
