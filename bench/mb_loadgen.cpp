// mb_loadgen: AMQP 0-9-1 load generator for the minibroker / RabbitMQ benchmarks.
//
// Speaks plain AMQP 0-9-1 through rabbitmq-c, one thread (and one connection)
// per producer or consumer. Each subcommand runs one scenario and prints one JSON
// line of results on stdout (diagnostics go to stderr).
//
//   mb_loadgen transient   [--ack manual|auto] [--duration S] [--size B] [--prefetch N]
//   mb_loadgen persistent  [--duration S] [--window N]
//   mb_loadgen latency     [--rate R] [--duration S]
//   mb_loadgen latency-null [--rate R] [--duration S]
//                          (latency through a null broker forked from this process)
//   mb_loadgen null-broker --port P   (the null broker alone, until killed)
//   mb_loadgen fanout      [--queues N] [--duration S]
//   mb_loadgen backlog     [--count N] [--size B] [--window N]
//   mb_loadgen connections [--count N] [--threads T]
//   mb_loadgen connections-null [--count N] [--threads T]
//                          (the same against a null broker forked from this process)
//   mb_loadgen tasks       [--count N] [--task bench.add] [--queue celery] [--window N]
//                          (Celery protocol 2 client: for Celery workers and miniworker)
//   mb_loadgen probe       (one handshake; exit status 0 if it succeeded)
//   mb_loadgen selftest    (the client's own ceiling against an in-process fake server)
// common: --host 127.0.0.1 --port 5672 --user guest --password guest --vhost /
//         --broker-pid PID (CPU share and RSS of the broker are then reported)
//
// Keeping the client out of the way: publishes are encoded once per batch of
// messages into one buffer and written with one send() (AMQP lets a client
// pipeline publishes freely); consumers read frames from rabbitmq-c's 128 KiB
// input buffer and acknowledge with multiple=true every --ack-every deliveries.
// Every result carries client_cpu and broker_cpu: (user+sys CPU seconds) / wall
// seconds over the measured window, so 1.0 is one full core; on a 2-core machine
// the two together cannot exceed 2.0.
#include <amqp.h>
#include <amqp_tcp_socket.h>

#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

// ---------------------------------------------------------------- options

struct Opts {
  std::map<std::string, std::string> kv;
  std::string get(const std::string& k, const std::string& def) const {
    auto it = kv.find(k);
    return it == kv.end() ? def : it->second;
  }
  double num(const std::string& k, double def) const {
    auto it = kv.find(k);
    return it == kv.end() ? def : std::stod(it->second);
  }
  long integer(const std::string& k, long def) const {
    auto it = kv.find(k);
    return it == kv.end() ? def : std::stol(it->second);
  }
};

// ---------------------------------------------------------------- clocks, /proc

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

double self_cpu_s() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

// utime+stime of a process in seconds, or -1.
double proc_cpu_s(long pid) {
  if (pid <= 0) return -1;
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s;
  if (!std::getline(f, s)) return -1;
  auto p = s.rfind(')');
  if (p == std::string::npos) return -1;
  std::istringstream in(s.substr(p + 2));
  std::string field;
  // after "pid (comm) " the fields start at 3 (state); utime is 14, stime 15.
  unsigned long long ut = 0, st = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) ut = std::stoull(field);
    if (i == 15) st = std::stoull(field);
  }
  return double(ut + st) / double(sysconf(_SC_CLK_TCK));
}

// A field of /proc/PID/status in KiB (VmRSS, VmHWM), or -1.
long proc_status_kib(long pid, const char* key) {
  if (pid <= 0) return -1;
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  size_t kl = std::strlen(key);
  while (std::getline(f, line)) {
    if (line.compare(0, kl, key) == 0 && line.size() > kl && line[kl] == ':')
      return std::stol(line.substr(kl + 1));
  }
  return -1;
}

// CPU shares over a window.
struct CpuWindow {
  long pid;
  int64_t t0;
  double c0, b0;
  explicit CpuWindow(long p) : pid(p), t0(now_ns()), c0(self_cpu_s()), b0(proc_cpu_s(p)) {}
  double wall() const { return (now_ns() - t0) / 1e9; }
  double client() const { return (self_cpu_s() - c0) / wall(); }
  double broker() const {
    double b = proc_cpu_s(pid);
    return (b < 0 || b0 < 0) ? -1 : (b - b0) / wall();
  }
};

// ---------------------------------------------------------------- JSON line

struct Json {
  std::ostringstream o;
  bool first = true;
  Json() { o << '{'; }
  void key(const std::string& k) {
    if (!first) o << ',';
    first = false;
    o << '"' << k << "\":";
  }
  Json& s(const std::string& k, const std::string& v) {
    key(k);
    o << '"';
    for (char c : v) {
      if (c == '"' || c == '\\') o << '\\' << c;
      else if (static_cast<unsigned char>(c) < 0x20) o << ' ';
      else o << c;
    }
    o << '"';
    return *this;
  }
  Json& n(const std::string& k, double v) {
    key(k);
    if (std::isfinite(v)) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.6g", v);
      o << buf;
    } else {
      o << "null";
    }
    return *this;
  }
  Json& i(const std::string& k, long long v) {
    key(k);
    o << v;
    return *this;
  }
  Json& b(const std::string& k, bool v) {
    key(k);
    o << (v ? "true" : "false");
    return *this;
  }
  std::string str() { return o.str() + "}"; }
};

// Per-thread CPU share (thread CPU time / thread lifetime): shows whether one
// client thread saturates a core even when the process total looks modest.
double thread_cpu_s() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}
std::mutex g_thr_mu;
double g_max_thread_share = 0;
struct ThreadCpu {
  int64_t t0 = now_ns();
  double c0 = thread_cpu_s();
  ~ThreadCpu() {
    double wall = (now_ns() - t0) / 1e9;
    if (wall < 0.2) return;
    double share = (thread_cpu_s() - c0) / wall;
    std::lock_guard lk(g_thr_mu);
    g_max_thread_share = std::max(g_max_thread_share, share);
  }
};
double max_thread_share() {
  std::lock_guard lk(g_thr_mu);
  return g_max_thread_share;
}

// ---------------------------------------------------------------- errors

std::atomic<bool> g_stop{false};
std::mutex g_err_mu;
std::string g_error;

void set_error(const std::string& e) {
  std::lock_guard lk(g_err_mu);
  if (g_error.empty()) g_error = e;
  g_stop = true;
}

std::string reply_str(const amqp_rpc_reply_t& r) {
  switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return "ok";
    case AMQP_RESPONSE_NONE:
      return "missing RPC reply";
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      return amqp_error_string2(r.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        auto* m = static_cast<amqp_connection_close_t*>(r.reply.decoded);
        return "connection closed by server: " + std::to_string(m->reply_code) + " " +
               std::string(static_cast<char*>(m->reply_text.bytes), m->reply_text.len);
      }
      if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        auto* m = static_cast<amqp_channel_close_t*>(r.reply.decoded);
        return "channel closed by server: " + std::to_string(m->reply_code) + " " +
               std::string(static_cast<char*>(m->reply_text.bytes), m->reply_text.len);
      }
      return "server exception";
  }
  return "?";
}

// ---------------------------------------------------------------- connection

struct Conn {
  amqp_connection_state_t c = nullptr;
  int fd = -1;
  static constexpr amqp_channel_t ch = 1;

  Conn() = default;
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;
  ~Conn() {
    if (c) amqp_destroy_connection(c);
  }

  void check(const char* what) {
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
      throw std::runtime_error(std::string(what) + ": " + reply_str(r));
  }

  void open(const Opts& o, bool channel = true) {
    c = amqp_new_connection();
    amqp_socket_t* s = amqp_tcp_socket_new(c);
    if (!s) throw std::runtime_error("amqp_tcp_socket_new failed");
    timeval tv{10, 0};
    std::string host = o.get("host", "127.0.0.1");
    int port = int(o.integer("port", 5672));
    int st = amqp_socket_open_noblock(s, host.c_str(), port, &tv);
    if (st != AMQP_STATUS_OK)
      throw std::runtime_error("connect " + host + ":" + std::to_string(port) + ": " +
                               amqp_error_string2(st));
    timeval rpc{30, 0};
    amqp_set_rpc_timeout(c, &rpc);
    amqp_set_handshake_timeout(c, &rpc);
    std::string user = o.get("user", "guest"), pass = o.get("password", "guest");
    amqp_rpc_reply_t r = amqp_login(c, o.get("vhost", "/").c_str(), 0, 131072, 0,
                                    AMQP_SASL_METHOD_PLAIN, user.c_str(), pass.c_str());
    if (r.reply_type != AMQP_RESPONSE_NORMAL) throw std::runtime_error("login: " + reply_str(r));
    fd = amqp_get_sockfd(c);
    if (channel) {
      amqp_channel_open(c, ch);
      check("channel.open");
    }
  }

