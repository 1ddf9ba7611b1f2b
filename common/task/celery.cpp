// celery.cpp: Celery protocol v2 and rpc:// result conversions.
#include "common/task/celery.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <stdexcept>

namespace mb::task {
namespace {

using nlohmann::json;

// Positions in kCeleryTaskHeaders.
enum CeleryHeader : std::size_t { kTask, kId, kRetries, kEta, kExpires, kParentId, kRootId, kOrigin, kTimeLimit, kIgnoreResult };
static_assert(kCeleryTaskHeaders[kRootId] == "root_id" && kCeleryTaskHeaders[kIgnoreResult] == "ignore_result");

// Moves a string header out; empty when absent or not a string.
std::string header_string(std::optional<Value>& h) {
  if (!h || !h->is_string()) return {};
  return std::move(h->as_string());
}

double header_time(const std::optional<Value>& h) {
  if (!h) return 0;
  if (h->is_string() && !h->as_string().empty()) return parse_iso8601(h->as_string());
  if (h->is_number()) return h->as_double();
  return 0;
}

Value opt_string(const std::string& s) { return s.empty() ? Value() : Value(s); }

// Appends s as a JSON string, as nlohmann's dump() writes it (and throws it
// on invalid UTF-8). Printable ASCII without quotes or backslashes, which ids
// and state names are, needs no escaping: it is written as it is.
void append_json_string(std::string& out, std::string_view s) {
  if (!plain_json_text(s)) {
    out += json(std::string(s)).dump();
    return;
  }
  out += '"';
  out += s;
  out += '"';
}

std::string repr(const Value& v) { return value_to_json(v).dump(); }

// Errors the worker reports under Celery's own names (the SDK throws
// SoftTimeLimitExceeded): Python's .get() raises the real celery.exceptions
// class for these, so `except SoftTimeLimitExceeded:` works as with a Python worker.
constexpr std::string_view kCeleryExceptionNames[] = {"NotRegistered", "TaskRevokedError", "SoftTimeLimitExceeded",
                                                      "TimeLimitExceeded", "WorkerLostError"};
constexpr std::string_view kCeleryExceptionsModule = "celery.exceptions";
// Other C++ exceptions are reported under their C++ type name; Python makes an
// exception class of that name (a module it cannot import leads there).
constexpr std::string_view kCppExceptionsModule = "cpp";

json error_json(const TaskResult& r) {
  std::string_view module = r.error_type.find("::") != std::string::npos ? kCppExceptionsModule : "builtins";
  for (std::string_view name : kCeleryExceptionNames)
    if (name == r.error_type) module = kCeleryExceptionsModule;
  return json{{"exc_type", r.error_type}, {"exc_message", json::array({r.error_message})}, {"exc_module", module}};
}


// The JSON Celery's clients send, parsed straight into Values without
// nlohmann's document: strings without escapes and in ASCII, numbers, true,
// false, null, arrays, objects, at most kMaxDepth deep. Anything else (an
// escape, a non-ASCII byte, an integer past 64 bits, invalid JSON) makes it
// give up, and the caller parses with nlohmann, so every input gives what
// nlohmann and value_from_json give.
class SimpleJson {
 public:
  explicit SimpleJson(std::string_view text) : p_(text.data()), end_(text.data() + text.size()) {}

  bool parse_document(Value& out) {
    if (!value(&out, 0)) return false;
    skip_ws();
    return p_ == end_;
  }

  // Protocol v2's body, [args, kwargs, embed]: the first two into args and
  // kwargs, what follows checked as the rest of the document is but not built
  // (the worker does not read embed). False when the body is not a list that
  // starts with a list and an object, too.
  bool parse_task_body(List& args, Map& kwargs) {
    skip_ws();
    if (p_ == end_ || *p_ != '[') return false;
    ++p_;
    Value a, k;
    if (!value(&a, 1) || !a.is_list() || !comma() || !value(&k, 1) || !k.is_map()) return false;
    for (;;) {
      skip_ws();
      if (p_ == end_) return false;
      if (*p_ == ']') break;
      if (*p_ != ',') return false;
      ++p_;
      if (!value(nullptr, 1)) return false;
    }
    ++p_;
    skip_ws();
    if (p_ != end_) return false;
    args = std::move(a.as_list());
    kwargs = std::move(k.as_map());
    return true;
  }

 private:
  static constexpr int kMaxDepth = 64;

