// TaskTracker unit tests: task messages, deliveries, results (Celery rpc://
// JSON and miniworker Cap'n Proto), celeryev events, retries, the bounded
// history and its restore from the store. No broker, no sockets: messages are
// built with the codec and fed to the tracker as the channel would.
#include <doctest/doctest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <random>
#include <string>

#include "broker/store/memory_store.hpp"
#include "broker/tasks/tracker/task_index.hpp"
#include "broker/tasks/tracker/task_tracker.hpp"
#include "common/amqp/properties.hpp"
#include "common/task/capnp_codec.hpp"

namespace {

using mb::tasks::TaskState;
using mb::tasks::TaskTracker;
using mb::tasks::TrackerOptions;

constexpr double kT0 = 1'800'000'000.0;  // a fixed "now", unix seconds

// A message as published: encoded properties plus body.
struct Published {
  std::string properties;
  std::string body;
  mb::amqp::PropertiesSummary summary() const { return mb::amqp::summarize_properties(properties); }
};

Published celery_task(const std::string& id, const std::string& name, std::int32_t retries = 0) {
  mb::amqp::BasicProperties p;
  p.content_type = "application/json";
  p.content_encoding = "utf-8";
  mb::amqp::FieldTable h;
  h.set("lang", "py");
  h.set("task", name);
  h.set("id", id);
  h.set("retries", retries);
  h.set("argsrepr", "(5, 5)");
  h.set("kwargsrepr", "{}");
  p.headers = h;
  p.delivery_mode = 2;
  p.correlation_id = id;
  p.reply_to = "reply-queue";
  return {mb::amqp::encode_properties(p), R"([[5, 5], {}, {"callbacks": null}])"};
}

Published celery_result(const std::string& id, const std::string& body) {
  mb::amqp::BasicProperties p;
  p.content_type = "application/json";
  p.headers = mb::amqp::FieldTable{};
  p.correlation_id = id;
  return {mb::amqp::encode_properties(p), body};
}

Published capnp_task(const std::string& id, const std::string& name) {
  mb::task::TaskMessage t;
  t.id = id;
  t.name = name;
  t.args = {mb::task::Value(2), mb::task::Value(3)};
  mb::amqp::BasicProperties p;
  p.content_type = "application/x-capnp";
  mb::amqp::FieldTable h;
  h.set("lang", "cpp");
  h.set("task", name);
  h.set("id", id);
  p.headers = h;
  p.correlation_id = id;
  return {mb::amqp::encode_properties(p), mb::task::encode_task_capnp(t)};
}

Published capnp_result(const std::string& id, mb::task::State state, double runtime) {
  mb::task::TaskResult r;
  r.task_id = id;
  r.state = state;
  r.value = mb::task::Value(5);
  r.runtime = runtime;
  r.worker = "cpp-worker@host";
  if (state != mb::task::State::kSuccess) {
    r.error_type = "std::runtime_error";
    r.error_message = "boom";
  }
  mb::amqp::BasicProperties p;
  p.content_type = "application/x-capnp";
  p.headers = mb::amqp::FieldTable{};
  p.correlation_id = id;
  return {mb::amqp::encode_properties(p), mb::task::encode_result_capnp(r)};
}

Published event(const std::string& body) {
  mb::amqp::BasicProperties p;
  p.content_type = "application/json";
  mb::amqp::FieldTable h;
  h.set("hostname", "celery@vm");
  p.headers = h;
  return {mb::amqp::encode_properties(p), body};
}

bool publish(TaskTracker& t, const Published& m, double now, std::string_view exchange = "",
             std::string_view routing_key = "celery") {
  // As the broker calls it: on_publish only for messages the tracker is interested in.
  if (!t.interested(exchange, m.summary())) return false;
  return t.on_publish(exchange, routing_key, m.summary(), m.body, now);
}

}  // namespace

TEST_CASE("messages without task headers are not tracked") {
  TaskTracker t({}, nullptr);
  mb::amqp::BasicProperties p;
  mb::amqp::FieldTable h;
  h.set("x-foo", "task");  // the word in a value, not a key
  p.headers = h;
  p.correlation_id = "abc";
  const Published m{mb::amqp::encode_properties(p), "hello"};
  mb::amqp::BasicProperties reply;
  reply.correlation_id = "abc";  // a correlation id, but no task is tracked yet
  CHECK_FALSE(t.interested("", Published{mb::amqp::encode_properties(reply), "hello"}.summary()));
  CHECK_FALSE(publish(t, m, kT0));
  CHECK_FALSE(publish(t, Published{std::string("\0\0", 2), ""}, kT0));  // no properties at all
  CHECK(t.size() == 0);
  CHECK(t.malformed() == 0);
}

