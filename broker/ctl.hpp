// `minibroker ctl`: users, vhosts and permissions from the command line, in
// the manner of rabbitmqctl (same verbs with dashes, tab-separated output with
// a header row, or --json).
//
// The commands act on an Admin: the data directory itself while no broker
// holds it (RocksDB's LOCK says so), or a running broker's management HTTP
// API (/api/users, /api/vhosts, /api/permissions) when one does. Without
// --data-dir, any of --host, --http-port, --user, --password means the API.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/access.hpp"
#include "broker/mgmt_ctl.hpp"

namespace mb::broker::ctl {

// What the commands act on.
class Admin {
 public:
  virtual ~Admin() = default;
  virtual access::Result add_user(std::string_view name, std::string_view password, std::vector<std::string> tags) = 0;
  virtual access::Result delete_user(std::string_view name) = 0;
  virtual access::Result change_password(std::string_view name, std::string_view password) = 0;
  virtual access::Result set_user_tags(std::string_view name, std::vector<std::string> tags) = 0;
  virtual access::Result add_vhost(std::string_view name) = 0;
  // Also deletes the vhost's exchanges, queues and messages.
  virtual access::Result delete_vhost(std::string_view name) = 0;
  virtual access::Result set_permissions(std::string_view user, std::string_view vhost,
                                         access::PermissionSet permissions) = 0;
  virtual access::Result clear_permissions(std::string_view user, std::string_view vhost) = 0;

  struct UserRow {
    std::string name;
    std::vector<std::string> tags;
  };
  virtual std::vector<UserRow> users() = 0;
  virtual std::vector<std::string> vhosts() = 0;
  virtual std::vector<access::PermissionEntry> permissions(std::optional<std::string_view> vhost,
                                                           std::optional<std::string_view> user) = 0;
  // Makes every change durable; false (and error set) when writing failed.
  virtual bool finish(std::string& error) = 0;
};

// The data directory, opened directly. Null with `error` set when it cannot be
// opened; in_use is set when a running broker holds it.
std::unique_ptr<Admin> open_data_dir(const std::string& dir, std::string& error, bool& in_use);
// A running broker, through its management API (its user must be an administrator).
std::unique_ptr<Admin> connect_http(const mb::ctl::HttpSettings& settings);

// Exit codes (sysexits.h, as rabbitmqctl uses them).
inline constexpr int kExitOk = 0;
inline constexpr int kExitUsage = 64;        // EX_USAGE
inline constexpr int kExitUnavailable = 69;  // EX_UNAVAILABLE: the broker holds the data directory
inline constexpr int kExitFailed = 70;       // EX_SOFTWARE: the command was refused (exists, not found, ...)
inline constexpr int kExitNoPerm = 77;       // EX_NOPERM: the management API refused the login

// Adds the `ctl` subcommand and its commands to app. After parsing, if the
// returned subcommand was given, run() executes it and returns the exit code.
class Ctl {
 public:
  explicit Ctl(CLI::App& app);
  bool selected() const { return cmd_->parsed(); }
  int run();

 private:
  int execute(Admin& admin);

  CLI::App* cmd_;  // HELD NOT OWNED: the app owns its subcommands
  std::string data_dir_;
  mb::ctl::HttpSettings http_;
  bool json_ = false;
  bool quiet_ = false;
  bool no_headers_ = false;
  std::string vhost_ = std::string(access::kDefaultVhost);
  std::vector<std::string> args_;  // positional arguments of the chosen command
  std::string tags_;
};

}  // namespace mb::broker::ctl
