// task.hpp: the one header task authors include. A task is a plain C++
// function with typed parameters, registered under a name with one line:
//
//   #include <minibroker/task.hpp>
//   int add(int x, int y) { return x + y; }
//   MB_TASK("add", add, "x", "y");                      // kwargs by name
//   MB_TASK("greet", greet, "name", mb::task::arg("greeting", "hello"));  // default
//
// Parameters and results may be integers, doubles, bools, std::string,
// mb::task::Bytes, std::vector<T>, std::map<std::string, T>, std::optional<T>
// and mb::task::Value (anything JSON-like). A first parameter of type
// `const mb::task::Request&` receives the request (id, retries, eta, soft time
// limit). Throw mb::task::Retry{countdown} to be retried; any other exception
// becomes a FAILURE with its type and message.
//
// The worker dlopen()s the library and calls mb_task_library_v1(). Everything
// a task can throw is caught inside the library (run_task below), so no
// exception crosses the library boundary.
#pragma once

#include <cxxabi.h>
#include <time.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "minibroker/value.hpp"

namespace mb::task {

inline constexpr int kSdkAbiVersion = 1;

// Seconds on CLOCK_MONOTONIC, the clock soft deadlines are expressed in.
inline double monotonic_now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Raised by Request::check_soft_time_limit(); reported as a FAILURE with
// type SoftTimeLimitExceeded unless the task catches it.
class __attribute__((visibility("default"))) SoftTimeLimitExceeded : public std::runtime_error {
 public:
  SoftTimeLimitExceeded() : std::runtime_error("soft time limit exceeded") {}
};

// What a running task can know about itself.
struct Request {
  std::string id;
  std::string name;
  std::uint32_t retries = 0;
  double eta = 0;             // unix seconds, 0: none
  double expires = 0;         // unix seconds, 0: none
  std::string parent_id;
  std::string root_id;
  std::string hostname;       // worker that runs it
  double soft_deadline = 0;   // monotonic_now() seconds, 0: no soft limit

  bool soft_time_limit_exceeded() const { return soft_deadline > 0 && monotonic_now() >= soft_deadline; }
  void check_soft_time_limit() const {
    if (soft_time_limit_exceeded()) throw SoftTimeLimitExceeded();
  }
};

// Throw to ask for the task to run again after `countdown` seconds, with
// retries + 1. Past max_retries (-1: unlimited) the task FAILS instead.
struct Retry {
  double countdown = 0;
  int max_retries = 3;
  std::string reason = "retry";
};

// Throw to fail with a chosen error type name (as Celery's exc_type).
class __attribute__((visibility("default"))) TaskError : public std::runtime_error {
 public:
  TaskError(std::string type, const std::string& message) : std::runtime_error(message), type_(std::move(type)) {}
  const std::string& type() const { return type_; }

