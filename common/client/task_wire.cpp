// task_wire.cpp: task/result <-> AMQP properties and body.
#include "common/client/task_wire.hpp"

#include <cmath>
#include <stdexcept>

#include "common/client/headers.hpp"
#include "common/task/capnp_codec.hpp"
#include "common/task/celery.hpp"

namespace mb::client {

namespace {

constexpr std::uint8_t kPersistent = 2;
constexpr std::uint8_t kTransient = 1;

std::string expiration_ms(double expires) {
  double ms = (expires - task::unix_now()) * 1000.0;
  return std::to_string(static_cast<long long>(std::max(0.0, std::ceil(ms))));
}

}  // namespace

OutgoingMessage build_task_message(const task::TaskMessage& t, int priority) {
  OutgoingMessage m;
  auto& p = m.properties;
  if (t.format == task::WireFormat::kCelery) {
    auto c = task::encode_celery_task(t);
    p.content_type = std::string(task::kJsonContentType);
    p.content_encoding = "utf-8";
    p.headers = map_to_table(c.headers);
    m.body = std::move(c.body);
  } else {
    task::Map h;
    h["lang"] = "cpp";
    h["task"] = t.name;
    h["id"] = t.id;
    h["retries"] = static_cast<std::int64_t>(t.retries);
    h["eta"] = t.eta > 0 ? task::Value(task::format_iso8601(t.eta)) : task::Value();
    h["expires"] = t.expires > 0 ? task::Value(task::format_iso8601(t.expires)) : task::Value();
    h["root_id"] = t.root_id.empty() ? t.id : t.root_id;
    h["parent_id"] = t.parent_id.empty() ? task::Value() : task::Value(t.parent_id);
    h["origin"] = t.origin;
    p.content_type = std::string(task::kCapnpContentType);
    p.content_encoding = "binary";
    p.headers = map_to_table(h);
    m.body = task::encode_task_capnp(t);
  }
  p.delivery_mode = kPersistent;
  if (priority >= 0) p.priority = static_cast<std::uint8_t>(priority);
  p.correlation_id = t.correlation_id.empty() ? t.id : t.correlation_id;
  if (!t.reply_to.empty()) p.reply_to = t.reply_to;
  // Celery also sets the per-message TTL; Cap'n Proto tasks do not, so that an
  // expired task reaches a worker and its caller gets REVOKED instead of silence.
  if (t.expires > 0 && t.format == task::WireFormat::kCelery) p.expiration = expiration_ms(t.expires);
  return m;
}

namespace {

constexpr std::size_t kTaskHeader = 0;
static_assert(task::kCeleryTaskHeaders[kTaskHeader] == "task");

// encoded_headers: the table when p.headers was left encoded, else empty.
task::TaskMessage parse_task(const amqp::BasicProperties& p, std::string_view encoded_headers, std::string_view body) {
  task::TaskMessage t;
  std::string_view ct = p.content_type ? std::string_view(*p.content_type) : std::string_view();
  auto celery_headers = [&] {
    task::CeleryTaskHeaders h;
    if (p.headers) {
      read_table(*p.headers, task::kCeleryTaskHeaders, h);
    } else if (!encoded_headers.empty()) {
      read_table(encoded_headers, task::kCeleryTaskHeaders, h);
    }
    return h;
  };
  if (ct == task::kCapnpContentType) {
    t = task::decode_task_capnp(body);
  } else if (ct == task::kJsonContentType) {
    t = task::decode_celery_task(celery_headers(), body);
  } else if (task::CeleryTaskHeaders h; ct.empty() && (h = celery_headers())[kTaskHeader]) {
    t = task::decode_celery_task(std::move(h), body);
  } else {
    throw std::runtime_error("unsupported content type '" + std::string(ct) + "'");
  }
  if (p.reply_to && !p.reply_to->empty()) t.reply_to = *p.reply_to;
  if (p.correlation_id && !p.correlation_id->empty()) t.correlation_id = *p.correlation_id;
  if (t.correlation_id.empty()) t.correlation_id = t.id;
  return t;
}

}  // namespace

task::TaskMessage parse_task_message(const amqp::BasicProperties& p, std::string_view body) {
  return parse_task(p, {}, body);
}

task::TaskMessage parse_task_message(const Delivery& d) { return parse_task(d.properties, d.encoded_headers, d.body); }

OutgoingMessage build_result_message(const task::TaskResult& r, task::WireFormat format,
                                     const std::string& correlation_id) {
  OutgoingMessage m;
  auto& p = m.properties;
  if (format == task::WireFormat::kCelery) {
    p.content_type = std::string(task::kJsonContentType);
    p.content_encoding = "utf-8";
    m.body = task::encode_celery_result(r);
  } else {
    p.content_type = std::string(task::kCapnpContentType);
    p.content_encoding = "binary";
    m.body = task::encode_result_capnp(r);
  }
  p.headers = amqp::FieldTable{};
  p.delivery_mode = kTransient;
  p.priority = 0;
  p.correlation_id = correlation_id;
  return m;
}

task::TaskResult parse_result_message(const amqp::BasicProperties& p, std::string_view body) {
  std::string_view ct = p.content_type ? std::string_view(*p.content_type) : std::string_view();
  task::TaskResult r = ct == task::kCapnpContentType ? task::decode_result_capnp(body) : task::decode_celery_result(body);
  if (r.task_id.empty() && p.correlation_id) r.task_id = *p.correlation_id;
  return r;
}

}  // namespace mb::client
