// Access control: users (salted password hashes, tags), virtual hosts, and
// per-user per-vhost permissions (configure, write, read regular expressions),
// with RabbitMQ's semantics, kept in the store's metadata.
//
// Pure logic: no sockets, no AMQP. The connection asks authenticate() at
// start-ok and grant() at connection.open; channels ask the Grant before each
// operation (see the table in require_* in channel.cpp). Management (the `ctl`
// command, the HTTP API) calls the add_/delete_/set_ functions, which write
// through to the store at once.
//
// Passwords are hashed as RabbitMQ's rabbit_password_hashing_sha256 does: a
// 4-byte random salt followed by SHA-256(salt ++ password), so hashes can be
// exported to and imported from RabbitMQ definitions (base64 of those bytes).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "broker/store/store.hpp"

namespace mb::broker::access {

inline constexpr std::string_view kDefaultUser = "guest";      // created on a fresh data directory only
inline constexpr std::string_view kDefaultPassword = "guest";
inline constexpr std::string_view kDefaultVhost = "/";
inline constexpr std::string_view kHashingAlgorithm = "rabbit_password_hashing_sha256";
inline constexpr std::size_t kSaltSize = 4;     // rabbit_password:generate_salt/0
inline constexpr std::size_t kDigestSize = 32;  // SHA-256
// Users that may only log in from a loopback address (RabbitMQ's loopback_users default).
inline constexpr std::string_view kLoopbackOnlyUser = kDefaultUser;

enum class Permission : std::uint8_t { kConfigure = 0, kWrite = 1, kRead = 2 };
std::string_view permission_name(Permission p);

// ---- passwords ---------------------------------------------------------------

// salt ++ SHA-256(salt ++ password), with a fresh random salt.
std::string hash_password(std::string_view password);
// The same with a given salt (tests; importing RabbitMQ definitions).
std::string hash_password(std::string_view password, std::string_view salt);
// Constant-time comparison against a stored hash; false for a malformed hash.
bool password_matches(std::string_view stored_hash, std::string_view password);

std::string encode_base64(std::string_view bytes);
std::optional<std::string> decode_base64(std::string_view text);

// ---- entities ----------------------------------------------------------------

struct User {
  std::string name;
  std::string password_hash;  // salt ++ digest; empty: password login disabled
  std::vector<std::string> tags;  // administrator, monitoring, management, ...

  bool has_tag(std::string_view tag) const;
  // "administrator,management", as rabbitmqctl prints and accepts tags.
  std::string tags_text() const;
};

// Splits "a, b,c" or "a b c" into tags (rabbitmqctl accepts both).
std::vector<std::string> parse_tags(std::string_view text);

struct PermissionSet {
  std::string configure, write, read;  // regular expressions, as set
};

// One user's compiled permissions in one vhost. Immutable: a change makes a
// new Grant (with a new serial), so a channel may cache "exchange x was
// writable under grant n".
class Grant {
 public:
  // nullopt (and *error set) when a pattern is not a valid regular expression.
  static std::optional<Grant> compile(PermissionSet source, std::string* error = nullptr);

  // RabbitMQ's rule: the pattern is searched anywhere in the name (re:run, no
  // implicit anchors); an empty pattern means "^$", which no resource matches.
  bool allows(Permission p, std::string_view resource) const;
  const PermissionSet& source() const { return source_; }
  std::uint64_t serial() const { return serial_; }

 private:
  Grant() = default;
  PermissionSet source_;
  std::regex patterns_[3];
  bool match_all_[3] = {false, false, false};  // the pattern is ".*": no regex run needed
  std::uint64_t serial_ = 0;
};

// ---- the registry --------------------------------------------------------------

enum class Outcome : std::uint8_t { kOk, kNotFound, kAlreadyExists, kInvalid };

// What a management call did; message is RabbitMQ-like ("user 'x' already exists").
struct Result {
  Outcome outcome = Outcome::kOk;
  std::string message;
  bool ok() const { return outcome == Outcome::kOk; }
};

struct AuthResult {
  const User* user = nullptr;  // HELD NOT OWNED (the registry's); null when refused
  std::string refusal;         // why, for the log (never sent to the client)
  bool ok() const { return user != nullptr; }
};

struct PermissionEntry {
  std::string user, vhost;
  PermissionSet permissions;
};

class AccessControl {
 public:
  // store may be null: everything then lives in memory only (tests).
  explicit AccessControl(store::Store* store);

  // Reads users, vhosts and permissions from the store. A store that holds
  // no user and no vhost (a fresh data directory) gets the defaults: vhost "/"
  // and guest/guest (administrator, ".*" ".*" ".*" on "/"), written through.
  store::Status load();

  // Checks a login (PLAIN/AMQPLAIN username and password).
  AuthResult authenticate(std::string_view user, std::string_view password, bool loopback) const;

  Result add_user(std::string_view name, std::string_view password, std::vector<std::string> tags = {});
  // The same with a stored hash (salt ++ digest, as hash_password() makes it;
  // RabbitMQ's password_hash decoded); an empty hash disables password login.
  Result add_user_with_hash(std::string_view name, std::string password_hash, std::vector<std::string> tags = {});
  // Removes the user and every permission it held.
  Result delete_user(std::string_view name);
  Result change_password(std::string_view name, std::string_view password);
  // Replaces the stored hash (empty: password login disabled, as RabbitMQ's clear_password).
  Result set_password_hash(std::string_view name, std::string password_hash);
  Result set_user_tags(std::string_view name, std::vector<std::string> tags);
  Result add_vhost(std::string_view name);
  // Removes the vhost and every permission on it (its entities are the broker's business).
  Result delete_vhost(std::string_view name);
  Result set_permissions(std::string_view user, std::string_view vhost, PermissionSet permissions);
  Result clear_permissions(std::string_view user, std::string_view vhost);

  const User* find_user(std::string_view name) const;
  bool has_vhost(std::string_view name) const { return vhosts_.contains(name); }
  // The user's permissions in the vhost; null when it has none.
  std::shared_ptr<const Grant> grant(std::string_view user, std::string_view vhost) const;
  // Changes whenever a user, vhost or permission changes (cheap staleness test).
  std::uint64_t generation() const { return generation_; }

  // In name order, for listings.
  const std::map<std::string, User, std::less<>>& users() const { return users_; }
  const std::set<std::string, std::less<>>& vhosts() const { return vhosts_; }
  // Every permission (vhost, then user order); only one vhost's or user's when given.
  std::vector<PermissionEntry> permissions(std::optional<std::string_view> vhost = std::nullopt,
                                           std::optional<std::string_view> user = std::nullopt) const;

 private:
  using GrantKey = std::pair<std::string, std::string>;  // (vhost, user)

  void put_user(const User& u);
  void put_vhost(std::string_view name);
  void put_permission(std::string_view vhost, std::string_view user, const PermissionSet& p);
  void erase_permission(std::string_view vhost, std::string_view user);
  void write_through();

  store::Store* store_;  // HELD NOT OWNED; null: in memory only
  std::map<std::string, User, std::less<>> users_;
  std::set<std::string, std::less<>> vhosts_;
  std::map<GrantKey, std::shared_ptr<const Grant>> grants_;
  std::uint64_t generation_ = 1;
};

}  // namespace mb::broker::access
