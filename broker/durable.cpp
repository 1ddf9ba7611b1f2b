// StorePersistence. See durable.hpp.
#include "broker/durable.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <unordered_map>

#include "broker/record.hpp"
#include "broker/vhost.hpp"
#include "common/amqp/properties.hpp"

namespace mb::broker {
namespace {

using amqp::FieldTable;
using record::flag;
using record::str;
using record::table;
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

std::string binding_key(std::string_view vhost, const Exchange& source, const Binding& b) {
  std::string k = key_of(vhost, source.name());
  k.push_back('\0');
  k.push_back(b.destination.queue ? 'q' : 'e');
  k.append(b.destination.name());
  k.push_back('\0');
  k.append(b.routing_key);
  k.push_back('\0');
  k.append(record::encode(b.arguments));
  return k;
}

}  // namespace

std::string encode_message_record(const Message& m, std::int64_t stored_at_ms) {
  std::string out;
  out.reserve(m.body_size() + m.properties().size() + m.exchange().size() + m.routing_key().size() + 24);
  amqp::Writer w(out);
  w.shortstr(m.exchange());
  w.shortstr(m.routing_key());
  w.longstr(m.properties());
  w.longstr(m.body());
  w.u64(static_cast<std::uint64_t>(stored_at_ms));
  return out;
}

std::shared_ptr<Message> decode_message_record(std::uint64_t id, std::string_view blob) {
  amqp::Reader r(blob);
  const std::string_view exchange = r.shortstr();
  const std::string_view routing_key = r.shortstr();
  const std::string_view properties = r.longstr();
  const std::string_view body = r.longstr();
  auto m = Message::create(exchange, routing_key, properties, body);
  m->id = id;
  if (r.remaining() >= 8) m->stored_at_ms = static_cast<std::int64_t>(r.u64());
  const amqp::PropertiesSummary s = amqp::summarize_properties(m->properties());
  m->delivery_mode = s.delivery_mode;
  m->priority = s.priority;
  m->has_headers = s.has_headers;
  m->stored = true;
  return m;
}

StorePersistence::StorePersistence(store::Store& store, std::function<void(std::function<void()>)> post,
                                   std::optional<PagingLimits> paging, std::function<std::int64_t()> now_ms)
    : store_(store), post_(std::move(post)), paging_(paging), now_ms_(std::move(now_ms)) {
  if (!now_ms_) {
    now_ms_ = [] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
          .count();
    };
  }
}

