// store_bench: measures RocksDbStore the way the broker drives it (a measuring
// tool, not a test). One thread plays the broker's loop: completions come back
// through a post queue it runs, as asio::post would.
//
//   fill   : N persistent messages of SIZE bytes to one queue, a commit every
//            BATCH messages, at most INFLIGHT commits unconfirmed
//   reopen : close and open the directory (recovery scan of N entries)
//   drain  : page entries in (load_entries), load each body, ack, commit
//   confirm: C publishers each waiting for its confirm before the next
//            publish: messages per fsync is the group commit at work
//
// usage: store_bench [--dir DIR] [--count N] [--size BYTES] [--batch N]
//                    [--inflight N] [--keep]
#include <sys/resource.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <unistd.h>

#include "broker/store/rocksdb_store.hpp"

namespace {

using mb::store::RocksDbStore;
using mb::store::Status;
using Clock = std::chrono::steady_clock;

// The loop: post() from any thread, run_one() on the loop thread.
class Loop {
 public:
  void post(std::function<void()> fn) {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }
  void run_one() {
    std::function<void()> fn;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return !queue_.empty(); });
      fn = std::move(queue_.front());
      queue_.pop_front();
    }
    fn();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
};

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

long peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024;
}

[[noreturn]] void die(const Status& status, const char* what) {
  std::fprintf(stderr, "store_bench: %s: %s\n", what, status.to_string().c_str());
  std::exit(1);
}

struct Config {
  std::string dir;
  std::uint64_t count = 1'000'000;
  std::size_t size = 1024;
  std::uint64_t batch = 256;
  int inflight = 8;
  bool keep = false;
};

std::unique_ptr<RocksDbStore> open_store(const Config& config, Loop& loop) {
  std::unique_ptr<RocksDbStore> store;
  mb::store::RocksDbStoreOptions options;
  options.dir = config.dir;
  Status s = RocksDbStore::open(options, [&loop](std::function<void()> fn) { loop.post(std::move(fn)); }, store);
  if (!s.ok()) die(s, "open");
  return store;
}

// Waits until fewer than `limit` commits are unconfirmed.
void wait_inflight(Loop& loop, const int& inflight, int limit) {
  while (inflight >= limit) loop.run_one();
}

}  // namespace

