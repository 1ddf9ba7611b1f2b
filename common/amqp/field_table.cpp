// Field table codec. See field_table.hpp for the type set and limits.
#include "common/amqp/field_table.hpp"
#include "common/amqp/field_skip.hpp"

#include <algorithm>

namespace mb::amqp {

const FieldValue* FieldTable::find(std::string_view key) const {
  for (const auto& e : entries)
    if (e.name == key) return &e.value;
  return nullptr;
}

FieldValue* FieldTable::find(std::string_view key) {
  for (auto& e : entries)
    if (e.name == key) return &e.value;
  return nullptr;
}

void FieldTable::set(std::string_view key, FieldValue value) {
  if (FieldValue* v = find(key)) {
    *v = std::move(value);
    return;
  }
  entries.push_back(FieldEntry{std::string(key), std::move(value)});
}

bool FieldTable::erase(std::string_view key) {
  auto it = std::find_if(entries.begin(), entries.end(), [&](const FieldEntry& e) { return e.name == key; });
  if (it == entries.end()) return false;
  entries.erase(it);
  return true;
}

// Tables are equal when they hold the same (key, value) entries, in any order.
// Compared as multisets, because duplicate keys are legal on the wire: the
// comparison stays symmetric ({a:1, a:1} is not {a:1, b:2}) and reflexive
// ({a:1, a:2} equals itself).
bool FieldTable::operator==(const FieldTable& o) const {
  if (entries.size() != o.entries.size()) return false;
  for (const auto& e : entries) {
    if (std::count(entries.begin(), entries.end(), e) != std::count(o.entries.begin(), o.entries.end(), e))
      return false;
  }
  return true;
}

std::optional<std::int64_t> FieldValue::as_int() const {
  return std::visit(
      [](const auto& x) -> std::optional<std::int64_t> {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) return static_cast<std::int64_t>(x);
        return std::nullopt;
      },
      v);
}

std::optional<std::string_view> FieldValue::as_string() const {
  if (const auto* s = std::get_if<std::string>(&v)) return std::string_view(*s);
  if (const auto* b = std::get_if<ByteArray>(&v)) return std::string_view(b->bytes);
  return std::nullopt;
}

std::optional<bool> FieldValue::as_bool() const {
  if (const auto* b = std::get_if<bool>(&v)) return *b;
  return std::nullopt;
}

namespace {

DecodeError unknown_field_type(char tag) {
  return DecodeError(std::string("unknown field type '") +
                     (tag >= 32 && tag < 127 ? std::string(1, tag) : std::to_string(static_cast<unsigned char>(tag))) +
                     "'");
}

FieldArray decode_array(Reader& r, int depth) {
  Reader body(r.take(r.u32()));
  FieldArray a;
  while (!body.empty()) a.push_back(decode_field_value(body, depth + 1));
  return a;
}

}  // namespace

FieldValue decode_field_value(Reader& r, int depth) {
  if (depth > kMaxTableDepth) throw DecodeError("field table nested too deeply");
  const char tag = static_cast<char>(r.u8());
  switch (tag) {
    case 't':
      return FieldValue(r.u8() != 0);
    case 'b':
      return FieldValue(r.i8());
    case 'B':
      return FieldValue(r.u8());
    case 's':
      return FieldValue(r.i16());
    case 'u':
      return FieldValue(r.u16());
    case 'I':
      return FieldValue(r.i32());
    case 'i':
      return FieldValue(r.u32());
    case 'l':
      return FieldValue(r.i64());
    case 'L':  // py-amqp (Celery's transport) writes ints beyond 32 bits as 'L'; RabbitMQ
               // reads it as a signed 64-bit 'l', and so do we (re-encoded as 'l').
      return FieldValue(r.i64());
    case 'f':
      return FieldValue(r.f32());
    case 'd':
      return FieldValue(r.f64());
    case 'D': {
      Decimal d;
      d.scale = r.u8();
      d.value = r.i32();
      return FieldValue(d);
    }
    case 'S':
      return FieldValue(std::string(r.longstr()));
    case 'x':
      return FieldValue(ByteArray{std::string(r.longstr())});
    case 'A':
      return FieldValue(decode_array(r, depth));
    case 'T':
      return FieldValue(Timestamp{r.u64()});
    case 'F':
      return FieldValue(decode_table(r, depth + 1));
    case 'V':
      return FieldValue(Void{});
    default:
      throw unknown_field_type(tag);
  }
}

