// connection.hpp: an AMQP 0-9-1 client connection on Asio, over the mb_amqp
// codec. One Connection owns one socket, the read loop, a gathered write
// buffer (one async_write in flight, everything queued meanwhile goes in the
// next), heartbeats, and its channels. Use it from one io_context thread.
//
//   auto conn = Connection::create(io, {parse_broker_url(url)});
//   co_await conn->open();                     // TCP, PLAIN, tune, open
//   Channel& ch = co_await conn->open_channel();
//
// A Connection is not reused: when it dies (socket error, missed heartbeats,
// connection.close from the server) on_closed fires once and the owner makes
// a new one (the worker's reconnect loop).
#pragma once

#include <asio.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/amqp/field_table.hpp"
#include "common/client/channel.hpp"
#include "common/client/url.hpp"

namespace mb::client {

inline constexpr std::uint16_t kDefaultHeartbeat = 60;  // seconds, as RabbitMQ offers
inline constexpr std::uint32_t kDefaultFrameMax = 131072;
inline constexpr std::chrono::seconds kDefaultConnectTimeout{10};
inline constexpr double kFirstReconnectBackoff = 0.2;  // seconds; doubled on every failed attempt
inline constexpr double kMaxReconnectBackoff = 10.0;   // seconds between reconnect attempts, at most

struct ConnectionOptions {
  BrokerUrl url;
  std::uint16_t heartbeat = kDefaultHeartbeat;  // 0: none
  std::string connection_name;                  // shown by the broker's management API
  std::chrono::steady_clock::duration connect_timeout = kDefaultConnectTimeout;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  static std::shared_ptr<Connection> create(asio::io_context& io, ConnectionOptions options);
  ~Connection();

  // TCP connect and handshake; throws std::system_error / AmqpError.
  asio::awaitable<void> open();
  asio::awaitable<Channel*> open_channel();  // the Channel is owned by the connection
  // connection.close, wait for close-ok (bounded), drop the socket.
  asio::awaitable<void> close();
  // Drops the socket at once (no AMQP close): the broker requeues unacked messages.
  void abort(const std::string& reason = "aborted");

  void on_closed(std::function<void(const std::string& reason)> fn) { on_closed_ = std::move(fn); }
  bool is_open() const { return state_ == State::kOpen; }
  const amqp::FieldTable& server_properties() const { return server_properties_; }
  std::uint32_t frame_max() const { return frame_max_; }
  std::uint16_t heartbeat() const { return heartbeat_; }
  asio::io_context& io() { return io_; }

  // For Channel: append bytes to the outgoing buffer; flush() sends them at
  // the end of the current loop turn, in one write with whatever else the
  // turn queued (a worker's results and acks, a producer's publishes).
  std::string& out() { return out_; }
  void flush();
  // For Channel: ch->write_acks() runs just before the turn's bytes go out.
  void flush_acks_of(Channel* ch);
  // For Channel: writes the acks gathered so far now, before a method that
  // must follow them (basic.cancel, channel.close, connection.close...).
  void write_gathered_acks();
  void fail(const std::string& reason);

 private:
  enum class State { kNew, kOpening, kOpen, kClosing, kClosed };

  Connection(asio::io_context& io, ConnectionOptions options);
  asio::awaitable<void> read_loop();
  void on_frame(const amqp::Frame& f);
  void write_out();
  void start_heartbeats();
  void heartbeat_tick();

  asio::io_context& io_;
  ConnectionOptions options_;
  asio::ip::tcp::socket socket_;
  asio::steady_timer heartbeat_timer_;
  State state_ = State::kNew;
  std::string in_;         // read buffer; bytes [in_begin_, in_end_) not yet decoded
  std::size_t in_begin_ = 0;
  std::size_t in_end_ = 0;
  std::string out_;
  std::string writing_;
  bool write_in_flight_ = false;
  bool flush_posted_ = false;
  std::vector<Channel*> ack_channels_;  // channels with acks gathered this turn (HELD NOT OWNED: in channels_)
  std::chrono::steady_clock::time_point last_read_{};
  std::chrono::steady_clock::time_point last_write_{};
  amqp::FieldTable server_properties_;
  std::uint32_t frame_max_ = kDefaultFrameMax;
  std::uint16_t channel_max_ = 2047;
  std::uint16_t heartbeat_ = 0;
  std::uint16_t next_channel_ = 1;
  std::unique_ptr<Channel> channel0_;
  std::map<std::uint16_t, std::unique_ptr<Channel>> channels_;
  std::function<void(const std::string&)> on_closed_;
};

}  // namespace mb::client
