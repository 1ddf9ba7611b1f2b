// TaskTracker: see task_tracker.hpp for what is observed and what is not.
#include "broker/tasks/tracker/task_tracker.hpp"

#include <fmt/compile.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <exception>
#include <iterator>

#include "common/amqp/field_table.hpp"
#include "common/amqp/field_skip.hpp"
#include "common/task/capnp_codec.hpp"
#include "common/task/celery.hpp"
#include "common/task/message.hpp"

namespace mb::tasks {
namespace {

using nlohmann::json;

// The exchange Celery publishes events to (celery.events.EVENT_EXCHANGE_NAME).
constexpr std::string_view kEventExchange = "celeryev";
// Batched task events (Celery 5 with -E): the body is a JSON list of events.
constexpr std::string_view kMultiEventKey = "task.multi";
// A field table key is encoded as a short string: one length byte, then the
// name. Searching the encoded headers for it rules out non-task messages
// without decoding their table.
constexpr std::string_view kEncodedTaskKey = "\x04task";

// Store keys (MetaKind::kGeneric, shared with other users of that kind, hence the prefix).
constexpr std::string_view kKeyPrefix = "task/";
constexpr std::string_view kTaskKey = "task/t/";
constexpr std::string_view kTypeKey = "task/n/";
constexpr std::string_view kWorkerKey = "task/w/";

// Celery's worker liveness rule (celery.events.state.heartbeat_expires): a
// worker is alive until last heartbeat + freq * HEARTBEAT_EXPIRE_WINDOW/100,
// with HEARTBEAT_EXPIRE_WINDOW = 200, i.e. two missed heartbeats.
constexpr double kHeartbeatExpireFactor = 2.0;
// Celery's default heartbeat interval, for heartbeats that do not say.
constexpr double kDefaultHeartbeatFreq = 2.0;
// A worker's liveness alone (a heartbeat every 2 s) is written to the store at
// most this often, so an idle worker costs no fsync per flush interval.
constexpr double kWorkerWriteInterval = 60.0;

// Malformed input is logged for the first few occurrences, then every Nth,
// so a misbehaving publisher cannot flood the log.
constexpr std::uint64_t kMalformedLogFirst = 10;
constexpr std::uint64_t kMalformedLogEvery = 1000;

constexpr std::array<std::string_view, 8> kStateNames = {"PENDING", "RECEIVED", "STARTED",  "RETRY",
                                                         "SUCCESS", "FAILURE",  "REVOKED", "REJECTED"};

// Order of the non-final states: a late event never moves a task backwards.
int rank(TaskState s) {
  switch (s) {
    case TaskState::kPending: return 0;
    case TaskState::kReceived: return 1;
    case TaskState::kStarted: return 2;
    case TaskState::kRetry: return 3;
    default: return 4;
  }
}

// The headers the tracker reads, as views into the encoded table.
struct TaskHeaders {
  std::optional<std::string_view> task, id, argsrepr, kwargsrepr;
  std::int64_t retries = 0;
};

// A string header ('S', or 'x' bytes) as FieldValue::as_string reads it.
std::optional<std::string_view> string_value(amqp::Reader value) {
  const char tag = static_cast<char>(value.u8());
  if (tag != 'S' && tag != 'x') return std::nullopt;
  return value.longstr();
}

// One walk over the encoded table, stepping over the values it does not
// need: no allocation per publish, unlike decoding the table. The first
// entry of a repeated key wins, as FieldTable::find. A malformed table throws.
TaskHeaders scan_task_headers(std::string_view encoded) {
  amqp::Reader outer(encoded);
  amqp::Reader r(outer.take(outer.u32()));
  TaskHeaders h;
  bool retries_seen = false;
  while (!r.empty()) {
    const std::string_view key = r.shortstr();
    const amqp::Reader value = r;
    amqp::skip_field_value(r);
    std::optional<std::string_view>* slot = key == "task"         ? &h.task
                                            : key == "id"         ? &h.id
                                            : key == "argsrepr"   ? &h.argsrepr
                                            : key == "kwargsrepr" ? &h.kwargsrepr
                                                                  : nullptr;
    if (slot != nullptr) {
      if (!*slot) *slot = string_value(value);
    } else if (key == "retries" && !retries_seen) {
      amqp::Reader v = value;
      h.retries = amqp::decode_field_value(v).as_int().value_or(0);
      retries_seen = true;
    }
  }
  return h;
}

// Peers put any bytes in headers, routing keys and bodies; JSON must be UTF-8.
// Invalid sequences become U+FFFD, as a browser would show them.
// Writes in into out (replacing what out held, reusing its buffer).
void assign_valid_utf8(std::string& out, std::string_view in) {
  out.clear();
  std::size_t plain = 0;  // start of the run of valid bytes not yet copied (one append per run)
  std::size_t i = 0;
  while (i < in.size()) {
    const auto c = static_cast<unsigned char>(in[i]);
    if (c < 0x80) {  // ASCII, nearly every byte seen
      ++i;
      continue;
    }
    std::size_t n = (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = n > 0 && i + n <= in.size();
    for (std::size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(in[i + k]) & 0xC0) == 0x80;
    if (ok && n == 2) ok = c >= 0xC2;  // no overlong forms
    if (ok && n == 3) {
      const auto c1 = static_cast<unsigned char>(in[i + 1]);
      ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0);  // overlong, surrogates
    }
    if (ok && n == 4) {
      const auto c1 = static_cast<unsigned char>(in[i + 1]);
      ok = !(c == 0xF0 && c1 < 0x90) && !(c == 0xF4 && c1 >= 0x90) && c <= 0xF4;
    }
    if (ok) {
      i += n;
      continue;
    }
    out.append(in.substr(plain, i - plain));
    out.append("\xEF\xBF\xBD");
    plain = ++i;
  }
  out.append(in.substr(plain));
}

std::string valid_utf8(std::string_view in) {
  std::string out;
  assign_valid_utf8(out, in);
  return out;
}

// Serialises without throwing on invalid UTF-8 (replaced), for anything built from peer input.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// ---- the stored task record, written without building a json value ----------
// A flush round writes every task that changed, thousands per second under load:
// this writes the same JSON as dump(task_to_json(t)) (which the API serves and
// restore() reads) straight into one reused buffer.

// A byte a JSON string cannot hold as it is: a control character, '"' or '\\'.
bool needs_escape(char ch) {
  const auto c = static_cast<unsigned char>(ch);
  return c < 0x20 || c == '"' || c == '\\';
}

// Appends text as a JSON string; text must be valid UTF-8 (clip() makes it so).
// Runs of plain bytes are copied with one append each: most fields are short
// or empty, so the cost is in the appends, not in the scan.
void append_json_string(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (auto it = text.begin();;) {
    const auto special = std::find_if(it, text.end(), needs_escape);
    out.append(it, special);
    if (special == text.end()) break;
    const auto c = static_cast<unsigned char>(*special);
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      default:
        out.append("\\u00");
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 0xF]);
    }
    it = special + 1;
  }
  out.push_back('"');
}

