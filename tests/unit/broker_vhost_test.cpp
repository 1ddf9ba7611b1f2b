// Unit tests for broker/vhost.hpp: declare/delete rules, bindings, routing across exchanges,
// alternate exchanges and dead-lettering, with a FakeEnv (hand-moved clock, explicit dispatch).
//
// Concerns:
// [x] built-in exchanges exist with their types; the default exchange routes by queue name only
// [x] exchange.declare: 403 for the default exchange and new amq.* names, 404 passive missing,
//     406 inequivalent type/durable/auto_delete/internal/arguments, unknown type refused,
//     redeclare returns the same exchange
// [x] exchange.delete: 403 default and amq.*, missing succeeds, if_unused 406, bindings to it go
// [x] queue.declare: 404 passive missing, 403 amq.* names, server-named amq.gen-XXXX (22 chars,
//     unique), 406 inequivalent durable/auto_delete/arguments, integer arguments compare by value,
//     406 invalid arguments, 405 exclusive to another connection checked before 406 (declare,
//     passive, bind, delete), the owner may redeclare
// [x] queue.delete: missing returns 0, if_unused / if_empty 406, returns the ready count,
//     cancels consumers through their sinks, removes bindings (auto-delete exchanges follow)
// [x] bindings: 403 on the default exchange, 404 queue/exchange, idempotent, unbind
// [x] auto-delete exchanges die with their last binding (unbind, queue deletion, e2e), never
//     before the first
// [x] routing: exchange-to-exchange chains, cycles (terminates, each queue once), diamond,
//     headers exchanges decode message headers; alternate exchange when nothing matched (not
//     when something did), AE cycles terminate, missing AE
// [x] dead-lettering: x-death fields (count, reason, queue, time, exchange, routing-keys),
//     x-first-death-*, count incremented on a repeated death in the same queue for the same
//     reason, newest entry first, original-expiration (and expiration removed), other properties
//     kept, x-dead-letter-routing-key, missing DLX drops quietly, expired/maxlen reasons through
//     tick and publish, a queue never dead-letters expired messages into itself
// [x] x-expires through tick (unused queues deleted, ones with consumers kept; use resets it)
// [x] durable entities reach the persistence seam, transient ones do not
// [ ] BUG (skipped): redeclaring an existing amq.* exchange (spec allows it)
// [ ] BUG (skipped): exclusive flag mismatch on redeclare is 405 in RabbitMQ, here 406
// [ ] BUG (skipped): alternate exchange of an exchange reached through an e2e binding ignored
// [ ] BUG (skipped): dead-letter cycles through two queues (maxlen: unbounded recursion; expired:
//     the message circulates forever); RabbitMQ drops cycling messages
#include <doctest/doctest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "broker/vhost.hpp"
#include "support/broker_fakes.hpp"
#include "support/doctest_print.hpp"

using namespace mb;  // NOLINT(google-build-using-namespace): test file
using amqp::ReplyCode;
using broker::ExchangeDeclare;
using broker::QueueDeclare;
using broker::QueuePtr;
using mb::test::amqp_error;
using mb::test::make_message;
using mb::test::table;
using Strings = std::vector<std::string>;

namespace {

struct Fixture {
  test::FakeEnv env;
  broker::Vhost vh{"/", env};

  QueuePtr queue(std::string_view name, const amqp::FieldTable& args = {}, bool durable = false,
                 bool exclusive = false, bool auto_delete = false, std::uint64_t conn = 1) {
    return vh.declare_queue(QueueDeclare{name, false, durable, exclusive, auto_delete, &args, conn}).first;
  }
  broker::ExchangePtr exchange(std::string_view name, std::string_view type, const amqp::FieldTable& args = {},
                               bool auto_delete = false) {
    return vh.declare_exchange(ExchangeDeclare{name, type, false, false, auto_delete, false, &args});
  }
  void bind(std::string_view q, std::string_view x, std::string_view key, const amqp::FieldTable& args = {}) {
    vh.bind_queue(q, x, key, args, 1);
  }
  broker::PublishOutcome publish(std::string_view x, std::string body, std::string key = "rk",
                                 const amqp::BasicProperties& props = {}) {
    auto ex = vh.find_exchange(x);
    REQUIRE(ex);
    return vh.publish(*ex, make_message(std::move(body), std::move(key), props, std::string(x)));
  }
  Strings routed(std::string_view x, std::string key, const amqp::BasicProperties& props = {}) {
    auto ex = vh.find_exchange(x);
    REQUIRE(ex);
    auto msg = make_message("", std::move(key), props, std::string(x));
    std::vector<broker::Queue*> out;
    vh.route(*ex, *msg, out);
    Strings names;
    for (auto* q : out) names.push_back(q->name());
    std::sort(names.begin(), names.end());
    return names;
  }
  Strings drain(std::string_view q) {
    Strings out;
    auto qp = vh.find_queue(q);
    REQUIRE(qp);
    while (auto e = qp->get(env.now, true)) {
      out.emplace_back(e->msg->body());
      qp->discard(*e);  // as Channel::on_get does for no_ack
    }
    return out;
  }
  broker::QueueEntry get(std::string_view q) {
    auto qp = vh.find_queue(q);
    REQUIRE(qp);
    auto e = qp->get(env.now, false);
    REQUIRE(e.has_value());
    return std::move(*e);
  }
};

void check_error(const std::optional<broker::AmqpError>& err, ReplyCode code) {
  REQUIRE_MESSAGE(err.has_value(), "expected reply code " << static_cast<int>(code));
  CHECK_MESSAGE(err->code() == code, err->reply_text());
  CHECK_FALSE(err->connection_level());
}

const amqp::FieldTable& headers_of(const broker::QueueEntry& e, amqp::BasicProperties& storage) {
  storage = amqp::decode_properties(e.msg->properties());
  REQUIRE(storage.headers.has_value());
  return *storage.headers;
}

std::string str(const amqp::FieldValue* v) {
  REQUIRE(v != nullptr);
  auto s = v->as_string();
  REQUIRE(s.has_value());
  return std::string(*s);
}

const amqp::FieldTable& death_at(const amqp::FieldTable& headers, std::size_t i) {
  const auto* xd = headers.find("x-death");
  REQUIRE(xd != nullptr);
  const auto* arr = xd->as_array();
  REQUIRE(arr != nullptr);
  REQUIRE(arr->size() > i);
  const auto* t = (*arr)[i].as_table();
  REQUIRE(t != nullptr);
  return *t;
}

std::size_t death_count(const amqp::FieldTable& headers) {
  const auto* xd = headers.find("x-death");
  return xd && xd->as_array() ? xd->as_array()->size() : 0;
}

}  // namespace

