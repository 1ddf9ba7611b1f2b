// prefork_pool.cpp: fork, feed and replace the child processes.
#include "worker/prefork_pool.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <dirent.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "common/task/capnp_codec.hpp"
#include "proto/pool.capnp.h"
#include "worker/child.hpp"
#include "worker/executor.hpp"

namespace mb::worker {
namespace {

constexpr std::size_t kReadChunk = 64 * 1024;
constexpr std::uint32_t kMaxSegments = 512;
constexpr int kChildFd = 3;

std::uint32_t le32(const char* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;  // Cap'n Proto framing is little-endian, as is every host we build for
}

// Size in bytes of the first stream-framed message in b, or 0 if b does not
// yet hold its whole segment table. Throws on a nonsensical header.
std::size_t framed_size(std::string_view b) {
  if (b.size() < 4) return 0;
  std::uint32_t nseg = le32(b.data()) + 1;
  if (nseg > kMaxSegments) throw std::runtime_error("child sent a bad frame header");
  std::size_t header = (4 + 4 * static_cast<std::size_t>(nseg) + 7) & ~static_cast<std::size_t>(7);
  if (b.size() < header) return 0;
  std::size_t total = header;
  for (std::uint32_t i = 0; i < nseg; ++i) total += 8 * static_cast<std::size_t>(le32(b.data() + 4 + 4 * i));
  return total;
}

// Closes every descriptor above kChildFd (the AMQP socket above all: a child
// must not keep the broker connection open when the parent dies).
void close_inherited_fds() {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, kChildFd + 1, ~0U, 0) == 0) return;
#endif
  std::vector<int> fds;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) {
      int fd = std::atoi(e->d_name);
      if (fd > kChildFd) fds.push_back(fd);
    }
    closedir(d);
  }
  for (int fd : fds) close(fd);
}

std::string describe_status(int status) {
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    return "signal " + std::to_string(sig) + " (" + (sigabbrev_np(sig) ? std::string("SIG") + sigabbrev_np(sig) : "?") + ")";
  }
  if (WIFEXITED(status)) return "exitcode " + std::to_string(WEXITSTATUS(status));
  return "status " + std::to_string(status);
}

}  // namespace

PreforkPool::PreforkPool(asio::io_context& io, const TaskRegistry& registry, PreforkOptions options)
    : io_(io), registry_(registry), options_(std::move(options)) {
  if (options_.concurrency == 0) options_.concurrency = 1;
}

PreforkPool::~PreforkPool() { terminate(); }

void PreforkPool::start(DoneFn on_done) {
  on_done_ = std::move(on_done);
  children_.resize(options_.concurrency);
  for (std::size_t i = 0; i < children_.size(); ++i) spawn(i);
}

void PreforkPool::spawn(std::size_t slot) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    throw std::runtime_error(std::string("socketpair: ") + std::strerror(errno));
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(0);
    // The parent coordinates shutdown: a terminal's Ctrl-C must not kill
    // children mid-task, and the parent's signal handlers are not ours.
    for (int sig = 1; sig < NSIG; ++sig) signal(sig, SIG_DFL);  // a crash must kill the child, not run a handler
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (sv[1] != kChildFd) dup2(sv[1], kChildFd);
    close_inherited_fds();
    child_main(kChildFd, registry_, options_.hostname, options_.max_tasks_per_child);
  }
  close(sv[1]);
  auto c = std::make_shared<Child>();
  c->pid = pid;
  c->sock = std::make_unique<asio::local::stream_protocol::socket>(io_, asio::local::stream_protocol(), sv[0]);
  c->timer = std::make_unique<asio::steady_timer>(io_);
  children_[slot] = c;
  spdlog::debug("pool: child {} started in slot {}", pid, slot);
  read_more(slot, c);
  if (on_slot_free_) asio::post(io_, on_slot_free_);
}

void PreforkPool::read_more(std::size_t slot, std::shared_ptr<Child> c) {
  auto buf = std::make_shared<std::array<char, kReadChunk>>();
  c->sock->async_read_some(asio::buffer(*buf), [this, slot, c, buf](std::error_code ec, std::size_t n) {
    if (c->dead) return;
    if (ec) {
      on_child_gone(slot, c);
      return;
    }
    c->rbuf.append(buf->data(), n);
    try {
      for (;;) {
        std::size_t size = framed_size(c->rbuf);
        if (size == 0 || c->rbuf.size() < size) break;
        std::string frame = c->rbuf.substr(0, size);
        c->rbuf.erase(0, size);
        on_message(slot, *c, frame);
        if (c->dead) return;
      }
    } catch (const std::exception& e) {
      spdlog::error("pool: bad message from child {}: {}", c->pid, e.what());
      kill(c->pid, SIGKILL);
    }
    read_more(slot, c);
  });
}

