// Unit tests for queue paging (broker/queue.hpp "Paging", broker/durable.*):
// a Vhost over StorePersistence over a MemoryStore, with a window of 4 ready
// messages per durable queue, so every operation crosses the memory/disk
// boundary. The store's completions are posted to a list the test runs by
// hand (turn()), as the broker's loop would, so the "written but not yet known
// durable" state (held in memory) is exercised as well as the on-disk one.
//
// Concerns:
// [x] a backlog past the window stays in the store: in-memory count bounded,
//     ready_count (queue.declare-ok) counts everything, bodies stored once
// [x] FIFO order across the boundary, through consumers and basic.get, both
//     before the store's commit completes (held entries) and after (read back)
// [x] requeue in place, delivery counts and redelivered across the boundary
// [x] purge and delete remove the paged-out tail from the store
// [x] x-max-length drop-head and x-message-ttl (at the head) with a paged tail
// [x] dead-lettering from a paging queue into another paging queue
// [x] a message routed to two paging queues is stored once
// [x] restart: only the window is loaded, the rest is read back in order,
//     unacked ones come back redelivered, transient ones paged to disk are gone
// [x] priority queues do not page
// [x] durable delayed messages: on disk once written (memory holds none), routed in due
//     order when due, once each (also when due before the write completed), after a restart
#include <doctest/doctest.h>

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "broker/durable.hpp"
#include "broker/store/memory_store.hpp"
#include "broker/vhost.hpp"
#include "support/broker_fakes.hpp"
#include "support/doctest_print.hpp"

using namespace mb;  // NOLINT(google-build-using-namespace): test file
using broker::Consumer;
using broker::Queue;
using broker::QueueEntry;
using mb::test::FakeSink;
using mb::test::table;
using Strings = std::vector<std::string>;

namespace {

constexpr std::size_t kWindow = 4;  // tiny, so ten messages already page

// A VhostEnv over a real StorePersistence and a MemoryStore whose completions
// wait in `posted` until turn().
class PagingEnv : public broker::VhostEnv {
 public:
  std::int64_t now = 1'700'000'000'000;
  std::uint64_t last_message_id = 0;
  std::vector<broker::QueuePtr> scheduled;
  std::deque<std::function<void()>> posted;
  std::shared_ptr<store::MemoryStoreData> data = std::make_shared<store::MemoryStoreData>();
  std::unique_ptr<store::MemoryStore> store;
  std::unique_ptr<broker::StorePersistence> persistence_impl;
  std::unique_ptr<broker::Vhost> vhost;

  PagingEnv() { open(); }

  // (Re)opens the store on the same data and rebuilds the vhost from it.
  void open() {
    vhost.reset();
    persistence_impl.reset();
    store.reset();
    posted.clear();
    scheduled.clear();
    auto post = [this](std::function<void()> fn) { posted.push_back(std::move(fn)); };
    store = std::make_unique<store::MemoryStore>(post, data);
    persistence_impl = std::make_unique<broker::StorePersistence>(
        *store, post, broker::PagingLimits{kWindow, 1u << 20}, [this] { return now; });
    vhost = std::make_unique<broker::Vhost>("/", *this);
    last_message_id = std::max(last_message_id, persistence_impl->restore(*vhost));
  }

  // Runs what the loop would run: posted completions and scheduled dispatches.
  void turn() {
    for (int rounds = 0; rounds < 100 && (!posted.empty() || !scheduled.empty()); ++rounds) {
      std::deque<std::function<void()>> batch;
      batch.swap(posted);
      for (auto& fn : batch) fn();
      std::vector<broker::QueuePtr> queues;
      queues.swap(scheduled);
      for (auto& q : queues) {
        q->wake_pending = false;
        if (!q->deleted()) q->dispatch(now);
      }
    }
  }

  std::int64_t now_ms() const override { return now; }
  std::uint64_t next_message_id() override { return ++last_message_id; }
  void schedule_dispatch(const broker::QueuePtr& q) override { scheduled.push_back(q); }
  broker::Persistence& persistence() override { return *persistence_impl; }
  std::string register_direct_reply(const std::shared_ptr<Consumer>&) override { return "x"; }
  void unregister_direct_reply(const std::string&) override {}
  std::shared_ptr<Consumer> find_direct_reply(std::string_view) const override { return nullptr; }

  broker::QueuePtr declare(std::string_view name, const amqp::FieldTable& args = {}) {
    broker::QueueDeclare d;
    d.name = name;
    d.durable = true;
    d.arguments = &args;
    return vhost->declare_queue(d).first;
  }

