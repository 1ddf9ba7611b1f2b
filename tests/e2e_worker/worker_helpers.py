"""Helpers for the task runtime's end-to-end tests: binaries, brokers, a worker process."""

import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))

from rabbitmq_node import RabbitMQNode  # noqa: E402
from minibroker_proc import MinibrokerProc  # noqa: E402


def _build_dir():
    env = os.environ.get("MB_WORKER_BUILD")
    if env:
        return env
    for d in ("build", "build-worker"):
        p = os.path.join(REPO, d)
        if os.path.exists(os.path.join(p, "worker", "miniworker")):
            return p
    return os.path.join(REPO, "build")


BUILD = _build_dir()
_counter = itertools.count()


def next_id():
    return next(_counter)
MINIWORKER = os.path.join(BUILD, "worker", "miniworker")
MINIPRODUCER = os.path.join(BUILD, "worker", "miniproducer")
EXAMPLE_TASKS = os.path.join(BUILD, "worker", "examples", "libexample_tasks.so")
MINIBROKER = os.environ.get("MB_BROKER_BIN") or os.path.join(REPO, "build", "broker", "minibroker")


def broker_kinds():
    kinds = os.environ.get("MB_WORKER_BROKERS", "rabbitmq,minibroker").split(",")
    return [k.strip() for k in kinds if k.strip()]


def make_broker(kind):
    if kind == "rabbitmq":
        return RabbitMQNode(name_prefix="mbworker").start(timeout=90)
    if kind == "minibroker":
        if not os.access(MINIBROKER, os.X_OK):
            pytest.skip("minibroker not built: %s" % MINIBROKER)
        return MinibrokerProc(MINIBROKER).start()
    raise ValueError(kind)


class Worker:
    def __init__(self, url, queue, *extra, concurrency=2, pool="prefork"):
        self.dir = tempfile.mkdtemp(prefix="mb-worker-")
        self.log_path = os.path.join(self.dir, "worker.log")
        self.queue = queue
        self.args = [MINIWORKER, "--broker", url, "--tasks", EXAMPLE_TASKS, "--queues", queue,
                     "--concurrency", str(concurrency), "--pool", pool, *extra]
        self.proc = None

    def start(self, wait_ready=True, timeout=30):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        if wait_ready:
            self.wait_for("ready: consuming", timeout)
        return self

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_for(self, text, timeout=30, count=1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            if self.proc.poll() is not None:
                raise AssertionError("worker exited (rc=%s):\n%s" % (self.proc.returncode, self.log()[-4000:]))
            time.sleep(0.05)
        raise AssertionError("worker log has no %r after %ss:\n%s" % (text, timeout, self.log()[-4000:]))

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=30):
        return self.proc.wait(timeout=timeout)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)


def producer(url, queue, *args, timeout=60):
    """Runs miniproducer; returns CompletedProcess (text)."""
    cmd = [MINIPRODUCER, "--broker", url, "call", *args, "--queue", queue]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def producer_bg(url, queue, *args):
    cmd = [MINIPRODUCER, "--broker", url, "call", *args, "--queue", queue]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
