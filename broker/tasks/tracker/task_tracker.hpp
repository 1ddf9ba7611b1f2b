// TaskTracker: the broker's view of the tasks that pass through it, for the
// dashboard's task pages and /api/tasks, /api/task-types, /api/workers.
//
// What the broker can observe (every input is a message it routes):
//   - task messages: any publish whose headers carry `task` and `id` (Celery
//     protocol v2 and miniworker's Cap'n Proto envelope both do) -> PENDING,
//     with name, args, queue, retries. A re-publish of a known id with a higher
//     `retries` is a retry.
//   - deliveries of those messages to a consumer (basic.deliver or get-ok) ->
//     RECEIVED: a worker holds it (it may still wait in the worker's prefetch).
//   - results published back: a message whose correlation_id is a tracked task
//     id and whose body is a Celery rpc:// result (JSON) or a miniworker
//     Cap'n Proto result -> SUCCESS / FAILURE / RETRY / REVOKED with the
//     value or error, runtime (Cap'n Proto results carry it) and worker.
//     Results are observed whether or not a queue is bound to their routing key.
//   - Celery events on the `celeryev` exchange (task-sent/received/started/
//     succeeded/failed/retried/revoked/rejected, worker-online/heartbeat/
//     offline; `task.multi` carries a JSON list). The broker sees them even
//     when no queue is bound (no monitor running), but workers send task
//     events only with `-E`; worker heartbeats are sent by default.
// Not observable: a task that runs without a result and without events has
// no end the broker can see (it stays RECEIVED); results kept in a backend
// other than rpc:// (redis, database) never pass through the broker; messages
// restored from disk at start-up are not re-read, so their deliveries are not
// seen (their result still is); transactional publishes are seen at publish
// time, before tx.commit.
//
// History (tasks, per-name counters, workers) is kept in the store as
// MetaKind::kGeneric records under "task/", written at most once per flush
// interval whatever the number of changes, bounded in count (oldest task
// evicted) and restored by restore() at start-up.
//
// Single-threaded: every call comes from the broker's loop. Nothing here
// throws to the caller: malformed task headers, results and events are logged
// (rate-limited) and counted, never allowed to disturb routing.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "broker/store/store.hpp"
#include "broker/tasks/tracker/task_index.hpp"
#include "broker/string_map.hpp"
#include "common/amqp/properties.hpp"

namespace mb::tasks {

// Celery's state names; RECEIVED means "delivered to a worker".
enum class TaskState : std::uint8_t {
  kPending,
  kReceived,
  kStarted,
  kRetry,
  kSuccess,
  kFailure,
  kRevoked,
  kRejected,
};
std::string_view state_name(TaskState s);
std::optional<TaskState> state_from_name(std::string_view name);
// SUCCESS, FAILURE, REVOKED, REJECTED: nothing more happens to the task unless it is re-published.
bool is_final(TaskState s);

// Unix seconds; 0 means "not seen".
struct TaskRecord {
  std::string id;
  std::string name;
  TaskState state = TaskState::kPending;
  std::string args;       // repr (Celery's argsrepr, or the arguments as JSON)
  std::string kwargs;
  std::string result;     // the return value as JSON
  std::string error;      // "Type: message"
  std::string traceback;
  std::string worker;     // hostname, when a result or event names it
  std::string exchange;
  std::string routing_key;
  std::string format;     // "celery" or "capnp"; "event" when only events named it
  std::uint32_t retries = 0;
  double sent = 0, received = 0, started = 0, finished = 0;
  double runtime = 0;     // seconds; from the worker when it says, else measured
  std::uint64_t seq = 0;  // creation order: listing and eviction
  bool dirty = false;     // changed since the last flush (not itself stored)
  bool stored = false;    // a version of it is in the store, so eviction deletes it (not itself stored)
  std::uint64_t id_hash = 0;  // TaskIndex::hash(id) (not itself stored)