  // Polite close; gives up quietly on errors (the broker may be going away).
  void close() {
    if (!c) return;
    timeval rpc{5, 0};
    amqp_set_rpc_timeout(c, &rpc);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
    c = nullptr;
  }

  void qos(uint16_t prefetch) {
    amqp_basic_qos(c, ch, 0, prefetch, 0);
    check("basic.qos");
  }

  void declare_queue(const std::string& q, bool durable, bool exclusive = false,
                     bool auto_delete = false) {
    amqp_queue_declare(c, ch, amqp_cstring_bytes(q.c_str()), 0, durable, exclusive, auto_delete,
                       amqp_empty_table);
    check(("queue.declare " + q).c_str());
  }

  void delete_queue(const std::string& q) {
    amqp_queue_delete(c, ch, amqp_cstring_bytes(q.c_str()), 0, 0);
    check(("queue.delete " + q).c_str());
  }

  void consume(const std::string& q, bool no_ack) {
    amqp_basic_consume(c, ch, amqp_cstring_bytes(q.c_str()), amqp_empty_bytes, 0, no_ack, 0,
                       amqp_empty_table);
    check(("basic.consume " + q).c_str());
  }

  void confirm_select() {
    amqp_confirm_select(c, ch);
    check("confirm.select");
  }
};

// ---------------------------------------------------------------- publishing

struct Stopping {};  // thrown when a write is still blocked once the run is over

// Encodes basic.publish + content header + body frames into one buffer; flush()
// writes them all with send() on the connection's socket (rabbitmq-c does not
// write on this connection meanwhile: heartbeats are off).
struct Publisher {
  int fd;
  std::string exchange, rk;
  bool persistent;
  std::vector<uint8_t> buf;

  Publisher(int fd_, std::string ex, std::string key, bool pers)
      : fd(fd_), exchange(std::move(ex)), rk(std::move(key)), persistent(pers) {
    buf.reserve(1 << 20);
  }

  void u8(uint8_t v) { buf.push_back(v); }
  void u16(uint16_t v) {
    buf.push_back(uint8_t(v >> 8));
    buf.push_back(uint8_t(v));
  }
  void u32(uint32_t v) {
    u16(uint16_t(v >> 16));
    u16(uint16_t(v));
  }
  void u64(uint64_t v) {
    u32(uint32_t(v >> 32));
    u32(uint32_t(v));
  }
  void shortstr(const std::string& s) {
    u8(uint8_t(s.size()));
    buf.insert(buf.end(), s.begin(), s.end());
  }

  void add(const uint8_t* body, size_t n) {
    constexpr uint16_t ch = Conn::ch;
    // method frame: basic.publish
    u8(AMQP_FRAME_METHOD);
    u16(ch);
    u32(uint32_t(4 + 2 + 1 + exchange.size() + 1 + rk.size() + 1));
    u16(60);
    u16(40);
    u16(0);  // reserved (ticket)
    shortstr(exchange);
    shortstr(rk);
    u8(0);  // mandatory=0 immediate=0
    u8(AMQP_FRAME_END);
    // content header frame
    u8(AMQP_FRAME_HEADER);
    u16(ch);
    u32(persistent ? 15 : 14);
    u16(60);
    u16(0);
    u64(n);
    if (persistent) {
      u16(0x1000);  // delivery-mode present
      u8(2);
    } else {
      u16(0);
    }
    u8(AMQP_FRAME_END);
    // body frame(s): bodies here are far below frame-max
    if (n) {
      u8(AMQP_FRAME_BODY);
      u16(ch);
      u32(uint32_t(n));
      buf.insert(buf.end(), body, body + n);
      u8(AMQP_FRAME_END);
    }
  }

  void flush() {
    size_t off = 0;
    while (off < buf.size()) {
      ssize_t w = ::send(fd, buf.data() + off, buf.size() - off, MSG_NOSIGNAL);
      if (w > 0) {
        off += size_t(w);
      } else if (w < 0 && errno == EINTR) {
        continue;
      } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        pollfd p{fd, POLLOUT, 0};
        int pr = ::poll(&p, 1, 200);
        if (pr == 0 && g_stop) throw Stopping{};  // blocked by broker flow control at the end
      } else {
        throw std::runtime_error(std::string("send: ") + std::strerror(errno));
      }
    }
    buf.clear();
  }
};

// Publisher confirms bookkeeping: counts distinct confirmed delivery tags.
struct Confirms {
  uint64_t published = 0, confirmed = 0, nacked = 0, base = 0;  // tags <= base all settled
  std::vector<uint8_t> ring = std::vector<uint8_t>(1 << 16, 0);
  uint64_t outstanding() const { return published - confirmed; }
  void mark(uint64_t tag) {
    if (tag <= base || tag > published) return;
    uint8_t& r = ring[tag & (ring.size() - 1)];
    if (!r) {
      r = 1;
      ++confirmed;
    }
  }
  void settle(uint64_t tag, bool multiple) {
    if (multiple) {
      for (uint64_t t = base + 1; t <= tag && t <= published; ++t) mark(t);
    } else {
      mark(tag);
    }
    while (base < published && ring[(base + 1) & (ring.size() - 1)]) {
      ++base;
      ring[base & (ring.size() - 1)] = 0;
    }
  }
};

// Reads frames and applies confirms; blocks up to timeout_ms for the first one.
// Returns false on timeout with nothing read.
bool read_confirms(Conn& cn, Confirms& cf, int timeout_ms) {
  bool any = false;
  for (;;) {
    amqp_frame_t f;
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    bool buffered = amqp_frames_enqueued(cn.c) || amqp_data_in_buffer(cn.c);
    if (any && !buffered) return true;
    timeval zero{0, 0};
    int st = amqp_simple_wait_frame_noblock(cn.c, &f, any ? &zero : &tv);
    if (st == AMQP_STATUS_TIMEOUT) return any;
    if (st != AMQP_STATUS_OK) throw std::runtime_error(std::string("confirms: ") + amqp_error_string2(st));
    any = true;
    if (f.frame_type != AMQP_FRAME_METHOD) continue;
    switch (f.payload.method.id) {
      case AMQP_BASIC_ACK_METHOD: {
        auto* m = static_cast<amqp_basic_ack_t*>(f.payload.method.decoded);
        cf.settle(m->delivery_tag, m->multiple);
        break;
      }
      case AMQP_BASIC_NACK_METHOD: {
        auto* m = static_cast<amqp_basic_nack_t*>(f.payload.method.decoded);
        uint64_t before = cf.confirmed;
        cf.settle(m->delivery_tag, m->multiple);
        cf.nacked += cf.confirmed - before;
        break;
      }
      case AMQP_CHANNEL_CLOSE_METHOD: {
        auto* m = static_cast<amqp_channel_close_t*>(f.payload.method.decoded);
        throw std::runtime_error("channel closed by server: " + std::to_string(m->reply_code) + " " +
                                 std::string(static_cast<char*>(m->reply_text.bytes), m->reply_text.len));
      }
      case AMQP_CONNECTION_CLOSE_METHOD: {
        auto* m = static_cast<amqp_connection_close_t*>(f.payload.method.decoded);
        throw std::runtime_error("connection closed by server: " + std::to_string(m->reply_code) + " " +
                                 std::string(static_cast<char*>(m->reply_text.bytes), m->reply_text.len));
      }
      default:
        break;  // connection.blocked etc.
    }
    amqp_maybe_release_buffers(cn.c);
  }
}

// ---------------------------------------------------------------- consuming

struct ConsumerCfg {
  std::string queue;
  bool no_ack = false;
  uint16_t prefetch = 200;
  uint32_t ack_every = 50;
  uint64_t stop_after = 0;          // stop once this many were received (0: until g_stop)
  std::vector<int64_t>* latencies = nullptr;  // if set, record now - body timestamp
  int64_t record_after_ns = 0;      // only messages sent at or after this time
};

struct Counter {
  alignas(64) std::atomic<uint64_t> v{0};
};

