// HttpServer: threads, basic auth, static files, loop hand-off. See server.hpp.
#include "broker/http/server.hpp"

#include <spdlog/spdlog.h>

#include <stdexcept>

#include "broker/broker.hpp"
#include "broker/http/access_api.hpp"
#include "common/base64.hpp"

namespace mb::http {
namespace {

constexpr std::string_view kApiPrefix = "/api/";
constexpr std::string_view kStaticPrefix = "/static/";
// RabbitMQ's realm, so tools that look for it are not surprised.
constexpr const char* kAuthChallenge = "Basic realm=\"RabbitMQ Management\"";

std::string_view content_type_for(std::string_view path) {
  struct Ext {
    std::string_view ext, type;
  };
  static constexpr Ext kTypes[] = {
      {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},   {".json", "application/json"},
      {".svg", "image/svg+xml"},             {".png", "image/png"},
      {".ico", "image/x-icon"},              {".txt", "text/plain; charset=utf-8"},
  };
  for (const Ext& e : kTypes)
    if (path.ends_with(e.ext)) return e.type;
  return "application/octet-stream";
}

struct Credentials {
  std::string user, password;
};

std::optional<Credentials> basic_credentials(const Request& req) {
  const std::string header = req.get_header_value("Authorization");
  constexpr std::string_view kBasic = "Basic ";
  if (header.size() <= kBasic.size() || !std::string_view(header).substr(0, kBasic.size()).starts_with(kBasic))
    return std::nullopt;
  std::optional<std::string> decoded = base64_decode(std::string_view(header).substr(kBasic.size()));
  if (!decoded) return std::nullopt;
  const std::size_t colon = decoded->find(':');
  if (colon == std::string::npos) return std::nullopt;
  return Credentials{decoded->substr(0, colon), decoded->substr(colon + 1)};
}

bool is_loopback(const std::string& addr) {
  asio::error_code ec;
  const asio::ip::address a = asio::ip::make_address(addr, ec);
  if (ec) return false;
  if (a.is_v6() && a.to_v6().is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).is_loopback();
  return a.is_loopback();
}

}  // namespace

HttpServer::HttpServer(Broker& broker, std::string bind, std::vector<HttpListen> listens)
    : broker_(broker), bind_(std::move(bind)) {
  for (HttpListen& l : listens) {
    std::string error;
    std::unique_ptr<HttpTransport> server = load_http_module().make_server(l.tls_cert, l.tls_key, kHttpThreads, &error);
    if (!server) throw std::runtime_error(error);
    configure(*server);
    listeners_.push_back(Listener{std::move(l), std::move(server), {}});
  }
}

void HttpServer::configure(HttpTransport& server) {
  server.set_pre_routing([this](const Request& req, Response& res) { return check_auth(req, res); });
  server.set_exception_handler([](const Request& req, Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    spdlog::error("http: {} {} failed: {}", req.method, req.path, what);
    reply_json(res, 500, {{"error", "Internal Server Error"}, {"reason", what}});
  });
  // Every GET that no route claims: an embedded static file, or 404.
  server.set_error_handler([this](const Request& req, Response& res) {
    if (res.status == 404 && req.method == "GET" && !req.path.starts_with(kApiPrefix)) serve_static(req, res);
    if (res.status == 404 && res.body.empty()) reply_not_found(res);
  });
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  for (Listener& l : listeners_) {
    const int bound = l.server->bind(bind_, l.listen.port);
    if (bound <= 0)
      throw std::runtime_error(fmt::format("cannot listen for HTTP{} on {}:{}", l.listen.tls() ? "S" : "", bind_,
                                           l.listen.port));
    l.listen.port = static_cast<std::uint16_t>(bound);
    l.thread = std::thread([server = l.server.get()] { server->listen(); });
    spdlog::info("management HTTP API listening on {}:{}{}", bind_, l.listen.port, l.listen.tls() ? " (HTTPS)" : "");
  }
}

void HttpServer::stop() {
  for (Listener& l : listeners_) {
    if (!l.thread.joinable()) continue;
    l.server->stop();
    l.thread.join();
  }
}

void HttpServer::post_to_loop(std::function<void()> fn) { asio::post(broker_.io(), std::move(fn)); }

bool HttpServer::check_auth(const Request& req, Response& res) {
  if (!req.path.starts_with(kApiPrefix)) return false;
  std::optional<Credentials> creds = basic_credentials(req);
  std::string refusal = "no credentials";
  if (creds) {
    const bool loopback = is_loopback(req.remote_addr);
    struct Verdict {
      std::string refusal;     // empty: the credentials are good
      bool management = true;  // the user may use the API (RabbitMQ's "management user")
    };
    std::optional<Verdict> verdict = on_loop([this, c = *creds, loopback] {
      Verdict v{broker_.authenticate(c.user, c.password, loopback)};
      if (v.refusal.empty()) v.management = mgmt::is_management_user(*broker_.access().find_user(c.user));
      return v;
    });
    if (!verdict) {
      reply_unavailable(res);
      return true;
    }
    if (verdict->refusal.empty() && verdict->management) return false;
    if (verdict->refusal.empty()) {
      // Good credentials, but no management tag: RabbitMQ's 401 with a reason.
      spdlog::warn("http: {} {} from {}: user '{}' has no management tag", req.method, req.path, req.remote_addr,
                   creds->user);
      res.set_header("WWW-Authenticate", kAuthChallenge);
      reply_json(res, 401, {{"error", "not_authorised"}, {"reason", "Not management user"}});
      return true;
    }
    refusal = verdict->refusal;
  }
  spdlog::warn("http: {} {} from {}: login refused ({})", req.method, req.path, req.remote_addr,
               creds ? creds->user + ": " + refusal : refusal);
  res.set_header("WWW-Authenticate", kAuthChallenge);
  res.status = 401;  // with no body, as RabbitMQ answers
  res.set_content("", "text/plain");
  return true;
}

void HttpServer::serve_static(const Request& req, Response& res) {
  std::string_view path = req.path;
  if (path.starts_with(kStaticPrefix)) path.remove_prefix(kStaticPrefix.size());
  else path.remove_prefix(1);  // leading '/'
  std::string wanted(path);
  if (wanted.empty() || wanted.ends_with('/')) wanted += "index.html";
  for (const EmbeddedFile& f : embedded_files()) {
    if (f.path != wanted) continue;
    res.status = 200;
    res.set_content(f.data.data(), f.data.size(), std::string(content_type_for(f.path)));
    return;
  }
}

std::string HttpServer::request_user(const Request& req) {
  std::optional<Credentials> c = basic_credentials(req);
  return c ? c->user : std::string();
}

void HttpServer::reply_json(Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void HttpServer::reply_not_found(Response& res) {
  reply_json(res, 404, {{"error", "Object Not Found"}, {"reason", "Not Found"}});
}

void HttpServer::reply_unavailable(Response& res) {
  spdlog::warn("http: the broker loop did not answer within {} s", kLoopTimeout.count());
  reply_json(res, 503, {{"error", "Service Unavailable"}, {"reason", "broker busy"}});
}

}  // namespace mb::http
