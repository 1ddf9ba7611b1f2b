// worker_celery_test.cpp: the worker's Celery control plane and events as
// pure functions: pidbox commands parsed and addressed as kombu does, replies
// shaped as a Python worker's, events carrying Celery 5.2's fields, and
// Python reprs of task values.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "worker/control.hpp"
#include "worker/events.hpp"

using nlohmann::json;
using namespace mb::worker;
namespace task = mb::task;

namespace {

// A ping as `celery inspect ping` sends it (shared/celery-wire.md §5.3).
constexpr const char* kPing =
    R"({"method":"ping","arguments":{},"destination":null,"pattern":null,"matcher":null,)"
    R"("ticket":"8f1c6a0e-2f7b-4c1e-9d7a-0b6c1f2e3d4a",)"
    R"("reply_to":{"exchange":"reply.celery.pidbox","routing_key":"aac03741-c647-311d-9cd0-6c1e1778f375"}})";

WorkerStatus sample_status() {
  WorkerStatus s;
  s.hostname = "celery@vm";
  s.pid = 4242;
  s.clock = 17;
  s.uptime = 12.4;
  s.total = {{"addTask.add", 3}};
  s.registered = {"add", "addTask.add"};
  s.pool = "prefork";
  s.concurrency = 2;
  s.processes = {4243, 4244};
  s.prefetch_count = 8;
  s.broker_host = "127.0.0.1";
  s.broker_port = 5672;
  s.broker_user = "guest";
  s.broker_vhost = "/";
  s.broker_heartbeat = 60;
  ActiveTask a;
  a.id = "id-1";
  a.name = "sleep";
  a.args = "(5.0,)";
  a.kwargs = "{}";
  a.time_start = 1795720840.5;
  a.acknowledged = false;
  a.routing_key = "celery";
  s.active.push_back(a);
  return s;
}

}  // namespace

TEST_CASE("a ping from celery inspect is parsed with its ticket and reply address") {
  auto r = parse_control_request(kPing);
  REQUIRE(r);
  CHECK(r->method == "ping");
  CHECK(r->ticket == "8f1c6a0e-2f7b-4c1e-9d7a-0b6c1f2e3d4a");
  CHECK(r->reply_exchange == "reply.celery.pidbox");
  CHECK(r->reply_routing_key == "aac03741-c647-311d-9cd0-6c1e1778f375");
  CHECK(r->destination.empty());
  CHECK(addressed_to(*r, "celery@vm"));
}

TEST_CASE("what is not a control command is refused") {
  CHECK_FALSE(parse_control_request(""));
  CHECK_FALSE(parse_control_request("[1, 2]"));
  CHECK_FALSE(parse_control_request(R"({"arguments":{}})"));
  CHECK_FALSE(parse_control_request(R"({"method":7})"));
  CHECK_FALSE(parse_control_request("{\"method\":\"ping\""));  // truncated
}

