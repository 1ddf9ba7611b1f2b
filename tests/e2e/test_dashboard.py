"""The web dashboard in a real browser: start a broker with its HTTP port,
produce traffic (queues with ready, unacked and consumed messages; Celery
tasks with results; a worker heartbeat), open the dashboard in headless
Chromium (tests/browser/dashboard.mjs, playwright-core), and check that the
queue table shows the right counts and the tasks appear with their states.

Screenshots are test artifacts, written to $MB_ARTIFACTS_DIR (default
<repo>/build/test-artifacts). MB_UPDATE_SCREENSHOT=1 also copies the
overview to docs/dashboard.png (the README's picture).

Needs node, Debian's chromium and tests/browser/node_modules (scripts/test
runs `npm ci` there); a missing piece is a failure, never a skip.
"""

import json
import os
import shutil
import subprocess
import threading
import time
import uuid

import pika
import pytest

from task_traffic import HttpBroker, api, heartbeat, publish_event, publish_result, publish_task, wait_api

pytestmark = pytest.mark.minibroker_only

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BROWSER_DIR = os.path.join(REPO, "tests", "browser")
CHROMIUM = os.environ.get("MB_CHROMIUM", "/usr/bin/chromium")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def artifact_dir():
    d = os.environ.get("MB_ARTIFACTS_DIR") or os.path.join(REPO, "build", "test-artifacts")
    os.makedirs(d, exist_ok=True)
    return d


class Ticker(threading.Thread):
    """Steady traffic while the browser looks, so the overview's charts have something to
    draw: publishes to a queue of its own, consumed with auto-ack (its counts are not checked),
    and a Celery worker's heartbeat every 2 s, as a live worker sends it."""

    RATE_PER_S = 40
    HEARTBEAT_S = 2.0

    def __init__(self, broker, worker):
        super().__init__(daemon=True)
        self.broker = broker
        self.stopping = threading.Event()
        self.queue = "ticks-" + uuid.uuid4().hex[:6]
        self.worker = worker

    def run(self):
        conn = pika.BlockingConnection(self.broker.params())
        try:
            ch = conn.channel()
            ch.queue_declare(self.queue, auto_delete=True)
            ch.basic_consume(self.queue, lambda *a: None, auto_ack=True)
            next_heartbeat = 0.0
            while not self.stopping.is_set():
                if time.monotonic() >= next_heartbeat:
                    publish_event(ch, "worker.heartbeat", heartbeat(self.worker, processed=2), hostname=self.worker)
                    next_heartbeat = time.monotonic() + self.HEARTBEAT_S
                for _ in range(self.RATE_PER_S // 10):
                    ch.basic_publish("", self.queue, b"tick")
                conn.process_data_events(time_limit=0)
                time.sleep(0.1)
        finally:
            conn.close()

    def stop(self):
        self.stopping.set()
        self.join(timeout=10)


def check_browser_setup():
    problems = []
    if not shutil.which("node"):
        problems.append("node is not installed")
    if not os.access(CHROMIUM, os.X_OK):
        problems.append("%s is missing (Debian package chromium)" % CHROMIUM)
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        problems.append("run `npm ci` in tests/browser")
    if problems:
        pytest.fail("browser test setup: " + "; ".join(problems))


@pytest.mark.timeout(180)
def test_dashboard_shows_queues_and_tasks():
    check_browser_setup()
    b = HttpBroker().start()
    conns = []
    try:
        conn = pika.BlockingConnection(b.params())
        conns.append(conn)
        ch = conn.channel()
        suffix = uuid.uuid4().hex[:6]
        orders, work = "orders-" + suffix, "work-" + suffix
        ch.queue_declare(orders, durable=True)
        ch.queue_declare(work)
        for i in range(7):
            ch.basic_publish("", orders, b"order %d" % i)
        for i in range(3):
            ch.basic_publish("", work, b"job %d" % i)

        # A consumer with prefetch 1 that never acks: work has 2 ready, 1 unacked, 1 consumer.
        consumer_conn = pika.BlockingConnection(b.params())
        conns.append(consumer_conn)
        cch = consumer_conn.channel()
        cch.basic_qos(prefetch_count=1)
        cch.basic_consume(work, lambda *a: None, auto_ack=False)
        consumer_conn.process_data_events(time_limit=0.5)

        ch.queue_declare("celery", durable=True)
        ok = publish_task(ch, "shop.add", (2, 2))
        failed = publish_task(ch, "shop.charge", (99,))
        pending = publish_task(ch, "shop.add", (3, 4))
        publish_result(ch, ok, "SUCCESS", 4)
        publish_result(ch, failed, "FAILURE")
        wait_api(b, "/api/queues", lambda qs: any(q["name"] == work and q.get("messages_unacknowledged") == 1
                                                   for q in qs), what="work queue has its unacked delivery")

        out_dir = artifact_dir()
        ticker = Ticker(b, "celery@shop")
        ticker.start()
        try:
            proc = subprocess.run(["node", "dashboard.mjs", b.http_url, out_dir, ok, failed, pending],
                                  cwd=BROWSER_DIR, capture_output=True, text=True, timeout=150)
        finally:
            ticker.stop()
        assert proc.returncode == 0, "dashboard.mjs failed:\n%s\n%s" % (proc.stdout, proc.stderr)
        seen = json.loads(proc.stdout.strip().splitlines()[-1])

        assert seen["queues"][orders] == {"ready": 7, "unacked": 0, "total": 7, "consumers": 0}
        assert seen["queues"][work] == {"ready": 2, "unacked": 1, "total": 3, "consumers": 1}
        # "celery" holds the three task messages (results went to an undeclared reply queue).
        assert seen["queues"]["celery"]["ready"] == 3
        assert seen["tasks"][ok] == {"state": "SUCCESS", "name": "shop.add"}
        assert seen["tasks"][failed] == {"state": "FAILURE", "name": "shop.charge"}
        assert seen["tasks"][pending] == {"state": "PENDING", "name": "shop.add"}
        assert seen["detail"]["Id"] == ok
        assert seen["detail"]["Result"] == "4"
        assert seen["workers"]["celery@shop"] == "online"
        assert seen["console_errors"] == []
        for path in seen["screenshots"]:
            with open(path, "rb") as f:
                assert f.read(8) == PNG_MAGIC, path
        if os.environ.get("MB_UPDATE_SCREENSHOT") == "1":
            os.makedirs(os.path.join(REPO, "docs"), exist_ok=True)
            shutil.copyfile(os.path.join(out_dir, "dashboard-overview.png"),
                            os.path.join(REPO, "docs", "dashboard.png"))
        # The failure detail the task page links to.
        status, t = api(b, "/api/tasks/" + failed)
        assert status == 200 and t["error"] == "ValueError: boom"
    finally:
        for c in conns:
            try:
                c.close()
            except Exception:
                pass
        b.cleanup()
