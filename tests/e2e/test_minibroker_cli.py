"""The minibroker process itself (its own instances, not the session broker).

Concerns:
- [x] `minibroker --port P --bind 127.0.0.1 --data-dir D --loglevel info` starts and serves
- [x] SIGTERM / SIGINT: every connection gets connection.close 320 CONNECTION_FORCED, exit 0
- [x] restart on the same port and data dir works
- [x] errors are logged: a channel error (404) and a connection error (501) each leave a
      log line with the reply text
- [x] server-properties name the product honestly ("minibroker", DESIGN.md Decisions), so
      kombu sends basic.qos with global=false
- [x] one binary: a copy of minibroker alone in a directory serves the HTTP API (the HTTP
      module is embedded), and with --http-port 0 it does not load that module at all
All minibroker_only: they start/stop broker processes of their own.
"""

import base64
import json
import os
import shutil
import signal
import time
import urllib.request

import pika
import pytest

from amqp_raw import CONNECTION_CLOSE, RawAMQP, method_frame
from minibroker_proc import MinibrokerProc, default_binary
from rabbitmq_node import free_port

pytestmark = pytest.mark.minibroker_only


@pytest.fixture
def own_broker():
    b = MinibrokerProc(default_binary())
    b.start(timeout=10)
    yield b
    b.cleanup()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_closes_connections_320_and_exits_0(own_broker, sig):
    raws = [RawAMQP(own_broker.host, own_broker.port).handshake() for _ in range(3)]
    for r in raws:
        r.open_channel(1)
    own_broker.proc.send_signal(sig)
    for r in raws:
        f = r.read_close(timeout=10)
        assert f is not None, "socket closed without connection.close 320"
        assert f.method == CONNECTION_CLOSE
        code, text, _, _ = f.close_info()
        assert code == 320 and text.startswith("CONNECTION_FORCED"), (code, text)
        try:
            r.send(method_frame(0, 10, 51))
        except OSError:
            pass
        r.close()
    rc = own_broker.proc.wait(timeout=10)
    assert rc == 0, own_broker.tail()


def test_restart_same_port(own_broker):
    port = own_broker.port
    own_broker.restart(timeout=10)
    assert own_broker.port == port
    c = pika.BlockingConnection(pika.ConnectionParameters(
        host=own_broker.host, port=port, connection_attempts=1, socket_timeout=5))
    c.channel().queue_declare("", exclusive=True)
    c.close()


def test_product_is_minibroker(own_broker):
    from kombu import Connection
    with Connection(own_broker.url, connect_timeout=5) as conn:
        conn.connect()
        props = conn.connection.server_properties
        assert props.get("product") == "minibroker", props
        # kombu then treats basic.qos global as per-spec and Celery sends global=false
        assert conn.transport.qos_semantics_matches_spec(conn.connection) is True


def test_errors_are_logged(own_broker):
    missing = "e2e-missing-" + str(time.time_ns())
    c = pika.BlockingConnection(pika.ConnectionParameters(
        host=own_broker.host, port=own_broker.port, connection_attempts=1, socket_timeout=5))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            c.channel().queue_declare(missing, passive=True)
    finally:
        c.close()
    r = RawAMQP(own_broker.host, own_broker.port).handshake()
    r.send(b"\xde\xad\xbe\xef" * 4)
    f = r.read_close()
    r.close()
    assert f is not None and f.close_info()[0] == 501
    deadline = time.monotonic() + 5
    while True:
        with open(own_broker.log_path, "rb") as fh:
            log = fh.read().decode("utf-8", "replace")
        lines_404 = [l for l in log.splitlines() if missing in l and "NOT_FOUND" in l]
        has_501 = any(("501" in l or "FRAME_ERROR" in l) for l in log.splitlines())
        if (lines_404 and has_501) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert lines_404, "no log line for the 404 channel error:\n" + own_broker.tail(20)
    assert has_501, "no log line for the 501 connection error:\n" + own_broker.tail(20)


def http_module_mapped(pid):
    with open("/proc/%d/maps" % pid) as f:
        return "libmb_httplib" in f.read()


def test_copied_binary_alone_serves_http_api(tmp_path):
    binary = str(tmp_path / "bin" / "minibroker")
    os.makedirs(os.path.dirname(binary))
    shutil.copy2(default_binary(), binary)
    assert os.listdir(os.path.dirname(binary)) == ["minibroker"]

    http_port = free_port()
    b = MinibrokerProc(binary, base_dir=str(tmp_path / "http"), extra_args=["--http-port", str(http_port)])
    try:
        b.start(timeout=10)
        req = urllib.request.Request("http://127.0.0.1:%d/api/overview" % http_port, headers={
            "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200
            assert "product_version" in json.loads(r.read()), b.tail(20)
        assert http_module_mapped(b.proc.pid)
    finally:
        b.cleanup()

    b = MinibrokerProc(binary, base_dir=str(tmp_path / "nohttp"))  # --http-port 0
    try:
        b.start(timeout=10)
        assert not http_module_mapped(b.proc.pid)
    finally:
        b.cleanup()
