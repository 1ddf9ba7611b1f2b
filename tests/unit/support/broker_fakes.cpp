// Fakes shared by the broker unit tests. See broker_fakes.hpp.
#include "support/broker_fakes.hpp"

#include <utility>

namespace mb::test {

void FakePersistence::after_commit(std::function<void(bool ok)> done) {
  if (defer) {
    pending_.push_back(std::move(done));
    return;
  }
  done(true);
}

void FakePersistence::complete(bool ok) {
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& f : pending) f(ok);
}

std::string FakeEnv::register_direct_reply(const std::shared_ptr<broker::Consumer>& c) {
  std::string key = "g" + std::to_string(direct_replies.size() + 1);
  direct_replies[key] = c;
  return key;
}

std::shared_ptr<broker::Consumer> FakeEnv::find_direct_reply(std::string_view key) const {
  auto it = direct_replies.find(key);
  return it == direct_replies.end() ? nullptr : it->second.lock();
}

std::size_t FakeEnv::run_dispatch() {
  std::size_t ran = 0;
  while (!scheduled.empty()) {
    std::vector<broker::QueuePtr> batch;
    batch.swap(scheduled);
    for (auto& q : batch) {
      q->wake_pending = false;
      if (!q->deleted()) q->dispatch(now);
      ++ran;
    }
  }
  return ran;
}

std::vector<std::string> names(const std::vector<Sent>& sent) {
  std::vector<std::string> out;
  for (const auto& s : sent) out.emplace_back(s.name());
  return out;
}

std::vector<std::string> bodies(const std::vector<Sent>& sent) {
  std::vector<std::string> out;
  for (const auto& s : sent)
    if (s.is<amqp::BasicDeliver>() || s.is<amqp::BasicGetOk>() || s.is<amqp::BasicReturn>()) out.push_back(s.body);
  return out;
}

namespace {

bool has_content(const amqp::Method& m) {
  return std::visit([](const auto& x) { return std::decay_t<decltype(x)>::kHasContent; }, m);
}

}  // namespace

std::vector<Sent> FakeHost::take() {
  archive_.push_back(std::move(out_));
  out_.clear();
  std::string_view buf = archive_.back();
  std::vector<Sent> sent;
  auto next = [&](amqp::FrameType want) -> amqp::Frame {
    amqp::FrameResult r = amqp::decode_frame(buf, 0);
    if (r.status != amqp::DecodeStatus::kFrame) throw std::runtime_error("broker wrote a partial or bad frame");
    if (r.frame.type != want)
      throw std::runtime_error("unexpected frame type " + std::to_string(static_cast<int>(r.frame.type)));
    buf.remove_prefix(r.consumed);
    return r.frame;
  };
  while (!buf.empty()) {
    amqp::Frame f = next(amqp::FrameType::kMethod);
    Sent s;
    s.channel = f.channel;
    s.method = amqp::decode_method(f.payload);
    if (has_content(s.method)) {
      amqp::ContentHeader h = amqp::decode_content_header(next(amqp::FrameType::kHeader).payload);
      s.properties.assign(h.properties);
      while (s.body.size() < h.body_size) {
        s.body.append(next(amqp::FrameType::kBody).payload);
        ++s.body_frames;
      }
      if (s.body.size() != h.body_size) throw std::runtime_error("body longer than its content header says");
    }
    sent.push_back(std::move(s));
  }
  return sent;
}

std::string content_header(std::uint64_t body_size, const amqp::BasicProperties& props) {
  std::string out;
  amqp::Writer w(out);
  amqp::encode_content_header(w, 60, body_size, amqp::encode_properties(props));
  return out;
}

void publish(broker::Channel& ch, const Publish& p) {
  ch.handle(amqp::BasicPublish{0, p.exchange, p.routing_key, p.mandatory, false});
  ch.handle_header(content_header(p.body.size(), p.props));
  const std::size_t chunk = p.chunk == 0 ? std::max<std::size_t>(p.body.size(), 1) : p.chunk;
  for (std::size_t at = 0; at < p.body.size(); at += chunk) ch.handle_body(p.body.substr(at, chunk));
}

broker::MessagePtr make_message(std::string body, std::string routing_key, const amqp::BasicProperties& props,
                                std::string exchange) {
  static std::uint64_t next_id = 0;
  auto m = broker::Message::create(exchange, routing_key, amqp::encode_properties(props), std::string_view(body));
  m->id = ++next_id;
  m->delivery_mode = props.delivery_mode.value_or(0);
  m->priority = props.priority.value_or(0);
  m->has_headers = props.headers.has_value();
  if (props.expiration) m->expiration_ms = std::stoll(*props.expiration);
  return m;
}

amqp::FieldTable table(std::initializer_list<amqp::FieldEntry> entries) {
  amqp::FieldTable t;
  for (const auto& e : entries) t.entries.push_back(e);
  return t;
}

std::vector<std::string> FakeSink::tags() const {
  std::vector<std::string> out;
  for (const auto& d : delivered) out.push_back(d.tag);
  return out;
}

std::vector<std::string> FakeSink::bodies() const {
  std::vector<std::string> out;
  for (const auto& d : delivered) out.emplace_back(d.body());
  return out;
}

broker::QueueEntry FakeSink::take(std::size_t i) {
  broker::QueueEntry e = std::move(delivered.at(i).entry);
  delivered.erase(delivered.begin() + static_cast<std::ptrdiff_t>(i));
  return e;
}

}  // namespace mb::test
