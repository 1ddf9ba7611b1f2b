// RabbitMQ's management API subset (/api/...): thin handlers that parse the
// request, run a snapshot.hpp function on the broker's loop, and reply.
//
// Paths are routed on the raw request target, one URL-decoded segment at a
// time: a vhost named "/" arrives as %2F, and cpp-httplib's decoded req.path
// would merge it with the separators.
//
//   GET    /api/overview | /api/whoami | /api/health/checks/alarms
//   GET    /api/vhosts[/{vhost}]
//   GET    /api/queues[/{vhost}[/{name}]]          PUT, DELETE /api/queues/{vhost}/{name}
//   DELETE /api/queues/{vhost}/{name}/contents     (purge)
//   POST   /api/queues/{vhost}/{name}/get          (peek, requeue or not)
//   GET    /api/queues/{vhost}/{name}/browse[?limit=n]    beyond RabbitMQ: ready, unacked, delayed
//   DELETE /api/queues/{vhost}/{name}/messages?position=n | ?message_id=id   beyond RabbitMQ
//   GET    /api/exchanges[/{vhost}[/{name}]]       PUT, DELETE /api/exchanges/{vhost}/{name}
//   POST   /api/exchanges/{vhost}/{name}/publish
//   GET    /api/bindings[/{vhost}]
//   GET    /api/connections[/{name}]               DELETE /api/connections/{name}
//   GET    /api/channels | /api/consumers[/{vhost}]
// Administrators only (access_api.hpp):
//   GET    /api/users                              GET, PUT, DELETE /api/users/{name}
//   GET    /api/users/{name}/permissions | /api/vhosts/{vhost}/permissions
//   PUT, DELETE /api/vhosts/{vhost}
//   GET    /api/permissions                        GET, PUT, DELETE /api/permissions/{vhost}/{user}
#include <asio.hpp>
#include <spdlog/spdlog.h>

#include <charconv>
#include <memory>
#include <string>
#include <vector>

#include "broker/broker.hpp"
#include "broker/connection.hpp"
#include "broker/http/access_api.hpp"
#include "broker/http/routes.hpp"
#include "broker/http/server.hpp"
#include "broker/http/snapshot.hpp"

namespace mb::http {
namespace {

using json = nlohmann::json;
using Segments = std::vector<std::string>;

// Samples the queues' counters on the broker's loop every kRateSampleMs.
class RateSampler : public std::enable_shared_from_this<RateSampler> {
 public:
  explicit RateSampler(Broker& b) : broker_(b), timer_(b.io()) {}
  void start() { arm(); }
  const mgmt::Rates& rates() const { return rates_; }

 private:
  void arm() {
    timer_.expires_after(std::chrono::milliseconds(mgmt::kRateSampleMs));
    timer_.async_wait([weak = weak_from_this()](const asio::error_code& ec) {
      auto self = weak.lock();
      if (ec || !self) return;
      std::vector<const broker::Vhost*> vhosts;
      for (const auto& [_, vh] : self->broker_.vhosts()) vhosts.push_back(vh.get());
      self->rates_.sample(vhosts, self->broker_.now_ms());
      self->arm();
    });
  }

