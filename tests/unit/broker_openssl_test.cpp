// broker/openssl/: OpenSSL loaded on first use through trampolines.
//
// Test concerns
//   [x] libssl and libcrypto are not mapped before the first OpenSSL call
//   [x] the first call, made with four arguments through the first-call entry, loads
//       OpenSSL and reaches the real function with its arguments intact
//   [x] later calls go straight to OpenSSL; load() then reports success
//   [x] asio::ssl runs on top: a context, its options, an OpenSSL error message
//   [ ] the TLS handshake itself: tests/e2e/test_tls.py (real clients, AMQPS)
//   [ ] a missing libssl.so.3: the abort path is not run (it ends the process)
#include <doctest/doctest.h>
#include <openssl/bio.h>

#include <unistd.h>

#include <asio/ssl.hpp>
#include <cstdio>
#include <fstream>
#include <string>

#include "broker/openssl/loader.hpp"

using namespace mb;

namespace {

bool mapped(const std::string& library) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);)
    if (line.find(library) != std::string::npos) return true;
  return false;
}

}  // namespace

// doctest runs the cases of a file in the order they are written.
TEST_CASE("the first OpenSSL call loads it, with its arguments intact") {
  REQUIRE_FALSE(openssl::loaded());
  REQUIRE_FALSE(mapped("libssl.so"));
  REQUIRE_FALSE(mapped("libcrypto.so"));

  BIO* a = nullptr;
  BIO* b = nullptr;
  REQUIRE(BIO_new_bio_pair(&a, 4096, &b, 8192) == 1);  // rdi, rsi, rdx, rcx through the first-call entry
  CHECK(openssl::loaded());
  CHECK(mapped("libssl.so"));
  CHECK(mapped("libcrypto.so"));
  REQUIRE(a != nullptr);
  REQUIRE(b != nullptr);

  // Each side's buffer has the size given for it.
  const std::string big(10000, 'x');
  CHECK(BIO_write(a, big.data(), static_cast<int>(big.size())) == 4096);
  CHECK(BIO_write(b, big.data(), static_cast<int>(big.size())) == 8192);
  std::string got(10000, '\0');
  CHECK(BIO_read(b, got.data(), static_cast<int>(got.size())) == 4096);
  CHECK(BIO_read(a, got.data(), static_cast<int>(got.size())) == 8192);
  CHECK(got.substr(0, 8192) == big.substr(0, 8192));
  BIO_free(a);
  BIO_free(b);

  std::string error;
  CHECK(openssl::load(&error));
  CHECK(error.empty());
}

TEST_CASE("asio::ssl runs on the loaded library") {
  asio::ssl::context ctx(asio::ssl::context::tls_server);
  ctx.set_options(asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
  const std::string path = "/tmp/mb-openssl-test-" + std::to_string(::getpid()) + ".pem";
  std::ofstream(path) << "not a certificate\n";
  asio::error_code ec;
  ctx.use_certificate_chain_file(path, ec);
  std::remove(path.c_str());
  CHECK(ec);  // OpenSSL's PEM error, read with ERR_get_error
  CHECK(ec.category() == asio::error::get_ssl_category());
  CHECK_FALSE(ec.message().empty());  // ERR_reason_error_string
  MESSAGE("OpenSSL says: " << ec.message());
}
