"""miniproducer --format celery feeding an unmodified Python `celery worker` (issue 5).

Concerns:
[x] addTask.add 5 5 --wait prints 10, through rpc://
[x] a Python exception comes back as FAILURE with its type and message (exit code 1)
[x] countdown, expires, priority and time limits reach the Python task (eta, expires,
    delivery_info priority, timelimit [hard, soft])
[x] args and kwargs of each JSON kind reach Python intact
[x] a task that expires while held for its countdown comes back REVOKED
Runs against each broker of MB_WORKER_BROKERS, like the rest of this folder.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import pytest

from worker_helpers import MINIPRODUCER

HERE = os.path.dirname(os.path.abspath(__file__))


class PythonWorker:
    def __init__(self, url, queue):
        self.dir = tempfile.mkdtemp(prefix="mb-pyworker-")
        self.log_path = os.path.join(self.dir, "worker.log")
        self.node = "pyw-%s@localhost" % uuid.uuid4().hex[:10]
        env = dict(os.environ, MB_PYWORKER_BROKER=url, PYTHONPATH=HERE, PYTHONUNBUFFERED="1")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", "-m", "celery", "-A", "pyworker_app", "worker", "-P", "solo", "-Q", queue,
             "-n", self.node, "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"],
            cwd=self.dir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log():
                return self
            if self.proc.poll() is not None:
                raise AssertionError("celery worker exited (rc=%s):\n%s" % (self.proc.returncode, self.log()[-4000:]))
            time.sleep(0.1)
        raise AssertionError("celery worker not ready after %ss:\n%s" % (timeout, self.log()[-4000:]))

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def pyworker(broker, queue_name):
    w = PythonWorker(broker.url, queue_name)
    try:
        yield w.wait_ready()
    finally:
        w.stop()


def celery_call(broker, queue, *args):
    cmd = [MINIPRODUCER, "--broker", broker.url, "--format", "celery", "call", *args, "--queue", queue,
           "--wait", "--timeout", "30"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_add(broker, pyworker, queue_name):
    r = celery_call(broker, queue_name, "addTask.add", "5", "5")
    assert r.returncode == 0, r.stderr + pyworker.log()[-3000:]
    assert r.stdout.strip() == "10"


def test_python_exception_comes_back(broker, pyworker, queue_name):
    r = celery_call(broker, queue_name, "py.fail", '"boom from Python"')
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAILURE: ValueError: boom from Python" in r.stderr


def test_values_reach_python(broker, pyworker, queue_name):
    r = celery_call(broker, queue_name, "py.request", "1", "2.5", '"x"', "true", "null", "[1,[2]]", '{"a":{"b":1}}',
                    "-k", 'k="v"')
    assert r.returncode == 0, r.stderr + pyworker.log()[-3000:]
    info = json.loads(r.stdout)
    assert info["args"] == [1, 2.5, "x", True, None, [1, [2]], {"a": {"b": 1}}]
    assert info["kwargs"] == {"k": "v"}
    assert info["retries"] == 0
    assert info["eta"] is None and info["expires"] is None
    assert info["root_id"] == info["id"]


def test_countdown_expires_priority(broker, pyworker, queue_name):
    r = celery_call(broker, queue_name, "py.request", "--countdown", "1", "--expires", "120", "--priority", "5",
                    "--time-limit", "90", "--soft-time-limit", "60")
    assert r.returncode == 0, r.stderr + pyworker.log()[-3000:]
    info = json.loads(r.stdout)
    assert info["eta"] is not None
    assert info["expires"] is not None
    assert info["priority"] == 5
    assert info["timelimit"] == [90, 60]  # Celery's [hard, soft]


def test_expired_is_revoked(broker, pyworker, queue_name):
    r = celery_call(broker, queue_name, "addTask.add", "1", "1", "--countdown", "3", "--expires", "1")
    assert r.returncode == 1, r.stdout + r.stderr + pyworker.log()[-3000:]
    assert "REVOKED" in r.stderr
