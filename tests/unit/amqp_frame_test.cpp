// Unit tests for common/amqp/frame.hpp: decode_frame and the frame writers.
//
// Concerns:
// [x] golden captures (RabbitMQ, pika, py-amqp, Celery) split into exactly the frames captured
// [x] heartbeat bytes are exactly 08 0000 00000000 CE, and decode back
// [x] every proper prefix of every golden frame is NeedMore, with the total size once the
//     7-byte header is in, and never an error
// [x] a bad frame-end octet is an error
// [x] a declared size above frame_max is an error from the 7-byte header alone, before the
//     payload arrives; exactly frame_max is accepted; frame_max 0 means no limit
// [x] unknown frame types are errors from the header alone
// [x] several frames in one buffer, ending in a partial one
// [x] write_method reproduces captured method frames byte for byte
// [x] write_content splits a body into frame_max-8 chunks (golden: py-amqp's 3 body frames)
// [x] write_content_chunks with arbitrary chunking (empty chunks too) produces identical bytes
// [x] empty body: a header frame and no body frame
// [x] frame_max below 9 in the writers (no room for a payload byte) still terminates
// [x] write_delivery (the broker's fused writer) equals write_method + write_content
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "tests/unit/support/golden.hpp"
#include "common/amqp/frame.hpp"

using namespace mb::amqp;  // NOLINT(google-build-using-namespace): test file

namespace {

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int x : b) s.push_back(static_cast<char>(x));
  return s;
}

// Every capture in tests/data/frames, by name, sorted.
std::vector<std::string> golden_names() {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(MB_TEST_DATA_DIR) + "/frames"))
    if (entry.path().extension() == ".hex") names.push_back(entry.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

const std::vector<std::string> kGolden = golden_names();

// Splits a buffer of whole frames; every byte must belong to a frame.
std::vector<Frame> split(std::string_view data, std::uint32_t frame_max = 131072) {
  std::vector<Frame> frames;
  while (!data.empty()) {
    const FrameResult res = decode_frame(data, frame_max);
    REQUIRE(res.status == DecodeStatus::kFrame);
    frames.push_back(res.frame);
    data.remove_prefix(res.consumed);
  }
  return frames;
}

std::string header(int type, int channel, std::uint32_t size) {
  std::string out;
  Writer w(out);
  w.u8(static_cast<std::uint8_t>(type));
  w.u16(static_cast<std::uint16_t>(channel));
  w.u32(size);
  return out;
}

std::string body_of(const std::vector<Frame>& frames) {
  std::string body;
  for (const Frame& f : frames)
    if (f.type == FrameType::kBody) body.append(f.payload);
  return body;
}

}  // namespace

TEST_CASE("the protocol header is AMQP 0-9-1") {
  CHECK(kProtocolHeader == bytes({'A', 'M', 'Q', 'P', 0, 0, 9, 1}));
  CHECK(kFrameEnd == 0xCE);
}

TEST_CASE("heartbeat bytes are exactly 08 0000 00000000 CE") {
  std::string out = "x";
  write_heartbeat(out);
  CHECK(out == bytes({'x', 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xCE}));
  const FrameResult res = decode_frame(std::string_view(out).substr(1), 4096);
  REQUIRE(res.status == DecodeStatus::kFrame);
  CHECK(res.frame.type == FrameType::kHeartbeat);
  CHECK(res.frame.channel == 0);
  CHECK(res.frame.payload.empty());
  CHECK(res.consumed == 8);
}

TEST_CASE("golden captures split into the captured frames") {
  REQUIRE(kGolden.size() >= 60);
  for (const auto& name : kGolden) {
    CAPTURE(name);
    const std::string data = load_hex(name);
    REQUIRE(data.size() >= kFrameOverhead);
    const std::vector<Frame> frames = split(data);
    CHECK(frames.front().type == FrameType::kMethod);
    std::size_t total = 0;
    for (const Frame& f : frames) {
      total += f.payload.size() + kFrameOverhead;
      // Payloads are views into the buffer, not copies.
      CHECK(f.payload.data() >= data.data());
      CHECK(f.payload.data() + f.payload.size() <= data.data() + data.size());
    }
    CHECK(total == data.size());
  }
  const std::string pub = load_hex("pyamqp_celery_publish_3_body_frames");
  const std::vector<Frame> frames = split(pub, 4096);
  REQUIRE(frames.size() == 5);
  CHECK(frames[0].type == FrameType::kMethod);
  CHECK(frames[1].type == FrameType::kHeader);
  CHECK(frames[2].payload.size() == 4088);
  CHECK(frames[3].payload.size() == 4088);
  CHECK(frames[4].payload.size() == 1824);
  for (const Frame& f : frames) CHECK(f.channel == 1);
}

