// `minibroker ctl`: the commands, their output, and the data-directory Admin.
// See ctl.hpp.
#include "broker/ctl.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <stdexcept>
#include <nlohmann/json.hpp>

#include "broker/durable.hpp"
#include "broker/options.hpp"
#include "broker/store/rocksdb_store.hpp"

namespace mb::broker::ctl {
namespace {

using access::Outcome;
using access::Result;

// The data directory opened directly: the broker's own AccessControl over the
// broker's own store, so records are exactly what a running broker writes.
class DataDirAdmin : public Admin {
 public:
  explicit DataDirAdmin(std::unique_ptr<store::RocksDbStore> store)
      : store_(std::move(store)), access_(store_.get()) {}

  store::Status load() { return access_.load(); }

  Result add_user(std::string_view name, std::string_view password, std::vector<std::string> tags) override {
    return access_.add_user(name, password, std::move(tags));
  }
  Result delete_user(std::string_view name) override { return access_.delete_user(name); }
  Result change_password(std::string_view name, std::string_view password) override {
    return access_.change_password(name, password);
  }
  Result set_user_tags(std::string_view name, std::vector<std::string> tags) override {
    return access_.set_user_tags(name, std::move(tags));
  }
  Result add_vhost(std::string_view name) override { return access_.add_vhost(name); }
  Result delete_vhost(std::string_view name) override {
    Result r = access_.delete_vhost(name);
    if (r.ok()) {
      const std::size_t n = purge_vhost_records(*store_, name);
      store_->commit([](store::Status) {});
      spdlog::debug("vhost '{}': {} durable exchange(s) and queue(s) deleted", name, n);
    }
    return r;
  }
  Result set_permissions(std::string_view user, std::string_view vhost, access::PermissionSet p) override {
    return access_.set_permissions(user, vhost, std::move(p));
  }
  Result clear_permissions(std::string_view user, std::string_view vhost) override {
    return access_.clear_permissions(user, vhost);
  }
  std::vector<UserRow> users() override {
    std::vector<UserRow> rows;
    for (const auto& [name, u] : access_.users()) rows.push_back(UserRow{name, u.tags});
    return rows;
  }
  std::vector<std::string> vhosts() override { return {access_.vhosts().begin(), access_.vhosts().end()}; }
  std::vector<access::PermissionEntry> permissions(std::optional<std::string_view> vhost,
                                                   std::optional<std::string_view> user) override {
    return access_.permissions(vhost, user);
  }
  bool finish(std::string& error) override {
    store::Status s = store_->close();  // writes whatever is pending, synced
    if (!s.ok()) error = s.to_string();
    return s.ok();
  }

 private:
  std::unique_ptr<store::RocksDbStore> store_;
  access::AccessControl access_;
};

// The API could not do what was asked for a reason that is not the command's
// (unreachable, login refused, broker busy): the command stops with exit_code.
struct ApiFailure : std::runtime_error {
  ApiFailure(int code, const std::string& what) : std::runtime_error(what), exit_code(code) {}
  int exit_code;
};

// A running broker through its management API: rabbitmqctl's semantics over
// RabbitMQ's endpoints (add-user refuses an existing user, where PUT would
// update it; set-user-tags keeps the password).
class HttpAdmin : public Admin {
 public:
  explicit HttpAdmin(const mb::ctl::HttpSettings& s) : settings_(s), api_(s) {}

