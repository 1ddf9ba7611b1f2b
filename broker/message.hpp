// A published message: immutable once assembled, shared by every queue it was
// routed to (stored once, referenced many times).
//
// Properties are kept in their encoded form, exactly as the publisher sent
// them, so deliveries pass them through byte for byte. The few fields the
// broker acts on are decoded once, at publish time.
//
// One allocation per message: the shared_ptr's control block, these fields and
// then the exchange name, routing key, properties and body bytes, in that
// order. A delivery reads the fields, the routing key and the body size from
// neighbouring cache lines of one block; with separately allocated strings,
// every message that waited in a long queue cost three cache misses there (and
// three mallocs and frees).
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string_view>

namespace mb::broker {

class Message;
using MessagePtr = std::shared_ptr<const Message>;

class Message {
 public:
  // A message with room for body_size bytes of body, to be written through
  // body_buffer() before the message is shared. The strings are copied.
  static std::shared_ptr<Message> create(std::string_view exchange, std::string_view routing_key,
                                         std::string_view properties, std::size_t body_size);
  // A message with every part given (the body copied too).
  static std::shared_ptr<Message> create(std::string_view exchange, std::string_view routing_key,
                                         std::string_view properties, std::string_view body) {
    auto m = create(exchange, routing_key, properties, body.size());
    if (!body.empty()) std::memcpy(m->body_buffer(), body.data(), body.size());
    return m;
  }

  std::string_view exchange() const { return {data_, exchange_size_}; }
  std::string_view routing_key() const { return {data_ + exchange_size_, routing_key_size_}; }
  std::string_view properties() const { return {data_ + exchange_size_ + routing_key_size_, properties_size_}; }
  std::string_view body() const { return {body_data(), body_size_}; }
  std::size_t body_size() const { return body_size_; }
  char* body_buffer() { return const_cast<char*>(body_data()); }

  bool persistent() const { return delivery_mode == 2; }

  std::uint64_t id = 0;  // broker-wide, increasing; the store's key
  std::uint8_t delivery_mode = 0;
  std::uint8_t priority = 0;
  bool has_headers = false;
  bool task = false;  // a task message the task tracker follows (its deliveries are reported)
  // Set by the durable store once the body is written, so a message routed to
  // several durable queues is stored once. Mutable: bookkeeping, not content.
  mutable bool stored = false;
  std::optional<std::int64_t> expiration_ms;  // per-message TTL from the expiration property
  // When the store first wrote it (ms since the epoch; 0: not read back from
  // the store). A message read back from disk gets its TTL from this time.
  std::int64_t stored_at_ms = 0;

 private:
  const char* body_data() const { return data_ + exchange_size_ + routing_key_size_ + properties_size_; }

  const char* data_ = nullptr;  // the bytes after the control block: exchange, routing key, properties, body
  std::uint32_t exchange_size_ = 0;
  std::uint32_t routing_key_size_ = 0;
  std::uint32_t properties_size_ = 0;
  std::uint32_t body_size_ = 0;
};

namespace detail {

// The allocator that makes create()'s one block: allocate_shared asks it for
// its control block (with the Message inside), and it adds the bytes that
// follow, reporting where they start. deallocate() frees the same size.
template <typename T>
struct TrailingBytesAllocator {
  using value_type = T;
  std::size_t extra;
  char** trailing;  // set by allocate(): the address of the extra bytes

  TrailingBytesAllocator(std::size_t e, char** t) : extra(e), trailing(t) {}
  template <typename U>
  TrailingBytesAllocator(const TrailingBytesAllocator<U>& o) : extra(o.extra), trailing(o.trailing) {}

  // Through std::allocator<char>, which uses sized delete where the compiler has it.
  T* allocate(std::size_t n) {
    char* p = std::allocator<char>().allocate(n * sizeof(T) + extra);
    *trailing = p + n * sizeof(T);
    return reinterpret_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) {
    std::allocator<char>().deallocate(reinterpret_cast<char*>(p), n * sizeof(T) + extra);
  }

  template <typename U>
  bool operator==(const TrailingBytesAllocator<U>& o) const {
    return extra == o.extra;
  }
};

}  // namespace detail

inline std::shared_ptr<Message> Message::create(std::string_view exchange, std::string_view routing_key,
                                                std::string_view properties, std::size_t body_size) {
  const std::size_t extra = exchange.size() + routing_key.size() + properties.size() + body_size;
  char* bytes = nullptr;
  auto m = std::allocate_shared<Message>(detail::TrailingBytesAllocator<Message>(extra, &bytes));
  m->data_ = bytes;
  m->exchange_size_ = static_cast<std::uint32_t>(exchange.size());
  m->routing_key_size_ = static_cast<std::uint32_t>(routing_key.size());
  m->properties_size_ = static_cast<std::uint32_t>(properties.size());
  m->body_size_ = static_cast<std::uint32_t>(body_size);
  char* p = bytes;
  for (std::string_view s : {exchange, routing_key, properties}) {
    if (!s.empty()) std::memcpy(p, s.data(), s.size());
    p += s.size();
  }
  return m;
}

}  // namespace mb::broker