TEST_CASE("a Celery task: published, delivered, then its rpc:// result") {
  TaskTracker t({}, nullptr);
  const Published task = celery_task("id-1", "addTask.add");
  REQUIRE(publish(t, task, kT0));
  const auto* r = t.find("id-1");
  REQUIRE(r != nullptr);
  CHECK(r->state == TaskState::kPending);
  CHECK(r->name == "addTask.add");
  CHECK(r->args == "(5, 5)");
  CHECK(r->format == "celery");
  CHECK(r->routing_key == "celery");

  t.on_delivered(task.properties, kT0 + 1);
  CHECK(r->state == TaskState::kReceived);
  CHECK(t.task_types()[0]["running"] == 1);

  CHECK_FALSE(publish(t, celery_result("id-1", R"({"task_id":"id-1","status":"SUCCESS","result":10,"traceback":null,"children":[]})"),
                      kT0 + 3, "", "reply-queue"));
  CHECK(r->state == TaskState::kSuccess);
  CHECK(r->result == "10");
  CHECK(r->runtime == doctest::Approx(2.0));  // measured from delivery: Celery's result does not carry it
  const auto* s = t.stats("addTask.add");
  REQUIRE(s != nullptr);
  CHECK(s->published == 1);
  CHECK(s->succeeded == 1);
  CHECK(s->runtime_count == 1);

  // The task-succeeded event reporting the same end is not counted twice, and its runtime wins.
  publish(t, event(R"({"type":"task-succeeded","uuid":"id-1","hostname":"celery@vm","result":"10","runtime":0.5,"timestamp":1800000003.0})"),
          kT0 + 3, "celeryev", "task.succeeded");
  CHECK(s->succeeded == 1);
  CHECK(r->runtime == doctest::Approx(0.5));
}

TEST_CASE("a Celery failure carries the exception and traceback") {
  TaskTracker t({}, nullptr);
  publish(t, celery_task("f-1", "t.fail"), kT0);
  publish(t, celery_result("f-1", R"({"task_id":"f-1","status":"FAILURE","result":{"exc_type":"ValueError","exc_message":["boom 1"],"exc_module":"builtins"},"traceback":"Traceback ...","children":[]})"),
          kT0 + 1);
  const auto* r = t.find("f-1");
  CHECK(r->state == TaskState::kFailure);
  CHECK(r->error == "ValueError: boom 1");
  CHECK(r->traceback == "Traceback ...");
  CHECK(t.stats("t.fail")->failed == 1);
}

