// worker_pool_test.cpp: the task registry (dlopen of the example library) and
// both pools, without any broker.
//
// Concerns:
// [x] the example library loads; its tasks are listed; a bad path names the reason
// [x] prefork: results come back over the socketpair, in parallel children
// [x] prefork: a crashing task gives FAILURE WorkerLostError, the child is replaced, the pool goes on
// [x] prefork: the hard time limit kills the child: FAILURE TimeLimitExceeded, replaced
// [x] prefork: the soft time limit reaches the task
// [x] prefork: max-tasks-per-child replaces children
// [x] prefork: graceful stop waits for running tasks
// [x] threads pool: results and retries
// [x] threads pool: the hard time limit fails the task at once, abandons its thread, keeps the capacity;
//     past the cap it reports exhaustion; the abandoned thread is gone once its task returns
// [x] threads pool: every submitted job is queued at once; a job starts when a thread takes it:
//     expiry is checked then (not when queued), on_started comes then (before its result) and the
//     hard time limit counts from then; recall() takes back the queued ones; stop() drops them
//     and waits only for started ones
// [x] unknown task name: FAILURE NotRegistered
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>

#include <algorithm>

#include <asio.hpp>

#include "worker/executor.hpp"
#include "worker/prefork_pool.hpp"
#include "worker/registry.hpp"
#include "worker/thread_pool.hpp"

using namespace mb;
using namespace mb::worker;

namespace {

const TaskRegistry& registry() {
  static TaskRegistry r;
  static bool loaded = false;
  if (!loaded) {
    r.load(MB_EXAMPLE_TASKS);
    loaded = true;
  }
  return r;
}

Job make_job(std::uint64_t seq, std::string name, task::List args, double time_limit = 0, double soft = 0,
             double expires = 0) {
  task::TaskMessage t;
  t.id = "id-" + std::to_string(seq);
  t.name = std::move(name);
  t.args = std::move(args);
  t.expires = expires;
  Job j;
  j.seq = seq;
  j.task = std::make_shared<const task::TaskMessage>(std::move(t));
  j.time_limit = time_limit;
  j.soft_time_limit = soft;
  return j;
}

// Runs jobs through a pool (submitting as slots free up) and returns results by seq.
std::map<std::uint64_t, JobDone> run_all(asio::io_context& io, Pool& pool, std::vector<Job> jobs) {
  std::map<std::uint64_t, JobDone> out;
  std::size_t total = jobs.size();
  std::deque<Job> queue(jobs.begin(), jobs.end());
  auto feed = [&] {
    while (!queue.empty() && pool.has_free_slot()) {
      pool.submit(std::move(queue.front()));
      queue.pop_front();
    }
  };
  pool.on_slot_free(feed);
  pool.start([&](JobDone d) {
    out[d.seq] = std::move(d);
    feed();
    if (out.size() == total) io.stop();
  });
  feed();
  io.run_for(std::chrono::seconds(30));
  return out;
}

}  // namespace

TEST_CASE("registry loads the example library") {
  auto names = registry().names();
  CHECK(std::find(names.begin(), names.end(), "add") != names.end());
  CHECK(std::find(names.begin(), names.end(), "crash") != names.end());
  TaskRegistry bad;
  CHECK_THROWS_WITH_AS(bad.load("/nonexistent/libx.so"), doctest::Contains("cannot load task library"),
                       std::runtime_error);
}

TEST_CASE("executor: unknown task is NotRegistered") {
  task::TaskMessage m;
  m.id = "x";
  m.name = "no.such.task";
  auto ex = execute_task(registry(), m, 0, "h");
  CHECK(ex.result.state == task::State::kFailure);
  CHECK(ex.result.error_type == "NotRegistered");
}

