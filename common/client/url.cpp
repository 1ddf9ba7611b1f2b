// url.cpp: AMQP URI parsing.
#include "common/client/url.hpp"

#include <charconv>
#include <stdexcept>

namespace mb::client {
namespace {

std::string percent_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      int v = 0;
      auto r = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
      if (r.ec != std::errc() || r.ptr != s.data() + i + 3) throw std::invalid_argument("bad percent escape in URL");
      out.push_back(static_cast<char>(v));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

BrokerUrl parse_broker_url(std::string_view url) {
  BrokerUrl u;
  std::string_view rest = url;
  if (rest.starts_with("amqp://")) {
    rest.remove_prefix(7);
  } else if (rest.starts_with("pyamqp://")) {
    rest.remove_prefix(9);
  } else {
    throw std::invalid_argument("broker URL must start with amqp:// : " + std::string(url));
  }
  std::string_view authority = rest.substr(0, rest.find('/'));
  std::string_view path = authority.size() < rest.size() ? rest.substr(authority.size() + 1) : std::string_view{};
  if (auto at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    authority.remove_prefix(at + 1);
    auto colon = userinfo.find(':');
    u.user = percent_decode(userinfo.substr(0, colon));
    if (colon != std::string_view::npos) u.password = percent_decode(userinfo.substr(colon + 1));
  }
  std::string_view host = authority;
  if (!authority.empty() && authority.front() == '[') {  // [::1]:5672
    auto close = authority.find(']');
    if (close == std::string_view::npos) throw std::invalid_argument("bad IPv6 host in URL");
    host = authority.substr(1, close - 1);
    authority.remove_prefix(close + 1);
    if (!authority.empty() && authority.front() != ':') throw std::invalid_argument("bad host in URL");
    authority = authority.empty() ? authority : authority.substr(0);
  } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    authority.remove_prefix(colon);
  } else {
    authority = {};
  }
  if (!authority.empty() && authority.front() == ':') {
    std::string_view p = authority.substr(1);
    unsigned port = 0;
    auto r = std::from_chars(p.data(), p.data() + p.size(), port);
    if (r.ec != std::errc() || r.ptr != p.data() + p.size() || port == 0 || port > 65535)
      throw std::invalid_argument("bad port in broker URL: " + std::string(url));
    u.port = static_cast<std::uint16_t>(port);
  }
  if (!host.empty()) u.host = percent_decode(host);
  // Celery's "//" means vhost "/"; an empty path means the default vhost "/" too.
  auto q = path.find('?');
  if (q != std::string_view::npos) path = path.substr(0, q);
  u.vhost = path.empty() ? "/" : percent_decode(path);
  return u;
}

}  // namespace mb::client
