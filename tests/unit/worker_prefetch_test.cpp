// worker_prefetch_test.cpp: the prefetch window's sizing (worker/prefetch_window.hpp).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <limits>

#include "worker/prefetch_window.hpp"

using mb::worker::PrefetchWindow;

TEST_CASE("the window starts at Celery's and never goes below it") {
  PrefetchWindow w(8, 0.010);
  CHECK(w.size() == 8);
  CHECK_FALSE(w.update(0, 0.025));  // nothing finished: stays at base
  CHECK(w.size() == 8);
  CHECK_FALSE(w.update(10, 0.025));  // 400 tasks/s x 10 ms = 4 < 8
  CHECK(w.size() == 8);
}

TEST_CASE("the window grows to the work done in the budget at the measured rate") {
  PrefetchWindow w(8, 0.010);
  CHECK(w.update(500, 0.025));  // 20,000 tasks/s x 10 ms
  CHECK(w.size() == 200);
  CHECK(w.update(1000, 0.025));  // 40,000 tasks/s
  CHECK(w.size() == 400);
}

TEST_CASE("it grows by a quarter or more, and shrinks to a quarter or less, or to base") {
  PrefetchWindow w(8, 0.010);
  REQUIRE(w.update(1000, 0.025));
  REQUIRE(w.size() == 400);
  CHECK_FALSE(w.update(1200, 0.025));  // 480: less than a quarter more
  CHECK_FALSE(w.update(500, 0.025));   // 200: the wobble of a steady load
  CHECK_FALSE(w.update(260, 0.025));   // 104: more than a quarter of 400
  CHECK(w.size() == 400);
  CHECK(w.update(1300, 0.025));  // 520
  CHECK(w.size() == 520);
  CHECK(w.update(300, 0.025));  // 120: under a quarter of 520
  CHECK(w.size() == 120);
}

TEST_CASE("when the rate falls (long tasks after short ones) the window comes back to base at once") {
  PrefetchWindow w(8, 0.010);
  REQUIRE(w.update(1000, 0.025));
  CHECK(w.update(0, 0.025));
  CHECK(w.size() == 8);
  // Back to base from just above it too, though that is less than a quarter down.
  PrefetchWindow v(8, 0.010);
  REQUIRE(v.update(30, 0.025));  // 12
  REQUIRE(v.size() == 12);
  CHECK_FALSE(v.update(25, 0.025));  // 10: neither base nor a quarter of 12
  CHECK(v.update(5, 0.025));         // 2 -> base
  CHECK(v.size() == 8);
}

TEST_CASE("reset returns to base and says whether that changed anything") {
  PrefetchWindow w(4, 0.010);
  CHECK_FALSE(w.reset());
  REQUIRE(w.update(1000, 0.025));
  CHECK(w.reset());
  CHECK(w.size() == 4);
}

TEST_CASE("a budget of 0 (or NaN, infinite, negative) keeps Celery's window; the size is capped; base is at least 1") {
  PrefetchWindow fixed(8, 0.0);
  CHECK_FALSE(fixed.update(100000, 0.025));
  CHECK(fixed.size() == 8);
  PrefetchWindow w(8, 1.0);
  CHECK(w.update(100000000, 0.025));
  CHECK(w.size() == PrefetchWindow::kMax);
  PrefetchWindow huge(10000, 0.010);  // a base above the cap stays the base
  CHECK_FALSE(huge.update(100000, 0.025));
  CHECK(huge.size() == 10000);
  for (const double odd : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(), -1.0}) {
    PrefetchWindow w2(8, odd);  // not a finite positive budget: the window stays at base
    CHECK_FALSE(w2.update(0, 0.025));
    CHECK_FALSE(w2.update(100000, 0.025));
    CHECK(w2.size() == 8);
  }
  PrefetchWindow zero(0, 0.010);
  CHECK(zero.size() == 1);
  CHECK_FALSE(zero.update(0, 0.0));
}

TEST_CASE("one short interval grows it fourfold or more; anything else is judged on kSpan of them") {
  PrefetchWindow w(8, 0.010);
  CHECK(w.update(200, 0.005));  // 40,000 tasks/s over 5 ms: 400, the ramp
  CHECK(w.size() == 400);
  // A worker descheduled for a few ms finishes nothing, then catches up.
  CHECK_FALSE(w.update(0, 0.005));
  CHECK_FALSE(w.update(0, 0.005));
  CHECK_FALSE(w.update(400, 0.005));  // 800 over 5 ms: twice, not four times
  CHECK_FALSE(w.update(300, 0.005));
  CHECK_FALSE(w.update(300, 0.005));  // 25 ms: 1,000 finished, 400 again
  CHECK(w.size() == 400);
  // A moderate growth waits for 25 ms of it.
  for (int i = 0; i < 4; ++i) CHECK_FALSE(w.update(300, 0.005));
  CHECK(w.update(300, 0.005));
  CHECK(w.size() == 600);
  // The rate falls for good: it shrinks once 25 ms of it are measured, not before.
  for (int i = 0; i < 4; ++i) CHECK_FALSE(w.update(0, 0.005));
  CHECK(w.update(0, 0.005));
  CHECK(w.size() == 8);
  // A growth starts the span again: the rate measured at the smaller window is not judged on.
  CHECK(w.update(150, 0.005));  // 300
  CHECK_FALSE(w.update(10, 0.02));  // 20 ms at 500/s, but only 20 ms since the growth
  CHECK(w.update(0, 0.005));        // 25 ms: 10 finished -> base
  CHECK(w.size() == 8);
}

TEST_CASE("ramp() applies the fourfold rule alone, at any point of an interval") {
  PrefetchWindow w(8, 0.010);
  CHECK_FALSE(w.ramp(16, 0.008));  // 2,000 tasks/s: 20, less than four times 8
  CHECK(w.size() == 8);
  CHECK(w.ramp(16, 0.0004));  // 40,000 tasks/s over 0.4 ms: 400
  CHECK(w.size() == 400);
  CHECK_FALSE(w.ramp(800, 0.0055));  // 1,455: less than four times 400
  CHECK(w.size() == 400);
  CHECK(w.ramp(800, 0.005));  // 1,600: four times
  CHECK(w.size() == 1600);
  // It restarts the span: what was measured before the growth is not judged on.
  PrefetchWindow v(8, 0.010);
  CHECK_FALSE(v.update(0, 0.02));  // 20 ms with nothing finished (a shrink would be due at 25)
  CHECK(v.ramp(16, 0.0002));       // 800
  CHECK_FALSE(v.update(0, 0.005));  // only 5 ms since the growth
  CHECK(v.size() == 800);
  CHECK_FALSE(PrefetchWindow(8, 0.0).ramp(1000, 0.0001));  // no budget: the window stays at base
  CHECK_FALSE(w.ramp(1000, 0.0));
}