 private:
  std::string type_;
};

// Wrong argument count, name or type. Reported as TypeError, like Python.
class __attribute__((visibility("default"))) ArgumentError : public TaskError {
 public:
  explicit ArgumentError(const std::string& message) : TaskError("TypeError", message) {}
};

// The outcome of one run, as the worker sees it.
struct Outcome {
  enum class Kind : std::uint8_t { kSuccess, kFailure, kRetry };
  Kind kind = Kind::kSuccess;
  Value value;
  std::string error_type;
  std::string error_message;
  std::string traceback;
  double retry_countdown = 0;
};

struct Call {
  const List& args;
  const Map& kwargs;
  const Request& request;
};

// A parameter name with an optional default.
struct Param {
  std::string name;
  std::optional<Value> default_value;
  Param(const char* n) : name(n) {}                                            // NOLINT
  Param(std::string n) : name(std::move(n)) {}                                 // NOLINT
  Param(std::string n, Value d) : name(std::move(n)), default_value(std::move(d)) {}
};
inline Param arg(std::string name) { return Param(std::move(name)); }
inline Param arg(std::string name, Value default_value) { return Param(std::move(name), std::move(default_value)); }

struct TaskDef {
  std::string name;
  std::vector<Param> params;
  std::function<Outcome(const Call&)> run;
};

struct Registry {
  std::vector<TaskDef> tasks;
  const TaskDef* find(std::string_view name) const {
    for (const auto& t : tasks)
      if (t.name == name) return &t;
    return nullptr;
  }
};

// What mb_task_library_v1() returns.
struct TaskLibrary {
  int abi_version;
  const Registry* registry;
};

// This library's registry (one per shared library: build with hidden visibility,
// as add_task_library() does).
inline Registry& registry() {
  static Registry r;
  return r;
}

namespace detail {

// The request of the task running on this thread, for current_request().
inline thread_local const Request* tl_request = nullptr;

inline std::string demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> p(abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
  return status == 0 && p ? std::string(p.get()) : std::string(mangled);
}

// ---- Value -> C++ ---------------------------------------------------------
template <typename T>
struct Convert;  // from(const Value&, const std::string& what) -> T

[[noreturn]] inline void type_mismatch(const std::string& what, std::string_view expected, const Value& v) {
  throw ArgumentError(what + ": expected " + std::string(expected) + ", got " + std::string(kind_name(v.kind())));
}

template <typename T>
  requires(std::is_integral_v<T> && !std::is_same_v<T, bool>)
struct Convert<T> {
  static T from(const Value& v, const std::string& what) {
    std::int64_t i = 0;
    if (v.is_int()) {
      i = v.as_int();
    } else if (v.is_double() && v.as_double() == static_cast<double>(static_cast<std::int64_t>(v.as_double()))) {
      i = static_cast<std::int64_t>(v.as_double());  // 5.0 is accepted as 5
    } else {
      type_mismatch(what, "int", v);
    }
    if constexpr (std::is_unsigned_v<T>) {
      if (i < 0 || static_cast<std::uint64_t>(i) > std::numeric_limits<T>::max())
        throw ArgumentError(what + ": " + std::to_string(i) + " out of range");
    } else {
      if (i < std::numeric_limits<T>::min() || i > std::numeric_limits<T>::max())
        throw ArgumentError(what + ": " + std::to_string(i) + " out of range");
    }
    return static_cast<T>(i);
  }
};
template <typename T>
  requires std::is_floating_point_v<T>
struct Convert<T> {
  static T from(const Value& v, const std::string& what) {
    if (!v.is_number()) type_mismatch(what, "double", v);
    return static_cast<T>(v.as_double());
  }
};
template <>
struct Convert<bool> {
  static bool from(const Value& v, const std::string& what) {
    if (!v.is_bool()) type_mismatch(what, "bool", v);
    return v.as_bool();
  }
};
template <>
struct Convert<std::string> {
  static std::string from(const Value& v, const std::string& what) {
    if (v.is_string()) return v.as_string();
    if (v.is_bytes()) return v.as_bytes().data;
    type_mismatch(what, "string", v);
  }
};
template <>
struct Convert<Bytes> {
  static Bytes from(const Value& v, const std::string& what) {
    if (v.is_bytes()) return v.as_bytes();
    if (v.is_string()) return Bytes(v.as_string());
    type_mismatch(what, "bytes", v);
  }
};
template <>
struct Convert<Value> {
  static Value from(const Value& v, const std::string&) { return v; }
};
template <typename T>
struct Convert<std::optional<T>> {
  static std::optional<T> from(const Value& v, const std::string& what) {
    if (v.is_null()) return std::nullopt;
    return Convert<T>::from(v, what);
  }
};
template <typename T>
struct Convert<std::vector<T>> {
  static std::vector<T> from(const Value& v, const std::string& what) {
    if (!v.is_list()) type_mismatch(what, "list", v);
    std::vector<T> out;
    out.reserve(v.as_list().size());
    for (std::size_t i = 0; i < v.as_list().size(); ++i)
      out.push_back(Convert<T>::from(v.as_list()[i], what + "[" + std::to_string(i) + "]"));
    return out;
  }
};
template <typename T>
struct Convert<std::map<std::string, T>> {
  static std::map<std::string, T> from(const Value& v, const std::string& what) {
    if (!v.is_map()) type_mismatch(what, "map", v);
    std::map<std::string, T> out;
    for (const auto& [k, x] : v.as_map()) out.emplace(k, Convert<T>::from(x, what + "[\"" + k + "\"]"));
    return out;
  }
};

// ---- C++ -> Value ---------------------------------------------------------
template <typename T>
Value to_value(T&& x);

template <typename T>
struct ToValue {
  static Value to(const T& x) { return Value(x); }
};
template <typename T>
struct ToValue<std::optional<T>> {
  static Value to(const std::optional<T>& x) { return x ? to_value(*x) : Value(); }
};
template <typename T>
struct ToValue<std::vector<T>> {
  static Value to(const std::vector<T>& x) {
    List l;
    l.reserve(x.size());
    for (const auto& e : x) l.push_back(to_value(e));
    return l;
  }
};
template <>
struct ToValue<List> {
  static Value to(const List& x) { return Value(x); }
};
template <typename T>
struct ToValue<std::map<std::string, T>> {
  static Value to(const std::map<std::string, T>& x) {
    Map m;
    for (const auto& [k, e] : x) m.emplace(k, to_value(e));
    return m;
  }
};
template <typename T>
Value to_value(T&& x) {
  return ToValue<std::decay_t<T>>::to(x);
}

// ---- function traits --------------------------------------------------------
template <typename F>
struct FnTraits : FnTraits<decltype(&F::operator())> {};
template <typename R, typename... A>
struct FnTraits<R (*)(A...)> {
  using Result = R;
  using Args = std::tuple<A...>;
};
template <typename R, typename... A>
struct FnTraits<R(A...)> : FnTraits<R (*)(A...)> {};
template <typename C, typename R, typename... A>
struct FnTraits<R (C::*)(A...) const> : FnTraits<R (*)(A...)> {};
template <typename C, typename R, typename... A>
struct FnTraits<R (C::*)(A...)> : FnTraits<R (*)(A...)> {};

template <typename Tuple>
struct TakesRequest : std::false_type {};
template <typename First, typename... Rest>
struct TakesRequest<std::tuple<First, Rest...>> : std::is_same<std::decay_t<First>, Request> {};

// Binds positional and keyword arguments to the declared parameters, as
// Python does: too many, missing, duplicate or unknown ones are ArgumentErrors.
inline std::vector<const Value*> bind_args(const std::string& task, const std::vector<Param>& params,
                                           const Call& call) {
  if (call.args.size() > params.size())
    throw ArgumentError(task + "() takes " + std::to_string(params.size()) + " argument" +
                        (params.size() == 1 ? "" : "s") + " but " + std::to_string(call.args.size()) +
                        (call.args.size() == 1 ? " was" : " were") + " given");
  for (const auto& [k, v] : call.kwargs) {
    bool known = false;
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (params[i].name != k) continue;
      known = true;
      if (i < call.args.size()) throw ArgumentError(task + "() got multiple values for argument '" + k + "'");
    }
    if (!known) throw ArgumentError(task + "() got an unexpected keyword argument '" + k + "'");
  }
  std::vector<const Value*> bound(params.size(), nullptr);
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (i < call.args.size()) {
      bound[i] = &call.args[i];
    } else if (auto it = call.kwargs.find(params[i].name); it != call.kwargs.end()) {
      bound[i] = &it->second;
    } else if (params[i].default_value) {
      bound[i] = &*params[i].default_value;
    } else {
      throw ArgumentError(task + "() missing required argument '" + params[i].name + "'");
    }
  }
  return bound;
}