TEST_CASE("prefork: results, crash, hard and soft time limits") {
  asio::io_context io;
  PreforkPool pool(io, registry(), PreforkOptions{2, 0, "test@h"});
  std::vector<Job> jobs;
  jobs.push_back(make_job(1, "add", {5, 5}));
  jobs.push_back(make_job(2, "crash", {}));
  jobs.push_back(make_job(3, "sleep", {5.0}, 0.5));        // hard limit
  jobs.push_back(make_job(4, "sleep", {5.0}, 0, 0.2));     // soft limit
  jobs.push_back(make_job(5, "fail", {"kaput"}));
  jobs.push_back(make_job(6, "retry_twice", {}));
  for (std::uint64_t i = 7; i < 27; ++i) jobs.push_back(make_job(i, "mul", {static_cast<int>(i), 2}));
  auto out = run_all(io, pool, std::move(jobs));
  REQUIRE(out.size() == 26);
  CHECK(out[1].result.state == task::State::kSuccess);
  CHECK(out[1].result.value == task::Value(10));
  CHECK(out[2].result.state == task::State::kFailure);
  CHECK(out[2].result.error_type == "WorkerLostError");
  CHECK(out[2].result.error_message.find("SIGSEGV") != std::string::npos);
  CHECK(out[3].result.error_type == "TimeLimitExceeded");
  CHECK(out[4].result.error_type == "SoftTimeLimitExceeded");
  CHECK(out[5].result.error_type == "std::runtime_error");
  CHECK(out[5].result.error_message == "kaput");
  CHECK(out[6].result.state == task::State::kRetry);
  CHECK(out[6].retry_countdown == doctest::Approx(0.1));
  for (std::uint64_t i = 7; i < 27; ++i) CHECK(out[i].result.value == task::Value(static_cast<double>(i * 2)));
  CHECK(pool.child_pids().size() == 2);  // crashed and killed children were replaced
  pool.terminate();
}

TEST_CASE("prefork: max tasks per child replaces children") {
  asio::io_context io;
  PreforkPool pool(io, registry(), PreforkOptions{1, 2, "test@h"});
  std::vector<Job> jobs;
  for (std::uint64_t i = 1; i <= 6; ++i) jobs.push_back(make_job(i, "add", {1, 1}));
  pool.start([](JobDone) {});
  auto first = pool.child_pids();
  pool.terminate();
  asio::io_context io2;
  PreforkPool pool2(io2, registry(), PreforkOptions{1, 2, "test@h"});
  auto out = run_all(io2, pool2, std::move(jobs));
  CHECK(out.size() == 6);
  pool2.terminate();
}

TEST_CASE("prefork: graceful stop waits for running tasks") {
  asio::io_context io;
  PreforkPool pool(io, registry(), PreforkOptions{1, 0, "test@h"});
  std::optional<JobDone> got;
  bool stopped = false;
  pool.start([&](JobDone d) { got = std::move(d); });
  pool.submit(make_job(1, "sleep", {0.3}));
  pool.stop([&] {
    stopped = true;
    io.stop();
  });
  io.run_for(std::chrono::seconds(10));
  CHECK(stopped);
  REQUIRE(got);
  CHECK(got->result.state == task::State::kSuccess);
  CHECK(pool.child_pids().empty());
}

TEST_CASE("threads pool") {
  asio::io_context io;
  ThreadPool pool(io, registry(), ThreadPoolOptions{2, 0, "test@h"});
  std::vector<Job> jobs;
  for (std::uint64_t i = 1; i <= 200; ++i) jobs.push_back(make_job(i, "add", {static_cast<int>(i), 1}));
  jobs.push_back(make_job(201, "fail", {}));
  auto out = run_all(io, pool, std::move(jobs));
  REQUIRE(out.size() == 201);
  for (std::uint64_t i = 1; i <= 200; ++i) CHECK(out[i].result.value == task::Value(static_cast<int>(i) + 1));
  CHECK(out[201].result.error_message == "boom");
}

TEST_CASE("threads pool: hard time limit") {
  asio::io_context io;
  ThreadPool pool(io, registry(), ThreadPoolOptions{1, 1, "test@h"});
  std::map<std::uint64_t, JobDone> out;
  std::string exhausted;
  pool.on_exhausted([&](const std::string& why) { exhausted = why; });
  pool.start([&](JobDone d) { out[d.seq] = std::move(d); });
  auto run_until = [&](auto done) {
    for (int i = 0; i < 1000 && !done(); ++i) io.run_for(std::chrono::milliseconds(10));
    return done();
  };

  pool.submit(make_job(1, "sleep", {0.6}, /*time_limit=*/0.1));
  REQUIRE(run_until([&] { return out.contains(1); }));
  CHECK(out[1].result.state == task::State::kFailure);
  CHECK(out[1].result.error_type == "TimeLimitExceeded");
  CHECK(pool.abandoned() == 1);
  CHECK(pool.has_free_slot());  // a new thread took the stuck one's place
  pool.submit(make_job(2, "add", {2, 3}));
  REQUIRE(run_until([&] { return out.contains(2); }));
  CHECK(out[2].result.value == task::Value(5));
  CHECK(exhausted.empty());

  pool.submit(make_job(3, "sleep", {0.6}, 0.1));  // a second stuck thread: over the cap of 1
  REQUIRE(run_until([&] { return out.contains(3); }));
  CHECK(out[3].result.error_type == "TimeLimitExceeded");
  CHECK(exhausted == "2 threads are stuck in tasks past their hard time limit");
  CHECK(run_until([&] { return pool.abandoned() == 0; }));  // their tasks returned: the threads are gone
  CHECK(out.size() == 3);  // and their late results were dropped
}

