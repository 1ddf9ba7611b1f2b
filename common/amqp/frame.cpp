// Frame decoding and writing. See frame.hpp.
#include "common/amqp/frame.hpp"

#include <array>
#include <cstring>

namespace mb::amqp {

FrameResult decode_frame(std::string_view buffer, std::uint32_t frame_max) {
  FrameResult res;
  if (buffer.size() < kFrameHeaderSize) {
    res.needed = kFrameHeaderSize + 1;
    return res;
  }
  Reader r(buffer);
  const std::uint8_t type = r.u8();
  const std::uint16_t channel = r.u16();
  const std::uint32_t size = r.u32();
  if (type != 1 && type != 2 && type != 3 && type != 8) {
    res.status = DecodeStatus::kError;
    res.error = "unknown frame type";
    return res;
  }
  if (frame_max != 0 && std::uint64_t{size} + kFrameOverhead > frame_max) {
    res.status = DecodeStatus::kError;
    res.error = "frame larger than frame_max";
    return res;
  }
  const std::size_t total = kFrameHeaderSize + std::size_t{size} + 1;
  if (buffer.size() < total) {
    res.needed = total;
    return res;
  }
  if (static_cast<std::uint8_t>(buffer[total - 1]) != kFrameEnd) {
    res.status = DecodeStatus::kError;
    res.error = "bad frame-end octet";
    return res;
  }
  res.status = DecodeStatus::kFrame;
  res.frame = Frame{static_cast<FrameType>(type), channel, buffer.substr(kFrameHeaderSize, size)};
  res.consumed = total;
  return res;
}

namespace detail {

void begin_frame(Writer& w, FrameType type, std::uint16_t channel, std::uint32_t size) {
  w.u8(static_cast<std::uint8_t>(type));
  w.u16(channel);
  w.u32(size);
}

void write_header_frame(std::string& out, std::uint16_t channel, std::string_view encoded_properties,
                        std::uint64_t body_size, std::uint16_t class_id) {
  Writer w(out);
  begin_frame(w, FrameType::kHeader, channel, static_cast<std::uint32_t>(12 + encoded_properties.size()));
  encode_content_header(w, class_id, body_size, encoded_properties);
  w.u8(static_cast<std::uint8_t>(kFrameEnd));
}

}  // namespace detail

void write_content(std::string& out, std::uint16_t channel, std::string_view encoded_properties,
                   std::string_view body, std::uint32_t frame_max) {
  const std::array<std::string_view, 1> chunks{body};
  write_content_chunks(out, channel, encoded_properties, body.size(), chunks, frame_max);
}

namespace {

// Big-endian stores into a buffer already sized for them.
class Placer {
 public:
  explicit Placer(char* p) : p_(p) {}
  void u8(std::uint8_t v) { *p_++ = static_cast<char>(v); }
  template <typename T>
  void be(T v) {
    store_be(p_, v);
    p_ += sizeof(T);
  }
  void bytes(std::string_view b) {
    if (!b.empty()) std::memcpy(p_, b.data(), b.size());
    p_ += b.size();
  }
  void shortstr(std::string_view s) {
    u8(static_cast<std::uint8_t>(s.size()));
    bytes(s);
  }
  void frame_head(FrameType type, std::uint16_t channel, std::size_t size) {
    u8(static_cast<std::uint8_t>(type));
    be(channel);
    be(static_cast<std::uint32_t>(size));
  }

 private:
  char* p_;
};

}  // namespace

void write_delivery(std::string& out, std::uint16_t channel, const BasicDeliver& m,
                    std::string_view encoded_properties, std::string_view body, std::uint32_t frame_max) {
  if (frame_max != 0 && body.size() + kFrameOverhead > frame_max) {  // several body frames: the general path
    write_method(out, channel, m);
    write_content(out, channel, encoded_properties, body, frame_max);
    return;
  }
  const std::string_view tag = clip_shortstr(m.consumer_tag);
  const std::string_view exchange = clip_shortstr(m.exchange);
  const std::string_view routing_key = clip_shortstr(m.routing_key);
  const std::size_t method = 4 + (1 + tag.size()) + 8 + 1 + (1 + exchange.size()) + (1 + routing_key.size());
  const std::size_t header = 12 + encoded_properties.size();
  const std::size_t total =
      kFrameOverhead + method + kFrameOverhead + header + (body.empty() ? 0 : kFrameOverhead + body.size());
  const std::size_t start = out.size();
  out.resize(start + total);
  Placer p(out.data() + start);
  p.frame_head(FrameType::kMethod, channel, method);
  p.be(std::uint16_t{60});
  p.be(std::uint16_t{60});
  p.shortstr(tag);
  p.be(m.delivery_tag);
  p.u8(m.redelivered ? 1 : 0);
  p.shortstr(exchange);
  p.shortstr(routing_key);
  p.u8(static_cast<std::uint8_t>(kFrameEnd));
  p.frame_head(FrameType::kHeader, channel, header);
  p.be(std::uint16_t{60});
  p.be(std::uint16_t{0});
  p.be(std::uint64_t{body.size()});
  p.bytes(encoded_properties);
  p.u8(static_cast<std::uint8_t>(kFrameEnd));
  if (!body.empty()) {
    p.frame_head(FrameType::kBody, channel, body.size());
    p.bytes(body);
    p.u8(static_cast<std::uint8_t>(kFrameEnd));
  }
}

void write_heartbeat(std::string& out) {
  static constexpr char kHeartbeat[] = {8, 0, 0, 0, 0, 0, 0, static_cast<char>(0xCE)};
  out.append(kHeartbeat, sizeof(kHeartbeat));
}

}  // namespace mb::amqp
