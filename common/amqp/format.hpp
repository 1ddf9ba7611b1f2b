// Human-readable renderings of field values and tables, for logs and test failures.
#pragma once

#include <string>

#include "common/amqp/field_table.hpp"

namespace mb::amqp {

std::string to_string(const FieldValue& v);
std::string to_string(const FieldTable& t);

}  // namespace mb::amqp
