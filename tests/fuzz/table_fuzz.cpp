// libFuzzer target: untrusted bytes through decode_table and decode_field_value.
//
// Beyond "no crash, no over-read, no stack exhaustion" (ASan/UBSan), it checks:
//  - the only exception is DecodeError (anything else aborts);
//  - a decoded table re-encodes to a canonical form that is a fixed point, and
//    encoded_table_size() matches what encode_table() writes;
//  - to_string() renders any decoded value.
// Seeds: tests/fuzz/corpus/table (tables and headers from the golden captures).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/amqp/field_table.hpp"
#include "common/amqp/format.hpp"

namespace {

using namespace mb::amqp;  // NOLINT(google-build-using-namespace): fuzz target

void require(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  try {
    Reader r(in);
    const FieldTable t = decode_table(r);
    require(r.position() <= in.size());
    std::string once;
    Writer w(once);
    encode_table(w, t);
    require(encoded_table_size(t) == once.size());
    Reader r2(once);
    const FieldTable again = decode_table(r2);
    require(r2.empty());
    std::string twice;
    Writer w2(twice);
    encode_table(w2, again);
    require(twice == once);
    (void)to_string(t);
  } catch (const DecodeError&) {
  }
  try {
    Reader r(in);
    const FieldValue v = decode_field_value(r);
    std::string once;
    Writer w(once);
    encode_field_value(w, v);
    Reader r2(once);
    const FieldValue again = decode_field_value(r2);
    require(r2.empty());
    std::string twice;
    Writer w2(twice);
    encode_field_value(w2, again);
    require(twice == once);
    (void)to_string(v);
  } catch (const DecodeError&) {
  }
  return 0;
}
