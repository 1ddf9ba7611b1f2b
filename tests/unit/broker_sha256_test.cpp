// SHA-256 (broker/sha256.*) and the password hashes built on it
// (broker/access.*), which no longer use OpenSSL.
//
// Test concerns
//   [x] FIPS 180-4 / NIST examples: "", "abc", the 448- and 896-bit messages,
//       one million 'a'
//   [x] every padding boundary (lengths 0..200), in one update and byte by
//       byte, against OpenSSL's EVP SHA-256
//   [x] hashes made the old way (OpenSSL's EVP_Digest over salt ++ password)
//       still verify, and wrong passwords against them do not
//   [ ] RabbitMQ-exported hashes: covered by the known vector in
//       broker_access_test.cpp and the e2e import tests
#include <doctest/doctest.h>
#include <openssl/evp.h>

#include <random>
#include <string>

#include "broker/access.hpp"
#include "broker/sha256.hpp"

using mb::broker::Sha256;
namespace acl = mb::broker::access;

namespace {

std::string hex(const Sha256::Digest& d) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : d) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

// What the broker computed before: OpenSSL's SHA-256.
std::string openssl_sha256(std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  REQUIRE(EVP_Digest(data.data(), data.size(), out, &size, EVP_sha256(), nullptr) == 1);
  return std::string(reinterpret_cast<const char*>(out), size);
}

std::string bytes(const Sha256::Digest& d) { return std::string(reinterpret_cast<const char*>(d.data()), d.size()); }

}  // namespace

TEST_CASE("NIST examples (FIPS 180-4; SHA256.pdf, SHA2_Additional.pdf)") {
  CHECK(hex(Sha256::digest("")) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(hex(Sha256::digest("abc")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(hex(Sha256::digest("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(hex(Sha256::digest("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
                           "mnopqrstnopqrstu")) == "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  CHECK(hex(Sha256::digest(std::string(1000000, 'a'))) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("every length up to 200, in one piece and byte by byte, as OpenSSL") {
  std::mt19937 rng(42);
  for (std::size_t n = 0; n <= 200; ++n) {
    std::string data(n, '\0');
    for (char& c : data) c = static_cast<char>(rng());
    const std::string expected = openssl_sha256(data);
    CHECK(bytes(Sha256::digest(data)) == expected);
    Sha256 h;
    for (char c : data) h.update(std::string_view(&c, 1));
    CHECK(bytes(h.finish()) == expected);
  }
}

TEST_CASE("password hashes made with OpenSSL (before this file) still verify") {
  std::mt19937 rng(7);
  for (int i = 0; i < 100; ++i) {
    std::string salt(acl::kSaltSize, '\0'), password(static_cast<std::size_t>(rng() % 40), '\0');
    for (char& c : salt) c = static_cast<char>(rng());
    for (char& c : password) c = static_cast<char>(rng());
    const std::string old_hash = salt + openssl_sha256(salt + password);
    CHECK(acl::hash_password(password, salt) == old_hash);
    CHECK(acl::password_matches(old_hash, password));
    CHECK_FALSE(acl::password_matches(old_hash, password + "x"));
  }
}