void consumer_thread(const Opts& o, ConsumerCfg cfg, Counter* consumed, std::atomic<int>* ready) {
  ThreadCpu tcpu;
  try {
    Conn cn;
    cn.open(o);
    if (!cfg.no_ack) cn.qos(cfg.prefetch);
    cn.consume(cfg.queue, cfg.no_ack);
    ready->fetch_add(1);
    uint64_t count = 0, unacked = 0, tag = 0, remaining = 0;
    bool in_body = false;
    uint8_t head[8];
    size_t head_len = 0;
    while (!g_stop) {
      amqp_frame_t f;
      timeval tv{0, 100000};
      int st = amqp_simple_wait_frame_noblock(cn.c, &f, &tv);
      if (st == AMQP_STATUS_TIMEOUT) {
        if (unacked) {
          amqp_basic_ack(cn.c, Conn::ch, tag, 1);
          unacked = 0;
        }
        continue;
      }
      if (st != AMQP_STATUS_OK)
        throw std::runtime_error(std::string("consumer: ") + amqp_error_string2(st));
      bool done = false;
      if (f.frame_type == AMQP_FRAME_METHOD) {
        switch (f.payload.method.id) {
          case AMQP_BASIC_DELIVER_METHOD:
            tag = static_cast<amqp_basic_deliver_t*>(f.payload.method.decoded)->delivery_tag;
            in_body = true;
            head_len = 0;
            break;
          case AMQP_CHANNEL_CLOSE_METHOD:
          case AMQP_CONNECTION_CLOSE_METHOD:
          case AMQP_BASIC_CANCEL_METHOD:
            throw std::runtime_error("consumer: server closed/cancelled (method " +
                                     std::to_string(f.payload.method.id) + ")");
          default:
            break;
        }
      } else if (f.frame_type == AMQP_FRAME_HEADER && in_body) {
        remaining = f.payload.properties.body_size;
        if (remaining == 0) done = true;
      } else if (f.frame_type == AMQP_FRAME_BODY && in_body) {
        size_t len = f.payload.body_fragment.len;
        if (head_len < 8) {
          size_t k = std::min<size_t>(8 - head_len, len);
          std::memcpy(head + head_len, f.payload.body_fragment.bytes, k);
          head_len += k;
        }
        remaining -= std::min<uint64_t>(remaining, len);
        if (remaining == 0) done = true;
      }
      if (!done) continue;
      in_body = false;
      amqp_maybe_release_buffers_on_channel(cn.c, Conn::ch);
      ++count;
      consumed->v.store(count, std::memory_order_relaxed);
      if (cfg.latencies && head_len == 8) {
        int64_t ts;
        std::memcpy(&ts, head, 8);
        if (ts >= cfg.record_after_ns) cfg.latencies->push_back(now_ns() - ts);
      }
      if (!cfg.no_ack && ++unacked >= cfg.ack_every) {
        int r = amqp_basic_ack(cn.c, Conn::ch, tag, 1);
        if (r != AMQP_STATUS_OK) throw std::runtime_error(std::string("ack: ") + amqp_error_string2(r));
        unacked = 0;
      }
      if (cfg.stop_after && count >= cfg.stop_after) break;
    }
    if (unacked) amqp_basic_ack(cn.c, Conn::ch, tag, 1);
    cn.close();
  } catch (const std::exception& e) {
    set_error(e.what());
    ready->fetch_add(1);
  }
}

bool wait_ready(std::atomic<int>& ready, int n, double timeout_s) {
  int64_t end = now_ns() + int64_t(timeout_s * 1e9);
  while (ready.load() < n && now_ns() < end && !g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  return ready.load() >= n && !g_stop;
}

void sleep_s(double s) {
  int64_t end = now_ns() + int64_t(s * 1e9);
  while (!g_stop && now_ns() < end) std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

std::string uniq(const std::string& what) {
  return "mb.bench." + what + "." + std::to_string(getpid()) + "." + std::to_string(now_ns() % 1000000);
}

// ---------------------------------------------------------------- scenarios

// Throughput: one producer, N queues (fanout when N>1) with a consumer each.
// Measured: deliveries per second during [warmup, warmup+duration].
std::string run_throughput(const Opts& o, const std::string& name, bool persistent, bool fanout) {
  long pid = o.integer("broker-pid", 0);
  double duration = o.num("duration", 10), warmup = o.num("warmup", 1);
  size_t size = size_t(o.integer("size", persistent ? 100 : 100));
  bool no_ack = o.get("ack", "manual") == "auto";
  uint16_t prefetch = uint16_t(o.integer("prefetch", 200));
  uint32_t ack_every = uint32_t(o.integer("ack-every", std::max<long>(1, prefetch / 4)));
  uint64_t window = uint64_t(o.integer("window", 256));
  uint64_t max_lag = uint64_t(o.integer("max-lag", 100000));
  int batch = int(o.integer("batch", 64));
  int nq = fanout ? int(o.integer("queues", 4)) : 1;

  Conn ctl;
  ctl.open(o);
  std::string exchange = fanout ? uniq("fanout") : "";
  std::vector<std::string> queues;
  for (int i = 0; i < nq; ++i) queues.push_back(uniq(name + std::to_string(i)));
  if (fanout) {
    amqp_exchange_declare(ctl.c, Conn::ch, amqp_cstring_bytes(exchange.c_str()),
                          amqp_cstring_bytes("fanout"), 0, 0, 0, 0, amqp_empty_table);
    ctl.check("exchange.declare");
  }
  for (auto& q : queues) {
    ctl.declare_queue(q, persistent);
    if (fanout) {
      amqp_queue_bind(ctl.c, Conn::ch, amqp_cstring_bytes(q.c_str()), amqp_cstring_bytes(exchange.c_str()),
                      amqp_empty_bytes, amqp_empty_table);
      ctl.check("queue.bind");
    }
  }

  std::vector<Counter> consumed(nq);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < nq; ++i) {
    ConsumerCfg cfg;
    cfg.queue = queues[i];
    cfg.no_ack = no_ack;
    cfg.prefetch = prefetch;
    cfg.ack_every = ack_every;
    threads.emplace_back(consumer_thread, std::cref(o), cfg, &consumed[i], &ready);
  }
  wait_ready(ready, nq, 30);

  Counter published;
  uint64_t nacked = 0;
  std::thread producer([&] {
    ThreadCpu tcpu;
    try {
      Conn cn;
      cn.open(o);
      Confirms cf;
      if (persistent) cn.confirm_select();
      Publisher pub(cn.fd, exchange, fanout ? "" : queues[0], persistent);
      std::vector<uint8_t> body(size, 'x');
      uint64_t n = 0;
      auto min_consumed = [&] {
        uint64_t m = UINT64_MAX;
        for (auto& c : consumed) m = std::min<uint64_t>(m, c.v.load(std::memory_order_relaxed));
        return m;
      };
      while (!g_stop) {
        if (max_lag && n - min_consumed() > max_lag) {
          std::this_thread::sleep_for(std::chrono::microseconds(50));
          continue;
        }
        int k = batch;
        if (persistent) {
          uint64_t room = window - cf.outstanding();
          k = int(std::min<uint64_t>(room, uint64_t(batch)));
        }
        if (k > 0) {
          int64_t ts = now_ns();
          if (size >= 8) std::memcpy(body.data(), &ts, 8);
          for (int j = 0; j < k; ++j) pub.add(body.data(), body.size());
          pub.flush();
          n += uint64_t(k);
          cf.published = n;
          published.v.store(n, std::memory_order_relaxed);
        }
        if (persistent) {
          // Block only when the window is full; otherwise take what has arrived.
          if (cf.outstanding() >= window) read_confirms(cn, cf, 100);
          else if (amqp_data_in_buffer(cn.c) || amqp_frames_enqueued(cn.c)) read_confirms(cn, cf, 0);
          else {
            pollfd p{cn.fd, POLLIN, 0};
            if (::poll(&p, 1, 0) > 0) read_confirms(cn, cf, 0);
          }
        }
      }
      nacked = cf.nacked;
      cn.close();
    } catch (const Stopping&) {
      // the broker was still applying back-pressure when time was up: not an error
    } catch (const std::exception& e) {
      set_error(e.what());
    }
  });

  sleep_s(warmup);
  auto sum = [&] {
    uint64_t s = 0;
    for (auto& c : consumed) s += c.v.load();
    return s;
  };
  uint64_t c0 = sum(), p0 = published.v.load();
  CpuWindow cpu(pid);
  sleep_s(duration);
  uint64_t c1 = sum(), p1 = published.v.load();
  double wall = cpu.wall(), ccpu = cpu.client(), bcpu = cpu.broker();
  long rss = proc_status_kib(pid, "VmRSS");
  g_stop = true;
  producer.join();
  for (auto& t : threads) t.join();
  std::string err;
  {
    std::lock_guard lk(g_err_mu);
    err = g_error;
  }
  try {
    for (auto& q : queues) ctl.delete_queue(q);
    if (fanout) {
      amqp_exchange_delete(ctl.c, Conn::ch, amqp_cstring_bytes(exchange.c_str()), 0);
      ctl.check("exchange.delete");
    }
    ctl.close();
  } catch (const std::exception& e) {
    if (err.empty()) err = std::string("cleanup: ") + e.what();
  }

  Json j;
  j.s("scenario", name).b("ok", err.empty());
  if (!err.empty()) j.s("error", err);
  if (!fanout) j.s("ack", no_ack ? "auto" : "manual");
  j.n(fanout ? "deliveries_per_s" : "msgs_per_s", (c1 - c0) / wall)
      .n("publish_per_s", (p1 - p0) / wall)
      .i("queues", nq)
      .i("size", long(size))
      .i("prefetch", no_ack ? 0 : prefetch)
      .i("ack_every", no_ack ? 0 : ack_every);
  if (persistent) j.i("confirm_window", long(window)).i("nacked", long(nacked));
  j.n("duration_s", wall).n("client_cpu", ccpu).n("client_max_thread_cpu", max_thread_share())
      .n("broker_cpu", bcpu).i("broker_rss_kib", rss);
  return j.str();
}

// Latency: paced publishing at --rate msg/s, timestamp (CLOCK_MONOTONIC ns) in the body.
std::string run_latency(const Opts& o, const char* scenario = "latency") {
  long pid = o.integer("broker-pid", 0);
  double duration = o.num("duration", 10), warmup = o.num("warmup", 1);
  double rate = o.num("rate", 1000);
  size_t size = size_t(std::max<long>(8, o.integer("size", 100)));
  Conn ctl;
  ctl.open(o);
  std::string q = uniq("latency");
  ctl.declare_queue(q, false);

  std::vector<int64_t> lat;
  lat.reserve(size_t(rate * (duration + warmup + 1)) + 16);
  Counter consumed;
  std::atomic<int> ready{0};
  ConsumerCfg cfg;
  cfg.queue = q;
  cfg.prefetch = uint16_t(o.integer("prefetch", 200));
  cfg.ack_every = uint32_t(o.integer("ack-every", 1));
  cfg.latencies = &lat;
  int64_t start = now_ns() + 50'000'000;
  cfg.record_after_ns = start + int64_t(warmup * 1e9);
  uint64_t total = uint64_t(rate * (warmup + duration));
  cfg.stop_after = total;
  std::thread consumer(consumer_thread, std::cref(o), cfg, &consumed, &ready);
  wait_ready(ready, 1, 30);

  uint64_t sent = 0;
  int64_t late_max = 0;
  std::thread producer([&] {
    ThreadCpu tcpu;
    try {
      Conn cn;
      cn.open(o);
      Publisher pub(cn.fd, "", q, false);
      std::vector<uint8_t> body(size, 'x');
      double interval = 1e9 / rate;
      while (!g_stop && sent < total) {
        int64_t due = start + int64_t(double(sent) * interval);
        timespec ts{time_t(due / 1000000000), long(due % 1000000000)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
        }
        int64_t t = now_ns();
        late_max = std::max(late_max, t - due);
        std::memcpy(body.data(), &t, 8);
        pub.add(body.data(), body.size());
        pub.flush();
        ++sent;
      }
      cn.close();
    } catch (const std::exception& e) {
      set_error(e.what());
    }
  });
  CpuWindow cpu(pid);
  producer.join();
  // Wait (bounded) for the tail.
  int64_t end = now_ns() + 5'000'000'000;
  while (consumed.v.load() < total && now_ns() < end && !g_stop)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  double wall = cpu.wall(), ccpu = cpu.client(), bcpu = cpu.broker();
  g_stop = true;
  consumer.join();
  std::string err;
  {
    std::lock_guard lk(g_err_mu);
    err = g_error;
  }
  try {
    ctl.delete_queue(q);
    ctl.close();
  } catch (const std::exception& e) {
    if (err.empty()) err = std::string("cleanup: ") + e.what();
  }
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) -> double {
    if (lat.empty()) return NAN;
    size_t idx = size_t(std::ceil(p / 100.0 * double(lat.size()))) ;
    idx = std::min(lat.size() - 1, idx ? idx - 1 : 0);
    return lat[idx] / 1e6;
  };
  double mean = 0;
  for (auto v : lat) mean += double(v);
  mean = lat.empty() ? NAN : mean / double(lat.size()) / 1e6;
  Json j;
  j.s("scenario", scenario).b("ok", err.empty());
  if (!err.empty()) j.s("error", err);
  j.n("rate", rate)
      .i("samples", long(lat.size()))
      .i("lost", long(total) - long(consumed.v.load()))
      .n("p50_ms", pct(50))
      .n("p99_ms", pct(99))
      .n("p999_ms", pct(99.9))
      .n("max_ms", lat.empty() ? NAN : lat.back() / 1e6)
      .n("mean_ms", mean)
      .n("producer_late_max_ms", late_max / 1e6)
      .n("duration_s", wall)
      .n("client_cpu", ccpu)
      .n("client_max_thread_cpu", max_thread_share())
      .n("broker_cpu", bcpu);
  return j.str();
}

