"""amqp-tools (rabbitmq-c 0.11 command line tools) against the broker.

Concerns:
- [x] amqp-declare-queue prints the queue name; queue exists afterwards
- [x] amqp-publish -r Q -b ... (plain) and with -p -C -H: properties reach a pika reader
- [x] amqp-get prints the body (basic.get no_ack=1), and fails on an empty queue
- [x] amqp-consume -q Q -c 1 (empty consumer tag: server-generated, prefetch 1, acks)
- [x] amqp-consume -e amq.fanout -r x: server-named auto-delete queue bound to amq.fanout
- [x] both connection forms: URL without trailing slash, and --server/--port
"""

import os
import shutil
import signal
import subprocess
import time

import pika
import pytest

from util import uname

TOOLS = ["amqp-declare-queue", "amqp-publish", "amqp-get", "amqp-consume"]
pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                reason="amqp-tools not installed (apt-get install amqp-tools)")


def run(args, timeout=10, **kw):
    return subprocess.run(args, capture_output=True, timeout=timeout, **kw)


@pytest.fixture
def url(broker):
    return broker.url_noslash


@pytest.fixture
def pch(broker):
    c = pika.BlockingConnection(broker.pika_params())
    yield c.channel()
    c.close()


def test_declare_queue(url, pch):
    q = uname()
    r = run(["amqp-declare-queue", "-u", url, "-q", q])
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == q
    assert pch.queue_declare(q, passive=True).method.message_count == 0


def test_declare_queue_server_port_form(broker, pch):
    q = uname()
    r = run(["amqp-declare-queue", "--server", broker.host, "--port", str(broker.port),
             "--username", "guest", "--password", "guest", "-q", q])
    assert r.returncode == 0, r.stderr
    pch.queue_declare(q, passive=True)


def test_publish_plain_and_get(url, pch):
    q = uname()
    pch.queue_declare(q)
    r = run(["amqp-publish", "-u", url, "-r", q, "-b", "hello tools"])
    assert r.returncode == 0, r.stderr
    r = run(["amqp-get", "-u", url, "-q", q])
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello tools"
    # amqp-get uses no_ack=1: the message is gone
    assert pch.queue_declare(q, passive=True).method.message_count == 0
    r = run(["amqp-get", "-u", url, "-q", q])
    assert r.returncode != 0  # empty queue


def test_publish_with_properties(url, pch):
    q = uname()
    pch.queue_declare(q)
    r = run(["amqp-publish", "-u", url, "-r", q, "-p", "-C", "application/json",
             "-H", "x-foo: bar", "-b", '{"a": 1}'])
    assert r.returncode == 0, r.stderr
    m, p, body = pch.basic_get(q, auto_ack=True)
    assert body == b'{"a": 1}'
    assert p.content_type == "application/json"
    assert p.delivery_mode == 2
    assert p.headers == {"x-foo": "bar"}


def test_consume_count_one(url, pch):
    q = uname()
    pch.queue_declare(q)
    pch.basic_publish("", q, b"first")
    pch.basic_publish("", q, b"second")
    r = run(["amqp-consume", "-u", url, "-q", q, "-c", "1", "cat"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"first"
    # it acked exactly one; the other stays
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if pch.queue_declare(q, passive=True).method.message_count == 1:
            break
        time.sleep(0.1)
    m, _, body = pch.basic_get(q, auto_ack=True)
    assert body == b"second"  # may be redelivered: amqp-consume can prefetch it


def test_consume_from_amq_fanout(url, pch):
    body = uname("fan").encode()
    proc = subprocess.Popen(["amqp-consume", "-u", url, "-e", "amq.fanout", "-r", "x",
                             "-c", "1", "cat"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            pch.basic_publish("amq.fanout", "", body)  # until its queue is bound
            time.sleep(0.2)
        out, err = proc.communicate(timeout=5)
        assert proc.returncode == 0, err
        assert out == body
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_trailing_slash_url_means_empty_vhost(broker):
    # amqp://.../ is vhost '' -> 530 NOT_ALLOWED; the tool must exit non-zero
    r = run(["amqp-declare-queue", "-u", broker.url_noslash + "/", "-q", uname()])
    assert r.returncode != 0
