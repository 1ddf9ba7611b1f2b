"""A well-behaved client that keeps working while a test abuses the broker, and times it.

    with LatencyProbe(host, port, "slowloris") as probe:
        ... the abuse ...
    # on exit: asserts the probe was served throughout, prints its round-trip latency

Each round trip is basic.publish to an exclusive queue, then basic.get until the message
is back (pika, its own connection, on its own thread), one every INTERVAL seconds. The
figures are printed (pytest -s, or the captured output of a failing test), never asserted:
the machine is shared. A round trip that fails, or none at all, fails the test.
"""

import threading
import time

import pika

INTERVAL = 0.05


class LatencyProbe:
    def __init__(self, host, port, what, min_round_trips=3):
        self.host, self.port, self.what = host, port, what
        self.min_round_trips = min_round_trips
        self.samples = []
        self.error = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latency-probe", daemon=True)

    def _run(self):
        try:
            c = pika.BlockingConnection(pika.ConnectionParameters(
                host=self.host, port=self.port, heartbeat=0, connection_attempts=3, retry_delay=1,
                socket_timeout=30, blocked_connection_timeout=60))
            try:
                ch = c.channel()
                q = ch.queue_declare("", exclusive=True).method.queue
                self._ready.set()
                n = 0
                while not self._stop.is_set():
                    body = b"probe-%d" % n
                    t0 = time.monotonic()
                    ch.basic_publish("", q, body)
                    while True:
                        m, _, got = ch.basic_get(q, auto_ack=True)
                        if m is not None:
                            break
                        if time.monotonic() - t0 > 60:
                            raise AssertionError("a probe message did not come back within 60 s")
                    assert got == body, (got, body)
                    self.samples.append(time.monotonic() - t0)
                    n += 1
                    self._stop.wait(INTERVAL)
            finally:
                c.close()
        except Exception as e:  # reported by __exit__
            self.error = e
            self._ready.set()

    def __enter__(self):
        self._thread.start()
        self._ready.wait(30)
        if self.error:
            raise AssertionError("the probe client could not start: %r" % self.error)
        return self

    def stats(self):
        s = sorted(self.samples)
        if not s:
            return "no round trips"
        pick = lambda p: s[min(len(s) - 1, int(p * len(s)))] * 1000
        return "%d round trips, p50 %.1f ms, p99 %.1f ms, max %.1f ms" % (len(s), pick(0.5), pick(0.99), s[-1] * 1000)

    def __exit__(self, exc_type, exc, tb):
        # a few more round trips after the abuse: still served
        wanted = len(self.samples) + self.min_round_trips
        deadline = time.monotonic() + 30
        while self.error is None and len(self.samples) < wanted and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        self._thread.join(60)
        print("\nlatency during %s: %s" % (self.what, self.stats()))
        if exc_type is None:
            assert self.error is None, "the well-behaved client failed during %s: %r" % (self.what, self.error)
            assert len(self.samples) >= wanted, "the well-behaved client stalled during %s" % self.what
        return False