// Backlog: fill a durable queue with --count persistent messages (confirms, window),
// no consumer; then drain it with one consumer (manual ack).
std::string run_backlog(const Opts& o) {
  long pid = o.integer("broker-pid", 0);
  uint64_t count = uint64_t(o.integer("count", 1000000));
  size_t size = size_t(o.integer("size", 1024));
  uint64_t window = uint64_t(o.integer("window", 256));
  int batch = int(o.integer("batch", 64));
  double timeout = o.num("timeout", 1800);
  Conn ctl;
  ctl.open(o);
  std::string q = uniq("backlog");
  ctl.declare_queue(q, true);
  std::string err;
  double fill_s = NAN, fill_ccpu = NAN, fill_bcpu = NAN;
  long rss_filled = -1;
  uint64_t nacked = 0;
  {
    CpuWindow cpu(pid);
    int64_t deadline = now_ns() + int64_t(timeout * 1e9);
    try {
      Conn cn;
      cn.open(o);
      cn.confirm_select();
      Confirms cf;
      Publisher pub(cn.fd, "", q, true);
      std::vector<uint8_t> body(size, 'b');
      while (cf.confirmed < count) {
        if (now_ns() > deadline) throw std::runtime_error("backlog fill timed out");
        uint64_t room = std::min<uint64_t>(window - cf.outstanding(), count - cf.published);
        int k = int(std::min<uint64_t>(room, uint64_t(batch)));
        if (k > 0) {
          for (int j = 0; j < k; ++j) {
            uint64_t seq = cf.published + uint64_t(j);
            std::memcpy(body.data(), &seq, std::min<size_t>(8, size));
            pub.add(body.data(), body.size());
          }
          pub.flush();
          cf.published += uint64_t(k);
        }
        if (cf.outstanding() >= window || cf.published == count) read_confirms(cn, cf, 100);
        else if (amqp_data_in_buffer(cn.c) || amqp_frames_enqueued(cn.c)) read_confirms(cn, cf, 0);
      }
      nacked = cf.nacked;
      cn.close();
    } catch (const std::exception& e) {
      err = std::string("fill: ") + e.what();
    }
    fill_s = cpu.wall();
    fill_ccpu = cpu.client();
    fill_bcpu = cpu.broker();
    rss_filled = proc_status_kib(pid, "VmRSS");
  }
  double drain_s = NAN, drain_ccpu = NAN, drain_bcpu = NAN;
  uint64_t drained = 0;
  if (err.empty()) {
    Counter consumed;
    std::atomic<int> ready{0};
    ConsumerCfg cfg;
    cfg.queue = q;
    cfg.prefetch = uint16_t(o.integer("prefetch", 200));
    cfg.ack_every = uint32_t(o.integer("ack-every", std::max<long>(1, cfg.prefetch / 4)));
    cfg.stop_after = count;
    CpuWindow cpu(pid);
    std::thread consumer(consumer_thread, std::cref(o), cfg, &consumed, &ready);
    int64_t deadline = now_ns() + int64_t(timeout * 1e9);
    uint64_t last = 0;
    int64_t last_progress = now_ns();
    while (consumed.v.load() < count && !g_stop && now_ns() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      uint64_t c = consumed.v.load();
      if (c != last) {
        last = c;
        last_progress = now_ns();
      } else if (now_ns() - last_progress > 60'000'000'000LL) {
        break;  // no progress for a minute
      }
    }
    drained = consumed.v.load();
    drain_s = cpu.wall();
    drain_ccpu = cpu.client();
    drain_bcpu = cpu.broker();
    g_stop = true;
    consumer.join();
    {
      std::lock_guard lk(g_err_mu);
      err = g_error;
    }
    if (err.empty() && drained < count)
      err = "drain incomplete: " + std::to_string(drained) + " of " + std::to_string(count);
  }
  try {
    ctl.delete_queue(q);
    ctl.close();
  } catch (const std::exception& e) {
    if (err.empty()) err = std::string("cleanup: ") + e.what();
  }
  Json j;
  j.s("scenario", "backlog").b("ok", err.empty());
  if (!err.empty()) j.s("error", err);
  j.i("count", long(count))
      .i("size", long(size))
      .i("confirm_window", long(window))
      .i("nacked", long(nacked))
      .n("fill_s", fill_s)
      .n("fill_per_s", double(count) / fill_s)
      .n("drain_s", drain_s)
      .n("drain_per_s", double(drained) / drain_s)
      .i("broker_rss_filled_kib", rss_filled)
      .i("broker_hwm_kib", proc_status_kib(pid, "VmHWM"))
      .n("client_cpu", fill_ccpu)
      .n("broker_cpu", fill_bcpu)
      .n("drain_client_cpu", drain_ccpu)
      .n("drain_broker_cpu", drain_bcpu)
      .n("drain_client_max_thread_cpu", max_thread_share());
  return j.str();
}