// The members are written in a fixed order, so each one starts with a
// literal: `{"id":` for the first, `,"name":` for the others (no name needs escaping).
void append_text(std::string& out, std::string_view member, std::string_view text) {
  out.append(member);
  append_json_string(out, text);
}

void append_count(std::string& out, std::string_view member, std::uint64_t n) {
  out.append(member);
  const fmt::format_int digits(n);
  out.append(digits.data(), digits.size());
}

// Shortest round-trip form ("{}"); a non-finite value (a peer's runtime) has no JSON form and is written as 0.
void append_number(std::string& out, std::string_view member, double x) {
  out.append(member);
  char buf[32];  // the shortest form of a double is at most 24 characters ("-2.2250738585072014e-308")
  const char* end = fmt::format_to(buf, FMT_COMPILE("{}"), std::isfinite(x) ? x : 0.0);
  out.append(buf, static_cast<std::size_t>(end - buf));
}

std::string json_text(const json& j) { return j.is_string() ? j.get<std::string>() : dump(j); }

double number_or(const json& e, const char* key, double fallback) {
  auto it = e.find(key);
  return it != e.end() && it->is_number() ? it->get<double>() : fallback;
}

std::string string_or_empty(const json& e, const char* key) {
  auto it = e.find(key);
  if (it == e.end() || it->is_null()) return {};
  return json_text(*it);
}

// Celery's error shape in rpc results: {"exc_type","exc_message":[...],"exc_module"}.
std::string celery_error(const json& r) {
  if (!r.is_object()) return json_text(r);
  std::string out = r.contains("exc_type") ? json_text(r["exc_type"]) : std::string("Error");
  if (auto m = r.find("exc_message"); m != r.end()) {
    out += ": ";
    if (m->is_array()) {
      for (std::size_t i = 0; i < m->size(); ++i) {
        if (i) out += ", ";
        out += json_text((*m)[i]);
      }
    } else {
      out += json_text(*m);
    }
  }
  return out;
}

// The members of a Celery result ({"status", "result", "traceback", ...}) that
// observe_result reads, found by one walk over the body's text without
// building a document: nearly every result is a small flat object whose
// values can be used as they are sent. What the walk does not handle (a key
// with an escape, nesting past kMaxJsonDepth) is parsed with nlohmann instead.
// The walk lets through some bodies nlohmann refuses (a malformed number or
// string in a member it does not read): the tracker only observes.
class CeleryResult {
 public:
  // False when body is not a JSON object (nothing is read from it then);
  // throws, as json::parse, when it is malformed.
  bool read(std::string_view body) {
    if (scan(body)) return true;
    const json r = json::parse(body);
    if (!r.is_object()) return false;
    status_ = traceback_ = result_ = {};
    if (auto it = r.find("status"); it != r.end()) status_value_ = *it;
    if (auto it = r.find("traceback"); it != r.end()) traceback_value_ = *it;
    if (auto it = r.find("result"); it != r.end()) result_value_ = *it;
    return true;
  }

  // Each is null when the member is absent.
  std::optional<std::string> status() const { return text(status_, status_value_); }
  std::optional<std::string> traceback() const { return text(traceback_, traceback_value_); }
  // The result as JSON text, as dump() writes it.
  std::string result_text() const {
    if (!result_value_ && plain_literal(result_)) return std::string(result_);
    return dump(result());
  }
  json result() const {
    if (result_value_) return *result_value_;
    return result_.empty() ? json() : json::parse(result_);
  }

 private:
  static constexpr int kMaxJsonDepth = 64;