TEST_CASE("destination, glob and pcre addressing follow kombu") {
  auto r = *parse_control_request(R"({"method":"ping","destination":["celery@a","celery@b"]})");
  CHECK(addressed_to(r, "celery@b"));
  CHECK_FALSE(addressed_to(r, "celery@c"));
  r = *parse_control_request(R"({"method":"ping","pattern":"mini*","matcher":"glob"})");
  CHECK(addressed_to(r, "miniworker@host"));
  CHECK_FALSE(addressed_to(r, "celery@host"));
  r = *parse_control_request(R"({"method":"ping","pattern":"cel","matcher":"pcre"})");
  CHECK(addressed_to(r, "celery@host"));
  CHECK_FALSE(addressed_to(r, "xcelery@host"));  // re.match is anchored at the start
  r = *parse_control_request(R"({"method":"ping","pattern":"(","matcher":"pcre"})");
  CHECK_FALSE(addressed_to(r, "celery@host"));  // a bad pattern matches nobody, and does not throw
}

TEST_CASE("ping, registered and clock replies are what a Python worker answers") {
  const auto s = sample_status();
  auto req = *parse_control_request(kPing);
  CHECK(encode_control_reply("celery@vm", control_reply(req, s)) == R"({"celery@vm":{"ok":"pong"}})");
  req.method = "registered";
  CHECK(control_reply(req, s) == json::array({"add", "addTask.add"}));
  req.method = "clock";
  CHECK(control_reply(req, s) == json{{"clock", 17}});
}

TEST_CASE("an unknown command gets kombu's KeyError reply") {
  auto req = *parse_control_request(R"({"method":"pool_grow","arguments":{"n":1}})");
  CHECK(control_reply(req, sample_status()) == json{{"error", "KeyError('pool_grow')"}});
}

TEST_CASE("hello from another node shares an empty revoked set; our own hello gets nothing") {
  auto req = *parse_control_request(R"({"method":"hello","arguments":{"from_node":"celery@other","revoked":{}}})");
  CHECK(control_reply(req, sample_status()) == json{{"revoked", json::object()}, {"clock", 17}});
  req.arguments["from_node"] = "celery@vm";
  CHECK(control_reply(req, sample_status()).is_null());
}

TEST_CASE("stats has the keys celery inspect stats shows for a prefork worker") {
  auto req = *parse_control_request(R"({"method":"stats"})");
  json j = control_reply(req, sample_status());
  CHECK(j["total"] == json{{"addTask.add", 3}});
  CHECK(j["pid"] == 4242);
  CHECK(j["clock"] == "17");
  CHECK(j["uptime"] == 12);
  CHECK(j["prefetch_count"] == 8);
  CHECK(j["pool"]["max-concurrency"] == 2);
  CHECK(j["pool"]["processes"] == json::array({4243, 4244}));
  CHECK(j["pool"]["max-tasks-per-child"] == "N/A");
  CHECK(j["broker"]["hostname"] == "127.0.0.1");
  CHECK(j["broker"]["port"] == 5672);
  CHECK(j["broker"]["virtual_host"] == "/");
  CHECK(j["broker"]["transport"] == "amqp");
  CHECK(j["rusage"]["maxrss"].is_number());
}

TEST_CASE("active lists running tasks as Request.info(safe=True)") {
  auto req = *parse_control_request(R"({"method":"active"})");
  json j = control_reply(req, sample_status());
  REQUIRE(j.size() == 1);
  CHECK(j[0]["id"] == "id-1");
  CHECK(j[0]["name"] == "sleep");
  CHECK(j[0]["type"] == "sleep");
  CHECK(j[0]["args"] == "(5.0,)");
  CHECK(j[0]["hostname"] == "celery@vm");
  CHECK(j[0]["acknowledged"] == false);
  CHECK(j[0]["delivery_info"]["routing_key"] == "celery");
  CHECK(j[0]["worker_pid"].is_null());
}

TEST_CASE("Python reprs of task values") {
  CHECK(py_repr(task::Value(std::int64_t{10})) == "10");
  CHECK(py_repr(task::Value(2.5)) == "2.5");
  CHECK(py_repr(task::Value(1.0)) == "1.0");
  CHECK(py_repr(task::Value(true)) == "True");
  CHECK(py_repr(task::Value()) == "None");
  CHECK(py_repr(task::Value(std::string("a'b"))) == "\"a'b\"");
  CHECK(py_repr(task::Value(std::string("x\ny"))) == "'x\\ny'");
  task::Map m{{"a", task::Value(std::int64_t{1})}, {"b", task::Value(task::List{task::Value("x"), task::Value()})}};
  CHECK(py_repr(task::Value(m)) == "{'a': 1, 'b': ['x', None]}");
  CHECK(py_args_repr({task::Value(std::int64_t{5}), task::Value(std::int64_t{5})}) == "(5, 5)");
  CHECK(py_args_repr({task::Value(std::int64_t{5})}) == "(5,)");
  CHECK(py_args_repr({}) == "()");
  CHECK(py_exception_repr("ValueError", "boom") == "ValueError('boom')");
}

TEST_CASE("events carry Celery's common fields and routing keys") {
  EventSource src{"celery@vm", 4242};
  json e = make_event("worker-heartbeat", src, 5, 1795720840.25, worker_event_fields({2.0, 1, 7}));
  CHECK(e["type"] == "worker-heartbeat");
  CHECK(e["hostname"] == "celery@vm");
  CHECK(e["pid"] == 4242);
  CHECK(e["clock"] == 5);
  CHECK(e["timestamp"] == 1795720840.25);
  CHECK(e["utcoffset"].is_number_integer());
  CHECK(e["freq"] == 2.0);
  CHECK(e["active"] == 1);
  CHECK(e["processed"] == 7);
  CHECK(e["loadavg"].size() == 3);
  CHECK(e["sw_ident"] == "miniworker");
  CHECK(e["sw_sys"] == "Linux");
  CHECK(event_routing_key("worker-heartbeat") == "worker.heartbeat");
  CHECK(event_routing_key("task-succeeded") == "task.succeeded");
}

TEST_CASE("task events have the fields of Celery 5.2's") {
  task::TaskMessage t;
  t.id = "id-9";
  t.name = "addTask.add";
  t.args = {task::Value(std::int64_t{5}), task::Value(std::int64_t{5})};
  t.retries = 1;
  t.eta = 1795720840.0;
  json rec = task_received_fields(t);
  CHECK(rec == json{{"uuid", "id-9"},
                    {"name", "addTask.add"},
                    {"args", "(5, 5)"},
                    {"kwargs", "{}"},
                    {"root_id", "id-9"},
                    {"parent_id", nullptr},
                    {"retries", 1},
                    {"eta", "2026-11-26T19:20:40.000000+00:00"},
                    {"expires", nullptr}});
  CHECK(task_started_fields(t) == json{{"uuid", "id-9"}});

  task::TaskResult ok;
  ok.task_id = "id-9";
  ok.state = task::State::kSuccess;
  ok.value = task::Value(std::int64_t{10});
  ok.runtime = 0.25;
  CHECK(task_succeeded_fields(ok) == json{{"uuid", "id-9"}, {"result", "10"}, {"runtime", 0.25}});

  task::TaskResult bad;
  bad.task_id = "id-9";
  bad.state = task::State::kFailure;
  bad.error_type = "std::runtime_error";
  bad.error_message = "kaput";
  bad.traceback = "in fail()";
  CHECK(task_revoked_fields("id-9", true) ==
        json{{"uuid", "id-9"}, {"terminated", false}, {"signum", nullptr}, {"expired", true}});
  CHECK(task_error_fields(bad) ==
        json{{"uuid", "id-9"}, {"exception", "std::runtime_error('kaput')"}, {"traceback", "in fail()"}});
}
