// Unit tests for common/amqp/properties.hpp: basic properties and the content header.
//
// Concerns:
// [x] all 14 properties round-trip together and each one alone, with its exact flag bit
// [x] a present-but-empty string is distinct from an absent one
// [x] golden Celery properties (real Celery send_task, and py-amqp with the full task-protocol-2
//     headers plus d, D, T and nesting) decode to the exact values and re-encode identically
// [x] golden pika properties with all 14 fields; RabbitMQ passes them through byte for byte
//     (basic.get-ok and basic.deliver carry the published bytes)
// [x] summarize_properties agrees with decode_properties on every sample and capture
// [x] every proper prefix of every encoding throws DecodeError (decode and summarize);
//     trailing bytes throw too
// [x] continuation flag words are accepted
// [x] content header: golden decode, exact encoding, every truncation throws
// [x] summarize does not parse the headers table (a bad table is found only by decode)
#include <doctest/doctest.h>

#include <cctype>
#include <fstream>
#include <string>
#include <vector>

#include "tests/unit/support/golden.hpp"
#include "common/amqp/frame.hpp"
#include "common/amqp/properties.hpp"

using namespace mb::amqp;  // NOLINT(google-build-using-namespace): test file

namespace {

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int x : b) s.push_back(static_cast<char>(x));
  return s;
}

struct Content {
  std::string data;  // owns the bytes the views below point into
  ContentHeader header;
  std::string body;
};

// The content header and body that follow the method frame of a golden file.
Content golden_content(const std::string& name) {
  Content c;
  c.data = load_hex(name);
  std::string_view rest = c.data;
  bool seen_header = false;
  while (!rest.empty()) {
    const FrameResult res = decode_frame(rest, 0);
    REQUIRE(res.status == DecodeStatus::kFrame);
    if (res.frame.type == FrameType::kHeader) {
      c.header = decode_content_header(res.frame.payload);
      seen_header = true;
    } else if (res.frame.type == FrameType::kBody) {
      c.body.append(res.frame.payload);
    }
    rest.remove_prefix(res.consumed);
  }
  REQUIRE(seen_header);
  return c;
}

std::vector<std::string> keys(const FieldTable& t) {
  std::vector<std::string> k;
  for (const auto& e : t.entries) k.push_back(e.name);
  return k;
}

const FieldValue& at(const FieldTable& t, std::string_view key) {
  const FieldValue* v = t.find(key);
  REQUIRE_MESSAGE(v != nullptr, "missing key " << key);
  return *v;
}

std::uint16_t flags_of(std::string_view encoded) { return Reader(encoded).u16(); }

BasicProperties all_fourteen() {
  BasicProperties p;
  p.content_type = "application/json";
  p.content_encoding = "utf-8";
  p.headers = FieldTable{};
  p.headers->set("x-retries", FieldValue(std::int32_t{3}));
  p.headers->set("nested", FieldValue(FieldTable{{{"ok", FieldValue(true)}}}));
  p.delivery_mode = 2;
  p.priority = 9;
  p.correlation_id = "corr";
  p.reply_to = "amq.rabbitmq.reply-to";
  p.expiration = "60000";
  p.message_id = "mid";
  p.timestamp = 0x0102030405060708ull;
  p.type = "type";
  p.user_id = "guest";
  p.app_id = "app";
  p.cluster_id = "cluster";
  return p;
}

// Sets only property number i (0 = content-type ... 13 = cluster-id).
BasicProperties only(int i, bool empty_value = false) {
  const BasicProperties all = all_fourteen();
  BasicProperties p;
  const std::string s = empty_value ? "" : "v";
  switch (i) {
    case 0: p.content_type = s; break;
    case 1: p.content_encoding = s; break;
    case 2: p.headers = empty_value ? FieldTable{} : *all.headers; break;
    case 3: p.delivery_mode = empty_value ? 0 : 2; break;
    case 4: p.priority = empty_value ? 0 : 5; break;
    case 5: p.correlation_id = s; break;
    case 6: p.reply_to = s; break;
    case 7: p.expiration = s; break;
    case 8: p.message_id = s; break;
    case 9: p.timestamp = empty_value ? 0 : 1795000000; break;
    case 10: p.type = s; break;
    case 11: p.user_id = s; break;
    case 12: p.app_id = s; break;
    case 13: p.cluster_id = s; break;
    default: FAIL("no such property");
  }
  return p;
}

