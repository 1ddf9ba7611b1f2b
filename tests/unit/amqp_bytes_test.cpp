// Unit tests for common/amqp/bytes.hpp: the checked big-endian Reader and the Writer.
//
// Concerns:
// [x] every reader (u8..u64, i8..i64, f32, f64, shortstr, longstr, take) rejects short input
//     with DecodeError, from every length below what it needs, without moving the cursor
// [x] integers are big-endian on the wire, both ways
// [x] signed values and floats (including NaN bits, -0.0, infinities) round-trip bit-exactly
// [x] shortstr/longstr carry raw octets (NUL, 0xFF), lengths up to 255 / large
// [x] shortstr longer than 255 is truncated by the writer (documented behaviour)
// [x] patch_u32 overwrites a length prefix in place
// [x] a length prefix larger than the input is rejected before anything is read
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "common/amqp/bytes.hpp"

using mb::amqp::DecodeError;
using mb::amqp::Reader;
using mb::amqp::Writer;

namespace {

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int x : b) s.push_back(static_cast<char>(x));
  return s;
}

struct ReaderCase {
  const char* name;
  std::size_t needs;  // bytes the read needs from the input below
  std::function<void(Reader&)> read;
};

}  // namespace

TEST_CASE("integers are read big-endian") {
  const std::string in = bytes({0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08});
  CHECK(Reader(in).u8() == 0x01);
  CHECK(Reader(in).u16() == 0x0102);
  CHECK(Reader(in).u32() == 0x01020304u);
  CHECK(Reader(in).u64() == 0x0102030405060708ull);
  const std::string neg = bytes({0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8});
  CHECK(Reader(neg).i8() == -1);
  CHECK(Reader(neg).i16() == -2);
  CHECK(Reader(neg).i32() == static_cast<std::int32_t>(0xfffefdfc));
  CHECK(Reader(neg).i64() == static_cast<std::int64_t>(0xfffefdfcfbfaf9f8ull));
}

TEST_CASE("integers are written big-endian") {
  std::string out;
  Writer w(out);
  w.u8(0x01);
  w.u16(0x0203);
  w.u32(0x04050607);
  w.u64(0x08090a0b0c0d0e0full);
  w.i8(-1);
  w.i16(-2);
  w.i32(-3);
  w.i64(-4);
  CHECK(out == bytes({0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
                      0xff, 0xff, 0xfe, 0xff, 0xff, 0xff, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfc}));
  CHECK(w.size() == out.size());
}

TEST_CASE("floats are IEEE 754 big-endian") {
  std::string out;
  Writer w(out);
  w.f32(1.0f);
  w.f64(-2.5);
  CHECK(out == bytes({0x3f, 0x80, 0x00, 0x00, 0xc0, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}));
  Reader r(out);
  CHECK(r.f32() == 1.0f);
  CHECK(r.f64() == -2.5);
  CHECK(r.empty());
}

TEST_CASE("writer and reader round-trip every type") {
  const std::vector<std::uint64_t> u64s = {0, 1, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x7fffffff,
                                           0x80000000, 0xffffffff, 0x100000000ull,
                                           std::numeric_limits<std::uint64_t>::max()};
  for (std::uint64_t v : u64s) {
    CAPTURE(v);
    std::string out;
    Writer w(out);
    w.u8(static_cast<std::uint8_t>(v));
    w.u16(static_cast<std::uint16_t>(v));
    w.u32(static_cast<std::uint32_t>(v));
    w.u64(v);
    w.i8(static_cast<std::int8_t>(v));
    w.i16(static_cast<std::int16_t>(v));
    w.i32(static_cast<std::int32_t>(v));
    w.i64(static_cast<std::int64_t>(v));
    CHECK(out.size() == 1 + 2 + 4 + 8 + 1 + 2 + 4 + 8);
    Reader r(out);
    CHECK(r.u8() == static_cast<std::uint8_t>(v));
    CHECK(r.u16() == static_cast<std::uint16_t>(v));
    CHECK(r.u32() == static_cast<std::uint32_t>(v));
    CHECK(r.u64() == v);
    CHECK(r.i8() == static_cast<std::int8_t>(v));
    CHECK(r.i16() == static_cast<std::int16_t>(v));
    CHECK(r.i32() == static_cast<std::int32_t>(v));
    CHECK(r.i64() == static_cast<std::int64_t>(v));
    CHECK(r.empty());
  }

  const std::vector<double> doubles = {0.0, -0.0, 1.5, -1e300, std::numeric_limits<double>::infinity(),
                                       std::numeric_limits<double>::denorm_min(),
                                       std::numeric_limits<double>::quiet_NaN()};
  for (double d : doubles) {
    std::string out;
    Writer w(out);
    w.f64(d);
    w.f32(static_cast<float>(d));
    Reader r(out);
    CHECK(std::bit_cast<std::uint64_t>(r.f64()) == std::bit_cast<std::uint64_t>(d));
    CHECK(std::bit_cast<std::uint32_t>(r.f32()) == std::bit_cast<std::uint32_t>(static_cast<float>(d)));
  }
}