TEST_CASE("every proper prefix of every golden frame needs more") {
  for (const auto& name : kGolden) {
    CAPTURE(name);
    const std::string data = load_hex(name);
    const FrameResult first = decode_frame(data, 131072);
    REQUIRE(first.status == DecodeStatus::kFrame);
    const std::string_view frame = std::string_view(data).substr(0, first.consumed);
    for (std::size_t n = 0; n < frame.size(); ++n) {
      CAPTURE(n);
      const FrameResult res = decode_frame(frame.substr(0, n), 131072);
      REQUIRE(res.status == DecodeStatus::kNeedMore);
      CHECK(res.needed > n);
      CHECK(res.needed <= frame.size());
      if (n >= kFrameHeaderSize) CHECK(res.needed == frame.size());
    }
  }
}

TEST_CASE("a bad frame-end octet is an error") {
  for (int end : {0x00, 0xCD, 0xCF, 0xFF}) {
    CAPTURE(end);
    std::string f = bytes({0x08, 0, 0, 0, 0, 0, 0, end});
    const FrameResult res = decode_frame(f, 0);
    CHECK(res.status == DecodeStatus::kError);
    CHECK(std::string(res.error) == "bad frame-end octet");
  }
  std::string golden = load_hex("pika_basic_qos");
  golden.back() = '\0';
  CHECK(decode_frame(golden, 131072).status == DecodeStatus::kError);
}

TEST_CASE("a declared size above frame_max is an error before the payload arrives") {
  // Only the 7-byte header is buffered.
  const std::string too_big = header(1, 1, 4096 - 8 + 1);
  const FrameResult res = decode_frame(too_big, 4096);
  CHECK(res.status == DecodeStatus::kError);
  CHECK(std::string(res.error) == "frame larger than frame_max");
  CHECK(decode_frame(header(3, 1, 0xffffffff), 131072).status == DecodeStatus::kError);

  // frame_max counts the header and end octet: size frame_max - 8 is fine.
  const std::string just_fits = header(3, 1, 4096 - 8);
  const FrameResult need = decode_frame(just_fits, 4096);
  CHECK(need.status == DecodeStatus::kNeedMore);
  CHECK(need.needed == 4096);
  std::string whole = just_fits + std::string(4088, 'b') + "\xCE";
  const FrameResult ok = decode_frame(whole, 4096);
  REQUIRE(ok.status == DecodeStatus::kFrame);
  CHECK(ok.consumed == 4096);

  // frame_max 0: no limit; a 4 GiB declared size just needs more.
  const FrameResult unlimited = decode_frame(header(3, 1, 0xffffffff), 0);
  CHECK(unlimited.status == DecodeStatus::kNeedMore);
  CHECK(unlimited.needed == std::size_t{0xffffffff} + 8);

  // The golden 3-body-frame publish does not fit a smaller frame_max.
  const std::string pub = load_hex("pyamqp_celery_publish_3_body_frames");
  std::string_view rest = pub;
  bool rejected = false;
  while (!rest.empty()) {
    const FrameResult r = decode_frame(rest, 4095);
    if (r.status == DecodeStatus::kError) {
      rejected = true;
      break;
    }
    REQUIRE(r.status == DecodeStatus::kFrame);
    rest.remove_prefix(r.consumed);
  }
  CHECK(rejected);
}

TEST_CASE("unknown frame types are errors from the header alone") {
  for (int type = 0; type < 256; ++type) {
    if (type == 1 || type == 2 || type == 3 || type == 8) continue;
    CAPTURE(type);
    const FrameResult res = decode_frame(header(type, 0, 0), 4096);
    CHECK(res.status == DecodeStatus::kError);
    CHECK(std::string(res.error) == "unknown frame type");
  }
  // 'A' of a second protocol header arriving as a frame.
  CHECK(decode_frame(kProtocolHeader, 4096).status == DecodeStatus::kError);
}

