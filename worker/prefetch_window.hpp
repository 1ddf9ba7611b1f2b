// prefetch_window.hpp: how many unacknowledged tasks the worker asks the
// broker for (basic.qos prefetch_count), not counting those held for an eta.
//
// Celery's window is concurrency x multiplier. It suits tasks that take
// milliseconds or more. With tasks that take microseconds the pool gets
// through the window before the broker's next deliveries arrive, and waits a
// round trip each time: the window, not the CPU, bounds the throughput. So the
// window grows past Celery's to what the worker finished in `budget` seconds
// at the rate measured over the last interval, and comes back when that rate
// falls to a quarter or less. By Little's law a task then waits about `budget` in this
// worker's reserve, which bounds what holding tasks another worker could
// start costs.
//
// The worker measures every few ms, but the rate over a few ms swings: a
// worker descheduled for a moment finishes nothing, then twice as much. So
// the window is sized on kSpan of measurements together, except that it
// grows at once when one interval alone asks for four times the window or
// more. That is the window bounding the rate (a burst of short tasks
// arriving at Celery's window asks for ten times it), which a few
// milliseconds of noise does not mimic. The worker applies that rule alone
// (ramp()) as soon as twice the window has finished, before the interval ends.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace mb::worker {

class PrefetchWindow {
 public:
  // Past this the window does not grow, whatever the rate: it bounds the
  // memory that reserved task messages take.
  static constexpr std::size_t kMax = 4096;
  // Seconds of measurements the window is sized on, but for the ramp.
  static constexpr double kSpan = 0.025;

  // base: Celery's window (concurrency x multiplier), at least 1.
  // budget: seconds of work to reserve; 0 (or not a finite positive number):
  // the window stays at base.
  PrefetchWindow(std::size_t base, double budget)
      : base_(std::max<std::size_t>(base, 1)), budget_(std::isfinite(budget) && budget > 0 ? budget : 0), size_(base_) {}

  std::size_t size() const { return size_; }
  std::size_t base() const { return base_; }

  // `finished` tasks in the last `elapsed` seconds. Returns true when size()
  // changed. The measured rate wobbles by half from one interval to the next
  // under a steady load, so the window grows only by a quarter or more, and
  // shrinks only to a quarter or less (long tasks after short ones: the rate
  // falls by orders of magnitude) or to base. A steady load thus sends no
  // basic.qos, and a task waits in the reserve at most about 4 x budget.
  bool update(std::uint64_t finished, double elapsed) {
    if (ramp(finished, elapsed)) return true;
    if (budget_ <= 0 || elapsed <= 0) return false;
    span_finished_ += finished;
    span_elapsed_ += elapsed;
    if (span_elapsed_ < kSpan * (1 - 1e-9)) return false;
    const std::size_t t = target(span_finished_, span_elapsed_);
    restart_span();
    if (t > size_ && t * 4 >= size_ * 5) return set(t);
    if (t < size_ && (t == base_ || t * 4 <= size_)) return set(t);
    return false;
  }

  // The ramp alone: grows the window at once when `finished` tasks in
  // `elapsed` seconds ask for four times it or more (the same rule update()
  // applies first). The worker asks as soon as twice the window has finished
  // within an interval, rather than at its end: a ramp from Celery's window
  // then takes a fraction of a ms per step, not a tick. Twice, so that the
  // measurement holds a round trip for more tasks, not only the tasks the
  // worker held when the interval began. True when size() changed; the
  // caller then starts a new interval.
  bool ramp(std::uint64_t finished, double elapsed) {
    if (budget_ <= 0 || elapsed <= 0) return false;
    const std::size_t t = target(finished, elapsed);
    if (t < size_ * 4) return false;
    restart_span();  // what was measured at the smaller window says little about the larger one
    return set(t);
  }

  // Back to base (a new connection: what was measured no longer tells about
  // what comes next). True when that changed size().
  bool reset() {
    restart_span();
    return set(base_);
  }

 private:
  // The window for `finished` tasks in `elapsed` seconds.
  std::size_t target(std::uint64_t finished, double elapsed) const {
    const double want = std::ceil(static_cast<double>(finished) / elapsed * budget_);  // finite, >= 0
    return std::max(base_, want >= static_cast<double>(kMax) ? kMax : static_cast<std::size_t>(want));
  }
  void restart_span() {
    span_finished_ = 0;
    span_elapsed_ = 0;
  }

  bool set(std::size_t n) {
    if (n == size_) return false;
    size_ = n;
    return true;
  }

  std::size_t base_;
  double budget_;
  std::size_t size_;
  std::uint64_t span_finished_ = 0;  // measured since the last resize or shrink judgement
  double span_elapsed_ = 0;
};

}  // namespace mb::worker
