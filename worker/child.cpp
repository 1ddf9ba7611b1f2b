// child.cpp: prefork child loop over blocking Cap'n Proto stream framing.
#include "worker/child.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>
#include <unistd.h>

#include "common/task/capnp_codec.hpp"
#include "proto/pool.capnp.h"
#include "worker/executor.hpp"

namespace mb::worker {

void child_main(int fd, const TaskRegistry& registry, const std::string& hostname, unsigned max_tasks) {
  unsigned done = 0;
  try {
    for (;;) {
      capnp::StreamFdMessageReader in(fd, capnp::ReaderOptions{.traversalLimitInWords = 1ull << 30});
      auto cmd = in.getRoot<proto::Command>();
      if (cmd.isStop()) break;
      auto run = cmd.getRun();
      task::TaskMessage msg = task::read_task(run.getTask());
      Execution ex = execute_task(registry, msg, run.getSoftTimeLimit(), hostname);
      capnp::MallocMessageBuilder out;
      auto d = out.initRoot<proto::Event>().initDone();
      d.setSeq(run.getSeq());
      task::write_result(d.initResult(), ex.result);
      d.setRetryCountdown(ex.retry_countdown);
      capnp::writeMessageToFd(fd, out);
      if (max_tasks > 0 && ++done >= max_tasks) break;
    }
  } catch (const kj::Exception&) {
    // The parent closed the socket (or died): nothing left to do.
  }
  _exit(0);
}

}  // namespace mb::worker
