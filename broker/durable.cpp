// StorePersistence. See durable.hpp.
#include "broker/durable.hpp"

#include <spdlog/spdlog.h>

#include <unordered_map>

#include "broker/vhost.hpp"
#include "common/amqp/properties.hpp"

namespace mb::broker {
namespace {

using amqp::FieldTable;
using store::MetaKind;

constexpr std::size_t kRestoreBatch = 4096;  // entries paged in per store read at start-up
// A delayed record of vhost "/" starts with its exchange's name (the original
// format); one of another vhost starts with this marker, then the vhost's name.
constexpr std::string_view kDelayedVhostMarker{"\0", 1};
constexpr std::string_view kDefaultVhost = "/";

// Record keys start with the vhost's name and a NUL, so vhosts share the key
// space and one vhost's records are found by prefix.
std::string vhost_prefix(std::string_view vhost) {
  std::string k(vhost);
  k.push_back('\0');
  return k;
}

std::string key_of(std::string_view vhost, std::string_view name) {
  std::string k = vhost_prefix(vhost);
  k.append(name);
  return k;
}

struct DelayedHeader {
  std::string vhost;
  std::string exchange;
};

// Reads the vhost and exchange a delayed record starts with, leaving r at the message record.
DelayedHeader read_delayed_header(amqp::Reader& r) {
  DelayedHeader h;
  std::string_view first = r.shortstr();
  if (first == kDelayedVhostMarker) {
    h.vhost = r.longstr();
    h.exchange = r.shortstr();
  } else {
    h.vhost = kDefaultVhost;
    h.exchange = first;
  }
  return h;
}

std::string encode_table(const FieldTable& t) {
  std::string out;
  amqp::Writer w(out);
  amqp::encode_table(w, t);
  return out;
}

FieldTable decode_table(std::string_view blob) {
  amqp::Reader r(blob);
  return amqp::decode_table(r);
}

std::string str(const FieldTable& t, std::string_view key) {
  const auto* v = t.find(key);
  auto s = v ? v->as_string() : std::nullopt;
  return s ? std::string(*s) : std::string();
}

bool flag(const FieldTable& t, std::string_view key) {
  const auto* v = t.find(key);
  return v && v->as_bool().value_or(false);
}

FieldTable table(const FieldTable& t, std::string_view key) {
  const auto* v = t.find(key);
  return v && v->as_table() ? *v->as_table() : FieldTable{};
}

std::string binding_key(std::string_view vhost, const Exchange& source, const Binding& b) {
  std::string k = key_of(vhost, source.name());
  k.push_back('\0');
  k.push_back(b.destination.queue ? 'q' : 'e');
  k.append(b.destination.name());
  k.push_back('\0');
  k.append(b.routing_key);
  k.push_back('\0');
  k.append(encode_table(b.arguments));
  return k;
}

}  // namespace

std::string encode_message_record(const Message& m) {
  std::string out;
  out.reserve(m.body.size() + m.properties.size() + m.exchange.size() + m.routing_key.size() + 16);
  amqp::Writer w(out);
  w.shortstr(m.exchange);
  w.shortstr(m.routing_key);
  w.longstr(m.properties);
  w.longstr(m.body);
  return out;
}

std::shared_ptr<Message> decode_message_record(std::uint64_t id, std::string_view blob) {
  amqp::Reader r(blob);
  auto m = std::make_shared<Message>();
  m->id = id;
  m->exchange = r.shortstr();
  m->routing_key = r.shortstr();
  m->properties = r.longstr();
  m->body = r.longstr();
  const amqp::PropertiesSummary s = amqp::summarize_properties(m->properties);
  m->delivery_mode = s.delivery_mode;
  m->priority = s.priority;
  m->has_headers = s.has_headers;
  m->stored = true;
  return m;
}

StorePersistence::StorePersistence(store::Store& store, std::function<void(std::function<void()>)> post)
    : store_(store), post_(std::move(post)) {}

void StorePersistence::touched() {
  dirty_ = true;
  if (flush_posted_) return;
  flush_posted_ = true;
  // Acks, deletes and declares need no reply that waits for the disk, but they
  // must not sit in the pending batch: commit them at the end of this turn.
  post_([this] {
    flush_posted_ = false;
    if (!dirty_) return;
    dirty_ = false;
    store_.commit([](store::Status s) {
      if (!s.ok()) spdlog::error("store write failed: {}", s.to_string());
    });
  });
}

void StorePersistence::exchange_declared(std::string_view vhost, const Exchange& x) {
  FieldTable t;
  t.set("name", x.name());
  t.set("type", std::string(exchange_type_name(x.type())));
  t.set("delayed", x.delayed());
  t.set("auto_delete", x.auto_delete());
  t.set("internal", x.internal());
  t.set("arguments", x.arguments());
  store_.put_meta(MetaKind::kExchange, key_of(vhost, x.name()), encode_table(t));
  touched();
}

void StorePersistence::exchange_deleted(std::string_view vhost, const Exchange& x) {
  store_.delete_meta(MetaKind::kExchange, key_of(vhost, x.name()));
  touched();
}

void StorePersistence::queue_declared(std::string_view vhost, Queue& q) {
  q.store_id = next_queue_id_++;
  FieldTable t;
  t.set("id", static_cast<std::int64_t>(q.store_id));
  t.set("name", q.name());
  t.set("auto_delete", q.auto_delete());
  t.set("arguments", q.raw_args());
  store_.put_meta(MetaKind::kQueue, key_of(vhost, q.name()), encode_table(t));
  touched();
}

void StorePersistence::queue_deleted(std::string_view vhost, const Queue& q) {
  store_.delete_queue(q.store_id);
  store_.delete_meta(MetaKind::kQueue, key_of(vhost, q.name()));
  touched();
}

void StorePersistence::binding_added(std::string_view vhost, const Exchange& source, const Binding& b) {
  FieldTable t;
  t.set("source", source.name());
  t.set("destination", b.destination.name());
  t.set("destination_is_exchange", b.destination.exchange != nullptr);
  t.set("routing_key", b.routing_key);
  t.set("arguments", b.arguments);
  store_.put_meta(MetaKind::kBinding, binding_key(vhost, source, b), encode_table(t));
  touched();
}

void StorePersistence::binding_removed(std::string_view vhost, const Exchange& source, const Binding& b) {
  store_.delete_meta(MetaKind::kBinding, binding_key(vhost, source, b));
  touched();
}

void StorePersistence::message_enqueued(const Queue& q, const QueueEntry& e) {
  if (q.store_id == 0) return;
  if (e.msg->stored) {
    store_.enqueue(q.store_id, e.seq, e.msg->id, std::nullopt);
  } else {
    const std::string blob = encode_message_record(*e.msg);
    store_.enqueue(q.store_id, e.seq, e.msg->id, blob);
    e.msg->stored = true;
  }
  touched();
}

void StorePersistence::message_removed(const Queue& q, const QueueEntry& e) {
  if (q.store_id == 0 || !e.msg->stored) return;
  store_.remove_entry(q.store_id, e.seq, e.msg->id);
  touched();
}

void StorePersistence::message_delivered(const Queue& q, const QueueEntry& e) {
  if (q.store_id == 0 || !e.msg->stored) return;
  store_.update_delivery_count(q.store_id, e.seq, e.msg->id, e.delivery_count);
  touched();
}

void StorePersistence::delayed_added(std::string_view vhost, const Exchange& x, const Message& m, std::int64_t due_ms) {
  std::string blob;
  amqp::Writer w(blob);
  if (vhost != kDefaultVhost) {
    w.shortstr(kDelayedVhostMarker);
    w.longstr(vhost);
  }
  w.shortstr(x.name());
  w.raw(encode_message_record(m));
  store_.put_delayed(static_cast<std::uint64_t>(due_ms), m.id, blob);
  touched();
}

void StorePersistence::delayed_removed(const Message& m, std::int64_t due_ms) {
  store_.remove_delayed(static_cast<std::uint64_t>(due_ms), m.id);
  touched();
}

void StorePersistence::after_commit(std::function<void(bool ok)> done) {
  dirty_ = false;
  store_.commit([done = std::move(done)](store::Status s) {
    if (!s.ok()) spdlog::error("store write failed, nacking: {}", s.to_string());
    done(s.ok());
  });
}

std::uint64_t StorePersistence::restore(Vhost& vhost) {
  const std::string prefix = vhost_prefix(vhost.name());
  auto mine = [&prefix](const store::MetaRecord& rec) { return rec.key.starts_with(prefix); };
  std::vector<store::MetaRecord> records;
  std::uint64_t max_id = std::max(store_.recovery_info().max_message_id, store_.recovery_info().max_delayed_id);

  store_.list_meta(MetaKind::kExchange, records);
  for (const auto& rec : records) {
    if (!mine(rec)) continue;
    FieldTable t = decode_table(rec.value);
    auto type = parse_exchange_type(str(t, "type"));
    if (!type) continue;
    auto x = std::make_shared<Exchange>(str(t, "name"), *type, true, flag(t, "auto_delete"), flag(t, "internal"),
                                        table(t, "arguments"));
    x->set_delayed(flag(t, "delayed"));
    vhost.restore_exchange(std::move(x));
  }

  records.clear();
  store_.list_meta(MetaKind::kQueue, records);
  std::size_t restored_messages = 0;
  std::unordered_map<std::uint64_t, MessagePtr> shared;  // a message in several queues stays one object
  for (const auto& rec : records) {
    FieldTable t = decode_table(rec.value);
    const auto* idv = t.find("id");
    const std::uint64_t id = idv ? static_cast<std::uint64_t>(idv->as_int().value_or(0)) : 0;
    next_queue_id_ = std::max(next_queue_id_, id + 1);  // queue ids are unique across vhosts
    if (!mine(rec)) continue;
    FieldTable args = table(t, "arguments");
    QueueArgs parsed;
    if (QueueArgs::parse(args, parsed)) continue;
    auto q = std::make_shared<Queue>(str(t, "name"), true, false, flag(t, "auto_delete"), args, std::move(parsed), 0,
                                     &vhost);
    q->store_id = id;
    std::vector<store::QueueEntry> entries;
    std::vector<store::MessageId> ids;
    std::vector<std::optional<std::string>> blobs;
    store::Seq from = 0;
    for (;;) {
      entries.clear();
      if (!store_.load_entries(id, from, kRestoreBatch, entries).ok() || entries.empty()) break;
      ids.clear();
      for (const auto& e : entries) ids.push_back(e.message_id);
      store_.load_messages(ids, blobs);
      for (std::size_t i = 0; i < entries.size(); ++i) {
        MessagePtr& msg = shared[entries[i].message_id];
        if (!msg) {
          if (!blobs[i]) continue;
          try {
            msg = decode_message_record(entries[i].message_id, *blobs[i]);
          } catch (const amqp::DecodeError& err) {
            spdlog::error("queue '{}': message {} is corrupt ({}); skipped", q->name(), entries[i].message_id,
                          err.what());
            continue;
          }
        }
        q->restore(QueueEntry{entries[i].seq, msg, 0, entries[i].delivery_count, false});
        ++restored_messages;
      }
      from = entries.back().seq + 1;
    }
    vhost.restore_queue(std::move(q));
  }

  records.clear();
  store_.list_meta(MetaKind::kBinding, records);
  std::size_t restored_bindings = 0;
  for (const auto& rec : records) {
    if (!mine(rec)) continue;
    FieldTable t = decode_table(rec.value);
    ExchangePtr source = vhost.find_exchange(str(t, "source"));
    if (!source) continue;
    Destination d;
    if (flag(t, "destination_is_exchange")) {
      d.exchange = vhost.find_exchange(str(t, "destination"));
    } else {
      d.queue = vhost.find_queue(str(t, "destination"));
    }
    if (!d.queue && !d.exchange) continue;
    source->bind(Binding{std::move(d), str(t, "routing_key"), table(t, "arguments")});
    ++restored_bindings;
  }

  std::vector<store::DelayedRecord> delayed;
  store_.load_due_delayed(UINT64_MAX, SIZE_MAX, delayed);
  std::size_t restored_delayed = 0;
  for (const auto& d : delayed) {
    try {
      amqp::Reader r(d.blob);
      DelayedHeader h = read_delayed_header(r);
      if (h.vhost != vhost.name()) continue;
      auto msg = decode_message_record(d.id, r.take(r.remaining()));
      if (ExchangePtr x = vhost.find_exchange(h.exchange)) {
        vhost.restore_delayed(x, msg, static_cast<std::int64_t>(d.due_ms));
        ++restored_delayed;
      }
    } catch (const amqp::DecodeError& err) {
      spdlog::error("delayed message {} is corrupt ({}); skipped", d.id, err.what());
    }
  }
  spdlog::info("vhost '{}': restored {} exchange(s), {} queue(s), {} binding(s), {} message(s), {} delayed message(s)",
               vhost.name(), vhost.exchanges().size(), vhost.queues().size(), restored_bindings, restored_messages,
               restored_delayed);
  return max_id;
}

void StorePersistence::vhost_deleted(std::string_view vhost) {
  after_commit([this, vhost = std::string(vhost)](bool) {
    const std::size_t n = purge_vhost_records(store_, vhost);
    spdlog::info("vhost '{}': durable records of {} exchange(s) and queue(s) deleted", vhost, n);
    touched();
  });
}

std::size_t purge_vhost_records(store::Store& store, std::string_view vhost) {
  const std::string prefix = vhost_prefix(vhost);
  std::size_t deleted = 0;
  std::vector<store::MetaRecord> records;
  for (MetaKind kind : {MetaKind::kBinding, MetaKind::kQueue, MetaKind::kExchange}) {
    records.clear();
    store.list_meta(kind, records);
    for (const auto& rec : records) {
      if (!rec.key.starts_with(prefix)) continue;
      if (kind == MetaKind::kQueue) {
        try {
          const auto* idv = decode_table(rec.value).find("id");
          if (const auto id = idv ? idv->as_int() : std::nullopt; id && *id > 0)
            store.delete_queue(static_cast<store::QueueId>(*id));
        } catch (const amqp::DecodeError& e) {
          spdlog::error("vhost '{}': queue record is corrupt ({}); deleting the record only", vhost, e.what());
        }
      }
      if (kind != MetaKind::kBinding) ++deleted;
      store.delete_meta(kind, rec.key);
    }
  }
  std::vector<store::DelayedRecord> delayed;
  store.load_due_delayed(UINT64_MAX, SIZE_MAX, delayed);
  for (const auto& d : delayed) {
    try {
      amqp::Reader r(d.blob);
      if (read_delayed_header(r).vhost != vhost) continue;
    } catch (const amqp::DecodeError&) {
      continue;  // not ours to judge
    }
    store.remove_delayed(d.due_ms, d.id);
  }
  return deleted;
}

}  // namespace mb::broker
