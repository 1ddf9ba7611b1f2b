// The HTTP library behind the management API, loaded only when it is used.
//
// cpp-httplib (Debian's libcpp-httplib, built with OpenSSL) initialises
// OpenSSL in a static constructor as soon as it is loaded: about 2 MiB of
// resident memory in a broker that serves no HTTP (--http-port 0) and no TLS.
// So the executable does not link it: broker/http/httplib_module.cpp, the only
// file that includes <httplib.h>, is built as libmb_httplib.so, whose bytes are
// embedded in the executable (httplib_module_blob.S), and load_http_module()
// loads them (memfd_create + dlopen) the first time an HTTP server or client
// is made. The module knows nothing of the broker: it
// serves and sends requests in the plain types below (standard library only,
// so nothing but libstdc++ is shared across the boundary).
#pragma once

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mb::http {

// Header names compare case-insensitively, as in HTTP (and cpp-httplib).
struct CaseInsensitiveLess {
  bool operator()(const std::string& a, const std::string& b) const {
    return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(), [](unsigned char x, unsigned char y) {
      return std::tolower(x) < std::tolower(y);
    });
  }
};
using Headers = std::multimap<std::string, std::string, CaseInsensitiveLess>;

// A request as the handlers see it: the subset of httplib::Request they use,
// with the same names.
struct Request {
  std::string method;
  std::string path;    // decoded, without the query
  std::string target;  // as sent: path and query, still percent-encoded
  std::string body;
  std::string remote_addr;
  Headers headers;
  std::multimap<std::string, std::string> params;  // decoded query parameters
  std::vector<std::string> matches;                // [0] the whole path, then the pattern's captures

  bool has_header(const std::string& key) const { return headers.find(key) != headers.end(); }
  std::string get_header_value(const std::string& key) const {
    auto it = headers.find(key);
    return it == headers.end() ? std::string() : it->second;
  }
  bool has_param(const std::string& key) const { return params.find(key) != params.end(); }
  std::string get_param_value(const std::string& key) const {
    auto it = params.find(key);
    return it == params.end() ? std::string() : it->second;
  }
};

// A response as the handlers fill it: the subset of httplib::Response they use.
struct Response {
  int status = -1;  // -1: not set (the library answers 200, or 404 when no route matched)
  std::string body;
  Headers headers;

  void set_header(const std::string& key, const std::string& value) { headers.emplace(key, value); }
  void set_content(const std::string& content, const std::string& content_type) {
    set_content(content.data(), content.size(), content_type);
  }
  void set_content(const char* data, std::size_t size, const std::string& content_type) {
    body.assign(data, size);
    headers.erase("Content-Type");
    headers.emplace("Content-Type", content_type);
  }
};

using Handler = std::function<void(const Request&, Response&)>;

// One listening HTTP or HTTPS server.
class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  // method: "GET", "PUT", "POST" or "DELETE"; pattern: an ECMAScript regex
  // matched against the whole decoded path.
  virtual void route(std::string_view method, const std::string& pattern, Handler handler) = 0;
  // Runs before routing; returns true when it answered the request itself.
  virtual void set_pre_routing(std::function<bool(const Request&, Response&)> fn) = 0;
  // A handler threw: fill the response.
  virtual void set_exception_handler(std::function<void(const Request&, Response&, std::exception_ptr)> fn) = 0;
  // After routing, for every response with status >= 400 (404 when no route matched).
  virtual void set_error_handler(Handler fn) = 0;
  // port 0 picks a free one. Returns the bound port, or -1.
  virtual int bind(const std::string& host, int port) = 0;
  // Serves until stop(); call after bind(), on its own thread.
  virtual void listen() = 0;
  virtual void stop() = 0;
};

// What one client request returned: the reply, or why there is none.
struct ClientReply {
  int status = 0;
  std::string body;
};
struct ClientRequest {
  std::string host;
  int port = 0;
  std::string user, password;  // HTTP basic auth
  int timeout_seconds = 0;     // connect, read and write
  std::string method;          // GET, PUT or DELETE
  std::string path;
  std::string body;            // sent as application/json with PUT
};
struct ClientResult {
  std::optional<ClientReply> reply;
  std::string error;  // when there is no reply
};

// The module's entry points (libmb_httplib.so's mb_http_module()).
struct HttpModule {
  // cert and key empty: plain HTTP. Returns nullptr, with *error set, when the
  // certificate or key cannot be loaded.
  std::unique_ptr<HttpTransport> (*make_server)(const std::string& cert, const std::string& key, int threads,
                                                std::string* error);
  ClientResult (*send)(const ClientRequest& request);
};

// Loads the embedded libmb_httplib.so once, and returns its entry points.
// Throws std::runtime_error when it cannot be loaded (no /proc, say).
const HttpModule& load_http_module();

}  // namespace mb::http

// The one symbol the module exports.
extern "C" const mb::http::HttpModule* mb_http_module();
