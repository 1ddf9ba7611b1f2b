"""The classic Celery example (celery 5.2 / kombu 5.2 / py-amqp 5.1) against the broker.

A module addTask.py is written to a temp dir (app = Celery('addTask',
broker='amqp://guest@localhost:PORT//', backend='rpc://')) and a real
`celery -A addTask worker -P prefork --concurrency 2 -Q celery,other` process is started
once for this module (stopped with SIGTERM, then SIGKILL of its process group).

Concerns:
- [x] add.delay(5, 5).get(timeout=10) == 10 (default exchange, rpc result queue, FIN exits)
- [x] 200 tasks in a row, all results correct (published together, and sequentially)
- [x] 200 tasks and their results within 9 s (about 1-3 s here): nothing waits on a timer
- [x] countdown=2: result not before ~2 s (worker holds the ETA task unacked, changes qos)
- [x] a retrying task (self.retry(countdown=1, max_retries=2)) returns its retries count
- [x] a failing task: its ValueError reaches .get()
- [x] `celery -A addTask inspect ping` exits 0 and names the worker (pidbox fanout + reply)
- [x] tasks sent to explicit queues; the worker runs with -Q celery,other so kombu
      consumes two queues on one channel, the first with nowait=1
"""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
import shutil

import pytest

CELERY_MODULE = textwrap.dedent('''
    import time
    from celery import Celery

    app = Celery('addTask', broker={url!r}, backend='rpc://')
    app.conf.broker_connection_timeout = 5
    app.conf.result_expires = 600

    @app.task
    def add(x, y):
        return x + y

    @app.task
    def fail(msg):
        raise ValueError(msg)

    @app.task(bind=True)
    def retry_task(self):
        if self.request.retries < 2:
            raise self.retry(countdown=1, max_retries=2)
        return self.request.retries

    @app.task
    def now():
        return time.time()
''')


def _tail(path, n=60):
    try:
        with open(path, "rb") as f:
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
    except OSError:
        return "(no worker log)"


class Worker:
    def __init__(self, broker):
        self.dir = tempfile.mkdtemp(prefix="e2e-celery-")
        self.name = "e2e-%s@localhost" % uuid.uuid4().hex[:8]
        self.log_path = os.path.join(self.dir, "worker.log")
        with open(os.path.join(self.dir, "addTask.py"), "w") as f:
            # the form: user only (kombu supplies the password), host "localhost"
            f.write(CELERY_MODULE.format(url="amqp://guest@localhost:%d//" % broker.port))
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = self.dir + os.pathsep + self.env.get("PYTHONPATH", "")
        self.proc = None

    def start(self, timeout=60):
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", "-m", "celery", "-A", "addTask", "worker", "--loglevel", "info",
             "--concurrency", "2", "-P", "prefork", "-n", self.name, "-Q", "celery,other"],
            cwd=self.dir, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("celery worker exited (rc=%s)\n%s"
                                   % (self.proc.returncode, _tail(self.log_path)))
            if b" ready." in open(self.log_path, "rb").read():
                return self
            time.sleep(0.2)
        raise RuntimeError("celery worker not ready within %ds\n%s" % (timeout, _tail(self.log_path)))

    def stop(self):
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                pass
        try:  # prefork children share the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc = None


@pytest.fixture(scope="module")
def worker(broker):
    w = Worker(broker)
    try:
        w.start()
    except Exception as e:
        w.stop()
        pytest.fail(str(e), pytrace=False)
    sys.path.insert(0, w.dir)
    sys.modules.pop("addTask", None)
    try:
        yield w
    finally:
        w.stop()
        if w.dir in sys.path:
            sys.path.remove(w.dir)
        mod = sys.modules.pop("addTask", None)
        if mod is not None:
            try:
                mod.app.close()
            except Exception:
                pass
        if os.environ.get("MB_E2E_KEEP_LOG"):
            print("celery worker log kept in", w.log_path)
        else:
            shutil.rmtree(w.dir, ignore_errors=True)


@pytest.fixture
def tasks(worker):
    import addTask
    return addTask


def _log_on_failure(worker):
    return "\n--- worker log tail ---\n" + _tail(worker.log_path, 40)


def test_add(tasks, worker):
    r = tasks.add.delay(5, 5)
    assert r.get(timeout=10) == 10, _log_on_failure(worker)


@pytest.mark.timeout(120)
def test_200_tasks(tasks, worker):
    results = [tasks.add.delay(i, 1000) for i in range(200)]
    assert [r.get(timeout=60) for r in results] == [i + 1000 for i in range(200)]


@pytest.mark.timeout(120)
def test_200_tasks_without_stalls(tasks, worker):
    # Registering the results with the rpc:// consumer first keeps Celery's own
    # wait out of the figure: .get() on a result that arrived before it blocks
    # in drain_events(timeout=1) for one more frame (see bench/celery_bench.py).
    # The bound is generous for a busy 2-core machine; it catches a stall of
    # seconds (a delivery, flush or prefetch refill waiting on a timer).
    t0 = time.monotonic()
    results = [tasks.add.delay(i, i) for i in range(200)]
    tasks.app.backend.add_pending_results(results)
    assert [r.get(timeout=60) for r in results] == [2 * i for i in range(200)]
    elapsed = time.monotonic() - t0
    assert elapsed < 9.0, "200 tasks took %.1f s%s" % (elapsed, _log_on_failure(worker))


@pytest.mark.timeout(90)
def test_tasks_sequential(tasks):
    for i in range(30):
        assert tasks.add.delay(i, i).get(timeout=10) == 2 * i


def test_countdown(tasks):
    t0 = time.time()
    r = tasks.now.apply_async(countdown=2)
    ran_at = r.get(timeout=20)
    assert ran_at - t0 >= 1.9, "countdown task ran after %.2fs" % (ran_at - t0)
    assert time.time() - t0 < 15


def test_countdown_does_not_block_others(tasks):
    slow = tasks.add.apply_async((1, 1), countdown=3)
    t0 = time.monotonic()
    assert tasks.add.delay(2, 2).get(timeout=10) == 4
    assert time.monotonic() - t0 < 2.5, "an ETA task must not hold up others"
    assert slow.get(timeout=20) == 2


def test_retry(tasks):
    assert tasks.retry_task.delay().get(timeout=30) == 2


def test_failure_propagates(tasks):
    r = tasks.fail.delay("boom e2e")
    with pytest.raises(ValueError, match="boom e2e"):
        r.get(timeout=10)
    assert r.state == "FAILURE"


def test_explicit_queue(tasks, worker):
    assert tasks.add.apply_async((3, 4), queue="celery").get(timeout=10) == 7


def test_second_queue_same_channel(tasks, worker):
    # -Q celery,other: kombu consumes both queues on one channel, the first with
    # nowait=1. A stray consume-ok for it derails py-amqp (celery-wire.md §6).
    assert tasks.add.apply_async((20, 22), queue="other").get(timeout=10) == 42
    results = [tasks.add.apply_async((i, 1), queue=("other" if i % 2 else "celery"))
               for i in range(20)]
    assert [r.get(timeout=20) for r in results] == [i + 1 for i in range(20)]


@pytest.mark.timeout(60)
def test_inspect_ping(worker):
    r = subprocess.run(["/usr/bin/python3", "-m", "celery", "-A", "addTask", "inspect", "ping",
                        "--timeout", "3"],
                       cwd=worker.dir, env=worker.env, capture_output=True, timeout=45)
    out = r.stdout.decode() + r.stderr.decode()
    assert r.returncode == 0, out
    assert worker.name in out and "pong" in out, out
