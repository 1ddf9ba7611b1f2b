// `minibroker ctl` commands that talk to a running broker's management HTTP
// API (list-queues, list-exchanges, list-bindings, list-connections,
// purge-queue, delete-queue, status). The user, vhost and permission commands
// are broker/ctl.*.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "broker/options.hpp"

namespace mb::ctl {

// Where the management API is and who to log in as.
struct HttpSettings {
  std::string host = "127.0.0.1";
  std::uint16_t port = broker::kDefaultHttpPort;
  std::string user = "guest";
  std::string password = "guest";
};

// A management API client for the ctl commands (cpp-httplib, loaded on first
// use: broker/http/transport.hpp; basic auth, generous timeouts for a loaded broker).
class ApiClient {
 public:
  struct Reply {
    int status = 0;
    nlohmann::json body;  // null when the body was empty or not JSON
  };
  explicit ApiClient(const HttpSettings& s);
  ~ApiClient();
  // GET, PUT, DELETE (body sent as JSON when given). nullopt when the broker
  // could not be reached; error() says why.
  std::optional<Reply> request(std::string_view method, const std::string& path,
                               const nlohmann::json* body = nullptr);
  const std::string& error() const { return error_; }
  std::string base_url() const;

 private:
  HttpSettings settings_;
  std::string error_;
};

// Percent-encodes one path segment (a vhost "/" becomes %2F).
std::string encode_segment(std::string_view s);

// Whether the command in `minibroker ctl [options] <command> ...` is one of
// these; argv[0] is "ctl".
bool is_http_command(int argc, char** argv);

// argv[0] is "ctl". Returns the process exit code.
int run(int argc, char** argv);

}  // namespace mb::ctl
