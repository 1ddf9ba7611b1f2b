// connection.cpp: TCP, handshake (PLAIN), tune, heartbeats, frame dispatch.
#include "common/client/connection.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/amqp/frame.hpp"

namespace mb::client {
namespace {

constexpr std::size_t kReadChunk = 64 * 1024;
constexpr auto kCloseTimeout = std::chrono::seconds(2);

amqp::FieldTable client_properties(const ConnectionOptions& o) {
  amqp::FieldTable caps;
  caps.set("authentication_failure_close", true);
  caps.set("consumer_cancel_notify", true);
  caps.set("basic.nack", true);
  caps.set("publisher_confirms", true);
  amqp::FieldTable t;
  t.set("product", "minibroker-client");
  t.set("version", "0.1.0");
  t.set("platform", "C++/Asio");
  t.set("capabilities", caps);
  if (!o.connection_name.empty()) t.set("connection_name", o.connection_name);
  return t;
}

}  // namespace

std::shared_ptr<Connection> Connection::create(asio::io_context& io, ConnectionOptions options) {
  return std::shared_ptr<Connection>(new Connection(io, std::move(options)));
}

Connection::Connection(asio::io_context& io, ConnectionOptions options)
    : io_(io), options_(std::move(options)), socket_(io), heartbeat_timer_(io) {}

Connection::~Connection() {
  std::error_code ignored;
  socket_.close(ignored);
}

asio::awaitable<void> Connection::open() {
  auto self = shared_from_this();
  state_ = State::kOpening;
  const auto& url = options_.url;
  asio::ip::tcp::resolver resolver(io_);
  // Resolved synchronously: an async resolve starts a helper thread, and the
  // prefork pool forks this process later.
  auto endpoints = resolver.resolve(url.host, std::to_string(url.port));
  asio::steady_timer timeout(io_);
  timeout.expires_after(options_.connect_timeout);
  bool timed_out = false;
  timeout.async_wait([this, &timed_out](std::error_code ec) {
    if (ec) return;
    timed_out = true;
    std::error_code ignored;
    socket_.close(ignored);
  });
  std::error_code ec;
  co_await asio::async_connect(socket_, endpoints, asio::redirect_error(asio::use_awaitable, ec));
  if (ec || timed_out) {
    timeout.cancel();
    state_ = State::kClosed;
    throw AmqpError(0, "cannot connect to " + url.host + ":" + std::to_string(url.port) + ": " +
                           (timed_out ? std::string("timed out") : ec.message()));
  }
  socket_.set_option(asio::ip::tcp::no_delay(true));
  channel0_ = std::make_unique<Channel>(*this, 0);
  asio::co_spawn(io_, [self] { return self->read_loop(); }, asio::detached);

  try {
    std::string mechanisms;
    const Channel::Extract on_start = [this, &mechanisms](const amqp::Method& m) -> std::string {
      auto* s = std::get_if<amqp::ConnectionStart>(&m);
      if (!s) throw AmqpError(505, "expected connection.start");
      server_properties_ = s->server_properties;
      mechanisms = s->mechanisms;
      return {};
    };
    const std::function<void()> send_header = [this] {
      out_.append(amqp::kProtocolHeader);
      flush();
    };
    co_await channel0_->expect(on_start, send_header);
    if (mechanisms.find("PLAIN") == std::string::npos)
      throw AmqpError(403, "broker does not offer PLAIN authentication (offers: " + mechanisms + ")");

    std::string response;
    response.push_back('\0');
    response += url.user;
    response.push_back('\0');
    response += url.password;
    amqp::ConnectionStartOk start_ok;
    start_ok.client_properties = client_properties(options_);
    start_ok.mechanism = "PLAIN";
    start_ok.response = response;
    start_ok.locale = "en_US";
    amqp::ConnectionTune tune;
    const Channel::Extract on_tune = [&tune](const amqp::Method& m) -> std::string {
      auto* t = std::get_if<amqp::ConnectionTune>(&m);
      if (!t) throw AmqpError(505, "expected connection.tune");
      tune = *t;
      return {};
    };
    co_await channel0_->call(start_ok, on_tune);
    channel_max_ = tune.channel_max ? tune.channel_max : 2047;
    frame_max_ = tune.frame_max ? std::min(tune.frame_max, kDefaultFrameMax) : kDefaultFrameMax;
    if (options_.heartbeat == 0)
      heartbeat_ = 0;
    else if (tune.heartbeat == 0)
      heartbeat_ = options_.heartbeat;
    else
      heartbeat_ = std::min(tune.heartbeat, options_.heartbeat);
    amqp::write_method(out_, 0, amqp::ConnectionTuneOk{channel_max_, frame_max_, heartbeat_});
    amqp::ConnectionOpen open;
    open.virtual_host = url.vhost;
    const Channel::Extract on_open_ok = expect_reply<amqp::ConnectionOpenOk>();
    co_await channel0_->call(open, on_open_ok);
  } catch (const AmqpError&) {
    timeout.cancel();
    fail("handshake failed");
    throw;
  }
  timeout.cancel();
  if (state_ != State::kOpening) throw AmqpError(0, "connection lost during handshake");
  state_ = State::kOpen;
  channel0_->mark_open();
  start_heartbeats();
}

asio::awaitable<Channel*> Connection::open_channel() {
  if (state_ != State::kOpen) throw AmqpError(0, "connection is not open");
  std::uint16_t id = next_channel_++;
  auto ch = std::make_unique<Channel>(*this, id);
  Channel* p = ch.get();
  channels_[id] = std::move(ch);
  p->mark_open();
  try {
    const amqp::ChannelOpen m{};
    const Channel::Extract ex = expect_reply<amqp::ChannelOpenOk>();
    co_await p->call(m, ex);
  } catch (...) {
    p->fail(AmqpError(0, "channel open failed"));
    throw;
  }
  co_return p;
}

asio::awaitable<void> Connection::close() {
  if (state_ != State::kOpen) co_return;
  auto self = shared_from_this();
  state_ = State::kClosing;
  asio::steady_timer guard(io_);
  guard.expires_after(kCloseTimeout);
  guard.async_wait([self](std::error_code ec) {
    if (!ec) self->fail("close timed out");
  });
  try {
    const amqp::ConnectionClose m{200, "Goodbye", 0, 0};
    const Channel::Extract ex = expect_reply<amqp::ConnectionCloseOk>();
    co_await channel0_->call(m, ex);
  } catch (const AmqpError&) {
  }
  guard.cancel();
  fail("closed by client");
}

void Connection::abort(const std::string& reason) { fail(reason); }

// Reads into one buffer that is never zero-filled or shrunk: decoded frames
// are views into it, and an incomplete tail is moved to the front only when
// the free space runs short.
asio::awaitable<void> Connection::read_loop() {
  auto self = shared_from_this();
  in_.resize(2 * kReadChunk);
  for (;;) {
    if (in_.size() - in_end_ < kReadChunk) {
      if (in_begin_ > 0) {
        std::copy(in_.begin() + static_cast<std::ptrdiff_t>(in_begin_),
                  in_.begin() + static_cast<std::ptrdiff_t>(in_end_), in_.begin());
        in_end_ -= in_begin_;
        in_begin_ = 0;
      }
      if (in_.size() - in_end_ < kReadChunk) in_.resize(in_end_ + 2 * kReadChunk);
    }
    std::error_code ec;
    std::size_t n = co_await socket_.async_read_some(asio::buffer(in_.data() + in_end_, in_.size() - in_end_),
                                                     asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      fail(ec == asio::error::eof ? "connection closed by the broker" : "read failed: " + ec.message());
      co_return;
    }
    in_end_ += n;
    last_read_ = std::chrono::steady_clock::now();
    for (;;) {
      auto r = amqp::decode_frame(std::string_view(in_).substr(in_begin_, in_end_ - in_begin_),
                                  state_ == State::kOpening ? 0 : frame_max_);
      if (r.status == amqp::DecodeStatus::kNeedMore) break;
      if (r.status == amqp::DecodeStatus::kError) {
        fail(std::string("frame error from broker: ") + r.error);
        co_return;
      }
      in_begin_ += r.consumed;
      on_frame(r.frame);
      if (state_ == State::kClosed) co_return;
    }
    if (in_begin_ == in_end_) in_begin_ = in_end_ = 0;
  }
}

void Connection::on_frame(const amqp::Frame& f) {
  if (f.type == amqp::FrameType::kHeartbeat) return;
  if (f.channel == 0) {
    channel0_->on_frame(f);
    return;
  }
  auto it = channels_.find(f.channel);
  if (it != channels_.end()) it->second->on_frame(f);
}

void Connection::flush() {
  if (flush_posted_ || state_ == State::kClosed) return;
  flush_posted_ = true;
  asio::post(io_, [self = shared_from_this()] {
    self->flush_posted_ = false;
    self->write_out();
  });
}

void Connection::flush_acks_of(Channel* ch) {
  if (std::find(ack_channels_.begin(), ack_channels_.end(), ch) == ack_channels_.end()) ack_channels_.push_back(ch);
  flush();
}

void Connection::write_gathered_acks() {
  for (Channel* ch : ack_channels_) ch->write_acks();
  ack_channels_.clear();
}

// One write at a time; what is queued meanwhile goes out in the next one.
void Connection::write_out() {
  if (state_ == State::kClosed) return;
  write_gathered_acks();
  if (write_in_flight_ || out_.empty()) return;
  writing_.swap(out_);
  out_.clear();
  write_in_flight_ = true;
  last_write_ = std::chrono::steady_clock::now();
  asio::async_write(socket_, asio::buffer(writing_), [self = shared_from_this()](std::error_code ec, std::size_t) {
    self->write_in_flight_ = false;
    self->writing_.clear();
    if (ec) {
      self->fail("write failed: " + ec.message());
      return;
    }
    self->write_out();
  });
}

void Connection::start_heartbeats() {
  if (heartbeat_ == 0) return;
  last_read_ = last_write_ = std::chrono::steady_clock::now();
  heartbeat_tick();
}

// Every heartbeat/2 seconds: send a heartbeat if we sent nothing meanwhile;
// give up on the broker after 2 x heartbeat seconds of silence.
void Connection::heartbeat_tick() {
  auto interval = std::chrono::milliseconds(heartbeat_ * 1000 / 2);
  heartbeat_timer_.expires_after(interval);
  heartbeat_timer_.async_wait([self = shared_from_this(), interval](std::error_code ec) {
    if (ec || self->state_ == State::kClosed) return;
    auto now = std::chrono::steady_clock::now();
    if (now - self->last_read_ > std::chrono::seconds(2 * self->heartbeat_)) {
      self->fail("missed heartbeats from the broker");
      return;
    }
    if (now - self->last_write_ >= interval) {
      amqp::write_heartbeat(self->out_);
      self->flush();
    }
    self->heartbeat_tick();
  });
}

void Connection::fail(const std::string& reason) {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  spdlog::debug("connection to {}:{} closed: {}", options_.url.host, options_.url.port, reason);
  std::error_code ignored;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  heartbeat_timer_.cancel();
  AmqpError err(0, reason);
  if (channel0_) channel0_->fail(err);
  for (auto& [id, ch] : channels_) ch->fail(err);
  if (on_closed_) {
    auto fn = std::move(on_closed_);
    on_closed_ = nullptr;
    asio::post(io_, [fn = std::move(fn), reason] { fn(reason); });
  }
}

}  // namespace mb::client
