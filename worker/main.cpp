// main.cpp: miniworker: flags -> WorkerOptions -> registry, pool, Worker; signals.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <asio.hpp>
#include <cstdlib>
#include <memory>
#include <thread>

#include "worker/options.hpp"
#include "worker/prefork_pool.hpp"
#include "worker/registry.hpp"
#include "worker/thread_pool.hpp"
#include "worker/worker.hpp"

namespace {

std::vector<std::string> split_commas(const std::vector<std::string>& in) {
  std::vector<std::string> out;
  for (const auto& s : in) {
    std::size_t start = 0;
    while (start <= s.size()) {
      auto end = s.find(',', start);
      if (end == std::string::npos) end = s.size();
      if (end > start) out.push_back(s.substr(start, end - start));
      start = end + 1;
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace mb::worker;
  WorkerOptions o;
  std::string pool = "prefork";
  std::string delay_mode = "auto";
  std::vector<std::string> queues;
  CLI::App app{"miniworker: runs C++ tasks from shared libraries, fed over AMQP 0-9-1"};
  app.add_option("-b,--broker", o.broker_url, "broker URL")->capture_default_str();
  app.add_option("--tasks", o.task_libraries, "task library (.so); repeatable")->required();
  app.add_option("-c,--concurrency", o.concurrency, "child processes or threads (default: cores)");
  app.add_option("-P,--pool", pool, "prefork or threads")->check(CLI::IsMember({"prefork", "threads"}))->capture_default_str();
  app.add_option("-Q,--queues", queues, "queues to consume, comma-separated (default: celery)");
  app.add_option("--prefetch-multiplier", o.prefetch_multiplier, "prefetch = concurrency x this (0: unlimited)")
      ->capture_default_str();
  app.add_option("--prefetch-budget", o.prefetch_budget,
                 "seconds of work, at the measured rate, the prefetch window may grow to hold past concurrency x "
                 "multiplier (0: it does not grow)")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            char* end = nullptr;
            const double v = std::strtod(text.c_str(), &end);
            // Written so that NaN fails too (CLI::Range lets it through).
            if (end == text.c_str() || *end != '\0' || !(v >= 0 && v <= kMaxPrefetchBudget))
              return fmt::format("{} is not a number of seconds from 0 to {}", text, kMaxPrefetchBudget);
            return {};
          },
          "SECONDS"));
  app.add_option("--time-limit", o.time_limit, "hard time limit in seconds");
  app.add_option("--max-abandoned-threads", o.max_abandoned_threads,
                 "threads pool: threads left stuck past the hard time limit before the worker exits (code 70) "
                 "for a supervisor to restart it (default: concurrency)");
  app.add_option("--soft-time-limit", o.soft_time_limit, "soft time limit in seconds");
  app.add_option("--max-tasks-per-child", o.max_tasks_per_child, "replace a child after this many tasks");
  app.add_option("-n,--hostname", o.hostname, "node name (default: miniworker@<host>)");
  app.add_option("--delay-mode", delay_mode,
                 "where tasks due later wait: auto (the broker's x-delayed-message exchange if it has one), "
                 "broker, worker (unacked until due)")
      ->check(CLI::IsMember({"auto", "broker", "worker"}))
      ->capture_default_str();
  app.add_flag("--ack-early", o.ack_early, "acknowledge on receipt instead of after the result");
  app.add_flag("-E,--task-events", o.task_events, "send task events (task-received, ...) to celeryev, as celery worker -E");
  app.add_option("--heartbeat-interval", o.heartbeat_interval, "seconds between worker-heartbeat events, 0: none")
      ->capture_default_str();
  app.add_option("-l,--loglevel", o.loglevel, "trace, debug, info, warning, error, critical")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  spdlog::set_level(spdlog::level::from_str(o.loglevel == "warning" ? "warn" : o.loglevel));
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
  if (!queues.empty()) o.queues = split_commas(queues);
  o.pool = pool == "threads" ? PoolKind::kThreads : PoolKind::kPrefork;
  o.delay_mode = mb::client::parse_delay_mode(delay_mode);
  if (o.concurrency == 0) o.concurrency = std::max(1u, std::thread::hardware_concurrency());
  if (o.hostname.empty()) {
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    o.hostname = std::string("miniworker@") + host;
  }
  signal(SIGPIPE, SIG_IGN);

  TaskRegistry registry;
  try {
    for (const auto& lib : o.task_libraries) registry.load(lib);
    mb::client::parse_broker_url(o.broker_url);
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 2;
  }
  spdlog::info("tasks: {}", fmt::join(registry.names(), ", "));

  asio::io_context io(1);
  std::unique_ptr<Pool> p;
  if (o.pool == PoolKind::kPrefork)
    p = std::make_unique<PreforkPool>(io, registry, PreforkOptions{o.concurrency, o.max_tasks_per_child, o.hostname});
  else
    p = std::make_unique<ThreadPool>(io, registry, ThreadPoolOptions{o.concurrency, o.max_abandoned_threads, o.hostname});
  Worker worker(io, o, registry, *p);

  asio::signal_set signals(io, SIGINT, SIGTERM);
  int received = 0;
  std::function<void(std::error_code, int)> on_signal = [&](std::error_code ec, int sig) {
    if (ec) return;
    if (++received == 1) {
      spdlog::info("signal {}: warm shutdown (send again to quit at once)", sig);
      worker.shutdown_gracefully();
      signals.async_wait(on_signal);
    } else {
      worker.shutdown_now();
    }
  };
  signals.async_wait(on_signal);

  worker.start();
  io.run();
  return worker.exit_code();
}