  // Makes this a record of nothing (as a new one) but keeps the strings'
  // buffers, for a new task that takes over an evicted one's record.
  void recycle() {
    for (std::string* s : {&id, &name, &args, &kwargs, &result, &error, &traceback, &worker, &exchange,
                           &routing_key, &format})
      s->clear();
    state = TaskState::kPending;
    retries = 0;
    sent = received = started = finished = runtime = 0;
    seq = id_hash = 0;
    dirty = stored = false;
  }
};

// Counters per task name. Current counts (queued, running) are computed from
// the history when asked; these are totals since the history began.
struct TaskTypeStats {
  std::uint64_t published = 0, succeeded = 0, failed = 0, retried = 0, revoked = 0;
  double runtime_total = 0, runtime_min = 0, runtime_max = 0;
  std::uint64_t runtime_count = 0;
};

struct WorkerRecord {
  std::string hostname;
  bool offline = false;     // worker-offline received
  double first_seen = 0, last_seen = 0, last_heartbeat = 0;
  double freq = 0;          // heartbeat interval it announced, seconds
  std::int64_t active = 0, processed = 0, pid = 0;
  std::vector<double> loadavg;
  std::string software;     // "py-celery 5.2.6"
  std::uint64_t results = 0;  // results the broker saw it publish (Cap'n Proto results name the worker)
  double written_at = 0;      // when last queued for the store (not itself stored)
};

struct TrackerOptions {
  // Tasks kept in memory and in the store; the oldest is evicted past it. At a
  // few hundred bytes each this bounds the history near 10 MB. 0 turns the
  // tracker off: nothing is observed, and a stored history is left as it is.
  std::size_t max_tasks = 20000;
  // Workers are few; the bound only stops a peer inventing hostnames forever.
  std::size_t max_workers = 1000;
  // Args, results, errors and tracebacks are cut to this many bytes: enough to
  // read on a dashboard, small enough that a huge argument cannot bloat the store.
  std::size_t max_text_bytes = 4096;
  // Writes to the store are coalesced to one round per interval (a task that
  // goes PENDING -> RECEIVED -> SUCCESS within it is written once).
  double flush_interval_s = 1.0;
  // A round is written this many task records at a time, each slice its own
  // turn of the event loop: under load a round holds every task in the
  // history (about 0.8 us each), and written at once it would stall the
  // broker's loop for as long as 17 ms.
  std::size_t flush_slice = 512;
};

struct TaskQuery {
  std::optional<TaskState> state;
  std::string name;  // exact task name; empty: any
  std::size_t limit = 100;
  std::size_t offset = 0;
};

class TaskTracker {
 public:
  // store may be null (no data directory): the history is then memory only.
  TaskTracker(TrackerOptions options, store::Store* store);

  bool enabled() const { return options_.max_tasks > 0; }

  // Loads the history the store holds (call once, before traffic).
  void restore();

  // Every publish, before routing. Returns true when msg is a task message:
  // the caller marks the message so that on_delivered is called for it.
  // Cheap for other messages: a few comparisons and at most one hash lookup.
  bool on_publish(std::string_view exchange, std::string_view routing_key,
                  const amqp::PropertiesSummary& props, std::string_view body, double now);
  // False when on_publish would ignore the message: callers skip reading the
  // clock for it (most messages are not task messages, events or results).
  bool interested(std::string_view exchange, const amqp::PropertiesSummary& props) const;
  // A task message (on_publish returned true) went to a consumer.
  void on_delivered(std::string_view encoded_properties, double now);

  // Called from the broker's timer: once per flush interval, starts a round
  // that writes what changed, and writes its first slice. True while the
  // round has more to write: call flush_slice() again, on a later turn of
  // the event loop.
  bool tick(double now);
  // The open round's next slice; true while more is left. Nothing when no
  // round is open (flush() finished it, say).
  bool flush_slice();
  // Writes what changed now, whole (shutdown).
  void flush();

  // ---- views for the HTTP API (JSON as served) -----------------------------
  nlohmann::json list_tasks(const TaskQuery& q) const;  // newest first: {total, items}
  std::optional<nlohmann::json> task(std::string_view id) const;
  nlohmann::json task_types() const;
  nlohmann::json workers(double now) const;
  nlohmann::json summary() const;  // counts by state, totals, observation counters