  Result add_user(std::string_view name, std::string_view password, std::vector<std::string> tags) override {
    if (find_user(name)) return {Outcome::kAlreadyExists, fmt::format("user '{}' already exists", name)};
    return put("/api/users/" + seg(name), {{"password", std::string(password)}, {"tags", tags}});
  }
  Result delete_user(std::string_view name) override {
    return del("/api/users/" + seg(name), fmt::format("user '{}' does not exist", name));
  }
  Result change_password(std::string_view name, std::string_view password) override {
    std::optional<nlohmann::json> u = find_user(name);
    if (!u) return {Outcome::kNotFound, fmt::format("user '{}' does not exist", name)};
    return put("/api/users/" + seg(name), {{"password", std::string(password)}, {"tags", (*u)["tags"]}});
  }
  Result set_user_tags(std::string_view name, std::vector<std::string> tags) override {
    std::optional<nlohmann::json> u = find_user(name);
    if (!u) return {Outcome::kNotFound, fmt::format("user '{}' does not exist", name)};
    return put("/api/users/" + seg(name), {{"password_hash", (*u)["password_hash"]},
                                            {"hashing_algorithm", (*u)["hashing_algorithm"]},
                                            {"tags", tags}});
  }
  Result add_vhost(std::string_view name) override {
    if (call("GET", "/api/vhosts/" + seg(name)).status == 200)
      return {Outcome::kAlreadyExists, fmt::format("vhost '{}' already exists", name)};
    return put("/api/vhosts/" + seg(name), nlohmann::json::object());
  }
  Result delete_vhost(std::string_view name) override {
    return del("/api/vhosts/" + seg(name), fmt::format("vhost '{}' does not exist", name));
  }
  Result set_permissions(std::string_view user, std::string_view vhost, access::PermissionSet p) override {
    return put("/api/permissions/" + seg(vhost) + "/" + seg(user),
               {{"configure", p.configure}, {"write", p.write}, {"read", p.read}});
  }
  Result clear_permissions(std::string_view user, std::string_view vhost) override {
    Result r = del("/api/permissions/" + seg(vhost) + "/" + seg(user), "");
    if (r.outcome != Outcome::kNotFound) return r;
    // No permissions to clear is fine, as rabbitmqctl; a missing user or vhost is not.
    if (!find_user(user)) return {Outcome::kNotFound, fmt::format("user '{}' does not exist", user)};
    if (call("GET", "/api/vhosts/" + seg(vhost)).status != 200)
      return {Outcome::kNotFound, fmt::format("vhost '{}' does not exist", vhost)};
    return {};
  }
  std::vector<UserRow> users() override {
    std::vector<UserRow> rows;
    for (const auto& u : call("GET", "/api/users").body)
      rows.push_back(UserRow{u.value("name", ""), u.value("tags", std::vector<std::string>{})});
    return rows;
  }
  std::vector<std::string> vhosts() override {
    std::vector<std::string> names;
    for (const auto& v : call("GET", "/api/vhosts").body) names.push_back(v.value("name", ""));
    return names;
  }
  std::vector<access::PermissionEntry> permissions(std::optional<std::string_view> vhost,
                                                   std::optional<std::string_view> user) override {
    const std::string path = vhost ? "/api/vhosts/" + seg(*vhost) + "/permissions"
                                   : "/api/users/" + seg(*user) + "/permissions";
    const auto reply = call("GET", path);
    std::vector<access::PermissionEntry> out;
    if (reply.status != 200) return out;  // an unknown vhost or user has none, as offline
    for (const auto& p : reply.body)
      out.push_back({p.value("user", ""), p.value("vhost", ""),
                     {p.value("configure", ""), p.value("write", ""), p.value("read", "")}});
    return out;
  }
  bool finish(std::string&) override { return true; }  // the broker wrote each change through

 private:
  static std::string seg(std::string_view s) { return mb::ctl::encode_segment(s); }

