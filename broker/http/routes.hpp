// Route registration: one function per area, all called by register_routes().
#pragma once

namespace mb::broker {
class Broker;
}

namespace mb::http {

class HttpServer;

// Everything below, in order. Called once by main before HttpServer::start().
void register_routes(HttpServer& http, broker::Broker& broker);

// RabbitMQ's management API subset (/api/...): broker/http/api_routes.cpp.
void register_api_routes(HttpServer& http, broker::Broker& broker);

// The task view and dashboard API: defined in broker/tasks/*.cpp (every .cpp
// there is compiled into mb_http; see broker/http/CMakeLists.txt).
void register_task_routes(HttpServer& http, broker::Broker& broker);

}  // namespace mb::http
