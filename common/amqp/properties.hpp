// Basic content properties (the 14 fields of class basic) and the content
// header frame payload.
//
// The broker keeps properties in their encoded form (flags + fields, exactly as
// received) so a delivery passes them through byte for byte; it decodes only
// the few fields it acts on (PropertiesSummary) and the full set only when it
// must rewrite them (dead-lettering, headers exchange).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/amqp/bytes.hpp"
#include "common/amqp/field_table.hpp"

namespace mb::amqp {

struct BasicProperties {
  std::optional<std::string> content_type;
  std::optional<std::string> content_encoding;
  std::optional<FieldTable> headers;
  std::optional<std::uint8_t> delivery_mode;
  std::optional<std::uint8_t> priority;
  std::optional<std::string> correlation_id;
  std::optional<std::string> reply_to;
  std::optional<std::string> expiration;
  std::optional<std::string> message_id;
  std::optional<std::uint64_t> timestamp;
  std::optional<std::string> type;
  std::optional<std::string> user_id;
  std::optional<std::string> app_id;
  std::optional<std::string> cluster_id;

  bool operator==(const BasicProperties&) const = default;
};

// Decodes flags + property list (what follows body-size in a content header).
BasicProperties decode_properties(std::string_view encoded);
// The same, but the headers table is kept as sent (its length prefix
// included) in encoded_headers, cleared when there is none, and headers stays
// empty: for readers that need a few of many headers. Only the table's length
// is checked here; whoever reads it meets what else is malformed.
BasicProperties decode_properties(std::string_view encoded, std::string& encoded_headers);
void encode_properties(Writer& w, const BasicProperties& p);
std::string encode_properties(const BasicProperties& p);

// The fields the broker needs for every message, read without allocating.
struct PropertiesSummary {
  std::uint8_t delivery_mode = 0;  // 2 = persistent
  std::uint8_t priority = 0;
  bool has_priority = false;
  bool has_headers = false;
  std::string_view content_type;    // views into the encoded bytes; empty when absent
  std::string_view headers;         // the encoded field table, length prefix included
  std::string_view correlation_id;
  std::string_view expiration;  // view into the encoded bytes; empty when absent
  std::string_view user_id;
  std::string_view reply_to;
  bool has_expiration = false;
  bool has_user_id = false;
};
PropertiesSummary summarize_properties(std::string_view encoded);

// Content header frame payload: class id, weight, body size, then properties.
struct ContentHeader {
  std::uint16_t class_id = 60;
  std::uint64_t body_size = 0;
  std::string_view properties;  // encoded flags + fields, a view into the frame
};
ContentHeader decode_content_header(std::string_view payload);
void encode_content_header(Writer& w, std::uint16_t class_id, std::uint64_t body_size,
                           std::string_view encoded_properties);

}  // namespace mb::amqp