  static bool space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
  static const char* skip_space(const char* p, const char* end) {
    while (p != end && space(*p)) ++p;
    return p;
  }
  // Past the end of the string that opens at p, or nullptr.
  static const char* skip_string(const char* p, const char* end) {
    for (++p; p != end; ++p) {
      if (*p == '\\') {
        if (++p == end) return nullptr;
      } else if (*p == '"') {
        return p + 1;
      }
    }
    return nullptr;
  }
  // Past the end of the value that starts at p, or nullptr. It checks the
  // structure (brackets, strings), not every character of a number or
  // literal: a value the tracker uses is checked again where it is used.
  static const char* skip_value(const char* p, const char* end, int depth) {
    if (p == end) return nullptr;
    if (*p == '"') return skip_string(p, end);
    if (*p != '{' && *p != '[') {
      const char* start = p;
      while (p != end && (std::isalnum(static_cast<unsigned char>(*p)) || *p == '-' || *p == '+' || *p == '.')) ++p;
      return p == start ? nullptr : p;
    }
    if (depth >= kMaxJsonDepth) return nullptr;
    const char close = *p == '{' ? '}' : ']';
    const bool object = close == '}';
    p = skip_space(p + 1, end);
    if (p != end && *p == close) return p + 1;
    for (;;) {
      if (object) {
        if (p == end || *p != '"' || !(p = skip_string(p, end))) return nullptr;
        p = skip_space(p, end);
        if (p == end || *p != ':') return nullptr;
        p = skip_space(p + 1, end);
      }
      if (!(p = skip_value(p, end, depth + 1))) return nullptr;
      p = skip_space(p, end);
      if (p == end) return nullptr;
      if (*p == close) return p + 1;
      if (*p != ',') return nullptr;
      p = skip_space(p + 1, end);
    }
  }
  // The top-level members, as spans of body.
  bool scan(std::string_view body) {
    const char* p = skip_space(body.data(), body.data() + body.size());
    const char* const end = body.data() + body.size();
    if (p == end || *p != '{') return false;
    p = skip_space(p + 1, end);
    if (p != end && *p == '}') return skip_space(p + 1, end) == end;
    for (;;) {
      if (p == end || *p != '"') return false;
      const char* key_end = skip_string(p, end);
      if (!key_end) return false;
      const std::string_view key(p + 1, static_cast<std::size_t>(key_end - p - 2));
      if (key.find('\\') != std::string_view::npos) return false;
      p = skip_space(key_end, end);
      if (p == end || *p != ':') return false;
      const char* value = skip_space(p + 1, end);
      if (!(p = skip_value(value, end, 1))) return false;
      const std::string_view span(value, static_cast<std::size_t>(p - value));
      if (key == "status") status_ = span;
      else if (key == "result") result_ = span;
      else if (key == "traceback") traceback_ = span;  // the last of equal keys wins, as with nlohmann
      p = skip_space(p, end);
      if (p == end) return false;
      if (*p == '}') return skip_space(p + 1, end) == end;
      if (*p != ',') return false;
      p = skip_space(p + 1, end);
    }
  }
  // JSON text that dump(json::parse(text)) writes back unchanged: null, true,
  // false, an integer of up to 18 digits but not -0, or an ASCII string
  // without escapes.
  static bool plain_literal(std::string_view v) {
    if (v == "null" || v == "true" || v == "false") return true;
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') return task::plain_json_text(v.substr(1, v.size() - 2));
    const bool negative = v.starts_with('-');
    const std::string_view digits = negative ? v.substr(1) : v;
    // nlohmann writes -0 as 0, and no integer starts with 0 but 0 itself.
    return !digits.empty() && digits.size() <= 18 && (digits[0] != '0' || (digits.size() == 1 && !negative)) &&
           std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
  }
  // A member's text: a string's characters, other JSON as dump() writes it; null for absent or null.
  static std::optional<std::string> text(std::string_view span, const std::optional<json>& value) {
    if (value) {
      if (value->is_null()) return std::nullopt;
      return json_text(*value);
    }
    if (span.empty() || span == "null") return std::nullopt;
    if (span.size() >= 2 && span.front() == '"' && span.back() == '"' &&
        task::plain_json_text(span.substr(1, span.size() - 2)))
      return std::string(span.substr(1, span.size() - 2));
    return json_text(json::parse(span));
  }

  std::string_view status_, result_, traceback_;  // as sent; empty: absent
  std::optional<json> status_value_, result_value_, traceback_value_;  // set when parsed by nlohmann
};

json task_to_json(const TaskRecord& t) {
  return json{{"id", valid_utf8(t.id)},
              {"name", t.name},
              {"state", state_name(t.state)},
              {"args", t.args},
              {"kwargs", t.kwargs},
              {"result", t.result},
              {"error", t.error},
              {"traceback", t.traceback},
              {"worker", t.worker},
              {"exchange", t.exchange},
              {"routing_key", t.routing_key},
              {"format", t.format},
              {"retries", t.retries},
              {"sent", t.sent},
              {"received", t.received},
              {"started", t.started},
              {"finished", t.finished},
              {"runtime", t.runtime},
              {"seq", t.seq}};
}