TEST_CASE("built-in exchanges exist with their types") {
  Fixture f;
  struct Builtin {
    const char* name;
    broker::ExchangeType type;
  };
  for (auto b : {Builtin{"", broker::ExchangeType::kDirect}, Builtin{"amq.direct", broker::ExchangeType::kDirect},
                 Builtin{"amq.fanout", broker::ExchangeType::kFanout}, Builtin{"amq.topic", broker::ExchangeType::kTopic},
                 Builtin{"amq.headers", broker::ExchangeType::kHeaders},
                 Builtin{"amq.match", broker::ExchangeType::kHeaders}}) {
    CAPTURE(b.name);
    auto x = f.vh.find_exchange(b.name);
    REQUIRE(x);
    CHECK(x->type() == b.type);
    CHECK(x->durable());
  }
}

TEST_CASE("the default exchange routes by queue name") {
  Fixture f;
  f.queue("tasks");
  f.queue("other");
  CHECK(f.routed("", "tasks") == Strings{"tasks"});
  CHECK(f.routed("", "nope").empty());
  CHECK(f.publish("", "m", "tasks").routed == 1);
  CHECK(f.publish("", "m", "missing").routed == 0);
  CHECK(f.drain("tasks") == Strings{"m"});
  CHECK(f.drain("other").empty());
  // Binding keys of other exchanges do not leak into the default exchange.
  f.bind("other", "amq.direct", "tasks");
  CHECK(f.routed("", "tasks") == Strings{"tasks"});
}

TEST_CASE("exchange.declare rules") {
  Fixture f;
  const amqp::FieldTable none;
  SUBCASE("403 on the default exchange and on new amq.* names") {
    check_error(amqp_error([&] { f.exchange("", "direct"); }), ReplyCode::kAccessRefused);
    check_error(amqp_error([&] { f.exchange("amq.custom", "direct"); }), ReplyCode::kAccessRefused);
    CHECK_FALSE(f.vh.find_exchange("amq.custom"));
  }
  SUBCASE("passive: 404 when missing, found otherwise (type not checked)") {
    check_error(amqp_error([&] { f.vh.declare_exchange(ExchangeDeclare{"nope", "direct", true}); }),
                ReplyCode::kNotFound);
    f.exchange("logs", "fanout");
    CHECK(f.vh.declare_exchange(ExchangeDeclare{"logs", "topic", true}) == f.vh.find_exchange("logs"));
    CHECK(f.vh.declare_exchange(ExchangeDeclare{"amq.direct", "direct", true}) == f.vh.find_exchange("amq.direct"));
  }
  SUBCASE("unknown types are refused") {
    CHECK(amqp_error([&] { f.exchange("x", "x-no-such-type"); }).has_value());
    CHECK_FALSE(f.vh.find_exchange("x"));
  }
  SUBCASE("406 on inequivalent redeclare; equal redeclare returns the same exchange") {
    const auto ae = table({{"alternate-exchange", "ae"}});
    auto x = f.vh.declare_exchange(ExchangeDeclare{"x", "direct", false, true, false, false, &ae});
    CHECK(f.env.store.exchanges_declared == 1);
    CHECK(f.vh.declare_exchange(ExchangeDeclare{"x", "direct", false, true, false, false, &ae}) == x);
    struct Case {
      const char* what;
      ExchangeDeclare d;
    };
    const auto other = table({{"alternate-exchange", "other"}});
    const Case cases[] = {
        {"type", ExchangeDeclare{"x", "fanout", false, true, false, false, &ae}},
        {"durable", ExchangeDeclare{"x", "direct", false, false, false, false, &ae}},
        {"auto_delete", ExchangeDeclare{"x", "direct", false, true, true, false, &ae}},
        {"internal", ExchangeDeclare{"x", "direct", false, true, false, true, &ae}},
        {"arguments", ExchangeDeclare{"x", "direct", false, true, false, false, &other}},
        {"arguments missing", ExchangeDeclare{"x", "direct", false, true, false, false, &none}},
    };
    for (const auto& c : cases) {
      CAPTURE(c.what);
      check_error(amqp_error([&] { f.vh.declare_exchange(c.d); }), ReplyCode::kPreconditionFailed);
    }
  }
}

