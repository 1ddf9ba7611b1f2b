// Users, vhosts and permissions for the management API. See access_api.hpp.
#include "broker/http/access_api.hpp"

#include <spdlog/spdlog.h>

#include <vector>

#include "broker/broker.hpp"

namespace mb::mgmt {
namespace {

namespace access = broker::access;

Outcome from_result(const access::Result& r, int ok_status) {
  switch (r.outcome) {
    case access::Outcome::kOk: return Outcome{ok_status, {}};
    case access::Outcome::kNotFound: return error_outcome(404, "Not Found");
    case access::Outcome::kAlreadyExists:
    case access::Outcome::kInvalid: return error_outcome(400, r.message);
  }
  return error_outcome(500, r.message);
}

// RabbitMQ splits a tags string on ',' and strips blanks; 3.9+ also takes a list.
std::optional<std::vector<std::string>> tags_from_json(const json& tags) {
  if (tags.is_string()) return access::parse_tags(tags.get<std::string>());
  if (!tags.is_array()) return std::nullopt;
  std::vector<std::string> out;
  for (const json& t : tags) {
    if (!t.is_string()) return std::nullopt;
    for (auto& one : access::parse_tags(t.get<std::string>())) out.push_back(std::move(one));
  }
  return out;
}

const std::string* string_field(const json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && it->is_string() ? it->get_ptr<const std::string*>() : nullptr;
}

}  // namespace

bool is_management_user(const access::User& u) {
  for (const char* t : {"administrator", "monitoring", "policymaker", "management"})
    if (u.has_tag(t)) return true;
  return false;
}

bool is_administrator(const Broker& b, std::string_view user) {
  const access::User* u = b.access().find_user(user);
  return u != nullptr && u->has_tag("administrator");
}

Outcome not_administrator() { return error_outcome(401, "Not administrator user"); }

// ---- users ------------------------------------------------------------------

json user_json(const access::User& u) {
  return json{{"name", u.name},
              {"password_hash", access::encode_base64(u.password_hash)},
              {"hashing_algorithm", access::kHashingAlgorithm},
              {"tags", u.tags},
              {"limits", json::object()}};
}

json list_users(const Broker& b) {
  json out = json::array();
  for (const auto& [_, u] : b.access().users()) out.push_back(user_json(u));
  return out;
}

json find_user_json(const Broker& b, std::string_view name) {
  const access::User* u = b.access().find_user(name);
  return u ? user_json(*u) : json(nullptr);
}

Outcome put_user(Broker& b, const std::string& name, const json& body) {
  if (!body.is_object()) return error_outcome(400, "not_json");
  auto tags_it = body.find("tags");
  if (tags_it == body.end()) return error_outcome(400, "tags_not_present");
  std::optional<std::vector<std::string>> tags = tags_from_json(*tags_it);
  if (!tags) return error_outcome(400, "tags must be a string or a list of strings");
  const bool has_password = body.contains("password"), has_hash = body.contains("password_hash");
  if (has_password && has_hash) return error_outcome(400, "both_password_and_password_hash_are_provided");

  std::string hash;  // empty: no password login
  if (has_password) {
    const std::string* pw = string_field(body, "password");
    if (pw == nullptr) return error_outcome(400, "password must be a string");
    hash = access::hash_password(*pw);
  } else if (has_hash) {
    const std::string* encoded = string_field(body, "password_hash");
    std::optional<std::string> decoded = encoded ? access::decode_base64(*encoded) : std::nullopt;
    if (!decoded) return error_outcome(400, "not_base64");
    if (const std::string* algo = string_field(body, "hashing_algorithm"); algo && *algo != access::kHashingAlgorithm)
      return error_outcome(400, "unsupported hashing_algorithm '" + *algo + "' (only " +
                                    std::string(access::kHashingAlgorithm) + ")");
    // An empty hash is RabbitMQ's passwordless user; anything else must be salt ++ SHA-256.
    if (!decoded->empty() && decoded->size() != access::kSaltSize + access::kDigestSize)
      return error_outcome(400, "password_hash must be 4 bytes of salt followed by a SHA-256 digest");
    hash = std::move(*decoded);
  }

  access::AccessControl& acl = b.access();
  if (acl.find_user(name) == nullptr) {
    access::Result r = acl.add_user_with_hash(name, std::move(hash), std::move(*tags));
    if (r.ok()) spdlog::info("user '{}' added via the management API", name);
    return from_result(r, 201);
  }
  access::Result r = acl.set_user_tags(name, std::move(*tags));
  if (r.ok()) r = acl.set_password_hash(name, std::move(hash));
  return from_result(r, 204);
}

Outcome delete_user(Broker& b, const std::string& name) {
  access::Result r = b.delete_user(name);
  if (r.ok()) spdlog::info("user '{}' deleted via the management API", name);
  return from_result(r, 204);
}

// ---- vhosts -----------------------------------------------------------------

Outcome put_vhost(Broker& b, const std::string& name, const std::string& acting_user) {
  if (b.access().has_vhost(name)) return Outcome{204, {}};
  access::Result r = b.add_vhost(name);
  if (!r.ok()) return from_result(r, 201);
  // The creator can use what it created, as RabbitMQ's management plugin arranges.
  if (b.access().find_user(acting_user) != nullptr)
    b.access().set_permissions(acting_user, name, access::PermissionSet{".*", ".*", ".*"});
  return Outcome{201, {}};
}

Outcome delete_vhost(Broker& b, const std::string& name) { return from_result(b.delete_vhost(name), 204); }

// ---- permissions ------------------------------------------------------------

json permission_json(const access::PermissionEntry& p) {
  return json{{"user", p.user},
              {"vhost", p.vhost},
              {"configure", p.permissions.configure},
              {"write", p.permissions.write},
              {"read", p.permissions.read}};
}

json list_permissions(const Broker& b, std::optional<std::string_view> vhost, std::optional<std::string_view> user) {
  const access::AccessControl& acl = b.access();
  if ((vhost && !acl.has_vhost(*vhost)) || (user && acl.find_user(*user) == nullptr)) return nullptr;
  json out = json::array();
  for (const auto& p : acl.permissions(vhost, user)) out.push_back(permission_json(p));
  return out;
}

json find_permission_json(const Broker& b, std::string_view vhost, std::string_view user) {
  std::vector<access::PermissionEntry> found = b.access().permissions(vhost, user);
  return found.empty() ? json(nullptr) : permission_json(found.front());
}

Outcome put_permission(Broker& b, const std::string& vhost, const std::string& user, const json& body) {
  if (!body.is_object()) return error_outcome(400, "not_json");
  access::PermissionSet p;
  std::vector<std::string> missing;
  const std::pair<const char*, std::string*> fields[] = {
      {"configure", &p.configure}, {"write", &p.write}, {"read", &p.read}};
  for (const auto& [key, field] : fields) {
    if (const std::string* v = string_field(body, key)) *field = *v;
    else missing.push_back(key);
  }
  if (!missing.empty()) {
    // RabbitMQ's text: [{key_missing,write},{key_missing,read}]
    std::string reason = "[";
    for (std::size_t i = 0; i < missing.size(); ++i) {
      if (i > 0) reason += ',';
      reason += "{key_missing,";
      reason += missing[i];
      reason += '}';
    }
    reason += ']';
    return error_outcome(400, reason);
  }
  access::AccessControl& acl = b.access();
  if (acl.find_user(user) == nullptr || !acl.has_vhost(vhost)) return error_outcome(400, "vhost_or_user_not_found");
  const bool existed = acl.grant(user, vhost) != nullptr;
  access::Result r = acl.set_permissions(user, vhost, std::move(p));
  if (r.ok()) spdlog::info("permissions of user '{}' on vhost '{}' set via the management API", user, vhost);
  return from_result(r, existed ? 204 : 201);
}

Outcome delete_permission(Broker& b, const std::string& vhost, const std::string& user) {
  access::AccessControl& acl = b.access();
  if (acl.grant(user, vhost) == nullptr) return error_outcome(404, "Not Found");
  return from_result(acl.clear_permissions(user, vhost), 204);
}

}  // namespace mb::mgmt
