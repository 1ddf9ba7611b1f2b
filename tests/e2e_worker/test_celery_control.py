"""miniworker on Celery's control plane and event stream (issue 5).

Concerns:
[x] inspect ping through the Python API and `celery inspect ping` / `celery status` on the CLI
[x] inspect registered lists the C++ task names; inspect active shows a running task
[x] inspect stats has a Python worker's keys (total by task name, pool, broker, prefetch_count)
[x] a command addressed to another node gets no reply from this one
[x] worker-online, worker-heartbeat (at --heartbeat-interval) and worker-offline, without -E
[x] no task events without -E
[x] with -E: task-received, task-started, task-succeeded (result repr, runtime), task-failed
    (exception, traceback), task-retried, task-revoked (expired), with Celery's common fields
[x] `celery events --dump` shows the C++ task's events as it shows a Python worker's
Runs against each broker of MB_WORKER_BROKERS, like the rest of this folder.
"""

import os
import re
import signal
import subprocess
import time
import uuid

import pytest
from kombu import Connection, Exchange, Queue

COMMON_FIELDS = {"hostname", "utcoffset", "pid", "clock", "timestamp", "type"}
WORKER_FIELDS = COMMON_FIELDS | {"freq", "active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys"}


@pytest.fixture
def node(queue_name):
    """A node name of the test's own: tests share a broker and its pidbox exchange."""
    return "mini-%s@localhost" % uuid.uuid4().hex[:12]


class EventTap:
    """Consumes celeryev with routing key '#', as `celery events` does."""

    def __init__(self, url):
        self.conn = Connection(url)
        self.conn.connect()
        self.events = []
        queue = Queue("celeryev.test-%s" % uuid.uuid4(), Exchange("celeryev", "topic", durable=True),
                      routing_key="#", auto_delete=True, durable=False,
                      queue_arguments={"x-expires": 60000})
        self.consumer = self.conn.Consumer([queue], callbacks=[self._on], accept=["json"], no_ack=True)
        self.consumer.consume()

    def _on(self, body, message):
        self.events.extend(body if isinstance(body, list) else [body])

    def wait_for(self, pred, timeout=30, what="event"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events if pred(e)]
            if found:
                return found[0]
            try:
                self.conn.drain_events(timeout=0.2)
            except OSError:
                pass
            except Exception as e:  # socket.timeout is an OSError; anything else is real
                if type(e).__name__ != "timeout":
                    raise
        raise AssertionError("no %s within %ss; got %r" % (what, timeout, [e.get("type") for e in self.events]))

    def of(self, node, type_):
        return [e for e in self.events if e.get("hostname") == node and e.get("type") == type_]

    def close(self):
        try:
            self.consumer.cancel()
        finally:
            self.conn.release()


@pytest.fixture
def tap(broker):
    t = EventTap(broker.url)
    yield t
    t.close()


