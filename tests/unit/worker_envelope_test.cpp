// worker_envelope_test.cpp: task and result envelopes and their wire formats
// (common/task, common/client/task_wire, headers, url).
//
// Concerns:
// [x] every Value kind round-trips through Cap'n Proto and through JSON
// [x] TaskMessage/TaskResult round-trip through Cap'n Proto with every field
// [x] Celery protocol v2: the captured headers/body decode; encode -> decode is identity
// [x] rpc:// result bodies as Celery writes them (SUCCESS, FAILURE, REVOKED)
// [x] AMQP properties: capnp task has content type, task/id headers, reply_to, correlation_id, expiration
// [x] ISO-8601 times with offsets
// [x] broker URLs as Celery writes them
// [x] malformed bodies throw, not crash
// [x] result bodies are byte for byte what nlohmann writes for the same object
// [x] the simple JSON parser gives what nlohmann gives, or gives up (and decode_celery_task falls back)
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <capnp/message.h>

#include "common/client/headers.hpp"
#include "common/client/task_wire.hpp"
#include "common/client/url.hpp"
#include "common/task/capnp_codec.hpp"
#include "common/task/celery.hpp"

using namespace mb;
using task::Bytes;
using task::List;
using task::Map;
using task::Value;

namespace {

Value sample() {
  return Map{{"null", nullptr},        {"t", true},           {"i", -42},
             {"big", INT64_MAX},       {"d", 2.5},            {"s", "héllo"},
             {"b", Bytes("\x00\x01")}, {"l", List{1, "x", List{}}}, {"m", Map{{"k", Map{}}}}};
}

task::TaskMessage sample_task() {
  task::TaskMessage t;
  t.id = "5eac2e01-3140-420f-bdbe-c3f2f9fda8a1";
  t.name = "add";
  t.args = {5, 5};
  t.kwargs = {{"z", "q"}};
  t.retries = 2;
  t.eta = 1795720840.5;
  t.expires = 1795720900.25;
  t.parent_id = "p";
  t.root_id = "r";
  t.reply_to = "reply-q";
  t.correlation_id = "c";
  t.origin = "gen1@host";
  t.soft_time_limit = 1.5;
  t.time_limit = 3;
  t.ignore_result = true;
  return t;
}

}  // namespace

TEST_CASE("values round-trip through capnp") {
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<proto::Value>();
  task::write_value(b, sample());
  CHECK(task::read_value(b.asReader()) == sample());
}

TEST_CASE("values round-trip through JSON (bytes become text)") {
  Value v = Map{{"i", 1}, {"d", 2.5}, {"s", "x"}, {"l", List{true, nullptr}}};
  CHECK(task::value_from_json(task::value_to_json(v)) == v);
  CHECK(task::value_to_json(Value(Bytes("ab"))) == "ab");
}

TEST_CASE("task and result round-trip through capnp") {
  auto t = sample_task();
  auto back = task::decode_task_capnp(task::encode_task_capnp(t));
  CHECK(back.id == t.id);
  CHECK(back.name == t.name);
  CHECK(Value(back.args) == Value(t.args));
  CHECK(Value(back.kwargs) == Value(t.kwargs));
  CHECK(back.retries == 2);
  CHECK(back.eta == t.eta);
  CHECK(back.expires == t.expires);
  CHECK(back.parent_id == "p");
  CHECK(back.root_id == "r");
  CHECK(back.reply_to == "reply-q");
  CHECK(back.correlation_id == "c");
  CHECK(back.origin == "gen1@host");
  CHECK(back.soft_time_limit == 1.5);
  CHECK(back.time_limit == 3);
  CHECK(back.ignore_result);

  task::TaskResult r;
  r.task_id = "x";
  r.state = task::State::kFailure;
  r.value = sample();
  r.error_type = "std::runtime_error";
  r.error_message = "boom";
  r.traceback = "tb";
  r.runtime = 0.25;
  r.worker = "w@h";
  r.retries = 3;
  auto rb = task::decode_result_capnp(task::encode_result_capnp(r));
  CHECK(rb.task_id == "x");
  CHECK(rb.state == task::State::kFailure);
  CHECK(rb.value == sample());
  CHECK(rb.error_type == "std::runtime_error");
  CHECK(rb.error_message == "boom");
  CHECK(rb.traceback == "tb");
  CHECK(rb.runtime == 0.25);
  CHECK(rb.worker == "w@h");
  CHECK(rb.retries == 3);
}

