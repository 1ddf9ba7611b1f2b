// Frame decoding and writing. See frame.hpp.
#include "common/amqp/frame.hpp"

#include <array>

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

void write_heartbeat(std::string& out) {
  static constexpr char kHeartbeat[] = {8, 0, 0, 0, 0, 0, 0, static_cast<char>(0xCE)};
  out.append(kHeartbeat, sizeof(kHeartbeat));
}

}  // namespace mb::amqp
