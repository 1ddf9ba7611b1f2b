// examples/tasks.cpp: the example task library (libexample_tasks.so) used by
// ./scripts/run and the tests. One function per task, one line to register it.
#include <chrono>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <minibroker/task.hpp>

namespace {

std::int64_t add(std::int64_t x, std::int64_t y) { return x + y; }
double mul(double x, double y) { return x * y; }

// Sleeps `seconds`, checking the soft time limit every 10 ms; returns seconds.
double sleep_task(const mb::task::Request& req, double seconds) {
  auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < until) {
    req.check_soft_time_limit();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return seconds;
}

std::int64_t fail(const std::string& message) { throw std::runtime_error(message); }

// Asks to be retried until it has been retried twice, then returns the count.
std::int64_t retry_twice(const mb::task::Request& req, double countdown) {
  if (req.retries < 2) throw mb::task::Retry{countdown, 5, "try again " + std::to_string(req.retries + 1)};
  return req.retries;
}

// Dereferences a null pointer: kills the process that runs it.
int crash() {
  volatile int* p = nullptr;
  return *p;
}

std::map<std::string, mb::task::Value> request_info(const mb::task::Request& req) {
  return {{"id", req.id},           {"name", req.name},       {"retries", req.retries},
          {"eta", req.eta},         {"expires", req.expires}, {"hostname", req.hostname},
          {"root_id", req.root_id}, {"parent_id", req.parent_id}};
}

}  // namespace

MB_TASK("add", add, "x", "y");
MB_TASK("addTask.add", add, "x", "y");  // the Celery name of the seed's example
MB_TASK("mul", mul, "x", "y");
MB_TASK("noop", [] {});
MB_TASK("echo_int", [](std::int64_t v) { return v; }, "value");
MB_TASK("echo_double", [](double v) { return v; }, "value");
MB_TASK("echo_bool", [](bool v) { return v; }, "value");
MB_TASK("echo_string", [](std::string v) { return v; }, "value");
MB_TASK("echo_bytes", [](mb::task::Bytes v) { return v; }, "value");
MB_TASK("echo_list", [](std::vector<mb::task::Value> v) { return v; }, "value");
MB_TASK("echo_map", [](std::map<std::string, mb::task::Value> v) { return v; }, "value");
MB_TASK("echo", [](mb::task::Value v) { return v; }, "value");
MB_TASK("greet", [](std::string name, std::string greeting) { return greeting + ", " + name; }, "name",
        mb::task::arg("greeting", "hello"));
MB_TASK("sleep", sleep_task, "seconds");
MB_TASK("fail", fail, mb::task::arg("message", "boom"));
MB_TASK("retry_twice", retry_twice, mb::task::arg("countdown", 0.1));
MB_TASK("crash", crash);
MB_TASK("request_info", request_info);
