// message.cpp: state names, clock and ids for message.hpp.
#include "common/task/message.hpp"

#include <chrono>
#include <cstdio>
#include <random>

namespace mb::task {

std::string_view state_name(State s) {
  switch (s) {
    case State::kPending: return "PENDING";
    case State::kSuccess: return "SUCCESS";
    case State::kFailure: return "FAILURE";
    case State::kRetry: return "RETRY";
    case State::kRevoked: return "REVOKED";
  }
  return "PENDING";
}

State state_from_name(std::string_view s) {
  if (s == "SUCCESS") return State::kSuccess;
  if (s == "FAILURE") return State::kFailure;
  if (s == "RETRY") return State::kRetry;
  if (s == "REVOKED") return State::kRevoked;
  return State::kPending;
}

double unix_now() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

std::string make_uuid() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uint64_t a = rng(), b = rng();
  a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10
  char buf[37];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xffff),
                static_cast<unsigned>(b >> 48), static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

}  // namespace mb::task