TEST_CASE("exchange.declare of an existing amq.* exchange with the same properties succeeds"
         ) {
  // BUG: vhost.cpp Vhost::declare_exchange refuses every non-passive declare of an amq.* name
  // with 403, also for the pre-declared exchanges. The spec (exchange.declare, rule "reserved")
  // and RabbitMQ allow it when the exchange already exists; only new amq.* names get 403.
  Fixture f;
  CHECK_FALSE(amqp_error([&] {
                f.vh.declare_exchange(ExchangeDeclare{"amq.direct", "direct", false, true, false, false, nullptr});
              }).has_value());
  CHECK_FALSE(amqp_error([&] {
                f.vh.declare_exchange(ExchangeDeclare{"amq.topic", "topic", false, true, false, false, nullptr});
              }).has_value());
}

TEST_CASE("exchange.delete rules") {
  Fixture f;
  check_error(amqp_error([&] { f.vh.delete_exchange("", false); }), ReplyCode::kAccessRefused);
  check_error(amqp_error([&] { f.vh.delete_exchange("amq.direct", false); }), ReplyCode::kAccessRefused);
  CHECK_FALSE(amqp_error([&] { f.vh.delete_exchange("missing", false); }).has_value());

  f.exchange("x", "direct");
  f.exchange("upstream", "fanout");
  f.queue("q");
  f.bind("q", "x", "k");
  f.vh.bind_exchange("x", "upstream", "", {});
  check_error(amqp_error([&] { f.vh.delete_exchange("x", true); }), ReplyCode::kPreconditionFailed);
  CHECK(f.vh.find_exchange("x"));
  f.vh.delete_exchange("x", false);
  CHECK_FALSE(f.vh.find_exchange("x"));
  // The binding from "upstream" to the deleted exchange went with it.
  CHECK_FALSE(f.vh.find_exchange("upstream")->has_bindings());
  CHECK(f.routed("upstream", "k").empty());
}

TEST_CASE("queue.declare rules") {
  Fixture f;
  SUBCASE("404 passive missing; passive existing returns it") {
    check_error(amqp_error([&] { f.vh.declare_queue(QueueDeclare{"nope", true}); }), ReplyCode::kNotFound);
    auto q = f.queue("q");
    auto [found, created] = f.vh.declare_queue(QueueDeclare{"q", true});
    CHECK(found == q);
    CHECK_FALSE(created);
  }
  SUBCASE("403 on amq.* names") {
    check_error(amqp_error([&] { f.queue("amq.mine"); }), ReplyCode::kAccessRefused);
    CHECK(f.vh.queues().empty());
  }
  SUBCASE("server-named queues are amq.gen- plus 22 characters, unique") {
    auto [a, created_a] = f.vh.declare_queue(QueueDeclare{""});
    auto [b, created_b] = f.vh.declare_queue(QueueDeclare{""});
    CHECK(created_a);
    CHECK(created_b);
    CHECK(a->name().starts_with("amq.gen-"));
    CHECK(a->name().size() == 8 + 22);
    CHECK(a->name() != b->name());
    CHECK(f.vh.find_queue(a->name()) == a);
  }
  SUBCASE("406 on inequivalent redeclare") {
    const auto args = table({{"x-message-ttl", std::int32_t{1000}}, {"x-dead-letter-exchange", "dlx"}});
    auto q = f.queue("q", args, true);
    CHECK(f.env.store.queues_declared == 1);
    struct Case {
      const char* what;
      bool durable, auto_delete;
      amqp::FieldTable args;
    };
    const Case cases[] = {
        {"durable", false, false, args},
        {"auto_delete", true, true, args},
        {"ttl differs", true, false, table({{"x-message-ttl", std::int32_t{2000}}, {"x-dead-letter-exchange", "dlx"}})},
        {"argument missing", true, false, table({{"x-message-ttl", std::int32_t{1000}}})},
        {"argument added", true, false,
         table({{"x-message-ttl", std::int32_t{1000}}, {"x-dead-letter-exchange", "dlx"}, {"x-max-length", std::int32_t{1}}})},
    };
    for (const auto& c : cases) {
      CAPTURE(c.what);
      check_error(amqp_error([&] { f.queue("q", c.args, c.durable, false, c.auto_delete); }),
                  ReplyCode::kPreconditionFailed);
    }
    // Integer arguments compare by value, whatever width the client used; unknown keys are not compared.
    const auto wider = table({{"x-message-ttl", std::int64_t{1000}}, {"x-dead-letter-exchange", "dlx"}, {"x-custom", "1"}});
    CHECK(f.queue("q", wider, true) == q);
  }
  SUBCASE("406 on invalid arguments, and nothing is created") {
    check_error(amqp_error([&] { f.queue("q", table({{"x-max-priority", std::int32_t{1000}}})); }),
                ReplyCode::kPreconditionFailed);
    check_error(amqp_error([&] { f.queue("q", table({{"x-overflow", "sideways"}})); }), ReplyCode::kPreconditionFailed);
    CHECK_FALSE(f.vh.find_queue("q"));
  }
  SUBCASE("transient queues do not reach the store") {
    f.queue("t");
    CHECK(f.env.store.queues_declared == 0);
  }
}

