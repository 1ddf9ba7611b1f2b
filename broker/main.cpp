// minibroker: flags -> Options -> Broker::run, or `minibroker ctl ...` (ctl.hpp).
// Nothing else lives here.
#include <spdlog/spdlog.h>

#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <cstdio>

namespace {

// Raises the soft descriptor limit to the hard one: every connection is a descriptor.
void raise_fd_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  const rlim_t before = lim.rlim_cur;
  lim.rlim_cur = lim.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &lim) != 0) lim.rlim_cur = before;
  spdlog::info("file descriptors: soft limit {} (was {}), hard limit {}", lim.rlim_cur, before, lim.rlim_max);
}

}  // namespace

#include "broker/broker.hpp"
#include "broker/ctl.hpp"
#include "broker/mgmt_ctl.hpp"
#include "broker/http/routes.hpp"
#include "broker/http/server.hpp"

int main(int argc, char** argv) {
  // `ctl list-queues` and friends go to the running broker over HTTP; the
  // user, vhost and permission commands are parsed below (mb::broker::ctl).
  if (argc > 2 && std::string_view(argv[1]) == "ctl" && mb::ctl::is_http_command(argc - 1, argv + 1))
    return mb::ctl::run(argc - 1, argv + 1);
  mb::broker::Options o;
  CLI::App app{"minibroker: a self-contained AMQP 0-9-1 broker"};
  app.add_option("--port", o.port, "AMQP port (0 picks a free one)")->capture_default_str();
  app.add_option("--http-port", o.http_port, "management HTTP API port (0 turns it off)")->capture_default_str();
  app.add_option("--bind", o.bind, "address to listen on")->capture_default_str();
  app.add_option("--data-dir", o.data_dir, "where durable state is kept")->capture_default_str();
  app.add_option("--loglevel", o.loglevel, "trace, debug, info, warn, error")->capture_default_str();
  app.add_option("--heartbeat", o.heartbeat, "heartbeat interval offered to clients, seconds")->capture_default_str();
  app.add_option("--frame-max", o.frame_max, "largest frame accepted, bytes")->capture_default_str();
  app.add_option("--channel-max", o.channel_max, "channels per connection")->capture_default_str();
  app.add_option("--max-message-size", o.max_message_size, "largest message body, bytes (at most 512 MiB, as RabbitMQ)")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{512} << 20))
      ->capture_default_str();
  app.add_option("--queue-memory-messages", o.queue_memory_messages,
                 "ready messages a durable queue keeps in memory (the rest stays on disk)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--queue-memory-bytes", o.queue_memory_bytes, "body bytes a durable queue keeps in memory")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--tls-port", o.tls_port, "AMQPS port, used when --tls-cert is set (0 picks a free one)")
      ->capture_default_str();
  app.add_option("--tls-cert", o.tls_cert, "PEM certificate chain for AMQPS");
  app.add_option("--tls-key", o.tls_key, "PEM private key for AMQPS");
  app.add_option("--tls-ca", o.tls_ca, "PEM CA bundle: AMQPS clients must present a certificate it signed");
  app.add_option("--http-tls-port", o.http_tls_port,
                 "management HTTP API over TLS (HTTPS) with --tls-cert and --tls-key (0 turns it off)")
      ->capture_default_str();
  app.add_option("--max-connections", o.max_connections, "open connections at once (0: no limit)")
      ->capture_default_str();
  app.add_option("--max-consumers-per-channel", o.max_consumers_per_channel, "consumers per channel (0: no limit)")
      ->capture_default_str();
  app.add_option("--max-queues", o.max_queues, "queues per vhost (0: no limit)")->capture_default_str();
  app.add_option("--vm-memory-high-watermark-bytes", o.memory_high_watermark,
                 "block publishers while the broker has more bytes allocated (0: no memory alarm)")
      ->capture_default_str();
  app.add_option("--disk-free-limit", o.disk_free_limit,
                 "block publishers while the data directory's disk has fewer bytes free (0: no disk alarm)")
      ->capture_default_str();
  app.add_option("--task-history", o.task_history,
                 "tasks the broker remembers for /api/tasks and the dashboard (0: no task tracking)")
      ->capture_default_str();
  app.add_option("--store-write-behind-ms", o.store_write_behind_ms,
                 "persistent messages without a publisher confirm, and acks, are written and synced within this "
                 "many ms (a message acked sooner is never written); confirmed ones before their confirm (0: at once)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  mb::broker::ctl::Ctl ctl(app);
  CLI11_PARSE(app, argc, argv);
  if (ctl.selected()) return ctl.run();
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    std::fprintf(stderr, "minibroker: --tls-cert and --tls-key go together\n");
    return 2;
  }
  if (o.http_tls_port != 0 && o.tls_cert.empty()) {
    std::fprintf(stderr, "minibroker: --http-tls-port needs --tls-cert and --tls-key\n");
    return 2;
  }

  spdlog::set_level(spdlog::level::from_str(o.loglevel));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e [%^%l%$] %v");
  raise_fd_limit();
  try {
    mb::broker::Broker broker(o);
    if (std::string err = broker.open_store(o.data_dir); !err.empty()) {
      spdlog::error("minibroker: cannot open data directory {}: {}", o.data_dir, err);
      return 1;
    }
    broker.start();
    std::unique_ptr<mb::http::HttpServer> http;  // stopped before the broker goes away
    std::vector<mb::http::HttpListen> listens;
    if (o.http_port != 0) listens.push_back({o.http_port, {}, {}});
    if (o.http_tls_port != 0) listens.push_back({o.http_tls_port, o.tls_cert, o.tls_key});
    if (!listens.empty()) {
      try {
        http = std::make_unique<mb::http::HttpServer>(broker, o.bind, std::move(listens));
        mb::http::register_routes(*http, broker);
        http->start();
      } catch (const std::exception& e) {
        // AMQP clients matter more than the dashboard: keep serving them.
        spdlog::error("{}: management HTTP API disabled", e.what());
        http.reset();
      }
    }
    broker.run();
    if (http) http->stop();
  } catch (const std::exception& e) {
    spdlog::error("minibroker: {}", e.what());
    return 1;
  }
  spdlog::info("minibroker stopped");
  return 0;
}