  void skip_ws() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }
  bool comma() {
    skip_ws();
    if (p_ == end_ || *p_ != ',') return false;
    ++p_;
    return true;
  }
  bool literal(std::string_view word) {
    if (static_cast<std::size_t>(end_ - p_) < word.size() || std::string_view(p_, word.size()) != word) return false;
    p_ += word.size();
    return true;
  }
  // out null: checked, not kept.
  bool string(std::string* out) {
    ++p_;  // the opening quote
    const char* start = p_;
    while (p_ != end_) {
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        if (out) out->assign(start, p_);
        ++p_;
        return true;
      }
      if (c == '\\' || c < 0x20 || c >= 0x80) return false;
      ++p_;
    }
    return false;
  }
  static bool digit(char c) { return c >= '0' && c <= '9'; }
  bool number(Value* out) {
    const char* start = p_;
    if (p_ != end_ && *p_ == '-') ++p_;
    if (p_ == end_ || !digit(*p_)) return false;
    if (*p_ == '0') {
      ++p_;
    } else {
      while (p_ != end_ && digit(*p_)) ++p_;
    }
    bool integer = true;
    if (p_ != end_ && *p_ == '.') {
      integer = false;
      ++p_;
      if (p_ == end_ || !digit(*p_)) return false;
      while (p_ != end_ && digit(*p_)) ++p_;
    }
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      integer = false;
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ == end_ || !digit(*p_)) return false;
      while (p_ != end_ && digit(*p_)) ++p_;
    }
    if (integer) {
      std::int64_t i = 0;
      auto r = std::from_chars(start, p_, i);
      if (r.ec != std::errc() || r.ptr != p_) return false;  // past 64 bits: nlohmann decides
      if (out) *out = Value(i);
      return true;
    }
    double d = 0;
    auto r = std::from_chars(start, p_, d);
    if (r.ec != std::errc() || r.ptr != p_) return false;
    if (out) *out = Value(d);
    return true;
  }
  // out null: checked as the same grammar, nothing built.
  bool value(Value* out, int depth) {
    skip_ws();
    if (p_ == end_) return false;
    switch (*p_) {
      case 'n':
        if (out) *out = Value();
        return literal("null");
      case 't':
        if (out) *out = Value(true);
        return literal("true");
      case 'f':
        if (out) *out = Value(false);
        return literal("false");
      case '"': {
        std::string str;
        if (!string(out ? &str : nullptr)) return false;
        if (out) *out = Value(std::move(str));
        return true;
      }
      case '[': {
        if (depth >= kMaxDepth) return false;
        ++p_;
        List l;
        skip_ws();
        if (p_ != end_ && *p_ == ']') {
          ++p_;
          if (out) *out = Value(std::move(l));
          return true;
        }
        for (;;) {
          if (!value(out ? &l.emplace_back() : nullptr, depth + 1)) return false;
          skip_ws();
          if (p_ == end_) return false;
          if (*p_ == ']') break;
          if (*p_ != ',') return false;
          ++p_;
        }
        ++p_;
        if (out) *out = Value(std::move(l));
        return true;
      }
      case '{': {
        if (depth >= kMaxDepth) return false;
        ++p_;
        Map m;
        skip_ws();
        if (p_ != end_ && *p_ == '}') {
          ++p_;
          if (out) *out = Value(std::move(m));
          return true;
        }
        for (;;) {
          skip_ws();
          std::string key;
          if (p_ == end_ || *p_ != '"' || !string(out ? &key : nullptr)) return false;
          skip_ws();
          if (p_ == end_ || *p_ != ':') return false;
          ++p_;
          Value v;
          if (!value(out ? &v : nullptr, depth + 1)) return false;
          if (out) m.insert_or_assign(std::move(key), std::move(v));  // the last of equal keys, as nlohmann
          skip_ws();
          if (p_ == end_) return false;
          if (*p_ == '}') break;
          if (*p_ != ',') return false;
          ++p_;
        }
        ++p_;
        if (out) *out = Value(std::move(m));
        return true;
      }
      default: return number(out);
    }
  }

  const char* p_;
  const char* end_;
};

}  // namespace

bool plain_json_text(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u < 0x80 && c != '"' && c != '\\';
  });
}

std::optional<Value> parse_simple_json(std::string_view text) {
  Value v;
  if (!SimpleJson(text).parse_document(v)) return std::nullopt;
  return v;
}