TEST_CASE("exclusive queues: 405 for other connections, checked before 406") {
  Fixture f;
  auto q = f.queue("ex", {}, false, true, false, /*conn=*/1);
  CHECK(q->exclusive());
  CHECK(q->owner() == 1);
  const amqp::FieldTable none;
  check_error(amqp_error([&] { f.queue("ex", {}, false, true, false, 2); }), ReplyCode::kResourceLocked);
  // Inequivalent too, but the lock is reported first.
  check_error(amqp_error([&] { f.queue("ex", table({{"x-max-length", std::int32_t{1}}}), true, true, false, 2); }),
              ReplyCode::kResourceLocked);
  check_error(amqp_error([&] { f.vh.declare_queue(QueueDeclare{"ex", true, false, false, false, &none, 2}); }),
              ReplyCode::kResourceLocked);
  check_error(amqp_error([&] { f.vh.bind_queue("ex", "amq.direct", "k", {}, 2); }), ReplyCode::kResourceLocked);
  check_error(amqp_error([&] { f.vh.delete_queue("ex", false, false, 2); }), ReplyCode::kResourceLocked);
  check_error(amqp_error([&] { f.vh.check_exclusive(*q, 2); }), ReplyCode::kResourceLocked);
  // The owner is fine.
  CHECK(f.queue("ex", {}, false, true, false, 1) == q);
  CHECK_FALSE(amqp_error([&] { f.vh.bind_queue("ex", "amq.direct", "k", {}, 1); }).has_value());
  CHECK(f.vh.delete_queue("ex", false, false, 1) == 0);
  CHECK_FALSE(f.vh.find_queue("ex"));
}

TEST_CASE("redeclaring with a different exclusive flag is 405 RESOURCE_LOCKED") {
  // BUG: vhost.cpp Vhost::declare_queue reports an exclusive mismatch as 406 "inequivalent arg
  // 'exclusive'". RabbitMQ checks exclusivity strictly on redeclare (rabbit_amqqueue:
  // check_exclusive_access(Q, Owner, strict)) and answers 405 RESOURCE_LOCKED, which is why its
  // text says "...or the exclusive property value does not match that of the original declaration".
  Fixture f;
  f.queue("shared");
  check_error(amqp_error([&] { f.queue("shared", {}, false, true, false, 1); }), ReplyCode::kResourceLocked);
  f.queue("mine", {}, false, true, false, 1);
  check_error(amqp_error([&] { f.queue("mine", {}, false, false, false, 1); }), ReplyCode::kResourceLocked);
}

TEST_CASE("queue.delete rules") {
  Fixture f;
  CHECK(f.vh.delete_queue("missing", false, false, 1) == 0);
  auto q = f.queue("q");
  f.publish("", "a", "q");
  f.publish("", "b", "q");
  test::FakeSink sink;
  broker::Consumer c;
  c.tag = "ctag";
  c.sink = &sink;
  c.queue = q;
  c.prefetch = 1;
  q->add_consumer(&c);
  f.env.run_dispatch();
  REQUIRE(sink.delivered.size() == 1);

  check_error(amqp_error([&] { f.vh.delete_queue("q", true, false, 1); }), ReplyCode::kPreconditionFailed);
  check_error(amqp_error([&] { f.vh.delete_queue("q", false, true, 1); }), ReplyCode::kPreconditionFailed);
  CHECK(f.vh.find_queue("q"));

  f.exchange("auto", "direct", {}, true);
  f.bind("q", "auto", "k");
  f.bind("q", "amq.topic", "#");
  CHECK(f.vh.delete_queue("q", false, false, 1) == 1);  // ready messages, not the unacked one
  CHECK_FALSE(f.vh.find_queue("q"));
  CHECK(q->deleted());
  CHECK(sink.cancelled == Strings{"ctag"});
  CHECK(q->consumer_count() == 0);
  CHECK_FALSE(f.vh.find_exchange("amq.topic")->has_bindings());
  CHECK_FALSE(f.vh.find_exchange("auto"));  // auto-delete: its last binding went with the queue
  // The unacked message can still be settled; nothing is redelivered.
  q->settle(sink.take(0));
  CHECK(q->ready_count() == 0);
}

TEST_CASE("bindings") {
  Fixture f;
  f.queue("q");
  f.exchange("x", "direct");
  check_error(amqp_error([&] { f.bind("q", "", "q"); }), ReplyCode::kAccessRefused);
  check_error(amqp_error([&] { f.vh.unbind_queue("q", "", "q", {}, 1); }), ReplyCode::kAccessRefused);
  check_error(amqp_error([&] { f.bind("nope", "x", "k"); }), ReplyCode::kNotFound);
  check_error(amqp_error([&] { f.bind("q", "nope", "k"); }), ReplyCode::kNotFound);
  check_error(amqp_error([&] { f.vh.bind_exchange("x", "", "k", {}); }), ReplyCode::kAccessRefused);
  check_error(amqp_error([&] { f.vh.bind_exchange("", "x", "k", {}); }), ReplyCode::kAccessRefused);
  check_error(amqp_error([&] { f.vh.bind_exchange("x", "nope", "k", {}); }), ReplyCode::kNotFound);

  f.bind("q", "x", "k");
  f.bind("q", "x", "k");
  CHECK(f.vh.find_exchange("x")->bindings().size() == 1);
  CHECK(f.routed("x", "k") == Strings{"q"});
  f.vh.unbind_queue("q", "x", "k", {}, 1);
  CHECK(f.routed("x", "k").empty());
  CHECK_FALSE(amqp_error([&] { f.vh.unbind_queue("q", "x", "k", {}, 1); }).has_value());  // already gone: fine
}