TEST_CASE("a Celery result's members read the same whether the body is walked or parsed by nlohmann") {
  struct Case {
    const char* body;
    TaskState state;
    const char* result;
    const char* error;
    const char* traceback;
  };
  const std::string deep_children =
      R"({"status":"SUCCESS","result":1,"children":)" + std::string(70, '[') + std::string(70, ']') + "}";
  const Case cases[] = {
      // What miniworker and Python Celery send, and values written back as sent.
      {R"({"children":[],"result":3,"status":"SUCCESS","task_id":"c","traceback":null})", TaskState::kSuccess, "3", "", ""},
      {R"({"status": "SUCCESS", "result": [1, 2], "traceback": null, "children": [], "date_done": "2026-11-27T22:00:00", "task_id": "c"})",
       TaskState::kSuccess, "[1,2]", "", ""},
      {R"({"status":"SUCCESS","result":"plain text"})", TaskState::kSuccess, R"("plain text")", "", ""},
      {R"({"status":"SUCCESS","result":-12})", TaskState::kSuccess, "-12", "", ""},
      {R"({"status":"SUCCESS","result":true})", TaskState::kSuccess, "true", "", ""},
      {R"({"status":"SUCCESS"})", TaskState::kSuccess, "null", "", ""},
      // Values nlohmann writes differently from how they were sent.
      {R"({"status":"SUCCESS","result":-0})", TaskState::kSuccess, "0", "", ""},
      {R"({"status":"SUCCESS","result":1.50})", TaskState::kSuccess, "1.5", "", ""},
      {R"({"status":"SUCCESS","result":1e5})", TaskState::kSuccess, "100000.0", "", ""},
      {R"({"status":"SUCCESS","result":12345678901234567890})", TaskState::kSuccess, "12345678901234567890", "", ""},
      {R"({"status":"SUCCESS","result":"a\"b\u0041"})", TaskState::kSuccess, R"("a\"bA")", "", ""},
      {"{\"status\":\"SUCCESS\",\"result\":\"\xc3\xa9\"}", TaskState::kSuccess, "\"\xc3\xa9\"", "", ""},
      {R"({"status":"SUCCESS","result":{"b":1, "a":[null]}})", TaskState::kSuccess, R"({"a":[null],"b":1})", "", ""},
      // Escapes in keys and statuses, a later key winning, nesting past the walk's depth.
      {R"({"stat\u0075s":"SUCCESS","result":7})", TaskState::kSuccess, "7", "", ""},
      {R"({"status":"SUCC\u0045SS","result":8})", TaskState::kSuccess, "8", "", ""},
      {R"({"status":"PENDING","result":1,"status":"SUCCESS","result":9})", TaskState::kSuccess, "9", "", ""},
      {deep_children.c_str(), TaskState::kSuccess, "1", "", ""},
      // Failures: the error from the exception object, the traceback with its escapes read.
      {R"({"status":"FAILURE","result":{"exc_type":"KeyError","exc_message":["k", 2]},"traceback":"Traceback\n  line\t1"})",
       TaskState::kFailure, "", "KeyError: k, 2", "Traceback\n  line\t1"},
      {R"({"status":"REVOKED","result":{"exc_type":"TaskRevokedError","exc_message":[]},"traceback":null})",
       TaskState::kRevoked, "", "TaskRevokedError: ", ""},
      {R"({"status":"RETRY","result":"later","traceback":"tb"})", TaskState::kRetry, "", "later", "tb"},
  };
  int n = 0;
  for (const Case& c : cases) {
    const std::string body = c.body;
    CAPTURE(body);
    TaskTracker t({}, nullptr);
    const std::string id = "c-" + std::to_string(n++);
    publish(t, celery_task(id, "add"), kT0);
    publish(t, celery_result(id, c.body), kT0 + 1);
    const auto* r = t.find(id);
    REQUIRE(r != nullptr);
    CHECK(t.malformed() == 0);
    CHECK(r->state == c.state);
    CHECK(r->result == c.result);
    CHECK(r->error == c.error);
    CHECK(r->traceback == c.traceback);
  }
  // Bodies that are not a result: malformed ones are counted, and none changes the task.
  const std::pair<const char*, std::uint64_t> others[] = {
      {R"({"status":"SUCCESS","result":3x})", 1},  {R"({"status":"SUCCESS","result":3} trailing)", 1},
      {R"({"status":"SUCCESS","result":"open)", 1}, {R"({"status":"SUCCESS","traceback":nul})", 1},
      {R"([{"status":"SUCCESS"}])", 0},             {R"({"result":1})", 0},
      {R"("SUCCESS")", 0},                          {"", 1},
  };
  for (const auto& [text, malformed] : others) {
    const std::string body = text;
    CAPTURE(body);
    TaskTracker t({}, nullptr);
    publish(t, celery_task("o-1", "add"), kT0);
    publish(t, celery_result("o-1", body), kT0 + 1);
    CHECK(t.malformed() == malformed);
    CHECK(t.find("o-1")->state == TaskState::kPending);
    CHECK(t.find("o-1")->traceback.empty());
    CHECK(t.summary()["results_seen"] == 0);
  }
}

TEST_CASE("a new task that takes over the oldest one's record keeps nothing of it") {
  TrackerOptions opts;
  opts.max_tasks = 1;
  TaskTracker t(opts, nullptr);
  publish(t, celery_task("old", "t.fail", 2), kT0);
  publish(t, celery_result("old", R"({"status":"FAILURE","result":{"exc_type":"E","exc_message":["m"]},"traceback":"tb"})"),
          kT0 + 1);
  publish(t, capnp_result("old", mb::task::State::kFailure, 0.5), kT0 + 1);
  REQUIRE(t.find("old")->worker == "cpp-worker@host");
  publish(t, capnp_task("new", "add"), kT0 + 2);
  CHECK(t.find("old") == nullptr);
  const auto* r = t.find("new");
  REQUIRE(r != nullptr);
  CHECK(r->id == "new");
  CHECK(r->name == "add");
  CHECK(r->state == TaskState::kPending);
  CHECK(r->format == "capnp");
  CHECK(r->retries == 0);
  CHECK(r->result.empty());
  CHECK(r->error.empty());
  CHECK(r->traceback.empty());
  CHECK(r->worker.empty());
  CHECK(r->received == 0);
  CHECK(r->finished == 0);
  CHECK(r->runtime == 0);
  CHECK(r->sent == kT0 + 2);
  CHECK(t.list_tasks({})["items"].size() == 1);
}