template <typename F, typename Args, std::size_t Offset, std::size_t... I>
Value invoke_bound(const F& fn, const std::string& task, const std::vector<Param>& params, const Call& call,
                   std::index_sequence<I...>) {
  auto bound = bind_args(task, params, call);
  auto convert = [&](auto tag, std::size_t i) {
    using T = std::decay_t<typename decltype(tag)::type>;
    return Convert<T>::from(*bound[i], task + "() argument '" + params[i].name + "'");
  };
  // Convert every argument first (in order) so errors name the first bad one.
  std::tuple<std::decay_t<std::tuple_element_t<I + Offset, Args>>...> converted{
      convert(std::type_identity<std::tuple_element_t<I + Offset, Args>>{}, I)...};
  using R = typename FnTraits<F>::Result;
  auto call_fn = [&](auto&&... xs) -> decltype(auto) {
    if constexpr (Offset == 1)
      return fn(call.request, std::move(xs)...);
    else
      return fn(std::move(xs)...);
  };
  if constexpr (std::is_void_v<R>) {
    std::apply(call_fn, std::move(converted));
    return Value();
  } else {
    return to_value(std::apply(call_fn, std::move(converted)));
  }
}

// Runs a task body and turns whatever it throws into an Outcome.
template <typename Body>
Outcome run_guarded(const Call& call, Body&& body) {
  Outcome out;
  const Request* saved = tl_request;
  tl_request = &call.request;
  try {
    out.value = body();
  } catch (const Retry& r) {
    if (r.max_retries >= 0 && call.request.retries >= static_cast<std::uint32_t>(r.max_retries)) {
      out.kind = Outcome::Kind::kFailure;
      out.error_type = "MaxRetriesExceededError";
      out.error_message = "Can't retry " + call.request.name + "[" + call.request.id + "] args after " +
                          std::to_string(call.request.retries) + " retries: " + r.reason;
    } else {
      out.kind = Outcome::Kind::kRetry;
      out.error_type = "Retry";
      out.error_message = r.reason;
      out.retry_countdown = r.countdown;
    }
  } catch (const TaskError& e) {
    out.kind = Outcome::Kind::kFailure;
    out.error_type = e.type();
    out.error_message = e.what();
  } catch (const SoftTimeLimitExceeded& e) {
    out.kind = Outcome::Kind::kFailure;
    out.error_type = "SoftTimeLimitExceeded";
    out.error_message = e.what();
  } catch (const std::exception& e) {
    out.kind = Outcome::Kind::kFailure;
    out.error_type = demangle(typeid(e).name());
    out.error_message = e.what();
  } catch (...) {
    out.kind = Outcome::Kind::kFailure;
    const std::type_info* t = abi::__cxa_current_exception_type();
    out.error_type = t ? demangle(t->name()) : "unknown";
    out.error_message = "non-standard exception";
  }
  if (out.kind == Outcome::Kind::kFailure)
    out.traceback = "in task " + call.request.name + "[" + call.request.id + "]\n" + out.error_type + ": " +
                    out.error_message + "\n";
  tl_request = saved;
  return out;
}

}  // namespace detail

