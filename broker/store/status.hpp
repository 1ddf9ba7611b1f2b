// Status: the result of a store operation, modelled on rocksdb::Status but
// free of RocksDB types. The normal path never throws: every failure (a full
// disk, a data directory in use, a corrupt file) is a Status the broker acts
// on (nack the publishes, exit with a message), never an exception or a crash.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

namespace mb::store {

class Status {
 public:
  enum class Code : std::uint8_t {
    kOk,
    kNotFound,         // no record under that key (a normal outcome of reads)
    kInUse,            // the data directory is locked by another process
    kIoError,          // the disk failed us: write error, no space, cannot create
    kCorruption,       // the files are not what RocksDB expects
    kInvalidArgument,  // the caller asked for something meaningless
    kClosed,           // the store was closed
  };

  Status() = default;  // success

  static Status success() { return {}; }
  static Status not_found(std::string message) { return {Code::kNotFound, std::move(message)}; }
  static Status in_use(std::string message) { return {Code::kInUse, std::move(message)}; }
  static Status io_error(std::string message) { return {Code::kIoError, std::move(message)}; }
  static Status corruption(std::string message) { return {Code::kCorruption, std::move(message)}; }
  static Status invalid_argument(std::string message) {
    return {Code::kInvalidArgument, std::move(message)};
  }
  static Status closed() { return {Code::kClosed, "store is closed"}; }

  bool ok() const { return code_ == Code::kOk; }
  bool is_not_found() const { return code_ == Code::kNotFound; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // "OK", or "<code>: <message>", for logs and test failures.
  std::string to_string() const {
    if (ok()) return "OK";
    return std::string(code_name(code_)) + ": " + message_;
  }

  static const char* code_name(Code code) {
    switch (code) {
      case Code::kOk: return "OK";
      case Code::kNotFound: return "not found";
      case Code::kInUse: return "in use";
      case Code::kIoError: return "I/O error";
      case Code::kCorruption: return "corruption";
      case Code::kInvalidArgument: return "invalid argument";
      case Code::kClosed: return "closed";
    }
    return "unknown";
  }

 private:
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  Code code_ = Code::kOk;
  std::string message_;
};

}  // namespace mb::store
