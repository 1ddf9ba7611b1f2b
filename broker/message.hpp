// A published message: immutable once assembled, shared by every queue it was
// routed to (stored once, referenced many times).
//
// Properties are kept in their encoded form, exactly as the publisher sent
// them, so deliveries pass them through byte for byte. The few fields the
// broker acts on are decoded once, at publish time.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace mb::broker {

struct Message {
  std::uint64_t id = 0;  // broker-wide, increasing; the store's key
  std::string exchange;
  std::string routing_key;
  std::string properties;  // encoded flags + fields
  std::string body;
  std::uint8_t delivery_mode = 0;
  std::uint8_t priority = 0;
  std::optional<std::int64_t> expiration_ms;  // per-message TTL from the expiration property
  bool has_headers = false;
  bool task = false;  // a task message the task tracker follows (its deliveries are reported)
  // Set by the durable store once the body is written, so a message routed to
  // several durable queues is stored once. Mutable: bookkeeping, not content.
  mutable bool stored = false;
  // When the store first wrote it (ms since the epoch; 0: not read back from
  // the store). A message read back from disk gets its TTL from this time.
  std::int64_t stored_at_ms = 0;

  bool persistent() const { return delivery_mode == 2; }
  std::size_t body_size() const { return body.size(); }
};

using MessagePtr = std::shared_ptr<const Message>;

}  // namespace mb::broker
