// SHA-256 (FIPS 180-4), for password hashes (broker/access.cpp): small and
// self-contained, so that hashing a password does not initialise OpenSSL,
// whose start-up costs about 2 MiB of resident memory in a broker that does
// not use TLS. Not for bulk data: it is simple, not fast.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace mb::broker {

class Sha256 {
 public:
  static constexpr std::size_t kDigestSize = 32;
  using Digest = std::array<unsigned char, kDigestSize>;

  Sha256();
  ~Sha256();  // wipes the state: it held the (salted) password
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(std::string_view data);
  // The digest of everything given to update(); the object is spent.
  Digest finish();

  static Digest digest(std::string_view data);

 private:
  void compress(const unsigned char* block);

  std::uint32_t state_[8];
  unsigned char buffer_[64];
  std::size_t buffered_ = 0;
  std::uint64_t length_ = 0;  // bytes given so far
};

}  // namespace mb::broker
