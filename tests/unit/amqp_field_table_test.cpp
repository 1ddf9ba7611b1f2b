// Unit tests for common/amqp/field_table.hpp: field values, tables and arrays.
//
// Concerns:
// [x] every type in RabbitMQ's column of errata section 3 (t b B s u I i l f d D S A T F V x)
//     encodes to the exact bytes by hand and decodes back to the same value
// [x] 'L' (written by py-amqp for ints beyond 32 bits, accepted by RabbitMQ) reads as signed 64-bit
// [x] every other tag byte, including the spec-only 'U', throws DecodeError
// [x] nesting: tables in tables, arrays in arrays, tables in arrays; empty table and array
// [x] arrays use a byte length like tables (errata section 4)
// [x] depth limit: kMaxTableDepth nested tables decode, one more throws
// [x] a bad inner length (S, x, A, F) cannot run past its table even when the outer
//     buffer has bytes to spare
// [x] every proper prefix of an encoded table throws DecodeError
// [x] golden captures (RabbitMQ server-properties, pika and py-amqp client-properties,
//     queue arguments) decode to the expected values and re-encode to identical bytes
// [x] lookup helpers (find/set/erase, as_int/as_string/as_bool/as_table/as_array)
// [x] equality is order-insensitive and symmetric with duplicate keys
// [ ] semantic checks on values (e.g. negative x-message-ttl) belong to the broker, not here
#include <doctest/doctest.h>

#include <cctype>
#include <fstream>
#include <string>
#include <vector>

#include "tests/unit/support/golden.hpp"
#include "common/amqp/field_table.hpp"
#include "common/amqp/field_skip.hpp"
#include "common/amqp/format.hpp"
#include "common/amqp/frame.hpp"

using namespace mb::amqp;  // NOLINT(google-build-using-namespace): test file

namespace {

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int x : b) s.push_back(static_cast<char>(x));
  return s;
}

// The payload of the first frame in a golden file (kept alive by the caller's string).
std::string_view first_payload(const std::string& data) {
  const FrameResult res = decode_frame(data, 0);
  REQUIRE(res.status == DecodeStatus::kFrame);
  return res.frame.payload;
}

std::string encode(const FieldTable& t) {
  std::string out;
  Writer w(out);
  encode_table(w, t);
  return out;
}

std::string encode(const FieldValue& v) {
  std::string out;
  Writer w(out);
  encode_field_value(w, v);
  return out;
}

FieldTable decode(std::string_view in) {
  Reader r(in);
  FieldTable t = decode_table(r);
  REQUIRE(r.empty());
  return t;
}

// Wraps encoded entry bytes in a table length prefix.
std::string table_bytes(const std::string& entries) {
  std::string out;
  Writer w(out);
  w.longstr(entries);
  return out;
}

// Decodes the table at `offset` in `payload`, checks it re-encodes to the same bytes.
FieldTable golden_table(std::string_view payload, std::size_t offset) {
  Reader r(payload.substr(offset));
  FieldTable t = decode_table(r);
  CHECK(encode(t) == payload.substr(offset, r.position()));
  return t;
}

const FieldValue& at(const FieldTable& t, std::string_view key) {
  const FieldValue* v = t.find(key);
  REQUIRE_MESSAGE(v != nullptr, "missing key " << key);
  return *v;
}

std::vector<std::string> keys(const FieldTable& t) {
  std::vector<std::string> k;
  for (const auto& e : t.entries) k.push_back(e.name);
  return k;
}

}  // namespace