  // A reply the command can act on (2xx, 400, 404); throws ApiFailure otherwise.
  mb::ctl::ApiClient::Reply call(std::string_view method, const std::string& path,
                                 const nlohmann::json* body = nullptr) {
    std::optional<mb::ctl::ApiClient::Reply> r = api_.request(method, path, body);
    if (!r)
      throw ApiFailure(kExitUnavailable,
                       fmt::format("cannot reach the management API at {} ({})", api_.base_url(), api_.error()));
    if (r->status == 401) {
      const std::string why = r->body.is_object() ? r->body.value("reason", "") : "";
      throw ApiFailure(kExitNoPerm, why.empty() ? fmt::format("login refused for user '{}'", settings_.user)
                                                : fmt::format("user '{}': {}", settings_.user, why));
    }
    if (r->status >= 300 && r->status != 400 && r->status != 404)
      throw ApiFailure(kExitFailed, fmt::format("{} {}: HTTP {} {}", method, path, r->status, r->body.dump()));
    return std::move(*r);
  }
  std::optional<nlohmann::json> find_user(std::string_view name) {
    auto r = call("GET", "/api/users/" + seg(name));
    if (r.status != 200) return std::nullopt;
    return std::move(r.body);
  }
  static Result refused(const mb::ctl::ApiClient::Reply& r, std::string not_found) {
    if (r.status == 404) return {Outcome::kNotFound, std::move(not_found)};
    const std::string reason = r.body.is_object() ? r.body.value("reason", r.body.dump()) : r.body.dump();
    if (reason == "vhost_or_user_not_found") return {Outcome::kNotFound, "user or vhost does not exist"};
    return {Outcome::kInvalid, reason};
  }
  Result put(const std::string& path, const nlohmann::json& body) {
    auto r = call("PUT", path, &body);
    return r.status < 300 ? Result{} : refused(r, "not found");
  }
  Result del(const std::string& path, std::string not_found) {
    auto r = call("DELETE", path);
    return r.status < 300 ? Result{} : refused(r, std::move(not_found));
  }

  mb::ctl::HttpSettings settings_;
  mb::ctl::ApiClient api_;
};

// rabbitmqctl prints lists as "[a, b]" in its table output.
std::string bracketed(const std::vector<std::string>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    out += items[i];
  }
  return out + "]";
}

}  // namespace

std::unique_ptr<Admin> open_data_dir(const std::string& dir, std::string& error, bool& in_use) {
  in_use = false;
  store::RocksDbStoreOptions opts;
  opts.dir = dir;
  std::unique_ptr<store::RocksDbStore> db;
  // Commit callbacks only log; running them on the store's thread is fine here.
  store::Status s = store::RocksDbStore::open(opts, [](std::function<void()> fn) { fn(); }, db);
  if (!s.ok()) {
    in_use = s.code() == store::Status::Code::kInUse;
    error = in_use ? fmt::format("data directory {} is in use by a running minibroker: stop it, or manage users, "
                                 "vhosts and permissions through its HTTP API (/api/users, /api/vhosts, "
                                 "/api/permissions)",
                                 dir)
                   : fmt::format("cannot open data directory {}: {}", dir, s.to_string());
    return nullptr;
  }
  auto admin = std::make_unique<DataDirAdmin>(std::move(db));
  if (s = admin->load(); !s.ok()) {
    error = fmt::format("cannot read users and vhosts in {}: {}", dir, s.to_string());
    return nullptr;
  }
  return admin;
}

std::unique_ptr<Admin> connect_http(const mb::ctl::HttpSettings& settings) {
  return std::make_unique<HttpAdmin>(settings);
}

