// AMQP 0-9-1 framing (spec 4.2.3): the protocol header, frame decoding in
// place, and frame writers.
//
// decode_frame() never copies: a Frame's payload is a view into the caller's
// buffer. It returns NeedMore (with how many bytes are missing at least) until a
// whole frame is buffered, and enforces frame_max from the 7-byte header alone,
// before the caller buffers anything more.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/amqp/bytes.hpp"
#include "common/amqp/methods.gen.hpp"
#include "common/amqp/properties.hpp"

namespace mb::amqp {

inline constexpr std::string_view kProtocolHeader{"AMQP\x00\x00\x09\x01", 8};
inline constexpr std::size_t kFrameHeaderSize = 7;
inline constexpr std::size_t kFrameOverhead = 8;  // header + frame-end octet

enum class FrameType : std::uint8_t { kMethod = 1, kHeader = 2, kBody = 3, kHeartbeat = 8 };

struct Frame {
  FrameType type = FrameType::kMethod;
  std::uint16_t channel = 0;
  std::string_view payload;
};

enum class DecodeStatus { kFrame, kNeedMore, kError };

struct FrameResult {
  DecodeStatus status = DecodeStatus::kNeedMore;
  Frame frame;
  std::size_t consumed = 0;  // bytes of the frame, when status == kFrame
  std::size_t needed = 0;    // total bytes this frame needs, when kNeedMore (0 if unknown yet)
  const char* error = "";    // what was wrong, when kError (reply code 501 FRAME_ERROR)
};

// frame_max is the negotiated maximum frame size including header and end
// octet (0 means no limit). Unknown frame types and a bad end octet are errors.
FrameResult decode_frame(std::string_view buffer, std::uint32_t frame_max);

// Appends one method frame.
template <typename M>
void write_method(std::string& out, std::uint16_t channel, const M& method) {
  Writer w(out);
  w.u8(static_cast<std::uint8_t>(FrameType::kMethod));
  w.u16(channel);
  const std::size_t at = w.size();
  w.u32(0);
  encode_method(w, method);
  w.patch_u32(at, static_cast<std::uint32_t>(w.size() - at - 4));
  w.u8(static_cast<std::uint8_t>(kFrameEnd));
}

// Appends a content header frame and the body split into body frames of at most
// frame_max - 8 bytes (frame_max 0: one body frame).
void write_content(std::string& out, std::uint16_t channel, std::string_view encoded_properties,
                   std::string_view body, std::uint32_t frame_max);

// Appends header and body frames for a body given in pieces (the broker keeps
// bodies in the chunks they arrived in).
template <typename Chunks>
void write_content_chunks(std::string& out, std::uint16_t channel, std::string_view encoded_properties,
                          std::uint64_t body_size, const Chunks& chunks, std::uint32_t frame_max);

// Appends a whole delivery: the basic.deliver method frame, the content
// header and the body; the same bytes as write_method(out, channel, m) then
// write_content(out, channel, encoded_properties, body, frame_max). A body
// that fits one frame (nearly all) is written in place after a single resize,
// rather than by some twenty appends: this is the broker's per-delivery path.
void write_delivery(std::string& out, std::uint16_t channel, const BasicDeliver& m,
                    std::string_view encoded_properties, std::string_view body, std::uint32_t frame_max);

void write_heartbeat(std::string& out);

}  // namespace mb::amqp

#include "common/amqp/frame_inl.hpp"