TEST_CASE("malformed capnp bodies throw") {
  CHECK_THROWS(task::decode_task_capnp("abc"));
  CHECK_THROWS(task::decode_task_capnp(std::string(16, '\xff')));
  CHECK_THROWS(task::decode_result_capnp(std::string(8, '\x01')));
}

TEST_CASE("celery protocol v2 as captured") {
  Map h{{"lang", "py"},
        {"task", "addTask.add"},
        {"id", "5eac2e01-3140-420f-bdbe-c3f2f9fda8a1"},
        {"shadow", nullptr},
        {"eta", "2026-11-26T19:31:20.327326+00:00"},
        {"expires", nullptr},
        {"group", nullptr},
        {"group_index", nullptr},
        {"retries", 1},
        {"timelimit", List{10, nullptr}},  // [hard, soft]: send_task(time_limit=10)
        {"root_id", "5eac2e01-3140-420f-bdbe-c3f2f9fda8a1"},
        {"parent_id", nullptr},
        {"argsrepr", "(5, 5)"},
        {"kwargsrepr", "{}"},
        {"origin", "gen13108@vm"},
        {"ignore_result", false}};
  std::string body = R"([[5, 5], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}])";
  auto t = task::decode_celery_task(h, body);
  CHECK(t.name == "addTask.add");
  CHECK(t.id == "5eac2e01-3140-420f-bdbe-c3f2f9fda8a1");
  CHECK(Value(t.args) == Value(List{5, 5}));
  CHECK(t.kwargs.empty());
  CHECK(t.retries == 1);
  CHECK(t.eta == doctest::Approx(1795721480.327326));
  CHECK(t.expires == 0);
  CHECK(t.soft_time_limit == 0);
  CHECK(t.time_limit == 10);
  CHECK(t.format == task::WireFormat::kCelery);
  h["timelimit"] = List{nullptr, 2.5};  // send_task(soft_time_limit=2.5)
  t = task::decode_celery_task(h, body);
  CHECK(t.soft_time_limit == 2.5);
  CHECK(t.time_limit == 0);

  auto enc = task::encode_celery_task(sample_task());
  auto back = task::decode_celery_task(enc.headers, enc.body);
  CHECK(back.name == "add");
  CHECK(Value(back.args) == Value(List{5, 5}));
  CHECK(Value(back.kwargs) == Value(Map{{"z", "q"}}));
  CHECK(back.eta == doctest::Approx(sample_task().eta));
  CHECK(back.expires == doctest::Approx(sample_task().expires));
  CHECK(back.retries == 2);
  CHECK(back.time_limit == 3);
  CHECK_THROWS(task::decode_celery_task(h, "{}"));
  CHECK_THROWS(task::decode_celery_task(Map{}, body));
}

