// spdlog's compiled part, built into our binaries instead of linking Debian's
// libspdlog.so: a shared spdlog maps 0.5 MiB into every process (most of it its
// relocations and symbol tables, touched at start-up), for the few functions we
// use: the default logger, levels and the pattern. Its headers with
// SPDLOG_COMPILED_LIB declare those functions; their definitions are the -inl.h
// files below, compiled once here. Every target of this project logs through
// this copy (mb_spdlog in the top-level CMakeLists.txt): two spdlogs in one
// process would mean two default loggers.
#ifndef SPDLOG_COMPILED_LIB
#error "mb_spdlog is built with SPDLOG_COMPILED_LIB"
#endif

#include <spdlog/common-inl.h>
#include <spdlog/details/backtracer-inl.h>
#include <spdlog/details/log_msg-inl.h>
#include <spdlog/details/log_msg_buffer-inl.h>
#include <spdlog/details/os-inl.h>
#include <spdlog/details/periodic_worker-inl.h>
#include <spdlog/details/registry-inl.h>
#include <spdlog/logger-inl.h>
#include <spdlog/pattern_formatter-inl.h>
#include <spdlog/sinks/ansicolor_sink-inl.h>
#include <spdlog/sinks/base_sink-inl.h>
#include <spdlog/sinks/sink-inl.h>
#include <spdlog/spdlog-inl.h>

#include <mutex>

// The console sink of the default logger (registry-inl.h) and the mutexes it
// is used with.
template class spdlog::sinks::ansicolor_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::ansicolor_stdout_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::base_sink<std::mutex>;