// The stored form: the members of task_to_json, written into out (cleared first).
void write_task_record(std::string& out, const TaskRecord& t) {
  out.clear();
  const bool ascii_id = std::all_of(t.id.begin(), t.id.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  std::string repaired;  // a peer's id as served: invalid UTF-8 replaced
  if (!ascii_id) repaired = valid_utf8(t.id);
  append_text(out, R"({"id":)", ascii_id ? std::string_view(t.id) : std::string_view(repaired));
  append_text(out, R"(,"name":)", t.name);
  append_text(out, R"(,"state":)", state_name(t.state));
  append_text(out, R"(,"args":)", t.args);
  append_text(out, R"(,"kwargs":)", t.kwargs);
  append_text(out, R"(,"result":)", t.result);
  append_text(out, R"(,"error":)", t.error);
  append_text(out, R"(,"traceback":)", t.traceback);
  append_text(out, R"(,"worker":)", t.worker);
  append_text(out, R"(,"exchange":)", t.exchange);
  append_text(out, R"(,"routing_key":)", t.routing_key);
  append_text(out, R"(,"format":)", t.format);
  append_count(out, R"(,"retries":)", t.retries);
  append_number(out, R"(,"sent":)", t.sent);
  append_number(out, R"(,"received":)", t.received);
  append_number(out, R"(,"started":)", t.started);
  append_number(out, R"(,"finished":)", t.finished);
  append_number(out, R"(,"runtime":)", t.runtime);
  append_count(out, R"(,"seq":)", t.seq);
  out.push_back('}');
}

TaskRecord task_from_json(const json& j) {
  TaskRecord t;
  t.id = j.at("id").get<std::string>();
  t.name = j.value("name", "");
  t.state = state_from_name(j.value("state", "PENDING")).value_or(TaskState::kPending);
  t.args = j.value("args", "");
  t.kwargs = j.value("kwargs", "");
  t.result = j.value("result", "");
  t.error = j.value("error", "");
  t.traceback = j.value("traceback", "");
  t.worker = j.value("worker", "");
  t.exchange = j.value("exchange", "");
  t.routing_key = j.value("routing_key", "");
  t.format = j.value("format", "");
  t.retries = j.value("retries", 0u);
  t.sent = j.value("sent", 0.0);
  t.received = j.value("received", 0.0);
  t.started = j.value("started", 0.0);
  t.finished = j.value("finished", 0.0);
  t.runtime = j.value("runtime", 0.0);
  t.seq = j.at("seq").get<std::uint64_t>();
  return t;
}

json stats_to_json(const TaskTypeStats& s) {
  return json{{"published", s.published},         {"succeeded", s.succeeded},
              {"failed", s.failed},               {"retried", s.retried},
              {"revoked", s.revoked},             {"runtime_total", s.runtime_total},
              {"runtime_min", s.runtime_min},     {"runtime_max", s.runtime_max},
              {"runtime_count", s.runtime_count}};
}

TaskTypeStats stats_from_json(const json& j) {
  TaskTypeStats s;
  s.published = j.value("published", std::uint64_t{0});
  s.succeeded = j.value("succeeded", std::uint64_t{0});
  s.failed = j.value("failed", std::uint64_t{0});
  s.retried = j.value("retried", std::uint64_t{0});
  s.revoked = j.value("revoked", std::uint64_t{0});
  s.runtime_total = j.value("runtime_total", 0.0);
  s.runtime_min = j.value("runtime_min", 0.0);
  s.runtime_max = j.value("runtime_max", 0.0);
  s.runtime_count = j.value("runtime_count", std::uint64_t{0});
  return s;
}

json worker_to_json(const WorkerRecord& w) {
  return json{{"hostname", valid_utf8(w.hostname)},   {"offline", w.offline},   {"first_seen", w.first_seen},
              {"last_seen", w.last_seen}, {"last_heartbeat", w.last_heartbeat}, {"freq", w.freq},
              {"active", w.active},       {"processed", w.processed}, {"pid", w.pid},
              {"loadavg", w.loadavg},     {"software", w.software}, {"results", w.results}};
}

WorkerRecord worker_from_json(const json& j) {
  WorkerRecord w;
  w.hostname = j.at("hostname").get<std::string>();
  w.offline = j.value("offline", false);
  w.first_seen = j.value("first_seen", 0.0);
  w.last_seen = j.value("last_seen", 0.0);
  w.last_heartbeat = j.value("last_heartbeat", 0.0);
  w.freq = j.value("freq", 0.0);
  w.active = j.value("active", std::int64_t{0});
  w.processed = j.value("processed", std::int64_t{0});
  w.pid = j.value("pid", std::int64_t{0});
  w.loadavg = j.value("loadavg", std::vector<double>{});
  w.software = j.value("software", "");
  w.results = j.value("results", std::uint64_t{0});
  return w;
}

}  // namespace

std::string_view state_name(TaskState s) { return kStateNames[static_cast<std::size_t>(s)]; }

std::optional<TaskState> state_from_name(std::string_view name) {
  for (std::size_t i = 0; i < kStateNames.size(); ++i)
    if (kStateNames[i] == name) return static_cast<TaskState>(i);
  return std::nullopt;
}

bool is_final(TaskState s) {
  return s == TaskState::kSuccess || s == TaskState::kFailure || s == TaskState::kRevoked ||
         s == TaskState::kRejected;
}

TaskTracker::TaskTracker(TrackerOptions options, store::Store* store) : options_(options), store_(store) {}

// ---- observation ------------------------------------------------------------

bool TaskTracker::interested(std::string_view exchange, const amqp::PropertiesSummary& props) const {
  if (!enabled()) return false;
  return (props.has_headers && props.headers.find(kEncodedTaskKey) != std::string_view::npos) ||
         exchange == kEventExchange || (!props.correlation_id.empty() && !records_.empty());
}

bool TaskTracker::on_publish(std::string_view exchange, std::string_view routing_key,
                             const amqp::PropertiesSummary& props, std::string_view body, double now) {
  if (!enabled()) return false;
  try {
    if (props.has_headers && props.headers.find(kEncodedTaskKey) != std::string_view::npos) {
      return observe_task(exchange, routing_key, props, body, now);
    }
    if (exchange == kEventExchange) {
      observe_events(routing_key, body, now);
      return false;
    }
    if (!props.correlation_id.empty()) {
      if (TaskRecord* t = find_task(props.correlation_id, TaskIndex::hash(props.correlation_id)))
        observe_result(*t, props, body, now);
    }
  } catch (const std::exception& e) {
    malformed(exchange == kEventExchange ? "event" : "task message", e.what());
  }
  return false;
}