json value_to_json(const Value& v) {
  switch (v.kind()) {
    case Kind::kNull: return nullptr;
    case Kind::kBool: return v.as_bool();
    case Kind::kInt: return v.as_int();
    case Kind::kDouble: return v.as_double();
    case Kind::kString: return v.as_string();
    case Kind::kBytes: return v.as_bytes().data;  // kombu's json sends bytes as text too
    case Kind::kList: {
      json a = json::array();
      for (const auto& e : v.as_list()) a.push_back(value_to_json(e));
      return a;
    }
    case Kind::kMap: {
      json o = json::object();
      for (const auto& [k, e] : v.as_map()) o[k] = value_to_json(e);
      return o;
    }
  }
  return nullptr;
}

Value value_from_json(const json& j) {
  switch (j.type()) {
    case json::value_t::null: return Value();
    case json::value_t::boolean: return Value(j.get<bool>());
    case json::value_t::number_integer: return Value(j.get<std::int64_t>());
    case json::value_t::number_unsigned: {
      auto u = j.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(INT64_MAX)) return Value(static_cast<double>(u));
      return Value(static_cast<std::int64_t>(u));
    }
    case json::value_t::number_float: return Value(j.get<double>());
    case json::value_t::string: return Value(j.get<std::string>());
    case json::value_t::array: {
      List l;
      for (const auto& e : j) l.push_back(value_from_json(e));
      return Value(std::move(l));
    }
    case json::value_t::object: {
      Map m;
      for (auto it = j.begin(); it != j.end(); ++it) m.insert_or_assign(it.key(), value_from_json(it.value()));
      return Value(std::move(m));
    }
    case json::value_t::binary: {
      const auto& b = j.get_binary();
      return Value(Bytes(std::string(b.begin(), b.end())));
    }
    case json::value_t::discarded: break;
  }
  return Value();
}

std::string format_iso8601(double t) {
  auto secs = static_cast<std::time_t>(std::floor(t));
  auto micros = static_cast<long>(std::llround((t - std::floor(t)) * 1e6));
  if (micros >= 1000000) {
    ++secs;
    micros -= 1000000;
  }
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06ld+00:00", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, micros);
  return buf;
}

double parse_iso8601(std::string_view text) {
  std::string s(text);
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, n = 0;
  double sec = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%lf%n", &y, &mo, &d, &h, &mi, &sec, &n) < 6)
    throw std::runtime_error("bad ISO-8601 time: " + s);
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  double t = static_cast<double>(timegm(&tm)) + sec;
  std::string_view rest = std::string_view(s).substr(static_cast<std::size_t>(n));
  if (!rest.empty() && rest != "Z" && (rest[0] == '+' || rest[0] == '-')) {
    int oh = 0, om = 0;
    if (std::sscanf(std::string(rest.substr(1)).c_str(), "%2d:%2d", &oh, &om) < 1)
      throw std::runtime_error("bad ISO-8601 offset: " + s);
    double off = oh * 3600.0 + om * 60.0;
    t -= rest[0] == '+' ? off : -off;
  }
  return t;
}

TaskMessage decode_celery_task(const Map& headers, std::string_view body) {
  CeleryTaskHeaders h;
  for (std::size_t i = 0; i < h.size(); ++i)
    if (auto it = headers.find(kCeleryTaskHeaders[i]); it != headers.end()) h[i] = it->second;
  return decode_celery_task(std::move(h), body);
}

TaskMessage decode_celery_task(CeleryTaskHeaders h, std::string_view body) {
  TaskMessage t;
  t.format = WireFormat::kCelery;
  t.name = header_string(h[kTask]);
  t.id = header_string(h[kId]);
  if (t.name.empty() || t.id.empty()) throw std::runtime_error("celery message without task/id headers");
  if (const auto& r = h[kRetries]; r && r->is_int())
    t.retries = static_cast<std::uint32_t>(std::max<std::int64_t>(0, r->as_int()));
  t.eta = header_time(h[kEta]);
  t.expires = header_time(h[kExpires]);
  t.parent_id = header_string(h[kParentId]);
  t.root_id = header_string(h[kRootId]);
  t.origin = header_string(h[kOrigin]);
  // [hard, soft], as celery/app/amqp.py writes it (not the (soft, hard) order one might guess).
  if (const auto& limits = h[kTimeLimit]; limits && limits->is_list()) {
    const auto& l = limits->as_list();
    if (!l.empty() && l[0].is_number()) t.time_limit = l[0].as_double();
    if (l.size() > 1 && l[1].is_number()) t.soft_time_limit = l[1].as_double();
  }
  if (const auto& ignore = h[kIgnoreResult]; ignore && ignore->is_bool()) t.ignore_result = ignore->as_bool();
  // The common case without nlohmann; the rest (escapes, non-ASCII, a body
  // of another shape) is parsed, and errors are found, as nlohmann does.
  if (SimpleJson(body).parse_task_body(t.args, t.kwargs)) return t;
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_array() || j.size() < 2 || !j[0].is_array() || !j[1].is_object())
    throw std::runtime_error("celery body is not [args, kwargs, embed]");
  t.args = value_from_json(j[0]).as_list();
  t.kwargs = value_from_json(j[1]).as_map();
  return t;
}

