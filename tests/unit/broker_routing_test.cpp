// Unit tests for broker/exchange.hpp: routing as pure functions.
//
// Concerns:
// [x] topic_matches over a table: exact, '*' (exactly one word), '#' (zero or more), "#.#",
//     "#.a", "a.#", "a.#.b", "*.#", empty words ("a..b", "."), the empty key (zero words),
//     multi-word keys, wildcards only as whole words ("a*" is literal), many '#'s
// [x] headers_match over a table: x-match all (default) / any / all-with-x / any-with-x, void
//     binding values match presence, x- keys ignored unless with-x, x-match itself never
//     compared, no headers at all, empty binding args (all: matches, any: does not)
// [x] Exchange::route per type: direct exact key only, fanout everything, topic, headers
// [x] bind is idempotent (same binding twice: one destination); different args or keys are
//     different bindings; unbind/unbind_all re-index the direct map
// [x] exchange-to-exchange destinations are returned as exchanges, not followed (the vhost
//     follows them: broker_vhost_test.cpp)
// [x] parse_exchange_type / exchange_type_name round trip; alternate-exchange argument read
// [ ] typed comparison of header values of different integer widths (RabbitMQ compares the
//     AMQP type too, so strict equality is kept; not asserted here)
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "broker/exchange.hpp"
#include "support/broker_fakes.hpp"
#include "support/doctest_print.hpp"

using namespace mb;  // NOLINT(google-build-using-namespace): test file
using broker::Binding;
using broker::Destination;
using broker::Exchange;
using broker::ExchangeType;
using mb::test::table;

namespace {

struct TopicCase {
  const char* pattern;
  const char* key;
  bool matches;
};

const TopicCase kTopicCases[] = {
    // exact
    {"a", "a", true},
    {"a", "b", false},
    {"a.b.c", "a.b.c", true},
    {"a.b.c", "a.b", false},
    {"a.b", "a.b.c", false},
    {"", "", true},
    {"", "a", false},
    {"a", "", false},
    // '*': exactly one word
    {"*", "a", true},
    {"*", "", false},
    {"*", "a.b", false},
    {"a.*", "a.b", true},
    {"a.*", "a", false},
    {"a.*", "a.b.c", false},
    {"*.b.*", "a.b.c", true},
    {"*.b.*", "a.x.c", false},
    {"*.*", "a.b", true},
    {"*.*", "a", false},
    // '#': zero or more words
    {"#", "", true},
    {"#", "a", true},
    {"#", "a.b.c", true},
    {"#.#", "", true},
    {"#.#", "a.b", true},
    {"#.#.#", "a", true},
    {"a.#", "a", true},
    {"a.#", "a.b", true},
    {"a.#", "a.b.c", true},
    {"a.#", "b.a", false},
    {"a.#", "", false},
    {"#.a", "a", true},
    {"#.a", "b.a", true},
    {"#.a", "x.y.a", true},
    {"#.a", "a.b", false},
    {"#.a", "", false},
    {"a.#.b", "a.b", true},
    {"a.#.b", "a.x.b", true},
    {"a.#.b", "a.x.y.z.b", true},
    {"a.#.b", "a.b.c", false},
    {"a.#.b", "b.a.b", false},
    {"#.b.#", "b", true},
    {"#.b.#", "a.b.c", true},
    {"#.b.#", "a.c", false},
    {"*.#", "a", true},
    {"*.#", "a.b.c", true},
    {"*.#", "", false},
    {"#.*", "a", true},
    {"#.*", "", false},
    {"#.*.*", "a", false},
    {"#.*.*", "a.b", true},
    {"a.*.#", "a", false},
    {"a.*.#", "a.b", true},
    {"a.*.#", "a.b.c.d", true},
    // empty words are words
    {"a..b", "a..b", true},
    {"a.*.b", "a..b", true},
    {"a.#.b", "a..b", true},
    {"*", ".", false},
    {"*.*", ".", true},
    {"#", ".", true},
    {"a.*", "a.", true},
    {"*.a", ".a", true},
    // wildcards only count as whole words
    {"a*", "ab", false},
    {"a*", "a*", true},
    {"#a", "a", false},
    {"a.#b", "a.x", false},
    // multi-word keys typical of Celery / logging
    {"celery.#", "celery.pidbox.worker1", true},
    {"*.error", "kernel.error", true},
    {"*.error", "kernel.disk.error", false},
    {"#.error", "kernel.disk.error", true},
    {"kern.*.critical", "kern.disk.critical", true},
    {"kern.*.critical", "kern.critical", false},
    // many '#': must not blow up, and still match correctly
    {"#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.z", "a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a", false},
    {"#.a.#.a.#.a.#.a.#.z", "a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a", false},
    {"#.a.#.a.#.a.#.a.#.z", "a.a.a.a.a.z", true},
};

Destination queue_dest(const std::string& name) {
  return Destination{std::make_shared<broker::Queue>(name, false, false, false, amqp::FieldTable{}, broker::QueueArgs{},
                                                      0, nullptr),
                     nullptr};
}

std::vector<std::string> routed_names(const Exchange& x, std::string_view key, const amqp::FieldTable* headers = nullptr) {
  std::vector<const Destination*> out;
  x.route(key, headers, out);
  std::vector<std::string> names;
  for (const auto* d : out) names.push_back(d->name());
  std::sort(names.begin(), names.end());
  return names;
}

using Names = std::vector<std::string>;

}  // namespace

