// Fakes shared by the broker unit tests (tests/unit/broker_*_test.cpp).
//
// - FakeEnv: a VhostEnv with a clock the test moves by hand, and a dispatch
//   scheduler the test runs explicitly (the real Broker posts it to the loop),
//   so every test is deterministic.
// - FakePersistence: counts what the vhost tells the store; after_commit runs
//   at once, or is held until complete() when `defer` is set.
// - FakeHost: a ChannelHost whose outbound bytes are decoded back into methods
//   and their content (take()), so tests assert on methods, not on bytes.
// - RecordingHooks / FakeSink: QueueHooks and ConsumerSink for testing a Queue
//   alone, with no vhost or channel.
//
// No doctest here: the support library is linked into every broker test, and
// doctest's implementation lives in each test executable.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "broker/channel.hpp"
#include "broker/errors.hpp"
#include "broker/persistence.hpp"
#include "broker/queue.hpp"
#include "broker/vhost.hpp"
#include "common/amqp/frame.hpp"
#include "common/amqp/properties.hpp"

namespace mb::test {

class FakePersistence : public broker::Persistence {
 public:
  bool defer = false;  // hold after_commit callbacks until complete()
  std::size_t messages_enqueued = 0, messages_removed = 0;
  std::size_t queues_declared = 0, queues_deleted = 0, exchanges_declared = 0, exchanges_deleted = 0;

  void exchange_declared(std::string_view, const broker::Exchange&) override { ++exchanges_declared; }
  void exchange_deleted(std::string_view, const broker::Exchange&) override { ++exchanges_deleted; }
  void queue_declared(std::string_view, broker::Queue&) override { ++queues_declared; }
  void queue_deleted(std::string_view, const broker::Queue&) override { ++queues_deleted; }
  void message_enqueued(const broker::Queue&, const broker::QueueEntry&) override { ++messages_enqueued; }
  void message_removed(const broker::Queue&, const broker::QueueEntry&) override { ++messages_removed; }
  void after_commit(std::function<void(bool ok)> done) override;

  // Runs every held callback with ok, in order.
  void complete(bool ok = true);
  std::size_t pending() const { return pending_.size(); }

 private:
  std::vector<std::function<void(bool)>> pending_;
};

class FakeEnv : public broker::VhostEnv {
 public:
  std::int64_t now = 1'700'000'000'000;  // ms since the epoch; tests move it with advance()
  std::uint64_t last_message_id = 0;
  std::vector<broker::QueuePtr> scheduled;  // schedule_dispatch requests not yet run
  FakePersistence store;

  std::int64_t now_ms() const override { return now; }
  std::uint64_t next_message_id() override { return ++last_message_id; }
  void schedule_dispatch(const broker::QueuePtr& q) override { scheduled.push_back(q); }
  broker::Persistence& persistence() override { return store; }
  std::size_t max_queues() const override { return max_queues_value; }
  std::size_t max_queues_value = 0;  // --max-queues; 0: no limit
  // Direct reply-to registry, as the Broker keeps it: key -> consumer (weak).
  std::string register_direct_reply(const std::shared_ptr<broker::Consumer>& c) override;
  void unregister_direct_reply(const std::string& key) override { direct_replies.erase(key); }
  std::shared_ptr<broker::Consumer> find_direct_reply(std::string_view key) const override;
  std::map<std::string, std::weak_ptr<broker::Consumer>, std::less<>> direct_replies;

  void advance(std::int64_t ms) { now += ms; }
  // Runs scheduled dispatches (as Broker::run_dispatch does once per loop
  // turn) until nothing is scheduled; returns how many queues ran.
  std::size_t run_dispatch();
};

// One method the broker wrote, decoded; content methods carry their content.
struct Sent {
  std::uint16_t channel = 0;
  amqp::Method method;
  std::string properties;       // encoded, for basic.deliver / get-ok / return
  std::string body;             // reassembled from its body frames
  std::size_t body_frames = 0;  // how many body frames carried it

  std::string_view name() const { return amqp::method_name(method); }
  template <typename M>
  bool is() const {
    return std::holds_alternative<M>(method);
  }
  // The method as M; throws (reported by doctest) when it is another method.
  template <typename M>
  const M& as() const {
    if (const M* m = std::get_if<M>(&method)) return *m;
    throw std::logic_error("expected " + std::string(M::kName) + ", got " + std::string(name()));
  }
  amqp::BasicProperties decoded_properties() const { return amqp::decode_properties(properties); }
};

// Method names, for comparing a whole exchange at once in a CHECK.
std::vector<std::string> names(const std::vector<Sent>& sent);
// Bodies of the content-carrying methods, in order.
std::vector<std::string> bodies(const std::vector<Sent>& sent);

class FakeHost : public broker::ChannelHost {
 public:
  FakeHost(broker::Vhost& vhost, FakeEnv& env, std::uint64_t connection_id = 1)
      : vhost_(vhost), env_(env), connection_id_(connection_id) {}