// Connections: --count connections, each with a channel and a consumer on a shared queue.
std::string run_connections(const Opts& o, const char* scenario = "connections") {
  long pid = o.integer("broker-pid", 0);
  int count = int(o.integer("count", 1000));
  int nthreads = std::max(1, int(o.integer("threads", 1)));
  double hold = o.num("hold", 1.0);
  bool own_queue = o.integer("per-connection-queue", 0) != 0;
  Conn ctl;
  ctl.open(o);
  std::string q = uniq("conns");
  ctl.declare_queue(q, false);
  std::vector<std::unique_ptr<Conn>> conns;
  conns.resize(static_cast<size_t>(count));
  long rss_before = proc_status_kib(pid, "VmRSS");
  CpuWindow cpu(pid);
  std::vector<std::thread> threads;
  std::atomic<int> opened{0};
  for (int t = 0; t < nthreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        for (int i = t; i < count && !g_stop; i += nthreads) {
          auto c = std::make_unique<Conn>();
          c->open(o);
          c->qos(10);
          if (own_queue) {
            amqp_queue_declare_ok_t* ok =
                amqp_queue_declare(c->c, Conn::ch, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
            c->check("queue.declare");
            c->consume(std::string(static_cast<char*>(ok->queue.bytes), ok->queue.len), false);
          } else {
            c->consume(q, false);
          }
          conns[size_t(i)] = std::move(c);
          opened.fetch_add(1);
        }
      } catch (const std::exception& e) {
        set_error("after " + std::to_string(opened.load()) + " connections: " + e.what());
      }
    });
  }
  for (auto& t : threads) t.join();
  double open_s = cpu.wall(), ccpu = cpu.client(), bcpu = cpu.broker();
  sleep_s(hold);
  long rss_after = proc_status_kib(pid, "VmRSS");
  int64_t c0 = now_ns();
  for (auto& c : conns)
    if (c) c->close();
  double close_s = (now_ns() - c0) / 1e9;
  std::string err;
  {
    std::lock_guard lk(g_err_mu);
    err = g_error;
  }
  try {
    ctl.delete_queue(q);
    ctl.close();
  } catch (const std::exception& e) {
    if (err.empty()) err = std::string("cleanup: ") + e.what();
  }
  Json j;
  j.s("scenario", scenario).b("ok", err.empty());
  if (!err.empty()) j.s("error", err);
  j.i("count", count)
      .i("opened", opened.load())
      .i("threads", nthreads)
      .n("open_s", open_s)
      .n("per_connection_ms", open_s * 1000 / std::max(1, opened.load()))
      .i("broker_rss_before_kib", rss_before)
      .i("broker_rss_after_kib", rss_after)
      .n("close_s", close_s)
      .n("client_cpu", ccpu)
      .n("broker_cpu", bcpu);
  return j.str();
}

constexpr uint64_t kPublishBatch = 64;  // tasks: publishes written with one send, at most

bool write_all(int fd, const uint8_t* p, size_t n);

// Appends one basic.publish (method, content header and body frames) to out,
// encoded by rabbitmq-c's own codec; the body fits in one frame.
void encode_publish(std::vector<uint8_t>& out, amqp_channel_t ch, amqp_basic_publish_t& m, amqp_basic_properties_t& p,
                    amqp_bytes_t body) {
  uint8_t tmp[16384];
  auto put_frame = [&](uint8_t type, const uint8_t* payload, size_t n) {
    const uint8_t h[7] = {type, uint8_t(ch >> 8), uint8_t(ch), uint8_t(n >> 24), uint8_t(n >> 16), uint8_t(n >> 8),
                          uint8_t(n)};
    out.insert(out.end(), h, h + 7);
    out.insert(out.end(), payload, payload + n);
    out.push_back(AMQP_FRAME_END);
  };
  const uint32_t id = AMQP_BASIC_PUBLISH_METHOD;
  tmp[0] = uint8_t(id >> 24), tmp[1] = uint8_t(id >> 16), tmp[2] = uint8_t(id >> 8), tmp[3] = uint8_t(id);
  int n = amqp_encode_method(AMQP_BASIC_PUBLISH_METHOD, &m, amqp_bytes_t{sizeof tmp - 4, tmp + 4});
  if (n < 0) throw std::runtime_error("encode basic.publish failed");
  put_frame(AMQP_FRAME_METHOD, tmp, 4 + size_t(n));
  const uint64_t size = body.len;
  tmp[0] = 0, tmp[1] = 60, tmp[2] = 0, tmp[3] = 0;  // class basic, weight 0
  for (int k = 0; k < 8; ++k) tmp[4 + k] = uint8_t(size >> (56 - 8 * k));
  n = amqp_encode_properties(AMQP_BASIC_CLASS, &p, amqp_bytes_t{sizeof tmp - 12, tmp + 12});
  if (n < 0) throw std::runtime_error("encode basic properties failed");
  put_frame(AMQP_FRAME_HEADER, tmp, 12 + size_t(n));
  put_frame(AMQP_FRAME_BODY, static_cast<const uint8_t*>(body.bytes), body.len);
}

