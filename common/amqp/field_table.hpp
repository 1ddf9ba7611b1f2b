// AMQP field tables and arrays with the types RabbitMQ uses (errata section 3,
// "Qpid/Rabbit" column): t b B s u I i l f d D S A T F V x. 'L' is also read,
// as a signed 64-bit integer like 'l', because py-amqp writes it and RabbitMQ
// accepts it; it is written back as 'l'.
//
// A FieldTable keeps the wire's order (a vector of entries, linear lookup: the
// tables on the wire have a handful of keys). Nesting depth is limited so a
// peer cannot exhaust the stack.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/amqp/bytes.hpp"

namespace mb::amqp {

inline constexpr int kMaxTableDepth = 32;  // RabbitMQ clients never nest beyond a few levels.

struct FieldValue;
struct FieldEntry;

struct Void {
  bool operator==(const Void&) const = default;
};
struct Decimal {
  std::uint8_t scale = 0;
  std::int32_t value = 0;  // signed, per the errata
  bool operator==(const Decimal&) const = default;
};
struct Timestamp {
  std::uint64_t seconds = 0;
  bool operator==(const Timestamp&) const = default;
};
// 'x': a byte array, distinct from the long string 'S'.
struct ByteArray {
  std::string bytes;
  bool operator==(const ByteArray&) const = default;
};

using FieldArray = std::vector<FieldValue>;

struct FieldTable {
  std::vector<FieldEntry> entries;

  const FieldValue* find(std::string_view key) const;
  FieldValue* find(std::string_view key);
  // Replaces the value of key, or appends it.
  void set(std::string_view key, FieldValue value);
  bool erase(std::string_view key);
  bool empty() const { return entries.empty(); }
  bool operator==(const FieldTable&) const;
};

struct FieldValue {
  using Variant = std::variant<Void, bool, std::int8_t, std::uint8_t, std::int16_t, std::uint16_t,
                               std::int32_t, std::uint32_t, std::int64_t, float, double, Decimal,
                               std::string, FieldArray, Timestamp, FieldTable, ByteArray>;
  Variant v;

  // The converting constructors are defined below FieldEntry: constructing the
  // variant needs FieldTable's destructor, hence a complete FieldEntry (clang
  // rejects the in-class definitions; GCC happened to accept them).
  FieldValue() = default;
  template <typename T>
    requires std::is_constructible_v<Variant, T&&>
  FieldValue(T&& x);                  // NOLINT(google-explicit-constructor)
  FieldValue(const char* s);          // NOLINT(google-explicit-constructor)
  FieldValue(std::string_view s);     // NOLINT(google-explicit-constructor)

  bool operator==(const FieldValue& o) const { return v == o.v; }

  // The value as a signed integer when it is any integer type (arguments such
  // as x-message-ttl arrive as b, s, I, l, ... depending on the client).
  std::optional<std::int64_t> as_int() const;
  // The value as a string when it is a long string or byte array.
  std::optional<std::string_view> as_string() const;
  const FieldTable* as_table() const { return std::get_if<FieldTable>(&v); }
  const FieldArray* as_array() const { return std::get_if<FieldArray>(&v); }
  std::optional<bool> as_bool() const;
};

struct FieldEntry {
  std::string name;
  FieldValue value;
  bool operator==(const FieldEntry&) const = default;
};

template <typename T>
  requires std::is_constructible_v<FieldValue::Variant, T&&>
inline FieldValue::FieldValue(T&& x) : v(std::forward<T>(x)) {}
inline FieldValue::FieldValue(const char* s) : v(std::string(s)) {}
inline FieldValue::FieldValue(std::string_view s) : v(std::string(s)) {}

// Decodes a length-prefixed table; the length bounds the parse, so a bad inner
// length cannot run past it. Unknown type tags throw DecodeError.
FieldTable decode_table(Reader& r, int depth = 0);
void encode_table(Writer& w, const FieldTable& t);
FieldValue decode_field_value(Reader& r, int depth = 0);
void encode_field_value(Writer& w, const FieldValue& v);

// Encoded size in bytes, including the 4-byte length prefix.
std::size_t encoded_table_size(const FieldTable& t);

}  // namespace mb::amqp
