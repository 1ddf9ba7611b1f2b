// See format.hpp.
#include "common/amqp/format.hpp"

#include <fmt/format.h>

namespace mb::amqp {

std::string to_string(const FieldValue& value) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Void>) return "void";
        else if constexpr (std::is_same_v<T, bool>) return x ? "true" : "false";
        else if constexpr (std::is_same_v<T, std::int8_t> || std::is_same_v<T, std::uint8_t>) return std::to_string(int{x});
        else if constexpr (std::is_integral_v<T>) return std::to_string(x);
        else if constexpr (std::is_floating_point_v<T>) return fmt::format("{}", x);
        else if constexpr (std::is_same_v<T, Decimal>) return fmt::format("{}e-{}", x.value, x.scale);
        else if constexpr (std::is_same_v<T, std::string>) return fmt::format("\"{}\"", x);
        else if constexpr (std::is_same_v<T, ByteArray>) return fmt::format("bytes({})", x.bytes.size());
        else if constexpr (std::is_same_v<T, Timestamp>) return fmt::format("ts({})", x.seconds);
        else if constexpr (std::is_same_v<T, FieldTable>) return to_string(x);
        else {
          std::string out = "[";
          for (std::size_t i = 0; i < x.size(); ++i) out += (i ? ", " : "") + to_string(x[i]);
          return out + "]";
        }
      },
      value.v);
}

std::string to_string(const FieldTable& t) {
  std::string out = "{";
  for (std::size_t i = 0; i < t.entries.size(); ++i)
    out += (i ? ", " : "") + t.entries[i].name + ": " + to_string(t.entries[i].value);
  return out + "}";
}

}  // namespace mb::amqp