// Tasks: a native client speaking Celery's message protocol 2 (JSON bodies) for
// task --task (bench.add) on queue --queue (celery), results over the rpc://
// backend's way (exclusive reply queue, reply_to + correlation_id). One thread
// publishes (at most --window tasks without a result), one consumes results.
std::string run_tasks(const Opts& o) {
  long pid = o.integer("broker-pid", 0);
  uint64_t count = uint64_t(o.integer("count", 10000));
  uint64_t window = uint64_t(o.integer("window", 1000));
  double timeout = o.num("timeout", 300);
  std::string task = o.get("task", "bench.add"), queue = o.get("queue", "celery");
  char host[128] = "localhost";
  gethostname(host, sizeof host - 1);
  std::string origin = "mb_loadgen@" + std::string(host);

  Conn rc;  // results connection: owns the exclusive reply queue
  rc.open(o);
  rc.declare_queue(queue, true);  // as Celery declares it: durable, not exclusive
  amqp_queue_declare_ok_t* ok =
      amqp_queue_declare(rc.c, Conn::ch, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
  rc.check("queue.declare (reply)");
  std::string reply(static_cast<char*>(ok->queue.bytes), ok->queue.len);
  rc.consume(reply, true);

  std::atomic<uint64_t> results{0}, failures{0};
  std::string prefix = "mbl-" + std::to_string(getpid()) + "-" + std::to_string(now_ns() % 1000000) + "-";

  Conn pc;
  pc.open(o);
  // Publishes are encoded here and written in batches straight to the socket
  // (one send for up to kPublishBatch tasks, as a client with a buffered
  // writer does), not one send per frame: the benchmark measures the worker
  // and the broker, not this client's syscalls.
  std::vector<uint8_t> wbuf;
  auto publish = [&](uint64_t i) {
    std::string id = prefix + std::to_string(i);
    std::string args = "(" + std::to_string(i) + ", " + std::to_string(i) + ")";
    std::string body = "[[" + std::to_string(i) + ", " + std::to_string(i) +
                       "], {}, {\"callbacks\": null, \"errbacks\": null, \"chain\": null, \"chord\": null}]";
    amqp_field_value_t tl[2];
    tl[0].kind = AMQP_FIELD_KIND_VOID;
    tl[1].kind = AMQP_FIELD_KIND_VOID;
    amqp_table_entry_t h[10];
    int n = 0;
    auto str = [&](const char* k, const std::string& v) {
      h[n].key = amqp_cstring_bytes(k);
      h[n].value.kind = AMQP_FIELD_KIND_UTF8;
      h[n].value.value.bytes = amqp_cstring_bytes(v.c_str());
      ++n;
    };
    str("lang", "py");
    str("task", task);
    str("id", id);
    str("root_id", id);
    str("argsrepr", args);
    str("kwargsrepr", "{}");
    str("origin", origin);
    h[n].key = amqp_cstring_bytes("retries");
    h[n].value.kind = AMQP_FIELD_KIND_I32;
    h[n].value.value.i32 = 0;
    ++n;
    h[n].key = amqp_cstring_bytes("ignore_result");
    h[n].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    h[n].value.value.boolean = 0;
    ++n;
    h[n].key = amqp_cstring_bytes("timelimit");
    h[n].value.kind = AMQP_FIELD_KIND_ARRAY;
    h[n].value.value.array.num_entries = 2;
    h[n].value.value.array.entries = tl;
    ++n;
    amqp_basic_properties_t p{};
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG | AMQP_BASIC_HEADERS_FLAG |
               AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_PRIORITY_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG |
               AMQP_BASIC_REPLY_TO_FLAG;
    p.content_type = amqp_cstring_bytes("application/json");
    p.content_encoding = amqp_cstring_bytes("utf-8");
    p.headers.num_entries = n;
    p.headers.entries = h;
    p.delivery_mode = 2;
    p.priority = 0;
    p.correlation_id = amqp_cstring_bytes(id.c_str());
    p.reply_to = amqp_cstring_bytes(reply.c_str());
    amqp_basic_publish_t m{};
    m.exchange = amqp_cstring_bytes("");
    m.routing_key = amqp_cstring_bytes(queue.c_str());
    encode_publish(wbuf, Conn::ch, m, p, amqp_cstring_bytes(body.c_str()));
  };
  auto send_published = [&] {
    if (!write_all(pc.fd, wbuf.data(), wbuf.size())) throw std::runtime_error("publish: send failed");
    wbuf.clear();
  };

  // Reads result messages until `want` results arrived or the deadline passes.
  std::function<void()> room_signal;  // set once the producer runs: wakes it when the window has room
  auto collect = [&](uint64_t want, int64_t deadline, bool blocking_only_once) {
    std::string body;
    uint64_t remaining = 0;
    bool in_msg = false;
    while (results.load() < want && now_ns() < deadline && !g_stop) {
      amqp_frame_t f;
      timeval tv{0, 100000};
      int st = amqp_simple_wait_frame_noblock(rc.c, &f, &tv);
      if (st == AMQP_STATUS_TIMEOUT) {
        if (blocking_only_once) return;
        continue;
      }
      if (st != AMQP_STATUS_OK) throw std::runtime_error(std::string("results: ") + amqp_error_string2(st));
      if (f.frame_type == AMQP_FRAME_METHOD) {
        if (f.payload.method.id == AMQP_BASIC_DELIVER_METHOD) {
          in_msg = true;
          body.clear();
        } else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                   f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
          throw std::runtime_error("results: closed by server");
        }
      } else if (f.frame_type == AMQP_FRAME_HEADER && in_msg) {
        remaining = f.payload.properties.body_size;
      } else if (f.frame_type == AMQP_FRAME_BODY && in_msg) {
        body.append(static_cast<char*>(f.payload.body_fragment.bytes), f.payload.body_fragment.len);
        remaining -= std::min<uint64_t>(remaining, f.payload.body_fragment.len);
      }
      if (in_msg && remaining == 0 && f.frame_type != AMQP_FRAME_METHOD) {
        in_msg = false;
        if (body.find("\"SUCCESS\"") == std::string::npos) failures.fetch_add(1);
        results.fetch_add(1);
        if (room_signal) room_signal();
        amqp_maybe_release_buffers_on_channel(rc.c, Conn::ch);
      }
    }
  };

  // Warm-up: one task through, so the worker is known to be consuming.
  publish(0);
  send_published();
  collect(1, now_ns() + int64_t(timeout * 1e9), false);
  if (results.load() < 1) throw std::runtime_error("no result for the warm-up task within the timeout");
  results = 0;
  failures = 0;

  CpuWindow cpu(pid);
  int64_t deadline = now_ns() + int64_t(timeout * 1e9);
  std::atomic<uint64_t> sent{0};
  // A full window puts the producer to sleep until a quarter of it is free
  // again: one wake-up per batch of results, not a poll every 100 us.
  const uint64_t refill = std::max<uint64_t>(1, window / 4);
  std::mutex room_mu;
  std::condition_variable room_cv;
  std::atomic<bool> producer_waiting{false};
  room_signal = [&] {
    if (producer_waiting.load() && sent.load() - results.load() + refill <= window) {
      std::lock_guard lk(room_mu);
      room_cv.notify_one();
    }
  };
  std::thread producer([&] {
    try {
      for (uint64_t i = 1; i <= count && !g_stop && now_ns() < deadline;) {
        if (i - 1 - results.load() >= window) {
          std::unique_lock lk(room_mu);
          producer_waiting = true;
          while (i - 1 - results.load() + refill > window && !g_stop && now_ns() < deadline)
            room_cv.wait_for(lk, std::chrono::milliseconds(10));
          producer_waiting = false;
          continue;
        }
        uint64_t n = std::min<uint64_t>({window - (i - 1 - results.load()), count - i + 1, kPublishBatch});
        for (uint64_t k = 0; k < n; ++k) publish(i + k);
        send_published();
        i += n;
        sent.store(i - 1);
      }
    } catch (const std::exception& e) {
      set_error(e.what());
    }
  });
  try {
    collect(count, deadline, false);
  } catch (const std::exception& e) {
    set_error(e.what());
  }
  double wall = cpu.wall(), ccpu = cpu.client(), bcpu = cpu.broker();
  g_stop = true;
  producer.join();
  std::string err;
  {
    std::lock_guard lk(g_err_mu);
    err = g_error;
  }
  if (err.empty() && results.load() < count)
    err = "only " + std::to_string(results.load()) + " of " + std::to_string(count) + " results";
  if (err.empty() && failures.load()) err = std::to_string(failures.load()) + " results were not SUCCESS";
  pc.close();
  rc.close();
  Json j;
  j.s("scenario", "tasks").s("client", "mb_loadgen").b("ok", err.empty());
  if (!err.empty()) j.s("error", err);
  j.s("task", task)
      .i("tasks", long(count))
      .i("results", long(results.load()))
      .i("window", long(window))
      .n("total_s", wall)
      .n("tasks_per_s", double(results.load()) / wall)
      .n("client_cpu", ccpu)
      .n("broker_cpu", bcpu);
  return j.str();
}

// ---------------------------------------------------------------- selftest
// The client's own ceiling: a minimal fake AMQP server in this process answers
// the handshake, then (consumer test) writes pre-encoded deliveries as fast as
// the socket takes them, or (publisher test) reads and discards publishes. The
// rates measured are what one mb_loadgen consumer / producer thread can do with
// an infinitely fast broker (the fake server takes part of the CPU too).

struct Buf {
  std::vector<uint8_t> b;
  void u8(uint8_t v) { b.push_back(v); }
  void u16(uint16_t v) { u8(uint8_t(v >> 8)), u8(uint8_t(v)); }
  void u32(uint32_t v) { u16(uint16_t(v >> 16)), u16(uint16_t(v)); }
  void u64(uint64_t v) { u32(uint32_t(v >> 32)), u32(uint32_t(v)); }
  void sstr(const std::string& s) { u8(uint8_t(s.size())), b.insert(b.end(), s.begin(), s.end()); }
  void lstr(const std::string& s) { u32(uint32_t(s.size())), b.insert(b.end(), s.begin(), s.end()); }
};

void frame(std::vector<uint8_t>& out, uint8_t type, uint16_t ch, const std::vector<uint8_t>& payload) {
  const auto n = uint32_t(payload.size());
  const uint8_t head[7] = {type, uint8_t(ch >> 8), uint8_t(ch), uint8_t(n >> 24), uint8_t(n >> 16), uint8_t(n >> 8),
                           uint8_t(n)};
  out.insert(out.end(), head, head + 7);
  out.insert(out.end(), payload.begin(), payload.end());
  out.push_back(AMQP_FRAME_END);
}

// What a minimal server (selftest's fake server, the null broker) writes: its
// connection.start, and its replies to the methods a client sends around its
// traffic. answer_method appends the reply to (cls, mid) and returns true, or
// returns false for a method it does not answer (publish, ack, ...). args is
// the method's arguments (after class and method id).
constexpr const char* kFakeConsumerTag = "ctag";
constexpr uint32_t kFakeFrameMax = 131072;  // the frame_max its connection.tune offers

void append_method(std::vector<uint8_t>& out, uint16_t ch, uint16_t cls, uint16_t mid,
                   const std::function<void(Buf&)>& args) {
  Buf m;
  m.u16(cls), m.u16(mid);
  args(m);
  frame(out, AMQP_FRAME_METHOD, ch, m.b);
}

void append_connection_start(std::vector<uint8_t>& out) {
  append_method(out, 0, 10, 10, [](Buf& m) { m.u8(0), m.u8(9), m.u32(0), m.lstr("PLAIN"), m.lstr("en_US"); });
}

