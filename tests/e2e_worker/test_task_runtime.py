"""End-to-end: miniproducer -> broker -> miniworker -> result, on each broker.

Concerns (issue 4 "Tests"):
[x] add(5, 5) -> 10 through the command
[x] 1,000 tasks with concurrency 2 (prefork and threads)
[x] each value type round-trips; kwargs and defaults
[x] a failing task's error reaches the caller (exit 1); wrong arguments -> TypeError
[x] retry-twice-then-succeed succeeds with retries = 2
[x] countdown honoured; expires -> REVOKED
[x] the crashing task gives FAILURE and the worker goes on serving
[x] hard time limit (prefork and threads); threads stuck past the cap: exit 70, unacked requeued
[x] unknown task -> NotRegistered, message rejected
[x] SIGTERM mid-task still delivers the result, exit 0
[x] threads pool: prefetched tasks queue behind a running one; one that expires while queued
    is REVOKED when a thread takes it; a warm shutdown requeues the queued ones (not lost)
[x] the prefetch window grows past concurrency x multiplier while short tasks run; when long
    ones follow it comes back, and the tasks not started beyond it go back to the queue
[x] SIGKILL of the worker mid-task -> redelivered and completed by a second worker
[x] broker restart mid-run -> the worker reconnects and every task completes; the producer
    library reconnects: calls made after the restart complete, the one in flight completes
    or fails saying the connection was lost
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from worker_helpers import BUILD, Worker, producer, producer_bg

PRODUCER_RECONNECT = os.path.join(BUILD, "worker", "examples", "producer_reconnect")


def call(broker, queue, *args, timeout=60):
    return producer(broker.url, queue, *args, timeout=timeout)


def test_add(broker, start_worker, queue_name):
    start_worker()
    r = call(broker, queue_name, "add", "5", "5", "--wait", "--timeout", "20")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "10"


def test_send_without_wait_prints_id(broker, start_worker, queue_name):
    start_worker()
    r = call(broker, queue_name, "add", "1", "2")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"[0-9a-f-]{36}", r.stdout.strip())


@pytest.mark.parametrize("task,arg", [
    ("echo_int", "-42"), ("echo_double", "2.5"), ("echo_bool", "true"), ("echo_string", '"hi there"'),
    ("echo_list", '[1, "a", [2.5, null]]'), ("echo_map", '{"a": 1, "b": {"c": [true]}}'),
    ("echo", "null"), ("echo", '{"x": [1, 2, {"y": "z"}]}'),
])
def test_value_types_round_trip(broker, start_worker, queue_name, task, arg):
    start_worker()
    r = call(broker, queue_name, task, arg, "--wait", "--timeout", "20")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == json.loads(arg)


def test_kwargs_and_defaults(broker, start_worker, queue_name):
    start_worker()
    r = call(broker, queue_name, "greet", "bob", "--wait")
    assert r.stdout.strip() == '"hello, bob"'
    r = call(broker, queue_name, "greet", '"bob"', "--kwarg", 'greeting="hi"', "--wait")
    assert r.stdout.strip() == '"hi, bob"'
    r = call(broker, queue_name, "add", "--kwarg", "x=1", "--kwarg", "y=2", "--wait")
    assert r.stdout.strip() == "3"


def test_failure_reaches_caller(broker, start_worker, queue_name):
    start_worker()
    r = call(broker, queue_name, "fail", '"kaput"', "--wait", "--timeout", "20")
    assert r.returncode == 1
    assert "FAILURE: std::runtime_error: kaput" in r.stderr
    r = call(broker, queue_name, "add", '"x"', "1", "--wait", "--timeout", "20")
    assert r.returncode == 1
    assert "TypeError: add() argument 'x': expected int, got string" in r.stderr


def test_retry_twice_then_succeed(broker, start_worker, queue_name):
    w = start_worker()
    r = call(broker, queue_name, "retry_twice", "--wait", "--timeout", "20")
    assert r.returncode == 0, r.stderr + w.log()[-2000:]
    assert r.stdout.strip() == "2"


def test_countdown_honoured(broker, start_worker, queue_name):
    start_worker()
    t0 = time.monotonic()
    r = call(broker, queue_name, "add", "1", "1", "--countdown", "2", "--wait", "--timeout", "20")
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 >= 2.0
    assert r.stdout.strip() == "2"


def test_expires_gives_revoked(broker, start_worker, queue_name):
    start_worker()
    r = call(broker, queue_name, "add", "1", "1", "--countdown", "2", "--expires", "1", "--wait", "--timeout", "20")
    assert r.returncode == 1
    assert "REVOKED" in r.stderr


def test_crash_gives_failure_and_worker_goes_on(broker, start_worker, queue_name):
    w = start_worker()
    r = call(broker, queue_name, "crash", "--wait", "--timeout", "20")
    assert r.returncode == 1
    assert "WorkerLostError" in r.stderr and "SIGSEGV" in r.stderr
    r = call(broker, queue_name, "add", "2", "3", "--wait", "--timeout", "20")
    assert r.stdout.strip() == "5"
    assert w.proc.poll() is None


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_hard_time_limit(broker, start_worker, queue_name, pool):
    w = start_worker("--time-limit", "1", pool=pool, concurrency=1)
    t0 = time.monotonic()
    r = call(broker, queue_name, "sleep", "10", "--wait", "--timeout", "20")
    assert r.returncode == 1
    assert "TimeLimitExceeded" in r.stderr
    assert time.monotonic() - t0 < 8
    # The one slot is free again: a new child, or a new thread beside the stuck one.
    r = call(broker, queue_name, "add", "2", "3", "--wait", "--timeout", "20")
    assert r.stdout.strip() == "5"
    if pool == "threads":
        assert "its thread is abandoned (1 stuck, at most 1)" in w.log()


def test_threads_stuck_past_the_cap_exit_for_a_restart(broker, start_worker, queue_name):
    w = start_worker("--time-limit", "1", "--max-abandoned-threads", "1", pool="threads", concurrency=1)
    sleeps = [producer_bg(broker.url, queue_name, "sleep", "30", "--wait", "--timeout", "40") for _ in range(2)]
    time.sleep(0.3)
    adder = producer_bg(broker.url, queue_name, "add", "7", "8", "--wait", "--timeout", "40")
    try:
        assert w.wait(timeout=30) == 70, w.log()[-3000:]
        assert "2 threads are stuck" in w.log()
        assert "exiting for a supervisor to restart the worker" in w.log()
        for p in sleeps:  # both got their result before the exit
            out, err = p.communicate(timeout=30)
            assert p.returncode == 1 and "TimeLimitExceeded" in err
        start_worker(pool="threads", concurrency=1)  # the supervisor's restart
        out, err = adder.communicate(timeout=40)  # ran before the exit, or requeued and run now
        assert adder.returncode == 0, err
        assert out.strip() == "15"
    finally:
        for p in sleeps + [adder]:
            p.kill()


def test_soft_time_limit(broker, start_worker, queue_name):
    start_worker("--soft-time-limit", "0.5")
    r = call(broker, queue_name, "sleep", "10", "--wait", "--timeout", "20")
    assert r.returncode == 1
    assert "SoftTimeLimitExceeded" in r.stderr


def test_unknown_task(broker, start_worker, queue_name):
    w = start_worker()
    r = call(broker, queue_name, "no.such.task", "--wait", "--timeout", "20")
    assert r.returncode == 1
    assert "NotRegistered" in r.stderr
    assert "unregistered task no.such.task" in w.log()


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_thousand_tasks_concurrency_2(broker, start_worker, queue_name, pool):
    start_worker(pool=pool, concurrency=2)
    r = call(broker, queue_name, "add", "1", "2", "--repeat", "1000", "--timeout", "120", timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1000 tasks: 1000 succeeded, 0 failed" in r.stdout
    print(pool, broker.kind, r.stdout.strip())


def test_sigterm_mid_task_delivers_result(broker, start_worker, queue_name):
    w = start_worker()
    p = producer_bg(broker.url, queue_name, "sleep", "1.5", "--wait", "--timeout", "30")
    time.sleep(0.7)  # the task is running
    w.signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert out.strip() == "1.5"
    assert w.wait(timeout=30) == 0
    assert "warm shutdown" in w.log()


def queue_ready(broker, queue):
    import pika
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    try:
        return conn.channel().queue_declare(queue, durable=True, passive=True).method.message_count
    finally:
        conn.close()


def test_threads_pool_queued_tasks_start_when_a_thread_takes_them(broker, start_worker, queue_name):
    w = start_worker(pool="threads", concurrency=1)
    slow = producer_bg(broker.url, queue_name, "sleep", "2", "--wait", "--timeout", "30")
    time.sleep(0.7)  # running; what comes next waits in the pool's queue
    r = call(broker, queue_name, "add", "1", "1", "--expires", "0.5", "--wait", "--timeout", "20")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "REVOKED" in r.stderr  # expired before the thread took it (the worker had it at once)
    out, err = slow.communicate(timeout=30)
    assert slow.returncode == 0 and out.strip() == "2.0", err

    slow = producer_bg(broker.url, queue_name, "sleep", "1.5", "--wait", "--timeout", "30")
    time.sleep(0.7)
    r = call(broker, queue_name, "add", "1", "2", "--repeat", "3", "--no-results")
    assert r.returncode == 0, r.stderr
    time.sleep(0.3)  # delivered to the worker: queued in the pool
    assert queue_ready(broker, queue_name) == 0
    w.signal(signal.SIGTERM)
    out, err = slow.communicate(timeout=30)
    assert slow.returncode == 0 and out.strip() == "1.5", err  # the running task finished
    assert w.wait(timeout=30) == 0
    deadline = time.monotonic() + 10  # RabbitMQ requeues a closed channel's unacked messages shortly after
    while queue_ready(broker, queue_name) != 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert queue_ready(broker, queue_name) == 3  # the queued ones went back to the queue
    assert "stopped after 2 task(s)" in w.log()


def test_prefetch_window_follows_the_task_rate(broker, start_worker, queue_name):
    r = call(broker, queue_name, "noop", "--repeat", "5000", "--no-results", timeout=120)
    assert r.returncode == 0, r.stderr
    r = call(broker, queue_name, "sleep", "3", "--repeat", "12", "--no-results")
    assert r.returncode == 0, r.stderr
    w = start_worker("--prefetch-multiplier", "1", "--loglevel", "debug", pool="threads", concurrency=2)
    w.wait_for("not started given back", timeout=30)
    w.wait_for("-> 2 (0 held)", timeout=5)  # the first shrink may stop short of base when a tick caught the end of the noops
    sizes = [int(n) for n in re.findall(r"prefetch window \d+ -> (\d+)", w.log())]
    assert max(sizes) > 12, sizes  # it grew past the 2 of concurrency x multiplier, enough for every sleep
    assert sizes[-1] == 2, sizes  # and came back
    # Two sleeps run; the other ten are back in the queue, where any worker can take them.
    deadline = time.monotonic() + 2
    while queue_ready(broker, queue_name) != 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert queue_ready(broker, queue_name) == 10, w.log()[-3000:]
    assert w.log().count("task noop[") >= 5000


def test_sigkill_mid_task_redelivered_to_second_worker(broker, start_worker, queue_name):
    w1 = start_worker()
    p = producer_bg(broker.url, queue_name, "sleep", "1", "--wait", "--timeout", "60")
    time.sleep(0.7)  # running in w1
    w1.proc.send_signal(signal.SIGKILL)
    w1.wait()
    w2 = start_worker()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err + w2.log()[-2000:]
    assert out.strip() == "1.0"
    assert "succeeded" in w2.log()


def test_broker_restart_worker_reconnects(own_broker, queue_name):
    """The worker and the producer library (worker/examples/producer_reconnect.cpp) across one restart."""
    n = 200
    w = Worker(own_broker.url, queue_name, concurrency=2).start()
    lib = subprocess.Popen([PRODUCER_RECONNECT, own_broker.url, queue_name, "20"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lib_out = []
        for line in lib.stdout:  # its first 20 calls, and one left in flight
            lib_out.append(line)
            if line.startswith("restart now"):
                break
        assert lib_out and lib_out[-1].startswith("restart now"), "".join(lib_out)
        # Fire-and-forget tasks: the command's reply queue would not survive the restart.
        r = producer(own_broker.url, queue_name, "sleep", "0.03", "--repeat", str(n), "--no-results", timeout=60)
        assert r.returncode == 0, r.stderr
        ids = set(r.stdout.split())
        assert len(ids) == n
        w.wait_for("task sleep", timeout=30, count=20)
        own_broker.restart()
        lib.stdin.write("go\n")  # 20 more calls, made while the producer may still be reconnecting
        lib.stdin.flush()
        out, _ = lib.communicate(timeout=120)
        out = "".join(lib_out) + out
        assert lib.returncode == 0, out + w.log()[-2000:]
        assert "ok before the restart: 20 of 20 right" in out
        assert "ok after the restart: 20 of 20 right" in out
        in_flight = [line for line in out.splitlines() if line.startswith("in flight: ")]
        assert len(in_flight) == 1, out
        assert in_flight[0] == "in flight: SUCCESS" or "the broker connection was lost" in in_flight[0], out
        deadline = time.monotonic() + 120
        done = set()
        while time.monotonic() < deadline:
            done = set(re.findall(r"task sleep\[([0-9a-f-]{36})\] succeeded", w.log()))
            if ids <= done:
                break
            time.sleep(0.5)
        log = w.log()
        assert ids <= done, "missing %d tasks\n%s" % (len(ids - done), log[-3000:])
        assert "reconnecting" in log
        assert w.proc.poll() is None
    finally:
        lib.kill()
        w.stop()
        shutil.rmtree(w.dir, ignore_errors=True)