TEST_CASE("topic_matches: table") {
  for (const auto& c : kTopicCases) {
    CAPTURE(c.pattern);
    CAPTURE(c.key);
    CHECK(broker::topic_matches(c.pattern, c.key) == c.matches);
  }
}

TEST_CASE("headers_match: table") {
  const amqp::FieldTable headers = table({{"format", "pdf"}, {"type", "report"}, {"x-tenant", "acme"}, {"n", std::int32_t{7}}});
  struct Case {
    const char* what;
    amqp::FieldTable binding;
    const amqp::FieldTable* message;
    bool matches;
  };
  const Case cases[] = {
      {"all (default): every key equal", table({{"format", "pdf"}, {"type", "report"}}), &headers, true},
      {"all: one key differs", table({{"format", "pdf"}, {"type", "log"}}), &headers, false},
      {"all: one key missing", table({{"format", "pdf"}, {"lang", "en"}}), &headers, false},
      {"all explicit", table({{"x-match", "all"}, {"format", "pdf"}}), &headers, true},
      {"all: integer value", table({{"n", std::int32_t{7}}}), &headers, true},
      {"all: integer differs", table({{"n", std::int32_t{8}}}), &headers, false},
      {"all: void value means 'present'", table({{"type", amqp::Void{}}}), &headers, true},
      {"all: void value, key absent", table({{"lang", amqp::Void{}}}), &headers, false},
      {"all: no keys matches everything", table({{"x-match", "all"}}), &headers, true},
      {"all: no keys, no headers", table({}), nullptr, true},
      {"all: keys but no headers", table({{"format", "pdf"}}), nullptr, false},
      {"all: x- keys ignored", table({{"x-match", "all"}, {"format", "pdf"}, {"x-tenant", "other"}}), &headers, true},
      {"any: one of several", table({{"x-match", "any"}, {"format", "doc"}, {"type", "report"}}), &headers, true},
      {"any: none", table({{"x-match", "any"}, {"format", "doc"}, {"type", "log"}}), &headers, false},
      {"any: no keys matches nothing", table({{"x-match", "any"}}), &headers, false},
      {"any: no headers", table({{"x-match", "any"}, {"format", "pdf"}}), nullptr, false},
      {"any: x- keys ignored", table({{"x-match", "any"}, {"x-tenant", "acme"}}), &headers, false},
      {"any: void value", table({{"x-match", "any"}, {"lang", "en"}, {"format", amqp::Void{}}}), &headers, true},
      {"all-with-x: x- keys compared", table({{"x-match", "all-with-x"}, {"format", "pdf"}, {"x-tenant", "acme"}}),
       &headers, true},
      {"all-with-x: x- key differs", table({{"x-match", "all-with-x"}, {"format", "pdf"}, {"x-tenant", "other"}}),
       &headers, false},
      {"any-with-x: only the x- key matches", table({{"x-match", "any-with-x"}, {"format", "doc"}, {"x-tenant", "acme"}}),
       &headers, true},
      {"any-with-x: nothing matches", table({{"x-match", "any-with-x"}, {"x-tenant", "other"}}), &headers, false},
      {"string value vs integer header", table({{"n", "7"}}), &headers, false},
  };
  for (const auto& c : cases) {
    CAPTURE(c.what);
    CHECK(broker::headers_match(c.binding, c.message) == c.matches);
  }
}

TEST_CASE("parse_exchange_type and exchange_type_name round trip") {
  for (auto t : {ExchangeType::kDirect, ExchangeType::kFanout, ExchangeType::kTopic, ExchangeType::kHeaders})
    CHECK(broker::parse_exchange_type(broker::exchange_type_name(t)) == t);
  CHECK_FALSE(broker::parse_exchange_type("x-consistent-hash").has_value());
  CHECK_FALSE(broker::parse_exchange_type("").has_value());
  CHECK_FALSE(broker::parse_exchange_type("Direct").has_value());
}

TEST_CASE("alternate-exchange argument is read at construction") {
  Exchange with("x", ExchangeType::kDirect, false, false, false, table({{"alternate-exchange", "ae"}}));
  REQUIRE(with.alternate_exchange().has_value());
  CHECK(*with.alternate_exchange() == "ae");
  Exchange without("y", ExchangeType::kDirect, false, false, false, {});
  CHECK_FALSE(without.alternate_exchange().has_value());
}

