// url.hpp: AMQP URIs as Celery writes them. amqp://guest:guest@localhost:5672//
// gives host localhost, port 5672, user guest, password guest, vhost "/"
// (the path after the first slash, percent-decoded: "//" and "/%2f" are "/").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mb::client {

inline constexpr std::uint16_t kDefaultAmqpPort = 5672;
inline constexpr std::string_view kDefaultBrokerUrl = "amqp://guest:guest@localhost:5672//";

struct BrokerUrl {
  std::string host = "localhost";
  std::uint16_t port = kDefaultAmqpPort;
  std::string user = "guest";
  std::string password = "guest";
  std::string vhost = "/";
};

// Throws std::invalid_argument with a readable message on a malformed URL.
BrokerUrl parse_broker_url(std::string_view url);

}  // namespace mb::client