CeleryTaskMessage encode_celery_task(const TaskMessage& t) {
  CeleryTaskMessage m;
  auto& h = m.headers;
  h["lang"] = "py";
  h["task"] = t.name;
  h["id"] = t.id;
  h["shadow"] = Value();
  h["eta"] = t.eta > 0 ? Value(format_iso8601(t.eta)) : Value();
  h["expires"] = t.expires > 0 ? Value(format_iso8601(t.expires)) : Value();
  h["group"] = Value();
  h["group_index"] = Value();
  h["retries"] = static_cast<std::int64_t>(t.retries);
  h["timelimit"] = List{t.time_limit > 0 ? Value(t.time_limit) : Value(),
                        t.soft_time_limit > 0 ? Value(t.soft_time_limit) : Value()};
  h["root_id"] = t.root_id.empty() ? Value(t.id) : Value(t.root_id);
  h["parent_id"] = opt_string(t.parent_id);
  h["argsrepr"] = repr(Value(t.args));
  h["kwargsrepr"] = repr(Value(t.kwargs));
  h["origin"] = t.origin;
  h["ignore_result"] = t.ignore_result;
  json body = json::array({value_to_json(Value(t.args)), value_to_json(Value(t.kwargs)),
                           json{{"callbacks", nullptr}, {"errbacks", nullptr}, {"chain", nullptr}, {"chord", nullptr}}});
  m.body = body.dump();
  return m;
}

// The object nlohmann would write for {task_id, status, result, traceback,
// children} (keys sorted, no spaces), written straight: only the values go
// through nlohmann, and integer, null and boolean results not even that.
std::string encode_celery_result(const TaskResult& r) {
  std::string out;
  out.reserve(160 + r.traceback.size());
  out += R"({"children":[],"result":)";
  if (r.state != State::kSuccess) {
    out += error_json(r).dump();
  } else if (r.value.is_int()) {
    char buf[24];
    auto res = std::to_chars(buf, buf + sizeof buf, r.value.as_int());
    out.append(buf, res.ptr);
  } else if (r.value.is_null()) {
    out += "null";
  } else if (r.value.is_bool()) {
    out += r.value.as_bool() ? "true" : "false";
  } else {
    out += value_to_json(r.value).dump();
  }
  out += R"(,"status":)";
  append_json_string(out, state_name(r.state));
  out += R"(,"task_id":)";
  append_json_string(out, r.task_id);
  out += R"(,"traceback":)";
  if (r.traceback.empty()) {
    out += "null";
  } else {
    append_json_string(out, r.traceback);
  }
  out += '}';
  return out;
}

TaskResult decode_celery_result(std::string_view body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw std::runtime_error("result body is not a JSON object");
  TaskResult r;
  r.task_id = j.value("task_id", "");
  r.state = state_from_name(j.value("status", ""));
  const json& res = j.contains("result") ? j["result"] : json(nullptr);
  if (r.state == State::kSuccess) {
    r.value = value_from_json(res);
  } else if (res.is_object()) {
    r.error_type = res.value("exc_type", "");
    const json& msg = res.contains("exc_message") ? res["exc_message"] : json(nullptr);
    if (msg.is_array() && !msg.empty())
      r.error_message = msg[0].is_string() ? msg[0].get<std::string>() : msg[0].dump();
    else if (msg.is_string())
      r.error_message = msg.get<std::string>();
  }
  if (j.contains("traceback") && j["traceback"].is_string()) r.traceback = j["traceback"].get<std::string>();
  return r;
}

}  // namespace mb::task