  // Publishes bodies through the default exchange (persistent unless told).
  void publish(std::string_view queue, const Strings& bodies, bool persistent = true) {
    amqp::BasicProperties props;
    props.delivery_mode = persistent ? 2 : 1;
    for (const auto& body : bodies) {
      auto m = broker::Message::create("", queue, amqp::encode_properties(props), std::string_view(body));
      m->id = next_message_id();
      m->delivery_mode = *props.delivery_mode;
      vhost->publish(*vhost->find_exchange(""), m);
    }
  }

  // basic.get until empty; acks each one unless told otherwise.
  Strings drain(const broker::QueuePtr& q, bool ack = true, std::vector<QueueEntry>* kept = nullptr) {
    Strings out;
    while (auto e = q->get(now, false)) {
      out.emplace_back(e->msg->body());
      if (ack) {
        q->settle(*e);
      } else if (kept) {
        kept->push_back(std::move(*e));
      }
    }
    return out;
  }

  std::size_t stored_entries() const { return data->entries.size(); }
  std::size_t stored_messages() const { return data->messages.size(); }
};

Strings numbered(std::string_view prefix, int from, int to) {
  Strings out;
  for (int i = from; i < to; ++i) out.push_back(std::string(prefix) + std::to_string(i));
  return out;
}

}  // namespace

TEST_CASE("a backlog past the window stays in the store; ready_count counts it all") {
  PagingEnv env;
  auto q = env.declare("q");
  REQUIRE(q->paging());
  env.publish("q", numbered("m", 0, 20));
  env.turn();
  CHECK(q->ready_count() == 20);
  CHECK(q->in_memory_count() == kWindow);
  CHECK(q->paged_out_count() == 16);
  CHECK(env.stored_entries() == 20);
  CHECK(env.stored_messages() == 20);
  CHECK(env.drain(q) == numbered("m", 0, 20));
  CHECK(q->ready_count() == 0);
  env.turn();
  CHECK(env.stored_entries() == 0);
  CHECK(env.stored_messages() == 0);
}

TEST_CASE("order holds while the tail's writes are not yet known durable (held entries)") {
  PagingEnv env;
  auto q = env.declare("q");
  env.publish("q", numbered("m", 0, 10));
  // No turn(): the commits have not completed, so the tail is read from memory.
  CHECK(q->paged_out_count() == 6);
  CHECK(env.drain(q) == numbered("m", 0, 10));
  env.turn();
  CHECK(env.stored_entries() == 0);
}

TEST_CASE("order holds when half the tail is durable and half is not") {
  PagingEnv env;
  auto q = env.declare("q");
  env.publish("q", numbered("m", 0, 10));
  env.turn();  // m4..m9 now on disk only
  env.publish("q", numbered("m", 10, 16));  // m10..m15 held until the next turn
  CHECK(q->ready_count() == 16);
  CHECK(env.drain(q) == numbered("m", 0, 16));
}

TEST_CASE("consumers receive a paged backlog in order, refilled as they ack") {
  PagingEnv env;
  auto q = env.declare("q");
  env.publish("q", numbered("m", 0, 25));
  env.turn();
  FakeSink sink;
  auto c = std::make_shared<Consumer>();
  c->tag = "c";
  c->sink = &sink;
  c->queue = q;
  c->prefetch = 3;
  q->add_consumer(c.get());
  env.turn();
  Strings got;
  while (!sink.delivered.empty()) {
    QueueEntry e = sink.take(0);
    got.emplace_back(e.msg->body());
    --c->unacked;
    q->settle(e);
    q->dispatch(env.now);
  }
  CHECK(got == numbered("m", 0, 25));
  q->remove_consumer(c.get());
  env.turn();
  CHECK(env.stored_entries() == 0);
}

TEST_CASE("requeue goes back in place ahead of the paged tail, delivery counts kept") {
  PagingEnv env;
  auto q = env.declare("q");
  env.publish("q", numbered("m", 0, 12));
  env.turn();
  std::vector<QueueEntry> taken;
  for (int i = 0; i < 6; ++i) taken.push_back(*q->get(env.now, false));  // reads past the first window
  CHECK(taken.back().msg->body() == "m5");
  for (auto it = taken.rbegin(); it != taken.rend(); ++it) q->requeue(std::move(*it));
  auto first = q->get(env.now, false);
  REQUIRE(first);
  CHECK(first->msg->body() == "m0");
  CHECK(first->redelivered);
  CHECK(first->delivery_count == 2);
  q->settle(*first);
  CHECK(env.drain(q) == numbered("m", 1, 12));
}

TEST_CASE("purge and delete remove the paged-out tail from the store") {
  PagingEnv env;
  auto q = env.declare("q");
  env.publish("q", numbered("m", 0, 10));
  env.turn();
  auto unacked = q->get(env.now, false);
  CHECK(q->purge() == 9);
  CHECK(q->ready_count() == 0);
  env.turn();
  CHECK(env.stored_entries() == 1);  // the delivered one stays until acked
  q->settle(*unacked);
  env.publish("q", numbered("n", 0, 10));
  CHECK(env.drain(q) == numbered("n", 0, 10));

  env.publish("q", numbered("k", 0, 10));
  env.turn();
  CHECK(env.vhost->delete_queue("q", false, false, 0) == 10);
  env.turn();
  CHECK(env.stored_entries() == 0);
  CHECK(env.stored_messages() == 0);
}