// summarize_properties must report what decode_properties finds.
void check_summary_agrees(std::string_view encoded) {
  const BasicProperties p = decode_properties(encoded);
  const PropertiesSummary s = summarize_properties(encoded);
  CHECK(s.delivery_mode == p.delivery_mode.value_or(0));
  CHECK(s.has_priority == p.priority.has_value());
  CHECK(s.priority == p.priority.value_or(0));
  CHECK(s.has_headers == p.headers.has_value());
  CHECK(s.has_expiration == p.expiration.has_value());
  CHECK(s.expiration == p.expiration.value_or(""));
  CHECK(s.has_user_id == p.user_id.has_value());
  CHECK(s.user_id == p.user_id.value_or(""));
}

void check_every_prefix_throws(std::string_view encoded) {
  for (std::size_t n = 0; n < encoded.size(); ++n) {
    CAPTURE(n);
    CHECK_THROWS_AS(decode_properties(encoded.substr(0, n)), DecodeError);
    CHECK_THROWS_AS(summarize_properties(encoded.substr(0, n)), DecodeError);
  }
  const std::string trailing = std::string(encoded) + "\x01";
  CHECK_THROWS_AS(decode_properties(trailing), DecodeError);
  CHECK_THROWS_AS(summarize_properties(trailing), DecodeError);
}

}  // namespace

TEST_CASE("all 14 properties round-trip") {
  const BasicProperties p = all_fourteen();
  const std::string wire = encode_properties(p);
  CHECK(flags_of(wire) == 0xFFFC);
  CHECK(decode_properties(wire) == p);
  CHECK(encode_properties(decode_properties(wire)) == wire);
  check_summary_agrees(wire);
  check_every_prefix_throws(wire);
  // The two encode_properties overloads agree.
  std::string appended = "prefix";
  Writer w(appended);
  encode_properties(w, p);
  CHECK(appended == "prefix" + wire);
}

TEST_CASE("no properties is a zero flag word") {
  const std::string wire = encode_properties(BasicProperties{});
  CHECK(wire == bytes({0, 0}));
  CHECK(decode_properties(wire) == BasicProperties{});
  check_summary_agrees(wire);
  check_every_prefix_throws(wire);
}

TEST_CASE("each property alone has its own flag bit and round-trips") {
  for (int i = 0; i < 14; ++i) {
    for (bool empty : {false, true}) {
      CAPTURE(i);
      CAPTURE(empty);
      const BasicProperties p = only(i, empty);
      const std::string wire = encode_properties(p);
      CHECK(flags_of(wire) == (1u << (15 - i)));
      const BasicProperties back = decode_properties(wire);
      CHECK(back == p);
      CHECK_FALSE(back == BasicProperties{});  // present-but-empty is not absent
      check_summary_agrees(wire);
      check_every_prefix_throws(wire);
    }
  }
  // Exact bytes for a few.
  CHECK(encode_properties(only(0)) == bytes({0x80, 0x00, 1, 'v'}));
  CHECK(encode_properties(only(3)) == bytes({0x10, 0x00, 2}));
  CHECK(encode_properties(only(9)) == bytes({0x00, 0x40, 0, 0, 0, 0, 0x6a, 0xfd, 0x86, 0xc0}));
  CHECK(encode_properties(only(2, true)) == bytes({0x20, 0x00, 0, 0, 0, 0}));
}

