// Template definitions for frame.hpp.
#pragma once

#include <algorithm>
#include <cstdint>

namespace mb::amqp {

namespace detail {
void begin_frame(Writer& w, FrameType type, std::uint16_t channel, std::uint32_t size);
void write_header_frame(std::string& out, std::uint16_t channel, std::string_view encoded_properties,
                        std::uint64_t body_size, std::uint16_t class_id);
}  // namespace detail

template <typename Chunks>
void write_content_chunks(std::string& out, std::uint16_t channel, std::string_view encoded_properties,
                          std::uint64_t body_size, const Chunks& chunks, std::uint32_t frame_max) {
  detail::write_header_frame(out, channel, encoded_properties, body_size, 60);
  // frame_max 0: no limit. A frame_max with no room for a payload byte (<= 8, which
  // the handshake should never accept) still gets one byte per frame: with 8 the
  // loop below would otherwise never end, and below 8 the subtraction would wrap.
  const std::size_t max_payload =
      frame_max == 0 ? SIZE_MAX : std::max<std::size_t>(frame_max, kFrameOverhead + 1) - kFrameOverhead;
  std::size_t room = 0;  // payload bytes left in the open body frame
  std::uint64_t left = body_size;
  Writer w(out);
  for (std::string_view chunk : chunks) {
    while (!chunk.empty()) {
      if (room == 0) {
        if (left != body_size) w.u8(static_cast<std::uint8_t>(kFrameEnd));
        const std::size_t size = static_cast<std::size_t>(std::min<std::uint64_t>(left, max_payload));
        detail::begin_frame(w, FrameType::kBody, channel, static_cast<std::uint32_t>(size));
        room = size;
      }
      const std::size_t n = std::min(room, chunk.size());
      w.raw(chunk.substr(0, n));
      chunk.remove_prefix(n);
      room -= n;
      left -= n;
    }
  }
  if (body_size != 0) w.u8(static_cast<std::uint8_t>(kFrameEnd));
}

}  // namespace mb::amqp
