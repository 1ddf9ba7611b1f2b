// `minibroker ctl`: rabbitmqctl-style commands over the management HTTP API.
#pragma once

namespace mb::ctl {

// argv[0] is "ctl". Returns the process exit code.
int run(int argc, char** argv);

}  // namespace mb::ctl