void PreforkPool::on_message(std::size_t /*slot*/, Child& c, std::string_view frame) {
  auto words = kj::heapArray<capnp::word>(frame.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), frame.data(), frame.size());
  capnp::FlatArrayMessageReader reader(words, capnp::ReaderOptions{.traversalLimitInWords = 1ull << 30});
  auto ev = reader.getRoot<proto::Event>();
  if (!ev.isDone()) return;
  auto d = ev.getDone();
  if (!c.job || c.job->seq != d.getSeq()) {
    spdlog::warn("pool: child {} reported a job it was not given", c.pid);
    return;
  }
  JobDone done;
  done.seq = d.getSeq();
  done.result = task::read_result(d.getResult());
  done.retry_countdown = d.getRetryCountdown();
  c.job.reset();
  c.timer->cancel();
  if (options_.max_tasks_per_child > 0 && ++c.tasks >= options_.max_tasks_per_child) c.retiring = true;
  --busy_;
  on_done_(std::move(done));
  maybe_finish_stop();
}

void PreforkPool::on_child_gone(std::size_t slot, std::shared_ptr<Child> c) {
  c->dead = true;
  c->timer->cancel();
  std::error_code ignored;
  c->sock->close(ignored);
  int status = 0;
  waitpid(c->pid, &status, 0);
  if (c->job) {
    Job job = std::move(*c->job);
    c->job.reset();
    --busy_;
    JobDone done;
    done.seq = job.seq;
    if (c->timed_out) {
      spdlog::error("pool: task {}[{}] passed its hard time limit ({}s); child {} killed", job.task->name,
                    job.task->id, job.time_limit, c->pid);
      done.result = make_error_result(*job.task, task::State::kFailure, "TimeLimitExceeded",
                                      "TimeLimitExceeded(" + std::to_string(job.time_limit) + ")", options_.hostname);
    } else {
      std::string why = describe_status(status);
      spdlog::error("pool: child {} died running {}[{}]: {}", c->pid, job.task->name, job.task->id, why);
      done.result = make_error_result(*job.task, task::State::kFailure, "WorkerLostError",
                                      "Worker exited prematurely: " + why, options_.hostname);
    }
    if (!terminated_ && !stopping_) spawn(slot);  // before reporting, so the slot is free again
    if (!terminated_) on_done_(std::move(done));
    maybe_finish_stop();
    return;
  }
  if (terminated_) return;
  if (!stopping_) spawn(slot);
  maybe_finish_stop();
}

bool PreforkPool::has_free_slot() const {
  if (stopping_) return false;
  for (const auto& c : children_)
    if (c && !c->dead && !c->job && !c->retiring) return true;
  return false;
}

void PreforkPool::submit(Job job) {
  std::shared_ptr<Child> c;
  for (auto& x : children_)
    if (x && !x->dead && !x->job && !x->retiring) {
      c = x;
      break;
    }
  if (!c) throw std::logic_error("PreforkPool::submit with no free child");
  capnp::MallocMessageBuilder mb;
  auto run = mb.initRoot<proto::Command>().initRun();
  run.setSeq(job.seq);
  task::write_task(run.initTask(), *job.task);
  run.setSoftTimeLimit(job.soft_time_limit);
  auto words = capnp::messageToFlatArray(mb);
  auto bytes = words.asBytes();
  c->wbuf.assign(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
  double limit = job.time_limit;
  c->job = std::move(job);
  c->timed_out = false;
  ++busy_;
  asio::async_write(*c->sock, asio::buffer(c->wbuf), [c](std::error_code ec, std::size_t) {
    if (ec && !c->dead) spdlog::warn("pool: write to child {} failed: {}", c->pid, ec.message());
  });
  if (limit > 0) {
    c->timer->expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(limit)));
    c->timer->async_wait([c](std::error_code ec) {
      if (ec || c->dead || !c->job) return;
      c->timed_out = true;
      kill(c->pid, SIGKILL);
    });
  }
}

void PreforkPool::stop(std::function<void()> done) {
  stopping_ = true;
  stop_done_ = std::move(done);
  maybe_finish_stop();
}

void PreforkPool::maybe_finish_stop() {
  if (!stopping_ || busy_ > 0 || !stop_done_) return;
  for (auto& c : children_) {
    if (!c || c->dead) continue;
    c->dead = true;
    std::error_code ignored;
    c->sock->close(ignored);  // the child reads EOF and exits
    c->timer->cancel();
    int status = 0;
    waitpid(c->pid, &status, 0);
  }
  auto done = std::move(stop_done_);
  stop_done_ = nullptr;
  asio::post(io_, std::move(done));
}

void PreforkPool::terminate() {
  if (terminated_) return;
  terminated_ = true;
  for (auto& c : children_) {
    if (!c || c->dead) continue;
    c->dead = true;
    kill(c->pid, SIGKILL);
    std::error_code ignored;
    c->sock->close(ignored);
    c->timer->cancel();
    int status = 0;
    waitpid(c->pid, &status, 0);
  }
}

std::vector<pid_t> PreforkPool::child_pids() const {
  std::vector<pid_t> out;
  for (const auto& c : children_)
    if (c && !c->dead) out.push_back(c->pid);
  return out;
}

}  // namespace mb::worker