TEST_CASE("x-max-length drop-head counts the paged tail") {
  PagingEnv env;
  auto q = env.declare("q", table({{"x-max-length", std::int64_t{5}}}));
  env.publish("q", numbered("m", 0, 12));
  CHECK(q->ready_count() == 5);
  env.turn();
  CHECK(env.stored_entries() == 5);
  CHECK(env.drain(q) == numbered("m", 7, 12));
}

TEST_CASE("x-message-ttl expires paged messages when they reach the head, also after a restart") {
  PagingEnv env;
  auto q = env.declare("q", table({{"x-message-ttl", std::int64_t{1000}}}));
  env.publish("q", numbered("m", 0, 10));
  env.turn();
  env.now += 500;
  env.publish("q", numbered("n", 0, 3));
  env.turn();
  env.open();  // a restart: TTLs run from when each message was stored
  q = env.vhost->find_queue("q");
  REQUIRE(q);
  env.now += 600;  // m* are 1100 ms old, n* 600 ms
  CHECK(env.drain(q) == numbered("n", 0, 3));
  env.turn();
  CHECK(env.stored_entries() == 0);
}

TEST_CASE("dead-lettering from a paged queue into another paging queue") {
  PagingEnv env;
  auto dlq = env.declare("dlq");
  auto q = env.declare("q", table({{"x-dead-letter-exchange", std::string("")},
                                   {"x-dead-letter-routing-key", std::string("dlq")}}));
  env.publish("q", numbered("m", 0, 10));
  env.turn();
  while (auto e = q->get(env.now, false)) q->reject(std::move(*e), false);
  env.turn();
  CHECK(q->ready_count() == 0);
  CHECK(dlq->ready_count() == 10);
  CHECK(dlq->paged_out_count() == 6);
  CHECK(env.drain(dlq) == numbered("m", 0, 10));
  env.turn();
  CHECK(env.stored_entries() == 0);
}

TEST_CASE("a message routed to two paging queues is stored once") {
  PagingEnv env;
  auto a = env.declare("a");
  auto b = env.declare("b");
  env.vhost->bind_queue("a", "amq.fanout", "", {}, 0);
  env.vhost->bind_queue("b", "amq.fanout", "", {}, 0);
  amqp::BasicProperties props;
  props.delivery_mode = 2;
  for (const auto& body : numbered("m", 0, 10)) {
    auto m = broker::Message::create("amq.fanout", "", amqp::encode_properties(props), std::string_view(body));
    m->id = env.next_message_id();
    m->delivery_mode = 2;
    env.vhost->publish(*env.vhost->find_exchange("amq.fanout"), m);
  }
  env.turn();
  CHECK(env.stored_messages() == 10);
  CHECK(env.stored_entries() == 20);
  CHECK(env.drain(a) == numbered("m", 0, 10));
  env.turn();
  CHECK(env.stored_messages() == 10);  // b still refers to them
  CHECK(env.drain(b) == numbered("m", 0, 10));
  env.turn();
  CHECK(env.stored_messages() == 0);
}

TEST_CASE("restart loads the window only, then reads the rest back in order") {
  PagingEnv env;
  auto q = env.declare("q");
  env.publish("q", numbered("m", 0, 10));
  env.publish("q", {"transient"}, false);  // paged to disk: lost on restart, as in RabbitMQ
  env.publish("q", numbered("m", 10, 20));
  env.turn();
  auto first = q->get(env.now, false);  // delivered, never acked
  REQUIRE(first);
  CHECK(first->msg->body() == "m0");
  env.turn();

  env.open();
  q = env.vhost->find_queue("q");
  REQUIRE(q);
  CHECK(q->paging());
  CHECK(q->ready_count() == 21);  // the transient one is counted until it is read back
  CHECK(q->in_memory_count() == kWindow);
  auto again = q->get(env.now, false);
  REQUIRE(again);
  CHECK(again->msg->body() == "m0");
  CHECK(again->redelivered);
  CHECK(again->delivery_count == 2);
  q->settle(*again);
  auto second = q->get(env.now, false);
  REQUIRE(second);
  CHECK_FALSE(second->redelivered);
  q->settle(*second);
  CHECK(env.drain(q) == numbered("m", 2, 20));
  CHECK(q->ready_count() == 0);
  env.turn();
  CHECK(env.stored_entries() == 0);
  CHECK(env.stored_messages() == 0);

  // Publishing after the restart continues the sequence after the old tail.
  env.publish("q", numbered("p", 0, 9));
  CHECK(env.drain(q) == numbered("p", 0, 9));
}