bool answer_method(std::vector<uint8_t>& out, uint16_t ch, uint16_t cls, uint16_t mid, const uint8_t* args,
                   size_t args_len) {
  auto none = [](Buf&) {};
  switch ((uint32_t(cls) << 16) | mid) {
    case (10u << 16) | 11: append_method(out, 0, 10, 30, [](Buf& m) { m.u16(2047), m.u32(kFakeFrameMax), m.u16(0); }); return true;
    case (10u << 16) | 40: append_method(out, 0, 10, 41, [](Buf& m) { m.sstr(""); }); return true;
    case (10u << 16) | 50: append_method(out, 0, 10, 51, none); return true;
    case (20u << 16) | 10: append_method(out, ch, 20, 11, [](Buf& m) { m.u32(0); }); return true;
    case (20u << 16) | 40: append_method(out, ch, 20, 41, none); return true;
    case (50u << 16) | 10: {  // queue.declare: reserved short, queue name, ...
      std::string q;
      if (args_len >= 3 && args_len >= 3u + args[2]) q.assign(reinterpret_cast<const char*>(args + 3), args[2]);
      append_method(out, ch, 50, 11, [&](Buf& m) { m.sstr(q), m.u32(0), m.u32(0); });
      return true;
    }
    case (50u << 16) | 40: append_method(out, ch, 50, 41, [](Buf& m) { m.u32(0); }); return true;
    case (60u << 16) | 10: append_method(out, ch, 60, 11, none); return true;
    case (60u << 16) | 20: append_method(out, ch, 60, 21, [](Buf& m) { m.sstr(kFakeConsumerTag); }); return true;
    default: return false;
  }
}

bool write_all(int fd, const uint8_t* p, size_t n) {
  while (n) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= size_t(w);
  }
  return true;
}

bool read_all(int fd, uint8_t* p, size_t n) {
  while (n) {
    ssize_t r = ::recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= size_t(r);
  }
  return true;
}

// Serves one connection. mode "deliver": after basic.consume, writes `count`
// deliveries of `size` bytes. Counts bytes of publishes it discards.
void fake_server_conn(int fd, const std::string& mode, uint64_t count, size_t size, std::atomic<uint64_t>* rx_bytes) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  uint8_t hdr[8];
  if (!read_all(fd, hdr, 8)) return ::close(fd), void();
  std::vector<uint8_t> out;
  append_connection_start(out);
  write_all(fd, out.data(), out.size());
  std::thread blaster;
  std::vector<uint8_t> in(1 << 20);
  size_t have = 0, pos = 0;
  for (;;) {
    // buffered frame reader
    if (have - pos < 7 || have - pos < 8 + ((uint32_t(in[pos + 3]) << 24) | (uint32_t(in[pos + 4]) << 16) |
                                            (uint32_t(in[pos + 5]) << 8) | in[pos + 6])) {
      std::memmove(in.data(), in.data() + pos, have - pos);
      have -= pos;
      pos = 0;
      if (have >= 7) {
        size_t need = 8 + ((uint32_t(in[3]) << 24) | (uint32_t(in[4]) << 16) | (uint32_t(in[5]) << 8) | in[6]);
        if (need > in.size()) in.resize(need);
      }
      ssize_t r = ::recv(fd, in.data() + have, in.size() - have, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      have += size_t(r);
      continue;
    }
    const uint8_t* fh = in.data() + pos;
    uint32_t size_in = (uint32_t(fh[3]) << 24) | (uint32_t(fh[4]) << 16) | (uint32_t(fh[5]) << 8) | fh[6];
    uint16_t ch = uint16_t((fh[1] << 8) | fh[2]);
    const uint8_t* pl = fh + 7;
    pos += 8 + size_in;
    rx_bytes->fetch_add(size_in + 8, std::memory_order_relaxed);
    if (fh[0] != AMQP_FRAME_METHOD) continue;
    if (size_in < 4) continue;
    uint16_t cls = uint16_t((pl[0] << 8) | pl[1]), mid = uint16_t((pl[2] << 8) | pl[3]);
    const bool closing = cls == 10 && mid == 50;
    if (closing && blaster.joinable()) blaster.join();  // every delivery before close-ok
    out.clear();
    if (answer_method(out, ch, cls, mid, pl + 4, size_in - 4)) write_all(fd, out.data(), out.size());
    if (closing) break;
    if (cls == 60 && mid == 20 && mode == "deliver") {
      blaster = std::thread([fd, ch, count, size] {
        // One batch of 256 deliveries, encoded once and written again and again
        // (the client does not check delivery tags), so the server costs little CPU.
        std::vector<uint8_t> body(size, 'x'), batch;
        for (int k = 0; k < 256; ++k) {
          Buf m;
          m.u16(60), m.u16(60), m.sstr(kFakeConsumerTag), m.u64(uint64_t(k) + 1), m.u8(0), m.sstr(""), m.sstr("q");
          frame(batch, AMQP_FRAME_METHOD, ch, m.b);
          Buf h;
          h.u16(60), h.u16(0), h.u64(size), h.u16(0);
          frame(batch, AMQP_FRAME_HEADER, ch, h.b);
          frame(batch, AMQP_FRAME_BODY, ch, body);
        }
        for (uint64_t sent = 0; sent < count; sent += 256)
          if (!write_all(fd, batch.data(), batch.size())) return;
      });
    }
  }
  if (blaster.joinable()) blaster.join();
  ::close(fd);
}

std::string run_selftest(const Opts& o0) {
  uint64_t count = uint64_t(o0.integer("count", 3000000));
  double duration = o0.num("duration", 3);
  size_t size = size_t(o0.integer("size", 100));
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t al = sizeof a;
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) || ::listen(lfd, 16) ||
      ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &al))
    throw std::runtime_error("selftest: cannot listen");
  Opts o = o0;
  o.kv["port"] = std::to_string(ntohs(a.sin_port));
  o.kv["host"] = "127.0.0.1";
  std::atomic<uint64_t> rx{0};
  std::string mode;
  std::mutex mode_mu;
  std::thread acceptor([&] {
    for (int i = 0; i < 2; ++i) {
      int fd = ::accept(lfd, nullptr, nullptr);
      if (fd < 0) return;
      std::string m;
      {
        std::lock_guard lk(mode_mu);
        m = mode;
      }
      std::thread(fake_server_conn, fd, m, count, size, &rx).detach();
    }
  });

  // Consumer: count deliveries through consumer_thread (manual ack every 50).
  {
    std::lock_guard lk(mode_mu);
    mode = "deliver";
  }
  Counter consumed;
  std::atomic<int> ready{0};
  ConsumerCfg cfg;
  cfg.queue = "q";
  cfg.stop_after = count;
  int64_t t0 = now_ns();
  double c0 = self_cpu_s();
  std::thread ct(consumer_thread, std::cref(o), cfg, &consumed, &ready);
  ct.join();
  double cons_wall = (now_ns() - t0) / 1e9, cons_cpu = (self_cpu_s() - c0) / cons_wall;
  double cons_thread = max_thread_share();

  // Producer: raw batched publishes for `duration` seconds into a discarding server.
  {
    std::lock_guard lk(mode_mu);
    mode = "discard";
  }
  uint64_t published = 0;
  double pub_wall = 0, pub_thread = 0;
  {
    Conn cn;
    cn.open(o);
    Publisher pub(cn.fd, "", "q", false);
    std::vector<uint8_t> body(size, 'x');
    double tc0 = thread_cpu_s();
    int64_t p0 = now_ns(), end = p0 + int64_t(duration * 1e9);
    while (now_ns() < end) {
      for (int j = 0; j < 64; ++j) pub.add(body.data(), body.size());
      pub.flush();
      published += 64;
    }
    pub_wall = (now_ns() - p0) / 1e9;
    pub_thread = (thread_cpu_s() - tc0) / pub_wall;
    cn.close();
  }
  ::shutdown(lfd, SHUT_RDWR);
  ::close(lfd);
  acceptor.join();
  std::string err;
  {
    std::lock_guard lk(g_err_mu);
    err = g_error;
  }
  Json j;
  j.s("scenario", "selftest").b("ok", err.empty());
  if (!err.empty()) j.s("error", err);
  j.i("size", long(size))
      .n("consumer_msgs_per_s", consumed.v.load() / cons_wall)
      .n("consumer_process_cpu", cons_cpu)
      .n("consumer_thread_cpu", cons_thread)
      .n("consumer_msgs_per_cpu_s", consumed.v.load() / cons_wall / std::max(cons_thread, 1e-9))
      .n("producer_msgs_per_s", published / pub_wall)
      .n("producer_thread_cpu", pub_thread)
      .n("producer_msgs_per_cpu_s", published / pub_wall / std::max(pub_thread, 1e-9));
  return j.str();
}

