// prefork_pool.hpp: the default pool. Child processes forked from the parent
// (which loaded the task libraries) run one task at a time; the parent talks
// to each over a socketpair with Cap'n Proto framing (pool.capnp). A child
// that dies mid-task gives a FAILURE WorkerLost; one past the hard time limit
// is killed and gives TimeLimitExceeded; either way a new child replaces it.
#pragma once

#include <sys/types.h>

#include <asio.hpp>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "worker/pool.hpp"
#include "worker/registry.hpp"

namespace mb::worker {

struct PreforkOptions {
  unsigned concurrency = 1;
  unsigned max_tasks_per_child = 0;  // 0: unlimited
  std::string hostname;
};

class PreforkPool : public Pool {
 public:
  // registry: HELD NOT OWNED, must outlive the pool.
  PreforkPool(asio::io_context& io, const TaskRegistry& registry, PreforkOptions options);
  ~PreforkPool() override;

  void start(DoneFn on_done) override;
  bool has_free_slot() const override;
  void submit(Job job) override;
  std::size_t running() const override { return busy_; }
  void stop(std::function<void()> done) override;
  void terminate() override;

  std::vector<pid_t> child_pids() const override;

 private:
  struct Child {
    pid_t pid = -1;
    std::unique_ptr<asio::local::stream_protocol::socket> sock;
    std::unique_ptr<asio::steady_timer> timer;
    std::string rbuf;
    std::string wbuf;
    std::optional<Job> job;
    bool timed_out = false;
    bool dead = false;
    bool retiring = false;  // reached max_tasks_per_child: exits after its last result
    unsigned tasks = 0;
  };

  void spawn(std::size_t slot);
  void read_more(std::size_t slot, std::shared_ptr<Child> c);
  void on_message(std::size_t slot, Child& c, std::string_view frame);
  void on_child_gone(std::size_t slot, std::shared_ptr<Child> c);
  void maybe_finish_stop();

  asio::io_context& io_;
  const TaskRegistry& registry_;
  PreforkOptions options_;
  DoneFn on_done_;
  std::vector<std::shared_ptr<Child>> children_;
  std::size_t busy_ = 0;
  bool stopping_ = false;
  bool terminated_ = false;
  std::function<void()> stop_done_;
};

}  // namespace mb::worker