TEST_CASE("auto-delete exchanges die with their last binding, never before the first") {
  Fixture f;
  f.queue("q1");
  f.queue("q2");
  auto ad = f.exchange("ad", "fanout", {}, true);
  CHECK(f.vh.find_exchange("ad"));  // no binding yet: stays
  f.bind("q1", "ad", "");
  f.bind("q2", "ad", "");
  f.vh.unbind_queue("q1", "ad", "", {}, 1);
  CHECK(f.vh.find_exchange("ad"));
  SUBCASE("unbinding the last queue") {
    f.vh.unbind_queue("q2", "ad", "", {}, 1);
    CHECK_FALSE(f.vh.find_exchange("ad"));
  }
  SUBCASE("deleting the last bound queue") {
    f.vh.delete_queue("q2", false, false, 1);
    CHECK_FALSE(f.vh.find_exchange("ad"));
  }
  SUBCASE("deleting the last bound exchange") {
    f.vh.unbind_queue("q2", "ad", "", {}, 1);
    auto ad2 = f.exchange("ad2", "fanout", {}, true);
    f.exchange("dst", "fanout");
    f.vh.bind_exchange("dst", "ad2", "", {});
    f.vh.delete_exchange("dst", false);
    CHECK_FALSE(f.vh.find_exchange("ad2"));
  }
}

TEST_CASE("routing follows exchange-to-exchange bindings, cycles included") {
  Fixture f;
  f.exchange("a", "fanout");
  f.exchange("b", "topic");
  f.exchange("c", "direct");
  f.queue("qa");
  f.queue("qb");
  f.queue("qc");
  f.bind("qa", "a", "");
  f.bind("qb", "b", "logs.#");
  f.bind("qc", "c", "logs.error");
  f.vh.bind_exchange("b", "a", "", {});
  f.vh.bind_exchange("c", "b", "logs.*", {});
  SUBCASE("chain") {
    CHECK(f.routed("a", "logs.error") == Strings{"qa", "qb", "qc"});
    CHECK(f.routed("a", "logs.info") == Strings{"qa", "qb"});
    CHECK(f.routed("a", "other") == Strings{"qa"});
    CHECK(f.routed("b", "logs.error") == Strings{"qb", "qc"});
  }
  SUBCASE("cycle a -> b -> c -> a, and a self-binding: terminates, each queue once") {
    f.vh.bind_exchange("a", "c", "logs.error", {});
    f.vh.bind_exchange("a", "a", "", {});
    f.bind("qc", "a", "");  // reachable twice
    CHECK(f.routed("c", "logs.error") == Strings{"qa", "qb", "qc"});
    CHECK(f.routed("a", "logs.error") == Strings{"qa", "qb", "qc"});
    CHECK(f.publish("c", "m", "logs.error").routed == 3);
    CHECK(f.drain("qc") == Strings{"m"});
  }
  SUBCASE("diamond: a -> b, a -> d, both -> qb") {
    f.exchange("d", "fanout");
    f.vh.bind_exchange("d", "a", "", {});
    f.bind("qb", "d", "");
    CHECK(f.routed("a", "x") == Strings{"qa", "qb"});
  }
}

TEST_CASE("deleted exchanges are freed, self-bound and cyclic ones included") {
  // Bindings own their destinations; a self-binding or a cycle must not keep a deleted exchange
  // (and the queues bound from it) alive.
  Fixture f;
  std::weak_ptr<broker::Exchange> a = f.exchange("a", "fanout");
  std::weak_ptr<broker::Exchange> b = f.exchange("b", "fanout");
  std::weak_ptr<broker::Queue> q = f.queue("q");
  f.bind("q", "a", "");
  f.vh.bind_exchange("a", "a", "", {});
  f.vh.bind_exchange("b", "a", "", {});
  f.vh.bind_exchange("a", "b", "", {});
  f.vh.delete_exchange("a", false);
  CHECK(a.expired());
  CHECK_FALSE(b.expired());
  f.vh.delete_exchange("b", false);
  CHECK(b.expired());
  f.vh.delete_queue("q", false, false, 1);
  CHECK(q.expired());
}

TEST_CASE("headers exchanges in the vhost decode the message's headers") {
  Fixture f;
  f.queue("pdf");
  f.bind("pdf", "amq.match", "", table({{"x-match", "any"}, {"format", "pdf"}}));
  amqp::BasicProperties props;
  props.headers = table({{"format", "pdf"}});
  CHECK(f.routed("amq.match", "", props) == Strings{"pdf"});
  props.headers = table({{"format", "zip"}});
  CHECK(f.routed("amq.match", "", props).empty());
  CHECK(f.routed("amq.match", "", {}).empty());
  // Reached through an exchange-to-exchange binding too.
  f.vh.bind_exchange("amq.match", "amq.fanout", "", {});
  props.headers = table({{"format", "pdf"}});
  CHECK(f.routed("amq.fanout", "", props) == Strings{"pdf"});
}