TEST_CASE("a miniworker task: Cap'n Proto envelope and result, runtime and worker from the result") {
  TaskTracker t({}, nullptr);
  REQUIRE(publish(t, capnp_task("c-1", "add"), kT0));
  const auto* r = t.find("c-1");
  REQUIRE(r != nullptr);
  CHECK(r->format == "capnp");
  CHECK(r->args == "[2,3]");
  publish(t, capnp_result("c-1", mb::task::State::kSuccess, 0.25), kT0 + 5);
  CHECK(r->state == TaskState::kSuccess);
  CHECK(r->result == "5");
  CHECK(r->runtime == doctest::Approx(0.25));
  CHECK(r->worker == "cpp-worker@host");
  const auto* w = t.worker("cpp-worker@host");
  REQUIRE(w != nullptr);
  CHECK(w->results == 1);
  CHECK(t.workers(kT0 + 5)[0]["state"] == "seen");
}

TEST_CASE("Celery events: batched task events and worker heartbeats") {
  TaskTracker t({}, nullptr);
  // Events for a task the broker never saw published (sent before a restart, say).
  publish(t,
          event(R"j([{"type":"task-received","uuid":"e-1","name":"addTask.add","args":"(1, 2)","kwargs":"{}","hostname":"celery@vm","timestamp":1800000000.0},
                   {"type":"task-started","uuid":"e-1","hostname":"celery@vm","timestamp":1800000001.0}])j"),
          kT0, "celeryev", "task.multi");
  const auto* r = t.find("e-1");
  REQUIRE(r != nullptr);
  CHECK(r->state == TaskState::kStarted);
  CHECK(r->name == "addTask.add");
  CHECK(r->args == "(1, 2)");
  CHECK(r->worker == "celery@vm");
  // A late task-received does not move it back.
  publish(t, event(R"({"type":"task-received","uuid":"e-1","hostname":"celery@vm","timestamp":1800000000.5})"), kT0,
          "celeryev", "task.received");
  CHECK(r->state == TaskState::kStarted);
  publish(t, event(R"j({"type":"task-failed","uuid":"e-1","exception":"KeyError('x')","traceback":"tb","hostname":"celery@vm","timestamp":1800000004.0})j"),
          kT0, "celeryev", "task.failed");
  CHECK(r->state == TaskState::kFailure);
  CHECK(r->error == "KeyError('x')");
  CHECK(r->runtime == doctest::Approx(3.0));  // started -> failed, on the worker's clock

  publish(t, event(R"({"type":"worker-heartbeat","hostname":"celery@vm","freq":2.0,"active":1,"processed":7,"loadavg":[0.1,0.2,0.3],"sw_ident":"py-celery","sw_ver":"5.2.6","pid":42,"timestamp":1800000010.0})"),
          kT0, "celeryev", "worker.heartbeat");
  const auto* w = t.worker("celery@vm");
  REQUIRE(w != nullptr);
  CHECK(w->processed == 7);
  CHECK(w->software == "py-celery 5.2.6");
  CHECK(t.workers(kT0 + 11)[0]["state"] == "online");
  CHECK(t.workers(kT0 + 15)[0]["state"] == "offline");  // two heartbeats missed
  publish(t, event(R"({"type":"worker-heartbeat","hostname":"celery@vm","freq":2.0,"timestamp":1800000020.0})"), kT0,
          "celeryev", "worker.heartbeat");
  CHECK(t.workers(kT0 + 21)[0]["state"] == "online");
  publish(t, event(R"({"type":"worker-offline","hostname":"celery@vm","timestamp":1800000021.0})"), kT0, "celeryev",
          "worker.offline");
  CHECK(t.workers(kT0 + 21)[0]["state"] == "offline");
}

