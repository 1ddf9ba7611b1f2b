// One client connection: the only code that touches a client's socket.
//
// Reads large chunks, decodes every complete frame in the buffer, hands methods
// to the connection state machine (handshake, heartbeats, close) or to the
// channel they belong to, and writes replies and deliveries through one
// gathered write per loop turn. The outbound buffer is bounded: above the
// high-water mark deliveries are held and reading pauses until it drains.
// Runs over plain TCP or TLS (AMQPS): the stream is a variant, visited at the
// few I/O call sites, so the plain path costs one branch per read or write.
//
// Resource alarms (memory, disk): a connection that publishes while an alarm
// is on gets connection.blocked and is not read from until every alarm clears;
// its deliveries keep flowing.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "broker/channel.hpp"
#include "broker/errors.hpp"
#include "broker/options.hpp"

namespace mb::broker {

class Broker;

using TlsStream = asio::ssl::stream<asio::ip::tcp::socket>;
using Stream = std::variant<asio::ip::tcp::socket, TlsStream>;

class Connection : public ChannelHost, public std::enable_shared_from_this<Connection> {
 public:
  // stream holds a TlsStream for AMQPS: start() runs the TLS handshake first.
  Connection(Broker& broker, Stream stream, std::uint64_t id);
  ~Connection() override;

  void start();
  // Broker::end_turn() writes the output that schedule_flush() announced.
  void flush_scheduled();
  // Server-initiated close (shutdown, management): connection.close with this code.
  void close(ReplyCode code, std::string text, std::uint16_t class_id = 0, std::uint16_t method_id = 0);
  bool closed() const { return state_ == State::kClosed; }
  // Holds a --max-connections slot (taken at accept, or at connection.open).
  bool admitted() const { return admitted_; }

  const std::string& peer() const { return peer_; }
  // The vhost opened (null before connection.open).
  const Vhost* open_vhost() const { return vhost_; }
  std::size_t channel_count() const { return channels_.size(); }
  // A resource alarm was raised or cleared (reason: "low on memory", ...; empty when cleared).
  void on_alarm(const std::string& reason);

  // For the management API (read on the loop only).
  const std::string& name() const { return name_; }  // "peer -> local", as RabbitMQ names connections
  std::int64_t connected_at_ms() const { return connected_at_ms_; }
  bool open() const { return state_ == State::kOpen; }
  std::uint16_t heartbeat() const { return heartbeat_; }
  std::uint16_t channel_max() const { return channel_max_; }
  const amqp::FieldTable& client_properties() const { return client_properties_; }
  const Vhost* vhost_if_open() const { return vhost_; }
  const std::unordered_map<std::uint16_t, ChannelPtr>& channels() const { return channels_; }

  // ChannelHost
  std::uint64_t connection_id() const override { return id_; }
  Vhost& vhost() override { return *vhost_; }
  VhostEnv& env() override;
  std::string& out() override;
  std::uint32_t frame_max() const override { return frame_max_; }
  bool can_write() const override { return out_.size() + writing_.size() < kOutboundHighWater; }
  bool consumer_cancel_notify() const override { return cancel_notify_; }
  const std::string& user() const override { return user_; }
  const access::Grant* grant() override;
  std::uint64_t max_message_size() const override;
  void register_exclusive(const QueuePtr& q) override { exclusive_queues_.push_back(q); }
  std::size_t max_consumers() const override;

 private:
  enum class State { kAwaitingHeader, kStartSent, kTuneSent, kAwaitingOpen, kOpen, kClosing, kClosed };
  using Clock = std::chrono::steady_clock;

