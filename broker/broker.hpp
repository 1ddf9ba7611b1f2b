// The broker: owns the event loop, the listening socket, the vhosts, the
// connections and the storage seam. One thread runs everything here; there
// are no locks on the message path.
//
// Runs in-process for tests: start() on port 0 returns the bound port.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/access.hpp"
#include "broker/connection.hpp"
#include "broker/options.hpp"
#include "broker/persistence.hpp"
#include "broker/store/store.hpp"
#include "broker/tasks/tracker/task_tracker.hpp"
#include "broker/vhost.hpp"

namespace mb::broker {

class Broker : public VhostEnv {
 public:
  explicit Broker(Options options, std::unique_ptr<Persistence> persistence = nullptr);
  ~Broker() override;

  // Opens (creating if needed) the durable store in dir and restores what it
  // holds. Returns an error text (directory in use, unreadable), or empty.
  std::string open_store(const std::string& dir);

  // Binds and starts accepting (AMQP, and AMQPS when a TLS certificate is
  // configured); returns the bound AMQP port. Throws on a bad certificate or key.
  std::uint16_t start();
  // The bound AMQPS port, 0 when TLS is off.
  std::uint16_t tls_port() const { return tls_port_; }
  // Runs the loop until stop() completes (SIGTERM/SIGINT when handle_signals).
  void run(bool handle_signals = true);
  // Closes every connection with 320 CONNECTION_FORCED, then stops the loop.
  void stop();

  asio::io_context& io() { return io_; }
  const Options& options() const { return options_; }
  // The store is behind: publishers stop being read (Connection::read).
  bool store_backlogged() const { return store_ && store_->pending_bytes() >= kStoreBacklogHighWater; }
  // The bound AMQP port (0 before start()).
  std::uint16_t amqp_port() const;
  Vhost* find_vhost(std::string_view name);
  // Checks a login; returns the refusal text (for the log) or empty when
  // accepted. access().find_user() then gives the user's tags.
  std::string authenticate(std::string_view user, std::string_view password, bool loopback) const;
  // Users, vhosts and permissions. Change users and permissions here; add and
  // delete vhosts through the Broker, which also owns their exchanges and queues.
  access::AccessControl& access() { return access_; }
  const access::AccessControl& access() const { return access_; }
  access::Result add_vhost(std::string_view name);
  // Closes the vhost's connections (320), deletes its entities and their
  // durable records, and its permissions.
  access::Result delete_vhost(std::string_view name);
  // Deletes the user and closes its connections (320), as RabbitMQ does.
  access::Result delete_user(std::string_view name);
  void remove_connection(std::uint64_t id);
  std::size_t connection_count() const { return connections_.size(); }
  // --max-connections counts every connection from accept on, handshakes
  // included, so connections that never finish theirs (slowloris) use up the
  // limit instead of going beyond it. Takes a slot; false when none is free.
  // A connection accepted without one may still finish its handshake, to be
  // refused with 530 at connection.open if no slot freed up meanwhile.
  bool take_connection_slot();
  // The active resource alarms as connection.blocked's reason ("low on memory"), or empty.
  const std::string& alarm() const { return alarm_; }
  bool memory_alarm() const { return memory_alarm_; }
  bool disk_alarm() const { return disk_alarm_; }
  std::size_t max_queues() const override { return options_.max_queues; }
  // For the management API (read on the loop only).
  const std::unordered_map<std::uint64_t, ConnectionPtr>& connections() const { return connections_; }
  const std::unordered_map<std::string, std::unique_ptr<Vhost>>& vhosts() const { return vhosts_; }
  tasks::TaskTracker& tasks() { return *tasks_; }

