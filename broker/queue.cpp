// Queue semantics. See queue.hpp.
#include "broker/queue.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>

namespace mb::broker {
namespace {

constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::max();

bool expired(const QueueEntry& e, std::int64_t now_ms) { return e.expires_at < now_ms; }

std::uint64_t saturating_sub(std::uint64_t a, std::uint64_t b) { return a > b ? a - b : 0; }

}  // namespace

std::string_view death_reason_name(DeathReason r) {
  switch (r) {
    case DeathReason::kRejected:
      return "rejected";
    case DeathReason::kExpired:
      return "expired";
    case DeathReason::kMaxLen:
      return "maxlen";
    case DeathReason::kDeliveryLimit:
      return "delivery_limit";
  }
  return "unknown";
}

std::optional<std::string> QueueArgs::parse(const amqp::FieldTable& args, QueueArgs& out) {
  auto integer = [&](std::string_view key, std::int64_t min, std::int64_t max,
                     std::optional<std::int64_t>& dst) -> std::optional<std::string> {
    const amqp::FieldValue* v = args.find(key);
    if (v == nullptr) return std::nullopt;
    auto n = v->as_int();
    if (!n) return "invalid arg '" + std::string(key) + "': not an integer";
    if (*n < min || *n > max) return "invalid arg '" + std::string(key) + "': value out of range (" + std::to_string(*n) + ")";
    dst = *n;
    return std::nullopt;
  };
  auto text = [&](std::string_view key, std::optional<std::string>& dst) -> std::optional<std::string> {
    const amqp::FieldValue* v = args.find(key);
    if (v == nullptr) return std::nullopt;
    auto s = v->as_string();
    if (!s) return "invalid arg '" + std::string(key) + "': not a string";
    dst = std::string(*s);
    return std::nullopt;
  };
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  if (auto e = integer("x-message-ttl", 0, 0xFFFFFFFFLL, out.message_ttl)) return e;
  if (auto e = integer("x-expires", 1, 0xFFFFFFFFLL, out.expires)) return e;
  if (auto e = integer("x-max-length", 0, kMax, out.max_length)) return e;
  if (auto e = integer("x-max-length-bytes", 0, kMax, out.max_length_bytes)) return e;
  if (auto e = integer("x-delivery-limit", 0, kMax, out.delivery_limit)) return e;
  std::optional<std::int64_t> prio;
  if (auto e = integer("x-max-priority", 0, 255, prio)) return e;
  out.max_priority = static_cast<std::uint8_t>(prio.value_or(0));
  if (auto e = text("x-dead-letter-exchange", out.dead_letter_exchange)) return e;
  if (auto e = text("x-dead-letter-routing-key", out.dead_letter_routing_key)) return e;
  if (out.dead_letter_routing_key && !out.dead_letter_exchange)
    return std::string("invalid arg 'x-dead-letter-routing-key': requires x-dead-letter-exchange");
  std::optional<std::string> overflow;
  if (auto e = text("x-overflow", overflow)) return e;
  if (overflow) {
    if (*overflow == "drop-head") out.overflow = Overflow::kDropHead;
    else if (*overflow == "reject-publish") out.overflow = Overflow::kRejectPublish;
    else if (*overflow == "reject-publish-dlx") out.overflow = Overflow::kRejectPublishDlx;
    else return "invalid arg 'x-overflow': unknown value '" + *overflow + "'";
  }
  if (const amqp::FieldValue* v = args.find("x-single-active-consumer")) {
    auto b = v->as_bool();
    if (!b) return std::string("invalid arg 'x-single-active-consumer': not a boolean");
    out.single_active_consumer = *b;
  }
  return std::nullopt;
}

Queue::Queue(std::string name, bool durable, bool exclusive, bool auto_delete, amqp::FieldTable raw_args,
             QueueArgs args, std::uint64_t owner_connection, QueueHooks* hooks)
    : name_(std::move(name)),
      durable_(durable),
      exclusive_(exclusive),
      auto_delete_(auto_delete),
      raw_args_(std::move(raw_args)),
      args_(std::move(args)),
      owner_(owner_connection),
      hooks_(hooks),
      levels_(std::size_t{args_.max_priority} + 1) {}

std::deque<QueueEntry>& Queue::level_for(std::uint8_t priority) {
  return levels_[std::min<std::size_t>(priority, levels_.size() - 1)];
}

std::deque<QueueEntry>* Queue::head_level() {
  for (auto it = levels_.rbegin(); it != levels_.rend(); ++it)
    if (!it->empty()) return &*it;
  return nullptr;
}

QueueEntry Queue::pop_head(std::deque<QueueEntry>& level) {
  QueueEntry e = std::move(level.front());
  level.pop_front();
  --ready_count_;
  ready_bytes_ = saturating_sub(ready_bytes_, e.msg->body_size());
  memory_bytes_ -= e.msg->body_size();
  return e;
}

std::int64_t Queue::expiry_for(const Message& m, std::int64_t now_ms) const {
  std::optional<std::int64_t> ttl = args_.message_ttl;
  if (m.expiration_ms && (!ttl || *m.expiration_ms < *ttl)) ttl = m.expiration_ms;
  return ttl ? now_ms + *ttl : kNever;
}

bool Queue::over_limit(std::size_t extra_count, std::uint64_t extra_bytes) const {
  if (args_.max_length && static_cast<std::int64_t>(ready_count_ + extra_count) > *args_.max_length) return true;
  if (args_.max_length_bytes && static_cast<std::int64_t>(ready_bytes_ + extra_bytes) > *args_.max_length_bytes)
    return true;
  return false;
}

Queue::EnqueueResult Queue::enqueue(MessagePtr msg, std::int64_t now_ms) {
  if (args_.overflow != Overflow::kDropHead && over_limit(1, msg->body_size())) {
    if (args_.overflow == Overflow::kRejectPublishDlx && args_.dead_letter_exchange) {
      QueueEntry e{next_seq_++, std::move(msg), kNever, 0, false};
      hooks_->dead_letter(*this, e, DeathReason::kMaxLen);
    }
    return EnqueueResult::kRejected;
  }
  ++published;
  const std::uint64_t size = msg->body_size();
  QueueEntry e{next_seq_++, msg, expiry_for(*msg, now_ms), 0, false, durable_ && msg->persistent(), now_ms};
  ready_bytes_ += size;
  ++ready_count_;
  if (goes_to_tail(size)) {
    // Written to the store whatever its delivery mode (a transient one is
    // dropped if read back after a restart), held in memory until durable.
    e.stored = true;
    hooks_->enqueued(*this, e);
    ++tail_count_;
    tail_bytes_ += size;
    held_.push_back(std::move(e));
    request_written();
  } else {
    hooks_->enqueued(*this, e);
    if (paging_) cursor_ = e.seq + 1;  // the tail is empty: it starts after this one
    memory_bytes_ += size;
    level_for(msg->priority).push_back(std::move(e));
  }
  dispatch(now_ms);
  enforce_limits(now_ms);
  return EnqueueResult::kAccepted;
}

void Queue::enforce_limits(std::int64_t /*now_ms*/) {
  if (args_.overflow != Overflow::kDropHead) return;
  while (ready_count_ > 0 && over_limit(0, 0)) {
    page_in();
    // drop-head drops the oldest message regardless of priority: the lowest level first.
    auto it = std::find_if(levels_.begin(), levels_.end(), [](const auto& l) { return !l.empty(); });
    if (it == levels_.end()) return;  // the tail could not be read (logged)
    QueueEntry e = pop_head(*it);
    if (args_.dead_letter_exchange) hooks_->dead_letter(*this, e, DeathReason::kMaxLen);
    hooks_->removed(*this, e);
  }
}

Consumer* Queue::pick_consumer() {
  const std::size_t n = consumers_.size();
  if (n == 0) return nullptr;
  if (args_.single_active_consumer) {
    Consumer* c = consumers_.front();
    return c->sink->can_deliver(*c) ? c : nullptr;
  }
  for (std::size_t b = 0; b < n;) {
    std::size_t e = b;
    while (e < n && consumers_[e]->priority == consumers_[b]->priority) ++e;
    const std::size_t g = e - b;
    for (std::size_t i = 0; i < g; ++i) {
      Consumer* c = consumers_[b + (rr_ + i) % g];
      if (c->sink->can_deliver(*c)) {
        rr_ += i + 1;
        return c;
      }
    }
    b = e;
  }
  return nullptr;
}

void Queue::dispatch(std::int64_t now_ms) {
  while (ready_count_ > 0 && !deleted_) {
    page_in();
    std::deque<QueueEntry>* head = head_level();
    if (head == nullptr) return;  // the tail could not be read (logged)
    std::deque<QueueEntry>& level = *head;
    if (expired(level.front(), now_ms)) {
      QueueEntry e = pop_head(level);
      if (args_.dead_letter_exchange) hooks_->dead_letter(*this, e, DeathReason::kExpired);
      hooks_->removed(*this, e);
      continue;
    }
    Consumer* c = pick_consumer();
    if (c == nullptr) return;
    QueueEntry e = pop_head(level);
    ++e.delivery_count;
    ++delivered;
    if (!c->no_ack) {
      ++unacked_count_;
      hooks_->delivered(*this, e);
    }
    c->sink->deliver(*c, std::move(e));
  }
}

std::optional<QueueEntry> Queue::get(std::int64_t now_ms, bool no_ack) {
  touch(now_ms);
  expire(now_ms);
  page_in();
  std::deque<QueueEntry>* level = head_level();
  if (level == nullptr) return std::nullopt;
  QueueEntry e = pop_head(*level);
  ++e.delivery_count;
  ++delivered;
  if (!no_ack) {
    ++unacked_count_;
    hooks_->delivered(*this, e);
  }
  return e;
}

void Queue::requeue(QueueEntry&& e) {
  if (unacked_count_ > 0) --unacked_count_;
  if (deleted_) {
    hooks_->removed(*this, e);
    return;
  }
  e.redelivered = true;
  if (args_.delivery_limit && e.delivery_count > *args_.delivery_limit) {
    if (args_.dead_letter_exchange) hooks_->dead_letter(*this, e, DeathReason::kDeliveryLimit);
    hooks_->removed(*this, e);
    return;
  }
  auto& level = level_for(e.msg->priority);
  auto pos = std::upper_bound(level.begin(), level.end(), e.seq,
                              [](std::uint64_t seq, const QueueEntry& x) { return seq < x.seq; });
  ++ready_count_;
  ready_bytes_ += e.msg->body_size();
  memory_bytes_ += e.msg->body_size();
  level.insert(pos, std::move(e));
  hooks_->wake(*this);
}

void Queue::settle(const QueueEntry& e) {
  if (unacked_count_ > 0) --unacked_count_;
  ++acked;
  hooks_->removed(*this, e);
}

void Queue::discard(const QueueEntry& e) {
  ++acked;
  hooks_->removed(*this, e);
}

void Queue::reject(QueueEntry&& e, bool requeue_it) {
  if (requeue_it) {
    requeue(std::move(e));
    return;
  }
  if (unacked_count_ > 0) --unacked_count_;
  if (args_.dead_letter_exchange && !deleted_) hooks_->dead_letter(*this, e, DeathReason::kRejected);
  hooks_->removed(*this, e);
}

bool Queue::remove_ready(std::uint64_t seq) {
  for (auto& level : levels_) {
    auto it = std::lower_bound(level.begin(), level.end(), seq,
                               [](const QueueEntry& x, std::uint64_t s) { return x.seq < s; });
    if (it == level.end() || it->seq != seq) continue;
    QueueEntry e = std::move(*it);
    level.erase(it);
    --ready_count_;
    ready_bytes_ -= e.msg->body_size();
    hooks_->removed(*this, e);
    return true;
  }
  return false;
}

std::size_t Queue::purge() {
  const std::size_t n = ready_count_;
  for (auto& level : levels_) {
    for (const auto& e : level) hooks_->removed(*this, e);
    level.clear();
  }
  if (tail_count_ > 0) {
    // The tail is every stored entry from cursor_ on, held ones included (their
    // writes were issued before this): one range removal in the store.
    hooks_->tail_dropped(*this, cursor_);
    held_.clear();
    tail_count_ = 0;
    tail_bytes_ = 0;
  }
  ready_count_ = 0;
  ready_bytes_ = 0;
  memory_bytes_ = 0;
  return n;
}

std::int64_t Queue::expire(std::int64_t now_ms) {
  std::int64_t next = 0;
  for (auto& level : levels_) {
    for (;;) {
      page_in();
      if (level.empty() || !expired(level.front(), now_ms)) break;
      QueueEntry e = pop_head(level);
      if (args_.dead_letter_exchange) hooks_->dead_letter(*this, e, DeathReason::kExpired);
      hooks_->removed(*this, e);
    }
    if (!level.empty() && level.front().expires_at != kNever) {
      const std::int64_t at = level.front().expires_at;
      if (next == 0 || at < next) next = at;
    }
  }
  return next;
}

void Queue::restore(QueueEntry e) {
  next_seq_ = std::max(next_seq_, e.seq + 1);
  run_start_seq_ = cursor_ = next_seq_;
  e.redelivered = e.delivery_count > 0;
  e.stored = true;
  // The TTL runs from when the message was first stored (older records: never).
  e.expires_at = e.msg->stored_at_ms > 0 ? expiry_for(*e.msg, e.msg->stored_at_ms) : kNever;
  ready_bytes_ += e.msg->body_size();
  memory_bytes_ += e.msg->body_size();
  ++ready_count_;
  level_for(e.msg->priority).push_back(std::move(e));
}

void Queue::restore_tail(std::size_t count, std::uint64_t bytes, std::uint64_t from_seq, std::uint64_t last_seq) {
  if (!paging_ || count == 0) return;
  tail_count_ = count;
  tail_bytes_ = bytes;
  ready_count_ += count;
  ready_bytes_ += bytes;
  cursor_ = from_seq;
  next_seq_ = std::max(next_seq_, last_seq + 1);
  run_start_seq_ = next_seq_;
}

void Queue::enable_paging(PagingLimits limits) {
  limits.messages = std::max<std::size_t>(limits.messages, 1);
  paging_ = limits;
  cursor_ = next_seq_;
}

bool Queue::goes_to_tail(std::uint64_t body_size) const {
  if (!paging_) return false;
  if (tail_count_ > 0) return true;  // order: behind what is already on disk
  const std::size_t in_memory = levels_[0].size();
  if (in_memory == 0) return false;  // an empty head always takes it, whatever its size
  return in_memory >= paging_->messages || memory_bytes_ + body_size > paging_->bytes;
}

// Refills the in-memory head from the tail once it is below half the window
// (so consumers find messages ready while the next batch is read), up to the
// window, in one store read. Tail entries still held in memory are merged in
// by seq; one that the store already returns too is taken once.
void Queue::page_in() {
  if (tail_count_ == 0) return;
  std::deque<QueueEntry>& mem = levels_[0];
  const std::size_t low_water = std::max<std::size_t>(paging_->messages / 2, 1);
  if (mem.size() >= low_water || memory_bytes_ >= paging_->bytes / 2) return;
  const std::size_t room = paging_->messages > mem.size() ? paging_->messages - mem.size() : 1;
  const std::size_t want = std::min(tail_count_, room);
  page_scratch_.clear();
  const std::uint64_t first_held = held_.empty() ? std::numeric_limits<std::uint64_t>::max() : held_.front().seq;
  if (cursor_ < first_held && !hooks_->load_tail(*this, cursor_, want, page_scratch_)) {
    spdlog::error("queue '{}': cannot read its messages from the store; {} message(s) wait", name_, tail_count_);
    return;
  }
  std::size_t taken = 0, i = 0;
  const std::uint64_t memory_budget = paging_->bytes;
  while (taken < want) {
    const bool have_disk = i < page_scratch_.size();
    if (!have_disk && held_.empty()) break;
    QueueEntry e;
    const bool from_disk = !(!held_.empty() && (!have_disk || held_.front().seq <= page_scratch_[i].seq));
    if (!from_disk) {
      if (have_disk && held_.front().seq == page_scratch_[i].seq) ++i;
      e = std::move(held_.front());
      held_.pop_front();
    } else {
      e = std::move(page_scratch_[i++]);
    }
    ++taken;
    cursor_ = e.seq + 1;
    --tail_count_;
    if (!e.msg) {  // unreadable: the store side logged and removed it
      --ready_count_;
      continue;
    }
    const std::uint64_t size = e.msg->body_size();
    tail_bytes_ = saturating_sub(tail_bytes_, size);
    if (!e.msg->persistent() && e.seq < run_start_seq_) {  // transient, from before a restart
      --ready_count_;
      ready_bytes_ = saturating_sub(ready_bytes_, size);
      hooks_->removed(*this, e);
      continue;
    }
    if (from_disk) {  // TTL from when it was stored; a delivery before a restart marks it redelivered
      e.expires_at = e.msg->stored_at_ms > 0 ? expiry_for(*e.msg, e.msg->stored_at_ms) : kNever;
      e.redelivered = e.delivery_count > 0;
      e.stored = true;
    }
    memory_bytes_ += size;
    mem.push_back(std::move(e));
    if (memory_bytes_ >= memory_budget) break;
  }
  if (taken == 0) {
    // Nothing readable where the tail should be: the counts were wrong (a store
    // that lost writes). Correct them rather than wait forever.
    spdlog::error("queue '{}': {} message(s) expected in the store were not found", name_, tail_count_);
    ready_count_ -= tail_count_;
    ready_bytes_ = saturating_sub(ready_bytes_, tail_bytes_);
    tail_count_ = 0;
    tail_bytes_ = 0;
    cursor_ = next_seq_;
  }
  if (tail_count_ == 0) held_.clear();
}

void Queue::request_written() {
  if (written_pending_) return;
  written_pending_ = true;
  const std::uint64_t up_to = next_seq_ - 1;
  hooks_->when_written(*this, [weak = weak_from_this(), up_to](bool ok) {
    if (auto q = weak.lock()) q->written(up_to, ok);
  });
}

// The store's writes up to up_to_seq completed: held tail entries up to there
// are readable from the store now and leave memory. Failed ones stay held for
// good (they are not on disk); the merge in page_in takes them in order.
void Queue::written(std::uint64_t up_to_seq, bool ok) {
  written_pending_ = false;
  if (!ok) {
    spdlog::error("queue '{}': store write failed; its newest messages stay in memory", name_);
    failed_up_to_seq_ = std::max(failed_up_to_seq_, up_to_seq);
  } else {
    auto by_seq = [](const QueueEntry& x, std::uint64_t seq) { return x.seq < seq; };
    auto first = std::lower_bound(held_.begin(), held_.end(), failed_up_to_seq_ + 1, by_seq);
    auto last = std::lower_bound(first, held_.end(), up_to_seq + 1, by_seq);
    held_.erase(first, last);
  }
  if (!held_.empty() && held_.back().seq > std::max(failed_up_to_seq_, up_to_seq)) request_written();
}

void Queue::add_consumer(Consumer* c) {
  had_consumer_ = true;
  if (args_.single_active_consumer) {
    consumers_.push_back(c);
  } else {
    // After the last of equal or higher priority: a binary search, so that
    // the thousandth consumer of a queue does not visit the other 999.
    auto pos = std::upper_bound(consumers_.begin(), consumers_.end(), c->priority,
                                [](auto priority, const Consumer* x) { return priority > x->priority; });
    consumers_.insert(pos, c);
  }
  hooks_->wake(*this);
}

bool Queue::remove_consumer(Consumer* c) {
  auto it = std::find(consumers_.begin(), consumers_.end(), c);
  if (it == consumers_.end()) return false;
  consumers_.erase(it);
  if (!consumers_.empty()) hooks_->wake(*this);
  return auto_delete_ && had_consumer_ && consumers_.empty();
}

bool Queue::has_exclusive_consumer() const {
  // basic.consume admits an exclusive consumer only to a queue without
  // consumers, and no other while it is there: it can only be alone.
  return consumers_.size() == 1 && consumers_.front()->exclusive;
}

}  // namespace mb::broker