TEST_CASE("direct exchange routes on the exact routing key") {
  Exchange x("d", ExchangeType::kDirect, false, false, false, {});
  auto q1 = queue_dest("q1"), q2 = queue_dest("q2"), q3 = queue_dest("q3");
  CHECK(x.bind(Binding{q1, "info", {}}));
  CHECK(x.bind(Binding{q2, "info", {}}));
  CHECK(x.bind(Binding{q3, "error", {}}));
  CHECK(x.bind(Binding{q3, "", {}}));

  CHECK(routed_names(x, "info") == Names{"q1", "q2"});
  CHECK(routed_names(x, "error") == Names{"q3"});
  CHECK(routed_names(x, "") == Names{"q3"});
  CHECK(routed_names(x, "warn").empty());
  CHECK(routed_names(x, "info.x").empty());
  CHECK(routed_names(x, "*").empty());

  SUBCASE("binding twice is one binding") {
    CHECK_FALSE(x.bind(Binding{q1, "info", {}}));
    CHECK(routed_names(x, "info") == Names{"q1", "q2"});
  }
  SUBCASE("unbind re-indexes the remaining bindings") {
    CHECK(x.unbind(Binding{q1, "info", {}}));
    CHECK_FALSE(x.unbind(Binding{q1, "info", {}}));
    CHECK(routed_names(x, "info") == Names{"q2"});
    CHECK(routed_names(x, "error") == Names{"q3"});
    CHECK(routed_names(x, "") == Names{"q3"});
  }
  SUBCASE("unbind_all removes every binding of a destination") {
    CHECK(x.unbind_all(q3) == 2);
    CHECK(routed_names(x, "error").empty());
    CHECK(routed_names(x, "") .empty());
    CHECK(routed_names(x, "info") == Names{"q1", "q2"});
    CHECK(x.unbind_all(q3) == 0);
  }
  SUBCASE("bindings with different arguments are different bindings") {
    CHECK(x.bind(Binding{q1, "info", table({{"k", "v"}})}));
    CHECK(x.bindings().size() == 5);
    // The exchange may return a destination once per binding; the vhost de-duplicates.
    std::vector<const Destination*> out;
    x.route("info", nullptr, out);
    CHECK(out.size() == 3);
  }
}

TEST_CASE("fanout exchange routes to every binding, whatever the key") {
  Exchange x("f", ExchangeType::kFanout, false, false, false, {});
  CHECK(routed_names(x, "anything").empty());
  x.bind(Binding{queue_dest("q1"), "", {}});
  x.bind(Binding{queue_dest("q2"), "ignored", {}});
  CHECK(routed_names(x, "anything") == Names{"q1", "q2"});
  CHECK(routed_names(x, "") == Names{"q1", "q2"});
}

TEST_CASE("topic exchange routes through topic_matches") {
  Exchange x("t", ExchangeType::kTopic, false, false, false, {});
  x.bind(Binding{queue_dest("all"), "#", {}});
  x.bind(Binding{queue_dest("errors"), "*.error", {}});
  x.bind(Binding{queue_dest("kern"), "kern.#", {}});
  x.bind(Binding{queue_dest("exact"), "kern.error", {}});
  CHECK(routed_names(x, "kern.error") == Names{"all", "errors", "exact", "kern"});
  CHECK(routed_names(x, "app.error") == Names{"all", "errors"});
  CHECK(routed_names(x, "kern") == Names{"all", "kern"});
  CHECK(routed_names(x, "") == Names{"all"});
}

TEST_CASE("headers exchange routes through headers_match, ignoring the routing key") {
  Exchange x("h", ExchangeType::kHeaders, false, false, false, {});
  CHECK(x.needs_headers());
  x.bind(Binding{queue_dest("pdf"), "ignored", table({{"format", "pdf"}})});
  x.bind(Binding{queue_dest("pdf-report"), "", table({{"x-match", "all"}, {"format", "pdf"}, {"type", "report"}})});
  x.bind(Binding{queue_dest("zip-or-log"), "", table({{"x-match", "any"}, {"format", "zip"}, {"type", "log"}})});
  const auto h1 = table({{"format", "pdf"}, {"type", "report"}});
  const auto h2 = table({{"format", "pdf"}, {"type", "log"}});
  const auto h3 = table({{"format", "zip"}});
  CHECK(routed_names(x, "", &h1) == Names{"pdf", "pdf-report"});
  CHECK(routed_names(x, "any key", &h2) == Names{"pdf", "zip-or-log"});
  CHECK(routed_names(x, "", &h3) == Names{"zip-or-log"});
  CHECK(routed_names(x, "", nullptr).empty());
}

TEST_CASE("exchange destinations are returned, not followed") {
  Exchange x("src", ExchangeType::kFanout, false, false, false, {});
  auto dst = std::make_shared<Exchange>("dst", ExchangeType::kFanout, false, false, false, amqp::FieldTable{});
  dst->bind(Binding{queue_dest("behind-dst"), "", {}});
  x.bind(Binding{Destination{nullptr, dst}, "", {}});
  std::vector<const Destination*> out;
  x.route("k", nullptr, out);
  REQUIRE(out.size() == 1);
  CHECK(out[0]->exchange == dst);
  CHECK(out[0]->queue == nullptr);
  CHECK(out[0]->name() == "dst");
}