bool TaskTracker::observe_task(std::string_view exchange, std::string_view routing_key,
                               const amqp::PropertiesSummary& props, std::string_view body, double now) {
  const TaskHeaders h = scan_task_headers(props.headers);
  const auto& name = h.task;
  const auto& id = h.id;
  if (!name || !id || id->empty()) return false;  // a `task` header that is not a task message
  const auto retries = static_cast<std::uint32_t>(h.retries);

  // Everything that can fail on a malformed body first, so a bad message leaves no record.
  const bool capnp = props.content_type == task::kCapnpContentType;
  const bool reprs = !capnp && h.argsrepr && h.kwargsrepr;  // Celery's own: no need to read the body
  std::string body_args, body_kwargs;
  if (capnp) {
    const task::TaskMessage m = task::decode_task_capnp(body);
    body_args = dump(task::value_to_json(task::Value(m.args)));
    body_kwargs = dump(task::value_to_json(task::Value(m.kwargs)));
  } else if (!reprs && props.content_type == task::kJsonContentType) {
    // Protocol v2 body: [args, kwargs, embed].
    const json b = json::parse(body);
    if (b.is_array() && b.size() >= 2) {
      body_args = dump(b[0]);
      body_kwargs = dump(b[1]);
    }
  }

  const Touched touched = touch_task(*id, now);
  TaskRecord& t = touched.task;
  assign_clipped(t.name, *name);
  TaskTypeStats& stats = types_[t.name];
  ++stats.published;
  if (!touched.created && retries > t.retries) ++stats.retried;  // Celery's retry re-publishes the same id with retries + 1
  dirty_types_.insert(t.name);
  t.retries = retries;
  assign_clipped(t.exchange, exchange);
  assign_clipped(t.routing_key, routing_key);
  t.format.assign(capnp ? "capnp" : "celery");
  assign_clipped(t.args, reprs ? *h.argsrepr : std::string_view(body_args));
  assign_clipped(t.kwargs, reprs ? *h.kwargsrepr : std::string_view(body_kwargs));
  t.sent = now;
  t.received = t.started = t.finished = t.runtime = 0;
  t.result.clear();
  set_state(t, TaskState::kPending);
  mark(t);
  return true;
}

void TaskTracker::on_delivered(std::string_view encoded_properties, double now) {
  try {
    const amqp::PropertiesSummary props = amqp::summarize_properties(encoded_properties);
    // Celery and miniworker set correlation_id to the task id: found that way,
    // the headers need no decoding. Otherwise the `id` header says.
    TaskRecord* found = find_task(props.correlation_id, TaskIndex::hash(props.correlation_id));
    if (found == nullptr && props.has_headers) {
      if (const auto id = scan_task_headers(props.headers).id) found = find_task(*id, TaskIndex::hash(*id));
    }
    if (found == nullptr) return;  // evicted meanwhile
    TaskRecord& t = *found;
    if (is_final(t.state)) return;
    t.received = now;
    if (rank(t.state) < rank(TaskState::kReceived) || t.state == TaskState::kRetry) set_state(t, TaskState::kReceived);
    mark(t);
  } catch (const std::exception& e) {
    malformed("delivered task message", e.what());
  }
}

void TaskTracker::observe_result(TaskRecord& t, const amqp::PropertiesSummary& props, std::string_view body,
                                 double now) {
  if (props.content_type == task::kCapnpContentType) {
    const task::TaskResult r = task::decode_result_capnp(body);
    ++results_seen_;
    if (!r.worker.empty()) {
      t.worker = clip(r.worker);
      ++touch_worker(r.worker, now).results;
    }
    t.traceback = clip(r.traceback);
    switch (r.state) {
      case task::State::kSuccess:
        t.result = clip(dump(task::value_to_json(r.value)));
        finish(t, TaskState::kSuccess, now, r.runtime);
        break;
      case task::State::kFailure:
      case task::State::kRevoked:
        t.error = clip(r.error_type + ": " + r.error_message);
        finish(t, r.state == task::State::kFailure ? TaskState::kFailure : TaskState::kRevoked, now, r.runtime);
        break;
      case task::State::kRetry:
        t.error = clip(r.error_type + ": " + r.error_message);
        set_state(t, TaskState::kRetry);
        break;
      case task::State::kPending: break;
    }
    mark(t);
    return;
  }
  if (props.content_type != task::kJsonContentType) return;  // some other reply sharing the id
  CeleryResult r;
  if (!r.read(body)) return;
  const std::optional<std::string> status_text = r.status();
  if (!status_text) return;
  const std::string& status = *status_text;
  // Everything that can throw on a malformed member first, so it changes nothing.
  const std::optional<std::string> traceback = r.traceback();
  const bool success = status == "SUCCESS";
  const bool failure = status == "FAILURE" || status == "REVOKED" || status == "RETRY";
  const std::string result = success ? r.result_text() : std::string();
  const std::string error = failure ? celery_error(r.result()) : std::string();
  const json started = status == "STARTED" ? r.result() : json();  // task_track_started: {"pid", "hostname"}

  ++results_seen_;
  if (traceback) assign_clipped(t.traceback, *traceback);
  if (success) {
    assign_clipped(t.result, result);
    finish(t, TaskState::kSuccess, now, 0);
  } else if (status == "RETRY") {
    assign_clipped(t.error, error);
    if (!is_final(t.state)) set_state(t, TaskState::kRetry);
  } else if (failure) {
    assign_clipped(t.error, error);
    finish(t, status == "FAILURE" ? TaskState::kFailure : TaskState::kRevoked, now, 0);
  } else if (status == "STARTED") {
    if (started.is_object() && started.contains("hostname")) t.worker = clip(json_text(started["hostname"]));
    if (rank(t.state) < rank(TaskState::kStarted)) {
      t.started = now;
      set_state(t, TaskState::kStarted);
    }
  }
  mark(t);
}

void TaskTracker::observe_events(std::string_view routing_key, std::string_view body, double now) {
  const json j = json::parse(body);
  ++events_seen_;
  if (j.is_array()) {
    for (const json& e : j) observe_event(e, now);
  } else if (j.is_object()) {
    observe_event(j, now);
  } else {
    malformed("event", routing_key == kMultiEventKey ? "task.multi body is not a list" : "body is not an object");
  }
}