TEST_CASE("several frames in one buffer, the last one partial") {
  std::string buf;
  for (const char* name : {"pika_connection_start_ok", "pika_connection_tune_ok", "pika_connection_open",
                           "pika_publish_all_properties"})
    buf += load_hex(name);
  write_heartbeat(buf);
  const std::string tail = load_hex("rabbitmq_basic_deliver");
  buf += tail.substr(0, 10);

  std::string_view rest = buf;
  std::vector<FrameType> types;
  std::vector<std::uint16_t> channels;
  for (;;) {
    const FrameResult res = decode_frame(rest, 131072);
    if (res.status != DecodeStatus::kFrame) {
      CHECK(res.status == DecodeStatus::kNeedMore);
      break;
    }
    types.push_back(res.frame.type);
    channels.push_back(res.frame.channel);
    rest.remove_prefix(res.consumed);
  }
  CHECK(types == std::vector<FrameType>{FrameType::kMethod, FrameType::kMethod, FrameType::kMethod,
                                        FrameType::kMethod, FrameType::kHeader, FrameType::kBody,
                                        FrameType::kHeartbeat});
  CHECK(channels == std::vector<std::uint16_t>{0, 0, 0, 1, 1, 1, 0});
  CHECK(rest == std::string_view(tail).substr(0, 10));
}

TEST_CASE("write_method reproduces captured method frames") {
  for (const auto& name : kGolden) {
    CAPTURE(name);
    const std::string data = load_hex(name);
    std::string_view rest = data;
    while (!rest.empty()) {
      const FrameResult res = decode_frame(rest, 0);
      REQUIRE(res.status == DecodeStatus::kFrame);
      if (res.frame.type == FrameType::kMethod) {
        const Method m = decode_method(res.frame.payload);
        std::string out;
        std::visit([&](const auto& x) { write_method(out, res.frame.channel, x); }, m);
        std::string expected(rest.substr(0, res.consumed));
        // py-amqp's 'L' is written back as RabbitMQ's 'l' (see amqp_field_table_test).
        if (name == "pyamqp_queue_declare_big_ttl_L") {
          const std::size_t at = expected.find("x-message-ttlL");
          REQUIRE(at != std::string::npos);
          expected[at + 13] = 'l';
        }
        CHECK(out == expected);
      }
      rest.remove_prefix(res.consumed);
    }
  }
}

TEST_CASE("write_content matches the captured header and body frames") {
  for (const char* name : {"pyamqp_celery_publish_3_body_frames", "rabbitmq_deliver_3_body_frames"}) {
    CAPTURE(name);
    const std::string data = load_hex(name);
    const std::vector<Frame> frames = split(data, 4096);
    REQUIRE(frames.size() == 5);
    const ContentHeader h = decode_content_header(frames[1].payload);
    const std::string body = body_of(frames);
    CHECK(h.body_size == 10000);
    CHECK(body.size() == 10000);
    // The captured content frames start after the method frame.
    const std::size_t method_size = frames[0].payload.size() + kFrameOverhead;
    std::string out;
    write_content(out, 1, h.properties, body, 4096);
    CHECK(out == std::string_view(data).substr(method_size));
  }
  // A single body frame when it fits (pika publish, 10 bytes, frame_max 131072).
  const std::string data = load_hex("pika_publish_all_properties");
  const std::vector<Frame> frames = split(data);
  REQUIRE(frames.size() == 3);
  const ContentHeader h = decode_content_header(frames[1].payload);
  std::string out;
  write_content(out, 1, h.properties, body_of(frames), 131072);
  CHECK(out == std::string_view(data).substr(frames[0].payload.size() + kFrameOverhead));
}

TEST_CASE("write_content splits into frame_max-8 chunks") {
  const std::string props = bytes({0x10, 0x00, 2});  // delivery-mode 2
  for (std::uint32_t frame_max : {4096u, 4097u, 131072u}) {
    const std::size_t chunk = frame_max - 8;
    for (std::size_t size : {std::size_t{0}, std::size_t{1}, chunk - 1, chunk, chunk + 1, 3 * chunk, 3 * chunk + 7}) {
      CAPTURE(frame_max);
      CAPTURE(size);
      std::string body(size, '\0');
      for (std::size_t i = 0; i < size; ++i) body[i] = static_cast<char>(i * 7);
      std::string out;
      write_content(out, 5, props, body, frame_max);
      const std::vector<Frame> frames = split(out, frame_max);
      REQUIRE(!frames.empty());
      CHECK(frames[0].type == FrameType::kHeader);
      const ContentHeader h = decode_content_header(frames[0].payload);
      CHECK(h.class_id == 60);
      CHECK(h.body_size == size);
      CHECK(h.properties == props);
      CHECK(frames.size() == 1 + (size + chunk - 1) / chunk);
      for (std::size_t i = 1; i < frames.size(); ++i) {
        CHECK(frames[i].type == FrameType::kBody);
        CHECK(frames[i].channel == 5);
        CHECK(frames[i].payload.size() == (i + 1 < frames.size() ? chunk : size - (frames.size() - 2) * chunk));
      }
      CHECK(body_of(frames) == body);
    }
  }
  // frame_max 0: the whole body in one frame.
  const std::string big(300000, 'q');
  std::string out;
  write_content(out, 1, props, big, 0);
  const std::vector<Frame> frames = split(out, 0);
  REQUIRE(frames.size() == 2);
  CHECK(frames[1].payload.size() == big.size());
}

