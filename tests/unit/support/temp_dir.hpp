// A fresh directory under the system's temp directory for one test, removed
// with everything in it when the TempDir goes out of scope.
#pragma once

#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <random>
#include <string>
#include <string_view>
#include <system_error>

namespace mb::test {

class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "minibroker_test") {
    namespace fs = std::filesystem;
    static std::atomic<unsigned> counter{0};
    std::random_device random;
    // create_directory fails on a name already taken: try again with another.
    for (int attempt = 0; attempt < 100 && path_.empty(); ++attempt) {
      fs::path p = fs::temp_directory_path() /
                   (std::string(prefix) + "." + std::to_string(::getpid()) + "." + std::to_string(counter++) + "." +
                    std::to_string(random()));
      std::error_code ec;
      if (fs::create_directory(p, ec)) path_ = p.string();
    }
    REQUIRE_MESSAGE(!path_.empty(), "cannot create a temporary directory");
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace mb::test
