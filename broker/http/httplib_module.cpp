// libmb_httplib.so: the management API's HTTP server and the ctl client on
// cpp-httplib, behind the plain types of transport.hpp. Loaded by
// load_http_module() only when HTTP is used (see transport.hpp for why). The
// only file that includes <httplib.h>; it uses nothing of the broker.
#include <httplib.h>

#include "broker/http/transport.hpp"

namespace mb::http {
namespace {

Request from_httplib(const httplib::Request& in) {
  Request out;
  out.method = in.method;
  out.path = in.path;
  out.target = in.target;
  out.body = in.body;
  out.remote_addr = in.remote_addr;
  for (const auto& [k, v] : in.headers) out.headers.emplace(k, v);
  out.params.insert(in.params.begin(), in.params.end());
  for (const auto& m : in.matches) out.matches.push_back(m.str());
  return out;
}

Response from_httplib(const httplib::Response& in) {
  Response out;
  out.status = in.status;
  out.body = in.body;
  for (const auto& [k, v] : in.headers) out.headers.emplace(k, v);
  return out;
}

void to_httplib(const Response& in, httplib::Response& out) {
  out.status = in.status;
  out.body = in.body;
  out.headers.clear();
  for (const auto& [k, v] : in.headers) out.headers.emplace(k, v);
}

// Runs fn on our types, copying what it changed back into httplib's response.
template <typename F>
auto call(const httplib::Request& req, httplib::Response& res, F&& fn) {
  const Request r = from_httplib(req);
  Response out = from_httplib(res);
  if constexpr (std::is_void_v<decltype(fn(r, out))>) {
    fn(r, out);
    to_httplib(out, res);
  } else {
    auto result = fn(r, out);
    to_httplib(out, res);
    return result;
  }
}

class HttplibTransport final : public HttpTransport {
 public:
  HttplibTransport(std::unique_ptr<httplib::Server> server, int threads) : server_(std::move(server)) {
    server_->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<std::size_t>(threads)); };
  }

  void route(std::string_view method, const std::string& pattern, Handler handler) override {
    auto h = [handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
      call(req, res, handler);
    };
    if (method == "GET") server_->Get(pattern, h);
    else if (method == "PUT") server_->Put(pattern, h);
    else if (method == "POST") server_->Post(pattern, h);
    else if (method == "DELETE") server_->Delete(pattern, h);
  }

  void set_pre_routing(std::function<bool(const Request&, Response&)> fn) override {
    server_->set_pre_routing_handler([fn = std::move(fn)](const httplib::Request& req, httplib::Response& res) {
      return call(req, res, fn) ? httplib::Server::HandlerResponse::Handled
                                : httplib::Server::HandlerResponse::Unhandled;
    });
  }

  void set_exception_handler(std::function<void(const Request&, Response&, std::exception_ptr)> fn) override {
    server_->set_exception_handler(
        [fn = std::move(fn)](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
          call(req, res, [&](const Request& r, Response& out) { fn(r, out, ep); });
        });
  }

  void set_error_handler(Handler fn) override {
    server_->set_error_handler(
        [fn = std::move(fn)](const httplib::Request& req, httplib::Response& res) { call(req, res, fn); });
  }

  int bind(const std::string& host, int port) override {
    if (port == 0) return server_->bind_to_any_port(host);
    return server_->bind_to_port(host, port) ? port : -1;
  }

  void listen() override { server_->listen_after_bind(); }
  void stop() override { server_->stop(); }

 private:
  std::unique_ptr<httplib::Server> server_;
};

std::unique_ptr<HttpTransport> make_server(const std::string& cert, const std::string& key, int threads,
                                           std::string* error) {
  if (cert.empty()) return std::make_unique<HttplibTransport>(std::make_unique<httplib::Server>(), threads);
  auto ssl = std::make_unique<httplib::SSLServer>(cert.c_str(), key.c_str());
  if (!ssl->is_valid()) {
    if (error) *error = "cannot load the HTTPS certificate " + cert + " or key " + key;
    return nullptr;
  }
  return std::make_unique<HttplibTransport>(std::move(ssl), threads);
}

ClientResult send(const ClientRequest& rq) {
  httplib::Client client(rq.host, rq.port);
  client.set_basic_auth(rq.user, rq.password);
  client.set_connection_timeout(rq.timeout_seconds);
  client.set_read_timeout(rq.timeout_seconds);
  client.set_write_timeout(rq.timeout_seconds);
  httplib::Result r = rq.method == "GET"   ? client.Get(rq.path)
                      : rq.method == "PUT" ? client.Put(rq.path, rq.body, "application/json")
                                           : client.Delete(rq.path);
  ClientResult out;
  if (!r) {
    out.error = httplib::to_string(r.error());
    return out;
  }
  out.reply = ClientReply{r->status, r->body};
  return out;
}

constexpr HttpModule kModule{&make_server, &send};

}  // namespace
}  // namespace mb::http

extern "C" __attribute__((visibility("default"))) const mb::http::HttpModule* mb_http_module() {
  return &mb::http::kModule;
}
