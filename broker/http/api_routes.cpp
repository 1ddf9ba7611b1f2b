// RabbitMQ's management API subset: thin handlers over snapshot.hpp.
#include "broker/http/routes.hpp"
#include "broker/http/server.hpp"
#include "broker/broker.hpp"

namespace mb::http {

void register_api_routes(HttpServer& http, broker::Broker& broker) {
  http.get("/api/whoami", [](const Request& req, Response& res) {
    HttpServer::reply_json(res, 200, {{"name", HttpServer::request_user(req)}, {"tags", "administrator"}});
  });
  http.get("/api/overview", [&http, &broker](const Request&, Response& res) {
    auto r = http.on_loop([&broker] { return nlohmann::json{{"queue_count", broker.connection_count()}}; });
    if (!r) return HttpServer::reply_unavailable(res);
    HttpServer::reply_json(res, 200, *r);
  });
}

}  // namespace mb::http
