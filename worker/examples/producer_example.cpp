// producer_example: the producer library (common/client/producer.hpp) used the
// way an application uses it: send tasks, wait for their results.
//
//   producer_example [URL] [QUEUE]
//
// Runs against a worker serving worker/examples/tasks.cpp on QUEUE (default
// "celery") and prints one line per step; exits 0 only if every result is the
// one expected. tests/e2e_worker/test_producer_library.py runs it on both
// minibroker and RabbitMQ.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "common/client/producer.hpp"
#include "common/task/celery.hpp"

namespace {

using mb::task::State;
using namespace std::chrono_literals;

constexpr auto kResultTimeout = 30s;  // generous: CI machines are small and shared

int failures = 0;

void expect(bool ok, const char* what, const mb::task::TaskResult& r) {
  std::printf("%s %s: %s %s%s%s\n", ok ? "ok" : "FAILED", what, std::string(mb::task::state_name(r.state)).c_str(),
              r.state == State::kSuccess ? mb::task::value_to_json(r.value).dump().c_str() : r.error_type.c_str(),
              r.error_message.empty() ? "" : ": ", r.error_message.c_str());
  if (!ok) ++failures;
}

}  // namespace

int main(int argc, char** argv) {
  mb::client::ProducerOptions options;
  if (argc > 1) options.url = argv[1];
  if (argc > 2) options.queue = argv[2];

  try {
    mb::client::Producer producer(options);

    // delay: positional arguments, default options.
    auto sum = producer.delay("add", {5, 5}).get(kResultTimeout);
    expect(sum.state == State::kSuccess && sum.value.is_int() && sum.value.as_int() == 10, "add(5, 5) == 10", sum);

    // apply_async with a countdown: the result cannot come before it.
    mb::client::CallOptions later;
    later.countdown = 1.0;
    const auto sent = std::chrono::steady_clock::now();
    auto product = producer.apply_async("mul", {6, 7}, {}, later).get(kResultTimeout);
    const auto waited = std::chrono::steady_clock::now() - sent;
    expect(product.state == State::kSuccess && product.value.is_number() && product.value.as_double() == 42.0 && waited >= 1s,
           "mul(6, 7) == 42 after a 1 s countdown", product);

    // Many in flight at once, collected afterwards.
    std::vector<mb::client::AsyncResult> pending;
    for (int i = 0; i < 100; ++i) pending.push_back(producer.delay("add", {i, 1}));
    int right = 0;
    for (int i = 0; i < 100; ++i) {
      auto r = pending[i].get(kResultTimeout);
      right += r.state == State::kSuccess && r.value.is_int() && r.value.as_int() == i + 1;
    }
    std::printf("%s 100 concurrent add calls: %d right\n", right == 100 ? "ok" : "FAILED", right);
    if (right != 100) ++failures;

    // A task that throws: its type and message come back as a FAILURE.
    auto failed = producer.delay("fail", {"boom"}).get(kResultTimeout);
    expect(failed.state == State::kFailure && failed.error_message.find("boom") != std::string::npos,
           "fail(\"boom\") is a FAILURE carrying its message", failed);
  } catch (const std::exception& e) {
    std::printf("FAILED: %s\n", e.what());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
