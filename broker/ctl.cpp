// `minibroker ctl`: the commands, their output, and the data-directory Admin.
// See ctl.hpp.
#include "broker/ctl.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstdio>
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

Ctl::Ctl(CLI::App& app) : data_dir_(kDefaultDataDir) {
  cmd_ = app.add_subcommand("ctl", "manage users, vhosts and permissions, as rabbitmqctl does");
  cmd_->require_subcommand(1);
  cmd_->fallthrough();
  cmd_->add_option("--data-dir", data_dir_, "the broker's data directory (the broker must not be running)")
      ->capture_default_str();
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
  std::unique_ptr<Admin> admin = open_data_dir(data_dir_, error, in_use);
  if (!admin) {
    std::fprintf(stderr, "Error: %s\n", error.c_str());
    return in_use ? kExitUnavailable : kExitFailed;
  }
  const int rc = execute(*admin);
  if (!admin->finish(error)) {
    std::fprintf(stderr, "Error: writing %s failed: %s\n", data_dir_.c_str(), error.c_str());
    return kExitFailed;
  }
  return rc;
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