  Broker& broker_;  // HELD NOT OWNED
  asio::steady_timer timer_;
  mgmt::Rates rates_;
};

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes one path segment ('+' stays '+': it is not a space in paths).
std::string url_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      const int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// The segments after "/api/", from the raw target, each decoded.
Segments api_segments(const Request& req) {
  std::string_view target = req.target;
  if (const std::size_t q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
  target.remove_prefix(std::min(target.size(), std::string_view("/api/").size()));
  Segments out;
  std::size_t start = 0;
  while (start <= target.size()) {
    const std::size_t slash = target.find('/', start);
    const std::size_t end = slash == std::string_view::npos ? target.size() : slash;
    out.push_back(url_decode(target.substr(start, end - start)));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  if (!out.empty() && out.back().empty()) out.pop_back();  // trailing slash
  return out;
}

void reply(Response& res, const mgmt::Outcome& o) {
  if (o.status == 201 || o.status == 204) {
    res.status = o.status;
    return;
  }
  HttpServer::reply_json(res, o.status, o.body);
}

void bad_request(Response& res, const std::string& reason) {
  HttpServer::reply_json(res, 400, {{"error", "bad_request"}, {"reason", reason}});
}

std::optional<json> parse_body(const Request& req, Response& res) {
  if (req.body.empty()) return json::object();
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded()) {
    bad_request(res, "body is not valid JSON");
    return std::nullopt;
  }
  return body;
}

bool query_flag(const Request& req, const char* name) {
  return req.has_param(name) && req.get_param_value(name) == "true";
}

// Everything one API request needs, shared by the handlers.
struct Api {
  HttpServer& http;  // HELD NOT OWNED
  Broker& broker;    // HELD NOT OWNED
  std::shared_ptr<RateSampler> sampler;

  // Runs fn(vhost, or nullptr when `all`) on the loop and replies with its
  // JSON; 404 when the vhost does not exist or fn returns null.
  template <typename F>
  void list(Response& res, std::string vhost, bool all, F fn) {
    auto r = http.on_loop([this, vhost = std::move(vhost), all, fn]() -> json {
      const broker::Vhost* vh = nullptr;
      if (!all && (vh = broker.find_vhost(vhost)) == nullptr) return nullptr;
      return fn(vh);
    });
    if (!r) return HttpServer::reply_unavailable(res);
    if (r->is_null()) return HttpServer::reply_not_found(res);
    HttpServer::reply_json(res, 200, *r);
  }

  // Runs fn(vhost) -> Outcome on the loop; 404 when the vhost does not exist.
  template <typename F>
  void command(Response& res, std::string vhost, F fn) {
    auto r = http.on_loop([this, vhost = std::move(vhost), fn]() -> mgmt::Outcome {
      broker::Vhost* vh = broker.find_vhost(vhost);
      if (vh == nullptr) return mgmt::error_outcome(404, "Not Found");
      return fn(*vh);
    });
    if (!r) return HttpServer::reply_unavailable(res);
    reply(res, *r);
  }

  // Runs fn() -> Outcome on the loop when the request's user is an
  // administrator; 401 (RabbitMQ's "Not administrator user") otherwise.
  template <typename F>
  void admin(const Request& req, Response& res, F fn) {
    auto r = http.on_loop([this, user = HttpServer::request_user(req), fn]() -> mgmt::Outcome {
      if (!mgmt::is_administrator(broker, user)) return mgmt::not_administrator();
      return fn(user);
    });
    if (!r) return HttpServer::reply_unavailable(res);
    reply(res, *r);
  }

  // An administrator's listing: 200 with fn()'s JSON, 404 when it is null.
  template <typename F>
  void admin_list(const Request& req, Response& res, F fn) {
    admin(req, res, [fn](const std::string&) {
      json j = fn();
      return j.is_null() ? mgmt::error_outcome(404, "Not Found") : mgmt::Outcome{200, std::move(j)};
    });
  }

  void get(const Request& req, Response& res);
  void put(const Request& req, Response& res);
  void del(const Request& req, Response& res);
  void post(const Request& req, Response& res);
};

void Api::get(const Request& req, Response& res) {
  const Segments s = api_segments(req);
  const std::size_t n = s.size();
  const std::string& what = s.empty() ? std::string() : s[0];
  Broker& b = broker;
  if (what == "overview" && n == 1) {
    return list(res, "", true, [&b, sampler = sampler](const broker::Vhost*) { return mgmt::overview(b, sampler->rates()); });
  }
  if (what == "whoami" && n == 1) {
    return list(res, "", true, [&b, user = HttpServer::request_user(req)](const broker::Vhost*) -> json {
      const broker::access::User* u = b.access().find_user(user);
      return u ? json{{"name", u->name}, {"tags", u->tags}} : json(nullptr);
    });
  }
  if (what == "users" && n == 1) return admin_list(req, res, [&b] { return mgmt::list_users(b); });
  if (what == "users" && n == 2)
    return admin_list(req, res, [&b, name = s[1]] { return mgmt::find_user_json(b, name); });
  if (what == "users" && n == 3 && s[2] == "permissions")
    return admin_list(req, res, [&b, name = s[1]] { return mgmt::list_permissions(b, std::nullopt, name); });
  if (what == "vhosts" && n == 3 && s[2] == "permissions")
    return admin_list(req, res, [&b, vhost = s[1]] { return mgmt::list_permissions(b, vhost, std::nullopt); });
  if (what == "permissions" && n == 1)
    return admin_list(req, res, [&b] { return mgmt::list_permissions(b, std::nullopt, std::nullopt); });
  if (what == "permissions" && n == 3)
    return admin_list(req, res, [&b, vhost = s[1], user = s[2]] { return mgmt::find_permission_json(b, vhost, user); });
  if (what == "health" && n == 3 && s[1] == "checks" && s[2] == "alarms") {
    // RabbitMQ's answer: 200 when no resource alarm is on, else 503 naming them.
    auto alarms = http.on_loop([&b] {
      json on = json::array();
      if (b.memory_alarm()) on.push_back({{"resource", "memory"}, {"node", mgmt::kNodeName}});
      if (b.disk_alarm()) on.push_back({{"resource", "disk"}, {"node", mgmt::kNodeName}});
      return on;
    });
    if (!alarms) return HttpServer::reply_unavailable(res);
    if (alarms->empty()) return HttpServer::reply_json(res, 200, {{"status", "ok"}});
    return HttpServer::reply_json(
        res, 503,
        {{"status", "failed"}, {"reason", "There are alarms in effect in the cluster"}, {"alarms", *alarms}});
  }
  if (what == "vhosts" && n <= 2) {
    if (n == 1) return list(res, "", true, [&b](const broker::Vhost*) { return mgmt::list_vhosts(b); });
    return list(res, s[1], false, [](const broker::Vhost* vh) { return mgmt::vhost_json(*vh); });
  }
  if (what == "queues") {
    auto sampler_ptr = sampler;
    if (n <= 2)
      return list(res, n == 2 ? s[1] : "", n == 1, [&b, sampler_ptr](const broker::Vhost* vh) {
        return mgmt::list_queues(b, sampler_ptr->rates(), vh);
      });
    if (n == 3)
      return list(res, s[1], false, [&b, sampler_ptr, name = s[2]](const broker::Vhost* vh) -> json {
        broker::QueuePtr q = vh->find_queue(name);
        if (!q) return nullptr;
        return mgmt::queue_json(*vh, *q, &sampler_ptr->rates(), mgmt::all_channels(b), b.now_ms());
      });
    if (n == 4 && s[3] == "browse") {
      std::size_t limit = mgmt::kDefaultBrowseLimit;
      if (req.has_param("limit")) {
        const std::string v = req.get_param_value("limit");
        auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), limit);
        if (ec != std::errc{} || p != v.data() + v.size()) return bad_request(res, "limit must be a number");
      }
      return list(res, s[1], false, [&b, name = s[2], limit](const broker::Vhost* vh) -> json {
        broker::QueuePtr q = vh->find_queue(name);
        if (!q) return nullptr;
        return mgmt::browse_queue(*vh, *q, mgmt::all_channels(b), b.now_ms(), limit);
      });
    }
  }
  if (what == "exchanges" && n <= 3) {
    if (n <= 2)
      return list(res, n == 2 ? s[1] : "", n == 1, [&b](const broker::Vhost* vh) { return mgmt::list_exchanges(b, vh); });
    std::string name = s[2] == "amq.default" ? std::string() : s[2];
    return list(res, s[1], false, [name](const broker::Vhost* vh) -> json {
      broker::ExchangePtr x = vh->find_exchange(name);
      return x ? mgmt::exchange_json(*vh, *x) : json(nullptr);
    });
  }
  if (what == "bindings" && n <= 2)
    return list(res, n == 2 ? s[1] : "", n == 1, [&b](const broker::Vhost* vh) { return mgmt::list_bindings(b, vh); });
  if (what == "connections" && n <= 2) {
    if (n == 1) return list(res, "", true, [&b](const broker::Vhost*) { return mgmt::list_connections(b); });
    return list(res, "", true, [&b, name = s[1]](const broker::Vhost*) -> json {
      const broker::Connection* c = mgmt::find_connection(b, name);
      return c ? mgmt::connection_json(*c) : json(nullptr);
    });
  }
  if (what == "channels" && n == 1)
    return list(res, "", true, [&b](const broker::Vhost*) { return mgmt::list_channels(b); });
  if (what == "consumers" && n <= 2)
    return list(res, n == 2 ? s[1] : "", n == 1, [&b](const broker::Vhost* vh) { return mgmt::list_consumers(b, vh); });
  HttpServer::reply_not_found(res);
}

void Api::put(const Request& req, Response& res) {
  const Segments s = api_segments(req);
  const std::size_t n = s.size();
  Broker& b = broker;
  if (n == 2 && s[0] == "vhosts")  // the body (description, tags, tracing) has nothing minibroker keeps
    return admin(req, res, [&b, name = s[1]](const std::string& user) { return mgmt::put_vhost(b, name, user); });
  const bool access_path = (n == 2 && s[0] == "users") || (n == 3 && s[0] == "permissions");
  if (n != 3 && !access_path) return HttpServer::reply_not_found(res);
  if (!access_path && s[0] != "queues" && s[0] != "exchanges") return HttpServer::reply_not_found(res);
  std::optional<json> body = parse_body(req, res);
  if (!body) return;
  if (s[0] == "users")
    return admin(req, res, [&b, name = s[1], body = std::move(*body)](const std::string&) {
      return mgmt::put_user(b, name, body);
    });
  if (s[0] == "permissions")
    return admin(req, res, [&b, vhost = s[1], user = s[2], body = std::move(*body)](const std::string&) {
      return mgmt::put_permission(b, vhost, user, body);
    });
  if (s[0] == "queues")
    return command(res, s[1], [name = s[2], body = std::move(*body)](broker::Vhost& vh) {
      return mgmt::put_queue(vh, name, body);
    });
  command(res, s[1], [name = s[2], body = std::move(*body)](broker::Vhost& vh) {
    return mgmt::put_exchange(vh, name, body);
  });
}

void Api::del(const Request& req, Response& res) {
  const Segments s = api_segments(req);
  const std::size_t n = s.size();
  Broker& b = broker;
  if (n == 2 && s[0] == "users")
    return admin(req, res, [&b, name = s[1]](const std::string&) { return mgmt::delete_user(b, name); });
  if (n == 2 && s[0] == "vhosts")
    return admin(req, res, [&b, name = s[1]](const std::string&) { return mgmt::delete_vhost(b, name); });
  if (n == 3 && s[0] == "permissions")
    return admin(req, res, [&b, vhost = s[1], user = s[2]](const std::string&) {
      return mgmt::delete_permission(b, vhost, user);
    });
  if (n == 2 && s[0] == "connections") {
    // RabbitMQ's reason, overridable with the X-Reason header as in RabbitMQ.
    std::string reason = req.has_header("X-Reason") ? req.get_header_value("X-Reason") : "Closed via management plugin";
    auto r = http.on_loop([&b, name = s[1], reason = std::move(reason)] {
      broker::Connection* c = mgmt::find_connection(b, name);
      if (c == nullptr) return false;
      spdlog::info("connection {} closed via the management API: {}", name, reason);
      c->close(broker::ReplyCode::kConnectionForced, "CONNECTION_FORCED - " + reason);
      return true;
    });
    if (!r) return HttpServer::reply_unavailable(res);
    if (!*r) return HttpServer::reply_not_found(res);
    res.status = 204;
    return;
  }
  if (n == 3 && s[0] == "queues") {
    const bool if_unused = query_flag(req, "if-unused"), if_empty = query_flag(req, "if-empty");
    return command(res, s[1], [name = s[2], if_unused, if_empty](broker::Vhost& vh) {
      return mgmt::delete_queue(vh, name, if_unused, if_empty);
    });
  }
  if (n == 4 && s[0] == "queues" && s[3] == "contents")
    return command(res, s[1], [name = s[2]](broker::Vhost& vh) { return mgmt::purge_queue(vh, name); });
  if (n == 4 && s[0] == "queues" && s[3] == "messages") {
    json which = json::object();
    if (req.has_param("position")) {
      const std::string v = req.get_param_value("position");
      std::size_t pos = 0;
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), pos);
      if (ec != std::errc{} || p != v.data() + v.size()) return bad_request(res, "position must be a number");
      which["position"] = pos;
    }
    if (req.has_param("message_id")) which["message_id"] = req.get_param_value("message_id");
    return command(res, s[1], [name = s[2], which](broker::Vhost& vh) { return mgmt::delete_message(vh, name, which); });
  }
  if (n == 3 && s[0] == "exchanges") {
    const bool if_unused = query_flag(req, "if-unused");
    return command(res, s[1], [name = s[2], if_unused](broker::Vhost& vh) {
      return mgmt::delete_exchange(vh, name, if_unused);
    });
  }
  HttpServer::reply_not_found(res);
}

