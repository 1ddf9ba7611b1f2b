# pool.capnp: messages between the worker's parent process and its prefork
# children over a socketpair, framed with Cap'n Proto's stream framing.
@0xcfa3f81fed9c04bd;

$import "/capnp/c++.capnp".namespace("mb::proto");

using import "task.capnp".Task;
using import "result.capnp".Result;

# parent -> child
struct Command {
  union {
    run @0 :RunTask;
    stop @1 :Void;       # finish and exit 0
  }
}

struct RunTask {
  seq @0 :UInt64;              # parent's job number, echoed in Done
  task @1 :Task;
  softTimeLimit @2 :Float64;   # effective soft limit in seconds (0: none)
}

# child -> parent
struct Event {
  union {
    ready @0 :UInt32;    # child pid, sent once after start
    done @1 :Done;
  }
}

struct Done {
  seq @0 :UInt64;
  result @1 :Result;
  retryCountdown @2 :Float64;  # state RETRY: seconds until the retry is due
  retryMax @3 :Int32;          # state RETRY: max retries the task allows (-1: unlimited)
}
