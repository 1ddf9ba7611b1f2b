// Golden frames captured from real clients (tests/data/frames/*.hex; see
// tests/data/README.md): '#' lines are comments, the rest is hex.
#pragma once

#include <doctest/doctest.h>

#include <cctype>
#include <fstream>
#include <string>

inline std::string load_hex(const std::string& name) {
  std::ifstream in(std::string(MB_TEST_DATA_DIR) + "/frames/" + name + ".hex");
  REQUIRE_MESSAGE(in.good(), "missing golden file " << name);
  std::string line, hex;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '#') continue;
    for (char c : line)
      if (std::isxdigit(static_cast<unsigned char>(c))) hex.push_back(c);
  }
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}
