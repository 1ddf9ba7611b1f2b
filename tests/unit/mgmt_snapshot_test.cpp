// Unit tests for broker/http/snapshot.hpp: the management API's JSON and
// commands over a Vhost and a Channel built in-process (FakeEnv, FakeHost), no HTTP.
//
// Concerns:
// [x] queue_json: RabbitMQ's field names, counts (ready, unacked, consumers),
//     arguments as JSON, counters, ages of the oldest ready and unacked message
// [x] Rates: publish/deliver/ack rates from two samples; a deleted queue's
//     successor at the same name starts from zero
// [x] bindings_json: the default exchange's implicit bindings, then explicit ones
// [x] field tables <-> JSON, both ways; null has no AMQP equivalent
// [x] put_queue: 201 created, 204 existing, 400 inequivalent, 400 bad arguments
// [x] put/delete exchange: default-exchange alias, 400 without a type, 404 missing
// [x] get_messages: requeue keeps the messages (redelivered), ack removes them,
//     base64 for binary bodies, 400 on a bad ackmode
// [x] publish_message: routed / unroutable, properties carried, 404 missing exchange
// [x] browse_queue: ready in delivery order with positions, unacked with the
//     consumer tag, delayed with the due time; nothing consumed
// [x] delete_message: by position and by message id; 404 when absent
#include <doctest/doctest.h>

#include "broker/http/snapshot.hpp"
#include "support/broker_fakes.hpp"

using namespace mb;  // NOLINT(google-build-using-namespace): test file
using json = nlohmann::json;

namespace {

struct Fixture {
  test::FakeEnv env;
  broker::Vhost vh{"/", env};
  test::FakeHost host{vh, env, 1};
  broker::ChannelPtr ch = std::make_shared<broker::Channel>(1, host);

  ~Fixture() { ch->shutdown(); }

  void declare(std::string_view q, const amqp::FieldTable& args = {}) {
    ch->handle(amqp::QueueDeclare{.queue = q, .arguments = args});
    host.take();
  }
  void pub(std::string_view q, std::string_view body, const amqp::BasicProperties& props = {}) {
    test::publish(*ch, {.exchange = "", .routing_key = q, .body = body, .props = props});
    host.take();
  }
  std::string consume(std::string_view q, std::uint16_t prefetch) {
    ch->handle(amqp::BasicQos{0, prefetch, false});
    ch->handle(amqp::BasicConsume{.queue = q, .consumer_tag = "c1"});
    env.run_dispatch();
    host.take();
    return "c1";
  }
  json queue(std::string_view name, const mgmt::Rates* rates = nullptr) {
    return mgmt::queue_json(vh, *vh.find_queue(name), rates, {ch.get()}, env.now_ms());
  }
};

amqp::BasicProperties with_id(const char* id) {
  amqp::BasicProperties p;
  p.message_id = id;
  return p;
}

}  // namespace

TEST_CASE("queue_json: RabbitMQ's fields, counts and ages") {
  Fixture f;
  f.declare("q", test::table({{"x-max-length", std::int32_t{10}}}));
  f.pub("q", "a");
  f.env.advance(1000);
  f.pub("q", "b");
  f.pub("q", "c");
  f.consume("q", 1);
  f.env.advance(500);
  json j = f.queue("q");
  for (const char* k : {"name", "vhost", "durable", "auto_delete", "exclusive", "arguments", "messages",
                        "messages_ready", "messages_unacknowledged", "consumers", "memory", "message_stats"})
    CHECK_MESSAGE(j.contains(k), k);
  CHECK(j["name"] == "q");
  CHECK(j["vhost"] == "/");
  CHECK(j["arguments"] == json{{"x-max-length", 10}});
  CHECK(j["messages"] == 3);
  CHECK(j["messages_ready"] == 2);
  CHECK(j["messages_unacknowledged"] == 1);
  CHECK(j["consumers"] == 1);
  CHECK(j["message_stats"]["publish"] == 3);
  CHECK(j["message_stats"]["deliver_get"] == 1);
  CHECK(j["oldest_unacked_age_ms"] == 1500);  // "a", delivered to the consumer
  CHECK(j["oldest_ready_age_ms"] == 500);     // "b"
}

