// Exchange types and matching. See exchange.hpp.
#include "broker/exchange.hpp"

#include <algorithm>

namespace mb::broker {

std::optional<ExchangeType> parse_exchange_type(std::string_view name) {
  if (name == "direct") return ExchangeType::kDirect;
  if (name == "fanout") return ExchangeType::kFanout;
  if (name == "topic") return ExchangeType::kTopic;
  if (name == "headers") return ExchangeType::kHeaders;
  return std::nullopt;
}

std::string_view exchange_type_name(ExchangeType t) {
  switch (t) {
    case ExchangeType::kDirect:
      return "direct";
    case ExchangeType::kFanout:
      return "fanout";
    case ExchangeType::kTopic:
      return "topic";
    case ExchangeType::kHeaders:
      return "headers";
  }
  return "direct";
}

const std::string& Destination::name() const { return queue ? queue->name() : exchange->name(); }

namespace {

// Matches pattern words [pi..] against key words [ki..]; words are split lazily.
bool match_words(const std::vector<std::string_view>& p, std::size_t pi, const std::vector<std::string_view>& k,
                 std::size_t ki) {
  while (pi < p.size()) {
    if (p[pi] == "#") {
      // Collapse consecutive '#'; then try every split point.
      while (pi + 1 < p.size() && p[pi + 1] == "#") ++pi;
      if (pi + 1 == p.size()) return true;
      for (std::size_t j = ki; j <= k.size(); ++j)
        if (match_words(p, pi + 1, k, j)) return true;
      return false;
    }
    if (ki == k.size()) return false;
    if (p[pi] != "*" && p[pi] != k[ki]) return false;
    ++pi;
    ++ki;
  }
  return ki == k.size();
}

std::vector<std::string_view> split_words(std::string_view s) {
  std::vector<std::string_view> words;
  std::size_t start = 0;
  for (;;) {
    std::size_t dot = s.find('.', start);
    words.push_back(s.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return words;
}

}  // namespace

bool topic_matches(std::string_view pattern, std::string_view routing_key) {
  if (pattern == "#") return true;
  if (pattern.find_first_of("*#") == std::string_view::npos) return pattern == routing_key;
  const auto p = split_words(pattern);
  const auto k = routing_key.empty() ? std::vector<std::string_view>{} : split_words(routing_key);
  return match_words(p, 0, k, 0);
}

bool headers_match(const amqp::FieldTable& binding_args, const amqp::FieldTable* message_headers) {
  std::string_view mode = "all";
  if (const auto* m = binding_args.find("x-match"))
    if (auto s = m->as_string()) mode = *s;
  const bool any = mode == "any" || mode == "any-with-x";
  const bool with_x = mode == "all-with-x" || mode == "any-with-x";
  bool matched_any = false;
  for (const auto& e : binding_args.entries) {
    if (!with_x && e.name.starts_with("x-")) continue;
    if (e.name == "x-match") continue;
    const amqp::FieldValue* v = message_headers ? message_headers->find(e.name) : nullptr;
    const bool ok = v != nullptr && (std::holds_alternative<amqp::Void>(e.value.v) || *v == e.value);
    if (any && ok) return true;
    if (!any && !ok) return false;
    matched_any = matched_any || ok;
  }
  return !any;
}

Exchange::Exchange(std::string name, ExchangeType type, bool durable, bool auto_delete, bool internal,
                   amqp::FieldTable arguments)
    : name_(std::move(name)),
      type_(type),
      durable_(durable),
      auto_delete_(auto_delete),
      internal_(internal),
      arguments_(std::move(arguments)) {
  if (const auto* ae = arguments_.find("alternate-exchange"))
    if (auto s = ae->as_string()) alternate_ = std::string(*s);
}

std::string_view Exchange::type_name() const {
  return delayed_ ? std::string_view("x-delayed-message") : exchange_type_name(type_);
}

void Exchange::reindex() {
  direct_.clear();
  if (type_ != ExchangeType::kDirect) return;
  for (std::size_t i = 0; i < bindings_.size(); ++i) direct_[bindings_[i].routing_key].push_back(i);
}

bool Exchange::bind(Binding b) {
  if (std::find(bindings_.begin(), bindings_.end(), b) != bindings_.end()) return false;
  if (type_ == ExchangeType::kDirect) direct_[b.routing_key].push_back(bindings_.size());
  bindings_.push_back(std::move(b));
  return true;
}

bool Exchange::unbind(const Binding& b) {
  auto it = std::find(bindings_.begin(), bindings_.end(), b);
  if (it == bindings_.end()) return false;
  bindings_.erase(it);
  reindex();
  return true;
}

std::size_t Exchange::unbind_all(const Destination& d) {
  const std::size_t before = bindings_.size();
  std::erase_if(bindings_, [&](const Binding& b) { return b.destination == d; });
  if (bindings_.size() != before) reindex();
  return before - bindings_.size();
}

void Exchange::clear_bindings() {
  bindings_.clear();
  direct_.clear();
}

void Exchange::route(std::string_view routing_key, const amqp::FieldTable* headers,
                     std::vector<const Destination*>& out) const {
  switch (type_) {
    case ExchangeType::kDirect: {
      auto it = direct_.find(routing_key);
      if (it != direct_.end())
        for (std::size_t i : it->second) out.push_back(&bindings_[i].destination);
      return;
    }
    case ExchangeType::kFanout:
      for (const auto& b : bindings_) out.push_back(&b.destination);
      return;
    case ExchangeType::kTopic:
      for (const auto& b : bindings_)
        if (topic_matches(b.routing_key, routing_key)) out.push_back(&b.destination);
      return;
    case ExchangeType::kHeaders:
      for (const auto& b : bindings_)
        if (headers_match(b.arguments, headers)) out.push_back(&b.destination);
      return;
  }
}

}  // namespace mb::broker
