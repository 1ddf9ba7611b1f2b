"""Resource alarms: past --vm-memory-high-watermark-bytes or under --disk-free-limit a
publishing connection gets connection.blocked (pika's blocked callback) and is no longer
read from; consumers on other connections are still served; once the alarm clears the
publisher gets connection.unblocked and its held publishes go through.

Concerns:
- [x] memory: fill a queue until the publisher is blocked, drain it from a consumer
      connection, the publisher is unblocked and can publish again. The watermark is set
      48 MB above what the broker allocates when idle (read from its start-up line), so the
      test also works under AddressSanitizer (scripts/asan), whose allocator differs
- [x] disk: a 2 GB file made here takes the free space below the limit: the first publish
      is blocked ("low on disk"), a connection that never published is still served;
      deleting the file clears the alarm: connection.unblocked, the held publish goes through
All minibroker_only: own brokers with alarm flags (RabbitMQ sets these in its config).
"""

import os
import re
import time

import pika
import pytest

from minibroker_proc import MinibrokerProc, default_binary
from task_traffic import HttpBroker, api
from util import uname

pytestmark = pytest.mark.minibroker_only

# 48 MB of queued bodies above the idle broker's allocations cross the watermark.
MEMORY_HEADROOM = 48 << 20
# Disk: the limit sits DISK_MARGIN below the free space, a file of twice that goes under it.
DISK_MARGIN = 1 << 30
BODY = b"m" * (256 << 10)
MAX_PUBLISHES = 2000  # 500 MB: never reached unless the alarm is broken


def own_broker(*args):
    b = MinibrokerProc(default_binary(), extra_args=list(args))
    b.start(timeout=10)
    return b


def idle_allocation():
    """Bytes an idle broker has allocated, as its memory alarm counts them (its start-up line)."""
    b = own_broker("--vm-memory-high-watermark-bytes", str(1 << 50))
    try:
        with open(b.log_path) as f:
            m = re.search(r"memory high watermark \d+ bytes \((\d+) allocated now\)", f.read())
        assert m, b.tail()
        return int(m.group(1))
    finally:
        b.cleanup()


def params(b, **kw):
    # blocked_connection_timeout=None: pika must not give up on a blocked connection
    return pika.ConnectionParameters(host=b.host, port=b.port, socket_timeout=10,
                                     blocked_connection_timeout=None, **kw)


def watch_blocking(conn):
    events = []
    conn.add_on_connection_blocked_callback(lambda c, f: events.append(("blocked", f.method.reason)))
    conn.add_on_connection_unblocked_callback(lambda c, f: events.append(("unblocked", None)))
    return events


def pump_until(conn, pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        conn.process_data_events(time_limit=0.1)


@pytest.mark.timeout(180)
def test_memory_alarm_blocks_publisher_serves_consumer_then_unblocks():
    b = own_broker("--vm-memory-high-watermark-bytes", str(idle_allocation() + MEMORY_HEADROOM))
    try:
        pub = pika.BlockingConnection(params(b))
        events = watch_blocking(pub)
        pch = pub.channel()
        q = uname("alarm")
        pch.queue_declare(q, auto_delete=False)
        sent = 0
        while not events and sent < MAX_PUBLISHES:
            pch.basic_publish("", q, BODY)
            sent += 1
            pub.process_data_events(time_limit=0.01)
        pump_until(pub, lambda: events, 30, "connection.blocked")
        assert events[0] == ("blocked", "low on memory"), events
        assert sent < MAX_PUBLISHES

        # Another connection, which never published, still consumes.
        con = pika.BlockingConnection(params(b))
        cch = con.channel()
        drained = 0
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 5:
            m, _, body = cch.basic_get(q, auto_ack=True)
            if m is None:
                time.sleep(0.05)
                continue
            assert body == BODY
            drained += 1
            idle_since = time.monotonic()
        assert drained > 0

        pump_until(pub, lambda: ("unblocked", None) in events, 60, "connection.unblocked")
        pch.basic_publish("", q, b"after the alarm")
        deadline = time.monotonic() + 30
        while True:
            m, _, body = cch.basic_get(q, auto_ack=True)
            if m is not None and body == b"after the alarm":
                break
            assert time.monotonic() < deadline, "publishing did not resume"
            if m is None:
                time.sleep(0.05)
        pub.close()
        con.close()
        with open(b.log_path) as f:
            log = f.read()
        assert "memory alarm set" in log and "memory alarm cleared" in log
        assert b.alive()
    finally:
        b.cleanup()


def disk_free(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@pytest.mark.timeout(120)
def test_disk_alarm_blocks_publisher_consumer_served_then_unblocks(tmp_path):
    filler = tmp_path / "filler"
    limit = disk_free(str(tmp_path)) - DISK_MARGIN
    with open(filler, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, 2 * DISK_MARGIN)  # free space now a margin below the limit
    b = HttpBroker(["--disk-free-limit", str(limit)]).start()
    try:
        assert os.stat(b.data_dir).st_dev == os.stat(tmp_path).st_dev, "data dir on another filesystem"
        pub = pika.BlockingConnection(params(b))
        events = watch_blocking(pub)
        pch = pub.channel()
        q = uname("disk")
        pch.queue_declare(q)
        pch.basic_publish("", q, b"held")
        pump_until(pub, lambda: events, 30, "connection.blocked")
        assert events == [("blocked", "low on disk")]
        status, body = api(b, "/api/health/checks/alarms")
        assert status == 503 and body["status"] == "failed", (status, body)
        assert [a["resource"] for a in body["alarms"]] == ["disk"]

        # The publish method was read; its content waits unread in the socket, as RabbitMQ
        # does. A connection that never published is still served.
        con = pika.BlockingConnection(params(b))
        cch = con.channel()
        assert cch.queue_declare(q, passive=True).method.message_count == 0
        other = cch.queue_declare("", exclusive=True).method.queue
        cch.queue_bind(other, "amq.fanout")
        assert cch.basic_get(q)[0] is None

        os.unlink(filler)  # free space back above the limit: the next disk check clears the alarm
        pump_until(pub, lambda: ("unblocked", None) in events, 30, "connection.unblocked")
        assert events == [("blocked", "low on disk"), ("unblocked", None)]
        assert api(b, "/api/health/checks/alarms") == (200, {"status": "ok"})
        deadline = time.monotonic() + 30
        while cch.queue_declare(q, passive=True).method.message_count == 0:
            assert time.monotonic() < deadline, "the held publish never arrived"
            con.process_data_events(time_limit=0.1)
        assert cch.basic_get(q, auto_ack=True)[2] == b"held"
        pub.close()
        con.close()
        with open(b.log_path) as f:
            log = f.read()
        assert "disk alarm set" in log and "disk alarm cleared" in log
        assert b.alive()
    finally:
        b.cleanup()
        if filler.exists():
            filler.unlink()