void Api::post(const Request& req, Response& res) {
  const Segments s = api_segments(req);
  if (s.size() != 4) return HttpServer::reply_not_found(res);
  std::optional<json> body = parse_body(req, res);
  if (!body) return;
  Broker& b = broker;
  if (s[0] == "queues" && s[3] == "get")
    return command(res, s[1], [&b, name = s[2], body = std::move(*body)](broker::Vhost& vh) {
      return mgmt::get_messages(vh, b, name, body);
    });
  if (s[0] == "exchanges" && s[3] == "publish")
    return command(res, s[1], [&b, name = s[2], body = std::move(*body)](broker::Vhost& vh) {
      return mgmt::publish_message(vh, b, name, body);
    });
  HttpServer::reply_not_found(res);
}

}  // namespace

void register_api_routes(HttpServer& http, broker::Broker& broker) {
  auto api = std::make_shared<Api>(Api{http, broker, std::make_shared<RateSampler>(broker)});
  api->sampler->start();
  // One pattern per top-level resource, so other areas (the task view's
  // /api/tasks...) can register their own paths under /api/.
  static constexpr const char* kResources[] = {"overview",    "whoami",   "health",    "vhosts",
                                               "queues",      "exchanges", "bindings", "connections",
                                               "channels",    "consumers", "users",    "permissions"};
  for (const char* r : kResources) {
    const std::string pattern = std::string("/api/") + r + "(/.*)?";
    http.get(pattern, [api](const Request& req, Response& res) { api->get(req, res); });
    http.put(pattern, [api](const Request& req, Response& res) { api->put(req, res); });
    http.del(pattern, [api](const Request& req, Response& res) { api->del(req, res); });
    http.post(pattern, [api](const Request& req, Response& res) { api->post(req, res); });
  }
}

}  // namespace mb::http