void TaskTracker::observe_event(const json& e, double now) {
  if (!e.is_object()) return;
  const std::string type = string_or_empty(e, "type");
  const double at = number_or(e, "timestamp", now);
  const std::string hostname = string_or_empty(e, "hostname");
  if (type.starts_with("worker-")) {
    if (!hostname.empty()) observe_worker_event(e, type, at);
    return;
  }
  if (!type.starts_with("task-")) return;
  const std::string id = string_or_empty(e, "uuid");
  if (id.empty()) return;
  if (!hostname.empty()) touch_worker(hostname, at);
  const Touched touched = touch_task(id, now);
  TaskRecord& t = touched.task;
  if (touched.created) t.format = "event";
  if (t.name.empty() && e.contains("name")) t.name = clip(string_or_empty(e, "name"));
  if (t.args.empty() && e.contains("args")) t.args = clip(string_or_empty(e, "args"));
  if (t.kwargs.empty() && e.contains("kwargs")) t.kwargs = clip(string_or_empty(e, "kwargs"));
  auto advance = [&](TaskState s) {
    if (!is_final(t.state) && rank(s) > rank(t.state)) set_state(t, s);
  };
  if (type == "task-sent") {
    if (t.sent == 0) t.sent = at;
  } else if (type == "task-received") {
    if (!hostname.empty()) t.worker = clip(hostname);
    t.received = at;
    advance(TaskState::kReceived);
  } else if (type == "task-started") {
    if (!hostname.empty()) t.worker = clip(hostname);
    t.started = at;
    advance(TaskState::kStarted);
  } else if (type == "task-succeeded") {
    t.result = clip(string_or_empty(e, "result"));
    finish(t, TaskState::kSuccess, at, number_or(e, "runtime", 0));
  } else if (type == "task-failed") {
    t.error = clip(string_or_empty(e, "exception"));
    t.traceback = clip(string_or_empty(e, "traceback"));
    finish(t, TaskState::kFailure, at, 0);
  } else if (type == "task-retried") {
    t.error = clip(string_or_empty(e, "exception"));
    t.traceback = clip(string_or_empty(e, "traceback"));
    advance(TaskState::kRetry);
  } else if (type == "task-revoked") {
    finish(t, TaskState::kRevoked, at, 0);
  } else if (type == "task-rejected") {
    finish(t, TaskState::kRejected, at, 0);
  }
  mark(t);
}

void TaskTracker::observe_worker_event(const json& e, std::string_view type, double at) {
  WorkerRecord& w = touch_worker(string_or_empty(e, "hostname"), at);
  const bool was_offline = w.offline;
  w.offline = type == "worker-offline";
  if (w.offline != was_offline) mark(w, at);  // a restart must not lose this
  if (w.offline) return;
  w.last_heartbeat = at;  // online and heartbeat events both prove it alive
  w.freq = number_or(e, "freq", w.freq);
  w.active = static_cast<std::int64_t>(number_or(e, "active", static_cast<double>(w.active)));
  w.processed = static_cast<std::int64_t>(number_or(e, "processed", static_cast<double>(w.processed)));
  w.pid = static_cast<std::int64_t>(number_or(e, "pid", static_cast<double>(w.pid)));
  if (auto it = e.find("loadavg"); it != e.end() && it->is_array()) {
    w.loadavg.clear();
    for (const json& v : *it)
      if (v.is_number()) w.loadavg.push_back(v.get<double>());
  }
  if (e.contains("sw_ident")) w.software = clip(string_or_empty(e, "sw_ident") + " " + string_or_empty(e, "sw_ver"));
}

// ---- state ------------------------------------------------------------------

TaskTracker::Touched TaskTracker::touch_task(std::string_view id, double now) {
  const std::uint64_t h = TaskIndex::hash(id);
  if (TaskRecord* t = find_task(id, h)) return {*t, false};
  std::size_t slot = records_.size();
  if (slot < options_.max_tasks) {
    records_.emplace_back();
  } else {
    slot = head_;
    head_ = (head_ + 1) % records_.size();
    forget(records_[slot]);
    records_[slot].recycle();
  }
  TaskRecord& t = records_[slot];
  t.id = id;
  t.id_hash = h;
  t.seq = next_seq_++;
  t.sent = now;
  index_.insert(static_cast<std::uint32_t>(slot), h);
  return {t, true};
}

std::uint32_t TaskTracker::position(std::string_view id, std::uint64_t id_hash) const {
  return index_.find(id, id_hash, [this](std::uint32_t r) -> std::string_view { return records_[r].id; });
}

TaskRecord* TaskTracker::find_task(std::string_view id, std::uint64_t id_hash) {
  const std::uint32_t i = position(id, id_hash);
  return i == TaskIndex::kNone ? nullptr : &records_[i];
}

void TaskTracker::forget(const TaskRecord& t) {
  index_.erase(static_cast<std::uint32_t>(&t - records_.data()), t.id_hash);
  // A pending write of it is skipped: write_slice() finds another seq in its record.
  if (t.stored) deleted_tasks_.push_back(t.id);
  ++evicted_;
}

void TaskTracker::set_state(TaskRecord& t, TaskState s) { t.state = s; }

void TaskTracker::finish(TaskRecord& t, TaskState s, double at, double runtime) {
  if (is_final(t.state)) {
    // The second report of the same end (an rpc result and a task-succeeded
    // event): keep the worker's own runtime if the first report lacked one.
    if (runtime > 0) t.runtime = runtime;
    return;
  }
  set_state(t, s);
  t.finished = at;
  if (runtime <= 0) {
    if (t.started > 0) runtime = at - t.started;
    else if (t.received > 0) runtime = at - t.received;
  }
  t.runtime = std::max(0.0, runtime);
  if (t.name.empty()) return;
  TaskTypeStats& stats = types_[t.name];
  dirty_types_.insert(t.name);
  switch (s) {
    case TaskState::kSuccess: ++stats.succeeded; break;
    case TaskState::kFailure: ++stats.failed; break;
    default: ++stats.revoked; return;
  }
  if (t.runtime > 0) {
    stats.runtime_min = stats.runtime_count == 0 ? t.runtime : std::min(stats.runtime_min, t.runtime);
    stats.runtime_max = std::max(stats.runtime_max, t.runtime);
    stats.runtime_total += t.runtime;
    ++stats.runtime_count;
  }
}

