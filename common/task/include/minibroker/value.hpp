// value.hpp: mb::task::Value, the JSON-like value task arguments, keyword
// arguments and results are made of: null, bool, integer, double, string,
// bytes, list and map. Header-only: task libraries include it through
// <minibroker/task.hpp>; the worker and producer convert it to and from Cap'n
// Proto (proto/value.capnp) and JSON (common/task/celery.hpp).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace mb::task {

// Raw bytes, distinct from text (Cap'n Proto Data).
struct Bytes {
  std::string data;
  Bytes() = default;
  explicit Bytes(std::string d) : data(std::move(d)) {}
  bool operator==(const Bytes&) const = default;
};

class Value;
using List = std::vector<Value>;
using Map = std::map<std::string, Value, std::less<>>;

enum class Kind : std::uint8_t { kNull, kBool, kInt, kDouble, kString, kBytes, kList, kMap };

class Value {
 public:
  using Variant = std::variant<std::nullptr_t, bool, std::int64_t, double, std::string, Bytes, List, Map>;

  Value() : v_(nullptr) {}
  Value(std::nullptr_t) : v_(nullptr) {}                        // NOLINT(google-explicit-constructor)
  Value(bool b) : v_(b) {}                                      // NOLINT
  template <typename T>
    requires(std::is_integral_v<T> && !std::is_same_v<T, bool>)
  Value(T i) : v_(static_cast<std::int64_t>(i)) {}              // NOLINT
  Value(double d) : v_(d) {}                                    // NOLINT
  Value(float d) : v_(static_cast<double>(d)) {}                // NOLINT
  Value(std::string s) : v_(std::move(s)) {}                    // NOLINT
  Value(std::string_view s) : v_(std::string(s)) {}             // NOLINT
  Value(const char* s) : v_(std::string(s)) {}                  // NOLINT
  Value(Bytes b) : v_(std::move(b)) {}                          // NOLINT
  Value(List l) : v_(std::move(l)) {}                           // NOLINT
  Value(Map m) : v_(std::move(m)) {}                            // NOLINT

  Kind kind() const { return static_cast<Kind>(v_.index()); }
  bool is_null() const { return kind() == Kind::kNull; }
  bool is_bool() const { return kind() == Kind::kBool; }
  bool is_int() const { return kind() == Kind::kInt; }
  bool is_double() const { return kind() == Kind::kDouble; }
  bool is_number() const { return is_int() || is_double(); }
  bool is_string() const { return kind() == Kind::kString; }
  bool is_bytes() const { return kind() == Kind::kBytes; }
  bool is_list() const { return kind() == Kind::kList; }
  bool is_map() const { return kind() == Kind::kMap; }

  // Unchecked accessors (std::bad_variant_access on the wrong kind).
  bool as_bool() const { return std::get<bool>(v_); }
  std::int64_t as_int() const { return std::get<std::int64_t>(v_); }
  double as_double() const { return is_int() ? static_cast<double>(as_int()) : std::get<double>(v_); }
  const std::string& as_string() const { return std::get<std::string>(v_); }
  std::string& as_string() { return std::get<std::string>(v_); }
  const Bytes& as_bytes() const { return std::get<Bytes>(v_); }
  const List& as_list() const { return std::get<List>(v_); }
  List& as_list() { return std::get<List>(v_); }
  const Map& as_map() const { return std::get<Map>(v_); }
  Map& as_map() { return std::get<Map>(v_); }

  // Map lookup; nullptr when this is not a map or has no such key.
  const Value* find(std::string_view key) const {
    if (!is_map()) return nullptr;
    auto it = as_map().find(key);
    return it == as_map().end() ? nullptr : &it->second;
  }

  const Variant& variant() const { return v_; }
  bool operator==(const Value& o) const { return v_ == o.v_; }

 private:
  Variant v_;
};

// "null", "bool", "int", ...: used in error messages.
inline std::string_view kind_name(Kind k) {
  constexpr std::string_view kNames[] = {"null", "bool", "int", "double", "string", "bytes", "list", "map"};
  return kNames[static_cast<int>(k)];
}

}  // namespace mb::task