TEST_CASE("write_content_chunks with arbitrary chunking produces identical bytes") {
  const std::string props = bytes({0x80, 0x00, 4, 't', 'e', 'x', 't'});
  std::mt19937 rng(12345);
  for (std::uint32_t frame_max : {4096u, 5000u, 0u}) {
    for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{4088}, std::size_t{10000}, std::size_t{20001}}) {
      std::string body(size, '\0');
      for (std::size_t i = 0; i < size; ++i) body[i] = static_cast<char>(rng());
      std::string expected;
      write_content(expected, 3, props, body, frame_max);
      for (int trial = 0; trial < 25; ++trial) {
        CAPTURE(frame_max);
        CAPTURE(size);
        CAPTURE(trial);
        std::vector<std::string_view> chunks;
        std::size_t pos = 0;
        while (pos < size) {
          // Mostly small pieces, sometimes empty ones, sometimes a big one.
          std::size_t n = rng() % 4 == 0 ? 0 : (rng() % 3 == 0 ? rng() % 9000 : rng() % 50 + 1);
          n = std::min(n, size - pos);
          chunks.push_back(std::string_view(body).substr(pos, n));
          pos += n;
        }
        if (trial % 5 == 0) chunks.push_back({});
        std::string out;
        write_content_chunks(out, 3, props, size, chunks, frame_max);
        CHECK(out == expected);
      }
      // One chunk per byte.
      std::vector<std::string_view> singles;
      for (std::size_t i = 0; i < size; ++i) singles.push_back(std::string_view(body).substr(i, 1));
      std::string out;
      write_content_chunks(out, 3, props, size, singles, frame_max);
      CHECK(out == expected);
    }
  }
}

TEST_CASE("an empty body is a header frame and no body frame") {
  std::string out;
  write_content(out, 2, bytes({0, 0}), "", 4096);
  CHECK(out == header(2, 2, 14) + bytes({0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xCE}));
  std::string chunked;
  const std::vector<std::string_view> none;
  write_content_chunks(chunked, 2, bytes({0, 0}), 0, none, 4096);
  CHECK(chunked == out);
}

TEST_CASE("a frame_max with no room for payload still terminates, one byte per body frame") {
  for (std::uint32_t frame_max : {1u, 7u, 8u, 9u}) {
    CAPTURE(frame_max);
    std::string out;
    write_content(out, 1, bytes({0, 0}), "abc", frame_max);
    const std::vector<Frame> frames = split(out, 0);
    REQUIRE(frames.size() == 4);
    CHECK(body_of(frames) == "abc");
  }
}

TEST_CASE("write_delivery writes the same bytes as write_method(basic.deliver) then write_content") {
  const std::string long_name(300, 'k');  // past a shortstr: cut to 255 by both
  const std::string props = encode_properties([] {
    BasicProperties p;
    p.content_type = "application/json";
    p.delivery_mode = 2;
    p.headers.emplace();
    p.headers->set("id", std::string("0f3a"));
    return p;
  }());
  struct Case {
    std::uint16_t channel;
    std::string_view tag, exchange, routing_key, properties;
    std::size_t body_size;
    std::uint32_t frame_max;
    bool redelivered;
  };
  const Case cases[] = {
      {1, "amq.ctag-1", "", "celery", props, 100, 131072, false},
      {65535, "t", "amq.topic", "a.b.c", "", 0, 131072, true},   // no body frame
      {7, "", "", "", props, 4096 - 8, 4096, false},              // the body fills one frame exactly
      {7, "c", "x", "r", props, 4096 - 7, 4096, false},           // one byte more: two body frames
      {2, long_name, long_name, long_name, props, 10000, 4096, true},
      {3, "c", "x", "r", "", 70000, 0, false},                    // frame_max 0: no limit
  };
  for (const Case& c : cases) {
    CAPTURE(c.body_size);
    CAPTURE(c.frame_max);
    std::string body(c.body_size, '\0');
    for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>('a' + i % 26);
    const BasicDeliver m{c.tag, 0x0102030405060708ULL, c.redelivered, c.exchange, c.routing_key};
    std::string expected = "prefix";  // appended after what the buffer held
    write_method(expected, c.channel, m);
    write_content(expected, c.channel, c.properties, body, c.frame_max);
    std::string got = "prefix";
    write_delivery(got, c.channel, m, c.properties, body, c.frame_max);
    CHECK(got == expected);
  }
}
