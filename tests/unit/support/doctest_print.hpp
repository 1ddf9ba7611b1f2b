// doctest printers for the containers the broker tests compare, so a failed
// CHECK shows both sides instead of "{?}". Include after <doctest/doctest.h>.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace doctest {

template <typename T>
struct StringMaker<std::vector<T>> {
  static String convert(const std::vector<T>& v) {
    String out = "{";
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i != 0) out += ", ";
      out += toString(v[i]);
    }
    out += "}";
    return out;
  }
};

}  // namespace doctest
