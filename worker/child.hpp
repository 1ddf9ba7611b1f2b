// child.hpp: the loop of one prefork child: read a Command (pool.capnp) from
// the socket, run the task, write an Event back. Never returns.
#pragma once

#include <string>

#include "worker/registry.hpp"

namespace mb::worker {

[[noreturn]] void child_main(int fd, const TaskRegistry& registry, const std::string& hostname,
                             unsigned max_tasks);

}  // namespace mb::worker
