// capnp_codec.hpp: TaskMessage / TaskResult / Value <-> Cap'n Proto
// (proto/task.capnp, result.capnp, value.capnp). Decoding throws
// std::runtime_error on malformed input.
#pragma once

#include <string>
#include <string_view>

#include "common/task/message.hpp"
#include "proto/result.capnp.h"
#include "proto/task.capnp.h"
#include "proto/value.capnp.h"

namespace mb::task {

void write_value(proto::Value::Builder b, const Value& v);
Value read_value(proto::Value::Reader r);
void write_task(proto::Task::Builder b, const TaskMessage& t);
TaskMessage read_task(proto::Task::Reader r);
void write_result(proto::Result::Builder b, const TaskResult& r);
TaskResult read_result(proto::Result::Reader r);

// Whole messages as AMQP bodies (unpacked flat array of words).
std::string encode_task_capnp(const TaskMessage& t);
TaskMessage decode_task_capnp(std::string_view body);
std::string encode_result_capnp(const TaskResult& r);
TaskResult decode_result_capnp(std::string_view body);

}  // namespace mb::task