void skip_field_value(Reader& r) {
  const char tag = static_cast<char>(r.u8());
  switch (tag) {
    case 'V':
      return;
    case 't':
    case 'b':
    case 'B':
      r.take(1);
      return;
    case 's':
    case 'u':
      r.take(2);
      return;
    case 'I':
    case 'i':
    case 'f':
      r.take(4);
      return;
    case 'D':
      r.take(5);
      return;
    case 'l':
    case 'L':
    case 'd':
    case 'T':
      r.take(8);
      return;
    case 'S':
    case 'x':
    case 'A':
    case 'F':
      r.take(r.u32());
      return;
    default:
      throw unknown_field_type(tag);
  }
}

FieldTable decode_table(Reader& r, int depth) {
  if (depth > kMaxTableDepth) throw DecodeError("field table nested too deeply");
  Reader body(r.take(r.u32()));
  FieldTable t;
  while (!body.empty()) {
    std::string name(body.shortstr());
    FieldValue value = decode_field_value(body, depth);
    t.entries.push_back(FieldEntry{std::move(name), std::move(value)});
  }
  return t;
}

void encode_field_value(Writer& w, const FieldValue& value) {
  std::visit(
      [&w](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Void>) {
          w.u8('V');
        } else if constexpr (std::is_same_v<T, bool>) {
          w.u8('t');
          w.u8(x ? 1 : 0);
        } else if constexpr (std::is_same_v<T, std::int8_t>) {
          w.u8('b');
          w.i8(x);
        } else if constexpr (std::is_same_v<T, std::uint8_t>) {
          w.u8('B');
          w.u8(x);
        } else if constexpr (std::is_same_v<T, std::int16_t>) {
          w.u8('s');
          w.i16(x);
        } else if constexpr (std::is_same_v<T, std::uint16_t>) {
          w.u8('u');
          w.u16(x);
        } else if constexpr (std::is_same_v<T, std::int32_t>) {
          w.u8('I');
          w.i32(x);
        } else if constexpr (std::is_same_v<T, std::uint32_t>) {
          w.u8('i');
          w.u32(x);
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          w.u8('l');
          w.i64(x);
        } else if constexpr (std::is_same_v<T, float>) {
          w.u8('f');
          w.f32(x);
        } else if constexpr (std::is_same_v<T, double>) {
          w.u8('d');
          w.f64(x);
        } else if constexpr (std::is_same_v<T, Decimal>) {
          w.u8('D');
          w.u8(x.scale);
          w.i32(x.value);
        } else if constexpr (std::is_same_v<T, std::string>) {
          w.u8('S');
          w.longstr(x);
        } else if constexpr (std::is_same_v<T, ByteArray>) {
          w.u8('x');
          w.longstr(x.bytes);
        } else if constexpr (std::is_same_v<T, FieldArray>) {
          w.u8('A');
          const std::size_t at = w.size();
          w.u32(0);
          for (const auto& item : x) encode_field_value(w, item);
          w.patch_u32(at, static_cast<std::uint32_t>(w.size() - at - 4));
        } else if constexpr (std::is_same_v<T, Timestamp>) {
          w.u8('T');
          w.u64(x.seconds);
        } else if constexpr (std::is_same_v<T, FieldTable>) {
          w.u8('F');
          encode_table(w, x);
        }
      },
      value.v);
}

void encode_table(Writer& w, const FieldTable& t) {
  const std::size_t at = w.size();
  w.u32(0);
  for (const auto& e : t.entries) {
    w.shortstr(e.name);
    encode_field_value(w, e.value);
  }
  w.patch_u32(at, static_cast<std::uint32_t>(w.size() - at - 4));
}

std::size_t encoded_table_size(const FieldTable& t) {
  std::string scratch;
  Writer w(scratch);
  encode_table(w, t);
  return scratch.size();
}

}  // namespace mb::amqp