TEST_CASE("golden: pika publish with all 14 properties, passed through by RabbitMQ") {
  const Content c = golden_content("pika_publish_all_properties");
  CHECK(c.header.class_id == 60);
  CHECK(c.header.body_size == 10);
  CHECK(c.body == "hello pika");
  CHECK(flags_of(c.header.properties) == 0xFFFC);
  const BasicProperties p = decode_properties(c.header.properties);
  CHECK(encode_properties(p) == c.header.properties);
  check_summary_agrees(c.header.properties);
  check_every_prefix_throws(c.header.properties);

  CHECK(p.content_type == "application/json");
  CHECK(p.content_encoding == "utf-8");
  CHECK(p.delivery_mode == 2);
  CHECK(p.priority == 5);
  CHECK(p.correlation_id == "corr-1");
  CHECK(p.reply_to == "reply.q");
  CHECK(p.expiration == "60000");
  CHECK(p.message_id == "msg-1");
  CHECK(p.timestamp == 1795000000u);
  CHECK(p.type == "mytype");
  CHECK(p.user_id == "guest");
  CHECK(p.app_id == "mbtest");
  CHECK(p.cluster_id == "c1");
  REQUIRE(p.headers.has_value());
  const FieldTable& h = *p.headers;
  CHECK(keys(h) ==
        std::vector<std::string>{"s", "i", "neg", "big", "t", "f", "none", "arr", "nested", "bytes", "dec", "ts"});
  CHECK(std::get<std::string>(at(h, "s").v) == "str");
  CHECK(std::get<std::int32_t>(at(h, "i").v) == 42);
  CHECK(std::get<std::int32_t>(at(h, "neg").v) == -7);
  CHECK(std::get<std::int64_t>(at(h, "big").v) == std::int64_t{1} << 40);
  CHECK(std::get<bool>(at(h, "t").v) == true);
  CHECK(std::get<bool>(at(h, "f").v) == false);
  CHECK(std::holds_alternative<Void>(at(h, "none").v));
  CHECK(at(h, "arr") == FieldValue(FieldArray{FieldValue(std::int32_t{1}), FieldValue("two"), FieldValue(Void{}),
                                              FieldValue(FieldTable{{{"k", FieldValue("v")}}})}));
  CHECK(at(h, "nested") == FieldValue(FieldTable{{{"a", FieldValue(FieldTable{{{"b", FieldValue(std::int32_t{1})}}})}}}));
  CHECK(std::get<ByteArray>(at(h, "bytes").v).bytes == bytes({0x00, 0x01, 0xff}));
  CHECK(std::get<Decimal>(at(h, "dec").v) == Decimal{2, 314});
  CHECK(std::get<Timestamp>(at(h, "ts").v).seconds == 1795721480u);

  // RabbitMQ hands the same property bytes to basic.get.
  const Content got = golden_content("rabbitmq_basic_get_ok");
  CHECK(got.header.properties == c.header.properties);
  CHECK(got.body == c.body);
}

namespace {

// The task-protocol-2 headers Celery 5.2 sends (celery-wire.md section 3.4), in wire order.
void check_celery_headers(const FieldTable& h, std::string_view id, bool with_eta) {
  const std::vector<std::string> protocol2 = {"lang", "task", "id", "shadow", "eta", "expires", "group",
                                              "group_index", "retries", "timelimit", "root_id", "parent_id",
                                              "argsrepr", "kwargsrepr", "origin", "ignore_result"};
  const std::vector<std::string> k = keys(h);
  REQUIRE(k.size() >= protocol2.size());
  CHECK(std::vector<std::string>(k.begin(), k.begin() + static_cast<long>(protocol2.size())) == protocol2);
  CHECK(std::get<std::string>(at(h, "lang").v) == "py");
  CHECK(std::get<std::string>(at(h, "task").v) == "addTask.add");
  CHECK(std::get<std::string>(at(h, "id").v) == id);
  CHECK(std::get<std::string>(at(h, "root_id").v) == id);
  for (const char* v : {"shadow", "expires", "group", "group_index", "parent_id"})
    CHECK(std::holds_alternative<Void>(at(h, v).v));
  if (with_eta) {
    CHECK(std::get<std::string>(at(h, "eta").v) == "2026-11-26T19:31:20.327326+00:00");
  } else {
    CHECK(std::holds_alternative<Void>(at(h, "eta").v));
  }
  CHECK(std::get<std::int32_t>(at(h, "retries").v) == 0);
  CHECK(at(h, "timelimit") == FieldValue(FieldArray{FieldValue(Void{}), FieldValue(Void{})}));
  CHECK(std::get<std::string>(at(h, "argsrepr").v) == "(5, 5)");
  CHECK(std::get<std::string>(at(h, "kwargsrepr").v) == "{}");
  CHECK(std::get<std::string>(at(h, "origin").v).rfind("gen", 0) == 0);
  CHECK(std::get<bool>(at(h, "ignore_result").v) == false);
}

constexpr std::string_view kTaskId = "5eac2e01-3140-420f-bdbe-c3f2f9fda8a1";

}  // namespace

