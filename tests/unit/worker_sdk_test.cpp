// worker_sdk_test.cpp: the task SDK (worker/include/minibroker/task.hpp) on its
// own: typed registration, argument binding and conversion, errors, retries.
//
// Concerns:
// [x] positional and keyword arguments, defaults
// [x] wrong count / unknown kwarg / duplicate / missing -> TypeError with a clear message
// [x] wrong type and out-of-range integers -> TypeError naming the parameter
// [x] every value type converts both ways (vectors, maps, optional, bytes, Value)
// [x] exceptions -> FAILURE with demangled type and message; TaskError keeps its type
// [x] Retry -> RETRY with countdown; past max_retries -> FAILURE
// [x] Request parameter and current_request(); soft time limit check
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <minibroker/task.hpp>

using namespace mb::task;

namespace {

std::int64_t add(std::int64_t x, std::int64_t y) { return x + y; }

Outcome run(std::string_view name, List args, Map kwargs = {}, std::uint32_t retries = 0) {
  const TaskDef* def = registry().find(name);
  REQUIRE(def != nullptr);
  Request req;
  req.id = "id-1";
  req.name = std::string(name);
  req.retries = retries;
  return def->run(Call{args, kwargs, req});
}

}  // namespace

MB_TASK("t.add", add, "x", "y");
MB_TASK("t.greet", [](std::string name, std::string greeting) { return greeting + ", " + name; }, "name",
        arg("greeting", "hello"));
MB_TASK("t.positional", [](int a, double b) { return a * b; });
MB_TASK("t.small", [](std::uint8_t v) { return static_cast<int>(v); }, "v");
MB_TASK("t.vec", [](std::vector<int> v) {
  int s = 0;
  for (int x : v) s += x;
  return s;
}, "v");
MB_TASK("t.map", [](std::map<std::string, double> m) { return m; }, "m");
MB_TASK("t.opt", [](std::optional<int> v) { return v ? *v : -1; }, "v");
MB_TASK("t.bytes", [](Bytes b) { return Bytes(b.data + "!"); }, "b");
MB_TASK("t.void", [] {});
MB_TASK("t.throw", [] { throw std::out_of_range("nope"); });
MB_TASK("t.taskerror", [] { throw TaskError("ValueError", "bad value"); });
MB_TASK("t.retry", [](const Request& r) {
  if (r.retries < 2) throw Retry{1.5, 2, "again"};
  return static_cast<int>(r.retries);
});
MB_TASK("t.request", [](const Request& r, int x) { return r.id + ":" + std::to_string(x) + ":" + current_request().name; }, "x");
MB_TASK("t.soft", [](const Request& r) {
  r.check_soft_time_limit();
  return true;
});

TEST_CASE("positional and keyword arguments, defaults") {
  CHECK(run("t.add", {5, 5}).value == Value(10));
  CHECK(run("t.add", {5}, {{"y", 7}}).value == Value(12));
  CHECK(run("t.add", {}, {{"x", 1}, {"y", 2}}).value == Value(3));
  CHECK(run("t.greet", {"bob"}).value == Value("hello, bob"));
  CHECK(run("t.greet", {"bob"}, {{"greeting", "hi"}}).value == Value("hi, bob"));
  CHECK(run("t.positional", {2, 2.5}).value == Value(5.0));
  CHECK(run("t.add", {5.0, 1}).value == Value(6));  // integral doubles accepted
}

TEST_CASE("argument errors are TypeErrors with clear messages") {
  auto o = run("t.add", {1, 2, 3});
  CHECK(o.kind == Outcome::Kind::kFailure);
  CHECK(o.error_type == "TypeError");
  CHECK(o.error_message == "t.add() takes 2 arguments but 3 were given");
  CHECK(run("t.add", {1}).error_message == "t.add() missing required argument 'y'");
  CHECK(run("t.add", {1, 2}, {{"z", 1}}).error_message == "t.add() got an unexpected keyword argument 'z'");
  CHECK(run("t.add", {1, 2}, {{"x", 1}}).error_message == "t.add() got multiple values for argument 'x'");
  CHECK(run("t.add", {"a", 2}).error_message == "t.add() argument 'x': expected int, got string");
  CHECK(run("t.add", {1.5, 2}).error_message == "t.add() argument 'x': expected int, got double");
  CHECK(run("t.small", {300}).error_message == "t.small() argument 'v': 300 out of range");
  CHECK(run("t.vec", {List{1, "x"}}).error_message == "t.vec() argument 'v'[1]: expected int, got string");
  CHECK(run("t.positional", {1, 2}, {{"arg0", 1}}).error_type == "TypeError");
}

TEST_CASE("value types convert both ways") {
  CHECK(run("t.vec", {List{1, 2, 3}}).value == Value(6));
  Map m{{"a", 1.5}, {"b", 2}};
  CHECK(run("t.map", {m}).value == Value(Map{{"a", 1.5}, {"b", 2.0}}));
  CHECK(run("t.opt", {nullptr}).value == Value(-1));
  CHECK(run("t.opt", {4}).value == Value(4));
  CHECK(run("t.bytes", {Bytes("ab")}).value == Value(Bytes("ab!")));
  CHECK(run("t.void", {}).value.is_null());
}

TEST_CASE("exceptions become failures") {
  auto o = run("t.throw", {});
  CHECK(o.kind == Outcome::Kind::kFailure);
  CHECK(o.error_type == "std::out_of_range");
  CHECK(o.error_message == "nope");
  CHECK(o.traceback.find("std::out_of_range: nope") != std::string::npos);
  auto t = run("t.taskerror", {});
  CHECK(t.error_type == "ValueError");
  CHECK(t.error_message == "bad value");
}

TEST_CASE("retry") {
  auto o = run("t.retry", {}, {}, 0);
  CHECK(o.kind == Outcome::Kind::kRetry);
  CHECK(o.retry_countdown == doctest::Approx(1.5));
  CHECK(run("t.retry", {}, {}, 2).value == Value(2));
}

MB_TASK("t.always_retry", [] { throw Retry{0.1, 1, "always"}; });

TEST_CASE("retry past max_retries fails") {
  CHECK(run("t.always_retry", {}, {}, 0).kind == Outcome::Kind::kRetry);
  auto o = run("t.always_retry", {}, {}, 1);
  CHECK(o.kind == Outcome::Kind::kFailure);
  CHECK(o.error_type == "MaxRetriesExceededError");
}

TEST_CASE("request and soft time limit") {
  CHECK(run("t.request", {7}).value == Value("id-1:7:t.request"));
  const TaskDef* def = registry().find("t.soft");
  List args;
  Map kwargs;
  Request req;
  req.name = "t.soft";
  req.soft_deadline = monotonic_now() - 1;
  auto o = def->run(Call{args, kwargs, req});
  CHECK(o.kind == Outcome::Kind::kFailure);
  CHECK(o.error_type == "SoftTimeLimitExceeded");
  req.soft_deadline = monotonic_now() + 100;
  CHECK(def->run(Call{args, kwargs, req}).value == Value(true));
}

TEST_CASE("library entry point") {
  const TaskLibrary* lib = mb_task_library_v1();
  CHECK(lib->abi_version == kSdkAbiVersion);
  CHECK(lib->registry->find("t.add") != nullptr);
  CHECK(lib->registry->find("nope") == nullptr);
}