  // VhostEnv
  std::int64_t now_ms() const override;
  std::uint64_t next_message_id() override { return ++last_message_id_; }
  void schedule_dispatch(const QueuePtr& q) override;
  // The connection's output goes out at the end of this turn (see end_turn).
  void schedule_flush(ConnectionPtr c);
  // A turn's leftover work: queue dispatches, then the writes of every
  // connection with output. A read handler opens a turn, handles its frames
  // and ends the turn, so that what it published is delivered and written
  // within that handler; whatever else schedules work (timers, store
  // completions) gets one posted handler that runs end_turn(). Posting each
  // step separately cost an epoll_wait per step: asio polls the reactor
  // before every posted handler.
  void open_turn() { turn_open_ = true; }
  void end_turn();
  Persistence& persistence() override { return *persistence_; }
  std::string register_direct_reply(const std::shared_ptr<Consumer>& c) override;
  void unregister_direct_reply(const std::string& key) override { direct_replies_.erase(key); }
  std::shared_ptr<Consumer> find_direct_reply(std::string_view key) const override;
  bool task_published(std::string_view exchange, std::string_view routing_key, const amqp::PropertiesSummary& props,
                      std::string_view body) override {
    if (!tasks_->interested(exchange, props)) return false;
    return tasks_->on_publish(exchange, routing_key, props, body, static_cast<double>(now_ms()) / 1000.0);
  }
  void task_delivered(const Message& msg) override {
    tasks_->on_delivered(msg.properties(), static_cast<double>(now_ms()) / 1000.0);
  }

 private:
  void accept();
  void accept_tls();
  // With --max-connections, accepting pauses while this many connections exist
  // (those holding a slot, and as many again handshaking towards their 530),
  // the way RabbitMQ 3.10's listener stops accepting at connection_max: the
  // rest wait in the kernel's backlog. Resumes when a connection goes.
  bool accept_full() const {
    return options_.max_connections != 0 && connections_.size() >= 2 * options_.max_connections;
  }
  void add_connection(Stream stream);
  tasks::TrackerOptions tracker_options() const;
  void arm_tick();
  void write_task_history();
  // Samples memory (every tick) and disk (less often); raises or clears alarms.
  void check_resources(std::int64_t tick);
  void post_end_turn();
  // Closes (320 CONNECTION_FORCED) every connection matching pred.
  template <typename Pred>
  void force_close(Pred pred, const std::string& text);

  Options options_;
  asio::io_context io_{1};
  asio::ip::tcp::acceptor acceptor_;
  asio::ip::tcp::acceptor tls_acceptor_;
  std::unique_ptr<asio::ssl::context> tls_context_;
  std::uint16_t tls_port_ = 0;
  asio::steady_timer tick_timer_;
  asio::steady_timer accept_retry_timer_;
  asio::signal_set signals_;
  std::unique_ptr<store::Store> store_;  // declared before persistence_, which uses it
  std::unique_ptr<Persistence> persistence_;
  std::unique_ptr<tasks::TaskTracker> tasks_;  // after store_, which it writes to
  access::AccessControl access_{nullptr};  // over store_ once open_store() ran
  std::unordered_map<std::string, std::unique_ptr<Vhost>> vhosts_;
  // Deleted vhosts stay allocated until shutdown: connections being closed and
  // queued dispatches may still point at them; they hold no queues any more.
  std::vector<std::unique_ptr<Vhost>> retired_vhosts_;
  std::unordered_map<std::uint64_t, ConnectionPtr> connections_;
  StringMap<std::weak_ptr<Consumer>> direct_replies_;
  std::uint64_t direct_reply_counter_ = 0;
  std::uint64_t next_connection_id_ = 0;
  std::size_t admitted_connections_ = 0;  // connections holding a --max-connections slot
  bool accept_paused_ = false;      // accept_full(): the AMQP acceptor waits
  bool tls_accept_paused_ = false;  // the same for AMQPS
  std::int64_t ticks_ = 0;
  bool memory_alarm_ = false;
  bool disk_alarm_ = false;
  std::string alarm_;
  std::uint64_t last_message_id_ = 0;
  std::vector<QueuePtr> dispatch_pending_;
  std::vector<QueuePtr> dispatching_;  // end_turn's, kept for its capacity
  std::vector<ConnectionPtr> flush_pending_;
  std::vector<ConnectionPtr> flushing_;
  bool turn_posted_ = false;  // a handler that runs end_turn() is queued
  bool turn_open_ = false;    // end_turn() will run: scheduling posts nothing
  bool ending_turn_ = false;
  bool stopping_ = false;
};

}  // namespace mb::broker