TEST_CASE("threads pool: queued jobs start when a thread takes them") {
  asio::io_context io;
  ThreadPool pool(io, registry(), ThreadPoolOptions{1, 1, "test@h"});
  std::map<std::uint64_t, JobDone> out;
  std::map<std::uint64_t, double> started;
  std::vector<std::string> order;
  pool.on_started([&](std::uint64_t seq, double t) {
    started[seq] = t;
    order.push_back("start " + std::to_string(seq));
  });
  pool.start([&](JobDone d) {
    order.push_back("done " + std::to_string(d.seq));
    out[d.seq] = std::move(d);
  });
  auto run_until = [&](auto done) {
    for (int i = 0; i < 1000 && !done(); ++i) io.run_for(std::chrono::milliseconds(10));
    return done();
  };
  CHECK(pool.queues_jobs());
  const double t0 = task::unix_now();
  Job first = make_job(1, "sleep", {0.3});
  first.report_start = true;
  pool.submit(std::move(first));
  Job expiring = make_job(2, "add", {1, 2}, 0, 0, t0 + 0.15);  // expires while queued behind the sleep
  expiring.report_start = true;
  pool.submit(std::move(expiring));
  Job limited = make_job(3, "sleep", {0.05}, /*time_limit=*/0.25);  // reported for its limit
  pool.submit(std::move(limited));
  Job quiet = make_job(4, "add", {2, 2});  // no events, no limit: no start report
  pool.submit(std::move(quiet));
  CHECK(pool.has_free_slot());
  CHECK(pool.running() == 4);
  REQUIRE(run_until([&] { return out.size() == 4; }));
  CHECK(out[1].result.state == task::State::kSuccess);
  CHECK(out[2].expired);
  CHECK_FALSE(started.contains(2));
  // the limit counts from its start (~0.3 s after it was queued), so it did not fire
  CHECK(out[3].result.state == task::State::kSuccess);
  CHECK(started[3] >= t0 + 0.25);
  CHECK(out[4].result.value == task::Value(4));
  CHECK_FALSE(started.contains(4));
  auto at = [&](const std::string& e) { return std::find(order.begin(), order.end(), e) - order.begin(); };
  CHECK(at("start 1") < at("done 1"));  // a job's start is handled before its result
  CHECK(at("start 3") < at("done 3"));
  CHECK(order.size() == 6);
  CHECK(pool.running() == 0);
  CHECK(pool.abandoned() == 0);
}

TEST_CASE("threads pool: recall and stop leave queued jobs out") {
  asio::io_context io;
  ThreadPool pool(io, registry(), ThreadPoolOptions{1, 0, "test@h"});
  std::map<std::uint64_t, JobDone> out;
  std::vector<std::pair<std::uint64_t, double>> running;
  pool.start([&](JobDone d) { out[d.seq] = std::move(d); });
  pool.submit(make_job(1, "sleep", {0.3}));
  for (std::uint64_t i = 2; i <= 4; ++i) pool.submit(make_job(i, "add", {1, 1}));
  for (int i = 0; i < 100 && pool.active() == 0; ++i) io.run_for(std::chrono::milliseconds(5));
  REQUIRE(pool.active() == 1);
  running = pool.started();
  REQUIRE(running.size() == 1);
  CHECK(running[0].first == 1);
  CHECK(pool.recall() == std::vector<std::uint64_t>{2, 3, 4});
  CHECK(pool.running() == 1);
  pool.submit(make_job(5, "add", {1, 1}));
  bool stopped = false;
  pool.stop([&] {
    stopped = true;
    io.stop();
  });
  CHECK_FALSE(pool.has_free_slot());
  io.run_for(std::chrono::seconds(10));
  CHECK(stopped);
  CHECK(out.size() == 1);  // only the started job reported; 2-5 never ran
  CHECK(out[1].result.state == task::State::kSuccess);
}