TEST_CASE("simple JSON parser: as nlohmann, or gives up") {
  const std::vector<std::string> same = {
      R"([[5, 5], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}])",
      R"( [ [1, -2, 0, -0, 3.5, -1e3, 2E-2, 1.0, true, false, null, "x", ""], {"a": [], "b": {}, "a": 7} ] )",
      R"([[9223372036854775807, -9223372036854775808], {"k": {"n": [[["deep"]]]}}])",
      "\t[\n[],\r{}]\n"};
  for (const auto& text : same) {
    CAPTURE(text);
    auto fast = task::parse_simple_json(text);
    REQUIRE(fast);
    CHECK(*fast == task::value_from_json(nlohmann::json::parse(text)));
  }
  const std::vector<std::string> gives_up = {
      R"(["esc\"aped"])", "[\"caf\xc3\xa9\"]", "[18446744073709551615]", "[1e400]",  // valid, left to nlohmann
      "[01]", "[1.]", "[.5]", "[-]", "[1,]", "{\"a\" 1}", "[nul]", "[[]] x", "[\"\x01\"]", "", "[", std::string(70, '[') + std::string(70, ']')};
  for (const auto& text : gives_up) {
    CAPTURE(text);
    CHECK_FALSE(task::parse_simple_json(text));
  }
  // decode_celery_task takes nlohmann's way then, with the same result
  Map h{{"task", "t"}, {"id", "i"}};
  auto t = task::decode_celery_task(h, R"([["caf\u00e9", 18446744073709551615], {}, {}])");
  CHECK(Value(t.args) == Value(List{"caf\xc3\xa9", 18446744073709551615.0}));
  CHECK_THROWS(task::decode_celery_task(h, "[[01], {}]"));
}

TEST_CASE("a task body reads as nlohmann reads it, embed checked but not kept, errors the same") {
  const Map h{{"task", "t"}, {"id", "i"}};
  auto reference = [](const std::string& body) {  // the body read with nlohmann alone
    const auto j = nlohmann::json::parse(body);
    return std::pair{task::value_from_json(j[0]), task::value_from_json(j[1])};
  };
  const std::vector<std::string> bodies = {
      R"([[5, 5], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}])",
      R"([[1], {"k": [2]}])",                                   // no embed
      R"([[], {}, {}, [1, {"more": true}], "extra"])",          // more elements than three
      R"([[1], {}, {"chain": [{"task": "caf\u00e9", "a": "\u00e9"}]}])",  // escapes in embed: nlohmann's way
      "[[1], {}, {\"chain\": \"caf\xc3\xa9\"}]",                   // non-ASCII in embed
      R"([["x"], {"a": 1, "a": 2}, {"chord": 18446744073709551615}])",  // a number only nlohmann reads, in embed
  };
  for (const auto& body : bodies) {
    CAPTURE(body);
    const auto t = task::decode_celery_task(h, body);
    const auto [args, kwargs] = reference(body);
    CHECK(Value(t.args) == args);
    CHECK(Value(t.kwargs) == kwargs);
  }
  const std::vector<std::string> bad = {
      R"([[1], {}, {"chain": nul}])", R"([[1], {}, {"chord": 1e400}])",  // invalid embeds: refused, as before
      R"([[1], {}, {}] trailing)", R"([[1], {}, {}, ])", R"([[1], {}, {})", R"([[1]])", R"([{}, {}])", R"([[1], []])",
      R"({"args": [1]})", "[[1], {}, " + std::string(70, '[') + std::string(70, ']') + "]"};
  for (const auto& body : bad) {
    CAPTURE(body);
    bool nlohmann_accepts_shape = false;
    try {
      const auto j = nlohmann::json::parse(body);
      nlohmann_accepts_shape = j.is_array() && j.size() >= 2 && j[0].is_array() && j[1].is_object();
    } catch (const nlohmann::json::exception&) {
    }
    if (nlohmann_accepts_shape) {  // deeper than the fast path goes: nlohmann reads it
      CHECK_NOTHROW(task::decode_celery_task(h, body));
    } else {
      CHECK_THROWS(task::decode_celery_task(h, body));
    }
  }
}

