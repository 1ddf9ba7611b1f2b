// libFuzzer target, stateful: a whole client connection through the broker's
// protocol state machine (Connection, Channel, Vhost, Queue), not just the codec.
//
// Each input runs against a fresh in-process Broker (no store, no listener): a
// Connection is made over one end of a socketpair, the other end sends a fixed
// valid handshake (protocol header, start-ok, tune-ok, open) and then the input
// as raw bytes, then half-closes. The loop runs until the broker has closed the
// connection, reading and discarding what it writes so outbound back-pressure
// never stalls it. A socketpair rather than TCP: no ports, no TIME_WAIT.
//
// Checks: no crash, no sanitizer report, no leak, and the connection always ends
// (a hang is reported by libFuzzer's -timeout). Seeds: tests/fuzz/corpus/connection,
// frame sequences from the golden captures (make_corpus.py).
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio.hpp>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "broker/broker.hpp"
#include "broker/connection.hpp"
#include "common/amqp/frame.hpp"

namespace {

namespace amqp = mb::amqp;
namespace broker = mb::broker;

// Far above what one input needs; a connection still open after this many loop
// turns is a hang (libFuzzer's -timeout catches a real one earlier).
constexpr int kMaxTurns = 1'000'000;

std::string handshake() {
  std::string out(amqp::kProtocolHeader);
  amqp::ConnectionStartOk so;
  so.mechanism = "PLAIN";
  static constexpr char kPlain[] = "\0guest\0guest";
  so.response = std::string_view(kPlain, sizeof kPlain - 1);
  so.locale = "en_US";
  amqp::write_method(out, 0, so);
  amqp::write_method(out, 0, amqp::ConnectionTuneOk{0, 131072, 0});
  amqp::ConnectionOpen open;
  open.virtual_host = "/";
  amqp::write_method(out, 0, open);
  return out;
}

void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the broker closed early: the rest is moot
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string kHandshake = handshake();
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) __builtin_trap();
  const int client = fds[1];

  broker::Options options;
  options.heartbeat = 0;
  options.disk_free_limit = 0;
  {
    broker::Broker b(options);
    asio::ip::tcp::socket server(b.io());
    server.assign(asio::ip::tcp::v4(), fds[0]);  // a stream socket is all Connection needs
    auto conn = std::make_shared<broker::Connection>(
        b, broker::Stream(std::in_place_type<asio::ip::tcp::socket>, std::move(server)), 1);
    conn->start();

    // The socketpair's buffer holds the handshake and any input libFuzzer makes
    // (scripts/fuzz sets -max_len), so these writes do not block.
    write_all(client, kHandshake);
    write_all(client, std::string_view(reinterpret_cast<const char*>(data), size));
    ::shutdown(client, SHUT_WR);

    char sink[65536];
    for (int turn = 0; !conn->closed(); ++turn) {
      if (turn == kMaxTurns) __builtin_trap();
      b.io().poll();
      b.io().restart();
      while (::recv(client, sink, sizeof sink, MSG_DONTWAIT) > 0) {
      }
      if (!conn->closed()) b.io().run_one_for(std::chrono::milliseconds(1));
      b.io().restart();
    }
    conn.reset();
    b.io().poll();  // the handlers still queued release what they hold
  }
  ::close(client);
  return 0;
}