TEST_CASE("a retry re-publishes the same id with retries + 1") {
  TaskTracker t({}, nullptr);
  publish(t, celery_task("r-1", "t.flaky"), kT0);
  publish(t, celery_result("r-1", R"({"task_id":"r-1","status":"RETRY","result":{"exc_type":"RuntimeError","exc_message":["try again"]},"traceback":null})"),
          kT0 + 1);
  CHECK(t.find("r-1")->state == TaskState::kRetry);
  publish(t, celery_task("r-1", "t.flaky", 1), kT0 + 2);
  CHECK(t.find("r-1")->state == TaskState::kPending);
  CHECK(t.find("r-1")->retries == 1);
  CHECK(t.stats("t.flaky")->retried == 1);
  CHECK(t.stats("t.flaky")->published == 2);
  CHECK(t.size() == 1);
  // A result for the task counts once, even if a second copy of it arrives.
  const auto ok = celery_result("r-1", R"({"task_id":"r-1","status":"SUCCESS","result":null})");
  publish(t, ok, kT0 + 3);
  publish(t, ok, kT0 + 4);
  CHECK(t.stats("t.flaky")->succeeded == 1);
}

TEST_CASE("malformed input is counted and ignored, never thrown") {
  TaskTracker t({}, nullptr);
  CHECK_FALSE(publish(t, event("not json"), kT0, "celeryev", "task.multi"));
  CHECK(t.malformed() == 1);
  Published bad = capnp_task("b-1", "add");
  bad.body = "garbage, not a capnp message";
  CHECK_FALSE(publish(t, bad, kT0));
  CHECK(t.malformed() == 2);
  CHECK(t.find("b-1") == nullptr);  // a bad message leaves no record behind
  publish(t, celery_task("ok-1", "add"), kT0);
  publish(t, celery_result("ok-1", "{truncated"), kT0);
  CHECK(t.malformed() == 3);
  CHECK(t.find("ok-1")->state == TaskState::kPending);
}

TEST_CASE("bytes that are not UTF-8 are served and stored as U+FFFD, never thrown") {
  auto post = [](std::function<void()> fn) { fn(); };
  mb::store::MemoryStore store(post);
  TaskTracker t({}, &store);
  mb::task::TaskMessage m;
  m.id = "u-1";
  m.name = "bytes.task";
  m.args = {mb::task::Value(mb::task::Bytes(std::string("\xff\xfe", 2)))};
  Published task = capnp_task("u-1", "bytes.task");
  task.body = mb::task::encode_task_capnp(m);
  REQUIRE(publish(t, task, kT0, "", std::string("key\xc3", 4)));
  const auto j = t.task("u-1");
  REQUIRE(j.has_value());
  CHECK((*j)["routing_key"] == "key\xef\xbf\xbd");
  CHECK_NOTHROW(j->dump());
  CHECK_NOTHROW(t.flush());
  CHECK_NOTHROW(t.list_tasks({}).dump());
}

TEST_CASE("list filters by state and name, newest first") {
  TaskTracker t({}, nullptr);
  publish(t, celery_task("a", "x"), kT0);
  publish(t, celery_task("b", "y"), kT0);
  publish(t, celery_task("c", "x"), kT0);
  publish(t, celery_result("c", R"({"status":"SUCCESS","result":1})"), kT0 + 1);
  auto all = t.list_tasks({});
  CHECK(all["total"] == 3);
  CHECK(all["items"][0]["id"] == "c");
  mb::tasks::TaskQuery q;
  q.name = "x";
  CHECK(t.list_tasks(q)["total"] == 2);
  q.state = TaskState::kPending;
  auto pending_x = t.list_tasks(q);
  REQUIRE(pending_x["total"] == 1);
  CHECK(pending_x["items"][0]["id"] == "a");
  mb::tasks::TaskQuery page;
  page.limit = 1;
  page.offset = 1;
  auto p = t.list_tasks(page);
  CHECK(p["total"] == 3);
  REQUIRE(p["items"].size() == 1);
  CHECK(p["items"][0]["id"] == "b");
}

