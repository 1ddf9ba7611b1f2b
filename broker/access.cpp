// Access control: hashing, permission matching, the registry and its records.
// See access.hpp.
//
// Records (values are AMQP field tables, like the durable entities):
//   kUser        name              -> {name, password_hash (bytes), hashing_algorithm, tags}
//   kVhost       name              -> {name}
//   kPermission  vhost \0 user     -> {user, vhost, configure, write, read}
#include "broker/access.hpp"

#include <spdlog/spdlog.h>
#include <string.h>  // explicit_bzero
#include <sys/random.h>

#include <atomic>
#include <cerrno>
#include <stdexcept>

#include "broker/record.hpp"
#include "broker/sha256.hpp"
#include "common/amqp/bytes.hpp"
#include "common/base64.hpp"
#include "common/amqp/field_table.hpp"

namespace mb::broker::access {
namespace {

using amqp::FieldTable;
using record::str;
using store::MetaKind;

// Grants get process-wide unique serials, so a cached (serial, resource) pair
// can never be confused with a later grant that reuses the same address.
std::atomic<std::uint64_t> g_next_grant_serial{1};

// The usual grant (guest's, most applications'): worth skipping the regex for.
constexpr std::string_view kMatchAll = ".*";

std::string permission_key(std::string_view vhost, std::string_view user) {
  std::string k(vhost);
  k.push_back('\0');
  k.append(user);
  return k;
}

}  // namespace

std::string_view permission_name(Permission p) {
  switch (p) {
    case Permission::kConfigure: return "configure";
    case Permission::kWrite: return "write";
    case Permission::kRead: return "read";
  }
  return "?";
}

// ---- passwords ---------------------------------------------------------------

// SHA-256 and the salt without OpenSSL: its first use initialises the whole
// library (about 2 MiB resident), which a broker without TLS does not need.
std::string hash_password(std::string_view password, std::string_view salt) {
  static_assert(kDigestSize == Sha256::kDigestSize);
  Sha256 h;
  h.update(salt);
  h.update(password);
  Sha256::Digest digest = h.finish();
  std::string out(salt);
  out.append(reinterpret_cast<const char*>(digest.data()), digest.size());
  explicit_bzero(digest.data(), digest.size());
  return out;
}

std::string hash_password(std::string_view password) {
  unsigned char salt[kSaltSize];
  std::size_t got = 0;
  while (got < sizeof salt) {
    const ssize_t n = ::getrandom(salt + got, sizeof salt - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error("no randomness for a password salt");
    got += static_cast<std::size_t>(n);
  }
  return hash_password(password, std::string_view(reinterpret_cast<const char*>(salt), sizeof salt));
}

bool password_matches(std::string_view stored_hash, std::string_view password) {
  if (stored_hash.size() != kSaltSize + kDigestSize) return false;
  const std::string candidate = hash_password(password, stored_hash.substr(0, kSaltSize));
  // Constant time: every byte is compared whatever the first difference.
  unsigned char diff = 0;
  for (std::size_t i = 0; i < candidate.size(); ++i)
    diff |= static_cast<unsigned char>(candidate[i] ^ stored_hash[i]);
  return diff == 0;
}

std::string encode_base64(std::string_view bytes) { return mb::base64_encode(bytes); }

std::optional<std::string> decode_base64(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;  // padded, as RabbitMQ's definitions are
  return mb::base64_decode(text);
}

// ---- entities ----------------------------------------------------------------

bool User::has_tag(std::string_view tag) const {
  for (const auto& t : tags)
    if (t == tag) return true;
  return false;
}

std::string User::tags_text() const {
  std::string out;
  for (const auto& t : tags) {
    if (!out.empty()) out.push_back(',');
    out.append(t);
  }
  return out;
}

std::vector<std::string> parse_tags(std::string_view text) {
  std::vector<std::string> tags;
  std::string current;
  for (char c : text) {
    if (c == ',' || c == ' ' || c == '\t') {
      if (!current.empty()) tags.push_back(std::move(current));
      current.clear();
    } else {
      current.push_back(c);
    }
  }
  if (!current.empty()) tags.push_back(std::move(current));
  return tags;
}

std::optional<Grant> Grant::compile(PermissionSet source, std::string* error) {
  Grant g;
  const std::string* patterns[3] = {&source.configure, &source.write, &source.read};
  for (int i = 0; i < 3; ++i) {
    // RabbitMQ stores "" and matches it as "^$".
    const std::string& p = patterns[i]->empty() ? std::string("^$") : *patterns[i];
    g.match_all_[i] = p == kMatchAll;
    try {
      g.patterns_[i] = std::regex(p, std::regex::ECMAScript | std::regex::optimize);
    } catch (const std::regex_error& e) {
      if (error) *error = "invalid regular expression '" + *patterns[i] + "': " + e.what();
      return std::nullopt;
    }
  }
  g.source_ = std::move(source);
  g.serial_ = g_next_grant_serial.fetch_add(1, std::memory_order_relaxed);
  return g;
}

bool Grant::allows(Permission p, std::string_view resource) const {
  const int i = static_cast<int>(p);
  return match_all_[i] || std::regex_search(resource.begin(), resource.end(), patterns_[i]);
}

// ---- the registry --------------------------------------------------------------

AccessControl::AccessControl(store::Store* store) : store_(store) {}

store::Status AccessControl::load() {
  users_.clear();
  vhosts_.clear();
  grants_.clear();
  ++generation_;
  if (store_ == nullptr) {
    add_vhost(kDefaultVhost);
    add_user(kDefaultUser, kDefaultPassword, {"administrator"});
    set_permissions(kDefaultUser, kDefaultVhost, PermissionSet{".*", ".*", ".*"});
    return store::Status::success();
  }
  std::vector<store::MetaRecord> records;
  try {
    if (store::Status s = store_->list_meta(MetaKind::kUser, records); !s.ok()) return s;
    for (const auto& rec : records) {
      FieldTable t = record::decode(rec.value);
      User u{str(t, "name"), str(t, "password_hash"), parse_tags(str(t, "tags"))};
      if (u.name.empty()) continue;
      users_.emplace(u.name, std::move(u));
    }
    records.clear();
    if (store::Status s = store_->list_meta(MetaKind::kVhost, records); !s.ok()) return s;
    for (const auto& rec : records) vhosts_.insert(str(record::decode(rec.value), "name"));
    records.clear();
    if (store::Status s = store_->list_meta(MetaKind::kPermission, records); !s.ok()) return s;
    for (const auto& rec : records) {
      FieldTable t = record::decode(rec.value);
      std::string user = str(t, "user"), vhost = str(t, "vhost"), error;
      auto g = Grant::compile(PermissionSet{str(t, "configure"), str(t, "write"), str(t, "read")}, &error);
      if (!g) {
        spdlog::error("permissions of user '{}' on vhost '{}' skipped: {}", user, vhost, error);
        continue;
      }
      grants_.emplace(GrantKey{std::move(vhost), std::move(user)}, std::make_shared<const Grant>(std::move(*g)));
    }
  } catch (const amqp::DecodeError& e) {
    return store::Status::corruption(std::string("access control record: ") + e.what());
  }
  if (users_.empty() && vhosts_.empty()) {
    spdlog::info("fresh data directory: creating vhost '{}' and user '{}'", kDefaultVhost, kDefaultUser);
    add_vhost(kDefaultVhost);
    add_user(kDefaultUser, kDefaultPassword, {"administrator"});
    set_permissions(kDefaultUser, kDefaultVhost, PermissionSet{".*", ".*", ".*"});
  }
  return store::Status::success();
}

AuthResult AccessControl::authenticate(std::string_view user, std::string_view password, bool loopback) const {
  const User* u = find_user(user);
  if (u == nullptr) {
    // Hash anyway, so the time taken does not tell which user names exist.
    (void)hash_password(password, std::string_view("\0\0\0\0", kSaltSize));
    return {nullptr, fmt::format("user '{}' - invalid credentials", user)};
  }
  if (!password_matches(u->password_hash, password))
    return {nullptr, fmt::format("user '{}' - invalid credentials", user)};
  if (!loopback && user == kLoopbackOnlyUser)
    return {nullptr, fmt::format("user '{}' can only connect via localhost", user)};
  return {u, {}};
}

Result AccessControl::add_user(std::string_view name, std::string_view password, std::vector<std::string> tags) {
  return add_user_with_hash(name, hash_password(password), std::move(tags));
}

Result AccessControl::add_user_with_hash(std::string_view name, std::string password_hash,
                                         std::vector<std::string> tags) {
  if (name.empty()) return {Outcome::kInvalid, "user name must not be empty"};
  if (users_.contains(name)) return {Outcome::kAlreadyExists, fmt::format("user '{}' already exists", name)};
  User u{std::string(name), std::move(password_hash), std::move(tags)};
  put_user(u);
  users_.emplace(u.name, std::move(u));
  write_through();
  return {};
}

Result AccessControl::delete_user(std::string_view name) {
  auto it = users_.find(name);
  if (it == users_.end()) return {Outcome::kNotFound, fmt::format("user '{}' does not exist", name)};
  for (auto g = grants_.begin(); g != grants_.end();) {
    if (g->first.second == name) {
      erase_permission(g->first.first, g->first.second);
      g = grants_.erase(g);
    } else {
      ++g;
    }
  }
  if (store_) store_->delete_meta(MetaKind::kUser, name);
  users_.erase(it);
  write_through();
  return {};
}

Result AccessControl::change_password(std::string_view name, std::string_view password) {
  return set_password_hash(name, hash_password(password));
}

Result AccessControl::set_password_hash(std::string_view name, std::string password_hash) {
  auto it = users_.find(name);
  if (it == users_.end()) return {Outcome::kNotFound, fmt::format("user '{}' does not exist", name)};
  it->second.password_hash = std::move(password_hash);
  put_user(it->second);
  write_through();
  return {};
}

Result AccessControl::set_user_tags(std::string_view name, std::vector<std::string> tags) {
  auto it = users_.find(name);
  if (it == users_.end()) return {Outcome::kNotFound, fmt::format("user '{}' does not exist", name)};
  it->second.tags = std::move(tags);
  put_user(it->second);
  write_through();
  return {};
}

Result AccessControl::add_vhost(std::string_view name) {
  if (name.empty()) return {Outcome::kInvalid, "vhost name must not be empty"};
  if (vhosts_.contains(name)) return {Outcome::kAlreadyExists, fmt::format("vhost '{}' already exists", name)};
  vhosts_.emplace(name);
  put_vhost(name);
  write_through();
  return {};
}

Result AccessControl::delete_vhost(std::string_view name) {
  auto it = vhosts_.find(name);
  if (it == vhosts_.end()) return {Outcome::kNotFound, fmt::format("vhost '{}' does not exist", name)};
  for (auto g = grants_.begin(); g != grants_.end();) {
    if (g->first.first == name) {
      erase_permission(g->first.first, g->first.second);
      g = grants_.erase(g);
    } else {
      ++g;
    }
  }
  if (store_) store_->delete_meta(MetaKind::kVhost, name);
  vhosts_.erase(it);
  write_through();
  return {};
}

Result AccessControl::set_permissions(std::string_view user, std::string_view vhost, PermissionSet permissions) {
  if (!users_.contains(user)) return {Outcome::kNotFound, fmt::format("user '{}' does not exist", user)};
  if (!vhosts_.contains(vhost)) return {Outcome::kNotFound, fmt::format("vhost '{}' does not exist", vhost)};
  std::string error;
  auto g = Grant::compile(std::move(permissions), &error);
  if (!g) return {Outcome::kInvalid, error};
  put_permission(vhost, user, g->source());
  grants_[GrantKey{std::string(vhost), std::string(user)}] = std::make_shared<const Grant>(std::move(*g));
  write_through();
  return {};
}

Result AccessControl::clear_permissions(std::string_view user, std::string_view vhost) {
  if (!users_.contains(user)) return {Outcome::kNotFound, fmt::format("user '{}' does not exist", user)};
  if (!vhosts_.contains(vhost)) return {Outcome::kNotFound, fmt::format("vhost '{}' does not exist", vhost)};
  auto it = grants_.find(GrantKey{std::string(vhost), std::string(user)});
  if (it != grants_.end()) {
    erase_permission(vhost, user);
    grants_.erase(it);
  }
  write_through();
  return {};
}

const User* AccessControl::find_user(std::string_view name) const {
  auto it = users_.find(name);
  return it == users_.end() ? nullptr : &it->second;
}

std::shared_ptr<const Grant> AccessControl::grant(std::string_view user, std::string_view vhost) const {
  auto it = grants_.find(GrantKey{std::string(vhost), std::string(user)});
  return it == grants_.end() ? nullptr : it->second;
}

std::vector<PermissionEntry> AccessControl::permissions(std::optional<std::string_view> vhost,
                                                        std::optional<std::string_view> user) const {
  std::vector<PermissionEntry> out;
  for (const auto& [key, g] : grants_) {
    if (vhost && key.first != *vhost) continue;
    if (user && key.second != *user) continue;
    out.push_back(PermissionEntry{key.second, key.first, g->source()});
  }
  return out;
}

void AccessControl::put_user(const User& u) {
  if (!store_) return;
  FieldTable t;
  t.set("name", u.name);
  t.set("password_hash", u.password_hash);
  t.set("hashing_algorithm", std::string(kHashingAlgorithm));
  t.set("tags", u.tags_text());
  store_->put_meta(MetaKind::kUser, u.name, record::encode(t));
}

void AccessControl::put_vhost(std::string_view name) {
  if (!store_) return;
  FieldTable t;
  t.set("name", std::string(name));
  store_->put_meta(MetaKind::kVhost, name, record::encode(t));
}

void AccessControl::put_permission(std::string_view vhost, std::string_view user, const PermissionSet& p) {
  if (!store_) return;
  FieldTable t;
  t.set("user", std::string(user));
  t.set("vhost", std::string(vhost));
  t.set("configure", p.configure);
  t.set("write", p.write);
  t.set("read", p.read);
  store_->put_meta(MetaKind::kPermission, permission_key(vhost, user), record::encode(t));
}

void AccessControl::erase_permission(std::string_view vhost, std::string_view user) {
  if (store_) store_->delete_meta(MetaKind::kPermission, permission_key(vhost, user));
}

void AccessControl::write_through() {
  ++generation_;
  if (!store_) return;
  store_->commit([](store::Status s) {
    if (!s.ok()) spdlog::error("access control: store write failed: {}", s.to_string());
  });
}

}  // namespace mb::broker::access
