// celery.hpp: Celery task protocol v2 (JSON) and the rpc:// result format
// (see shared/celery-wire.md). AMQP headers are given as a Value map so this
// layer needs no AMQP codec; common/client converts field tables to and from it.
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>

#include "common/task/message.hpp"

namespace mb::task {

nlohmann::json value_to_json(const Value& v);
Value value_from_json(const nlohmann::json& j);

// "2026-11-26T19:31:20.327326+00:00" <-> unix seconds. Parsing throws
// std::runtime_error on text it does not understand.
std::string format_iso8601(double unix_seconds);
double parse_iso8601(std::string_view text);

struct CeleryTaskMessage {
  Map headers;       // the AMQP headers table
  std::string body;  // [args, kwargs, embed]
};

// The headers decode_celery_task reads.
inline constexpr std::string_view kCeleryTaskHeaders[] = {"task",    "id",      "retries", "eta",       "expires",
                                                          "parent_id", "root_id", "origin", "timelimit", "ignore_result"};
// Their values, by position in kCeleryTaskHeaders; empty: absent.
using CeleryTaskHeaders = std::array<std::optional<Value>, std::size(kCeleryTaskHeaders)>;

// Protocol v2: headers carry task, id, retries, eta, expires, ...; the body
// `[args, kwargs, embed]`. reply_to / correlation_id come from AMQP properties.
TaskMessage decode_celery_task(CeleryTaskHeaders headers, std::string_view body);
TaskMessage decode_celery_task(const Map& headers, std::string_view body);
// JSON as nlohmann would parse it, for the common case only (ASCII strings
// without escapes, 64-bit integers, at most 64 levels deep): nullopt for
// anything else, valid or not, which the caller then parses with nlohmann.
std::optional<Value> parse_simple_json(std::string_view text);
// True when s, between quotes, is the JSON string nlohmann's dump() writes for
// it: printable ASCII without quotes or backslashes (ids, state names).
bool plain_json_text(std::string_view s);
CeleryTaskMessage encode_celery_task(const TaskMessage& t);

// The rpc:// backend's result body:
// {"task_id","status","result","traceback","children"}; errors as
// {"exc_type","exc_message":[...],"exc_module"}.
std::string encode_celery_result(const TaskResult& r);
TaskResult decode_celery_result(std::string_view body);

}  // namespace mb::task