WorkerRecord& TaskTracker::touch_worker(std::string_view hostname, double now) {
  auto it = workers_.find(hostname);
  if (it == workers_.end()) {
    if (workers_.size() >= options_.max_workers) {
      // Forget the worker seen least recently.
      auto stale = std::min_element(workers_.begin(), workers_.end(), [](const auto& a, const auto& b) {
        return a.second.last_seen < b.second.last_seen;
      });
      deleted_workers_.push_back(stale->first);
      dirty_workers_.erase(stale->first);
      workers_.erase(stale);
    }
    it = workers_.emplace(std::string(hostname), WorkerRecord{}).first;
    it->second.hostname = it->first;
    it->second.first_seen = now;
    mark(it->second, now);
  }
  WorkerRecord& w = it->second;
  w.last_seen = std::max(w.last_seen, now);
  if (now - w.written_at >= kWorkerWriteInterval) mark(w, now);
  return w;
}

std::string TaskTracker::clip(std::string_view text) const {
  std::string out;
  assign_clipped(out, text);
  return out;
}

void TaskTracker::assign_clipped(std::string& out, std::string_view text) const {
  if (text.size() <= options_.max_text_bytes) return assign_valid_utf8(out, text);
  // Cut on a UTF-8 character boundary so the JSON served stays valid.
  std::size_t n = options_.max_text_bytes;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  assign_valid_utf8(out, text.substr(0, n));
  out.append("…");
}

void TaskTracker::malformed(std::string_view what, std::string_view detail) {
  ++malformed_;
  if (malformed_ <= kMalformedLogFirst || malformed_ % kMalformedLogEvery == 0)
    spdlog::warn("task tracker: malformed {} ignored ({}); {} so far", what, detail, malformed_);
}

// ---- persistence ------------------------------------------------------------

void TaskTracker::restore() {
  if (!store_ || !enabled()) return;
  std::vector<store::MetaRecord> records;
  const store::Status s = store_->list_meta(store::MetaKind::kGeneric, records);
  if (!s.ok()) {
    spdlog::warn("task tracker: cannot read the task history: {}", s.to_string());
    return;
  }
  std::size_t bad = 0;
  broker::StringMap<TaskRecord> tasks;
  for (const store::MetaRecord& rec : records) {
    if (!rec.key.starts_with(kKeyPrefix)) continue;
    try {
      const json j = json::parse(rec.value);
      if (rec.key.starts_with(kTaskKey)) {
        TaskRecord t = task_from_json(j);
        t.stored = true;
        next_seq_ = std::max(next_seq_, t.seq + 1);
        // Two stored ids that are not UTF-8 can read back as the same text: the later record wins.
        tasks.insert_or_assign(t.id, std::move(t));
      } else if (rec.key.starts_with(kTypeKey)) {
        types_.insert_or_assign(rec.key.substr(kTypeKey.size()), stats_from_json(j));
      } else if (rec.key.starts_with(kWorkerKey)) {
        WorkerRecord w = worker_from_json(j);
        std::string host = w.hostname;
        workers_.insert_or_assign(std::move(host), std::move(w));
      }
    } catch (const std::exception& e) {
      ++bad;
      spdlog::warn("task tracker: skipping unreadable record '{}': {}", rec.key, e.what());
    }
  }
  records_.clear();
  index_.clear();
  head_ = 0;
  records_.reserve(std::min(tasks.size(), options_.max_tasks));
  std::vector<TaskRecord*> by_seq;
  for (auto& [_, t] : tasks) by_seq.push_back(&t);
  std::sort(by_seq.begin(), by_seq.end(), [](const TaskRecord* a, const TaskRecord* b) { return a->seq < b->seq; });
  // The bound may have been lowered: the oldest go.
  const std::size_t dropped = by_seq.size() - std::min(by_seq.size(), options_.max_tasks);
  for (std::size_t i = 0; i < by_seq.size(); ++i) {
    TaskRecord& t = *by_seq[i];
    if (i < dropped) {
      deleted_tasks_.push_back(t.id);
      ++evicted_;
      continue;
    }
    t.id_hash = TaskIndex::hash(t.id);
    index_.insert(static_cast<std::uint32_t>(records_.size()), t.id_hash);
    records_.push_back(std::move(t));
  }
  spdlog::info("task history: {} task(s), {} task name(s), {} worker(s) restored{}", records_.size(), types_.size(),
               workers_.size(), bad ? fmt::format(", {} unreadable", bad) : std::string());
}

bool TaskTracker::tick(double now) {
  if (!enabled() || round_open_ || now - last_flush_ < options_.flush_interval_s) return false;
  last_flush_ = now;
  round_open_ = true;
  round_end_ = dirty_tasks_.size();
  return flush_slice();
}

bool TaskTracker::flush_slice() {
  if (!round_open_) return false;
  try {
    return write_slice(std::max<std::size_t>(options_.flush_slice, 1));
  } catch (const std::exception& e) {  // never let the history take the broker down
    spdlog::warn("task tracker: writing the task history failed: {}", e.what());
    round_open_ = false;  // the next round goes on from where this one stopped
    return false;
  }
}

void TaskTracker::flush() {
  round_open_ = true;
  round_end_ = dirty_tasks_.size();  // an open round goes on from where it is
  write_slice(SIZE_MAX);
}

