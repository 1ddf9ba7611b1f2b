// producer_main.cpp: miniproducer, the command over the producer library
// (common/client/producer.hpp). `call TASK ARG...` prints the task id, or with
// --wait the result as JSON (exit 0), the error (exit 1) or a timeout (exit 2).
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <algorithm>
#include <iostream>

#include "common/client/producer.hpp"
#include "common/task/celery.hpp"

namespace {

constexpr double kDefaultTimeout = 30.0;  // seconds --wait waits by default

// CLI11 reads an argument like [1,2] as a list of option values; such
// arguments are shielded with this prefix before parsing and unshielded here.
constexpr char kShield = '\x01';

mb::task::Value parse_arg(std::string text) {
  if (!text.empty() && text[0] == kShield) text.erase(0, 1);
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return mb::task::Value(text);  // a bare word is a string
  return mb::task::value_from_json(j);
}

double parse_time(const std::string& text) {
  char* end = nullptr;
  double t = std::strtod(text.c_str(), &end);
  if (end && *end == '\0' && !text.empty()) return t;
  return mb::task::parse_iso8601(text);
}

std::string describe_error(const mb::task::TaskResult& r) {
  std::string s = std::string(mb::task::state_name(r.state)) + ": " + r.error_type;
  if (!r.error_message.empty()) s += ": " + r.error_message;
  return s;
}

void draw_progress(std::size_t done, std::size_t total, double elapsed) {
  constexpr int kWidth = 40;
  int filled = total ? static_cast<int>(kWidth * done / total) : kWidth;
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.resize(kWidth, ' ');
  double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0;
  std::fprintf(stderr, "\r[%s] %zu/%zu  %.0f tasks/s ", bar.c_str(), done, total, rate);
  std::fflush(stderr);
}

}  // namespace