// ---------------------------------------------------------------- null broker
// A reference for the latency and connections scenarios: the same client code
// against a null broker, which answers the handshake and the few methods the
// scenarios send, and turns each publish into a delivery to the one consumer
// (method frame rewritten, content frames copied) with one send() per batch of
// input; acks are read and dropped. No queue, no routing, no allocation per
// message: what is left is the loopback TCP hops and the wake-ups of the
// processes. It is not a strict lower bound: minibroker measured lower than it
// in some runs.

struct NullConn {
  int fd = -1;
  std::vector<uint8_t> in, out;
  size_t have = 0;
  bool relaying = false;  // between a publish and the end of its content
};

// Serves until killed: by the parent when the scenario ends, or through
// PR_SET_PDEATHSIG when the parent dies.
[[noreturn]] void null_broker(int lfd) {
  int ep = ::epoll_create1(0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = lfd;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  std::map<int, NullConn> conns;
  int consumer = -1;
  uint16_t consumer_ch = 0;
  uint64_t delivery_tag = 0;
  Buf deliver;  // a delivery's method payload, reused: no allocation per message once warm
  auto drop = [&](int fd) {
    ::close(fd);
    conns.erase(fd);
    if (fd == consumer) consumer = -1;
  };
  for (;;) {
    epoll_event ready[16];
    int n = ::epoll_wait(ep, ready, 16, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) _exit(1);
    for (int i = 0; i < n; ++i) {
      int fd = ready[i].data.fd;
      if (fd == lfd) {
        int cfd = ::accept(lfd, nullptr, nullptr);
        if (cfd < 0) continue;
        int one = 1;
        ::setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns[cfd].fd = cfd;
        conns[cfd].in.resize(4096);  // grown below for a larger frame
        ev.data.fd = cfd;
        ::epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);
        continue;
      }
      NullConn& c = conns[fd];
      ssize_t r = ::recv(fd, c.in.data() + c.have, c.in.size() - c.have, 0);
      if (r <= 0) {
        if (r < 0 && errno == EINTR) continue;
        drop(fd);
        continue;
      }
      c.have += size_t(r);
      size_t pos = 0;
      bool closing = false;
      if (c.in[0] == 'A') {  // protocol header
        if (c.have < 8) continue;
        pos = 8;
        append_connection_start(c.out);
      }
      NullConn* dst = consumer >= 0 ? &conns[consumer] : nullptr;
      while (c.have - pos >= 7) {
        const uint8_t* fh = c.in.data() + pos;
        uint32_t len = (uint32_t(fh[3]) << 24) | (uint32_t(fh[4]) << 16) | (uint32_t(fh[5]) << 8) | fh[6];
        if (len > kFakeFrameMax) {  // past the frame_max it tuned: not a client to keep
          closing = true;
          break;
        }
        if (c.have - pos < 8 + size_t(len)) {
          if (8 + size_t(len) > c.in.size()) c.in.resize(8 + size_t(len));
          break;
        }
        uint16_t ch = uint16_t((fh[1] << 8) | fh[2]);
        const uint8_t* pl = fh + 7;
        pos += 8 + len;
        if (fh[0] != AMQP_FRAME_METHOD) {
          if (c.relaying && dst != nullptr) {  // content of a publish: copied onto the consumer's channel
            size_t at = dst->out.size();
            dst->out.insert(dst->out.end(), fh, fh + 8 + len);
            dst->out[at + 1] = uint8_t(consumer_ch >> 8), dst->out[at + 2] = uint8_t(consumer_ch);
          }
          continue;
        }
        if (len < 4) continue;
        uint16_t cls = uint16_t((pl[0] << 8) | pl[1]), mid = uint16_t((pl[2] << 8) | pl[3]);
        if (cls == 60 && mid == 40) {  // basic.publish: reserved, exchange, routing key, bits
          c.relaying = true;
          const uint8_t* ex = pl + 6;
          const uint8_t* end = pl + len;
          const uint8_t* rk = ex < end ? ex + 1 + ex[0] : end;
          if (dst == nullptr || rk >= end || rk + 1 + rk[0] > end) continue;  // nobody to deliver to, or malformed
          deliver.b.clear();
          deliver.u16(60), deliver.u16(60), deliver.sstr(kFakeConsumerTag), deliver.u64(++delivery_tag), deliver.u8(0);
          deliver.b.insert(deliver.b.end(), ex, rk + 1 + rk[0]);  // exchange and routing key as published
          frame(dst->out, AMQP_FRAME_METHOD, consumer_ch, deliver.b);
        } else if (answer_method(c.out, ch, cls, mid, pl + 4, len - 4)) {
          if (cls == 10 && mid == 50) closing = true;
          if (cls == 60 && mid == 20) consumer = fd, consumer_ch = ch, dst = &c;
        }  // anything else (basic.ack) is dropped
      }
      std::memmove(c.in.data(), c.in.data() + pos, c.have - pos);
      c.have -= pos;
      // Only this connection's replies and the consumer's deliveries are ever
      // pending: no walk over every connection per read.
      for (NullConn* oc : {&c, dst})
        if (oc != nullptr && !oc->out.empty()) {
          write_all(oc->fd, oc->out.data(), oc->out.size());
          oc->out.clear();
        }
      if (closing) drop(fd);
    }
  }
}

// Runs a scenario against a null broker forked from this process: same options,
// same JSON under its own scenario name; broker_cpu is the null broker's.
template <class Scenario>
std::string with_null_broker(const Opts& o0, Scenario run) {
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) || ::listen(lfd, 128) ||
      ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &al))
    throw std::runtime_error("null broker: cannot listen");
  pid_t child = ::fork();  // before any thread of this process starts
  if (child < 0) throw std::runtime_error("null broker: fork failed");
  if (child == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    null_broker(lfd);
  }
  ::close(lfd);
  Opts o = o0;
  o.kv["host"] = "127.0.0.1";
  o.kv["port"] = std::to_string(ntohs(a.sin_port));
  o.kv["broker-pid"] = std::to_string(child);
  struct Reap {
    pid_t pid;
    ~Reap() { ::kill(pid, SIGKILL), ::waitpid(pid, nullptr, 0); }
  } reap{child};
  return run(o);
}

// The null broker alone, on --port, until killed (to run it as the brokers are run).
[[noreturn]] void run_null_broker(const Opts& o) {
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(uint16_t(o.integer("port", 5672)));
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) || ::listen(lfd, 16)) {
    std::perror("null-broker: cannot listen");
    std::exit(1);
  }
  null_broker(lfd);
}

std::string run_probe(const Opts& o) {
  int64_t t0 = now_ns();
  Conn c;
  c.open(o);
  double s = (now_ns() - t0) / 1e9;
  c.close();
  Json j;
  j.s("scenario", "probe").b("ok", true).n("handshake_ms", s * 1000);
  return j.str();
}

void raise_nofile() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

int usage() {
  std::fprintf(stderr,
               "usage: mb_loadgen SCENARIO [--key value]...\n"
               "scenarios: transient persistent latency latency-null null-broker fanout backlog connections\n"
               "           connections-null tasks probe selftest\n"
               "common: --host --port --user --password --vhost --broker-pid\n"
               "see the comment at the top of bench/mb_loadgen.cpp for each scenario's options\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  std::string sc = argv[1];
  if (sc == "-h" || sc == "--help") return usage(), 0;
  Opts o;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0 || i + 1 >= argc) {
      std::fprintf(stderr, "bad argument: %s\n", a.c_str());
      return usage();
    }
    o.kv[a.substr(2)] = argv[++i];
  }
  raise_nofile();
  std::string out;
  try {
    if (sc == "transient") out = run_throughput(o, "transient", false, false);
    else if (sc == "persistent") out = run_throughput(o, "persistent", true, false);
    else if (sc == "fanout") out = run_throughput(o, "fanout", false, true);
    else if (sc == "latency") out = run_latency(o);
    else if (sc == "latency-null")
      out = with_null_broker(o, [](const Opts& no) { return run_latency(no, "latency_null"); });
    else if (sc == "connections-null")
      out = with_null_broker(o, [](const Opts& no) { return run_connections(no, "connections_null"); });
    else if (sc == "null-broker") run_null_broker(o);
    else if (sc == "backlog") out = run_backlog(o);
    else if (sc == "connections") out = run_connections(o);
    else if (sc == "tasks") out = run_tasks(o);
    else if (sc == "probe") out = run_probe(o);
    else if (sc == "selftest") out = run_selftest(o);
    else return usage();
  } catch (const std::exception& e) {
    Json j;
    j.s("scenario", sc).b("ok", false).s("error", e.what());
    out = j.str();
  }
  std::printf("%s\n", out.c_str());
  std::fflush(stdout);
  return out.find("\"ok\":true") != std::string::npos ? 0 : 1;
}