TEST_CASE("each RabbitMQ field type encodes to the exact bytes and decodes back") {
  struct Case {
    const char* what;
    FieldValue value;
    std::string wire;
  };
  FieldTable inner;
  inner.set("k", FieldValue(std::int32_t{1}));
  const std::vector<Case> cases = {
      {"t true", FieldValue(true), bytes({'t', 1})},
      {"t false", FieldValue(false), bytes({'t', 0})},
      {"b", FieldValue(std::int8_t{-2}), bytes({'b', 0xfe})},
      {"B", FieldValue(std::uint8_t{200}), bytes({'B', 200})},
      {"s", FieldValue(std::int16_t{-300}), bytes({'s', 0xfe, 0xd4})},
      {"u", FieldValue(std::uint16_t{65000}), bytes({'u', 0xfd, 0xe8})},
      {"I", FieldValue(std::int32_t{-70000}), bytes({'I', 0xff, 0xfe, 0xee, 0x90})},
      {"i", FieldValue(std::uint32_t{4000000000u}), bytes({'i', 0xee, 0x6b, 0x28, 0x00})},
      {"l", FieldValue(std::int64_t{-2}), bytes({'l', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe})},
      {"f", FieldValue(1.5f), bytes({'f', 0x3f, 0xc0, 0x00, 0x00})},
      {"d", FieldValue(0.5), bytes({'d', 0x3f, 0xe0, 0, 0, 0, 0, 0, 0})},
      {"D", FieldValue(Decimal{3, -12345}), bytes({'D', 3, 0xff, 0xff, 0xcf, 0xc7})},
      {"S", FieldValue("ab"), bytes({'S', 0, 0, 0, 2, 'a', 'b'})},
      {"S with NUL", FieldValue(std::string("a\0b", 3)), bytes({'S', 0, 0, 0, 3, 'a', 0, 'b'})},
      {"x", FieldValue(ByteArray{bytes({0, 1, 0xff})}), bytes({'x', 0, 0, 0, 3, 0, 1, 0xff})},
      {"T", FieldValue(Timestamp{1795721480}), bytes({'T', 0, 0, 0, 0, 0x6b, 0x08, 0x89, 0x08})},
      {"V", FieldValue(Void{}), bytes({'V'})},
      {"A", FieldValue(FieldArray{FieldValue(true), FieldValue(Void{})}), bytes({'A', 0, 0, 0, 3, 't', 1, 'V'})},
      {"A empty", FieldValue(FieldArray{}), bytes({'A', 0, 0, 0, 0})},
      {"F", FieldValue(inner), bytes({'F', 0, 0, 0, 7, 1, 'k', 'I', 0, 0, 0, 1})},
      {"F empty", FieldValue(FieldTable{}), bytes({'F', 0, 0, 0, 0})},
  };
  for (const auto& c : cases) {
    CAPTURE(c.what);
    CHECK(encode(c.value) == c.wire);
    Reader r(c.wire);
    const FieldValue back = decode_field_value(r);
    CHECK(r.empty());
    CHECK(back == c.value);
    CHECK(back.v.index() == c.value.v.index());
    // Skipping steps over exactly the value's bytes; every truncation throws.
    const std::string followed = c.wire + "tail";
    Reader skipped(followed);
    skip_field_value(skipped);
    CHECK(skipped.remaining() == 4);
    for (std::size_t n = 0; n < c.wire.size(); ++n) {
      Reader cut(std::string_view(c.wire).substr(0, n));
      CHECK_THROWS_AS(skip_field_value(cut), DecodeError);
    }

    // The same value inside a table, under a key.
    FieldTable t;
    t.set("key", c.value);
    const std::string wire = encode(t);
    CHECK(wire == table_bytes(bytes({3, 'k', 'e', 'y'}) + c.wire));
    CHECK(decode(wire) == t);
    CHECK(encoded_table_size(t) == wire.size());
  }
}

TEST_CASE("'L' from py-amqp reads as a signed 64-bit integer and is written back as 'l'") {
  // py-amqp writes ints beyond 32 bits with tag 'L'; RabbitMQ reads it as 'l'.
  const std::string wire = table_bytes(bytes({3, 't', 't', 'l', 'L', 0, 0, 0, 2, 0, 0, 0, 0}));
  const FieldTable t = decode(wire);
  CHECK(at(t, "ttl").as_int() == std::int64_t{1} << 33);
  CHECK(std::holds_alternative<std::int64_t>(at(t, "ttl").v));
  CHECK(encode(t) == table_bytes(bytes({3, 't', 't', 'l', 'l', 0, 0, 0, 2, 0, 0, 0, 0})));

  // The real capture: queue.declare {x-message-ttl: L 2**33}, which RabbitMQ 3.10 accepted.
  const std::string frame = load_hex("pyamqp_queue_declare_big_ttl_L");
  const Method m = decode_method(first_payload(frame));
  const auto& qd = std::get<QueueDeclare>(m);
  CHECK(qd.queue == "mb.bigttl");
  CHECK(at(qd.arguments, "x-message-ttl").as_int() == std::int64_t{1} << 33);
}

