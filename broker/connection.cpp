// Connection: socket I/O, framing, the connection state machine and heartbeats.
// See connection.hpp.
#include "broker/connection.hpp"

#include <spdlog/spdlog.h>

#include <cstring>

#include "broker/broker.hpp"
#include "broker/errors.hpp"

namespace mb::broker {
namespace {

using amqp::FieldTable;

constexpr auto kCloseTimeout = std::chrono::seconds(3);  // wait this long for close-ok after we close

FieldTable server_properties() {
  FieldTable caps;
  for (const char* c : {"publisher_confirms", "exchange_exchange_bindings", "basic.nack", "consumer_cancel_notify",
                        "connection.blocked", "consumer_priorities", "authentication_failure_close",
                        "per_consumer_qos", "direct_reply_to"})
    caps.set(c, true);
  FieldTable p;
  p.set("capabilities", std::move(caps));
  p.set("cluster_name", "minibroker@localhost");
  p.set("copyright", "minibroker contributors");
  p.set("information", "minibroker: a self-contained AMQP 0-9-1 broker");
  p.set("platform", "C++20/Linux");
  p.set("product", "minibroker");
  p.set("version", "0.1.0");
  return p;
}

// AMQPLAIN's response is a field table without its length prefix.
std::pair<std::string, std::string> parse_amqplain(std::string_view response) {
  std::string framed(4, '\0');
  amqp::Writer w(framed);
  w.patch_u32(0, static_cast<std::uint32_t>(response.size()));
  framed.append(response);
  amqp::Reader r(framed);
  FieldTable t = amqp::decode_table(r);
  auto str = [&t](const char* k) {
    const amqp::FieldValue* v = t.find(k);
    auto s = v ? v->as_string() : std::nullopt;
    return s ? std::string(*s) : std::string();
  };
  return {str("LOGIN"), str("PASSWORD")};
}

// PLAIN: [authzid] \0 authcid \0 password
std::optional<std::pair<std::string, std::string>> parse_plain(std::string_view response) {
  const auto first = response.find('\0');
  if (first == std::string_view::npos) return std::nullopt;
  const auto second = response.find('\0', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  return std::make_pair(std::string(response.substr(first + 1, second - first - 1)),
                        std::string(response.substr(second + 1)));
}

template <typename M>
std::pair<std::uint16_t, std::uint16_t> ids_of(const M&) {
  return {M::kClassId, M::kMethodId};
}

}  // namespace

Connection::Connection(Broker& broker, Stream stream, std::uint64_t id)
    : broker_(broker),
      stream_(std::move(stream)),
      timer_(broker.io()),
      store_wait_(broker.io()),
      id_(id),
      channel_max_(broker.options().channel_max),
      frame_max_(broker.options().frame_max) {
  asio::error_code ec;
  auto ep = socket().remote_endpoint(ec);
  if (!ec) {
    peer_ = ep.address().to_string() + ":" + std::to_string(ep.port());
    loopback_ = ep.address().is_loopback();
  }
  auto local = socket().local_endpoint(ec);
  name_ = ec ? peer_ : peer_ + " -> " + local.address().to_string() + ":" + std::to_string(local.port());
  connected_at_ms_ = broker.now_ms();
  socket().set_option(asio::ip::tcp::no_delay(true), ec);
  // wait_readable() reads with read_some once the socket is readable: never block there.
  if (!tls()) socket().non_blocking(true, ec);
}

Connection::~Connection() = default;

VhostEnv& Connection::env() { return broker_; }

std::uint64_t Connection::max_message_size() const { return broker_.options().max_message_size; }

std::size_t Connection::max_consumers() const { return broker_.options().max_consumers_per_channel; }

std::string& Connection::out() {
  schedule_flush();
  return out_;
}

void Connection::start() {
  last_read_ = last_write_ = opened_at_ = Clock::now();
  admitted_ = broker_.take_connection_slot();
  spdlog::debug("connection {} accepted from {}{}", id_, peer_, tls() ? " (TLS)" : "");
  arm_timer();  // the handshake timeout covers the TLS handshake too
  if (auto* t = std::get_if<TlsStream>(&stream_)) {
    t->async_handshake(asio::ssl::stream_base::server, [self = shared_from_this()](const asio::error_code& ec) {
      if (self->state_ == State::kClosed) return;
      if (ec) {
        spdlog::warn("connection {} from {}: TLS handshake failed: {}", self->id_, self->peer_, ec.message());
        self->teardown("TLS handshake failed");
        return;
      }
      self->read();
    });
    return;
  }
  read();
}

// ---- reading ----------------------------------------------------------------

void Connection::read() {
  if (reading_ || blocked_ || state_ == State::kClosed) return;
  if (!can_write()) {
    read_paused_ = true;  // the peer is not reading what we send: stop reading what it sends
    return;
  }
  if (publisher_ && broker_.store_backlogged()) {
    // Flow control: the disk is behind what publishers send. Consumers (and
    // their acks) are still read; this publisher waits until the store catches up.
    store_wait_.expires_after(std::chrono::milliseconds(kStoreBackoffMs));
    store_wait_.async_wait([self = shared_from_this()](const asio::error_code& ec) {
      if (!ec) self->read();
    });
    return;
  }
  // The buffer grows while reads fill it (up to kReadBufferMax) or when a
  // frame needs more; the unread tail of a partial frame moves to the front
  // when the room behind it runs out.
  if (rstart_ == rend_) {
    rstart_ = rend_ = 0;
    // Nothing buffered and the socket was drained: a plain connection waits
    // for bytes without holding a buffer (an idle one costs no read memory).
    // A busy one, whose last read filled the buffer, reads on at once.
    if (drained_ && !tls()) {
      wait_readable();
      return;
    }
  } else if (rstart_ > 0 && (rend_ == rbuf_.size() || rbuf_.size() - rstart_ < frame_need_)) {
    std::memmove(rbuf_.data(), rbuf_.data() + rstart_, rend_ - rstart_);
    rend_ -= rstart_;
    rstart_ = 0;
  }
  if (rbuf_.empty()) rbuf_.resize(kReadBufferInitial);
  if (rbuf_.size() - rstart_ < frame_need_) rbuf_.resize(rstart_ + frame_need_);
  if (rend_ == rbuf_.size()) rbuf_.resize(rbuf_.size() * 2);
  reading_ = true;
  const std::size_t room = rbuf_.size() - rend_;
  auto on_done = [self = shared_from_this(), room](const asio::error_code& ec, std::size_t n) {
    self->drained_ = n < room;
    if (!ec && n == room && self->rbuf_.size() < kReadBufferMax)
      self->rbuf_.resize(std::min(self->rbuf_.size() * 2, kReadBufferMax));
    self->on_read(ec, n);
  };
  std::visit([&](auto& s) { s.async_read_some(asio::buffer(rbuf_.data() + rend_, room), std::move(on_done)); },
             stream_);
}

void Connection::wait_readable() {
  // A buffer of the initial size is cheap to get back; a grown one is kept
  // for the next burst and released by on_timer() if the connection stays idle.
  if (rbuf_.size() <= kReadBufferInitial) std::vector<char>().swap(rbuf_);
  reading_ = waiting_readable_ = true;
  socket().async_wait(asio::socket_base::wait_read,
                      [self = shared_from_this()](const asio::error_code& ec) { self->on_readable(ec); });
}

void Connection::on_readable(const asio::error_code& ec) {
  waiting_readable_ = false;
  if (ec) {
    on_read(ec, 0);
    return;
  }
  if (state_ == State::kClosed) {
    reading_ = false;
    return;
  }
  if (rbuf_.empty()) rbuf_.resize(kReadBufferInitial);
  asio::error_code rec;
  const std::size_t n = socket().read_some(asio::buffer(rbuf_), rec);
  if (rec == asio::error::would_block || rec == asio::error::try_again) {
    reading_ = false;  // readable, but the bytes went (or never came): wait again
    read();
    return;
  }
  drained_ = n < rbuf_.size();
  if (!rec && !drained_ && rbuf_.size() < kReadBufferMax) rbuf_.resize(std::min(rbuf_.size() * 2, kReadBufferMax));
  on_read(rec, n);
}

void Connection::on_read(const asio::error_code& ec, std::size_t n) {
  reading_ = false;
  if (state_ == State::kClosed) return;
  if (ec) {
    teardown(ec == asio::error::eof ? "client closed the TCP connection" : ec.message());
    return;
  }
  last_read_ = Clock::now();
  rend_ += n;
  // Deliver what this read published and write every reply in this handler,
  // rather than in handlers posted behind another reactor poll.
  broker_.open_turn();
  process_input();
  for (auto& [_, ch] : channels_) ch->flush_confirms();
  broker_.end_turn();
  if (state_ != State::kClosed) read();
}

void Connection::process_input() {
  while (state_ != State::kClosed && !blocked_) {
    std::string_view buf(rbuf_.data() + rstart_, rend_ - rstart_);
    if (state_ == State::kAwaitingHeader) {
      if (buf.size() < amqp::kProtocolHeader.size()) return;
      if (!handle_protocol_header()) return;
      continue;
    }
    amqp::FrameResult r = amqp::decode_frame(buf, frame_max_);
    if (r.status == amqp::DecodeStatus::kNeedMore) {
      frame_need_ = r.needed;
      return;
    }
    frame_need_ = 0;
    if (r.status == amqp::DecodeStatus::kError) {
      fail(ReplyCode::kFrameError, r.error);
      return;
    }
    rstart_ += r.consumed;
    handle_frame(r.frame);
  }
}

bool Connection::handle_protocol_header() {
  std::string_view got(rbuf_.data() + rstart_, amqp::kProtocolHeader.size());
  rstart_ += amqp::kProtocolHeader.size();
  if (got != amqp::kProtocolHeader) {
    spdlog::info("connection {} from {}: bad protocol header; replying with ours and closing", id_, peer_);
    out_.append(amqp::kProtocolHeader);
    state_ = State::kClosing;
    teardown_after_flush_ = true;
    flush();
    return false;
  }
  amqp::ConnectionStart start;
  start.version_major = 0;
  start.version_minor = 9;
  start.server_properties = server_properties();
  start.mechanisms = "PLAIN AMQPLAIN";
  start.locales = "en_US";
  amqp::write_method(out(), 0, start);
  state_ = State::kStartSent;
  return true;
}

// ---- frames -----------------------------------------------------------------

void Connection::handle_frame(const amqp::Frame& f) {
  if (state_ == State::kClosing) {
    // After we sent connection.close only close and close-ok matter (spec 4.2.6).
    if (f.type != amqp::FrameType::kMethod || f.channel != 0) return;
    try {
      amqp::Method m = amqp::decode_method(f.payload);
      if (std::holds_alternative<amqp::ConnectionCloseOk>(m)) {
        teardown("close handshake complete");
      } else if (std::holds_alternative<amqp::ConnectionClose>(m)) {
        amqp::write_method(out(), 0, amqp::ConnectionCloseOk{});
      }
    } catch (const amqp::DecodeError&) {
    }
    return;
  }
  if (f.type == amqp::FrameType::kHeartbeat) {
    if (f.channel != 0) fail(ReplyCode::kFrameError, "heartbeat frame on a non-zero channel");
    return;
  }
  if (f.channel == 0) {
    if (f.type != amqp::FrameType::kMethod) {
      fail(ReplyCode::kUnexpectedFrame, "content frame on channel 0");
      return;
    }
    std::optional<amqp::Method> decoded = decode_or_fail(f.payload);
    if (!decoded) return;
    const amqp::Method& m = *decoded;
    try {
      handle_connection_method(m);
    } catch (const AmqpError& e) {
      auto [cls, mid] = std::visit([](const auto& x) { return ids_of(x); }, m);
      fail(e.code(), e.reply_text(), cls, mid);
    } catch (const amqp::DecodeError& e) {
      fail(ReplyCode::kSyntaxError, e.what());
    }
    return;
  }
  if (state_ != State::kOpen) {
    fail(ReplyCode::kChannelError, "channel frame before connection.open-ok");
    return;
  }
  handle_channel_frame(f);
}

std::optional<amqp::Method> Connection::decode_or_fail(std::string_view payload) {
  try {
    return amqp::decode_method(payload);
  } catch (const amqp::UnknownMethod& e) {
    fail(ReplyCode::kNotImplemented, e.what(), e.class_id(), e.method_id());
  } catch (const amqp::DecodeError& e) {
    fail(ReplyCode::kSyntaxError, e.what());
  }
  return std::nullopt;
}

void Connection::handle_channel_frame(const amqp::Frame& f) {
  const std::uint16_t id = f.channel;
  if (closing_channels_.contains(id)) {
    // We closed this channel: drop everything until its close-ok.
    if (f.type != amqp::FrameType::kMethod) return;
    try {
      amqp::Method m = amqp::decode_method(f.payload);
      if (std::holds_alternative<amqp::ChannelCloseOk>(m)) {
        closing_channels_.erase(id);
      } else if (std::holds_alternative<amqp::ChannelClose>(m)) {
        amqp::write_method(out(), id, amqp::ChannelCloseOk{});
        closing_channels_.erase(id);
      }
    } catch (const amqp::DecodeError&) {
    }
    return;
  }
  auto it = channels_.find(id);
  Channel* ch = it == channels_.end() ? nullptr : it->second.get();
  if (f.type != amqp::FrameType::kMethod) {
    if (ch == nullptr) {
      fail(ReplyCode::kChannelError, fmt::format("content frame on channel {} which is not open", id));
      return;
    }
    try {
      if (f.type == amqp::FrameType::kHeader) {
        publisher_ = true;
        ch->handle_header(f.payload);
      } else {
        ch->handle_body(f.payload);
      }
    } catch (const AmqpError& e) {
      if (e.connection_level()) {
        fail(e.code(), e.reply_text(), 60, 40);
      } else {
        close_channel(id, e, 60, 40);
      }
    } catch (const amqp::DecodeError& e) {
      fail(ReplyCode::kSyntaxError, e.what(), 60, 40);
    }
    return;
  }
  std::optional<amqp::Method> decoded = decode_or_fail(f.payload);
  if (!decoded) return;
  const amqp::Method& m = *decoded;
  auto [cls, mid] = std::visit([](const auto& x) { return ids_of(x); }, m);
  if (ch != nullptr && ch->expecting_content()) {
    fail(ReplyCode::kUnexpectedFrame, fmt::format("expected content header for class 60, got {}", amqp::method_name(m)),
         cls, mid);
    return;
  }
  if (std::holds_alternative<amqp::BasicPublish>(m)) {
    publisher_ = true;
    // This publish goes through; what follows waits in the buffer until the alarm clears.
    if (const std::string& alarm = broker_.alarm(); !alarm.empty() && !blocked_) block(alarm);
  }
  if (std::holds_alternative<amqp::ChannelOpen>(m)) {
    if (ch != nullptr) {
      fail(ReplyCode::kChannelError, "CHANNEL_ERROR - second 'channel.open' seen", cls, mid);
      return;
    }
    if (id > channel_max_) {
      fail(ReplyCode::kNotAllowed,
           fmt::format("NOT_ALLOWED - channel {} is above the negotiated channel_max ({})", id, channel_max_), cls, mid);
      return;
    }
    channels_.emplace(id, std::make_shared<Channel>(id, *this));
    amqp::write_method(out(), id, amqp::ChannelOpenOk{});
    return;
  }
  if (ch == nullptr) {
    fail(ReplyCode::kChannelError, fmt::format("CHANNEL_ERROR - expected 'channel.open' on channel {}", id), cls, mid);
    return;
  }
  if (std::holds_alternative<amqp::ChannelClose>(m)) {
    ChannelPtr keep = std::move(it->second);
    channels_.erase(it);
    keep->shutdown();
    amqp::write_method(out(), id, amqp::ChannelCloseOk{});
    return;
  }
  if (std::holds_alternative<amqp::ChannelCloseOk>(m)) return;  // stray close-ok: ignore
  if (cls == 10) {
    fail(ReplyCode::kCommandInvalid, fmt::format("COMMAND_INVALID - connection method on channel {}", id), cls, mid);
    return;
  }
  ChannelPtr keep = it->second;  // a handler may close its own channel
  try {
    keep->handle(m);
  } catch (const AmqpError& e) {
    if (e.connection_level()) {
      fail(e.code(), e.reply_text(), cls, mid);
    } else {
      close_channel(id, e, cls, mid);
    }
  } catch (const amqp::DecodeError& e) {
    fail(ReplyCode::kSyntaxError, e.what(), cls, mid);
  }
}

void Connection::close_channel(std::uint16_t id, const AmqpError& e, std::uint16_t class_id, std::uint16_t method_id) {
  spdlog::info("connection {} ({}) channel {}: closing with {}", id_, peer_, id, e.reply_text());
  auto it = channels_.find(id);
  if (it != channels_.end()) {
    ChannelPtr keep = std::move(it->second);
    channels_.erase(it);
    keep->shutdown();
  }
  closing_channels_[id] = true;
  amqp::write_method(out(), id,
                     amqp::ChannelClose{static_cast<std::uint16_t>(e.code()), e.reply_text(), class_id, method_id});
}

// ---- connection class -------------------------------------------------------

void Connection::handle_connection_method(const amqp::Method& m) {
  switch (state_) {
    case State::kStartSent:
      if (const auto* so = std::get_if<amqp::ConnectionStartOk>(&m)) return on_start_ok(*so);
      break;
    case State::kTuneSent:
      if (const auto* t = std::get_if<amqp::ConnectionTuneOk>(&m)) return on_tune_ok(*t);
      break;
    case State::kAwaitingOpen:
      if (const auto* o = std::get_if<amqp::ConnectionOpen>(&m)) return on_open(*o);
      break;
    case State::kOpen:
      if (std::holds_alternative<amqp::ConnectionClose>(m)) {
        amqp::write_method(out(), 0, amqp::ConnectionCloseOk{});
        state_ = State::kClosing;
        teardown_after_flush_ = true;  // once close-ok is written
        flush();
        return;
      }
      if (std::holds_alternative<amqp::ConnectionCloseOk>(m)) return;
      if (const auto* b = std::get_if<amqp::ConnectionUpdateSecret>(&m)) {
        (void)b;
        amqp::write_method(out(), 0, amqp::ConnectionUpdateSecretOk{});
        return;
      }
      if (std::holds_alternative<amqp::ConnectionBlocked>(m) || std::holds_alternative<amqp::ConnectionUnblocked>(m))
        return;
      break;
    default:
      break;
  }
  if (std::holds_alternative<amqp::ConnectionClose>(m)) {
    // A client may give up during the handshake.
    amqp::write_method(out(), 0, amqp::ConnectionCloseOk{});
    state_ = State::kClosing;
    teardown_after_flush_ = true;
    flush();
    return;
  }
  connection_error(ReplyCode::kCommandInvalid, "unexpected {} during connection state {}", amqp::method_name(m),
                   static_cast<int>(state_));
}

void Connection::on_start_ok(const amqp::ConnectionStartOk& m) {
  const auto* caps = m.client_properties.find("capabilities");
  if (const auto* t = caps ? caps->as_table() : nullptr) {
    if (const auto* ccn = t->find("consumer_cancel_notify")) cancel_notify_ = ccn->as_bool().value_or(false);
    if (const auto* cb = t->find("connection.blocked")) blocked_notify_ = cb->as_bool().value_or(false);
    if (const auto* afc = t->find("authentication_failure_close"))
      auth_failure_close_ = afc->as_bool().value_or(false);
  }
  std::string user, password;
  if (m.mechanism == "PLAIN") {
    auto creds = parse_plain(m.response);
    if (!creds) connection_error(ReplyCode::kAccessRefused, "malformed PLAIN response");
    std::tie(user, password) = *creds;
  } else if (m.mechanism == "AMQPLAIN") {
    std::tie(user, password) = parse_amqplain(m.response);
  } else {
    connection_error(ReplyCode::kAccessRefused, "unsupported authentication mechanism '{}'", m.mechanism);
  }
  std::string refusal = broker_.authenticate(user, password, loopback_);
  if (!refusal.empty()) {
    spdlog::warn("connection {} from {}: {} login refused: {}", id_, peer_, m.mechanism, refusal);
    // As RabbitMQ: the reason stays in the log; a client that announced
    // authentication_failure_close gets 403 with a generic text, others a closed socket.
    if (!auth_failure_close_) {
      teardown("login refused");
      return;
    }
    connection_error(ReplyCode::kAccessRefused,
                     "Login was refused using authentication mechanism {}. For details see the broker logfile.",
                     m.mechanism);
  }
  user_ = std::move(user);
  client_properties_ = m.client_properties;
  const Options& o = broker_.options();
  amqp::write_method(out(), 0, amqp::ConnectionTune{o.channel_max, o.frame_max, o.heartbeat});
  state_ = State::kTuneSent;
}

void Connection::on_tune_ok(const amqp::ConnectionTuneOk& m) {
  const Options& o = broker_.options();
  const std::uint32_t fm = m.frame_max == 0 ? o.frame_max : m.frame_max;
  if (fm > o.frame_max)
    connection_error(ReplyCode::kNotAllowed, "frame_max={} > {} max size", fm, o.frame_max);
  if (fm < amqp::kFrameMinSize)
    connection_error(ReplyCode::kNotAllowed, "frame_max={} < {} min size", fm, amqp::kFrameMinSize);
  frame_max_ = fm;
  channel_max_ = (m.channel_max == 0 || m.channel_max > o.channel_max) ? o.channel_max : m.channel_max;
  heartbeat_ = m.heartbeat;
  state_ = State::kAwaitingOpen;
}

void Connection::on_open(const amqp::ConnectionOpen& m) {
  // RabbitMQ's order and texts: an unknown vhost, then one the user may not use.
  Vhost* vhost = broker_.find_vhost(m.virtual_host);
  if (vhost == nullptr) connection_error(ReplyCode::kNotAllowed, "vhost {} not found", m.virtual_host);
  grant_ = broker_.access().grant(user_, m.virtual_host);
  grant_generation_ = broker_.access().generation();
  if (grant_ == nullptr)
    connection_error(ReplyCode::kNotAllowed, "access to vhost '{}' refused for user '{}'", m.virtual_host, user_);
  vhost_ = vhost;
  // Accepted while every slot was taken (by open connections or handshakes):
  // one may have freed up since.
  if (!admitted_ && !(admitted_ = broker_.take_connection_slot()))
    connection_error(ReplyCode::kNotAllowed, "connection refused: node connection limit ({}) is reached",
                     broker_.options().max_connections);
  amqp::write_method(out(), 0, amqp::ConnectionOpenOk{});
  state_ = State::kOpen;
  spdlog::debug("connection {} from {} open: user '{}', vhost '{}', heartbeat {} s, frame_max {}", id_, peer_, user_,
                vhost_->name(), heartbeat_, frame_max_);
}

const access::Grant* Connection::grant() {
  // Permissions may change while the connection is open (management): re-read
  // them when the registry changed, so every check sees the current ones.
  const access::AccessControl& acl = broker_.access();
  if (grant_generation_ != acl.generation() && vhost_ != nullptr) {
    grant_ = acl.grant(user_, vhost_->name());
    grant_generation_ = acl.generation();
  }
  return grant_.get();
}

void Connection::fail(ReplyCode code, std::string_view text, std::uint16_t class_id, std::uint16_t method_id) {
  if (state_ == State::kClosing || state_ == State::kClosed) return;
  std::string reply(text);
  const std::string_view name = amqp::reply_code_name(static_cast<std::uint16_t>(code));
  if (!reply.starts_with(name)) reply = fmt::format("{} - {}", name, text);
  spdlog::warn("connection {} ({}): closing with {} {} (class {} method {})", id_, peer_, static_cast<int>(code),
               reply, class_id, method_id);
  if (state_ == State::kAwaitingHeader) {
    teardown(reply);
    return;
  }
  close(code, reply, class_id, method_id);
}

void Connection::close(ReplyCode code, std::string text, std::uint16_t class_id, std::uint16_t method_id) {
  if (state_ == State::kClosing || state_ == State::kClosed) return;
  for (auto& [_, ch] : channels_) ch->shutdown();
  channels_.clear();
  amqp::write_method(out(), 0, amqp::ConnectionClose{static_cast<std::uint16_t>(code), text, class_id, method_id});
  state_ = State::kClosing;
  timer_.expires_after(kCloseTimeout);
  timer_.async_wait([self = shared_from_this()](const asio::error_code& ec) {
    if (!ec) self->teardown("no close-ok from client");
  });
}

// ---- writing ----------------------------------------------------------------

void Connection::schedule_flush() {
  if (flush_scheduled_ || state_ == State::kClosed) return;
  flush_scheduled_ = true;
  broker_.schedule_flush(shared_from_this());
}

void Connection::flush_scheduled() {
  flush_scheduled_ = false;
  flush();
}

void Connection::flush() {
  if (writing_now_ || state_ == State::kClosed) return;
  if (out_.empty()) {
    if (teardown_after_flush_) teardown("closed");
    return;
  }
  last_write_ = Clock::now();
  std::size_t sent = 0;
  if (!tls()) {
    // The socket is non-blocking: hand the kernel what it takes now. Most
    // flushes end here, without asio's completion handler, which runs only
    // after another poll of the reactor. The rest waits for writability.
    asio::error_code ec;
    sent = socket().write_some(asio::buffer(out_), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      ec.clear();
      sent = 0;
    }
    if (ec) {
      teardown(ec.message());
      return;
    }
    if (sent == out_.size()) {
      out_.clear();
      if (teardown_after_flush_) {
        teardown("closed");
        return;
      }
      after_write();
      return;
    }
  }
  writing_.swap(out_);
  writing_now_ = true;
  auto on_done = [self = shared_from_this()](const asio::error_code& ec, std::size_t) { self->on_write(ec); };
  std::visit([&](auto& s) { asio::async_write(s, asio::buffer(writing_) + sent, std::move(on_done)); }, stream_);
}

void Connection::on_write(const asio::error_code& ec) {
  writing_now_ = false;
  writing_.clear();
  if (state_ == State::kClosed) return;
  if (ec) {
    teardown(ec.message());
    return;
  }
  if (!out_.empty() || teardown_after_flush_) {
    flush();  // which ends in after_write() once the rest is written
    return;
  }
  after_write();
}

void Connection::after_write() {
  // Nothing more to send: small buffers go back to the allocator, so an idle
  // connection holds none; large ones (a busy consumer's) are kept for reuse.
  if (writing_.capacity() <= kWriteBufferKeep) std::string().swap(writing_);
  if (out_.empty() && out_.capacity() <= kWriteBufferKeep) std::string().swap(out_);
  if (read_paused_ && can_write()) {
    read_paused_ = false;
    read();
  }
  if (can_write())
    for (auto& [_, ch] : channels_) ch->resume_deliveries();
}

// ---- resource alarms --------------------------------------------------------

void Connection::block(const std::string& reason) {
  blocked_ = true;
  spdlog::info("connection {} ({}): blocked, {}", id_, peer_, reason);
  if (blocked_notify_) amqp::write_method(out(), 0, amqp::ConnectionBlocked{reason});
}

void Connection::on_alarm(const std::string& reason) {
  if (state_ != State::kOpen) return;
  if (!reason.empty()) {
    if (publisher_ && !blocked_) block(reason);
    return;
  }
  if (!blocked_) return;
  blocked_ = false;
  spdlog::info("connection {} ({}): unblocked", id_, peer_);
  if (blocked_notify_) amqp::write_method(out(), 0, amqp::ConnectionUnblocked{});
  // Frames that arrived while blocked are in the buffer: handle them, then read on.
  process_input();
  for (auto& [_, ch] : channels_) ch->flush_confirms();
  if (state_ != State::kClosed) read();
}

// ---- heartbeats and timeouts ------------------------------------------------

void Connection::arm_timer() {
  timer_.expires_after(std::chrono::seconds(1));
  timer_.async_wait([self = shared_from_this()](const asio::error_code& ec) {
    if (!ec) self->on_timer();
  });
}

void Connection::on_timer() {
  if (state_ == State::kClosed || state_ == State::kClosing) return;
  const auto now = Clock::now();
  // A buffer grown by a burst, now idle: no pending operation refers to it.
  if (waiting_readable_ && !rbuf_.empty() && now - last_read_ > std::chrono::seconds(kReadBufferIdleSeconds))
    std::vector<char>().swap(rbuf_);
  if (state_ != State::kOpen) {
    if (now - opened_at_ > std::chrono::seconds(kHandshakeTimeoutSeconds)) {
      spdlog::info("connection {} from {}: handshake timeout", id_, peer_);
      teardown("handshake timeout");
      return;
    }
  } else if (heartbeat_ != 0) {
    const auto interval = std::chrono::seconds(heartbeat_);
    // While blocked we do not read, so the client's heartbeats go unseen (RabbitMQ pauses its monitor too).
    if (blocked_) last_read_ = now;
    if (now - last_read_ > 2 * interval) {
      spdlog::warn("connection {} ({}): missed heartbeats from client, closing TCP connection", id_, peer_);
      teardown("missed heartbeats");
      return;
    }
    if (now - last_write_ >= interval / 2 && out_.empty() && !writing_now_) {
      amqp::write_heartbeat(out());
    }
  }
  arm_timer();
}

void Connection::teardown(std::string_view why) {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  spdlog::debug("connection {} ({}) closed: {}", id_, peer_, why);
  asio::error_code ignored;
  timer_.cancel();
  store_wait_.cancel();
  socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  socket().close(ignored);
  auto channels = std::move(channels_);
  channels_.clear();
  for (auto& [_, ch] : channels) ch->shutdown();
  for (auto& wq : exclusive_queues_)
    if (QueuePtr q = wq.lock(); q && !q->deleted() && vhost_ != nullptr) vhost_->remove_queue(q);
  exclusive_queues_.clear();
  auto self = shared_from_this();  // keep alive until this returns
  broker_.remove_connection(id_);
}

}  // namespace mb::broker