TEST_CASE("strings are raw octets with length prefixes") {
  const std::string raw = bytes({0x00, 'a', 0xff, 0x00});
  std::string out;
  Writer w(out);
  w.shortstr(raw);
  w.longstr(raw);
  w.shortstr("");
  w.longstr("");
  CHECK(out == bytes({4, 0, 'a', 0xff, 0, 0, 0, 0, 4, 0, 'a', 0xff, 0, 0, 0, 0, 0, 0}));
  Reader r(out);
  CHECK(r.shortstr() == raw);
  CHECK(r.longstr() == raw);
  CHECK(r.shortstr().empty());
  CHECK(r.longstr().empty());
  CHECK(r.empty());

  const std::string s255(255, 'x');
  const std::string big(70000, 'y');
  out.clear();
  w.shortstr(s255);
  w.longstr(big);
  Reader r2(out);
  CHECK(r2.shortstr() == s255);
  CHECK(r2.longstr() == big);
  CHECK(r2.empty());
}

TEST_CASE("a shortstr longer than 255 bytes is truncated to 255 by the writer") {
  std::string out;
  Writer w(out);
  w.shortstr(std::string(300, 'z'));
  CHECK(out.size() == 256);
  CHECK(static_cast<std::uint8_t>(out[0]) == 255);
  Reader r(out);
  CHECK(r.shortstr() == std::string(255, 'z'));
}

TEST_CASE("patch_u32 overwrites a big-endian length prefix in place") {
  std::string out;
  Writer w(out);
  w.u8(0xaa);
  const std::size_t at = w.size();
  w.u32(0);
  w.raw("hello");
  w.patch_u32(at, 0x01020305);
  CHECK(out == bytes({0xaa, 0x01, 0x02, 0x03, 0x05, 'h', 'e', 'l', 'l', 'o'}));
  CHECK(&w.buffer() == &out);
}

TEST_CASE("every reader rejects every short input and does not move on failure") {
  // Each read below needs exactly `needs` bytes of this input; every shorter
  // prefix must throw DecodeError.
  const std::string full = bytes({0x05, 'a', 'b', 'c', 'd', 'e'});           // shortstr "abcde"
  const std::string longfull = bytes({0, 0, 0, 3, 'x', 'y', 'z'});           // longstr "xyz"
  const std::string eight = bytes({1, 2, 3, 4, 5, 6, 7, 8});
  const std::vector<ReaderCase> cases = {
      {"u8", 1, [](Reader& r) { r.u8(); }},
      {"i8", 1, [](Reader& r) { r.i8(); }},
      {"u16", 2, [](Reader& r) { r.u16(); }},
      {"i16", 2, [](Reader& r) { r.i16(); }},
      {"u32", 4, [](Reader& r) { r.u32(); }},
      {"i32", 4, [](Reader& r) { r.i32(); }},
      {"f32", 4, [](Reader& r) { r.f32(); }},
      {"u64", 8, [](Reader& r) { r.u64(); }},
      {"i64", 8, [](Reader& r) { r.i64(); }},
      {"f64", 8, [](Reader& r) { r.f64(); }},
      {"take(5)", 5, [](Reader& r) { r.take(5); }},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    for (std::size_t n = 0; n < c.needs; ++n) {
      CAPTURE(n);
      Reader r(std::string_view(eight).substr(0, n));
      CHECK_THROWS_AS(c.read(r), DecodeError);
      CHECK(r.position() == 0);
      CHECK(r.remaining() == n);
    }
    Reader ok(std::string_view(eight).substr(0, c.needs));
    CHECK_NOTHROW(c.read(ok));
    CHECK(ok.empty());
  }
  for (std::size_t n = 0; n < full.size(); ++n) {
    CAPTURE(n);
    Reader r(std::string_view(full).substr(0, n));
    CHECK_THROWS_AS(r.shortstr(), DecodeError);
  }
  for (std::size_t n = 0; n < longfull.size(); ++n) {
    CAPTURE(n);
    Reader r(std::string_view(longfull).substr(0, n));
    CHECK_THROWS_AS(r.longstr(), DecodeError);
  }
  Reader ok1(full);
  CHECK(ok1.shortstr() == "abcde");
  Reader ok2(longfull);
  CHECK(ok2.longstr() == "xyz");
}

TEST_CASE("a huge length prefix is rejected without reading or allocating") {
  const std::string in = bytes({0xff, 0xff, 0xff, 0xff, 'a'});
  Reader r(in);
  CHECK_THROWS_AS(r.longstr(), DecodeError);
  Reader r2(in);
  CHECK_THROWS_AS(r2.take(std::numeric_limits<std::size_t>::max()), DecodeError);
}

TEST_CASE("reader tracks position and remaining") {
  const std::string in = bytes({1, 2, 3, 4, 5});
  Reader r(in);
  CHECK(r.remaining() == 5);
  CHECK_FALSE(r.empty());
  r.u16();
  CHECK(r.position() == 2);
  CHECK(r.remaining() == 3);
  CHECK(r.take(3) == bytes({3, 4, 5}));
  CHECK(r.empty());
  CHECK_THROWS_AS(r.u8(), DecodeError);
  CHECK(r.take(0).empty());
}

TEST_CASE("UnknownMethod carries the ids and is a DecodeError") {
  const mb::amqp::UnknownMethod e(60, 99);
  CHECK(e.class_id() == 60);
  CHECK(e.method_id() == 99);
  CHECK(std::string(e.what()) == "unknown method 60/99");
  const DecodeError& base = e;
  CHECK(std::string(base.what()) == "unknown method 60/99");
}
