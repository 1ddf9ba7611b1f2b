// libFuzzer target: untrusted bytes through decode_frame, decode_method,
// decode_content_header, decode_properties and summarize_properties.
//
// Beyond "no crash, no over-read, no leak" (ASan/UBSan), it checks properties:
//  - decode_frame stays inside the buffer and reports consistent sizes;
//  - the only exception a decoder throws is DecodeError (anything else aborts);
//  - whatever decodes re-encodes to a canonical form that is a fixed point
//    (encode(decode(encode(decode(x)))) == encode(decode(x)));
//  - summarize_properties succeeds and agrees whenever decode_properties does;
//  - write_content frames a header + body that decode_frame splits back.
// Seeds: tests/fuzz/corpus/frame (golden captures, whole and frame by frame).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "common/amqp/frame.hpp"
#include "common/amqp/properties.hpp"

namespace {

using namespace mb::amqp;  // NOLINT(google-build-using-namespace): fuzz target

void require(bool ok) {
  if (!ok) __builtin_trap();
}

std::string encode(const Method& m) {
  std::string out;
  Writer w(out);
  std::visit([&](const auto& x) { encode_method(w, x); }, m);
  return out;
}

void fuzz_method(std::string_view payload) {
  try {
    const Method m = decode_method(payload);
    require(method_name(m) != "unknown");
    const std::string once = encode(m);
    const Method again = decode_method(once);
    require(again.index() == m.index());
    require(encode(again) == once);
    std::string framed;
    std::visit([&](const auto& x) { write_method(framed, 7, x); }, m);
    const FrameResult res = decode_frame(framed, 0);
    require(res.status == DecodeStatus::kFrame && res.consumed == framed.size() && res.frame.payload == once);
  } catch (const DecodeError&) {
  }
}

void fuzz_properties(std::string_view encoded) {
  BasicProperties p;
  try {
    p = decode_properties(encoded);
  } catch (const DecodeError&) {
    try {
      summarize_properties(encoded);  // may succeed: it does not parse the headers table
    } catch (const DecodeError&) {
    }
    return;
  }
  const PropertiesSummary s = summarize_properties(encoded);  // must not throw now
  require(s.delivery_mode == p.delivery_mode.value_or(0));
  require(s.has_priority == p.priority.has_value() && s.priority == p.priority.value_or(0));
  require(s.has_headers == p.headers.has_value());
  require(s.has_expiration == p.expiration.has_value() && s.expiration == p.expiration.value_or(""));
  require(s.has_user_id == p.user_id.has_value() && s.user_id == p.user_id.value_or(""));
  const std::string once = encode_properties(p);
  require(encode_properties(decode_properties(once)) == once);
}

void fuzz_content_header(std::string_view payload, std::uint16_t channel) {
  ContentHeader h;
  try {
    h = decode_content_header(payload);
  } catch (const DecodeError&) {
    return;
  }
  fuzz_properties(h.properties);
  // Frame the header again with a small body and split it back.
  const std::string_view body = payload.substr(0, payload.size() % 5000);
  std::string out;
  write_content(out, channel, h.properties, body, 4096);
  std::string_view rest = out;
  std::string joined;
  bool first = true;
  while (!rest.empty()) {
    const FrameResult res = decode_frame(rest, 4096);
    require(res.status == DecodeStatus::kFrame && res.frame.channel == channel);
    if (first) {
      require(res.frame.type == FrameType::kHeader);
      const ContentHeader back = decode_content_header(res.frame.payload);
      require(back.body_size == body.size() && back.properties == h.properties);
      first = false;
    } else {
      require(res.frame.type == FrameType::kBody && !res.frame.payload.empty());
      joined.append(res.frame.payload);
    }
    rest.remove_prefix(res.consumed);
  }
  require(joined == body);
}

void fuzz_frames(std::string_view in, std::uint32_t frame_max) {
  while (!in.empty()) {
    const FrameResult res = decode_frame(in, frame_max);
    if (res.status == DecodeStatus::kNeedMore) {
      require(res.needed > in.size());
      return;
    }
    if (res.status == DecodeStatus::kError) return;
    require(res.consumed == res.frame.payload.size() + kFrameOverhead && res.consumed <= in.size());
    require(res.frame.payload.data() == in.data() + kFrameHeaderSize);
    require(frame_max == 0 || res.consumed <= frame_max);
    switch (res.frame.type) {
      case FrameType::kMethod:
        fuzz_method(res.frame.payload);
        break;
      case FrameType::kHeader:
        fuzz_content_header(res.frame.payload, res.frame.channel);
        break;
      case FrameType::kBody:
      case FrameType::kHeartbeat:
        break;
    }
    in.remove_prefix(res.consumed);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  fuzz_frames(in, 131072);
  // A small limit exercises the frame_max check on the same input (no re-decoding of payloads:
  // every frame that fits 4096 also fit above).
  std::string_view rest = in;
  while (!rest.empty()) {
    const FrameResult res = decode_frame(rest, 4096);
    if (res.status != DecodeStatus::kFrame) break;
    rest.remove_prefix(res.consumed);
  }
  // The raw input as a method payload and as encoded properties, too.
  fuzz_method(in);
  fuzz_properties(in);
  return 0;
}