TEST_CASE("the history is bounded, written to the store and restored") {
  auto data = std::make_shared<mb::store::MemoryStoreData>();
  auto post = [](std::function<void()> fn) { fn(); };
  TrackerOptions opts;
  opts.max_tasks = 3;
  {
    mb::store::MemoryStore store(post, data);
    TaskTracker t(opts, &store);
    for (int i = 1; i <= 5; ++i) publish(t, celery_task(std::to_string(i).insert(0, "t"), "add"), kT0 + i);
    publish(t, celery_result("t5", R"({"status":"SUCCESS","result":10})"), kT0 + 6);
    publish(t, event(R"({"type":"worker-online","hostname":"celery@vm","freq":2.0,"timestamp":1800000006.0})"), kT0,
            "celeryev", "worker.online");
    CHECK(t.size() == 3);
    CHECK(t.find("t1") == nullptr);
    CHECK(t.find("t2") == nullptr);
    CHECK(t.summary()["evicted"] == 2);
    t.flush();
    // An evicted id is deleted from the store too.
    publish(t, celery_task("t6", "add"), kT0 + 7);
    t.flush();
    store.close();
  }
  mb::store::MemoryStore reopened(post, data);
  TaskTracker t(opts, &reopened);
  t.restore();
  CHECK(t.size() == 3);
  CHECK(t.find("t3") == nullptr);
  REQUIRE(t.find("t5") != nullptr);
  CHECK(t.find("t5")->state == TaskState::kSuccess);
  CHECK(t.find("t5")->result == "10");
  CHECK(t.stats("add")->published == 6);  // totals survive eviction and restart
  CHECK(t.stats("add")->succeeded == 1);
  CHECK(t.worker("celery@vm") != nullptr);
  // Numbering continues after the restored tasks: a new task is the newest and t4 the oldest.
  publish(t, celery_task("t7", "add"), kT0 + 8);
  CHECK(t.list_tasks({})["items"][0]["id"] == "t7");
  CHECK(t.find("t4") == nullptr);
}

TEST_CASE("a stored task record is the JSON the API serves, whatever its strings hold") {
  auto data = std::make_shared<mb::store::MemoryStoreData>();
  auto post = [](std::function<void()> fn) { fn(); };
  const std::string id("odd-\xff-id", 8);  // not UTF-8: stored and served as U+FFFD
  {
    mb::store::MemoryStore store(post, data);
    TaskTracker t({}, &store);
    Published m = celery_task(id, "quote\"back\\slash");
    mb::amqp::BasicProperties p = mb::amqp::decode_properties(m.properties);
    p.headers->set("argsrepr", "(\"tab\there\", 'nl\nx', '\x01', 'caf\xc3\xa9')");
    m.properties = mb::amqp::encode_properties(p);
    REQUIRE(publish(t, m, kT0 + 0.25));
    publish(t, celery_result(id, R"({"status":"FAILURE","result":{"exc_type":"E","exc_message":["m"]},"traceback":"T\r\n"})"),
            kT0 + 1.5);
    t.flush();
    std::vector<mb::store::MetaRecord> records;
    REQUIRE(store.list_meta(mb::store::MetaKind::kGeneric, records).ok());
    const auto served = t.task(id);
    REQUIRE(served.has_value());
    bool found = false;
    for (const auto& r : records) {
      if (!r.key.starts_with("task/t/")) continue;
      found = true;
      CHECK(nlohmann::json::parse(r.value) == *served);
    }
    CHECK(found);
    store.close();
  }
  mb::store::MemoryStore reopened(post, data);
  TaskTracker t({}, &reopened);
  t.restore();
  REQUIRE(t.size() == 1);
  const auto j = t.list_tasks({})["items"][0];
  CHECK(j["id"] == "odd-\xef\xbf\xbd-id");
  CHECK(j["name"] == "quote\"back\\slash");
  CHECK(j["args"] == "(\"tab\there\", 'nl\nx', '\x01', 'caf\xc3\xa9')");
  CHECK(j["state"] == "FAILURE");
  CHECK(j["traceback"] == "T\r\n");
  CHECK(j["sent"] == kT0 + 0.25);
  CHECK(j["finished"] == kT0 + 1.5);
}

TEST_CASE("max_tasks 0 turns tracking off and leaves a stored history alone") {
  auto data = std::make_shared<mb::store::MemoryStoreData>();
  auto post = [](std::function<void()> fn) { fn(); };
  {
    mb::store::MemoryStore store(post, data);
    TaskTracker t({}, &store);
    publish(t, celery_task("kept", "add"), kT0);
    t.flush();
    store.close();
  }
  TrackerOptions off;
  off.max_tasks = 0;
  {
    mb::store::MemoryStore store(post, data);
    TaskTracker t(off, &store);
    t.restore();
    CHECK_FALSE(t.enabled());
    CHECK_FALSE(publish(t, celery_task("new", "add"), kT0 + 1));
    publish(t, event(R"({"type":"worker-online","hostname":"celery@vm","timestamp":1800000001.0})"), kT0 + 1,
            "celeryev", "worker.online");
    t.tick(kT0 + 10);
    t.flush();
    CHECK(t.size() == 0);
    CHECK(t.worker("celery@vm") == nullptr);
    store.close();
  }
  mb::store::MemoryStore reopened(post, data);
  TaskTracker t({}, &reopened);
  t.restore();
  CHECK(t.size() == 1);
  CHECK(t.find("kept") != nullptr);
}