TEST_CASE("golden: real Celery send_task properties") {
  const Content c = golden_content("celery_send_task");
  CHECK(c.header.body_size == 81);
  CHECK(c.body == R"([[5, 5], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}])");
  CHECK(flags_of(c.header.properties) == 0xFE00);
  const BasicProperties p = decode_properties(c.header.properties);
  CHECK(encode_properties(p) == c.header.properties);
  check_summary_agrees(c.header.properties);
  check_every_prefix_throws(c.header.properties);
  CHECK(p.content_type == "application/json");
  CHECK(p.content_encoding == "utf-8");
  CHECK(p.delivery_mode == 2);
  CHECK(p.priority == 0);
  CHECK(p.correlation_id == kTaskId);
  REQUIRE(p.reply_to.has_value());
  CHECK(p.reply_to->size() == 36);  // the producer app's oid
  CHECK_FALSE(p.expiration.has_value());
  CHECK_FALSE(p.timestamp.has_value());
  REQUIRE(p.headers.has_value());
  CHECK(p.headers->entries.size() == 16);
  check_celery_headers(*p.headers, kTaskId, false);
}

TEST_CASE("golden: py-amqp Celery-style publish with the full headers table, delivered unchanged") {
  const Content c = golden_content("pyamqp_celery_publish_3_body_frames");
  CHECK(c.header.body_size == 10000);
  CHECK(c.body.size() == 10000);
  CHECK(flags_of(c.header.properties) == 0xFE00);
  const BasicProperties p = decode_properties(c.header.properties);
  CHECK(encode_properties(p) == c.header.properties);
  check_summary_agrees(c.header.properties);
  check_every_prefix_throws(c.header.properties);
  CHECK(p.delivery_mode == 2);
  CHECK(p.priority == 0);
  CHECK(p.correlation_id == kTaskId);
  CHECK(p.reply_to == "c3cdaa41-59d9-3e12-80de-d0754ecf1c8b");
  REQUIRE(p.headers.has_value());
  const FieldTable& h = *p.headers;
  check_celery_headers(h, kTaskId, true);
  CHECK(std::get<std::string>(at(h, "origin").v) == "gen13108@vm");
  CHECK(std::get<double>(at(h, "score").v) == 0.5);
  CHECK(std::get<Decimal>(at(h, "price").v) == Decimal{3, -12345});
  CHECK(std::get<Timestamp>(at(h, "when").v).seconds == 1795721480u);
  FieldTable nested{{{"depth", FieldValue(std::int32_t{2})}, {"ok", FieldValue(true)}}};
  const FieldValue list(FieldArray{FieldValue(std::int32_t{1}),
                                   FieldValue(FieldArray{FieldValue(std::int32_t{2}),
                                                         FieldValue(FieldArray{FieldValue(std::int32_t{3})})})});
  CHECK(at(h, "meta") == FieldValue(FieldTable{{{"nested", FieldValue(nested)}, {"list", list}}}));

  const Content delivered = golden_content("rabbitmq_deliver_3_body_frames");
  CHECK(delivered.header.properties == c.header.properties);
  CHECK(delivered.body == c.body);
}

TEST_CASE("headers kept encoded: the table's bytes as sent, every other property decoded") {
  const Content c = golden_content("pyamqp_celery_publish_3_body_frames");
  const BasicProperties decoded = decode_properties(c.header.properties);
  std::string encoded_headers = "left over from the last message";
  BasicProperties p = decode_properties(c.header.properties, encoded_headers);
  CHECK_FALSE(p.headers.has_value());
  std::string table;
  Writer w(table);
  encode_table(w, *decoded.headers);
  CHECK(encoded_headers == table);
  p.headers = decoded.headers;
  CHECK(p == decoded);
  // No headers: the buffer is cleared. A table that does not fit throws; one
  // that fits but holds an unknown field type is left to its reader.
  decode_properties(encode_properties(only(3)), encoded_headers);
  CHECK(encoded_headers.empty());
  CHECK_THROWS_AS(decode_properties(bytes({0x20, 0x00, 0, 0, 0, 9, 1, 'k'}), encoded_headers), DecodeError);
  const std::string bad_table = bytes({0x30, 0x00, 0, 0, 0, 3, 1, 'k', '?', 2});
  CHECK_THROWS_AS(decode_properties(bad_table), DecodeError);
  p = decode_properties(bad_table, encoded_headers);
  CHECK(encoded_headers == bytes({0, 0, 0, 3, 1, 'k', '?'}));
  CHECK(p.delivery_mode == 2);
}