  void read();
  // Plain TCP, nothing buffered: waits for readability without a buffer, then reads.
  void wait_readable();
  void on_readable(const asio::error_code& ec);
  bool tls() const { return std::holds_alternative<TlsStream>(stream_); }
  asio::ip::tcp::socket& socket() {
    if (auto* t = std::get_if<TlsStream>(&stream_)) return t->next_layer();
    return std::get<asio::ip::tcp::socket>(stream_);
  }
  // Blocks a publisher under an alarm: connection.blocked (if it asked for it), no more reads.
  void block(const std::string& reason);
  void on_read(const asio::error_code& ec, std::size_t n);
  // Decodes and handles every whole frame buffered; false once the connection is closing.
  void process_input();
  bool handle_protocol_header();
  void handle_frame(const amqp::Frame& f);
  void handle_connection_method(const amqp::Method& m);
  void handle_channel_frame(const amqp::Frame& f);
  // Decodes a method frame; on malformed input closes the connection (540, 502).
  std::optional<amqp::Method> decode_or_fail(std::string_view payload);
  void on_start_ok(const amqp::ConnectionStartOk& m);
  void on_tune_ok(const amqp::ConnectionTuneOk& m);
  void on_open(const amqp::ConnectionOpen& m);
  void fail(ReplyCode code, std::string_view text, std::uint16_t class_id = 0, std::uint16_t method_id = 0);
  void close_channel(std::uint16_t id, const AmqpError& e, std::uint16_t class_id, std::uint16_t method_id);
  void schedule_flush();
  void flush();
  void on_write(const asio::error_code& ec);
  // Everything written: frees small buffers, resumes reading and deliveries.
  void after_write();
  void arm_timer();
  void on_timer();
  // Closes the socket and releases channels, consumers and exclusive queues.
  void teardown(std::string_view why);

  Broker& broker_;  // HELD NOT OWNED
  Stream stream_;
  asio::steady_timer timer_;
  asio::steady_timer store_wait_;  // a publisher paused while the store catches up
  std::uint64_t id_;
  std::string peer_;
  std::string name_;
  std::int64_t connected_at_ms_ = 0;
  amqp::FieldTable client_properties_;  // kept for the management API
  bool loopback_ = false;
  State state_ = State::kAwaitingHeader;

  // Read buffer. Empty (no allocation) while a plain connection with nothing
  // buffered waits for readability: idle connections hold no read memory.
  std::vector<char> rbuf_;
  std::size_t rstart_ = 0, rend_ = 0;
  std::size_t frame_need_ = 0;  // bytes the partial frame at rstart_ needs in all (0: unknown)
  bool reading_ = false;
  bool waiting_readable_ = false;  // an async_wait is pending: no operation refers to rbuf_
  bool drained_ = true;            // the last read left the socket empty (fewer bytes than room)
  bool read_paused_ = false;
  bool publisher_ = false;  // has sent basic.publish: paused while the store is behind, blocked by alarms

  std::string out_;      // filled this turn
  std::string writing_;  // in flight
  bool writing_now_ = false;
  bool flush_scheduled_ = false;
  bool teardown_after_flush_ = false;  // we sent close-ok (or a bad-header reply): close once written

  std::string user_;
  Vhost* vhost_ = nullptr;  // HELD NOT OWNED
  std::uint16_t channel_max_;
  std::uint32_t frame_max_;
  std::uint16_t heartbeat_ = 0;
  bool cancel_notify_ = false;
  bool auth_failure_close_ = false;  // client capability: tell it why login failed before closing
  std::shared_ptr<const access::Grant> grant_;  // the user's permissions in vhost_
  std::uint64_t grant_generation_ = 0;          // AccessControl::generation() grant_ was read at
  bool blocked_notify_ = false;  // the client advertised the connection.blocked capability
  bool blocked_ = false;         // blocked by an alarm: frames stay unread until it clears
  bool admitted_ = false;
  Clock::time_point last_read_;
  Clock::time_point last_write_;
  Clock::time_point opened_at_;

  std::unordered_map<std::uint16_t, ChannelPtr> channels_;
  std::unordered_map<std::uint16_t, bool> closing_channels_;  // server sent channel.close, awaiting close-ok
  std::vector<std::weak_ptr<Queue>> exclusive_queues_;
};

using ConnectionPtr = std::shared_ptr<Connection>;

}  // namespace mb::broker