  const TaskRecord* find(std::string_view id) const;
  std::size_t size() const { return records_.size(); }
  const TaskTypeStats* stats(std::string_view name) const;
  const WorkerRecord* worker(std::string_view hostname) const;
  std::uint64_t malformed() const { return malformed_; }

 private:
  // Returns false when the headers name no task after all.
  bool observe_task(std::string_view exchange, std::string_view routing_key, const amqp::PropertiesSummary& props,
                    std::string_view body, double now);
  void observe_result(TaskRecord& t, const amqp::PropertiesSummary& props, std::string_view body, double now);
  void observe_events(std::string_view routing_key, std::string_view body, double now);
  void observe_event(const nlohmann::json& e, double now);
  void observe_worker_event(const nlohmann::json& e, std::string_view type, double now);

  struct Touched {
    TaskRecord& task;
    bool created;  // not tracked before this call
  };
  // Finds or creates. At the bound, a new task takes over the oldest one's
  // record, strings and all, so a steady stream of tasks allocates nothing here.
  Touched touch_task(std::string_view id, double now);
  TaskRecord* find_task(std::string_view id, std::uint64_t id_hash);
  // The record's position in records_, or TaskIndex::kNone.
  std::uint32_t position(std::string_view id, std::uint64_t id_hash) const;
  // The i-th oldest record (0: the oldest).
  const TaskRecord& by_age(std::size_t i) const { return records_[(head_ + i) % records_.size()]; }
  // Moves t to a final state once: counters and runtime are counted on the first arrival only.
  void finish(TaskRecord& t, TaskState s, double at, double runtime);
  void set_state(TaskRecord& t, TaskState s);
  WorkerRecord& touch_worker(std::string_view hostname, double now);
  void mark(WorkerRecord& w, double now) {
    w.written_at = now;
    dirty_workers_.insert(w.hostname);
  }
  // Counts t as evicted and deletes it from the store if it was written there;
  // its record is then free for another task.
  void forget(const TaskRecord& t);
  void mark(TaskRecord& t) {
    if (store_ == nullptr || t.dirty) return;
    t.dirty = true;
    dirty_tasks_.push_back({t.seq, static_cast<std::uint32_t>(&t - records_.data())});
  }
  std::string clip(std::string_view text) const;
  // clip() into out, reusing its buffer.
  void assign_clipped(std::string& out, std::string_view text) const;
  void malformed(std::string_view what, std::string_view detail);

  TrackerOptions options_;
  store::Store* store_;  // HELD NOT OWNED; null: no persistence
  // The tasks tracked, a ring in age order once it holds max_tasks: the
  // oldest at head_ is the one a new task replaces. Until then head_ is 0 and
  // new records are appended (which moves them: nothing keeps a pointer to
  // one past a call).
  std::vector<TaskRecord> records_;
  std::size_t head_ = 0;
  TaskIndex index_;  // id -> position in records_
  broker::StringMap<TaskTypeStats> types_;
  broker::StringMap<WorkerRecord> workers_;
  std::uint64_t next_seq_ = 1;
  std::uint64_t evicted_ = 0;
  std::uint64_t malformed_ = 0;
  std::uint64_t results_seen_ = 0, events_seen_ = 0;
  // Writes the deletes pending and up to max_records of the round's tasks.
  bool write_slice(std::size_t max_records);

  // What a round writes: tasks (an entry whose record holds another seq by
  // then was evicted), names and hostnames changed since the last round.
  struct DirtyTask {
    std::uint64_t seq;
    std::uint32_t record;  // position in records_
  };
  std::vector<DirtyTask> dirty_tasks_;
  // The open round writes dirty_tasks_[round_done_, round_end_); tasks marked
  // after it began wait past round_end_ for the next one.
  bool round_open_ = false;
  std::size_t round_done_ = 0, round_end_ = 0;
  std::unordered_set<std::string> dirty_types_, dirty_workers_;
  std::vector<std::string> deleted_tasks_, deleted_workers_;
  std::string key_, value_;  // write_slice()'s buffers, reused
  double last_flush_ = 0;
};

}  // namespace mb::tasks