TEST_CASE("result bodies as nlohmann writes them") {
  auto reference = [](const task::TaskResult& r) {  // how encode_celery_result used to build it
    nlohmann::json j;
    j["task_id"] = r.task_id;
    j["status"] = std::string(task::state_name(r.state));
    j["result"] = r.state == task::State::kSuccess ? task::value_to_json(r.value)
                                                  : nlohmann::json::parse(task::encode_celery_result(r))["result"];
    j["traceback"] = r.traceback.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.traceback);
    j["children"] = nlohmann::json::array();
    return j.dump();
  };
  std::vector<Value> values = {Value(10), Value(-9223372036854775807LL - 1), Value(), Value(true), Value(false),
                               Value(1.5), Value(1e300), Value("t\"x\\\n\x01 caf\xc3\xa9"),
                               Value(List{1, "a", Map{{"k", 2.0}}}), Value(Bytes("b"))};
  for (const auto& v : values) {
    task::TaskResult r;
    r.task_id = "id-\"1";
    r.state = task::State::kSuccess;
    r.value = v;
    CAPTURE(reference(r));
    CHECK(task::encode_celery_result(r) == reference(r));
  }
  task::TaskResult f;
  f.task_id = "f";
  f.state = task::State::kFailure;
  f.error_type = "ValueError";
  f.error_message = "boom \"x\"";
  f.traceback = "ValueError: boom\n";
  CHECK(task::encode_celery_result(f) ==
        R"({"children":[],"result":{"exc_message":["boom \"x\""],"exc_module":"builtins","exc_type":"ValueError"},)"
        R"("status":"FAILURE","task_id":"f","traceback":"ValueError: boom\n"})");
}

TEST_CASE("rpc:// results as Celery writes them") {
  auto ok = task::decode_celery_result(
      R"({"task_id": "a8", "status": "SUCCESS", "result": 10, "traceback": null, "children": []})");
  CHECK(ok.state == task::State::kSuccess);
  CHECK(ok.value == Value(10));
  auto f = task::decode_celery_result(
      R"({"task_id":"a8", "status":"FAILURE", "result":{"exc_type":"ValueError","exc_message":["boom 1"],"exc_module":"builtins"}, "traceback":"Traceback", "children":[]})");
  CHECK(f.state == task::State::kFailure);
  CHECK(f.error_type == "ValueError");
  CHECK(f.error_message == "boom 1");
  CHECK(f.traceback == "Traceback");

  task::TaskResult r;
  r.task_id = "t";
  r.state = task::State::kRevoked;
  r.error_type = "TaskRevokedError";
  r.error_message = "expired";
  auto j = nlohmann::json::parse(task::encode_celery_result(r));
  CHECK(j["status"] == "REVOKED");
  CHECK(j["result"]["exc_module"] == "celery.exceptions");
  CHECK(j["result"]["exc_message"][0] == "expired");
  CHECK(j["children"].is_array());

  // The SDK's soft limit reaches Python as celery.exceptions.SoftTimeLimitExceeded;
  // other C++ exceptions keep their C++ name.
  r.state = task::State::kFailure;
  r.error_type = "SoftTimeLimitExceeded";
  j = nlohmann::json::parse(task::encode_celery_result(r));
  CHECK(j["result"]["exc_type"] == "SoftTimeLimitExceeded");
  CHECK(j["result"]["exc_module"] == "celery.exceptions");
  r.error_type = "std::runtime_error";
  j = nlohmann::json::parse(task::encode_celery_result(r));
  CHECK(j["result"]["exc_type"] == "std::runtime_error");
  CHECK(j["result"]["exc_module"] == "cpp");
  r.error_type = "NotRegistered";
  j = nlohmann::json::parse(task::encode_celery_result(r));
  CHECK(j["result"]["exc_module"] == "celery.exceptions");
}

TEST_CASE("ISO-8601") {
  CHECK(task::parse_iso8601("1970-01-01T00:00:00+00:00") == 0);
  CHECK(task::parse_iso8601("1970-01-01T01:00:00+01:00") == 0);
  CHECK(task::parse_iso8601("1970-01-01T00:00:10Z") == 10);
  CHECK(task::parse_iso8601("1970-01-01T00:00:10.5") == 10.5);
  CHECK(task::parse_iso8601(task::format_iso8601(1795720840.25)) == doctest::Approx(1795720840.25));
  CHECK_THROWS(task::parse_iso8601("yesterday"));
}

