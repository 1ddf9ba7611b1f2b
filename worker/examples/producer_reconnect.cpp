// producer_reconnect: the producer library across a broker restart.
//
//   producer_reconnect URL QUEUE N
//
// Sends N add calls and checks their results; sends sleep(1.5) and leaves it
// in flight; prints "restart now" and waits for a line on stdin (the test
// restarts the broker meanwhile); then sends N more add calls at once, while
// the producer may still be reconnecting, and checks them. The call in flight
// across the restart either completes or times out with an error that says
// the connection was lost. Prints one line per step; exits 0 only if both
// rounds of calls are right. Run by tests/e2e_worker/test_producer_library.py.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "common/client/producer.hpp"

namespace {

using namespace std::chrono_literals;

constexpr auto kResultTimeout = 60s;  // the worker reconnects with backoff too
constexpr auto kInFlightTimeout = 20s;

// Sends n add(i, 1) calls, then waits for each; returns how many were right.
int round_of_adds(mb::client::Producer& producer, int n) {
  std::vector<mb::client::AsyncResult> pending;
  for (int i = 0; i < n; ++i) pending.push_back(producer.delay("add", {i, 1}));
  int right = 0;
  for (int i = 0; i < n; ++i) {
    try {
      auto r = pending[i].get(kResultTimeout);
      right += r.state == mb::task::State::kSuccess && r.value.is_int() && r.value.as_int() == i + 1;
    } catch (const mb::client::TimeoutError& e) {
      std::printf("add(%d, 1): %s\n", i, e.what());
    }
  }
  return right;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: producer_reconnect URL QUEUE N\n");
    return 2;
  }
  mb::client::ProducerOptions options;
  options.url = argv[1];
  options.queue = argv[2];
  const int n = std::stoi(argv[3]);
  try {
    mb::client::Producer producer(options);
    const int before = round_of_adds(producer, n);
    std::printf("%s before the restart: %d of %d right\n", before == n ? "ok" : "FAILED", before, n);
    auto in_flight = producer.delay("sleep", {1.5});
    std::printf("restart now\n");
    std::fflush(stdout);
    std::string line;
    std::getline(std::cin, line);

    const int after = round_of_adds(producer, n);
    std::printf("%s after the restart: %d of %d right\n", after == n ? "ok" : "FAILED", after, n);
    try {
      auto r = in_flight.get(kInFlightTimeout);
      std::printf("in flight: %s\n", std::string(mb::task::state_name(r.state)).c_str());
    } catch (const mb::client::TimeoutError& e) {
      std::printf("in flight: %s\n", e.what());
    }
    return before == n && after == n ? 0 : 1;
  } catch (const std::exception& e) {
    std::printf("FAILED: %s\n", e.what());
    return 1;
  }
}
