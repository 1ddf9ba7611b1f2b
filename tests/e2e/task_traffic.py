"""Helpers for the task view and dashboard tests (test_tasks_api.py, test_dashboard.py).

- HttpBroker: a minibroker with its management HTTP port on a free port.
- api(): GET/POST/DELETE on the management API as guest, JSON decoded.
- Celery-format traffic published with pika, byte-compatible with what Celery
  5.2 sends (see /work/shared/celery-wire.md): task messages (protocol v2
  headers), rpc:// results (correlation_id = task id) and celeryev events.
"""

import base64
import json
import time
import urllib.error
import urllib.request
import uuid

import pika

from minibroker_proc import MinibrokerProc, default_binary
from rabbitmq_node import free_port

AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


class HttpBroker(MinibrokerProc):
    def __init__(self, extra_args=()):
        self.http_port = free_port()
        super().__init__(default_binary(), extra_args=["--http-port", str(self.http_port), *extra_args])

    @property
    def http_url(self):
        return "http://127.0.0.1:%d" % self.http_port

    def start(self, timeout=10.0):
        super().start(timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.http_url + "/", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("HTTP port %d not serving\n%s" % (self.http_port, self.tail()))
                time.sleep(0.1)

    def params(self):
        return pika.ConnectionParameters(host=self.host, port=self.port,
                                         credentials=pika.PlainCredentials("guest", "guest"),
                                         connection_attempts=1, socket_timeout=5)


def api(broker, path, method="GET", body=None):
    """(status, decoded JSON or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(broker.http_url + path, data=data, method=method,
                                 headers={"Authorization": AUTH, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, None


def wait_api(broker, path, pred, timeout=15.0, what=None):
    """Polls path until pred(json) holds (the tracker is updated as messages arrive;
    the HTTP read goes through the broker's loop, so a few polls at most)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        status, last = api(broker, path)
        if status == 200 and pred(last):
            return last
        time.sleep(0.1)
    raise AssertionError("%s: condition not met; last answer %r" % (what or path, last))


def publish_task(ch, name, args=(5, 5), task_id=None, queue="celery", retries=0, reply_to="reply-q"):
    """A Celery protocol v2 task message, as `name.delay(*args)` sends it."""
    task_id = task_id or str(uuid.uuid4())
    headers = {
        "lang": "py", "task": name, "id": task_id, "shadow": None, "eta": None, "expires": None,
        "group": None, "group_index": None, "retries": retries, "timelimit": [None, None],
        "root_id": task_id, "parent_id": None, "argsrepr": repr(tuple(args)), "kwargsrepr": "{}",
        "origin": "gen1@test", "ignore_result": False,
    }
    body = json.dumps([list(args), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    ch.basic_publish("", queue, body, pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8", headers=headers,
        delivery_mode=2, priority=0, correlation_id=task_id, reply_to=reply_to))
    return task_id


def publish_result(ch, task_id, status="SUCCESS", result=10, reply_to="reply-q"):
    """An rpc:// result, as the Celery worker publishes it."""
    if status == "FAILURE":
        result = {"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"}
    body = json.dumps({"task_id": task_id, "status": status, "result": result,
                       "traceback": "Traceback (most recent call last):\nValueError: boom" if status == "FAILURE" else None,
                       "children": []})
    ch.basic_publish("", reply_to, body, pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8", headers={},
        delivery_mode=1, priority=0, correlation_id=task_id))


def publish_event(ch, routing_key, event, hostname="celery@test"):
    """A celeryev event (a dict, or a list for task.multi); the exchange is declared as Celery does."""
    ch.exchange_declare("celeryev", "topic", durable=True)
    ch.basic_publish("celeryev", routing_key, json.dumps(event), pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8", headers={"hostname": hostname},
        delivery_mode=1, priority=0))


def heartbeat(hostname="celery@test", processed=0, active=0):
    return {"hostname": hostname, "utcoffset": 0, "pid": 4242, "clock": 1, "freq": 2.0, "active": active,
            "processed": processed, "loadavg": [0.25, 0.5, 0.75], "sw_ident": "py-celery", "sw_ver": "5.2.6",
            "sw_sys": "Linux", "timestamp": time.time(), "type": "worker-heartbeat"}
