// bench_tasks.cpp: the task library of the tasks benchmark (scenario 8):
// bench.add, the same trivial task the Python Celery worker runs in
// bench/celery_bench.py, so both workers serve the same task name.
#include <cstdint>

#include <minibroker/task.hpp>

namespace {
std::int64_t add(std::int64_t x, std::int64_t y) { return x + y; }
}  // namespace

MB_TASK("bench.add", add, "x", "y");
