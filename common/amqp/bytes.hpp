// Checked big-endian readers and writers over AMQP wire bytes.
//
// Reader borrows a std::string_view (HELD NOT OWNED) and throws DecodeError on
// any read past its end, so no decoder can over-read whatever a peer sends.
// Writer appends to a std::string it borrows. Bytes are carried as
// std::string_view / std::string: AMQP strings are raw octets (errata 16).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

namespace mb::amqp {

// Malformed or truncated input. Decoders throw it; the connection turns it into
// the spec's reply code (501 for frames, 502 for method arguments).
class DecodeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A class/method id pair the spec does not define (540 NOT_IMPLEMENTED).
class UnknownMethod : public DecodeError {
 public:
  UnknownMethod(std::uint16_t class_id, std::uint16_t method_id)
      : DecodeError("unknown method " + std::to_string(class_id) + "/" + std::to_string(method_id)),
        class_id_(class_id),
        method_id_(method_id) {}
  std::uint16_t class_id() const { return class_id_; }
  std::uint16_t method_id() const { return method_id_; }

 private:
  std::uint16_t class_id_;
  std::uint16_t method_id_;
};

// Stores v big-endian at p, which has room for it (Writer's, and the fused
// delivery writer's, which fills a buffer sized beforehand).
template <typename T>
void store_be(char* p, T v) {
  for (std::size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<char>(v >> (8 * (sizeof(T) - 1 - i)));
}

// A shortstr longer than 255 bytes is a programming error on our side; it is
// truncated rather than producing an undecodable frame.
inline std::string_view clip_shortstr(std::string_view s) { return s.size() > 255 ? s.substr(0, 255) : s; }

class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}

  std::size_t remaining() const { return data_.size() - pos_; }
  bool empty() const { return pos_ == data_.size(); }
  std::size_t position() const { return pos_; }

  std::uint8_t u8() { return static_cast<std::uint8_t>(take(1)[0]); }
  std::uint16_t u16() { return load<std::uint16_t>(); }
  std::uint32_t u32() { return load<std::uint32_t>(); }
  std::uint64_t u64() { return load<std::uint64_t>(); }
  std::int8_t i8() { return static_cast<std::int8_t>(u8()); }
  std::int16_t i16() { return static_cast<std::int16_t>(u16()); }
  std::int32_t i32() { return static_cast<std::int32_t>(u32()); }
  std::int64_t i64() { return static_cast<std::int64_t>(u64()); }
  float f32() { return std::bit_cast<float>(u32()); }
  double f64() { return std::bit_cast<double>(u64()); }

  std::string_view shortstr() { return take(u8()); }
  std::string_view longstr() { return take(u32()); }

  // The next n bytes, checked.
  std::string_view take(std::size_t n) {
    if (n > remaining()) throw DecodeError("truncated input");
    std::string_view v = data_.substr(pos_, n);
    pos_ += n;
    return v;
  }

 private:
  template <typename T>
  T load() {
    std::string_view b = take(sizeof(T));
    T v;
    std::memcpy(&v, b.data(), sizeof(T));
    if constexpr (std::endian::native == std::endian::little) v = byteswap(v);
    return v;
  }
  template <typename T>
  static T byteswap(T v) {
    if constexpr (sizeof(T) == 2) return static_cast<T>(__builtin_bswap16(v));
    if constexpr (sizeof(T) == 4) return static_cast<T>(__builtin_bswap32(v));
    if constexpr (sizeof(T) == 8) return static_cast<T>(__builtin_bswap64(v));
  }

  std::string_view data_;
  std::size_t pos_ = 0;
};

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}

  std::size_t size() const { return out_.size(); }
  std::string& buffer() { return out_; }

  void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u16(std::uint16_t v) { store(v); }
  void u32(std::uint32_t v) { store(v); }
  void u64(std::uint64_t v) { store(v); }
  void i8(std::int8_t v) { u8(static_cast<std::uint8_t>(v)); }
  void i16(std::int16_t v) { u16(static_cast<std::uint16_t>(v)); }
  void i32(std::int32_t v) { u32(static_cast<std::uint32_t>(v)); }
  void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
  void f32(float v) { u32(std::bit_cast<std::uint32_t>(v)); }
  void f64(double v) { u64(std::bit_cast<std::uint64_t>(v)); }
  void raw(std::string_view b) { out_.append(b); }

  void shortstr(std::string_view s) {
    s = clip_shortstr(s);
    u8(static_cast<std::uint8_t>(s.size()));
    raw(s);
  }
  void longstr(std::string_view s) {
    u32(static_cast<std::uint32_t>(s.size()));
    raw(s);
  }

  // Overwrites a big-endian u32 at an earlier offset (length prefixes).
  void patch_u32(std::size_t at, std::uint32_t v) {
    for (int i = 3; i >= 0; --i) {
      out_[at + static_cast<std::size_t>(i)] = static_cast<char>(v & 0xff);
      v >>= 8;
    }
  }

 private:
  template <typename T>
  void store(T v) {
    char b[sizeof(T)];
    store_be(b, v);
    out_.append(b, sizeof(T));
  }

  std::string& out_;
};

}  // namespace mb::amqp