bool TaskTracker::write_slice(std::size_t max_records) {
  if (!store_) {
    dirty_tasks_.clear();
    dirty_types_.clear();
    dirty_workers_.clear();
    deleted_tasks_.clear();
    deleted_workers_.clear();
    round_done_ = round_end_ = 0;
    round_open_ = false;
    return false;
  }
  std::string& key = key_;
  // Deletes first: an id evicted and then seen again is written again after
  // it. Every delete pending is for a record evicted before any task that now
  // holds its id began, and that task is written in this slice or a later one.
  for (const std::string& id : deleted_tasks_)
    store_->delete_meta(store::MetaKind::kGeneric, key.assign(kTaskKey).append(id));
  for (const std::string& h : deleted_workers_)
    store_->delete_meta(store::MetaKind::kGeneric, key.assign(kWorkerKey).append(h));
  bool wrote = !deleted_tasks_.empty() || !deleted_workers_.empty();
  deleted_tasks_.clear();
  deleted_workers_.clear();
  for (std::size_t written = 0; round_done_ < round_end_ && written < max_records; ++round_done_) {
    const DirtyTask& d = dirty_tasks_[round_done_];
    TaskRecord& t = records_[d.record];
    if (t.seq != d.seq) continue;  // evicted since
    t.dirty = false;
    t.stored = true;
    write_task_record(value_, t);
    store_->put_meta(store::MetaKind::kGeneric, key.assign(kTaskKey).append(t.id), value_);
    ++written;
    wrote = true;
  }
  const bool more = round_done_ < round_end_;
  if (!more) {  // the round's end: names and hostnames, and the tasks marked since wait for the next
    dirty_tasks_.erase(dirty_tasks_.begin(), dirty_tasks_.begin() + static_cast<std::ptrdiff_t>(round_end_));
    round_done_ = round_end_ = 0;
    round_open_ = false;
    for (const std::string& name : dirty_types_) {
      if (auto it = types_.find(name); it != types_.end())
        store_->put_meta(store::MetaKind::kGeneric, key.assign(kTypeKey).append(name), dump(stats_to_json(it->second)));
    }
    for (const std::string& h : dirty_workers_) {
      if (auto it = workers_.find(h); it != workers_.end())
        store_->put_meta(store::MetaKind::kGeneric, key.assign(kWorkerKey).append(h), dump(worker_to_json(it->second)));
    }
    wrote = wrote || !dirty_types_.empty() || !dirty_workers_.empty();
    dirty_types_.clear();
    dirty_workers_.clear();
  }
  if (wrote) {
    store_->commit_later([](store::Status s) {
      if (!s.ok()) spdlog::warn("task tracker: writing the task history failed: {}", s.to_string());
    });
  }
  return more;
}

// ---- views ------------------------------------------------------------------

const TaskRecord* TaskTracker::find(std::string_view id) const {
  if (id.empty()) return nullptr;
  const std::uint32_t i = position(id, TaskIndex::hash(id));
  return i == TaskIndex::kNone ? nullptr : &records_[i];
}

const TaskTypeStats* TaskTracker::stats(std::string_view name) const {
  auto it = types_.find(name);
  return it == types_.end() ? nullptr : &it->second;
}

const WorkerRecord* TaskTracker::worker(std::string_view hostname) const {
  auto it = workers_.find(hostname);
  return it == workers_.end() ? nullptr : &it->second;
}

json TaskTracker::list_tasks(const TaskQuery& q) const {
  json items = json::array();
  std::size_t total = 0;
  for (std::size_t i = records_.size(); i-- > 0;) {
    const TaskRecord& t = by_age(i);
    if (q.state && t.state != *q.state) continue;
    if (!q.name.empty() && t.name != q.name) continue;
    if (total >= q.offset && items.size() < q.limit) items.push_back(task_to_json(t));
    ++total;
  }
  return json{{"total", total}, {"items", std::move(items)}};
}

std::optional<json> TaskTracker::task(std::string_view id) const {
  const TaskRecord* t = find(id);
  if (!t) return std::nullopt;
  return task_to_json(*t);
}

json TaskTracker::task_types() const {
  struct Current {
    std::uint64_t queued = 0, running = 0;
  };
  std::map<std::string, Current, std::less<>> current;
  for (const auto& [name, _] : types_) current[name];
  for (const TaskRecord& t : records_) {
    if (t.name.empty()) continue;
    Current& c = current[t.name];
    if (t.state == TaskState::kPending || t.state == TaskState::kRetry) ++c.queued;
    if (t.state == TaskState::kReceived || t.state == TaskState::kStarted) ++c.running;
  }
  json out = json::array();
  const TaskTypeStats none;
  for (const auto& [name, c] : current) {
    auto it = types_.find(name);
    const TaskTypeStats& s = it == types_.end() ? none : it->second;
    json j = stats_to_json(s);
    j["name"] = valid_utf8(name);
    j["queued"] = c.queued;
    j["running"] = c.running;
    j["runtime_avg"] = s.runtime_count ? s.runtime_total / static_cast<double>(s.runtime_count) : 0.0;
    out.push_back(std::move(j));
  }
  return out;
}

json TaskTracker::workers(double now) const {
  json out = json::array();
  std::vector<const WorkerRecord*> sorted;
  sorted.reserve(workers_.size());
  for (const auto& [_, w] : workers_) sorted.push_back(&w);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->hostname < b->hostname; });
  for (const WorkerRecord* w : sorted) {
    json j = worker_to_json(*w);
    const double freq = w->freq > 0 ? w->freq : kDefaultHeartbeatFreq;
    std::string_view state = "seen";  // known only from its results: no heartbeats to judge by
    if (w->offline) state = "offline";
    else if (w->last_heartbeat > 0) state = now <= w->last_heartbeat + freq * kHeartbeatExpireFactor ? "online" : "offline";
    j["state"] = state;
    out.push_back(std::move(j));
  }
  return out;
}

json TaskTracker::summary() const {
  std::array<std::uint64_t, kStateNames.size()> counts{};
  for (const TaskRecord& t : records_) ++counts[static_cast<std::size_t>(t.state)];
  json states = json::object();
  for (std::size_t i = 0; i < kStateNames.size(); ++i) states[std::string(kStateNames[i])] = counts[i];
  return json{{"tasks", records_.size()},      {"max_tasks", options_.max_tasks}, {"states", std::move(states)},
              {"task_names", types_.size()}, {"workers", workers_.size()},     {"evicted", evicted_},
              {"results_seen", results_seen_}, {"events_seen", events_seen_},  {"malformed", malformed_}};
}

}  // namespace mb::tasks