Ctl::Ctl(CLI::App& app) : data_dir_(kDefaultDataDir) {
  cmd_ = app.add_subcommand("ctl", "manage users, vhosts and permissions, as rabbitmqctl does");
  cmd_->require_subcommand(1);
  cmd_->fallthrough();
  cmd_->add_option("--data-dir", data_dir_,
                   "the broker's data directory, used directly while no broker runs on it (else its HTTP API)")
      ->capture_default_str();
  cmd_->add_option("--host", http_.host, "a running broker's management API host")
      ->capture_default_str();
  cmd_->add_option("--http-port", http_.port, "its management API port")
      ->capture_default_str();
  cmd_->add_option("-u,--user", http_.user, "management API user (an administrator)")
      ->capture_default_str();
  cmd_->add_option("--password", http_.password, "management API password")->capture_default_str();
  cmd_->add_option("-p,--vhost", vhost_, "vhost for the permission commands")->capture_default_str();
  cmd_->add_flag("--json", json_, "print lists as JSON");
  cmd_->add_flag("-q,--quiet", quiet_, "no informational line");
  cmd_->add_flag("-s,--no-table-headers", no_headers_, "no header row in lists");

  // Each command takes `count` positional arguments (at least `count` when variadic).
  auto command = [this](const char* name, const char* help, int count, bool variadic = false) {
    CLI::App* c = cmd_->add_subcommand(name, help);
    c->fallthrough();
    if (count > 0 || variadic)
      c->add_option("args", args_, "arguments, as in the usage above")
          ->expected(count, variadic ? -1 : count)
          ->required();
    return c;
  };
  CLI::App* add_user = command("add-user", "add-user <user> <password> [--tags a,b]", 2);
  add_user->add_option("--tags", tags_, "comma-separated tags (administrator, monitoring, management, ...)");
  command("delete-user", "delete-user <user>: deletes the user and its permissions", 1);
  command("change-password", "change-password <user> <password>", 2);
  command("set-user-tags", "set-user-tags <user> [tag ...]: replaces the user's tags", 1, true);
  command("list-users", "list-users: users and their tags", 0);
  command("add-vhost", "add-vhost <vhost>", 1);
  command("delete-vhost", "delete-vhost <vhost>: deletes it with its exchanges, queues and messages", 1);
  command("list-vhosts", "list-vhosts", 0);
  command("set-permissions", "set-permissions [-p vhost] <user> <configure> <write> <read> (regular expressions)", 4);
  command("clear-permissions", "clear-permissions [-p vhost] <user>", 1);
  command("list-permissions", "list-permissions [-p vhost]: the permissions in one vhost", 0);
  command("list-user-permissions", "list-user-permissions <user>: the user's permissions in every vhost", 1);
}

int Ctl::run() {
  spdlog::set_level(spdlog::level::warn);  // the store's start-up chatter is not the command's output
  std::string error;
  bool in_use = false;
  std::unique_ptr<Admin> admin;
  // HTTP options without --data-dir: straight to the API. Otherwise the data
  // directory, and the API (with those options) when a broker holds it.
  const bool http_asked = cmd_->count("--data-dir") == 0 &&
                          cmd_->count("--host") + cmd_->count("--http-port") + cmd_->count("--user") +
                                  cmd_->count("--password") > 0;
  if (!http_asked) {
    admin = open_data_dir(data_dir_, error, in_use);
    if (!admin && !in_use) {
      std::fprintf(stderr, "Error: %s\n", error.c_str());
      return kExitFailed;
    }
  }
  if (!admin) admin = connect_http(http_);  // a broker holds the data directory, or HTTP was asked for
  try {
    const int rc = execute(*admin);
    if (!admin->finish(error)) {
      std::fprintf(stderr, "Error: writing %s failed: %s\n", data_dir_.c_str(), error.c_str());
      return kExitFailed;
    }
    return rc;
  } catch (const ApiFailure& e) {
    if (in_use)
      std::fprintf(stderr, "Error: data directory %s is in use by a running minibroker, and %s (give its "
                   "--http-port, --user and --password)\n", data_dir_.c_str(), e.what());
    else
      std::fprintf(stderr, "Error: %s\n", e.what());
    return e.exit_code;
  }
}

