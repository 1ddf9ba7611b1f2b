// The management HTTP server: cpp-httplib (loaded on first use, see
// transport.hpp) on its own threads, in front of the single-threaded broker.
//
// How to add routes (see also broker/http/README.md):
//   - Write a function such as `void register_queue_routes(HttpServer&, Broker&)` and call
//     it from register_routes() in broker/http/routes.cpp (the task view's
//     register_task_routes() is already wired: define it in broker/tasks/*.cpp).
//   - Register with http.get/put/post/del(pattern, handler). Patterns are
//     ECMAScript regexes; captures are in req.matches. Every path under /api/
//     requires HTTP basic auth (done before routing); other paths are public.
//   - Handlers run on an HTTP thread. They must NEVER touch broker objects
//     directly: wrap the work in http.on_loop([&] { ... return value; }), which
//     runs it on the broker's loop and returns std::nullopt on timeout (reply
//     503 with http.reply_unavailable(res)).
//   - Static files: put them in broker/http/static/; they are embedded in the
//     binary at build time (broker/http/embed_static.cmake) and served at
//     /<relative path>, with /static/... as an alias and / -> index.html.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include <asio.hpp>

#include "broker/http/transport.hpp"

namespace mb::broker {
class Broker;
}

namespace mb::http {

using broker::Broker;

// How long a handler waits for the broker's loop before answering 503: long
// enough for a loaded loop, short enough that a wedged one is reported.
inline constexpr auto kLoopTimeout = std::chrono::seconds(5);
// HTTP worker threads: requests are short and the real work runs on the
// broker's loop, so a few threads cover a dashboard plus some scripts.
inline constexpr int kHttpThreads = 4;

// A file from broker/http/static/, embedded at build time (static_files.cpp).
struct EmbeddedFile {
  std::string_view path;  // relative to broker/http/static/, '/'-separated
  std::string_view data;
};
std::span<const EmbeddedFile> embedded_files();

// One port the API is served on: plain HTTP, or HTTPS when a certificate is given.
struct HttpListen {
  std::uint16_t port = 0;  // 0 picks a free one
  std::string tls_cert;    // PEM certificate chain; empty: plain HTTP
  std::string tls_key;     // PEM private key
  bool tls() const { return !tls_cert.empty(); }
};

class HttpServer {
 public:
  // broker must outlive the server; the server is stopped before the broker
  // is destroyed (see main.cpp). Every listener serves the same routes.
  // Throws std::runtime_error when a certificate or key cannot be loaded.
  HttpServer(Broker& broker, std::string bind, std::vector<HttpListen> listens);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds every listener and starts serving, a thread each. Throws
  // std::runtime_error when a port cannot be bound.
  void start();
  // Stops serving and joins the threads. Idempotent.
  void stop();

  void get(const std::string& pattern, const Handler& h) {
    for (auto& l : listeners_) l.server->route("GET", pattern, h);
  }
  void put(const std::string& pattern, const Handler& h) {
    for (auto& l : listeners_) l.server->route("PUT", pattern, h);
  }
  void post(const std::string& pattern, const Handler& h) {
    for (auto& l : listeners_) l.server->route("POST", pattern, h);
  }
  void del(const std::string& pattern, const Handler& h) {
    for (auto& l : listeners_) l.server->route("DELETE", pattern, h);
  }

  // Runs fn on the broker's loop and waits for its result; nullopt when the
  // loop did not run it within kLoopTimeout. Exceptions thrown by fn are
  // rethrown here. fn is moved into the loop and may outlive this call on
  // timeout: capture by value whatever it reads.
  template <typename F>
  auto on_loop(F fn) -> std::optional<std::invoke_result_t<F&>>;

  // The user the request authenticated as (valid in handlers under /api/).
  static std::string request_user(const Request& req);

  static void reply_json(Response& res, int status, const nlohmann::json& body);
  static void reply_not_found(Response& res);
  static void reply_unavailable(Response& res);

  Broker& broker() { return broker_; }

 private:
  // Pre-routing: basic auth for /api/; answers 401 itself (and returns true).
  bool check_auth(const Request& req, Response& res);
  void serve_static(const Request& req, Response& res);
  void post_to_loop(std::function<void()> fn);

  struct Listener {
    HttpListen listen;
    std::unique_ptr<HttpTransport> server;  // HTTPS when listen.tls()
    std::thread thread;
  };
  void configure(HttpTransport& server);

  Broker& broker_;  // HELD NOT OWNED
  std::string bind_;
  std::vector<Listener> listeners_;
};

template <typename F>
auto HttpServer::on_loop(F fn) -> std::optional<std::invoke_result_t<F&>> {
  using R = std::invoke_result_t<F&>;
  static_assert(!std::is_void_v<R>, "on_loop needs a result to tell completion from timeout");
  auto promise = std::make_shared<std::promise<R>>();
  std::future<R> result = promise->get_future();
  post_to_loop([promise, fn = std::move(fn)]() mutable {
    try {
      promise->set_value(fn());
    } catch (...) {
      promise->set_exception(std::current_exception());
    }
  });
  if (result.wait_for(kLoopTimeout) != std::future_status::ready) return std::nullopt;
  return result.get();
}

}  // namespace mb::http