TEST_CASE("Rates: per-second rates between two samples") {
  Fixture f;
  f.declare("q");
  mgmt::Rates rates;
  rates.sample({&f.vh}, f.env.now_ms());
  for (int i = 0; i < 10; ++i) f.pub("q", "m");
  f.env.advance(5000);
  rates.sample({&f.vh}, f.env.now_ms());
  json j = f.queue("q", &rates);
  CHECK(j["message_stats"]["publish_details"]["rate"].get<double>() == doctest::Approx(2.0));
  CHECK(j["message_stats"]["ack_details"]["rate"].get<double>() == doctest::Approx(0.0));
  CHECK(rates.totals().publish == doctest::Approx(2.0));
  CHECK(rates.totals().last.publish == 10);

  // Deleted and declared again: the new queue has no history.
  f.vh.delete_queue("q", false, false, 1);
  f.declare("q");
  f.pub("q", "m");
  f.env.advance(5000);
  rates.sample({&f.vh}, f.env.now_ms());
  CHECK(f.queue("q", &rates)["message_stats"]["publish_details"]["rate"].get<double>() == doctest::Approx(0.0));
}

TEST_CASE("bindings_json: implicit default-exchange bindings, then explicit ones") {
  Fixture f;
  f.declare("q");
  f.vh.bind_queue("q", "amq.topic", "a.#", test::table({{"k", "v"}}), 1);
  json b = mgmt::bindings_json(f.vh);
  REQUIRE(b.size() == 2);
  CHECK(b[0]["source"] == "");
  CHECK(b[0]["destination"] == "q");
  CHECK(b[0]["routing_key"] == "q");
  CHECK(b[1]["source"] == "amq.topic");
  CHECK(b[1]["destination_type"] == "queue");
  CHECK(b[1]["routing_key"] == "a.#");
  CHECK(b[1]["arguments"] == json{{"k", "v"}});
}

TEST_CASE("field tables <-> JSON") {
  json in = {{"i", -5}, {"s", "str"}, {"b", true}, {"d", 1.5}, {"t", {{"n", 1}}}, {"a", {1, "x"}}};
  std::optional<amqp::FieldTable> t = mgmt::table_from_json(in);
  REQUIRE(t);
  CHECK(mgmt::to_json(*t) == in);
  CHECK_FALSE(mgmt::table_from_json(json{{"n", nullptr}}));
  CHECK_FALSE(mgmt::table_from_json(json::array()));
}

TEST_CASE("put_queue: created, existing, inequivalent, bad arguments") {
  Fixture f;
  CHECK(mgmt::put_queue(f.vh, "q", json{{"durable", false}}).status == 201);
  CHECK(mgmt::put_queue(f.vh, "q", json{{"durable", false}}).status == 204);
  mgmt::Outcome o = mgmt::put_queue(f.vh, "q", json::object());  // durable by default, as RabbitMQ
  CHECK(o.status == 400);
  CHECK(o.body["error"] == "bad_request");
  CHECK(o.body["reason"].get<std::string>().find("inequivalent arg 'durable'") != std::string::npos);
  CHECK(mgmt::put_queue(f.vh, "r", json{{"arguments", {{"x-max-length", "many"}}}}).status == 400);
  CHECK(mgmt::put_queue(f.vh, "r", json{{"durable", "yes"}}).status == 400);
  CHECK(f.vh.find_queue("r") == nullptr);
  CHECK(mgmt::delete_queue(f.vh, "q", false, false).status == 204);
  CHECK(mgmt::delete_queue(f.vh, "q", false, false).status == 404);
}

TEST_CASE("put_exchange / delete_exchange") {
  Fixture f;
  CHECK(mgmt::put_exchange(f.vh, "x", json{{"type", "fanout"}}).status == 201);
  CHECK(mgmt::put_exchange(f.vh, "x", json{{"type", "fanout"}}).status == 204);
  CHECK(mgmt::put_exchange(f.vh, "x", json{{"type", "topic"}}).status == 400);
  CHECK(mgmt::put_exchange(f.vh, "y", json::object()).status == 201);  // direct, as RabbitMQ
  CHECK(f.vh.find_exchange("y")->type() == broker::ExchangeType::kDirect);
  CHECK(mgmt::put_exchange(f.vh, "z", json{{"type", 1}}).status == 400);
  CHECK(mgmt::put_exchange(f.vh, "amq.default", json{{"type", "direct"}}).status == 403);
  CHECK(mgmt::delete_exchange(f.vh, "x", false).status == 204);
  CHECK(mgmt::delete_exchange(f.vh, "x", false).status == 404);
}