int main(int argc, char** argv) {
  Config config;
  config.dir = "/tmp/store_bench." + std::to_string(getpid());
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "store_bench: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--dir") config.dir = next();
    else if (arg == "--count") config.count = std::stoull(next());
    else if (arg == "--size") config.size = std::stoull(next());
    else if (arg == "--batch") config.batch = std::stoull(next());
    else if (arg == "--inflight") config.inflight = std::stoi(next());
    else if (arg == "--keep") config.keep = true;
    else {
      std::fprintf(stderr, "usage: store_bench [--dir DIR] [--count N] [--size BYTES] [--batch N] [--inflight N] [--keep]\n");
      return 2;
    }
  }
  std::filesystem::remove_all(config.dir);
  Loop loop;
  auto store = open_store(config, loop);
  constexpr mb::store::QueueId kQueue = 1;

  // Body: varied bytes so compression does not flatter the figures.
  std::string body(config.size, '\0');
  std::uint64_t x = 88172645463325252ull;
  for (auto& c : body) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    c = static_cast<char>(x);
  }

  // ---- fill ----
  int inflight = 0;
  bool failed = false;
  auto on_done = [&](Status s) {
    --inflight;
    if (!s.ok()) failed = true;
  };
  auto before = store->counters();
  auto start = Clock::now();
  double cpu0 = cpu_seconds();
  for (std::uint64_t i = 1; i <= config.count; ++i) {
    body[0] = static_cast<char>(i);
    store->enqueue(kQueue, i, i, body);
    if (i % config.batch == 0 || i == config.count) {
      ++inflight;
      store->commit(on_done);
      wait_inflight(loop, inflight, config.inflight);
    }
  }
  wait_inflight(loop, inflight, 1);
  double secs = seconds_since(start);
  auto after = store->counters();
  if (failed) die(Status::io_error("a commit failed"), "fill");
  std::printf("fill:    %llu x %zu B in %.2f s = %.0f msg/s (%.1f MiB/s), CPU %.2f s, %llu fsyncs, %.1f msg/fsync, "
              "peak RSS %ld MiB\n",
              static_cast<unsigned long long>(config.count), config.size, secs, config.count / secs,
              config.count * config.size / secs / (1 << 20), cpu_seconds() - cpu0,
              static_cast<unsigned long long>(after.fsyncs - before.fsyncs),
              double(after.messages_written - before.messages_written) / double(after.fsyncs - before.fsyncs),
              peak_rss_mib());

  // ---- reopen ----
  store->close();
  store.reset();
  start = Clock::now();
  store = open_store(config, loop);
  secs = seconds_since(start);
  const auto& info = store->recovery_info();
  const auto queue_it = info.queues.find(kQueue);
  std::printf("reopen:  %.2f s, queue holds %llu entries, max message id %llu\n", secs,
              static_cast<unsigned long long>(queue_it == info.queues.end() ? 0 : queue_it->second.entries),
              static_cast<unsigned long long>(info.max_message_id));

  // ---- drain ----
  constexpr std::size_t kPage = 1024;
  std::vector<mb::store::QueueEntry> page;
  std::vector<mb::store::MessageId> ids;
  std::vector<std::optional<std::string>> blobs;
  std::uint64_t drained = 0, next_seq = 0, since_commit = 0;
  double load_secs = 0, get_secs = 0, wait_secs = 0;
  before = store->counters();
  start = Clock::now();
  cpu0 = cpu_seconds();
  for (;;) {
    page.clear();
    auto t0 = Clock::now();
    Status s = store->load_entries(kQueue, next_seq, kPage, page);
    load_secs += seconds_since(t0);
    if (!s.ok()) die(s, "load_entries");
    if (page.empty()) break;
    ids.clear();
    for (const auto& e : page) ids.push_back(e.message_id);
    t0 = Clock::now();
    s = store->load_messages(ids, blobs);
    get_secs += seconds_since(t0);
    if (!s.ok()) die(s, "load_messages");
    for (std::size_t i = 0; i < page.size(); ++i) {
      const auto& e = page[i];
      if (!blobs[i] || blobs[i]->size() != config.size || (*blobs[i])[0] != static_cast<char>(e.seq)) {
        die(Status::corruption("bad body for seq " + std::to_string(e.seq)), "drain");
      }
      store->remove_entry(kQueue, e.seq, e.message_id);
      ++drained;
      if (++since_commit == config.batch) {
        since_commit = 0;
        ++inflight;
        store->commit(on_done);
        t0 = Clock::now();
        wait_inflight(loop, inflight, config.inflight);
        wait_secs += seconds_since(t0);
      }
    }
    next_seq = page.back().seq + 1;
  }
  ++inflight;
  store->commit(on_done);
  wait_inflight(loop, inflight, 1);
  secs = seconds_since(start);
  after = store->counters();
  if (failed) die(Status::io_error("a commit failed"), "drain");
  std::printf("drain:   %llu in %.2f s = %.0f msg/s (of which: entry paging %.2f s, body reads %.2f s, waiting "
              "for commits %.2f s), CPU %.2f s, %llu fsyncs, peak RSS %ld MiB\n",
              static_cast<unsigned long long>(drained), secs, drained / secs, load_secs, get_secs, wait_secs,
              cpu_seconds() - cpu0,
              static_cast<unsigned long long>(after.fsyncs - before.fsyncs), peak_rss_mib());

  // The worst case for tombstones: a fresh scan from the queue's start.
  page.clear();
  start = Clock::now();
  Status s = store->load_entries(kQueue, 0, 1, page);
  std::printf("head:    scan of the drained queue from seq 0: %.3f ms (%zu found, %s)\n", seconds_since(start) * 1e3,
              page.size(), s.to_string().c_str());

  // ---- confirms: C publishers, each waits for its confirm ----
  mb::store::MessageId next_id = config.count + 1;
  mb::store::QueueId queue = 100;
  for (int publishers : {1, 16, 128}) {
    const std::uint64_t total = publishers == 1 ? 2000 : 20000;
    std::uint64_t sent = 0, confirmed = 0;
    ++queue;
    std::function<void()> publish;
    publish = [&] {
      if (sent == total) return;
      ++sent;
      const auto id = next_id++;
      store->enqueue(queue, id, id, body);
      store->commit([&](Status st) {
        if (!st.ok()) failed = true;
        ++confirmed;
        publish();
      });
    };
    before = store->counters();
    start = Clock::now();
    for (int p = 0; p < publishers; ++p) publish();
    while (confirmed < total) loop.run_one();
    secs = seconds_since(start);
    after = store->counters();
    std::printf("confirm: %3d publishers: %6.0f msg/s, %llu fsyncs, %.1f msg/fsync\n", publishers, total / secs,
                static_cast<unsigned long long>(after.fsyncs - before.fsyncs),
                double(after.messages_written - before.messages_written) / double(after.fsyncs - before.fsyncs));
  }
  if (failed) die(Status::io_error("a commit failed"), "confirm");
  store->close();
  store.reset();
  if (!config.keep) std::filesystem::remove_all(config.dir);
  return 0;
}
