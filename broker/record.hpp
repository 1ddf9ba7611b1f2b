// Durable metadata records: the broker keeps exchanges, queues, bindings,
// users, vhosts and permissions in the store as AMQP field tables (one
// encoding, already fuzzed and tested, readable by any future version that
// ignores keys it does not know). These are the few helpers that read and
// write them; a missing or mistyped key reads as empty.
#pragma once

#include <string>
#include <string_view>

#include "common/amqp/bytes.hpp"
#include "common/amqp/field_table.hpp"

namespace mb::broker::record {

inline std::string encode(const amqp::FieldTable& t) {
  std::string out;
  amqp::Writer w(out);
  amqp::encode_table(w, t);
  return out;
}

// Throws amqp::DecodeError on a corrupt record.
inline amqp::FieldTable decode(std::string_view blob) {
  amqp::Reader r(blob);
  return amqp::decode_table(r);
}

inline std::string str(const amqp::FieldTable& t, std::string_view key) {
  const auto* v = t.find(key);
  auto s = v ? v->as_string() : std::nullopt;
  return s ? std::string(*s) : std::string();
}

inline bool flag(const amqp::FieldTable& t, std::string_view key) {
  const auto* v = t.find(key);
  return v && v->as_bool().value_or(false);
}

inline amqp::FieldTable table(const amqp::FieldTable& t, std::string_view key) {
  const auto* v = t.find(key);
  return v && v->as_table() ? *v->as_table() : amqp::FieldTable{};
}

}  // namespace mb::broker::record