TEST_CASE("the task index finds what a map finds through inserts and erases, whatever the hashes collide on") {
  using mb::tasks::TaskIndex;
  // Hashes drawn from a few values, so that runs are long and wrap around the
  // table's end, and tags are often equal: the id decides.
  for (const std::uint64_t distinct : {3ull, 64ull, 1ull << 40}) {
    CAPTURE(distinct);
    std::mt19937_64 rng(distinct);
    std::vector<std::string> ids;
    std::vector<std::uint64_t> hashes;
    for (int i = 0; i < 400; ++i) {
      ids.push_back("id-" + std::to_string(i));
      hashes.push_back((rng() % distinct) * 0x9E3779B97F4A7C15ull + (distinct == 3 ? 63 : 0));
    }
    auto id_of = [&](std::uint32_t r) -> std::string_view { return ids[r]; };
    TaskIndex index;
    std::map<std::uint32_t, bool> present;
    for (int step = 0; step < 4000; ++step) {
      const auto r = static_cast<std::uint32_t>(rng() % ids.size());
      if (present[r]) {
        index.erase(r, hashes[r]);
        present[r] = false;
      } else {
        index.insert(r, hashes[r]);
        present[r] = true;
      }
      if (step % 97 == 0 || step > 3900) {
        std::size_t n = 0;
        for (std::uint32_t k = 0; k < ids.size(); ++k) {
          const bool in = present[k];
          n += in;
          REQUIRE(index.find(ids[k], hashes[k], id_of) == (in ? k : TaskIndex::kNone));
        }
        REQUIRE(index.size() == n);
      }
    }
  }
  TaskIndex empty;
  CHECK(empty.find("x", 1, [](std::uint32_t) { return std::string_view(); }) == TaskIndex::kNone);
  empty.erase(0, 1);  // nothing there: nothing happens
  CHECK(empty.size() == 0);
}

TEST_CASE("a full history replaces its oldest task with each new one, many times round") {
  auto data = std::make_shared<mb::store::MemoryStoreData>();
  auto post = [](std::function<void()> fn) { fn(); };
  TrackerOptions opts;
  opts.max_tasks = 7;
  mb::store::MemoryStore store(post, data);
  TaskTracker t(opts, &store);
  std::deque<std::string> kept;  // what the tracker should hold, oldest first
  for (int i = 0; i < 100; ++i) {
    const std::string id = "w" + std::to_string(i);
    publish(t, celery_task(id, "add"), kT0 + i);
    kept.push_back(id);
    if (kept.size() > opts.max_tasks) kept.pop_front();
    // A result for a task still held, and one for a task gone.
    publish(t, celery_result(kept.front(), R"({"status":"SUCCESS","result":1})"), kT0 + i);
    if (i >= 7) publish(t, celery_result("w" + std::to_string(i - 7), R"({"status":"SUCCESS","result":1})"), kT0 + i);
    if (i % 10 == 3) t.flush();
  }
  REQUIRE(t.size() == kept.size());
  for (const auto& id : kept) CHECK(t.find(id) != nullptr);
  CHECK(t.find("w92") == nullptr);
  const auto items = t.list_tasks({})["items"];
  REQUIRE(items.size() == kept.size());
  for (std::size_t i = 0; i < kept.size(); ++i) CHECK(items[i]["id"] == kept[kept.size() - 1 - i]);  // newest first
  CHECK(t.summary()["evicted"] == 93);
  t.flush();
  store.close();
  // The store holds exactly the tasks kept, in their order.
  mb::store::MemoryStore reopened(post, data);
  std::vector<mb::store::MetaRecord> stored;
  REQUIRE(reopened.list_meta(mb::store::MetaKind::kGeneric, stored).ok());
  CHECK(std::count_if(stored.begin(), stored.end(), [](const auto& m) { return m.key.starts_with("task/t/"); }) == 7);
  TaskTracker r(opts, &reopened);
  r.restore();
  REQUIRE(r.size() == kept.size());
  const auto restored = r.list_tasks({})["items"];
  for (std::size_t i = 0; i < kept.size(); ++i) CHECK(restored[i]["id"] == kept[kept.size() - 1 - i]);
  CHECK(r.find(kept.front())->state == TaskState::kSuccess);
  // Restored with a lower bound, the oldest go.
  opts.max_tasks = 3;
  TaskTracker lower(opts, &reopened);
  lower.restore();
  CHECK(lower.size() == 3);
  CHECK(lower.find(kept[3]) == nullptr);
  CHECK(lower.find(kept[4]) != nullptr);
  CHECK(lower.list_tasks({})["items"][0]["id"] == kept.back());
}

