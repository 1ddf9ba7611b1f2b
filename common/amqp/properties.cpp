// Basic properties codec. See properties.hpp.
#include "common/amqp/properties.hpp"

namespace mb::amqp {
namespace {

// Flag bits, most significant first, in the order the spec lists the fields.
enum : std::uint16_t {
  kContentType = 1u << 15,
  kContentEncoding = 1u << 14,
  kHeaders = 1u << 13,
  kDeliveryMode = 1u << 12,
  kPriority = 1u << 11,
  kCorrelationId = 1u << 10,
  kReplyTo = 1u << 9,
  kExpiration = 1u << 8,
  kMessageId = 1u << 7,
  kTimestamp = 1u << 6,
  kType = 1u << 5,
  kUserId = 1u << 4,
  kAppId = 1u << 3,
  kClusterId = 1u << 2,
};

// Reads the property flag words. Basic uses only the first word; continuation
// words (bit 0 set) are accepted and must be empty of known flags.
std::uint16_t read_flags(Reader& r) {
  const std::uint16_t flags = r.u16();
  std::uint16_t more = flags;
  while (more & 1) more = r.u16();
  return flags;
}

// encoded_headers null: the headers are decoded into the result.
BasicProperties decode_properties_into(std::string_view encoded, std::string* encoded_headers) {
  Reader r(encoded);
  const std::uint16_t f = read_flags(r);
  BasicProperties p;
  auto str = [&r](std::uint16_t flags, std::uint16_t bit, std::optional<std::string>& out) {
    if (flags & bit) out = std::string(r.shortstr());
  };
  str(f, kContentType, p.content_type);
  str(f, kContentEncoding, p.content_encoding);
  if (encoded_headers != nullptr) {
    encoded_headers->clear();
    if (f & kHeaders) {
      const std::size_t start = r.position();
      r.take(r.u32());
      encoded_headers->assign(encoded.substr(start, r.position() - start));
    }
  } else if (f & kHeaders) {
    p.headers = decode_table(r);
  }
  if (f & kDeliveryMode) p.delivery_mode = r.u8();
  if (f & kPriority) p.priority = r.u8();
  str(f, kCorrelationId, p.correlation_id);
  str(f, kReplyTo, p.reply_to);
  str(f, kExpiration, p.expiration);
  str(f, kMessageId, p.message_id);
  if (f & kTimestamp) p.timestamp = r.u64();
  str(f, kType, p.type);
  str(f, kUserId, p.user_id);
  str(f, kAppId, p.app_id);
  str(f, kClusterId, p.cluster_id);
  if (!r.empty()) throw DecodeError("trailing bytes after basic properties");
  return p;
}

}  // namespace

BasicProperties decode_properties(std::string_view encoded) { return decode_properties_into(encoded, nullptr); }

BasicProperties decode_properties(std::string_view encoded, std::string& encoded_headers) {
  return decode_properties_into(encoded, &encoded_headers);
}

void encode_properties(Writer& w, const BasicProperties& p) {
  std::uint16_t f = 0;
  if (p.content_type) f |= kContentType;
  if (p.content_encoding) f |= kContentEncoding;
  if (p.headers) f |= kHeaders;
  if (p.delivery_mode) f |= kDeliveryMode;
  if (p.priority) f |= kPriority;
  if (p.correlation_id) f |= kCorrelationId;
  if (p.reply_to) f |= kReplyTo;
  if (p.expiration) f |= kExpiration;
  if (p.message_id) f |= kMessageId;
  if (p.timestamp) f |= kTimestamp;
  if (p.type) f |= kType;
  if (p.user_id) f |= kUserId;
  if (p.app_id) f |= kAppId;
  if (p.cluster_id) f |= kClusterId;
  w.u16(f);
  if (p.content_type) w.shortstr(*p.content_type);
  if (p.content_encoding) w.shortstr(*p.content_encoding);
  if (p.headers) encode_table(w, *p.headers);
  if (p.delivery_mode) w.u8(*p.delivery_mode);
  if (p.priority) w.u8(*p.priority);
  if (p.correlation_id) w.shortstr(*p.correlation_id);
  if (p.reply_to) w.shortstr(*p.reply_to);
  if (p.expiration) w.shortstr(*p.expiration);
  if (p.message_id) w.shortstr(*p.message_id);
  if (p.timestamp) w.u64(*p.timestamp);
  if (p.type) w.shortstr(*p.type);
  if (p.user_id) w.shortstr(*p.user_id);
  if (p.app_id) w.shortstr(*p.app_id);
  if (p.cluster_id) w.shortstr(*p.cluster_id);
}

std::string encode_properties(const BasicProperties& p) {
  std::string out;
  Writer w(out);
  encode_properties(w, p);
  return out;
}

PropertiesSummary summarize_properties(std::string_view encoded) {
  Reader r(encoded);
  const std::uint16_t f = read_flags(r);
  PropertiesSummary s;
  if (f & kContentType) s.content_type = r.shortstr();
  if (f & kContentEncoding) r.shortstr();
  if (f & kHeaders) {
    s.has_headers = true;
    const std::size_t start = r.position();
    r.take(r.u32());
    s.headers = encoded.substr(start, r.position() - start);
  }
  if (f & kDeliveryMode) s.delivery_mode = r.u8();
  if (f & kPriority) {
    s.priority = r.u8();
    s.has_priority = true;
  }
  if (f & kCorrelationId) s.correlation_id = r.shortstr();
  if (f & kReplyTo) s.reply_to = r.shortstr();
  if (f & kExpiration) {
    s.expiration = r.shortstr();
    s.has_expiration = true;
  }
  if (f & kMessageId) r.shortstr();
  if (f & kTimestamp) r.u64();
  if (f & kType) r.shortstr();
  if (f & kUserId) {
    s.user_id = r.shortstr();
    s.has_user_id = true;
  }
  if (f & kAppId) r.shortstr();
  if (f & kClusterId) r.shortstr();
  if (!r.empty()) throw DecodeError("trailing bytes after basic properties");
  return s;
}

ContentHeader decode_content_header(std::string_view payload) {
  Reader r(payload);
  ContentHeader h;
  h.class_id = r.u16();
  r.u16();  // weight, always 0
  h.body_size = r.u64();
  h.properties = r.take(r.remaining());
  if (h.properties.size() < 2) throw DecodeError("content header without property flags");
  return h;
}

void encode_content_header(Writer& w, std::uint16_t class_id, std::uint64_t body_size,
                           std::string_view encoded_properties) {
  w.u16(class_id);
  w.u16(0);
  w.u64(body_size);
  w.raw(encoded_properties);
}

}  // namespace mb::amqp
