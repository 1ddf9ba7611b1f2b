// Broker options: every default is a named constant with its reason.
#pragma once

#include <cstdint>
#include <string>

namespace mb::broker {

inline constexpr std::uint16_t kDefaultPort = 5672;           // IANA port for AMQP
inline constexpr std::uint16_t kDefaultHttpPort = 15672;      // RabbitMQ's management port, so tools find it
inline constexpr const char* kDefaultBind = "127.0.0.1";      // loopback unless asked otherwise
inline constexpr const char* kDefaultDataDir = "./minibroker-data";
inline constexpr std::uint16_t kDefaultChannelMax = 2047;     // what RabbitMQ offers
inline constexpr std::uint32_t kDefaultFrameMax = 131072;     // what RabbitMQ offers
inline constexpr std::uint16_t kDefaultHeartbeat = 60;        // seconds, as RabbitMQ
inline constexpr std::uint64_t kDefaultMaxMessageSize = 128ull << 20;  // RabbitMQ 3.10's default
inline constexpr int kHandshakeTimeoutSeconds = 10;           // RabbitMQ's handshake_timeout
inline constexpr std::size_t kOutboundHighWater = 4u << 20;   // hold deliveries above this many queued bytes
inline constexpr std::size_t kReadBufferInitial = 4u << 10;   // an idle connection costs little memory
inline constexpr std::size_t kReadBufferMax = 256u << 10;      // a busy one grows to this (>= 2 frames)

struct Options {
  std::uint16_t port = kDefaultPort;
  std::uint16_t http_port = kDefaultHttpPort;  // management API; 0 turns it off
  std::string bind = kDefaultBind;
  std::string data_dir = kDefaultDataDir;
  std::string loglevel = "info";
  std::uint16_t channel_max = kDefaultChannelMax;
  std::uint32_t frame_max = kDefaultFrameMax;
  std::uint16_t heartbeat = kDefaultHeartbeat;
  std::uint64_t max_message_size = kDefaultMaxMessageSize;
};

}  // namespace mb::broker