int Ctl::execute(Admin& admin) {
  const std::string name = cmd_->get_subcommands().front()->get_name();
  const auto& a = args_;
  auto info = [this](const std::string& line) {
    if (!quiet_ && !json_) std::printf("%s\n", line.c_str());
  };
  auto done = [](const Result& r) {
    if (r.ok()) return kExitOk;
    std::fprintf(stderr, "Error: %s\n", r.message.c_str());
    return kExitFailed;
  };
  // Prints rows as a tab-separated table with a header row, or as a JSON array of objects.
  auto table = [this](const std::vector<std::string>& columns, const std::vector<std::vector<nlohmann::json>>& rows) {
    if (json_) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& row : rows) {
        nlohmann::json obj = nlohmann::json::object();
        for (std::size_t i = 0; i < columns.size(); ++i) obj[columns[i]] = row[i];
        out.push_back(std::move(obj));
      }
      std::printf("%s\n", out.dump().c_str());
      return kExitOk;
    }
    if (!no_headers_) std::printf("%s\n", fmt::format("{}", fmt::join(columns, "\t")).c_str());
    for (const auto& row : rows) {
      std::string line;
      for (std::size_t i = 0; i < row.size(); ++i) {
        if (i) line.push_back('\t');
        line += row[i].is_string() ? row[i].get<std::string>() : bracketed(row[i].get<std::vector<std::string>>());
      }
      std::printf("%s\n", line.c_str());
    }
    return kExitOk;
  };

  if (name == "add-user") {
    info(fmt::format("Adding user \"{}\" ...", a[0]));
    return done(admin.add_user(a[0], a[1], access::parse_tags(tags_)));
  }
  if (name == "delete-user") {
    info(fmt::format("Deleting user \"{}\" ...", a[0]));
    return done(admin.delete_user(a[0]));
  }
  if (name == "change-password") {
    info(fmt::format("Changing password for user \"{}\" ...", a[0]));
    return done(admin.change_password(a[0], a[1]));
  }
  if (name == "set-user-tags") {
    std::vector<std::string> tags;
    for (std::size_t i = 1; i < a.size(); ++i)
      for (auto& t : access::parse_tags(a[i])) tags.push_back(std::move(t));
    info(fmt::format("Setting tags for user \"{}\" to [{}] ...", a[0], fmt::join(tags, ", ")));
    return done(admin.set_user_tags(a[0], std::move(tags)));
  }
  if (name == "list-users") {
    info("Listing users ...");
    std::vector<std::vector<nlohmann::json>> rows;
    for (const auto& u : admin.users()) rows.push_back({u.name, u.tags});
    return table({"user", "tags"}, rows);
  }
  if (name == "add-vhost") {
    info(fmt::format("Adding vhost \"{}\" ...", a[0]));
    return done(admin.add_vhost(a[0]));
  }
  if (name == "delete-vhost") {
    info(fmt::format("Deleting vhost \"{}\" ...", a[0]));
    return done(admin.delete_vhost(a[0]));
  }
  if (name == "list-vhosts") {
    info("Listing vhosts ...");
    std::vector<std::vector<nlohmann::json>> rows;
    for (const auto& v : admin.vhosts()) rows.push_back({v});
    return table({"name"}, rows);
  }
  if (name == "set-permissions") {
    info(fmt::format("Setting permissions for user \"{}\" in vhost \"{}\" ...", a[0], vhost_));
    return done(admin.set_permissions(a[0], vhost_, access::PermissionSet{a[1], a[2], a[3]}));
  }
  if (name == "clear-permissions") {
    info(fmt::format("Clearing permissions for user \"{}\" in vhost \"{}\" ...", a[0], vhost_));
    return done(admin.clear_permissions(a[0], vhost_));
  }
  if (name == "list-permissions") {
    info(fmt::format("Listing permissions for vhost \"{}\" ...", vhost_));
    std::vector<std::vector<nlohmann::json>> rows;
    for (const auto& p : admin.permissions(vhost_, std::nullopt))
      rows.push_back({p.user, p.permissions.configure, p.permissions.write, p.permissions.read});
    return table({"user", "configure", "write", "read"}, rows);
  }
  if (name == "list-user-permissions") {
    info(fmt::format("Listing permissions for user \"{}\" ...", a[0]));
    std::vector<std::vector<nlohmann::json>> rows;
    for (const auto& p : admin.permissions(std::nullopt, a[0]))
      rows.push_back({p.vhost, p.permissions.configure, p.permissions.write, p.permissions.read});
    return table({"vhost", "configure", "write", "read"}, rows);
  }
  std::fprintf(stderr, "Error: unknown command %s\n", name.c_str());
  return kExitUsage;
}

}  // namespace mb::broker::ctl