TEST_CASE("summarize_properties reads expiration and user-id as views") {
  BasicProperties p;
  p.expiration = "1500";
  p.user_id = "guest";
  p.priority = 0;
  const std::string wire = encode_properties(p);
  const PropertiesSummary s = summarize_properties(wire);
  CHECK(s.has_expiration);
  CHECK(s.expiration == "1500");
  CHECK(s.expiration.data() >= wire.data());
  CHECK(s.expiration.data() < wire.data() + wire.size());
  CHECK(s.has_user_id);
  CHECK(s.user_id == "guest");
  CHECK(s.has_priority);
  CHECK(s.priority == 0);
  CHECK_FALSE(s.has_headers);
  CHECK(s.delivery_mode == 0);
}

TEST_CASE("continuation flag words are accepted") {
  // content-type flag + continuation bit, then an empty second flag word.
  const std::string wire = bytes({0x80, 0x01, 0x00, 0x00, 4, 't', 'e', 'x', 't'});
  const BasicProperties p = decode_properties(wire);
  CHECK(p.content_type == "text");
  check_summary_agrees(wire);
  // Missing continuation word.
  CHECK_THROWS_AS(decode_properties(bytes({0x00, 0x01})), DecodeError);
  CHECK_THROWS_AS(summarize_properties(bytes({0x00, 0x01})), DecodeError);
}

TEST_CASE("summarize skips the headers table without parsing it") {
  // A headers table with an unknown field type: decode rejects it, summarize
  // (which the broker runs on every publish) only skips its bytes.
  const std::string wire = bytes({0x30, 0x00, 0, 0, 0, 3, 1, 'k', '?', 2});
  CHECK_THROWS_AS(decode_properties(wire), DecodeError);
  const PropertiesSummary s = summarize_properties(wire);
  CHECK(s.has_headers);
  CHECK(s.delivery_mode == 2);
}

TEST_CASE("content header encoding, decoding and truncation") {
  const std::string props = encode_properties(only(3));
  std::string out;
  Writer w(out);
  encode_content_header(w, 60, 0x0102030405060708ull, props);
  CHECK(out == bytes({0, 60, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0x10, 0x00, 2}));
  const ContentHeader h = decode_content_header(out);
  CHECK(h.class_id == 60);
  CHECK(h.body_size == 0x0102030405060708ull);
  CHECK(h.properties == props);
  CHECK(h.properties.data() == out.data() + 12);  // a view, not a copy
  // Every prefix that cuts into class, weight, body size or the flag word throws.
  for (std::size_t n = 0; n < 14; ++n) {
    CAPTURE(n);
    CHECK_THROWS_AS(decode_content_header(std::string_view(out).substr(0, n)), DecodeError);
  }
  // Golden headers: every prefix throws in the header or in the properties.
  for (const char* name : {"celery_send_task", "pika_publish_all_properties", "rabbitmq_basic_deliver"}) {
    CAPTURE(name);
    const std::string data = load_hex(name);
    std::string_view rest = data;
    for (;;) {
      const FrameResult res = decode_frame(rest, 0);
      REQUIRE(res.status == DecodeStatus::kFrame);
      rest.remove_prefix(res.consumed);
      if (res.frame.type != FrameType::kHeader) continue;
      const std::string_view payload = res.frame.payload;
      CHECK_NOTHROW(decode_properties(decode_content_header(payload).properties));
      for (std::size_t n = 0; n < payload.size(); ++n) {
        CAPTURE(n);
        CHECK_THROWS_AS(decode_properties(decode_content_header(payload.substr(0, n)).properties), DecodeError);
      }
      break;
    }
  }
}