TEST_CASE("a transient message in a durable queue stays in memory while nothing is paged") {
  PagingEnv env;
  auto q = env.declare("q");
  env.publish("q", {"t0", "t1"}, false);
  env.turn();
  CHECK(env.stored_entries() == 0);
  CHECK(env.drain(q) == Strings{"t0", "t1"});
}

TEST_CASE("priority queues do not page") {
  PagingEnv env;
  auto q = env.declare("q", table({{"x-max-priority", std::int64_t{5}}}));
  CHECK_FALSE(q->paging());
  env.publish("q", numbered("m", 0, 10));
  CHECK(q->in_memory_count() == 10);
  CHECK(env.drain(q) == numbered("m", 0, 10));
}

namespace {

// A durable x-delayed-message exchange "dx" (direct) bound to durable queue "dq" with key "k".
broker::ExchangePtr declare_delayed(PagingEnv& env) {
  amqp::FieldTable args = table({{"x-delayed-type", std::string("direct")}});
  broker::ExchangeDeclare d;
  d.name = "dx";
  d.type = "x-delayed-message";
  d.durable = true;
  d.arguments = &args;
  auto x = env.vhost->declare_exchange(d);
  env.declare("dq");
  env.vhost->bind_queue("dq", "dx", "k", {}, 0);
  return x;
}

broker::MessagePtr delayed_message(PagingEnv& env, std::string body, bool persistent = true) {
  amqp::BasicProperties props;
  props.delivery_mode = persistent ? 2 : 1;
  auto m = broker::Message::create("dx", "k", amqp::encode_properties(props), std::string_view(body));
  m->id = env.next_message_id();
  m->delivery_mode = *props.delivery_mode;
  return m;
}

}  // namespace

TEST_CASE("durable delayed messages wait on disk, not in memory, and are routed when due in due order") {
  PagingEnv env;
  auto x = declare_delayed(env);
  // Due times in reverse publish order: routing follows due time.
  for (int i = 0; i < 50; ++i) env.vhost->delay(x, delayed_message(env, "d" + std::to_string(i)), env.now + 1000 - i);
  env.vhost->delay(x, delayed_message(env, "transient", false), env.now + 2000);
  CHECK(env.vhost->delayed_in_memory() == 51);  // not yet written
  env.turn();
  CHECK(env.vhost->delayed_in_memory() == 1);  // only the transient one
  CHECK(env.data->delayed.size() == 50);
  auto q = env.vhost->find_queue("dq");
  env.now += 500;
  env.vhost->tick(env.now);
  CHECK(q->ready_count() == 0);
  env.now += 600;
  env.vhost->tick(env.now);
  env.turn();
  CHECK(q->ready_count() == 50);
  Strings expected;
  for (int i = 49; i >= 0; --i) expected.push_back("d" + std::to_string(i));
  CHECK(env.drain(q) == expected);
  env.vhost->tick(env.now);  // reads again before nothing is left: no duplicates
  CHECK(q->ready_count() == 0);
  env.turn();
  CHECK(env.data->delayed.empty());
  env.now += 1000;
  env.vhost->tick(env.now);
  CHECK(env.drain(q) == Strings{"transient"});
}

TEST_CASE("a delayed message due before its write completes is routed once, from memory") {
  PagingEnv env;
  auto x = declare_delayed(env);
  env.vhost->delay(x, delayed_message(env, "soon"), env.now + 10);
  env.now += 20;
  env.vhost->tick(env.now);  // due, and the write has not completed yet
  env.turn();
  env.vhost->tick(env.now);
  auto q = env.vhost->find_queue("dq");
  CHECK(env.drain(q) == Strings{"soon"});
  env.turn();
  CHECK(env.data->delayed.empty());
}

TEST_CASE("durable delayed messages survive a restart without being loaded into memory") {
  PagingEnv env;
  auto x = declare_delayed(env);
  for (int i = 0; i < 20; ++i) env.vhost->delay(x, delayed_message(env, "d" + std::to_string(i)), env.now + 1000 + i);
  env.turn();
  env.open();
  CHECK(env.vhost->delayed_in_memory() == 0);
  auto q = env.vhost->find_queue("dq");
  REQUIRE(q);
  env.vhost->tick(env.now);
  CHECK(q->ready_count() == 0);
  env.now += 1010;
  env.vhost->tick(env.now);
  CHECK(env.drain(q) == numbered("d", 0, 11));
  env.now += 100;
  env.vhost->tick(env.now);
  env.turn();
  env.vhost->tick(env.now);
  CHECK(env.drain(q) == numbered("d", 11, 20));
  env.turn();
  CHECK(env.data->delayed.empty());
  CHECK(env.stored_messages() == 0);
}
