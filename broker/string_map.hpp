// Hash maps keyed by std::string that can be looked up with a string_view
// without allocating (heterogeneous lookup), for per-message paths.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>

namespace mb::broker {

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

}  // namespace mb::broker

#if defined(__GLIBCXX__)
// libstdc++ keeps each node's hash code only for hash functions it does not
// count as fast (std::__is_fast_hash), as it does for std::hash<std::string>;
// any other hash counts as fast. Without the stored code, every step along a
// bucket's chain re-hashes the next node's key to see where the bucket ends,
// and erase, insert into an empty bucket and rehash re-hash keys too: for keys
// past the short-string buffer that is a read of the key's heap block, a cache
// miss when the table is large (the task tracker keeps up to 20,000 ids).
// libstdc++ documents specialising the trait for one's own hash to get the
// codes stored; it changes the table's layout, and StringMap never crosses a
// library boundary.
template <>
struct std::__is_fast_hash<mb::broker::StringHash> : std::false_type {};
#endif