TEST_CASE("task messages on AMQP") {
  auto t = sample_task();
  t.ignore_result = false;
  t.expires = task::unix_now() + 60;
  auto m = client::build_task_message(t, 5);
  CHECK(*m.properties.content_type == "application/x-capnp");
  CHECK(*m.properties.reply_to == "reply-q");
  CHECK(*m.properties.correlation_id == "c");
  CHECK(*m.properties.delivery_mode == 2);
  CHECK(*m.properties.priority == 5);
  CHECK(!m.properties.expiration);  // capnp tasks expire in the worker (REVOKED), not in the broker
  auto h = client::table_to_map(*m.properties.headers);
  CHECK(h["task"] == Value("add"));
  CHECK(h["id"] == Value(t.id));
  auto back = client::parse_task_message(m.properties, m.body);
  CHECK(back.name == "add");
  CHECK(back.reply_to == "reply-q");

  t.format = task::WireFormat::kCelery;
  auto c = client::build_task_message(t);
  CHECK(*c.properties.content_type == "application/json");
  CHECK(std::stoi(*c.properties.expiration) > 59000);
  auto cb = client::parse_task_message(c.properties, c.body);
  CHECK(cb.format == task::WireFormat::kCelery);
  CHECK(cb.correlation_id == "c");

  amqp::BasicProperties bad;
  bad.content_type = "text/plain";
  CHECK_THROWS(client::parse_task_message(bad, "x"));

  task::TaskResult r;
  r.task_id = t.id;
  r.state = task::State::kSuccess;
  r.value = 10;
  auto rm = client::build_result_message(r, task::WireFormat::kCapnp, "corr");
  CHECK(*rm.properties.correlation_id == "corr");
  CHECK(client::parse_result_message(rm.properties, rm.body).value == Value(10));
  auto rj = client::build_result_message(r, task::WireFormat::kCelery, "corr");
  CHECK(client::parse_result_message(rj.properties, rj.body).value == Value(10));
}

TEST_CASE("a task read from headers kept encoded is the task read from decoded headers") {
  auto t = sample_task();
  t.format = task::WireFormat::kCelery;
  t.eta = 1'800'000'000.25;
  t.time_limit = 30;
  t.soft_time_limit = 20;
  t.parent_id = "p";
  for (auto& m : {client::build_task_message(t), client::build_task_message([&] {
                    auto capnp = t;
                    capnp.format = task::WireFormat::kCapnp;
                    return capnp;
                  }())}) {
    client::Delivery d;
    d.properties = amqp::decode_properties(amqp::encode_properties(m.properties), d.encoded_headers);
    d.body = m.body;
    REQUIRE_FALSE(d.encoded_headers.empty());
    const task::TaskMessage a = client::parse_task_message(d);
    const task::TaskMessage b = client::parse_task_message(m.properties, m.body);
    CHECK(a.format == b.format);
    CHECK(a.name == b.name);
    CHECK(a.id == b.id);
    CHECK(a.eta == b.eta);
    CHECK(a.expires == b.expires);
    CHECK(a.time_limit == b.time_limit);
    CHECK(a.soft_time_limit == b.soft_time_limit);
    CHECK(a.parent_id == b.parent_id);
    CHECK(a.root_id == b.root_id);
    CHECK(a.origin == b.origin);
    CHECK(a.retries == b.retries);
    CHECK(a.ignore_result == b.ignore_result);
    CHECK(a.args == b.args);
    CHECK(a.kwargs == b.kwargs);
    CHECK(a.reply_to == b.reply_to);
    CHECK(a.correlation_id == b.correlation_id);
    // Decoded for re-publishing, the headers are the ones sent.
    client::decode_headers(d);
    CHECK(d.encoded_headers.empty());
    CHECK(d.properties == m.properties);
  }
  // No content type: a Celery task only when its headers name one.
  client::Delivery d;
  amqp::BasicProperties p;
  p.headers = client::map_to_table(Map{{"task", "add"}, {"id", "x"}});
  d.properties = amqp::decode_properties(amqp::encode_properties(p), d.encoded_headers);
  d.body = "[[1, 2], {}, {}]";
  CHECK(client::parse_task_message(d).name == "add");
  p.headers = client::map_to_table(Map{{"id", "x"}});
  d.properties = amqp::decode_properties(amqp::encode_properties(p), d.encoded_headers);
  CHECK_THROWS(client::parse_task_message(d));
}