TEST_CASE("alternate exchange takes what the exchange could not route") {
  Fixture f;
  f.exchange("ae", "fanout");
  f.exchange("x", "direct", table({{"alternate-exchange", "ae"}}));
  f.queue("q");
  f.queue("unrouted");
  f.bind("q", "x", "k");
  f.bind("unrouted", "ae", "");
  CHECK(f.routed("x", "k") == Strings{"q"});
  CHECK(f.routed("x", "other") == Strings{"unrouted"});
  SUBCASE("AE of the AE, and cycles between them") {
    f.exchange("ae2", "fanout");
    f.exchange("x2", "direct", table({{"alternate-exchange", "ae3"}}));
    f.exchange("ae3", "direct", table({{"alternate-exchange", "x2"}}));  // x2 <-> ae3
    CHECK(f.routed("x2", "k").empty());
    f.bind("q", "ae3", "k");
    CHECK(f.routed("x2", "k") == Strings{"q"});
  }
  SUBCASE("missing AE: unroutable") {
    f.exchange("y", "direct", table({{"alternate-exchange", "does-not-exist"}}));
    CHECK(f.routed("y", "k").empty());
  }
  SUBCASE("mandatory accounting: routed through the AE counts as routed") {
    CHECK(f.publish("x", "m", "other").routed == 1);
    CHECK(f.drain("unrouted") == Strings{"m"});
  }
}

TEST_CASE("alternate exchange of an exchange reached through an e2e binding") {
  // BUG: vhost.cpp Vhost::route_from only consults the alternate exchange of the exchange
  // published to, and only when the whole walk found no queue. RabbitMQ (rabbit_exchange:route1,
  // process_alternate) uses each exchange's own AE when that exchange matched nothing, also for
  // exchanges reached through exchange-to-exchange bindings; and does not use an exchange's AE
  // when it matched an exchange (even one that then routes nowhere).
  Fixture f;
  f.exchange("inner-ae", "fanout");
  f.exchange("inner", "direct", table({{"alternate-exchange", "inner-ae"}}));
  f.exchange("outer", "fanout");
  f.queue("q-inner-ae");
  f.queue("q-outer");
  f.bind("q-inner-ae", "inner-ae", "");
  f.bind("q-outer", "outer", "");
  f.vh.bind_exchange("inner", "outer", "", {});
  // outer routes to q-outer and to inner; inner matches nothing for "k": its AE takes it.
  CHECK(f.routed("outer", "k") == Strings{"q-inner-ae", "q-outer"});

  // An exchange that matched only an exchange does not use its own AE.
  f.exchange("top-ae", "fanout");
  f.exchange("top", "fanout", table({{"alternate-exchange", "top-ae"}}));
  f.exchange("dead-end", "direct");
  f.queue("q-top-ae");
  f.bind("q-top-ae", "top-ae", "");
  f.vh.bind_exchange("dead-end", "top", "", {});
  CHECK(f.routed("top", "k").empty());
}

TEST_CASE("dead-lettering writes x-death as RabbitMQ does") {
  Fixture f;
  f.exchange("orders", "direct");
  f.exchange("dlx", "fanout");
  f.queue("work", table({{"x-dead-letter-exchange", "dlx"}}));
  f.queue("dlq");
  f.bind("work", "orders", "new");
  f.bind("dlq", "dlx", "");

  amqp::BasicProperties props;
  props.content_type = "application/json";
  props.expiration = "60000";
  props.headers = table({{"app", "shop"}});
  props.delivery_mode = 2;
  CHECK(f.publish("orders", "order-1", "new", props).routed == 1);
  auto delivered = f.get("work");
  f.env.advance(2500);
  f.vh.find_queue("work")->reject(std::move(delivered), false);

  auto dead = f.get("dlq");
  CHECK(dead.msg->body() == "order-1");
  CHECK(dead.msg->exchange() == "dlx");
  CHECK(dead.msg->routing_key() == "new");
  CHECK_FALSE(dead.msg->expiration_ms.has_value());
  CHECK(dead.msg->delivery_mode == 2);
  amqp::BasicProperties got;
  const auto& h = headers_of(dead, got);
  CHECK(got.content_type == "application/json");
  CHECK_FALSE(got.expiration.has_value());
  CHECK(str(h.find("app")) == "shop");
  REQUIRE(death_count(h) == 1);
  const auto& d = death_at(h, 0);
  CHECK(d.find("count")->as_int() == 1);
  CHECK(str(d.find("reason")) == "rejected");
  CHECK(str(d.find("queue")) == "work");
  CHECK(*d.find("time") == amqp::FieldValue(amqp::Timestamp{static_cast<std::uint64_t>(f.env.now / 1000)}));
  CHECK(str(d.find("exchange")) == "orders");
  REQUIRE(d.find("routing-keys") != nullptr);
  REQUIRE(d.find("routing-keys")->as_array() != nullptr);
  CHECK(*d.find("routing-keys")->as_array() == amqp::FieldArray{amqp::FieldValue("new")});
  CHECK(str(d.find("original-expiration")) == "60000");
  CHECK(str(h.find("x-first-death-exchange")) == "orders");
  CHECK(str(h.find("x-first-death-queue")) == "work");
  CHECK(str(h.find("x-first-death-reason")) == "rejected");
}

