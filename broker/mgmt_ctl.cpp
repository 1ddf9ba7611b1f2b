// `minibroker ctl <command>` for a running broker: lists and queue commands
// through its management HTTP API (users, vhosts and permissions are in
// broker/ctl.*), the way `rabbitmqctl list_queues` is used:
//
//   minibroker ctl list-queues [column...]      default: name messages
//   minibroker ctl list-exchanges [column...]   default: name type
//   minibroker ctl list-bindings [column...]    default: source destination destination_type routing_key
//   minibroker ctl list-connections [column...] default: name user vhost state
//   minibroker ctl purge-queue Q | delete-queue Q [--if-unused] [--if-empty]
//   minibroker ctl status
//
// Columns are the API's JSON field names (dotted for nested ones, e.g.
// message_stats.publish_details.rate). Tables are tab-separated with a header
// line, like rabbitmqctl; --json prints the API's JSON instead.
#include "broker/mgmt_ctl.hpp"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "broker/http/transport.hpp"
#include "broker/options.hpp"

namespace mb::ctl {
namespace {

using json = nlohmann::json;

// sysexits.h codes, as rabbitmqctl uses them.
constexpr int kExitOk = 0;
constexpr int kExitApiError = 1;      // the broker refused (404, 400, ...)
constexpr int kExitUnavailable = 69;  // EX_UNAVAILABLE: no broker answering
constexpr int kExitNoPerm = 77;       // EX_NOPERM: login refused
// Long enough for a loaded broker (the API itself answers 503 after 5 s).
constexpr time_t kTimeoutSeconds = 30;

struct Settings : HttpSettings {
  std::string vhost = "/";
  bool json_output = false;
};

class Api {
 public:
  explicit Api(const Settings& s) : s_(s), client_(s) {}

  // Performs the request; on failure prints why and sets exit_code.
  std::optional<json> call(const std::string& method, const std::string& path) {
    std::optional<ApiClient::Reply> r = client_.request(method, path);
    if (!r) {
      std::cerr << "Error: cannot reach the management API at " << client_.base_url() << " (" << client_.error()
                << ")\n";
      exit_code = kExitUnavailable;
      return std::nullopt;
    }
    if (r->status == 401) {
      std::cerr << "Error: login refused for user '" << s_.user << "'\n";
      exit_code = kExitNoPerm;
      return std::nullopt;
    }
    if (r->status >= 300) {
      std::string reason = r->body.is_object() ? r->body.value("reason", r->body.dump()) : r->body.dump();
      std::cerr << "Error: " << method << " " << path << ": " << r->status << " " << reason << "\n";
      exit_code = kExitApiError;
      return std::nullopt;
    }
    return std::move(r->body);
  }

  int exit_code = kExitOk;

 private:
  const Settings& s_;
  ApiClient client_;
};

// A field by dotted path; null when absent.
json field(const json& row, const std::string& path) {
  const json* cur = &row;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = path.find('.', start);
    const std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!cur->is_object() || !cur->contains(key)) return nullptr;
    cur = &(*cur)[key];
    if (dot == std::string::npos) return *cur;
    start = dot + 1;
  }
}

std::string cell(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  return v.dump();
}

void print_table(const json& rows, const std::vector<std::string>& columns) {
  std::string line;
  for (std::size_t i = 0; i < columns.size(); ++i) line += (i ? "\t" : "") + columns[i];
  std::cout << line << "\n";
  for (const json& row : rows) {
    line.clear();
    for (std::size_t i = 0; i < columns.size(); ++i) line += (i ? "\t" : "") + cell(field(row, columns[i]));
    std::cout << line << "\n";
  }
}

int list(const Settings& s, const std::string& path, std::vector<std::string> columns,
         const std::vector<std::string>& defaults) {
  Api api(s);
  std::optional<json> rows = api.call("GET", path);
  if (!rows) return api.exit_code;
  if (s.json_output) {
    std::cout << rows->dump(2) << "\n";
    return kExitOk;
  }
  print_table(*rows, columns.empty() ? defaults : columns);
  return kExitOk;
}

int status(const Settings& s) {
  Api api(s);
  std::optional<json> o = api.call("GET", "/api/overview");
  if (!o) return api.exit_code;
  if (s.json_output) {
    std::cout << o->dump(2) << "\n";
    return kExitOk;
  }
  std::cout << "Status of node " << cell(field(*o, "node")) << " ...\n"
            << "product: " << cell(field(*o, "product_name")) << " " << cell(field(*o, "product_version"))
            << " (management API " << cell(field(*o, "management_version")) << ")\n";
  for (const json& l : field(*o, "listeners"))
    std::cout << "listener: " << cell(field(l, "protocol")) << " " << cell(field(l, "ip_address")) << ":"
              << cell(field(l, "port")) << "\n";
  std::cout << "listener: http " << s.host << ":" << s.port << "\n";
  for (const char* k : {"connections", "channels", "exchanges", "queues", "consumers"})
    std::cout << k << ": " << cell(field(*o, std::string("object_totals.") + k)) << "\n";
  for (const char* k : {"messages", "messages_ready", "messages_unacknowledged"})
    std::cout << k << ": " << cell(field(*o, std::string("queue_totals.") + k)) << "\n";
  for (const char* k : {"publish", "deliver_get", "ack"})
    std::cout << k << " rate: " << cell(field(*o, std::string("message_stats.") + k + "_details.rate")) << "/s\n";
  return kExitOk;
}

