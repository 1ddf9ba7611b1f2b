// headers.cpp: field table <-> Value conversions.
#include "common/client/headers.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/amqp/field_skip.hpp"

namespace mb::client {

task::Value field_to_value(const amqp::FieldValue& fv) {
  return std::visit(
      [](const auto& x) -> task::Value {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, amqp::Void>) {
          return task::Value();
        } else if constexpr (std::is_same_v<T, bool>) {
          return task::Value(x);
        } else if constexpr (std::is_integral_v<T>) {
          return task::Value(static_cast<std::int64_t>(x));
        } else if constexpr (std::is_floating_point_v<T>) {
          return task::Value(static_cast<double>(x));
        } else if constexpr (std::is_same_v<T, amqp::Decimal>) {
          return task::Value(static_cast<double>(x.value) / std::pow(10.0, x.scale));
        } else if constexpr (std::is_same_v<T, std::string>) {
          return task::Value(x);
        } else if constexpr (std::is_same_v<T, amqp::FieldArray>) {
          task::List l;
          for (const auto& e : x) l.push_back(field_to_value(e));
          return task::Value(std::move(l));
        } else if constexpr (std::is_same_v<T, amqp::Timestamp>) {
          return task::Value(static_cast<std::int64_t>(x.seconds));
        } else if constexpr (std::is_same_v<T, amqp::FieldTable>) {
          return task::Value(table_to_map(x));
        } else if constexpr (std::is_same_v<T, amqp::ByteArray>) {
          return task::Value(task::Bytes(x.bytes));
        } else {
          return task::Value();
        }
      },
      fv.v);
}

task::Map table_to_map(const amqp::FieldTable& t) {
  task::Map m;
  for (const auto& e : t.entries) m.insert_or_assign(e.name, field_to_value(e.value));
  return m;
}

namespace {

// keys' position of name, or keys.size().
std::size_t position(std::span<const std::string_view> keys, std::string_view name) {
  return static_cast<std::size_t>(std::find(keys.begin(), keys.end(), name) - keys.begin());
}

}  // namespace

void read_table(const amqp::FieldTable& t, std::span<const std::string_view> keys,
                std::span<std::optional<task::Value>> out) {
  for (const auto& e : t.entries)
    if (const std::size_t i = position(keys, e.name); i < keys.size()) out[i] = field_to_value(e.value);
}

void read_table(std::string_view encoded_table, std::span<const std::string_view> keys,
                std::span<std::optional<task::Value>> out) {
  amqp::Reader outer(encoded_table);
  amqp::Reader r(outer.take(outer.u32()));
  while (!r.empty()) {
    if (const std::size_t i = position(keys, r.shortstr()); i < keys.size()) {
      out[i] = field_to_value(amqp::decode_field_value(r));
    } else {
      amqp::skip_field_value(r);
    }
  }
}

amqp::FieldValue value_to_field(const task::Value& v) {
  switch (v.kind()) {
    case task::Kind::kNull: return amqp::FieldValue(amqp::Void{});
    case task::Kind::kBool: return amqp::FieldValue(v.as_bool());
    case task::Kind::kInt: {
      auto i = v.as_int();
      if (i >= std::numeric_limits<std::int32_t>::min() && i <= std::numeric_limits<std::int32_t>::max())
        return amqp::FieldValue(static_cast<std::int32_t>(i));
      return amqp::FieldValue(static_cast<std::int64_t>(i));
    }
    case task::Kind::kDouble: return amqp::FieldValue(v.as_double());
    case task::Kind::kString: return amqp::FieldValue(v.as_string());
    case task::Kind::kBytes: return amqp::FieldValue(amqp::ByteArray{v.as_bytes().data});
    case task::Kind::kList: {
      amqp::FieldArray a;
      for (const auto& e : v.as_list()) a.push_back(value_to_field(e));
      return amqp::FieldValue(std::move(a));
    }
    case task::Kind::kMap: return amqp::FieldValue(map_to_table(v.as_map()));
  }
  return amqp::FieldValue(amqp::Void{});
}

amqp::FieldTable map_to_table(const task::Map& m) {
  amqp::FieldTable t;
  for (const auto& [k, v] : m) t.entries.push_back(amqp::FieldEntry{k, value_to_field(v)});
  return t;
}

}  // namespace mb::client