TEST_CASE("x-death: count grows on repeated deaths in the same queue; newest entry first") {
  Fixture f;
  // "retry" dead-letters rejected messages back into itself; "parking" receives what expires in "hold".
  f.queue("retry", table({{"x-dead-letter-exchange", ""}, {"x-dead-letter-routing-key", "hold"}}));
  f.queue("hold", table({{"x-message-ttl", std::int32_t{100}},
                         {"x-dead-letter-exchange", ""},
                         {"x-dead-letter-routing-key", "retry"}}));
  f.queue("self", table({{"x-dead-letter-exchange", ""}, {"x-dead-letter-routing-key", "self"}}));
  f.queue("parking");

  SUBCASE("rejected into the same queue twice: one entry, count 2") {
    f.publish("", "m", "self");
    f.vh.find_queue("self")->reject(f.get("self"), false);
    f.vh.find_queue("self")->reject(f.get("self"), false);
    auto e = f.get("self");
    amqp::BasicProperties p;
    const auto& h = headers_of(e, p);
    REQUIRE(death_count(h) == 1);
    CHECK(death_at(h, 0).find("count")->as_int() == 2);
    CHECK(str(death_at(h, 0).find("reason")) == "rejected");
    CHECK(str(h.find("x-first-death-queue")) == "self");
    CHECK(e.msg->exchange() == "");
    CHECK(e.msg->routing_key() == "self");
  }
  SUBCASE("rejected in retry, expired in hold, rejected in retry again") {
    f.publish("", "m", "retry");
    f.vh.find_queue("retry")->reject(f.get("retry"), false);  // -> hold
    CHECK(f.vh.find_queue("hold")->ready_count() == 1);
    f.env.advance(101);
    f.vh.tick(f.env.now);  // expires in hold -> retry
    CHECK(f.vh.find_queue("hold")->ready_count() == 0);
    f.vh.find_queue("retry")->reject(f.get("retry"), false);  // -> hold again
    auto e = f.get("hold");
    amqp::BasicProperties p;
    const auto& h = headers_of(e, p);
    REQUIRE(death_count(h) == 2);
    CHECK(str(death_at(h, 0).find("queue")) == "retry");  // the latest death is first
    CHECK(death_at(h, 0).find("count")->as_int() == 2);
    CHECK(str(death_at(h, 1).find("queue")) == "hold");
    CHECK(str(death_at(h, 1).find("reason")) == "expired");
    CHECK(death_at(h, 1).find("count")->as_int() == 1);
    CHECK(str(h.find("x-first-death-queue")) == "retry");
    CHECK(str(h.find("x-first-death-reason")) == "rejected");
  }
}

TEST_CASE("dead-lettering on maxlen and on expiry through the vhost") {
  Fixture f;
  f.queue("dlq");
  f.queue("small", table({{"x-max-length", std::int32_t{1}},
                          {"x-dead-letter-exchange", ""},
                          {"x-dead-letter-routing-key", "dlq"}}));
  f.queue("ttl", table({{"x-message-ttl", std::int32_t{50}},
                        {"x-dead-letter-exchange", ""},
                        {"x-dead-letter-routing-key", "dlq"}}));
  f.publish("", "a", "small");
  f.publish("", "b", "small");
  f.publish("", "c", "ttl");
  f.env.advance(51);
  f.vh.tick(f.env.now);
  std::vector<std::string> reasons;
  Strings bodies;
  while (auto e = f.vh.find_queue("dlq")->get(f.env.now, true)) {
    amqp::BasicProperties p;
    bodies.emplace_back(e->msg->body());
    reasons.push_back(str(death_at(headers_of(*e, p), 0).find("reason")));
  }
  CHECK(bodies == Strings{"a", "c"});
  CHECK(reasons == Strings{"maxlen", "expired"});
  CHECK(f.drain("small") == Strings{"b"});
}

TEST_CASE("dead-lettering edge cases") {
  Fixture f;
  SUBCASE("a missing DLX drops the message quietly") {
    f.queue("q", table({{"x-dead-letter-exchange", "nowhere"}}));
    f.publish("", "m", "q");
    f.vh.find_queue("q")->reject(f.get("q"), false);
    CHECK(f.vh.find_queue("q")->ready_count() == 0);
  }
  SUBCASE("a queue never dead-letters expired messages into itself") {
    f.queue("loop", table({{"x-message-ttl", std::int32_t{10}},
                           {"x-dead-letter-exchange", ""},
                           {"x-dead-letter-routing-key", "loop"}}));
    f.publish("", "m", "loop");
    f.env.advance(11);
    f.vh.tick(f.env.now);
    CHECK(f.vh.find_queue("loop")->ready_count() == 0);
  }
  SUBCASE("the dead-letter routing key is used with a routing exchange") {
    f.exchange("dlx", "direct");
    f.queue("by-key");
    f.bind("by-key", "dlx", "dead");
    f.queue("q", table({{"x-dead-letter-exchange", "dlx"}, {"x-dead-letter-routing-key", "dead"}}));
    f.publish("", "m", "q");
    f.vh.find_queue("q")->reject(f.get("q"), false);
    CHECK(f.drain("by-key") == Strings{"m"});
  }
}

