// Vhost: declare/delete rules, bindings, routing and dead-lettering. See vhost.hpp.
#include "broker/vhost.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>

#include "broker/errors.hpp"
#include "common/amqp/properties.hpp"

namespace mb::broker {
namespace {

constexpr std::string_view kReservedPrefix = "amq.";

std::string_view yes_no(bool b) { return b ? "true" : "false"; }

// The queue arguments RabbitMQ compares on redeclare.
constexpr std::string_view kEquivalenceArgs[] = {
    "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-expires",   "x-max-length",
    "x-max-length-bytes",     "x-max-priority",            "x-message-ttl", "x-overflow",
    "x-queue-type",           "x-single-active-consumer",  "x-delivery-limit"};

bool same_arg(const amqp::FieldValue* a, const amqp::FieldValue* b) {
  if (a == nullptr || b == nullptr) return a == b;
  if (auto x = a->as_int()) return x == b->as_int();
  return *a == *b;
}

}  // namespace

Vhost::Vhost(std::string name, VhostEnv& env) : name_(std::move(name)), env_(env) {
  add_builtin("", ExchangeType::kDirect);
  add_builtin("amq.direct", ExchangeType::kDirect);
  add_builtin("amq.fanout", ExchangeType::kFanout);
  add_builtin("amq.topic", ExchangeType::kTopic);
  add_builtin("amq.headers", ExchangeType::kHeaders);
  add_builtin("amq.match", ExchangeType::kHeaders);
}

Vhost::~Vhost() {
  for (auto& [_, x] : exchanges_) x->clear_bindings();
}

void Vhost::add_builtin(std::string name, ExchangeType type, bool internal) {
  auto x = std::make_shared<Exchange>(name, type, true, false, internal, amqp::FieldTable{});
  exchanges_.emplace(std::move(name), std::move(x));
}

ExchangePtr Vhost::find_exchange(std::string_view name) const {
  auto it = exchanges_.find(name);
  return it == exchanges_.end() ? nullptr : it->second;
}

QueuePtr Vhost::find_queue(std::string_view name) const {
  auto it = queues_.find(name);
  return it == queues_.end() ? nullptr : it->second;
}

ExchangePtr Vhost::exchange_or_404(std::string_view name) const {
  ExchangePtr x = find_exchange(name);
  if (!x) channel_error(ReplyCode::kNotFound, "no exchange '{}' in vhost '{}'", name, name_);
  return x;
}

QueuePtr Vhost::queue_or_404(std::string_view name) const {
  QueuePtr q = find_queue(name);
  if (!q) channel_error(ReplyCode::kNotFound, "no queue '{}' in vhost '{}'", name, name_);
  return q;
}

void Vhost::check_exclusive(const Queue& q, std::uint64_t connection_id) const {
  if (q.exclusive() && q.owner() != connection_id)
    channel_error(ReplyCode::kResourceLocked,
                  "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally "
                  "declared on another connection or the exclusive property value does not match that of the "
                  "original declaration.",
                  q.name(), name_);
}

ExchangePtr Vhost::declare_exchange(const ExchangeDeclare& d) {
  if (d.passive) return exchange_or_404(d.name);
  if (d.name.empty()) channel_error(ReplyCode::kAccessRefused, "operation not permitted on the default exchange");
  static const amqp::FieldTable kNoArgs;
  const amqp::FieldTable& args = d.arguments ? *d.arguments : kNoArgs;

  bool delayed = d.type == "x-delayed-message";
  std::optional<ExchangeType> type;
  if (delayed) {
    const amqp::FieldValue* dt = args.find("x-delayed-type");
    auto s = dt ? dt->as_string() : std::nullopt;
    type = s ? parse_exchange_type(*s) : std::nullopt;
    if (!type)
      channel_error(ReplyCode::kPreconditionFailed,
                    "Invalid argument, 'x-delayed-type' must be an existing exchange type");
  } else {
    type = parse_exchange_type(d.type);
    if (!type) channel_error(ReplyCode::kPreconditionFailed, "invalid exchange type '{}' for exchange '{}' in vhost '{}'", d.type, d.name, name_);
  }

  if (ExchangePtr x = find_exchange(d.name)) {
    auto inequivalent = [&](std::string_view what, std::string_view got, std::string_view have) {
      channel_error(ReplyCode::kPreconditionFailed,
                    "inequivalent arg '{}' for exchange '{}' in vhost '{}': received '{}' but current is '{}'", what,
                    d.name, name_, got, have);
    };
    if (x->type_name() != d.type) inequivalent("type", d.type, x->type_name());
    if (x->durable() != d.durable) inequivalent("durable", yes_no(d.durable), yes_no(x->durable()));
    if (x->auto_delete() != d.auto_delete)
      inequivalent("auto_delete", yes_no(d.auto_delete), yes_no(x->auto_delete()));
    if (x->internal() != d.internal) inequivalent("internal", yes_no(d.internal), yes_no(x->internal()));
    if (!(x->arguments() == args)) inequivalent("arguments", "(new)", "(current)");
    return x;
  }
  // amq.* names are reserved: redeclaring an existing one is fine, creating one is not.
  if (d.name.starts_with(kReservedPrefix))
    channel_error(ReplyCode::kAccessRefused, "exchange name '{}' contains reserved prefix 'amq.*'", d.name);
  auto x = std::make_shared<Exchange>(std::string(d.name), *type, d.durable, d.auto_delete, d.internal, args);
  x->set_delayed(delayed);
  exchanges_.emplace(x->name(), x);
  if (x->durable()) env_.persistence().exchange_declared(name_, *x);
  return x;
}

void Vhost::delete_exchange(std::string_view name, bool if_unused) {
  if (name.empty()) channel_error(ReplyCode::kAccessRefused, "operation not permitted on the default exchange");
  if (name.starts_with(kReservedPrefix))
    channel_error(ReplyCode::kAccessRefused, "exchange name '{}' contains reserved prefix 'amq.*'", name);
  ExchangePtr x = find_exchange(name);
  if (!x) return;  // RabbitMQ: deleting a missing exchange succeeds
  if (if_unused && x->has_bindings())
    channel_error(ReplyCode::kPreconditionFailed, "exchange '{}' in vhost '{}' in use", name, name_);
  remove_exchange(x);
}

void Vhost::remove_exchange(const ExchangePtr& x) {
  exchanges_.erase(x->name());
  Destination self{nullptr, x};
  std::vector<ExchangePtr> sources;
  for (auto& [_, other] : exchanges_) {
    for (const auto& b : other->bindings())
      if (b.destination == self && other->durable() && x->durable())
        env_.persistence().binding_removed(name_, *other, b);
    if (other->unbind_all(self) > 0) sources.push_back(other);
  }
  if (x->durable()) {
    for (const auto& b : x->bindings())
      if (b.destination.queue ? b.destination.queue->durable() : b.destination.exchange->durable())
        env_.persistence().binding_removed(name_, *x, b);
    env_.persistence().exchange_deleted(name_, *x);
  }
  // The loop above skipped x itself (already erased): a self-binding (x -> x) would keep x alive.
  x->clear_bindings();
  for (const auto& s : sources) maybe_auto_delete_exchange(s);
}

void Vhost::maybe_auto_delete_exchange(const ExchangePtr& x) {
  if (x->auto_delete() && !x->has_bindings() && exchanges_.contains(x->name())) remove_exchange(x);
}

std::string Vhost::generate_queue_name() const {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  static std::mt19937_64 rng{std::random_device{}()};
  for (;;) {
    std::string name = "amq.gen-";
    for (int i = 0; i < 22; ++i) name.push_back(kAlphabet[rng() % 64]);
    if (!queues_.contains(name)) return name;
  }
}

std::pair<QueuePtr, bool> Vhost::declare_queue(const QueueDeclare& d) {
  static const amqp::FieldTable kNoArgs;
  const amqp::FieldTable& args = d.arguments ? *d.arguments : kNoArgs;
  const std::int64_t now = env_.now_ms();
  if (!d.name.empty()) {
    if (QueuePtr q = find_queue(d.name)) {
      check_exclusive(*q, d.connection_id);
      q->touch(now);
      if (d.passive) return {q, false};
      if (q->exclusive() != d.exclusive)  // RabbitMQ: 405, the exclusive property does not match
        channel_error(ReplyCode::kResourceLocked,
                      "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally "
                      "declared on another connection or the exclusive property value does not match that of the "
                      "original declaration.",
                      q->name(), name_);
      const bool durable = d.durable && !d.exclusive;
      auto inequivalent = [&](std::string_view what, std::string_view got, std::string_view have) {
        channel_error(ReplyCode::kPreconditionFailed,
                      "inequivalent arg '{}' for queue '{}' in vhost '{}': received '{}' but current is '{}'", what,
                      d.name, name_, got, have);
      };
      if (q->durable() != durable) inequivalent("durable", yes_no(durable), yes_no(q->durable()));
      if (q->auto_delete() != d.auto_delete)
        inequivalent("auto_delete", yes_no(d.auto_delete), yes_no(q->auto_delete()));
      for (std::string_view key : kEquivalenceArgs)
        if (!same_arg(args.find(key), q->raw_args().find(key))) inequivalent(key, "(new value)", "(current value)");
      return {q, false};
    }
    if (d.passive) channel_error(ReplyCode::kNotFound, "no queue '{}' in vhost '{}'", d.name, name_);
    if (d.name.starts_with(kReservedPrefix) && !d.server_named)
      channel_error(ReplyCode::kAccessRefused, "queue name '{}' contains reserved prefix 'amq.*'", d.name);
  } else if (d.passive) {
    channel_error(ReplyCode::kNotFound, "no queue '' in vhost '{}'", name_);
  }
  if (const std::size_t limit = env_.max_queues(); limit != 0 && queues_.size() >= limit)
    channel_error(ReplyCode::kPreconditionFailed, "cannot declare queue '{}': queue limit in vhost '{}' ({}) is reached",
                  d.name, name_, limit);
  QueueArgs parsed;
  if (auto err = QueueArgs::parse(args, parsed))
    channel_error(ReplyCode::kPreconditionFailed, "{} for queue '{}' in vhost '{}'", *err, d.name, name_);
  std::string name = d.name.empty() ? generate_queue_name() : std::string(d.name);
  const bool durable = d.durable && !d.exclusive;  // errata 30: durable+exclusive is transient
  auto q = std::make_shared<Queue>(name, durable, d.exclusive, d.auto_delete, args, std::move(parsed),
                                   d.exclusive ? d.connection_id : 0, this);
  q->touch(now);
  queues_.emplace(std::move(name), q);
  if (q->durable()) env_.persistence().queue_declared(name_, *q);
  // Every queue is bound to the default exchange implicitly (routing by name).
  return {q, true};
}

std::size_t Vhost::delete_queue(std::string_view name, bool if_unused, bool if_empty, std::uint64_t connection_id) {
  QueuePtr q = find_queue(name);
  if (!q) return 0;  // RabbitMQ: deleting a missing queue succeeds with count 0
  check_exclusive(*q, connection_id);
  if (if_unused && q->consumer_count() > 0)
    channel_error(ReplyCode::kPreconditionFailed, "queue '{}' in vhost '{}' in use", name, name_);
  if (if_empty && q->ready_count() > 0)
    channel_error(ReplyCode::kPreconditionFailed, "queue '{}' in vhost '{}' is not empty", name, name_);
  const std::size_t n = q->ready_count();
  remove_queue(q);
  return n;
}

void Vhost::remove_queue(const QueuePtr& q) {
  if (q->deleted()) return;
  q->mark_deleted();
  queues_.erase(q->name());
  Destination d{q, nullptr};
  std::vector<ExchangePtr> sources;
  for (auto& [_, x] : exchanges_) {
    if (x->durable() && q->durable())
      for (const auto& b : x->bindings())
        if (b.destination == d) env_.persistence().binding_removed(name_, *x, b);
    if (x->unbind_all(d) > 0) sources.push_back(x);
  }
  // Cancel consumers; a sink removes the consumer from the queue as it goes.
  std::vector<Consumer*> consumers = q->consumers();
  for (Consumer* c : consumers) c->sink->cancelled_by_broker(*c);
  q->purge();
  if (q->durable()) env_.persistence().queue_deleted(name_, *q);
  for (const auto& s : sources) maybe_auto_delete_exchange(s);
}

// A binding is kept when its source and destination are both durable.
static bool durable_binding(const Exchange& source, const Binding& b) {
  return source.durable() && (b.destination.queue ? b.destination.queue->durable() : b.destination.exchange->durable());
}

void Vhost::add_binding(const ExchangePtr& source, const Binding& b) {
  if (source->bind(b) && durable_binding(*source, b)) env_.persistence().binding_added(name_, *source, b);
}

void Vhost::remove_binding(const ExchangePtr& source, const Binding& b) {
  if (!source->unbind(b)) return;
  if (durable_binding(*source, b)) env_.persistence().binding_removed(name_, *source, b);
  maybe_auto_delete_exchange(source);
}

Binding Vhost::queue_binding(std::string_view queue, std::string_view exchange, std::string_view key,
                             const amqp::FieldTable& args, std::uint64_t connection_id, ExchangePtr& source) const {
  if (exchange.empty()) channel_error(ReplyCode::kAccessRefused, "operation not permitted on the default exchange");
  QueuePtr q = queue_or_404(queue);
  check_exclusive(*q, connection_id);
  source = exchange_or_404(exchange);
  return Binding{Destination{std::move(q), nullptr}, std::string(key), args};
}

Binding Vhost::exchange_binding(std::string_view destination, std::string_view source_name, std::string_view key,
                                const amqp::FieldTable& args, ExchangePtr& source) const {
  if (destination.empty() || source_name.empty())
    channel_error(ReplyCode::kAccessRefused, "operation not permitted on the default exchange");
  ExchangePtr dst = exchange_or_404(destination);
  source = exchange_or_404(source_name);
  return Binding{Destination{nullptr, std::move(dst)}, std::string(key), args};
}

void Vhost::bind_queue(std::string_view queue, std::string_view exchange, std::string_view key,
                       const amqp::FieldTable& args, std::uint64_t connection_id) {
  ExchangePtr source;
  Binding b = queue_binding(queue, exchange, key, args, connection_id, source);
  add_binding(source, b);
}

void Vhost::unbind_queue(std::string_view queue, std::string_view exchange, std::string_view key,
                         const amqp::FieldTable& args, std::uint64_t connection_id) {
  ExchangePtr source;
  Binding b = queue_binding(queue, exchange, key, args, connection_id, source);
  remove_binding(source, b);
}

void Vhost::bind_exchange(std::string_view destination, std::string_view source_name, std::string_view key,
                          const amqp::FieldTable& args) {
  ExchangePtr source;
  Binding b = exchange_binding(destination, source_name, key, args, source);
  add_binding(source, b);
}

void Vhost::unbind_exchange(std::string_view destination, std::string_view source_name, std::string_view key,
                            const amqp::FieldTable& args) {
  ExchangePtr source;
  Binding b = exchange_binding(destination, source_name, key, args, source);
  remove_binding(source, b);
}

const amqp::FieldTable* Vhost::HeaderCache::get() {
  if (!decoded) {
    decoded = true;
    if (msg.has_headers) {
      try {
        headers = amqp::decode_properties(msg.properties()).headers;
      } catch (const amqp::DecodeError&) {
        // Unparseable headers match no headers binding.
      }
    }
  }
  return headers ? &*headers : nullptr;
}

void Vhost::route(const Exchange& x, const Message& msg, std::vector<Queue*>& out) const {
  out.clear();
  HeaderCache message_headers{msg};
  route_from(x, msg, out, message_headers);
}

void Vhost::route_from(const Exchange& x, const Message& msg, std::vector<Queue*>& out,
                       HeaderCache& message_headers) const {
  auto add_queue = [&out](Queue* q) {
    if (std::find(out.begin(), out.end(), q) == out.end()) out.push_back(q);
  };
  if (x.name().empty()) {
    if (auto it = queues_.find(msg.routing_key()); it != queues_.end()) add_queue(it->second.get());
    return;
  }
  // Breadth-first over exchange-to-exchange bindings; visited guards against cycles.
  visited_scratch_.clear();
  visited_scratch_.push_back(&x);
  for (std::size_t i = 0; i < visited_scratch_.size(); ++i) {
    const Exchange* cur = visited_scratch_[i];
    route_scratch_.clear();
    cur->route(msg.routing_key(), cur->needs_headers() ? message_headers.get() : nullptr, route_scratch_);
    auto visit = [this](const Exchange* next) {
      if (std::find(visited_scratch_.begin(), visited_scratch_.end(), next) == visited_scratch_.end())
        visited_scratch_.push_back(next);
    };
    // An exchange whose own bindings matched nothing hands the message to its
    // alternate exchange (RabbitMQ: per exchange, also behind e2e bindings).
    if (route_scratch_.empty() && cur->alternate_exchange()) {
      if (ExchangePtr ae = find_exchange(*cur->alternate_exchange())) visit(ae.get());
    }
    for (const Destination* d : route_scratch_) {
      if (d->queue) {
        add_queue(d->queue.get());
      } else {
        visit(d->exchange.get());
      }
    }
  }
}

PublishOutcome Vhost::publish(const Exchange& x, const MessagePtr& msg) {
  std::vector<Queue*>& out = publish_scratch_;
  route(x, *msg, out);
  PublishOutcome outcome;
  const std::int64_t now = env_.now_ms();
  for (Queue* q : out) {
    if (q->enqueue(msg, now) == Queue::EnqueueResult::kAccepted) {
      ++outcome.routed;
    } else {
      outcome.rejected = true;
    }
  }
  out.clear();
  return outcome;
}

// The queue decides what it stores (persistent messages in a durable queue,
// and whatever a paging queue writes to its tail): QueueEntry::stored.
void Vhost::enqueued(Queue& q, const QueueEntry& e) {
  if (e.stored) env_.persistence().message_enqueued(q, e);
}

void Vhost::delivered(Queue& q, const QueueEntry& e) {
  if (e.stored) env_.persistence().message_delivered(q, e);
}

void Vhost::removed(Queue& q, const QueueEntry& e) {
  if (e.stored) env_.persistence().message_removed(q, e);
}

bool Vhost::load_tail(Queue& q, std::uint64_t from_seq, std::size_t max, std::vector<QueueEntry>& out) {
  return env_.persistence().load_tail(q, from_seq, max, out);
}

void Vhost::tail_dropped(Queue& q, std::uint64_t from_seq) { env_.persistence().tail_dropped(q, from_seq); }

void Vhost::when_written(Queue& /*q*/, std::function<void(bool ok)> done) {
  env_.persistence().after_commit(std::move(done));
}

void Vhost::wake(Queue& q) {
  if (q.wake_pending || q.deleted()) return;
  q.wake_pending = true;
  env_.schedule_dispatch(q.shared_from_this());
}

void Vhost::dead_letter(Queue& q, const QueueEntry& e, DeathReason reason) {
  const auto& dlx_name = q.args().dead_letter_exchange;
  if (!dlx_name) return;
  ExchangePtr dlx = find_exchange(*dlx_name);
  if (!dlx) {
    spdlog::debug("dead-letter exchange '{}' of queue '{}' does not exist; message dropped", *dlx_name, q.name());
    return;
  }
  const Message& old = *e.msg;
  amqp::BasicProperties props;
  try {
    props = amqp::decode_properties(old.properties());
  } catch (const amqp::DecodeError&) {
    return;
  }
  amqp::FieldTable headers = props.headers ? std::move(*props.headers) : amqp::FieldTable{};
  const std::string_view reason_name = death_reason_name(reason);

  amqp::FieldArray deaths;
  if (const auto* xd = headers.find("x-death"))
    if (const auto* arr = xd->as_array()) deaths = *arr;
  std::int64_t count = 1;
  for (auto it = deaths.begin(); it != deaths.end(); ++it) {
    const amqp::FieldTable* t = it->as_table();
    if (t == nullptr) continue;
    const auto* tq = t->find("queue");
    const auto* tr = t->find("reason");
    if (tq && tr && tq->as_string() == std::string_view(q.name()) && tr->as_string() == reason_name) {
      if (const auto* c = t->find("count")) count = c->as_int().value_or(0) + 1;
      deaths.erase(it);
      break;
    }
  }
  amqp::FieldTable death;
  death.set("count", std::int64_t{count});
  death.set("reason", std::string(reason_name));
  death.set("queue", q.name());
  death.set("time", amqp::Timestamp{static_cast<std::uint64_t>(env_.now_ms() / 1000)});
  death.set("exchange", std::string(old.exchange()));
  death.set("routing-keys", amqp::FieldArray{amqp::FieldValue(std::string(old.routing_key()))});
  if (props.expiration) {
    death.set("original-expiration", *props.expiration);
    props.expiration.reset();
  }
  deaths.insert(deaths.begin(), amqp::FieldValue(std::move(death)));
  if (!headers.find("x-first-death-exchange")) {
    headers.set("x-first-death-exchange", std::string(old.exchange()));
    headers.set("x-first-death-queue", q.name());
    headers.set("x-first-death-reason", std::string(reason_name));
  }
  headers.set("x-death", std::move(deaths));
  props.headers = std::move(headers);

  const std::optional<std::string>& dl_key = q.args().dead_letter_routing_key;
  auto msg = Message::create(*dlx_name, dl_key ? std::string_view(*dl_key) : old.routing_key(),
                             amqp::encode_properties(props), old.body());
  msg->id = env_.next_message_id();
  msg->delivery_mode = old.delivery_mode;
  msg->priority = old.priority;
  msg->has_headers = true;

  // RabbitMQ's cycle rule: a message is not dead-lettered into a queue it already
  // died in, unless one of its deaths was a rejection (a client's decision).
  const amqp::FieldArray& history = *props.headers->find("x-death")->as_array();
  bool rejected_before = false;
  for (const auto& d : history)
    if (const auto* t = d.as_table(); t && t->find("reason") && t->find("reason")->as_string() == std::string_view("rejected"))
      rejected_before = true;
  auto died_in = [&history](const std::string& queue) {
    for (const auto& d : history)
      if (const auto* t = d.as_table(); t && t->find("queue") && t->find("queue")->as_string() == std::string_view(queue))
        return true;
    return false;
  };
  std::vector<Queue*> targets;
  route(*dlx, *msg, targets);
  const std::int64_t now = env_.now_ms();
  for (Queue* target : targets) {
    if (!rejected_before && died_in(target->name())) {
      spdlog::debug("dead-letter cycle: message from '{}' not delivered again to '{}'", q.name(), target->name());
      continue;
    }
    target->enqueue(msg, now);
  }
}

namespace {
// Delayed records read from disk per store read, and reads per tick at most:
// a million messages due at once are routed over several ticks, not in one
// long turn of the loop.
constexpr std::size_t kDelayedReadBatch = 1024;
constexpr int kDelayedReadsPerTick = 8;
}  // namespace

void Vhost::delay(const ExchangePtr& x, const MessagePtr& msg, std::int64_t due_ms) {
  const bool durable = x->durable() && msg->persistent();
  if (durable) env_.persistence().delayed_added(name_, *x, *msg, due_ms);
  delayed_.emplace(due_ms, Delayed{x->name(), msg, durable});
  if (durable && env_.persistence().keeps_delayed()) {
    // Until written, a read of the store may not see it: it stays here till then.
    env_.persistence().after_commit([this, alive = std::weak_ptr<int>(alive_), due_ms, id = msg->id](bool ok) {
      if (ok && !alive.expired()) release_delayed(due_ms, id);
    });
  }
}

// A durable delayed message is written: unless it is due at or before what
// was already routed from disk (then it is routed from memory), it leaves memory.
void Vhost::release_delayed(std::int64_t due_ms, std::uint64_t id) {
  if (std::pair(due_ms, id) <= disk_cursor_) return;
  auto [first, last] = delayed_.equal_range(due_ms);
  for (auto it = first; it != last; ++it) {
    if (it->second.durable && it->second.msg->id == id) {
      delayed_.erase(it);
      if (!disk_due_ || due_ms < *disk_due_) disk_due_ = due_ms;
      return;
    }
  }
}

void Vhost::route_due_from_disk(std::int64_t now_ms) {
  bool refresh = false;
  for (int reads = 0; disk_due_ && *disk_due_ <= now_ms && reads < kDelayedReadsPerTick; ++reads) {
    due_scratch_.clear();
    env_.persistence().load_due_delayed(now_ms, kDelayedReadBatch, due_scratch_);
    bool progressed = false;
    for (auto& d : due_scratch_) {
      // The store holds every vhost's delayed messages; an unreadable one is the default vhost's to drop.
      if (d.vhost != name_) continue;
      if (std::pair(d.due_ms, d.id) <= disk_cursor_) continue;  // routed; its removal is not written yet
      disk_cursor_ = {d.due_ms, d.id};
      progressed = true;
      if (!d.msg) {  // unreadable (logged): drop its record
        Message gone;
        gone.id = d.id;
        env_.persistence().delayed_removed(gone, d.due_ms);
        continue;
      }
      env_.persistence().delayed_removed(*d.msg, d.due_ms);
      if (ExchangePtr x = find_exchange(d.exchange)) publish(*x, d.msg);  // exchange deleted: dropped
    }
    refresh = true;
    if (!progressed || due_scratch_.size() < kDelayedReadBatch) break;
  }
  if (refresh) disk_due_ = env_.persistence().next_delayed_due();
}

void Vhost::tick(std::int64_t now_ms) {
  while (!delayed_.empty() && delayed_.begin()->first <= now_ms) {
    auto node = delayed_.extract(delayed_.begin());
    Delayed& d = node.mapped();
    if (d.durable) env_.persistence().delayed_removed(*d.msg, node.key());
    if (ExchangePtr x = find_exchange(d.exchange)) publish(*x, d.msg);  // exchange deleted: dropped
  }
  route_due_from_disk(now_ms);
  std::vector<QueuePtr> expired;
  for (auto& [_, q] : queues_) {
    q->expire(now_ms);
    const auto& exp = q->args().expires;
    if (exp && q->consumer_count() == 0 && now_ms - q->last_used() >= *exp) expired.push_back(q);
  }
  for (const auto& q : expired) {
    spdlog::debug("queue '{}' in vhost '{}' expired (x-expires)", q->name(), name_);
    remove_queue(q);
  }
}

ExchangePtr Vhost::restore_exchange(ExchangePtr x) {
  exchanges_[x->name()] = x;
  return x;
}

QueuePtr Vhost::restore_queue(QueuePtr q) {
  queues_[q->name()] = q;
  return q;
}

}  // namespace mb::broker