  std::uint32_t frame_max_value = 131072;
  bool writable = true;
  bool cancel_notify = true;
  std::string user_name = "guest";
  // Everything allowed unless a test assigns a narrower Grant::compile(...) (null: none).
  std::optional<broker::access::Grant> granted = broker::access::Grant::compile({".*", ".*", ".*"});
  std::uint64_t max_size = 128ull << 20;
  std::size_t max_consumers_value = 0;  // --max-consumers-per-channel; 0: no limit
  std::vector<broker::QueuePtr> exclusive_queues;  // register_exclusive calls

  std::uint64_t connection_id() const override { return connection_id_; }
  broker::Vhost& vhost() override { return vhost_; }
  broker::VhostEnv& env() override { return env_; }
  std::string& out() override { return out_; }
  std::uint32_t frame_max() const override { return frame_max_value; }
  bool can_write() const override { return writable; }
  bool consumer_cancel_notify() const override { return cancel_notify; }
  const std::string& user() const override { return user_name; }
  const broker::access::Grant* grant() override { return granted ? &*granted : nullptr; }
  std::uint64_t max_message_size() const override { return max_size; }
  void register_exclusive(const broker::QueuePtr& q) override { exclusive_queues.push_back(q); }
  std::size_t max_consumers() const override { return max_consumers_value; }

  // Decodes and removes everything written so far. Throws on bytes that are
  // not whole, well-formed frames (that would be a broker bug).
  std::vector<Sent> take();
  bool idle() const { return out_.empty(); }

 private:
  broker::Vhost& vhost_;
  FakeEnv& env_;
  std::uint64_t connection_id_;
  std::string out_;
  std::deque<std::string> archive_;  // the bytes that decoded methods' string_views point into
};

// Content header payload (class 60) for a body of body_size bytes.
std::string content_header(std::uint64_t body_size, const amqp::BasicProperties& props = {});

// Feeds basic.publish, the content header and the body to a channel, the body
// split into frames of at most `chunk` bytes (0: one frame).
struct Publish {
  std::string_view exchange;
  std::string_view routing_key;
  std::string_view body;
  amqp::BasicProperties props = {};
  bool mandatory = false;
  std::size_t chunk = 0;
};
void publish(broker::Channel& ch, const Publish& p);

// A message as the channel would build it, for feeding a Queue or Vhost directly.
broker::MessagePtr make_message(std::string body, std::string routing_key = "rk", const amqp::BasicProperties& props = {},
                                std::string exchange = "");

// Field table from (name, value) pairs.
amqp::FieldTable table(std::initializer_list<amqp::FieldEntry> entries);

// Runs f; returns the AmqpError it threw, or nothing.
template <typename F>
std::optional<broker::AmqpError> amqp_error(F&& f) {
  try {
    f();
  } catch (const broker::AmqpError& e) {
    return e;
  }
  return std::nullopt;
}

// QueueHooks that record what a queue asked for.
class RecordingHooks : public broker::QueueHooks {
 public:
  struct Death {
    std::string body;
    broker::DeathReason reason;
  };
  std::vector<Death> deaths;
  std::size_t wakes = 0, enqueued_count = 0, delivered_count = 0;
  std::vector<std::string> removed_bodies;

  void dead_letter(broker::Queue&, const broker::QueueEntry& e, broker::DeathReason reason) override {
    deaths.emplace_back(Death{std::string(e.msg->body()), reason});
  }
  void wake(broker::Queue&) override { ++wakes; }
  void removed(broker::Queue&, const broker::QueueEntry& e) override { removed_bodies.emplace_back(e.msg->body()); }
  void enqueued(broker::Queue&, const broker::QueueEntry&) override { ++enqueued_count; }
  void delivered(broker::Queue&, const broker::QueueEntry&) override { ++delivered_count; }
};

// A ConsumerSink that keeps deliveries; a consumer takes messages while its
// unacked count is below its prefetch (0: unlimited) and it is not blocked.
class FakeSink : public broker::ConsumerSink {
 public:
  struct Delivery {
    std::string tag;
    broker::QueueEntry entry;
    std::string_view body() const { return entry.msg->body(); }
  };
  std::vector<Delivery> delivered;
  std::set<std::string> blocked;  // consumer tags that cannot take more
  std::vector<std::string> cancelled;

  bool can_deliver(const broker::Consumer& c) const override {
    if (blocked.contains(c.tag)) return false;
    return c.no_ack || c.prefetch == 0 || c.unacked < c.prefetch;
  }
  void deliver(broker::Consumer& c, broker::QueueEntry&& e) override {
    if (!c.no_ack) ++c.unacked;
    delivered.push_back(Delivery{c.tag, std::move(e)});
  }
  void cancelled_by_broker(broker::Consumer& c) override {
    cancelled.push_back(c.tag);
    c.queue->remove_consumer(&c);
  }
  // Tags of the deliveries so far, in order.
  std::vector<std::string> tags() const;
  std::vector<std::string> bodies() const;
  // Takes delivery i out of the list (to ack, requeue or reject it).
  broker::QueueEntry take(std::size_t i);
};

}  // namespace mb::test
