// Broker options: every default is a named constant with its reason.
#pragma once

#include <cstddef>
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
inline constexpr std::size_t kReadBufferInitial = 4u << 10;   // allocated when bytes arrive; idle plain connections hold none
inline constexpr std::size_t kReadBufferMax = 256u << 10;      // a busy one grows to this (>= 2 frames)
inline constexpr int kReadBufferIdleSeconds = 2;  // a grown read buffer unused this long is released
inline constexpr std::size_t kWriteBufferKeep = 4u << 10;  // an idle connection's write buffers up to this are released
// Ready messages a durable queue keeps in memory; the rest of a backlog stays on
// disk. It refills from disk in batches of half of it: large enough that one
// store read serves many deliveries, small enough that a read is a few ms and
// a thousand queues' windows stay well within the 256 MiB target.
inline constexpr std::size_t kDefaultQueueMemoryMessages = 2048;
inline constexpr std::uint64_t kDefaultQueueMemoryBytes = 4u << 20;  // body bytes; bounds big messages
// Publishers' reads pause while the store has this much submitted but not yet
// written. A paging queue holds its unwritten tail in memory too, so memory for
// a backlog is about twice this; 16 MiB is still hundreds of 1 KiB messages per
// fsync (measured: fill speed is the same as with 64 MiB). Without it,
// publishers without confirms outrun the disk and that tail grows unbounded.
inline constexpr std::uint64_t kStoreBacklogHighWater = 16u << 20;
inline constexpr int kStoreBackoffMs = 5;
// The write-behind bound for persistent messages without a confirm waiting on
// them (RocksDbStoreOptions::write_behind_ms): a task acked within it is never
// written. Kept well below a second: it is what a crash can lose of them.
inline constexpr std::uint32_t kDefaultStoreWriteBehindMs = 200;  // how soon a paused publisher checks again
inline constexpr std::uint16_t kDefaultTlsPort = 5671;        // IANA port for AMQPS
// Limits: 0 means unlimited, as RabbitMQ's defaults (connection_max, consumer_max_per_channel,
// max-queues are all infinity there).
inline constexpr std::size_t kDefaultMaxConnections = 0;
inline constexpr std::size_t kDefaultMaxConsumersPerChannel = 0;
inline constexpr std::size_t kDefaultMaxQueues = 0;
inline constexpr std::uint64_t kDefaultMemoryHighWatermark = 0;  // bytes allocated; 0: no memory alarm
inline constexpr std::uint64_t kDefaultDiskFreeLimit = 50'000'000;  // RabbitMQ's default disk_free_limit (50 MB)
// Tasks the task tracker remembers for /api/tasks (TrackerOptions::max_tasks):
// a few hundred bytes each, so about 10 MB. 0 turns task tracking off.
inline constexpr std::size_t kDefaultTaskHistory = 20000;

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
  std::size_t queue_memory_messages = kDefaultQueueMemoryMessages;
  std::uint64_t queue_memory_bytes = kDefaultQueueMemoryBytes;

  // AMQPS: a second listener when tls_cert is set.
  std::uint16_t tls_port = kDefaultTlsPort;
  std::string tls_cert;  // PEM certificate chain
  std::string tls_key;   // PEM private key
  std::string tls_ca;    // PEM CA bundle: when set, clients must present a certificate it signed
  std::uint16_t http_tls_port = 0;  // management API over HTTPS (same certificate); 0: off

  std::size_t max_connections = kDefaultMaxConnections;
  std::size_t max_consumers_per_channel = kDefaultMaxConsumersPerChannel;
  std::size_t max_queues = kDefaultMaxQueues;  // per vhost, as RabbitMQ's max-queues vhost limit
  std::uint64_t memory_high_watermark = kDefaultMemoryHighWatermark;
  std::uint64_t disk_free_limit = kDefaultDiskFreeLimit;
  std::size_t task_history = kDefaultTaskHistory;
  // How long writes nobody waits on (publishes without confirms, acks) may be
  // held before they are written and synced (store::kDefaultWriteBehindMs);
  // 0: written at the end of each loop turn.
  std::uint32_t store_write_behind_ms = kDefaultStoreWriteBehindMs;
};

}  // namespace mb::broker
