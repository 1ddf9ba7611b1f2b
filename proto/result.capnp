# result.capnp: the outcome of one task run, published to the caller's reply
# queue with correlation_id = the task's correlation id.
@0xf3fcb338f3dd8589;

$import "/capnp/c++.capnp".namespace("mb::proto");

using import "value.capnp".Value;

enum State {
  pending @0;
  success @1;
  failure @2;
  retry @3;
  revoked @4;
}

struct Result {
  taskId @0 :Text;
  state @1 :State;
  value @2 :Value;        # the return value (SUCCESS)
  errorType @3 :Text;     # e.g. "std::runtime_error", "WorkerLost" (FAILURE/RETRY/REVOKED)
  errorMessage @4 :Text;
  traceback @5 :Text;
  runtime @6 :Float64;    # seconds the task ran
  worker @7 :Text;        # hostname of the worker that ran it
  retries @8 :UInt32;     # retries of the request that produced this result
}