void StorePersistence::touched() {
  dirty_ = true;
  if (flush_posted_) return;
  flush_posted_ = true;
  // Acks, deletes, declares and publishes without confirms need no reply that
  // waits for the disk: they end this turn with a commit_later(), which the
  // store may hold for its write-behind bound (so that a message acked
  // meanwhile is never written); a confirm or tx.commit (after_commit) writes
  // everything before it at once.
  post_([this] {
    flush_posted_ = false;
    if (!dirty_) return;
    dirty_ = false;
    store_.commit_later([](store::Status s) {
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
  store_.put_meta(MetaKind::kExchange, key_of(vhost, x.name()), record::encode(t));
  touched();
}

void StorePersistence::exchange_deleted(std::string_view vhost, const Exchange& x) {
  store_.delete_meta(MetaKind::kExchange, key_of(vhost, x.name()));
  touched();
}

void StorePersistence::queue_declared(std::string_view vhost, Queue& q) {
  q.store_id = next_queue_id_++;
  if (pages(q)) q.enable_paging(*paging_);
  FieldTable t;
  t.set("id", static_cast<std::int64_t>(q.store_id));
  t.set("name", q.name());
  t.set("auto_delete", q.auto_delete());
  t.set("arguments", q.raw_args());
  store_.put_meta(MetaKind::kQueue, key_of(vhost, q.name()), record::encode(t));
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
  store_.put_meta(MetaKind::kBinding, binding_key(vhost, source, b), record::encode(t));
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
    const std::string blob = encode_message_record(*e.msg, now_ms_());
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

store::Status StorePersistence::read_entries(const Queue& q, std::uint64_t from_seq, std::size_t max,
                                            std::vector<QueueEntry>& out) {
  page_entries_.clear();
  store::Status s = store_.load_entries(q.store_id, from_seq, max, page_entries_);
  if (!s.ok() || page_entries_.empty()) return s;
  page_ids_.clear();
  for (const auto& e : page_entries_) page_ids_.push_back(e.message_id);
  s = store_.load_messages(page_ids_, page_blobs_);
  if (!s.ok()) return s;
  for (std::size_t i = 0; i < page_entries_.size(); ++i) {
    const store::QueueEntry& se = page_entries_[i];
    QueueEntry e{se.seq, nullptr, 0, se.delivery_count, se.delivery_count > 0, true};
    if (page_blobs_[i]) {
      try {
        e.msg = decode_message_record(se.message_id, *page_blobs_[i]);
      } catch (const amqp::DecodeError& err) {
        spdlog::error("queue '{}': message {} is corrupt ({}); dropped", q.name(), se.message_id, err.what());
      }
    } else {
      spdlog::error("queue '{}': message {} is missing from the store; dropped", q.name(), se.message_id);
    }
    if (!e.msg) {
      store_.remove_entry(q.store_id, se.seq, se.message_id);
      touched();
    }
    out.push_back(std::move(e));
  }
  return s;
}

bool StorePersistence::load_tail(const Queue& q, std::uint64_t from_seq, std::size_t max,
                                 std::vector<QueueEntry>& out) {
  if (q.store_id == 0) return false;
  store::Status s = read_entries(q, from_seq, max, out);
  if (!s.ok()) spdlog::error("queue '{}': cannot read from the store: {}", q.name(), s.to_string());
  return s.ok();
}

void StorePersistence::tail_dropped(const Queue& q, std::uint64_t from_seq) {
  if (q.store_id == 0) return;
  store_.remove_entries_from(q.store_id, from_seq);
  touched();
}

std::uint64_t StorePersistence::stored_bytes(std::uint64_t queue_id, std::uint64_t from_seq) {
  std::uint64_t bytes = 0;
  for (;;) {
    page_entries_.clear();
    if (!store_.load_entries(queue_id, from_seq, kRestoreBatch, page_entries_).ok() || page_entries_.empty()) break;
    page_ids_.clear();
    for (const auto& e : page_entries_) page_ids_.push_back(e.message_id);
    if (!store_.load_messages(page_ids_, page_blobs_).ok()) break;
    for (const auto& blob : page_blobs_) {
      if (!blob) continue;
      try {
        amqp::Reader r(*blob);
        r.shortstr();
        r.shortstr();
        r.longstr();
        bytes += r.longstr().size();
      } catch (const amqp::DecodeError&) {
      }
    }
    from_seq = page_entries_.back().seq + 1;
  }
  return bytes;
}

void StorePersistence::delayed_added(std::string_view vhost, const Exchange& x, const Message& m, std::int64_t due_ms) {
  std::string blob;
  amqp::Writer w(blob);
  if (vhost != kDefaultVhost) {
    w.shortstr(kDelayedVhostMarker);
    w.longstr(vhost);
  }
  w.shortstr(x.name());
  w.raw(encode_message_record(m, now_ms_()));
  store_.put_delayed(static_cast<std::uint64_t>(due_ms), m.id, blob);
  touched();
}

void StorePersistence::delayed_removed(const Message& m, std::int64_t due_ms) {
  store_.remove_delayed(static_cast<std::uint64_t>(due_ms), m.id);
  touched();
}

void StorePersistence::load_due_delayed(std::int64_t up_to_ms, std::size_t max, std::vector<DueDelayed>& out) {
  delayed_scratch_.clear();
  store::Status s = store_.load_due_delayed(static_cast<std::uint64_t>(std::max<std::int64_t>(up_to_ms, 0)), max,
                                            delayed_scratch_);
  if (!s.ok()) spdlog::error("cannot read delayed messages from the store: {}", s.to_string());
  for (const auto& d : delayed_scratch_) {
    DueDelayed due{static_cast<std::int64_t>(d.due_ms), std::string(kDefaultVhost), {}, nullptr, d.id};
    try {
      amqp::Reader r(d.blob);
      DelayedHeader h = read_delayed_header(r);
      due.vhost = std::move(h.vhost);
      due.exchange = std::move(h.exchange);
      auto msg = decode_message_record(d.id, r.take(r.remaining()));
      msg->stored = false;  // its body is in the delayed record, not yet a message record
      msg->stored_at_ms = 0;
      due.msg = std::move(msg);
    } catch (const amqp::DecodeError& err) {
      spdlog::error("delayed message {} is corrupt ({}); dropped", d.id, err.what());
    }
    out.push_back(std::move(due));
  }
}

std::optional<std::int64_t> StorePersistence::next_delayed_due() {
  std::optional<std::uint64_t> due;
  if (store::Status s = store_.next_delayed_due(due); !s.ok()) {
    spdlog::error("cannot read delayed messages from the store: {}", s.to_string());
    return std::nullopt;
  }
  if (!due) return std::nullopt;
  return static_cast<std::int64_t>(*due);
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
    FieldTable t = record::decode(rec.value);
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
    FieldTable t = record::decode(rec.value);
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
    // A paging queue loads its head window; the rest stays on disk.
    const bool paged = pages(*q);
    if (paged) q->enable_paging(*paging_);
    const std::size_t max_messages = paged ? paging_->messages : SIZE_MAX;
    const std::uint64_t max_bytes = paged ? paging_->bytes : UINT64_MAX;
    std::size_t read = 0, kept = 0;
    std::uint64_t kept_bytes = 0;
    store::Seq from = 0;
    std::vector<QueueEntry> entries;
    while (read < max_messages && kept_bytes < max_bytes) {
      entries.clear();
      store::Status s = read_entries(*q, from, std::min(kRestoreBatch, max_messages - read), entries);
      if (!s.ok()) spdlog::error("queue '{}': cannot read from the store: {}", q->name(), s.to_string());
      if (entries.empty()) break;
      for (QueueEntry& e : entries) {
        ++read;
        from = e.seq + 1;
        if (!e.msg) continue;  // unreadable: logged and removed
        if (!e.msg->persistent()) {  // paged to disk before the restart: lost, as in RabbitMQ
          store_.remove_entry(id, e.seq, e.msg->id);
          touched();
          continue;
        }
        // A message in several queues stays one object.
        MessagePtr& msg = shared[e.msg->id];
        if (!msg) msg = std::move(e.msg);
        kept_bytes += msg->body_size();
        ++kept;
        q->restore(QueueEntry{e.seq, msg, 0, e.delivery_count, false, true});
        if (read >= max_messages || kept_bytes >= max_bytes) break;
      }
    }
    restored_messages += kept;
    if (auto summary = store_.recovery_info().queues.find(id);
        paged && summary != store_.recovery_info().queues.end() && summary->second.entries > read &&
        summary->second.last_seq >= from) {
      const std::size_t rest = summary->second.entries - read;
      // Exact bytes matter only for x-max-length-bytes (a scan of the tail);
      // otherwise the window's average stands in until the tail is read.
      const std::uint64_t bytes = q->args().max_length_bytes ? stored_bytes(id, from)
                                  : kept > 0                 ? kept_bytes / kept * rest
                                                             : 0;
      q->restore_tail(rest, bytes, from, summary->second.last_seq);
      restored_messages += rest;
    }
    vhost.restore_queue(std::move(q));
  }

  records.clear();
  store_.list_meta(MetaKind::kBinding, records);
  std::size_t restored_bindings = 0;
  for (const auto& rec : records) {
    if (!mine(rec)) continue;
    FieldTable t = record::decode(rec.value);
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

  // Delayed messages stay on disk; the vhost reads them when due.
  const std::optional<std::int64_t> next_due = next_delayed_due();
  vhost.restore_delayed_due(next_due);
  spdlog::info("vhost '{}': restored {} exchange(s), {} queue(s), {} binding(s), {} message(s); delayed messages {}",
               vhost.name(), vhost.exchanges().size(), vhost.queues().size(), restored_bindings, restored_messages,
               next_due ? "on disk" : "none");
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
          const auto* idv = record::decode(rec.value).find("id");
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
