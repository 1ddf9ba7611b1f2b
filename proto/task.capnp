# task.capnp: the task envelope, the body of a message with content type
# application/x-capnp.  The task name and id are repeated in the AMQP headers
# (`task`, `id`, as Celery's protocol v2 does) so tools can see them without
# decoding the body.  Times are unix epoch seconds as Float64; 0 means "none".
@0xa8b6ea349e520690;

$import "/capnp/c++.capnp".namespace("mb::proto");

using import "value.capnp".Value;
using import "value.capnp".Entry;

struct Task {
  id @0 :Text;
  name @1 :Text;
  args @2 :List(Value);
  kwargs @3 :List(Entry);
  retries @4 :UInt32;
  eta @5 :Float64;             # run not before this time (0: at once)
  expires @6 :Float64;         # do not run after this time (0: never)
  parentId @7 :Text;
  rootId @8 :Text;
  replyTo @9 :Text;            # queue the result goes to (rpc:// convention)
  correlationId @10 :Text;     # = id unless the caller says otherwise
  softTimeLimit @11 :Float64;  # seconds, 0: worker default
  timeLimit @12 :Float64;      # seconds, 0: worker default
  ignoreResult @13 :Bool;
  origin @14 :Text;            # who sent it (producer host/pid)
}
