// `minibroker ctl` commands that talk to a running broker's management HTTP
// API (list-queues, list-exchanges, list-bindings, list-connections,
// purge-queue, delete-queue, status). The user, vhost and permission commands
// are broker/ctl.*.
#pragma once

#include <string_view>

namespace mb::ctl {

// Whether the command in `minibroker ctl [options] <command> ...` is one of
// these; argv[0] is "ctl".
bool is_http_command(int argc, char** argv);

// argv[0] is "ctl". Returns the process exit code.
int run(int argc, char** argv);

}  // namespace mb::ctl