TEST_CASE("dead-letter cycle through two queues on maxlen terminates") {
  // BUG: vhost.cpp Vhost::dead_letter only refuses to dead-letter into the *same* queue
  // (target == &q). With two queues whose DLXs point at each other and x-max-length 1
  // (drop-head), the third publish bounces messages between them inside nested
  // enqueue -> enforce_limits -> dead_letter -> enqueue calls forever: unbounded recursion,
  // the broker dies of a stack overflow. RabbitMQ (rabbit_dead_letter, cycle detection) drops a
  // message whose x-death already names the target queue with no "rejected" death in between.
  // Expected here: m1 is dropped when it would re-enter "a"; "a" keeps m3, "b" keeps m2.
  Fixture f;
  f.queue("a", table({{"x-max-length", std::int32_t{1}},
                      {"x-dead-letter-exchange", ""},
                      {"x-dead-letter-routing-key", "b"}}));
  f.queue("b", table({{"x-max-length", std::int32_t{1}},
                      {"x-dead-letter-exchange", ""},
                      {"x-dead-letter-routing-key", "a"}}));
  f.publish("", "m1", "a");
  f.publish("", "m2", "a");
  f.publish("", "m3", "a");
  CHECK(f.drain("a") == Strings{"m3"});
  CHECK(f.drain("b") == Strings{"m2"});
}

TEST_CASE("dead-letter cycle through two queues on expiry ends") {
  // BUG: same cycle check as above (vhost.cpp Vhost::dead_letter): with two TTL queues whose
  // DLXs point at each other, an expired message circulates forever (its x-death counts keep
  // growing). RabbitMQ drops it the first time it would re-enter a queue it expired from.
  Fixture f;
  f.queue("a", table({{"x-message-ttl", std::int32_t{10}},
                      {"x-dead-letter-exchange", ""},
                      {"x-dead-letter-routing-key", "b"}}));
  f.queue("b", table({{"x-message-ttl", std::int32_t{10}},
                      {"x-dead-letter-exchange", ""},
                      {"x-dead-letter-routing-key", "a"}}));
  f.publish("", "m", "a");
  for (int i = 0; i < 4; ++i) {
    f.env.advance(11);
    f.vh.tick(f.env.now);
  }
  CHECK(f.vh.find_queue("a")->ready_count() + f.vh.find_queue("b")->ready_count() == 0);
}

TEST_CASE("x-expires deletes unused queues on tick") {
  Fixture f;
  auto q = f.queue("temp", table({{"x-expires", std::int32_t{1000}}}));
  f.env.advance(999);
  f.vh.tick(f.env.now);
  CHECK(f.vh.find_queue("temp"));
  SUBCASE("a get counts as use") {
    q->get(f.env.now, true);
    f.env.advance(999);
    f.vh.tick(f.env.now);
    CHECK(f.vh.find_queue("temp"));
    f.env.advance(1);
    f.vh.tick(f.env.now);
    CHECK_FALSE(f.vh.find_queue("temp"));
  }
  SUBCASE("a redeclare counts as use") {
    f.queue("temp", table({{"x-expires", std::int32_t{1000}}}));
    f.env.advance(999);
    f.vh.tick(f.env.now);
    CHECK(f.vh.find_queue("temp"));
  }
  SUBCASE("a queue with consumers stays") {
    test::FakeSink sink;
    broker::Consumer c;
    c.tag = "c";
    c.sink = &sink;
    c.queue = q;
    q->add_consumer(&c);
    f.env.advance(5000);
    f.vh.tick(f.env.now);
    CHECK(f.vh.find_queue("temp"));
    q->remove_consumer(&c);
  }
  SUBCASE("unused: deleted") {
    f.env.advance(1);
    f.vh.tick(f.env.now);
    CHECK_FALSE(f.vh.find_queue("temp"));
    CHECK(q->deleted());
  }
}

TEST_CASE("publish counts routed and rejected queues; persistent messages reach the store") {
  Fixture f;
  f.queue("durable", {}, true);
  f.queue("full", table({{"x-max-length", std::int32_t{0}}, {"x-overflow", "reject-publish"}}));
  f.bind("durable", "amq.fanout", "");
  f.bind("full", "amq.fanout", "");
  amqp::BasicProperties persistent;
  persistent.delivery_mode = 2;
  auto out = f.publish("amq.fanout", "m", "", persistent);
  CHECK(out.routed == 1);
  CHECK(out.rejected);
  CHECK(f.env.store.messages_enqueued == 1);
  f.publish("amq.fanout", "transient", "");
  CHECK(f.env.store.messages_enqueued == 1);
  CHECK(f.drain("durable") == Strings{"m", "transient"});
  CHECK(f.env.store.messages_removed == 1);
}

TEST_CASE("queue.declare past the vhost's queue limit: 406, as RabbitMQ's max-queues; redeclares still work") {
  Fixture f;
  f.env.max_queues_value = 2;
  f.queue("a");
  f.queue("b");
  auto err = amqp_error([&] { f.queue("c"); });
  check_error(err, ReplyCode::kPreconditionFailed);
  CHECK(err->reply_text() == "PRECONDITION_FAILED - cannot declare queue 'c': queue limit in vhost '/' (2) is reached");
  CHECK_FALSE(amqp_error([&] { f.queue("a"); }).has_value());  // an existing queue is no new one
  CHECK(f.vh.find_queue("c") == nullptr);
  f.vh.delete_queue("a", false, false, 1);
  CHECK_FALSE(amqp_error([&] { f.queue("c"); }).has_value());
}