TEST_CASE("headers: field tables <-> values") {
  Map m{{"i", 1}, {"l", INT64_MAX}, {"s", "x"}, {"n", nullptr}, {"a", List{1, "y"}}, {"t", Map{{"k", true}}},
        {"b", Bytes("z")}, {"d", 0.5}};
  auto t = client::map_to_table(m);
  CHECK(std::holds_alternative<std::int32_t>(t.find("i")->v));
  CHECK(std::holds_alternative<std::int64_t>(t.find("l")->v));
  CHECK(client::table_to_map(t) == m);
  // From the encoded table: only the keys asked for, the others stepped over;
  // of equal keys the last wins, as table_to_map; malformed bytes throw.
  t.entries.push_back({"s", amqp::FieldValue("later")});
  std::string encoded;
  amqp::Writer w(encoded);
  amqp::encode_table(w, t);
  const std::string_view keys[] = {"a", "s", "t", "missing"};
  std::optional<Value> from_encoded[4], from_table[4];
  client::read_table(encoded, keys, from_encoded);
  client::read_table(t, keys, from_table);
  CHECK(from_encoded[0] == Value(List{1, "y"}));
  CHECK(from_encoded[1] == Value("later"));
  CHECK(from_encoded[2] == Value(Map{{"k", true}}));
  CHECK_FALSE(from_encoded[3].has_value());
  for (int i = 0; i < 4; ++i) CHECK(from_encoded[i] == from_table[i]);
  CHECK_THROWS_AS(client::read_table(std::string_view(encoded).substr(0, encoded.size() - 1), keys, from_encoded),
                  amqp::DecodeError);
}

TEST_CASE("broker URLs") {
  auto u = client::parse_broker_url("amqp://guest:guest@localhost:5672//");
  CHECK(u.host == "localhost");
  CHECK(u.port == 5672);
  CHECK(u.user == "guest");
  CHECK(u.password == "guest");
  CHECK(u.vhost == "/");
  auto v = client::parse_broker_url("amqp://u%40x:p%3Aw@127.0.0.1:5673/my%2fvhost");
  CHECK(v.user == "u@x");
  CHECK(v.password == "p:w");
  CHECK(v.host == "127.0.0.1");
  CHECK(v.port == 5673);
  CHECK(v.vhost == "my/vhost");
  auto w = client::parse_broker_url("amqp://guest@localhost//");
  CHECK(w.password == "guest");
  CHECK(w.port == 5672);
  CHECK(client::parse_broker_url("amqp://h").vhost == "/");
  CHECK(client::parse_broker_url("amqp://[::1]:5600/").host == "::1");
  CHECK(client::parse_broker_url("amqp://[::1]:5600/").port == 5600);
  CHECK_THROWS_AS(client::parse_broker_url("http://x"), std::invalid_argument);
  CHECK_THROWS_AS(client::parse_broker_url("amqp://h:99999/"), std::invalid_argument);
  CHECK_THROWS_AS(client::parse_broker_url("amqp://h:abc/"), std::invalid_argument);
}
