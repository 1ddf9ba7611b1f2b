// task_wire.hpp: tasks and results as AMQP messages (properties + body), in
// either wire format: Cap'n Proto (application/x-capnp, name and id repeated
// in the headers as Celery's protocol v2 does) or Celery protocol v2 JSON.
// Shared by the worker (consume, result, retry) and the producer.
#pragma once

#include <string>

#include "common/amqp/properties.hpp"
#include "common/client/channel.hpp"
#include "common/task/message.hpp"

namespace mb::client {

struct OutgoingMessage {
  amqp::BasicProperties properties;
  std::string body;
};

// priority < 0: no priority property.
OutgoingMessage build_task_message(const task::TaskMessage& t, int priority = -1);
// Decodes by content type; throws std::runtime_error on what it cannot read.
// reply_to and correlation_id come from the properties when they are set.
task::TaskMessage parse_task_message(const amqp::BasicProperties& properties, std::string_view body);
// The same for a delivery whose headers may be kept encoded (HeadersForm::kEncoded).
task::TaskMessage parse_task_message(const Delivery& d);

// The result goes back in the task's own format, correlation_id = the task's.
OutgoingMessage build_result_message(const task::TaskResult& r, task::WireFormat format,
                                     const std::string& correlation_id);
task::TaskResult parse_result_message(const amqp::BasicProperties& properties, std::string_view body);

}  // namespace mb::client
