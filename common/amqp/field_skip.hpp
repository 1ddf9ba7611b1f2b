// Stepping over encoded field values without decoding them, for readers that
// look up a few keys of a table on a hot path (the task tracker reads four
// headers of every task message). Implemented in field_table.cpp beside the
// decoder, whose type tags and errors it shares.
#pragma once

#include "common/amqp/bytes.hpp"

namespace mb::amqp {

// Steps over one field value (type tag included): no allocation; nested
// tables and arrays are skipped by their length prefix, not read. Unknown
// type tags and truncation throw DecodeError, as decode_field_value does.
void skip_field_value(Reader& r);

}  // namespace mb::amqp