int main(int argc, char** argv) {
  std::string url = std::string(mb::client::kDefaultBrokerUrl);
  std::string task_name, format = "capnp", queue = std::string(mb::client::kDefaultQueue), eta_text;
  std::string delay_mode = "auto";
  std::vector<std::string> args, kwargs;
  mb::client::CallOptions co;
  bool wait = false;
  double timeout = kDefaultTimeout;
  std::size_t repeat = 0;
  bool no_results = false;

  CLI::App app{"miniproducer: send tasks to miniworker (or Celery) workers"};
  app.add_option("-b,--broker", url, "broker URL")->capture_default_str();
  app.add_option("--format", format, "capnp or celery (protocol v2 JSON)")
      ->check(CLI::IsMember({"capnp", "celery"}))
      ->capture_default_str();
  app.require_subcommand(1);
  auto* call = app.add_subcommand("call", "send one task (or --repeat N)");
  call->add_option("task", task_name, "task name")->required();
  call->add_option("args", args, "arguments, each a JSON value (5, 2.5, '\"x\"', '[1,2]', '{\"a\":1}')");
  call->add_option("-k,--kwarg", kwargs, "keyword argument K=V (V as JSON); repeatable");
  call->add_option("--countdown", co.countdown, "run no sooner than S seconds from now");
  call->add_option("--eta", eta_text, "run no sooner than TIME (ISO-8601 or unix seconds)");
  call->add_option("--delay-mode", delay_mode,
                   "where a countdown or eta waits: auto (the broker's x-delayed-message exchange if it has one), "
                   "broker, worker (sent at once with its eta; the worker holds it)")
      ->check(CLI::IsMember({"auto", "broker", "worker"}))
      ->capture_default_str();
  call->add_option("--expires", co.expires, "revoke if not started within S seconds");
  call->add_option("-Q,--queue", queue, "queue")->capture_default_str();
  call->add_option("--priority", co.priority, "message priority 0-255");
  call->add_option("--soft-time-limit", co.soft_time_limit, "soft time limit for this task (s)");
  call->add_option("--time-limit", co.time_limit, "hard time limit for this task (s)");
  call->add_flag("-w,--wait", wait, "wait for the result and print it");
  call->add_option("-t,--timeout", timeout, "seconds to wait for results")->capture_default_str();
  call->add_option("-n,--repeat", repeat, "send N tasks and wait for all, with a progress bar");
  call->add_flag("--no-results", no_results, "with --repeat: print the ids, do not wait for results");
  std::vector<std::string> argv_copy(argv + 1, argv + argc);
  for (auto& a : argv_copy)
    if (!a.empty() && a[0] == '[') a.insert(a.begin(), kShield);
  std::reverse(argv_copy.begin(), argv_copy.end());  // CLI11 takes a reversed vector
  try {
    app.parse(argv_copy);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  spdlog::set_level(spdlog::level::warn);

  mb::task::List arg_values;
  for (const auto& a : args) arg_values.push_back(parse_arg(a));
  mb::task::Map kwarg_values;
  for (const auto& kv : kwargs) {
    auto eq = kv.find('=');
    if (eq == std::string::npos) {
      std::fprintf(stderr, "--kwarg needs K=V, got '%s'\n", kv.c_str());
      return 2;
    }
    kwarg_values[kv.substr(0, eq)] = parse_arg(kv.substr(eq + 1));
  }
  try {
    if (!eta_text.empty()) co.eta = parse_time(eta_text);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "--eta: %s\n", e.what());
    return 2;
  }
  co.queue = queue;

  try {
    mb::client::ProducerOptions po;
    po.url = url;
    po.queue = queue;
    po.format = format == "celery" ? mb::task::WireFormat::kCelery : mb::task::WireFormat::kCapnp;
    po.want_results = wait || (repeat > 0 && !no_results);
    po.delay_mode = mb::client::parse_delay_mode(delay_mode);
    mb::client::Producer producer(po);

    if (repeat == 0) {
      auto r = producer.apply_async(task_name, arg_values, kwarg_values, co);
      if (!wait) {
        std::printf("%s\n", r.id().c_str());
        return 0;
      }
      auto res = r.wait(std::chrono::duration<double>(timeout));
      if (!res) {
        std::fprintf(stderr, "timeout: no result for %s within %gs\n", r.id().c_str(), timeout);
        return 2;
      }
      if (res->state == mb::task::State::kSuccess) {
        std::printf("%s\n", mb::task::value_to_json(res->value).dump().c_str());
        return 0;
      }
      std::fprintf(stderr, "%s\n", describe_error(*res).c_str());
      return 1;
    }

    if (no_results) {
      for (std::size_t i = 0; i < repeat; ++i)
        std::printf("%s\n", producer.apply_async(task_name, arg_values, kwarg_values, co).id().c_str());
      producer.close();
      return 0;
    }
    auto start = std::chrono::steady_clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
    std::vector<mb::client::AsyncResult> results;
    results.reserve(repeat);
    for (std::size_t i = 0; i < repeat; ++i) results.push_back(producer.apply_async(task_name, arg_values, kwarg_values, co));
    std::size_t ok = 0, failed = 0, done = 0;
    auto deadline = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(timeout));
    auto last_draw = std::chrono::steady_clock::time_point{};
    bool tty = isatty(2);
    for (auto& r : results) {
      for (;;) {
        auto now = std::chrono::steady_clock::now();
        if (now >= deadline) break;
        auto res = r.wait(std::chrono::milliseconds(100));
        if (tty && now - last_draw > std::chrono::milliseconds(100)) {
          draw_progress(done, repeat, elapsed());
          last_draw = now;
        }
        if (!res) continue;
        ++done;
        if (res->state == mb::task::State::kSuccess)
          ++ok;
        else
          ++failed;
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) break;
    }
    double secs = elapsed();
    draw_progress(done, repeat, secs);
    std::fprintf(stderr, "\n");
    std::printf("%zu tasks: %zu succeeded, %zu failed, %zu timed out in %.3fs (%.0f tasks/s)\n", repeat, ok, failed,
                repeat - done, secs, static_cast<double>(done) / secs);
    if (done < repeat) return 2;
    return failed ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 3;
  }
}
