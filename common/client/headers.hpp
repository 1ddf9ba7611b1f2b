// headers.hpp: AMQP field tables <-> task Values, so the task layer
// (common/task) reads and writes message headers without the codec.
#pragma once

#include <optional>
#include <span>
#include <string_view>

#include "common/amqp/field_table.hpp"
#include "minibroker/value.hpp"

namespace mb::client {

task::Value field_to_value(const amqp::FieldValue& v);
task::Map table_to_map(const amqp::FieldTable& t);
// The values of the entries named in `keys`, into out by the key's position
// (out is keys' size; of equal names the last wins); the other entries are
// not converted.
void read_table(const amqp::FieldTable& t, std::span<const std::string_view> keys,
                std::span<std::optional<task::Value>> out);
// The same from an encoded table (length prefix included): the other entries
// are stepped over, not decoded. Throws amqp::DecodeError when it is malformed.
void read_table(std::string_view encoded_table, std::span<const std::string_view> keys,
                std::span<std::optional<task::Value>> out);
// Integers that fit become 'I' (signed 32-bit, as py-amqp sends), others 'l';
// strings 'S', bytes 'x', lists 'A', maps 'F', null 'V'.
amqp::FieldValue value_to_field(const task::Value& v);
amqp::FieldTable map_to_table(const task::Map& m);

}  // namespace mb::client
