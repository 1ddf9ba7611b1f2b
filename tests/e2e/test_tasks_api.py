"""The task view's JSON API (/api/tasks, /api/tasks/{id}, /api/task-types,
/api/task-summary, /api/workers) over real AMQP traffic in Celery's wire format:
task messages, deliveries, rpc:// results and celeryev events, the history
surviving a restart, and the error replies.

minibroker only: RabbitMQ has no task view (Flower's role there).
"""

import uuid

import pika
import pytest

from task_traffic import (HttpBroker, api, heartbeat, publish_event, publish_result, publish_task,
                          wait_api)

pytestmark = pytest.mark.minibroker_only


@pytest.fixture(scope="module")
def hb():
    b = HttpBroker().start()
    yield b
    b.cleanup()


@pytest.fixture
def ch(hb):
    conn = pika.BlockingConnection(hb.params())
    channel = conn.channel()
    yield channel
    conn.close()


def test_task_lifecycle_publish_deliver_result(hb, ch):
    q = "tasks-" + uuid.uuid4().hex[:8]
    ch.queue_declare(q, durable=True)
    tid = publish_task(ch, "lifecycle.add", (2, 3), queue=q)
    t = wait_api(hb, "/api/tasks/" + tid, lambda t: t["state"] == "PENDING")
    assert t["name"] == "lifecycle.add"
    assert t["args"] == "(2, 3)"
    assert t["routing_key"] == q

    method, _, _ = ch.basic_get(q, auto_ack=False)  # a worker takes it
    assert method is not None
    wait_api(hb, "/api/tasks/" + tid, lambda t: t["state"] == "RECEIVED")
    types = {t["name"]: t for t in api(hb, "/api/task-types")[1]}
    assert types["lifecycle.add"]["running"] == 1
    ch.basic_ack(method.delivery_tag)

    # The result goes to a reply queue nobody declared: the broker still sees it.
    publish_result(ch, tid, "SUCCESS", 5, reply_to="no-such-reply-queue")
    t = wait_api(hb, "/api/tasks/" + tid, lambda t: t["state"] == "SUCCESS")
    assert t["result"] == "5"
    assert t["finished"] >= t["received"] > 0
    types = {t["name"]: t for t in api(hb, "/api/task-types")[1]}
    assert types["lifecycle.add"]["succeeded"] == 1
    assert types["lifecycle.add"]["running"] == 0


def test_failure_retry_and_filters(hb, ch):
    ch.queue_declare("celery", durable=True)
    ok = publish_task(ch, "filters.ok")
    bad = publish_task(ch, "filters.bad")
    publish_result(ch, ok, "SUCCESS")
    publish_result(ch, bad, "RETRY", {"exc_type": "RuntimeError", "exc_message": ["again"]})
    publish_task(ch, "filters.bad", task_id=bad, retries=1)  # Celery's retry: same id, retries + 1
    publish_result(ch, bad, "FAILURE")
    t = wait_api(hb, "/api/tasks/" + bad, lambda t: t["state"] == "FAILURE")
    assert t["error"] == "ValueError: boom"
    assert "Traceback" in t["traceback"]
    assert t["retries"] == 1
    types = {t["name"]: t for t in api(hb, "/api/task-types")[1]}
    assert types["filters.bad"]["retried"] == 1
    assert types["filters.bad"]["failed"] == 1
    assert types["filters.bad"]["published"] == 2

    status, failed = api(hb, "/api/tasks?state=FAILURE&name=filters.bad")
    assert status == 200
    assert [t["id"] for t in failed["items"]] == [bad]
    _, named = api(hb, "/api/tasks?name=filters.ok")
    assert [t["id"] for t in named["items"]] == [ok]
    _, page = api(hb, "/api/tasks?limit=1")
    assert len(page["items"]) == 1 and page["total"] >= 2


def test_events_without_any_queue_bound(hb, ch):
    # No monitor is running: nothing is bound to celeryev, yet the broker sees the events.
    host = "celery@" + uuid.uuid4().hex[:6]
    tid = str(uuid.uuid4())
    publish_event(ch, "worker.heartbeat", heartbeat(host, processed=3, active=1), hostname=host)
    publish_event(ch, "task.multi", [
        {"hostname": host, "uuid": tid, "name": "events.mul", "args": "(6, 7)", "kwargs": "{}",
         "timestamp": 1.0e9, "type": "task-received"},
        {"hostname": host, "uuid": tid, "timestamp": 1.0e9 + 1, "type": "task-started"},
    ], hostname=host)
    publish_event(ch, "task.succeeded", {"hostname": host, "uuid": tid, "result": "42", "runtime": 0.125,
                                         "timestamp": 1.0e9 + 2, "type": "task-succeeded"}, hostname=host)
    t = wait_api(hb, "/api/tasks/" + tid, lambda t: t["state"] == "SUCCESS")
    assert t["name"] == "events.mul"
    assert t["worker"] == host
    assert t["result"] == "42"
    assert t["runtime"] == pytest.approx(0.125)
    workers = {w["hostname"]: w for w in api(hb, "/api/workers")[1]}
    assert workers[host]["state"] == "online"
    assert workers[host]["processed"] == 3
    assert workers[host]["software"] == "py-celery 5.2.6"
    publish_event(ch, "worker.offline", {"hostname": host, "timestamp": 1.0e9 + 3, "type": "worker-offline"},
                  hostname=host)
    wait_api(hb, "/api/workers", lambda ws: any(w["hostname"] == host and w["state"] == "offline" for w in ws))


def test_malformed_traffic_is_ignored_and_counted(hb, ch):
    before = api(hb, "/api/task-summary")[1]["malformed"]
    ch.exchange_declare("celeryev", "topic", durable=True)
    ch.basic_publish("celeryev", "task.multi", b"{not json", pika.BasicProperties(content_type="application/json"))
    ch.basic_publish("", "celery", b"\x00\x01", pika.BasicProperties(
        content_type="application/x-capnp", headers={"task": "broken", "id": "broken-1"}))
    wait_api(hb, "/api/task-summary", lambda s: s["malformed"] == before + 2)
    # The broker is unharmed and the channel still works.
    ch.queue_declare("celery", durable=True)
    assert api(hb, "/api/tasks/broken-1")[0] == 404


def test_error_replies(hb):
    status, body = api(hb, "/api/tasks?state=BOGUS")
    assert status == 400 and body["error"] == "bad_request"
    assert api(hb, "/api/tasks?limit=-1")[0] == 400
    assert api(hb, "/api/tasks?offset=x")[0] == 400
    assert api(hb, "/api/tasks/" + str(uuid.uuid4()))[0] == 404


def test_history_survives_a_restart():
    b = HttpBroker().start()
    try:
        conn = pika.BlockingConnection(b.params())
        c = conn.channel()
        c.queue_declare("celery", durable=True)
        tid = publish_task(c, "restart.add")
        publish_result(c, tid, "SUCCESS", 10)
        wait_api(b, "/api/tasks/" + tid, lambda t: t["state"] == "SUCCESS")
        conn.close()
        b.restart()  # SIGTERM, then start() again, which waits for HTTP
        status, t = api(b, "/api/tasks/" + tid)
        assert status == 200
        assert t["state"] == "SUCCESS" and t["result"] == "10"
        types = {t["name"]: t for t in api(b, "/api/task-types")[1]}
        assert types["restart.add"]["succeeded"] == 1
    finally:
        b.cleanup()