int queue_command(const Settings& s, const std::string& what, const std::string& queue, bool if_unused,
                  bool if_empty) {
  Api api(s);
  std::string path = "/api/queues/" + encode_segment(s.vhost) + "/" + encode_segment(queue);
  if (what == "purge") {
    if (!s.json_output) std::cout << "Purging queue '" << queue << "' in vhost '" << s.vhost << "' ...\n";
    path += "/contents";
  } else {
    if (!s.json_output) std::cout << "Deleting queue '" << queue << "' in vhost '" << s.vhost << "' ...\n";
    std::string query;
    if (if_unused) query += "if-unused=true";
    if (if_empty) query += std::string(query.empty() ? "" : "&") + "if-empty=true";
    if (!query.empty()) path += "?" + query;
  }
  if (!api.call("DELETE", path)) return api.exit_code;
  if (s.json_output) std::cout << json{{"queue", queue}, {"vhost", s.vhost}, {"result", "ok"}}.dump() << "\n";
  return kExitOk;
}

}  // namespace

ApiClient::ApiClient(const HttpSettings& s) : settings_(s) {}
ApiClient::~ApiClient() = default;

std::string ApiClient::base_url() const { return "http://" + settings_.host + ":" + std::to_string(settings_.port); }

std::optional<ApiClient::Reply> ApiClient::request(std::string_view method, const std::string& path,
                                                   const json* body) {
  http::ClientRequest rq{settings_.host, settings_.port, settings_.user, settings_.password, static_cast<int>(kTimeoutSeconds),
                         std::string(method), path, body ? body->dump() : std::string()};
  http::ClientResult result;
  try {
    result = http::load_http_module().send(rq);
  } catch (const std::exception& e) {
    error_ = e.what();
    return std::nullopt;
  }
  if (!result.reply) {
    error_ = result.error;
    return std::nullopt;
  }
  const http::ClientReply* r = &*result.reply;
  Reply reply{r->status, nullptr};
  if (!r->body.empty()) {
    reply.body = json::parse(r->body, nullptr, false);
    if (reply.body.is_discarded()) reply.body = r->body;  // a plain-text error
  }
  return reply;
}

std::string encode_segment(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

bool is_http_command(int argc, char** argv) {
  // The command is the first word that is neither an option nor an option's value.
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("-")) {
      const bool takes_value = arg.find('=') == std::string_view::npos &&
                               (arg == "--host" || arg == "--http-port" || arg == "--user" || arg == "-u" ||
                                arg == "--password" || arg == "-p" || arg == "--vhost" || arg == "--data-dir");
      if (takes_value) ++i;
      continue;
    }
    for (std::string_view c : {"list-queues", "list-exchanges", "list-bindings", "list-connections", "purge-queue",
                               "delete-queue", "status"})
      if (arg == c) return true;
    return false;
  }
  return false;
}

int run(int argc, char** argv) {
  Settings s;
  CLI::App app{"minibroker ctl: manage a running minibroker through its management HTTP API"};
  app.name("minibroker ctl");
  app.require_subcommand(1);
  app.add_option("--host", s.host, "broker host")->capture_default_str();
  app.add_option("--http-port", s.port, "management HTTP port")->capture_default_str();
  app.add_option("--user,-u", s.user, "user")->capture_default_str();
  app.add_option("--password,-p", s.password, "password")->capture_default_str();
  app.add_option("--vhost", s.vhost, "virtual host")->capture_default_str();
  app.add_flag("--json", s.json_output, "print JSON instead of a table");
  app.fallthrough();  // the options above are accepted after the command too

  std::vector<std::string> columns;
  std::string queue;
  bool if_unused = false, if_empty = false;
  auto* lq = app.add_subcommand("list-queues", "queues with their message counts");
  auto* lx = app.add_subcommand("list-exchanges", "exchanges");
  auto* lb = app.add_subcommand("list-bindings", "bindings");
  auto* lc = app.add_subcommand("list-connections", "client connections");
  for (auto* sub : {lq, lx, lb, lc}) sub->add_option("columns", columns, "fields to show (JSON names)");
  auto* pq = app.add_subcommand("purge-queue", "remove every ready message of a queue");
  pq->add_option("queue", queue, "queue name")->required();
  auto* dq = app.add_subcommand("delete-queue", "delete a queue");
  dq->add_option("queue", queue, "queue name")->required();
  dq->add_flag("--if-unused", if_unused, "only if it has no consumers");
  dq->add_flag("--if-empty", if_empty, "only if it has no messages");
  auto* st = app.add_subcommand("status", "broker status: listeners, totals, rates");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  const std::string vh = encode_segment(s.vhost);
  if (lq->parsed()) return list(s, "/api/queues/" + vh, columns, {"name", "messages"});
  if (lx->parsed()) return list(s, "/api/exchanges/" + vh, columns, {"name", "type"});
  if (lb->parsed())
    return list(s, "/api/bindings/" + vh, columns, {"source", "destination", "destination_type", "routing_key"});
  if (lc->parsed()) return list(s, "/api/connections", columns, {"name", "user", "vhost", "state"});
  if (pq->parsed()) return queue_command(s, "purge", queue, false, false);
  if (dq->parsed()) return queue_command(s, "delete", queue, if_unused, if_empty);
  if (st->parsed()) return status(s);
  return kExitApiError;
}

}  // namespace mb::ctl