TEST_CASE("a round of the history is written a slice at a time; what changes between slices is kept") {
  auto data = std::make_shared<mb::store::MemoryStoreData>();
  auto post = [](std::function<void()> fn) { fn(); };
  mb::store::MemoryStore store(post, data);
  TrackerOptions opts;
  opts.max_tasks = 10;
  opts.flush_slice = 3;
  TaskTracker t(opts, &store);
  auto stored = [&] {  // task id -> stored JSON
    std::vector<mb::store::MetaRecord> metas;
    REQUIRE(store.list_meta(mb::store::MetaKind::kGeneric, metas).ok());
    std::map<std::string, nlohmann::json> out;
    for (const auto& m : metas)
      if (m.key.starts_with("task/t/")) out[m.key.substr(7)] = nlohmann::json::parse(m.value);
    return out;
  };
  for (int i = 0; i < 10; ++i) publish(t, celery_task("a" + std::to_string(i), "add"), kT0);

  REQUIRE(t.tick(kT0 + 2));  // the round's first slice: the three oldest
  CHECK(stored().size() == 3);
  CHECK_FALSE(t.tick(kT0 + 2));  // a round is open: the timer starts no other
  CHECK(stored().size() == 3);
  // Between slices: a written task changes, two new ones evict the two oldest
  // (written: deleted by the next slice), and an unwritten one changes.
  publish(t, celery_result("a2", R"({"status":"SUCCESS","result":2})"), kT0 + 2);
  publish(t, celery_task("b0", "add"), kT0 + 2);
  publish(t, celery_task("b1", "add"), kT0 + 2);
  publish(t, celery_result("a5", R"({"status":"FAILURE","result":{"exc_type":"E","exc_message":["x"]}})"), kT0 + 2);
  REQUIRE(t.flush_slice());
  auto s = stored();
  CHECK(s.size() == 4);  // a2, and a3 to a5
  CHECK_FALSE(s.contains("a0"));
  CHECK_FALSE(s.contains("a1"));
  CHECK(s["a5"]["state"] == "FAILURE");
  CHECK(s["a2"]["state"] == "PENDING");  // its change waits for the next round
  REQUIRE(t.flush_slice());
  CHECK_FALSE(t.flush_slice());  // a9: the round is done
  CHECK_FALSE(t.flush_slice());  // and no other is open
  s = stored();
  CHECK(s.size() == 8);  // a2 to a9; b0 and b1 were marked after the round began
  CHECK_FALSE(s.contains("b0"));

  CHECK_FALSE(t.tick(kT0 + 2.5));  // within the interval
  CHECK_FALSE(t.tick(kT0 + 3));    // the next round: a2, b0, b1, in one slice
  s = stored();
  REQUIRE(s.size() == 10);
  for (const char* id : {"a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "b0", "b1"}) CHECK(s.contains(id));
  CHECK(s["a2"]["state"] == "SUCCESS");

  // flush() (shutdown) finishes an open round whole, and what was marked since.
  for (int i = 0; i < 8; ++i) publish(t, celery_task("c" + std::to_string(i), "add"), kT0 + 4);
  REQUIRE(t.tick(kT0 + 4));
  publish(t, celery_result("c7", R"({"status":"SUCCESS","result":7})"), kT0 + 4);
  t.flush();
  CHECK_FALSE(t.flush_slice());
  s = stored();
  REQUIRE(s.size() == 10);
  for (int i = 0; i < 8; ++i) CHECK(s.contains("c" + std::to_string(i)));
  CHECK(s["c7"]["state"] == "SUCCESS");
  CHECK(s.contains("b0"));
  CHECK(s.contains("b1"));
}
