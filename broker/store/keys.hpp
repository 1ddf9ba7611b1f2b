// Big-endian key and value encodings for the RocksDB column families, so that
// bytewise key order is numeric order: a queue's entries are contiguous and in
// sequence order, delayed records in due-time order.
//
//   meta      [kind u8][key bytes]           -> value blob
//   messages  [message id u64]               -> message blob
//   entries   [queue id u64][seq u64]        -> [message id u64][delivery count u32]
//   delayed   [due ms u64][delayed id u64]   -> blob
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mb::store::keys {

inline void append_u64(std::string& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

inline void append_u32(std::string& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

// Callers check the size first.
inline std::uint64_t read_u64(std::string_view in, std::size_t at = 0) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(in[at + i]);
  return v;
}

inline std::uint32_t read_u32(std::string_view in, std::size_t at = 0) {
  std::uint32_t v = 0;
  for (std::size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(in[at + i]);
  return v;
}

inline std::string u64_key(std::uint64_t v) {
  std::string out;
  out.reserve(8);
  append_u64(out, v);
  return out;
}

inline std::string pair_key(std::uint64_t hi, std::uint64_t lo) {
  std::string out;
  out.reserve(16);
  append_u64(out, hi);
  append_u64(out, lo);
  return out;
}

// Exclusive upper bound for every 16-byte key starting with `hi`: hi|FF*8|00
// sorts after hi|FF*8 (a proper prefix) and before (hi+1)|..., also for hi = max.
inline std::string pair_end_key(std::uint64_t hi) {
  std::string out = pair_key(hi, ~std::uint64_t{0});
  out.push_back('\0');
  return out;
}

inline std::string meta_key(std::uint8_t kind, std::string_view key) {
  std::string out;
  out.reserve(1 + key.size());
  out.push_back(static_cast<char>(kind));
  out.append(key);
  return out;
}

inline std::string entry_value(std::uint64_t message_id, std::uint32_t delivery_count) {
  std::string out;
  out.reserve(12);
  append_u64(out, message_id);
  append_u32(out, delivery_count);
  return out;
}

inline constexpr std::size_t kPairKeySize = 16;
inline constexpr std::size_t kEntryValueSize = 12;

}  // namespace mb::store::keys
