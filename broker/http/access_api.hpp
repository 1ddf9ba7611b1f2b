// The management API's users, vhosts and permissions (RabbitMQ 3.10's
// /api/users, /api/permissions, PUT/DELETE /api/vhosts/{vhost}), as plain
// functions over the broker, like snapshot.hpp: JSON and status codes as
// RabbitMQ answers them (tests/data/mgmt/rabbitmq-3.10-access.json holds its
// captured answers), no HTTP. Every function runs on the broker's loop.
//
// Who may call them is the handler's business (is_administrator()): RabbitMQ
// answers 401 {"error":"not_authorised","reason":"Not administrator user"} to
// anyone else, for reads as well as writes.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "broker/access.hpp"
#include "broker/http/snapshot.hpp"

namespace mb::mgmt {

// The tags that let a user use the management API at all (RabbitMQ's
// "management user"): any of administrator, monitoring, policymaker, management.
bool is_management_user(const broker::access::User& u);
bool is_administrator(const Broker& b, std::string_view user);
// 401 with RabbitMQ's body for a logged-in user without the administrator tag.
Outcome not_administrator();

// {"name", "password_hash" (base64), "hashing_algorithm", "tags": [...], "limits": {}}
json user_json(const broker::access::User& u);
json list_users(const Broker& b);
// null when the user does not exist.
json find_user_json(const Broker& b, std::string_view name);

// PUT /api/users/{name}: {"password": "..."} or {"password_hash": base64 of
// salt ++ SHA-256(salt ++ password), "hashing_algorithm"?}, and "tags" (a
// comma-separated string or a list; required, as RabbitMQ). Neither password
// nor hash: the user cannot log in with a password. 201 created, 204 updated.
Outcome put_user(Broker& b, const std::string& name, const json& body);
// Deletes the user, its permissions, and closes its connections (320).
Outcome delete_user(Broker& b, const std::string& name);

// PUT /api/vhosts/{name}: 201 created (the acting user gets ".*" ".*" ".*" on
// it, as RabbitMQ's management plugin does), 204 when it exists.
Outcome put_vhost(Broker& b, const std::string& name, const std::string& acting_user);
// Deletes the vhost with its entities and permissions; its connections are closed (320).
Outcome delete_vhost(Broker& b, const std::string& name);

// {"user", "vhost", "configure", "write", "read"}
json permission_json(const broker::access::PermissionEntry& p);
// Every permission, or only a vhost's or a user's; null when that vhost or user does not exist.
json list_permissions(const Broker& b, std::optional<std::string_view> vhost, std::optional<std::string_view> user);
// One user's permissions on one vhost; null when there are none.
json find_permission_json(const Broker& b, std::string_view vhost, std::string_view user);
// PUT /api/permissions/{vhost}/{user}: {"configure", "write", "read"}, all required.
Outcome put_permission(Broker& b, const std::string& vhost, const std::string& user, const json& body);
Outcome delete_permission(Broker& b, const std::string& vhost, const std::string& user);

}  // namespace mb::mgmt