// The request of the task running on this thread (valid only inside a task).
inline const Request& current_request() {
  static const Request kNone;
  return detail::tl_request ? *detail::tl_request : kNone;
}

// Registers fn under name. params name the parameters in order (the first
// `const Request&` parameter, if any, is not counted); with none given they
// are positional-only, named arg0, arg1, ...
template <typename F>
void register_task(std::string name, F fn, std::vector<Param> params = {}) {
  using Traits = detail::FnTraits<std::decay_t<F>>;
  using Args = typename Traits::Args;
  constexpr std::size_t kOffset = detail::TakesRequest<Args>::value ? 1 : 0;
  constexpr std::size_t kArity = std::tuple_size_v<Args> - kOffset;
  if (params.empty())
    for (std::size_t i = 0; i < kArity; ++i) params.emplace_back("arg" + std::to_string(i));
  if (params.size() != kArity) {
    std::fprintf(stderr, "minibroker: task %s: %zu parameter names given for %zu parameters\n", name.c_str(),
                 params.size(), kArity);
    std::abort();
  }
  TaskDef def;
  def.name = name;
  def.params = params;
  def.run = [fn = std::move(fn), name, params](const Call& call) {
    return detail::run_guarded(call, [&] {
      return detail::invoke_bound<std::decay_t<F>, Args, kOffset>(fn, name, params, call,
                                                                  std::make_index_sequence<kArity>{});
    });
  };
  registry().tasks.push_back(std::move(def));
}

// Registration at load time, used by MB_TASK.
struct Registrar {
  template <typename F, typename... P>
  Registrar(std::string name, F fn, P... params) {
    register_task(std::move(name), std::move(fn), std::vector<Param>{Param(params)...});
  }
};

}  // namespace mb::task

// The library's entry point, found by the worker with dlsym. Emitted (weak) in
// every translation unit that includes this header; the linker keeps one.
extern "C" __attribute__((visibility("default"), used)) inline const mb::task::TaskLibrary* mb_task_library_v1() {
  static const mb::task::TaskLibrary kLibrary{mb::task::kSdkAbiVersion, &mb::task::registry()};
  return &kLibrary;
}

#define MB_TASK_CAT2(a, b) a##b
#define MB_TASK_CAT(a, b) MB_TASK_CAT2(a, b)
// MB_TASK("name", function_or_lambda, "param1", mb::task::arg("param2", default), ...);
#define MB_TASK(name, ...) \
  static const ::mb::task::Registrar MB_TASK_CAT(mb_task_registrar_, __COUNTER__)(name, __VA_ARGS__)