TEST_CASE("get_messages: requeue, ack, encodings") {
  Fixture f;
  f.declare("q");
  f.pub("q", "one", with_id("m1"));
  f.pub("q", std::string("\xff\x00", 2));
  json req = {{"count", 5}, {"ackmode", "ack_requeue_true"}, {"encoding", "auto"}};
  mgmt::Outcome o = mgmt::get_messages(f.vh, f.env, "q", req);
  REQUIRE(o.status == 200);
  REQUIRE(o.body.size() == 2);
  CHECK(o.body[0]["payload"] == "one");
  CHECK(o.body[0]["payload_encoding"] == "string");
  CHECK(o.body[0]["properties"]["message_id"] == "m1");
  CHECK(o.body[0]["message_count"] == 1);
  CHECK(o.body[1]["payload_encoding"] == "base64");
  CHECK(o.body[1]["payload"] == "/wA=");
  CHECK(f.vh.find_queue("q")->ready_count() == 2);

  req["ackmode"] = "ack_requeue_false";
  req["count"] = 1;
  o = mgmt::get_messages(f.vh, f.env, "q", req);
  CHECK(o.body[0]["redelivered"] == true);
  CHECK(f.vh.find_queue("q")->ready_count() == 1);
  req["ackmode"] = "keep";
  CHECK(mgmt::get_messages(f.vh, f.env, "q", req).status == 400);
  CHECK(mgmt::get_messages(f.vh, f.env, "nope", req).status == 404);
}

TEST_CASE("publish_message: routed, unroutable, properties") {
  Fixture f;
  f.declare("q");
  json req = {{"routing_key", "q"},
              {"payload", "aGk="},
              {"payload_encoding", "base64"},
              {"properties", {{"content_type", "text/plain"}, {"headers", {{"h", 1}}}}}};
  mgmt::Outcome o = mgmt::publish_message(f.vh, f.env, "amq.default", req);
  CHECK(o.status == 200);
  CHECK(o.body == json{{"routed", true}});
  auto e = f.vh.find_queue("q")->get(f.env.now_ms(), true);
  REQUIRE(e);
  CHECK(e->msg->body() == "hi");
  CHECK(mgmt::properties_json(e->msg->properties()) == json{{"content_type", "text/plain"}, {"headers", {{"h", 1}}}});
  req["routing_key"] = "nowhere";
  CHECK(mgmt::publish_message(f.vh, f.env, "amq.default", req).body == json{{"routed", false}});
  CHECK(mgmt::publish_message(f.vh, f.env, "nope", req).status == 404);
  req.erase("properties");
  CHECK(mgmt::publish_message(f.vh, f.env, "amq.default", req).status == 400);
}

TEST_CASE("browse_queue: ready, unacked, delayed; nothing consumed") {
  Fixture f;
  f.declare("q");
  for (const char* id : {"m0", "m1", "m2"}) f.pub("q", id, with_id(id));
  f.consume("q", 1);
  amqp::FieldTable args = test::table({{"x-delayed-type", "direct"}});
  f.vh.declare_exchange({.name = "dx", .type = "x-delayed-message", .arguments = &args});
  f.vh.bind_queue("q", "dx", "k", {}, 1);
  f.vh.delay(f.vh.find_exchange("dx"), test::make_message("later", "k", {}, "dx"), f.env.now_ms() + 60000);

  json b = mgmt::browse_queue(f.vh, *f.vh.find_queue("q"), {f.ch.get()}, f.env.now_ms(), 10);
  REQUIRE(b["ready"].size() == 2);
  CHECK(b["ready"][0]["payload"] == "m1");
  CHECK(b["ready"][0]["position"] == 0);
  CHECK(b["ready"][1]["payload"] == "m2");
  REQUIRE(b["unacked"].size() == 1);
  CHECK(b["unacked"][0]["payload"] == "m0");
  CHECK(b["unacked"][0]["consumer_tag"] == "c1");
  REQUIRE(b["delayed"].size() == 1);
  CHECK(b["delayed"][0]["payload"] == "later");
  CHECK(b["delayed"][0]["due_in_ms"] == 60000);
  CHECK(f.vh.find_queue("q")->ready_count() == 2);
  CHECK(mgmt::browse_queue(f.vh, *f.vh.find_queue("q"), {f.ch.get()}, f.env.now_ms(), 1)["ready"].size() == 1);
}

TEST_CASE("delete_message: by position, by message id") {
  Fixture f;
  f.declare("q");
  for (const char* id : {"m0", "m1", "m2", "m3"}) f.pub("q", id, with_id(id));
  CHECK(mgmt::delete_message(f.vh, "q", json{{"position", 1}}).status == 204);
  CHECK(mgmt::delete_message(f.vh, "q", json{{"message_id", "m3"}}).status == 204);
  CHECK(mgmt::delete_message(f.vh, "q", json{{"message_id", "m3"}}).status == 404);
  CHECK(mgmt::delete_message(f.vh, "q", json{{"position", 5}}).status == 404);
  CHECK(mgmt::delete_message(f.vh, "q", json::object()).status == 400);
  json b = mgmt::browse_queue(f.vh, *f.vh.find_queue("q"), {}, f.env.now_ms(), 10);
  REQUIRE(b["ready"].size() == 2);
  CHECK(b["ready"][0]["payload"] == "m0");
  CHECK(b["ready"][1]["payload"] == "m2");
  CHECK(f.env.store.messages_removed == 0);  // non-persistent: nothing for the store
}
