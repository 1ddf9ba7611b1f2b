"""Celery side of the benchmarks (scenario 8): the `bench.add` task and a client.

Worker (started by scripts/bench, run from this folder):
    MB_BENCH_BROKER_URL=amqp://guest:guest@127.0.0.1:PORT// \
        /usr/bin/python3 -m celery -A celery_bench worker --pool prefork --concurrency 2
Client:
    MB_BENCH_BROKER_URL=... /usr/bin/python3 celery_bench.py client --tasks 10000
prints one JSON line: tasks, seconds from the first send to the last result, tasks/s.
The results travel through the rpc:// backend (the client's reply queue), as the
issue asks, and are collected with .get() in order; task names are what a miniworker registers too (`bench.add`).
"""
import json
import os
import resource
import sys
import time

from celery import Celery

BROKER_URL = os.environ.get("MB_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")

app = Celery("celery_bench", broker=BROKER_URL, backend="rpc://")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_max_retries=3,
)


@app.task(name="bench.add")
def add(x, y):
    return x + y


def cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def client(n, timeout):
    out = {"scenario": "tasks", "client": "python-celery", "tasks": n}
    try:
        # Warm-up: wait until a worker answers (it may still be starting).
        deadline = time.monotonic() + timeout
        while True:
            try:
                if add.delay(1, 1).get(timeout=max(1.0, deadline - time.monotonic())) == 2:
                    break
            except Exception:
                if time.monotonic() > deadline:
                    raise
        c0, t0 = cpu_seconds(), time.monotonic()
        pending = [(i, add.delay(i, i)) for i in range(n)]
        t_sent = time.monotonic()
        # Register every result with the rpc:// consumer before waiting. Without
        # this, a result that arrives before its own .get() is only buffered,
        # and that .get() still blocks in drain_events(timeout=1) for one more
        # frame (celery.backends.asynchronous.Drainer): once the last results
        # are in, every buffered one costs a second, on any broker (measured:
        # 300 tasks took 8.8-17 s instead of 3.3-3.8 s on both).
        app.backend.add_pending_results([r for _, r in pending])
        bad = 0
        for i, r in pending:
            if r.get(timeout=max(1.0, t0 + timeout - time.monotonic())) != 2 * i:
                bad += 1
        t1 = time.monotonic()
        out.update(
            ok=bad == 0,
            wrong_results=bad,
            send_s=t_sent - t0,
            total_s=t1 - t0,
            tasks_per_s=n / (t1 - t0),
            client_cpu=(cpu_seconds() - c0) / (t1 - t0),
        )
    except Exception as e:  # reported, not raised: the driver records the failure
        out.update(ok=False, error="%s: %s" % (type(e).__name__, e))
    print(json.dumps(out), flush=True)
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["client"])
    p.add_argument("--tasks", type=int, default=10000)
    p.add_argument("--timeout", type=float, default=300.0)
    a = p.parse_args()
    sys.exit(client(a.tasks, a.timeout))