TEST_CASE("every tag outside the RabbitMQ set is rejected") {
  const std::string known = "tbBsuIilfdDSATFVxL";
  for (int tag = 0; tag < 256; ++tag) {
    if (known.find(static_cast<char>(tag)) != std::string::npos) continue;
    CAPTURE(tag);
    // Enough bytes after the tag for any fixed-size type, so only the tag is wrong.
    std::string in = bytes({tag, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    Reader r(in);
    CHECK_THROWS_AS(decode_field_value(r), DecodeError);
    Reader rs(in);
    CHECK_THROWS_AS(skip_field_value(rs), DecodeError);
    const std::string t = table_bytes(bytes({1, 'k'}) + in);
    Reader rt(t);
    CHECK_THROWS_AS(decode_table(rt), DecodeError);
  }
  const std::string u = bytes({'U', 0, 1});  // spec-only signed 16-bit, not RabbitMQ's
  Reader r(u);
  CHECK_THROWS_WITH_AS(decode_field_value(r), "unknown field type 'U'", DecodeError);
}

TEST_CASE("nested tables and arrays round-trip") {
  FieldTable deepest;
  deepest.set("depth", FieldValue(std::int32_t{3}));
  deepest.set("ok", FieldValue(true));
  FieldTable mid;
  mid.set("deeper", FieldValue(deepest));
  mid.set("list", FieldValue(FieldArray{FieldValue(std::int32_t{1}),
                                        FieldValue(FieldArray{FieldValue(std::int32_t{2}),
                                                              FieldValue(FieldArray{FieldValue(std::int32_t{3})})}),
                                        FieldValue(deepest), FieldValue(FieldArray{})}));
  FieldTable top;
  top.set("mid", FieldValue(mid));
  top.set("empty", FieldValue(FieldTable{}));
  top.set("s", FieldValue("x"));
  const std::string wire = encode(top);
  const FieldTable back = decode(wire);
  CHECK(back == top);
  CHECK(keys(back) == std::vector<std::string>{"mid", "empty", "s"});
  CHECK(encode(back) == wire);
  const FieldArray* list = at(*at(back, "mid").as_table(), "list").as_array();
  REQUIRE(list != nullptr);
  CHECK(list->size() == 4);
  CHECK((*list)[1].as_array()->at(1).as_array()->at(0).as_int() == 3);
  CHECK(to_string(back) ==
        "{mid: {deeper: {depth: 3, ok: true}, list: [1, [2, [3]], {depth: 3, ok: true}, []]}, empty: {}, s: \"x\"}");
}

TEST_CASE("the array length is a byte count, like a table's (errata section 4)") {
  // [I 1, S "ab"]: 5 + 7 = 12 bytes.
  const std::string wire = bytes({'A', 0, 0, 0, 12, 'I', 0, 0, 0, 1, 'S', 0, 0, 0, 2, 'a', 'b'});
  Reader r(wire);
  const FieldValue v = decode_field_value(r);
  CHECK(r.empty());
  REQUIRE(v.as_array() != nullptr);
  CHECK(v.as_array()->size() == 2);
  // A count (2) instead of a byte length must not decode as two elements.
  const std::string counted = bytes({'A', 0, 0, 0, 2, 'I', 0, 0, 0, 1, 'S', 0, 0, 0, 2, 'a', 'b'});
  Reader rc(counted);
  CHECK_THROWS_AS(decode_field_value(rc), DecodeError);
}

namespace {

// A table nested `levels` deep inside a top-level table: {n: {n: ... {} }}.
std::string nested_tables(int levels) {
  FieldTable t;
  for (int i = 0; i < levels; ++i) {
    FieldTable outer;
    outer.set("n", FieldValue(std::move(t)));
    t = std::move(outer);
  }
  return encode(t);
}

std::string nested_arrays(int levels) {
  FieldValue v(std::int32_t{7});
  for (int i = 0; i < levels; ++i) v = FieldValue(FieldArray{std::move(v)});
  FieldTable t;
  t.set("a", std::move(v));
  return encode(t);
}

}  // namespace

TEST_CASE("nesting is limited to kMaxTableDepth") {
  CHECK_NOTHROW(decode(nested_tables(kMaxTableDepth)));
  {
    const std::string deep = nested_tables(kMaxTableDepth + 1);
    Reader r(deep);
    CHECK_THROWS_WITH_AS(decode_table(r), "field table nested too deeply", DecodeError);
  }
  CHECK_NOTHROW(decode(nested_arrays(kMaxTableDepth)));
  {
    const std::string deep = nested_arrays(kMaxTableDepth + 1);
    Reader r(deep);
    CHECK_THROWS_AS(decode_table(r), DecodeError);
  }
  {
    // A hostile peer: 100000 nested array headers in one buffer must not exhaust the stack.
    // Each level is a well-formed array header whose length covers the rest.
    constexpr std::size_t kLevels = 100000;
    std::string evil(5 * kLevels, '\0');
    for (std::size_t i = 0; i < kLevels; ++i) {
      evil[5 * i] = 'A';
      Writer(evil).patch_u32(5 * i + 1, static_cast<std::uint32_t>(5 * (kLevels - 1 - i)));
    }
    Reader r(evil);
    CHECK_THROWS_AS(decode_field_value(r), DecodeError);
  }
}

TEST_CASE("a bad inner length cannot run past its table") {
  // Each table declares 10 bytes; the inner value claims more, and the bytes it
  // would need are present after the table. Decoding must stop at the table.
  const std::string after(64, 'z');
  const std::vector<std::pair<const char*, std::string>> cases = {
      {"S", bytes({1, 'k', 'S', 0, 0, 0, 20, 'a', 'b', 'c'})},
      {"x", bytes({1, 'k', 'x', 0, 0, 0, 20, 'a', 'b', 'c'})},
      {"A", bytes({1, 'k', 'A', 0, 0, 0, 20, 'V', 'V', 'V'})},
      {"F", bytes({1, 'k', 'F', 0, 0, 0, 20, 1, 'a', 'V'})},
      {"key", bytes({40, 'k', 'V', 'V', 'V', 'V', 'V', 'V', 'V', 'V'})},
      {"l", bytes({1, 'k', 'V', 1, 'm', 'l', 0, 0, 0, 0})},
  };
  for (const auto& c : cases) {
    const char* what = c.first;
    const std::string& entries = c.second;
    CAPTURE(what);
    REQUIRE(entries.size() == 10);
    const std::string in = table_bytes(entries) + after;
    Reader r(in);
    CHECK_THROWS_AS(decode_table(r), DecodeError);
  }
  // And an array whose element runs past the array, inside a table with room.
  const std::string arr = table_bytes(bytes({1, 'k', 'A', 0, 0, 0, 2, 'S', 0, 0, 0, 0, 0, 0, 0}));
  Reader ra(arr);
  CHECK_THROWS_AS(decode_table(ra), DecodeError);
  // A table length beyond the buffer.
  const std::string short_table = bytes({0, 0, 0, 9, 1, 'k', 'V'});
  Reader rs(short_table);
  CHECK_THROWS_AS(decode_table(rs), DecodeError);
}

TEST_CASE("every proper prefix of an encoded table throws DecodeError") {
  FieldTable t;
  t.set("bool", FieldValue(true));
  t.set("i8", FieldValue(std::int8_t{-1}));
  t.set("u8", FieldValue(std::uint8_t{1}));
  t.set("i16", FieldValue(std::int16_t{-1}));
  t.set("u16", FieldValue(std::uint16_t{1}));
  t.set("i32", FieldValue(std::int32_t{-1}));
  t.set("u32", FieldValue(std::uint32_t{1}));
  t.set("i64", FieldValue(std::int64_t{-1}));
  t.set("f", FieldValue(0.25f));
  t.set("d", FieldValue(0.125));
  t.set("dec", FieldValue(Decimal{2, 314}));
  t.set("str", FieldValue("hello"));
  t.set("arr", FieldValue(FieldArray{FieldValue(Void{}), FieldValue("x")}));
  t.set("ts", FieldValue(Timestamp{1}));
  FieldTable nested;
  nested.set("ok", FieldValue(false));
  t.set("tbl", FieldValue(nested));
  t.set("void", FieldValue(Void{}));
  t.set("bytes", FieldValue(ByteArray{"\x01\x02"}));
  const std::string wire = encode(t);
  CHECK(decode(wire) == t);
  for (std::size_t n = 0; n < wire.size(); ++n) {
    CAPTURE(n);
    Reader r(std::string_view(wire).substr(0, n));
    CHECK_THROWS_AS(decode_table(r), DecodeError);
  }
  // Shrinking the declared length (rather than the buffer) cuts the last value,
  // which must also fail rather than return a partial entry... unless the cut
  // falls exactly between entries, which is a smaller valid table.
  for (std::uint32_t len = 0; len + 4 < wire.size(); ++len) {
    std::string cut = wire;
    Writer(cut).patch_u32(0, len);
    Reader r(cut);
    try {
      const FieldTable part = decode_table(r);
      CHECK(part.entries.size() < t.entries.size());
      CHECK(r.position() == 4 + len);
    } catch (const DecodeError&) {
    }
  }
}

TEST_CASE("golden: RabbitMQ 3.10 connection.start server-properties") {
  const std::string frame = load_hex("rabbitmq_connection_start");
  const std::string_view payload = first_payload(frame);
  const FieldTable t = golden_table(payload, 6);  // class, method, version-major, version-minor
  CHECK(keys(t) == std::vector<std::string>{"capabilities", "cluster_name", "copyright", "information", "platform",
                                            "product", "version"});
  CHECK(at(t, "product").as_string() == "RabbitMQ");
  CHECK(at(t, "version").as_string() == "3.10.8");
  CHECK(at(t, "platform").as_string() == "Erlang/OTP 25.2.3");
  const FieldTable* caps = at(t, "capabilities").as_table();
  REQUIRE(caps != nullptr);
  CHECK(keys(*caps) == std::vector<std::string>{"publisher_confirms", "exchange_exchange_bindings", "basic.nack",
                                                "consumer_cancel_notify", "connection.blocked", "consumer_priorities",
                                                "authentication_failure_close", "per_consumer_qos", "direct_reply_to"});
  for (const auto& e : caps->entries) {
    CAPTURE(e.name);
    CHECK(e.value.as_bool() == true);
  }
}

TEST_CASE("golden: pika and py-amqp connection.start-ok client-properties") {
  {
    const std::string frame = load_hex("pika_connection_start_ok");
    const FieldTable t = golden_table(first_payload(frame), 4);
    CHECK(keys(t) == std::vector<std::string>{"product", "platform", "capabilities", "information", "version"});
    CHECK(at(t, "product").as_string() == "Pika Python Client Library");
    CHECK(at(t, "version").as_string() == "1.2.0");
    const FieldTable* caps = at(t, "capabilities").as_table();
    REQUIRE(caps != nullptr);
    CHECK(keys(*caps) == std::vector<std::string>{"authentication_failure_close", "basic.nack", "connection.blocked",
                                                  "consumer_cancel_notify", "publisher_confirms"});
    for (const auto& e : caps->entries) CHECK(e.value.as_bool() == true);
  }
  {
    const std::string frame = load_hex("pyamqp_connection_start_ok");
    const FieldTable t = golden_table(first_payload(frame), 4);
    CHECK(keys(t) == std::vector<std::string>{"product", "product_version", "capabilities"});
    CHECK(at(t, "product").as_string() == "py-amqp");
    CHECK(at(t, "product_version").as_string() == "5.1.1");
    const FieldTable* caps = at(t, "capabilities").as_table();
    REQUIRE(caps != nullptr);
    CHECK(keys(*caps) ==
          std::vector<std::string>{"consumer_cancel_notify", "connection.blocked", "authentication_failure_close"});
    for (const auto& e : caps->entries) CHECK(e.value.as_bool() == true);
  }
}

TEST_CASE("golden: queue.declare arguments x-expires / x-message-ttl are signed 32-bit 'I'") {
  {
    const std::string frame = load_hex("pika_queue_declare_ttl");
    const Method m = decode_method(first_payload(frame));
    const auto& qd = std::get<QueueDeclare>(m);
    CHECK(keys(qd.arguments) == std::vector<std::string>{"x-expires", "x-message-ttl"});
    CHECK(std::get<std::int32_t>(at(qd.arguments, "x-expires").v) == 86400000);
    CHECK(std::get<std::int32_t>(at(qd.arguments, "x-message-ttl").v) == 60000);
  }
  {
    const std::string frame = load_hex("pyamqp_queue_declare_x_expires");
    const Method m = decode_method(first_payload(frame));
    const auto& qd = std::get<QueueDeclare>(m);
    CHECK(qd.queue == "c3cdaa41-59d9-3e12-80de-d0754ecf1c8b");
    CHECK(qd.auto_delete);
    CHECK_FALSE(qd.durable);
    CHECK(keys(qd.arguments) == std::vector<std::string>{"x-expires"});
    CHECK(std::get<std::int32_t>(at(qd.arguments, "x-expires").v) == 86400000);
  }
}

TEST_CASE("as_int accepts every integer type and nothing else") {
  CHECK(FieldValue(std::int8_t{-5}).as_int() == -5);
  CHECK(FieldValue(std::uint8_t{250}).as_int() == 250);
  CHECK(FieldValue(std::int16_t{-5}).as_int() == -5);
  CHECK(FieldValue(std::uint16_t{65535}).as_int() == 65535);
  CHECK(FieldValue(std::int32_t{-5}).as_int() == -5);
  CHECK(FieldValue(std::uint32_t{4294967295u}).as_int() == 4294967295);
  CHECK(FieldValue(std::int64_t{-5}).as_int() == -5);
  CHECK_FALSE(FieldValue(true).as_int().has_value());
  CHECK_FALSE(FieldValue(1.0).as_int().has_value());
  CHECK_FALSE(FieldValue("1").as_int().has_value());
  CHECK_FALSE(FieldValue(Timestamp{1}).as_int().has_value());
  CHECK(FieldValue(ByteArray{"ab"}).as_string() == "ab");
  CHECK(FieldValue("ab").as_string() == "ab");
  CHECK_FALSE(FieldValue(std::int32_t{1}).as_string().has_value());
  CHECK_FALSE(FieldValue(std::int32_t{1}).as_bool().has_value());
  CHECK(FieldValue(std::int32_t{1}).as_table() == nullptr);
  CHECK(FieldValue(std::int32_t{1}).as_array() == nullptr);
}

TEST_CASE("find, set and erase keep wire order") {
  FieldTable t;
  t.set("a", FieldValue(std::int32_t{1}));
  t.set("b", FieldValue(std::int32_t{2}));
  t.set("a", FieldValue(std::int32_t{3}));  // replaces in place
  CHECK(keys(t) == std::vector<std::string>{"a", "b"});
  CHECK(at(t, "a").as_int() == 3);
  CHECK(t.find("c") == nullptr);
  CHECK(t.erase("a"));
  CHECK_FALSE(t.erase("a"));
  CHECK(keys(t) == std::vector<std::string>{"b"});
  FieldValue* b = t.find("b");
  REQUIRE(b != nullptr);
  *b = FieldValue("now a string");
  CHECK(at(t, "b").as_string() == "now a string");
  CHECK_FALSE(t.empty());
  CHECK(FieldTable{}.empty());
}

TEST_CASE("table equality ignores order and stays symmetric with duplicate keys") {
  const FieldTable ab{{{"a", FieldValue(std::int32_t{1})}, {"b", FieldValue(std::int32_t{2})}}};
  const FieldTable ba{{{"b", FieldValue(std::int32_t{2})}, {"a", FieldValue(std::int32_t{1})}}};
  CHECK(ab == ba);
  // Same number, different wire type: not equal (an 'i' is not an 'I').
  const FieldTable a_u32{{{"a", FieldValue(std::uint32_t{1})}, {"b", FieldValue(std::int32_t{2})}}};
  CHECK_FALSE(ab == a_u32);
  // Duplicate keys are legal on the wire; equality must be symmetric and reflexive.
  const FieldTable dup_same{{{"a", FieldValue(std::int32_t{1})}, {"a", FieldValue(std::int32_t{1})}}};
  CHECK_FALSE(dup_same == ab);
  CHECK_FALSE(ab == dup_same);
  const FieldTable dup_diff{{{"a", FieldValue(std::int32_t{1})}, {"a", FieldValue(std::int32_t{2})}}};
  CHECK(dup_diff == dup_diff);
  const FieldTable dup_diff_rev{{{"a", FieldValue(std::int32_t{2})}, {"a", FieldValue(std::int32_t{1})}}};
  CHECK(dup_diff == dup_diff_rev);
  CHECK_FALSE(dup_diff == dup_same);
  CHECK_FALSE(dup_same == dup_diff);
  // Duplicates survive a round trip in wire order.
  CHECK(keys(decode(encode(dup_diff))) == std::vector<std::string>{"a", "a"});
}

TEST_CASE("to_string renders every type") {
  FieldTable t;
  t.set("v", FieldValue(Void{}));
  t.set("b", FieldValue(std::int8_t{-1}));
  t.set("B", FieldValue(std::uint8_t{255}));
  t.set("d", FieldValue(0.5));
  t.set("D", FieldValue(Decimal{2, 314}));
  t.set("x", FieldValue(ByteArray{"abc"}));
  t.set("T", FieldValue(Timestamp{7}));
  t.set("a", FieldValue(FieldArray{FieldValue(true), FieldValue("s")}));
  CHECK(to_string(t) == "{v: void, b: -1, B: 255, d: 0.5, D: 314e-2, x: bytes(3), T: ts(7), a: [true, \"s\"]}");
}
