# value.capnp: the JSON-like value every task argument, keyword argument and
# result is made of (null, bool, integer, double, text, bytes, list, map).
# Mirrors mb::task::Value (common/task/include/minibroker/value.hpp) one to one,
# so one task serves both Cap'n Proto and Celery JSON messages.
@0xf08fda9e612dbab1;

$import "/capnp/c++.capnp".namespace("mb::proto");

struct Value {
  union {
    null @0 :Void;
    bool @1 :Bool;
    int @2 :Int64;
    double @3 :Float64;
    text @4 :Text;
    data @5 :Data;
    list @6 :List(Value);
    map @7 :List(Entry);
  }
}

# One map entry; maps keep their keys as text, as JSON objects do.
struct Entry {
  key @0 :Text;
  value @1 :Value;
}
