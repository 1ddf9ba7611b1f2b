// capnp_codec.cpp: conversions between the in-memory task model and Cap'n Proto.
#include "common/task/capnp_codec.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>
#include <stdexcept>

namespace mb::task {
namespace {

constexpr int kMaxValueDepth = 64;  // deeper nesting is refused, not recursed into

std::string_view view(capnp::Text::Reader t) { return {t.cStr(), t.size()}; }

Value read_value_at(proto::Value::Reader r, int depth) {
  if (depth > kMaxValueDepth) throw std::runtime_error("value nested too deeply");
  switch (r.which()) {
    case proto::Value::NULL_: return Value();
    case proto::Value::BOOL: return Value(r.getBool());
    case proto::Value::INT: return Value(r.getInt());
    case proto::Value::DOUBLE: return Value(r.getDouble());
    case proto::Value::TEXT: return Value(std::string(view(r.getText())));
    case proto::Value::DATA: {
      auto d = r.getData();
      return Value(Bytes(std::string(reinterpret_cast<const char*>(d.begin()), d.size())));
    }
    case proto::Value::LIST: {
      List l;
      for (auto e : r.getList()) l.push_back(read_value_at(e, depth + 1));
      return Value(std::move(l));
    }
    case proto::Value::MAP: {
      Map m;
      for (auto e : r.getMap()) m.insert_or_assign(std::string(view(e.getKey())), read_value_at(e.getValue(), depth + 1));
      return Value(std::move(m));
    }
  }
  return Value();
}

// Copies the body into word-aligned memory (AMQP bodies have no alignment).
kj::Array<capnp::word> aligned_copy(std::string_view body) {
  if (body.size() % sizeof(capnp::word) != 0) throw std::runtime_error("capnp body is not a whole number of words");
  auto words = kj::heapArray<capnp::word>(body.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), body.data(), body.size());
  return words;
}

std::string to_string(capnp::MessageBuilder& mb) {
  auto words = capnp::messageToFlatArray(mb);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

template <typename Fn>
auto guarded(Fn&& fn) {
  try {
    return fn();
  } catch (const kj::Exception& e) {
    throw std::runtime_error(std::string("malformed capnp message: ") + e.getDescription().cStr());
  }
}

}  // namespace

void write_value(proto::Value::Builder b, const Value& v) {
  switch (v.kind()) {
    case Kind::kNull: b.setNull(); break;
    case Kind::kBool: b.setBool(v.as_bool()); break;
    case Kind::kInt: b.setInt(v.as_int()); break;
    case Kind::kDouble: b.setDouble(v.as_double()); break;
    case Kind::kString: b.setText(v.as_string()); break;
    case Kind::kBytes: {
      const auto& d = v.as_bytes().data;
      b.setData(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(d.data()), d.size()));
      break;
    }
    case Kind::kList: {
      auto l = b.initList(static_cast<unsigned>(v.as_list().size()));
      for (unsigned i = 0; i < l.size(); ++i) write_value(l[i], v.as_list()[i]);
      break;
    }
    case Kind::kMap: {
      auto m = b.initMap(static_cast<unsigned>(v.as_map().size()));
      unsigned i = 0;
      for (const auto& [k, x] : v.as_map()) {
        m[i].setKey(k);
        write_value(m[i].initValue(), x);
        ++i;
      }
      break;
    }
  }
}

Value read_value(proto::Value::Reader r) { return read_value_at(r, 0); }

void write_task(proto::Task::Builder b, const TaskMessage& t) {
  b.setId(t.id);
  b.setName(t.name);
  auto args = b.initArgs(static_cast<unsigned>(t.args.size()));
  for (unsigned i = 0; i < args.size(); ++i) write_value(args[i], t.args[i]);
  auto kwargs = b.initKwargs(static_cast<unsigned>(t.kwargs.size()));
  unsigned i = 0;
  for (const auto& [k, v] : t.kwargs) {
    kwargs[i].setKey(k);
    write_value(kwargs[i].initValue(), v);
    ++i;
  }
  b.setRetries(t.retries);
  b.setEta(t.eta);
  b.setExpires(t.expires);
  b.setParentId(t.parent_id);
  b.setRootId(t.root_id);
  b.setReplyTo(t.reply_to);
  b.setCorrelationId(t.correlation_id);
  b.setSoftTimeLimit(t.soft_time_limit);
  b.setTimeLimit(t.time_limit);
  b.setIgnoreResult(t.ignore_result);
  b.setOrigin(t.origin);
}

TaskMessage read_task(proto::Task::Reader r) {
  TaskMessage t;
  t.id = view(r.getId());
  t.name = view(r.getName());
  for (auto a : r.getArgs()) t.args.push_back(read_value(a));
  for (auto e : r.getKwargs()) t.kwargs.insert_or_assign(std::string(view(e.getKey())), read_value(e.getValue()));
  t.retries = r.getRetries();
  t.eta = r.getEta();
  t.expires = r.getExpires();
  t.parent_id = view(r.getParentId());
  t.root_id = view(r.getRootId());
  t.reply_to = view(r.getReplyTo());
  t.correlation_id = view(r.getCorrelationId());
  t.soft_time_limit = r.getSoftTimeLimit();
  t.time_limit = r.getTimeLimit();
  t.ignore_result = r.getIgnoreResult();
  t.origin = view(r.getOrigin());
  t.format = WireFormat::kCapnp;
  return t;
}

void write_result(proto::Result::Builder b, const TaskResult& r) {
  b.setTaskId(r.task_id);
  b.setState(static_cast<proto::State>(r.state));
  write_value(b.initValue(), r.value);
  b.setErrorType(r.error_type);
  b.setErrorMessage(r.error_message);
  b.setTraceback(r.traceback);
  b.setRuntime(r.runtime);
  b.setWorker(r.worker);
  b.setRetries(r.retries);
}

TaskResult read_result(proto::Result::Reader r) {
  TaskResult out;
  out.task_id = view(r.getTaskId());
  auto s = static_cast<unsigned>(r.getState());
  out.state = s <= static_cast<unsigned>(State::kRevoked) ? static_cast<State>(s) : State::kPending;
  out.value = read_value(r.getValue());
  out.error_type = view(r.getErrorType());
  out.error_message = view(r.getErrorMessage());
  out.traceback = view(r.getTraceback());
  out.runtime = r.getRuntime();
  out.worker = view(r.getWorker());
  out.retries = r.getRetries();
  return out;
}

std::string encode_task_capnp(const TaskMessage& t) {
  capnp::MallocMessageBuilder mb;
  write_task(mb.initRoot<proto::Task>(), t);
  return to_string(mb);
}

TaskMessage decode_task_capnp(std::string_view body) {
  return guarded([&] {
    auto words = aligned_copy(body);
    capnp::FlatArrayMessageReader reader(words);
    return read_task(reader.getRoot<proto::Task>());
  });
}

std::string encode_result_capnp(const TaskResult& r) {
  capnp::MallocMessageBuilder mb;
  write_result(mb.initRoot<proto::Result>(), r);
  return to_string(mb);
}

TaskResult decode_result_capnp(std::string_view body) {
  return guarded([&] {
    auto words = aligned_copy(body);
    capnp::FlatArrayMessageReader reader(words);
    return read_result(reader.getRoot<proto::Result>());
  });
}

}  // namespace mb::task