def celery_cli(url, *args, timeout=60):
    """Runs the celery command line; stdout without colour codes, runs of blanks made one."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    r = subprocess.run(["/usr/bin/python3", "-m", "celery", "-b", url, *args], capture_output=True,
                       text=True, timeout=timeout, env=env)
    r.stdout = re.sub(r"[ \t]+", " ", re.sub(r"\x1b\[[0-9;]*m", "", r.stdout))
    return r


def test_inspect_ping_api(app, start_worker, node):
    start_worker("-n", node)
    replies = app.control.inspect(destination=[node], timeout=5).ping()
    assert replies == {node: {"ok": "pong"}}


def test_inspect_ping_and_status_cli(broker, start_worker, node):
    start_worker("-n", node)
    r = celery_cli(broker.url, "inspect", "ping", "-d", node, "--timeout", "5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "-> %s: OK" % node in r.stdout
    assert "pong" in r.stdout
    r = celery_cli(broker.url, "status", "--timeout", "5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "%s: OK" % node in r.stdout


def test_other_nodes_command_is_not_answered(app, start_worker, node):
    start_worker("-n", node)
    other = "nobody-%s@localhost" % uuid.uuid4().hex[:8]
    assert app.control.inspect(destination=[other], timeout=2).ping() is None
    assert app.control.inspect(destination=[node], timeout=5).ping() == {node: {"ok": "pong"}}


def test_inspect_registered_active_stats(app, start_worker, node, queue_name):
    start_worker("-n", node, pool="threads")
    insp = app.control.inspect(destination=[node], timeout=5)
    registered = insp.registered()[node]
    assert "addTask.add" in registered and "sleep" in registered and "fail" in registered

    assert app.send_task("add", args=(1, 2), queue=queue_name).get(timeout=15) == 3
    r = app.send_task("sleep", args=(4.0,), queue=queue_name)
    deadline = time.monotonic() + 20
    active = []
    while time.monotonic() < deadline and not active:
        active = insp.active()[node]
    assert [a["id"] for a in active] == [r.id]
    assert active[0]["name"] == "sleep"
    assert active[0]["args"] == "(4.0,)"
    assert active[0]["hostname"] == node
    assert active[0]["delivery_info"]["routing_key"] == queue_name
    assert active[0]["time_start"] > 0
    assert active[0]["worker_pid"] > 0  # threads pool: the worker's own pid

    stats = insp.stats()[node]
    assert stats["total"].get("add") == 1
    assert stats["pid"] > 0
    assert stats["pool"]["max-concurrency"] == 2
    assert stats["prefetch_count"] == 8
    assert stats["broker"]["transport"] == "amqp"
    assert isinstance(stats["rusage"]["maxrss"], int)
    assert r.get(timeout=20) == 4.0


def test_unknown_command_gets_an_error_reply(app, start_worker, node):
    start_worker("-n", node)
    replies = app.control.broadcast("no_such_command", reply=True, destination=[node], timeout=5)
    assert replies == [{node: {"error": "KeyError('no_such_command')"}}]


def test_worker_events_without_task_events(app, broker, tap, start_worker, node, queue_name):
    w = start_worker("-n", node, "--heartbeat-interval", "0.5")
    online = tap.wait_for(lambda e: e.get("hostname") == node and e.get("type") == "worker-online", what="online")
    assert WORKER_FIELDS <= set(online)
    assert online["freq"] == 0.5
    assert online["sw_sys"] == "Linux"
    tap.wait_for(lambda e: len(tap.of(node, "worker-heartbeat")) >= 2, what="2 heartbeats")
    hb = tap.of(node, "worker-heartbeat")
    assert hb[1]["clock"] > hb[0]["clock"]
    assert hb[1]["timestamp"] >= hb[0]["timestamp"]

    assert app.send_task("add", args=(2, 2), queue=queue_name).get(timeout=15) == 4
    tap.wait_for(lambda e: e.get("hostname") == node and e.get("type") == "worker-heartbeat"
                 and e["processed"] == 1, what="heartbeat after a task")
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0
    tap.wait_for(lambda e: e.get("hostname") == node and e.get("type") == "worker-offline", what="offline")
    assert not [e for e in tap.events if e.get("hostname") == node and e["type"].startswith("task-")]


def _task_event(tap, node, type_, task_id):
    return tap.wait_for(lambda e: e.get("hostname") == node and e.get("type") == type_
                        and e.get("uuid") == task_id, what="%s of %s" % (type_, task_id))


def test_task_events_with_E(app, tap, start_worker, node, queue_name):
    start_worker("-n", node, "-E")
    r = app.send_task("addTask.add", args=(5, 5), queue=queue_name)
    assert r.get(timeout=15) == 10
    received = _task_event(tap, node, "task-received", r.id)
    assert COMMON_FIELDS <= set(received)
    assert received["name"] == "addTask.add"
    assert received["args"] == "(5, 5)"
    assert received["kwargs"] == "{}"
    assert received["retries"] == 0
    assert received["root_id"] == r.id
    assert received["eta"] is None and received["expires"] is None
    started = _task_event(tap, node, "task-started", r.id)
    succeeded = _task_event(tap, node, "task-succeeded", r.id)
    assert succeeded["result"] == "10"
    assert succeeded["runtime"] >= 0
    assert received["clock"] < started["clock"] < succeeded["clock"]

    f = app.send_task("fail", args=("kaput",), queue=queue_name)
    with pytest.raises(Exception):
        f.get(timeout=15)
    failed = _task_event(tap, node, "task-failed", f.id)
    assert "kaput" in failed["exception"]
    assert "kaput" in failed["traceback"]

    t = app.send_task("retry_twice", args=(0.1,), queue=queue_name)
    assert t.get(timeout=30) == 2
    retried = _task_event(tap, node, "task-retried", t.id)
    assert "try again 1" in retried["exception"]
    tap.wait_for(lambda e: e.get("type") == "task-received" and e.get("uuid") == t.id and e["retries"] == 2,
                 what="task-received of the second retry")

    x = app.send_task("add", args=(1, 1), queue=queue_name, countdown=3, expires=1)
    with pytest.raises(Exception):
        x.get(timeout=20)
    revoked = _task_event(tap, node, "task-revoked", x.id)
    assert revoked["expired"] is True and revoked["terminated"] is False


def test_celery_events_dump_shows_cpp_tasks(app, broker, start_worker, node, queue_name, tmp_path):
    out_path = tmp_path / "dump.txt"
    with open(out_path, "wb") as out:
        dump = subprocess.Popen(["/usr/bin/python3", "-m", "celery", "-b", broker.url, "events", "--dump"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        start_worker("-n", node, "-E")
        ids = []
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            # The dumper's queue exists only once it has started: keep sending until it sees one.
            r = app.send_task("addTask.add", args=(20, 22), queue=queue_name)
            assert r.get(timeout=15) == 42
            ids.append(r.id)
            time.sleep(0.5)
            text = out_path.read_text(errors="replace")
            if any(("task succeeded" in line and i in line) for line in text.splitlines() for i in ids):
                break
        lines = [line for line in text.splitlines() if line.startswith(node)]
        assert any("task succeeded" in line and "result=42" in line for line in lines), text[-3000:]
        assert any("task received" in line and "addTask.add" in line for line in lines), text[-3000:]
        assert any("] heartbeat:" in line and "sw_ident=miniworker" in line for line in lines), text[-3000:]
    finally:
        os.killpg(dump.pid, signal.SIGKILL)
        dump.wait(timeout=10)
