// message.hpp: the in-memory task and result every wire format converts to and
// from (Cap'n Proto in capnp_codec.hpp, Celery protocol v2 JSON in celery.hpp).
// Times are unix epoch seconds; 0 means "none".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "minibroker/value.hpp"

namespace mb::task {

inline constexpr std::string_view kCapnpContentType = "application/x-capnp";
inline constexpr std::string_view kJsonContentType = "application/json";

// How a task travelled; its result goes back the same way.
enum class WireFormat : std::uint8_t { kCapnp, kCelery };

struct TaskMessage {
  std::string id;
  std::string name;
  List args;
  Map kwargs;
  std::uint32_t retries = 0;
  double eta = 0;
  double expires = 0;
  std::string parent_id;
  std::string root_id;
  std::string reply_to;
  std::string correlation_id;
  std::string origin;
  double soft_time_limit = 0;  // seconds, 0: worker default
  double time_limit = 0;       // seconds, 0: worker default
  bool ignore_result = false;
  WireFormat format = WireFormat::kCapnp;
};

enum class State : std::uint8_t { kPending, kSuccess, kFailure, kRetry, kRevoked };

std::string_view state_name(State s);  // "SUCCESS", ...
State state_from_name(std::string_view s);  // unknown: kPending

struct TaskResult {
  std::string task_id;
  State state = State::kPending;
  Value value;
  std::string error_type;
  std::string error_message;
  std::string traceback;
  double runtime = 0;
  std::string worker;
  std::uint32_t retries = 0;

  bool ready() const { return state == State::kSuccess || state == State::kFailure || state == State::kRevoked; }
};

// Unix time now, in seconds.
double unix_now();
// A random (version 4) UUID as text.
std::string make_uuid();

}  // namespace mb::task
