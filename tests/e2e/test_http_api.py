"""The management HTTP API and `minibroker ctl` end to end (issue 7): a real broker
binary started with --http-port, real HTTP requests (urllib), real AMQP traffic
(pika). Checks status codes and JSON shapes for each endpoint: the field names are
RabbitMQ 3.10's (see broker/http/snapshot.hpp), and the beyond-RabbitMQ endpoints
(browse, delete one message) are checked for what they promise.
"""

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pika
import pytest

from minibroker_proc import default_binary
from rabbitmq_node import free_port
from util import uname, wait_for

# Read here, not imported from conftest: tests/e2e_worker has a conftest of that name too.
TARGET = os.environ.get("MB_E2E_TARGET", "minibroker").strip().lower()
pytestmark = pytest.mark.skipif(TARGET != "minibroker", reason="starts its own minibroker with --http-port")

# Generous: the machine is shared and loaded.
START_TIMEOUT = 20.0
HTTP_TIMEOUT = 30.0

QUEUE_KEYS = {"name", "vhost", "durable", "auto_delete", "exclusive", "arguments", "messages",
              "messages_ready", "messages_unacknowledged", "consumers", "memory", "message_stats",
              "node", "state", "type", "messages_details", "messages_ready_details",
              "messages_unacknowledged_details", "policy", "exclusive_consumer_tag"}
EXCHANGE_KEYS = {"name", "vhost", "type", "durable", "auto_delete", "internal", "arguments"}
BINDING_KEYS = {"source", "vhost", "destination", "destination_type", "routing_key", "arguments",
                "properties_key"}
CONNECTION_KEYS = {"name", "node", "user", "vhost", "host", "port", "peer_host", "peer_port", "channels",
                   "state", "protocol", "auth_mechanism", "channel_max", "frame_max", "timeout",
                   "connected_at", "client_properties", "ssl", "type"}
CHANNEL_KEYS = {"name", "number", "user", "vhost", "node", "connection_details", "consumer_count",
                "messages_unacknowledged", "prefetch_count", "global_prefetch_count", "confirm",
                "transactional", "state"}
CONSUMER_KEYS = {"consumer_tag", "queue", "channel_details", "ack_required", "exclusive", "prefetch_count",
                 "active", "activity_status", "arguments"}
GET_KEYS = {"payload_bytes", "redelivered", "exchange", "routing_key", "message_count", "properties",
            "payload", "payload_encoding"}
OVERVIEW_KEYS = {"management_version", "rabbitmq_version", "product_name", "product_version", "node",
                 "cluster_name", "exchange_types", "message_stats", "queue_totals", "object_totals",
                 "listeners", "rates_mode"}
NOT_FOUND = {"error": "Object Not Found", "reason": "Not Found"}

# What RabbitMQ 3.10.8 with the management plugin answered to the same requests,
# captured once (tests/data/mgmt/README.md says how): status codes and key sets
# are compared, never values.
RABBIT = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "mgmt",
                                     "rabbitmq-3.10.json")))
# Fields minibroker adds beyond RabbitMQ (documented in README.md).
OUR_EXTRAS = {"oldest_ready_age_ms", "oldest_unacked_age_ms"}


class HttpBroker:
    """A minibroker with the management API on its own free port."""

    def __init__(self, extra_args=()):
        self.dir = tempfile.mkdtemp(prefix="mb-http-")
        self.port = free_port()
        self.http_port = free_port()
        self.extra_args = list(extra_args)
        self.log_path = os.path.join(self.dir, "broker.log")
        self.start()

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [default_binary(), "--port", str(self.port), "--http-port", str(self.http_port),
             "--bind", "127.0.0.1", "--data-dir", os.path.join(self.dir, "data")] + self.extra_args,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        wait_for(self._answers, timeout=START_TIMEOUT, interval=0.1, what="management API up")

    def restart(self):
        self.terminate()
        self.start()

    def _answers(self):
        assert self.proc.poll() is None, self.tail()
        try:
            return self.request("GET", "/api/overview")[0] == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.http_port, path)

    def request(self, method, path, body=None, user="guest", password="guest", headers=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url(path), data=data, method=method)
        if user is not None:
            token = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
            req.add_header("Authorization", "Basic " + token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None), dict(resp.headers)
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, (json.loads(raw) if raw else None), dict(e.headers)

    def get(self, path):
        status, body, _ = self.request("GET", path)
        assert status == 200, (path, status, body)
        return body

    def amqp(self):
        return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port, heartbeat=0))

    def ctl(self, *args):
        return subprocess.run([default_binary(), "ctl", "--http-port", str(self.http_port)] + list(args),
                              capture_output=True, text=True, timeout=HTTP_TIMEOUT)

    def tail(self):
        with open(self.log_path, "rb") as f:
            return f.read()[-4000:].decode(errors="replace")

    def terminate(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def stop(self):
        self.terminate()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def mb():
    b = HttpBroker()
    yield b
    b.stop()


def q(name):
    return urllib.parse.quote(name, safe="")


V = "%2F"  # the default vhost, URL-encoded as RabbitMQ expects


# --- auth ---

def test_unauthenticated_gets_401_with_challenge(mb):
    status, body, headers = mb.request("GET", "/api/overview", user=None)
    assert status == 401
    assert headers.get("WWW-Authenticate") == RABBIT["unauthenticated"]["www_authenticate"]
    assert body == RABBIT["unauthenticated"]["body"]


def test_wrong_password_gets_401(mb):
    status, _, _ = mb.request("GET", "/api/queues", user="guest", password="nope")
    assert status == 401


def test_whoami(mb):
    assert mb.get("/api/whoami") == {"name": "guest", "tags": ["administrator"]}


# --- listings ---

def test_overview_shape_and_totals(mb):
    name = uname("ov")
    conn = mb.amqp()
    try:
        ch = conn.channel()
        ch.queue_declare(name)
        ch.basic_publish("", name, b"x")
        ov = mb.get("/api/overview")
        assert OVERVIEW_KEYS <= set(ov)
        assert ov["object_totals"]["connections"] >= 1
        assert ov["object_totals"]["queues"] >= 1
        assert ov["listeners"][0]["port"] == mb.port
        assert {"publish", "publish_details", "ack", "deliver_get"} <= set(ov["message_stats"])
        wait_for(lambda: mb.get("/api/overview")["queue_totals"]["messages_ready"] >= 1, what="totals")
    finally:
        conn.close()


def test_queue_listing_shapes_and_counts(mb):
    name = uname("list")
    conn = mb.amqp()
    try:
        ch = conn.channel()
        ch.queue_declare(name, durable=True, arguments={"x-max-length": 100})
        for i in range(3):
            ch.basic_publish("", name, b"m%d" % i)
        ch.basic_qos(prefetch_count=1)
        ch.basic_consume(name, lambda *a: None)
        conn.process_data_events(0.2)

        def counts():
            qj = mb.get("/api/queues/%s/%s" % (V, q(name)))
            return qj["messages_ready"], qj["messages_unacknowledged"], qj["consumers"]
        wait_for(lambda: counts() == (2, 1, 1), what="2 ready, 1 unacked, 1 consumer")
        qj = mb.get("/api/queues/%s/%s" % (V, q(name)))
        assert QUEUE_KEYS <= set(qj)
        assert qj["name"] == name and qj["vhost"] == "/" and qj["durable"] is True
        assert qj["arguments"] == {"x-max-length": 100}
        assert qj["messages"] == 3
        assert qj["message_stats"]["publish"] == 3
        assert "rate" in qj["message_stats"]["publish_details"]
        assert qj["oldest_ready_age_ms"] >= 0 and qj["oldest_unacked_age_ms"] >= 0
        # every listing form includes it
        assert name in [x["name"] for x in mb.get("/api/queues")]
        assert name in [x["name"] for x in mb.get("/api/queues/%s" % V)]
        # Flower's broker tab reads exactly these
        flower = next(x for x in mb.get("/api/queues/%s" % V) if x["name"] == name)
        assert {"name", "messages", "messages_ready", "messages_unacknowledged", "consumers"} <= set(flower)
    finally:
        conn.close()


def test_not_found_bodies(mb):
    for path in ["/api/queues/%s/nope-%d" % (V, time.time_ns()), "/api/queues/no-such-vhost",
                 "/api/exchanges/%s/nope" % V, "/api/connections/nope", "/api/vhosts/nope", "/api/nope"]:
        status, body, _ = mb.request("GET", path)
        assert (status, body) == (404, NOT_FOUND), path


def test_exchanges_and_default_exchange_alias(mb):
    xs = mb.get("/api/exchanges/%s" % V)
    assert all(EXCHANGE_KEYS <= set(x) for x in xs)
    names = {x["name"] for x in xs}
    assert {"", "amq.direct", "amq.fanout", "amq.topic", "amq.headers"} <= names
    assert mb.get("/api/exchanges/%s/amq.default" % V)["name"] == ""
    assert mb.get("/api/exchanges/%s/amq.topic" % V)["type"] == "topic"


def test_bindings_include_default_and_explicit(mb):
    name = uname("bind")
    conn = mb.amqp()
    try:
        ch = conn.channel()
        ch.queue_declare(name)
        ch.queue_bind(name, "amq.topic", "a.*.c", arguments={"k": "v"})
        bs = [b for b in mb.get("/api/bindings/%s" % V) if b["destination"] == name]
        assert all(BINDING_KEYS <= set(b) for b in bs)
        assert {(b["source"], b["routing_key"]) for b in bs} == {("", name), ("amq.topic", "a.*.c")}
        explicit = next(b for b in bs if b["source"] == "amq.topic")
        assert explicit["arguments"] == {"k": "v"} and explicit["destination_type"] == "queue"
        assert len(mb.get("/api/bindings")) >= len(bs)
    finally:
        conn.close()


def test_connections_channels_consumers(mb):
    name = uname("cons")
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", mb.port, heartbeat=0, client_properties={"connection_name": "http-api-test"}))
    try:
        ch = conn.channel()
        ch.queue_declare(name)
        ch.basic_qos(prefetch_count=7)
        tag = ch.basic_consume(name, lambda *a: None)
        conns = [c for c in mb.get("/api/connections")
                 if c["client_properties"].get("connection_name") == "http-api-test"]
        assert len(conns) == 1
        c = conns[0]
        assert CONNECTION_KEYS <= set(c)
        assert c["user"] == "guest" and c["vhost"] == "/" and c["port"] == mb.port and c["channels"] == 1
        assert mb.get("/api/connections/" + q(c["name"]))["name"] == c["name"]
        chans = [x for x in mb.get("/api/channels") if x["connection_details"]["name"] == c["name"]]
        assert len(chans) == 1 and CHANNEL_KEYS <= set(chans[0])
        assert chans[0]["prefetch_count"] == 7 and chans[0]["consumer_count"] == 1
        cons = [x for x in mb.get("/api/consumers/%s" % V) if x["consumer_tag"] == tag]
        assert len(cons) == 1 and CONSUMER_KEYS <= set(cons[0])
        assert cons[0]["queue"] == {"name": name, "vhost": "/"}
        assert cons[0]["channel_details"]["connection_name"] == c["name"]
    finally:
        conn.close()


def test_delete_connection_closes_it_with_320(mb):
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", mb.port, heartbeat=0, client_properties={"connection_name": "to-close"}))
    c = next(c for c in mb.get("/api/connections") if c["client_properties"].get("connection_name") == "to-close")
    status, _, _ = mb.request("DELETE", "/api/connections/" + q(c["name"]), headers={"X-Reason": "bye"})
    assert status == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        for _ in range(100):
            conn.process_data_events(0.1)
    assert e.value.reply_code == 320
    assert e.value.reply_text == "CONNECTION_FORCED - bye"
    assert mb.request("DELETE", "/api/connections/" + q(c["name"]))[0] == 404


def test_vhosts_and_alarms(mb):
    vs = mb.get("/api/vhosts")
    assert [v["name"] for v in vs] == ["/"]
    assert {"name", "messages", "messages_ready", "messages_unacknowledged", "tracing"} <= set(vs[0])
    assert mb.get("/api/vhosts/%s" % V)["name"] == "/"
    assert mb.get("/api/health/checks/alarms") == {"status": "ok"}


# --- commands ---

def test_put_and_delete_queue(mb):
    name = uname("put q/with spaces")
    path = "/api/queues/%s/%s" % (V, q(name))
    assert mb.request("PUT", path, {"durable": False, "arguments": {"x-message-ttl": 60000}})[0] == 201
    assert mb.request("PUT", path, {"durable": False, "arguments": {"x-message-ttl": 60000}})[0] == 204
    status, body, _ = mb.request("PUT", path, {"durable": True})
    assert status == 400 and body["error"] == "bad_request" and "inequivalent arg 'durable'" in body["reason"]
    qj = mb.get(path)
    assert qj["name"] == name and qj["durable"] is False and qj["arguments"] == {"x-message-ttl": 60000}
    conn = mb.amqp()
    try:  # the queue is real: AMQP sees it
        assert conn.channel().queue_declare(name, passive=True).method.message_count == 0
    finally:
        conn.close()
    assert mb.request("DELETE", path)[0] == 204
    assert mb.request("DELETE", path)[0] == 404
    assert mb.request("PUT", "/api/queues/%s/%s" % (V, q(name)), {"arguments": {"x-max-length": "nope"}})[0] == 400
    assert mb.request("PUT", "/api/queues/no-vhost/x", {})[0] == 404


def test_delete_queue_if_empty(mb):
    name = uname("ifempty")
    path = "/api/queues/%s/%s" % (V, q(name))
    mb.request("PUT", path, {"durable": False})
    mb.request("POST", "/api/exchanges/%s/amq.default/publish" % V,
               {"routing_key": name, "payload": "x", "payload_encoding": "string", "properties": {}})
    status, body, _ = mb.request("DELETE", path + "?if-empty=true")
    assert status == 400, body
    assert mb.request("DELETE", path)[0] == 204


def test_put_and_delete_exchange(mb):
    name = uname("x")
    path = "/api/exchanges/%s/%s" % (V, q(name))
    assert mb.request("PUT", path, {"type": "fanout", "durable": False})[0] == 201
    assert mb.get(path)["type"] == "fanout"
    assert mb.request("PUT", path, {"type": "topic", "durable": False})[0] == 400
    assert mb.request("PUT", path + "-direct", {"durable": False})[0] == 201  # direct, as RabbitMQ
    assert mb.get(path + "-direct")["type"] == "direct"
    assert mb.request("DELETE", path)[0] == 204
    assert mb.request("DELETE", path)[0] == 404


def test_publish_get_purge(mb):
    name = uname("pub")
    mb.request("PUT", "/api/queues/%s/%s" % (V, q(name)), {"durable": False})
    pub = "/api/exchanges/%s/amq.default/publish" % V
    for i in range(3):
        status, body, _ = mb.request("POST", pub, {
            "routing_key": name, "payload": "hello %d" % i, "payload_encoding": "string",
            "properties": {"message_id": "id%d" % i, "headers": {"h": 1}, "delivery_mode": 2}})
        assert (status, body) == (200, {"routed": True})
    status, body, _ = mb.request("POST", pub, {"routing_key": name, "payload": base64.b64encode(b"\xff\x00").decode(),
                                               "payload_encoding": "base64", "properties": {}})
    assert (status, body) == (200, {"routed": True})
    assert mb.request("POST", pub, {"routing_key": "nowhere-%d" % time.time_ns(), "payload": "",
                                    "payload_encoding": "string", "properties": {}})[1] == {"routed": False}
    assert mb.request("POST", pub, {"routing_key": name})[0] == 400  # payload etc. missing

    get = "/api/queues/%s/%s/get" % (V, q(name))
    status, msgs, _ = mb.request("POST", get, {"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert status == 200 and len(msgs) == 2
    assert all(GET_KEYS <= set(m) for m in msgs)
    assert msgs[0]["payload"] == "hello 0" and msgs[0]["payload_encoding"] == "string"
    assert msgs[0]["properties"]["message_id"] == "id0" and msgs[0]["properties"]["headers"] == {"h": 1}
    assert msgs[0]["message_count"] == 3 and msgs[0]["redelivered"] is False
    # requeued: still there, now redelivered
    assert mb.get("/api/queues/%s/%s" % (V, q(name)))["messages_ready"] == 4
    status, msgs, _ = mb.request("POST", get, {"count": 10, "ackmode": "ack_requeue_false", "encoding": "auto"})
    assert [m["redelivered"] for m in msgs] == [True, True, False, False]
    assert msgs[3]["payload_encoding"] == "base64" and base64.b64decode(msgs[3]["payload"]) == b"\xff\x00"
    assert mb.get("/api/queues/%s/%s" % (V, q(name)))["messages_ready"] == 0
    assert mb.request("POST", get, {"count": 1, "ackmode": "bogus", "encoding": "auto"})[0] == 400

    mb.request("POST", pub, {"routing_key": name, "payload": "p", "payload_encoding": "string", "properties": {}})
    assert mb.request("DELETE", "/api/queues/%s/%s/contents" % (V, q(name)))[0] == 204
    assert mb.get("/api/queues/%s/%s" % (V, q(name)))["messages"] == 0
    assert mb.request("DELETE", "/api/queues/%s/nope-%d/contents" % (V, time.time_ns()))[0] == 404


def test_publish_reaches_an_amqp_consumer(mb):
    name = uname("pubamqp")
    conn = mb.amqp()
    try:
        ch = conn.channel()
        ch.queue_declare(name)
        ch.queue_bind(name, "amq.direct", "k")
        status, body, _ = mb.request("POST", "/api/exchanges/%s/amq.direct/publish" % V, {
            "routing_key": "k", "payload": "via http", "payload_encoding": "string",
            "properties": {"content_type": "text/plain"}})
        assert (status, body) == (200, {"routed": True})
        method, props, got = ch.basic_get(name, auto_ack=True)
        assert got == b"via http" and props.content_type == "text/plain" and method.exchange == "amq.direct"
    finally:
        conn.close()


# --- beyond RabbitMQ: browse and delete one message ---

def test_browse_ready_unacked_and_delete_one(mb):
    name = uname("browse")
    conn = mb.amqp()
    try:
        ch = conn.channel()
        ch.queue_declare(name)
        for i in range(4):
            ch.basic_publish("", name, b"b%d" % i, pika.BasicProperties(message_id="mid%d" % i))
        ch.basic_qos(prefetch_count=1)
        tag = ch.basic_consume(name, lambda *a: None)
        wait_for(lambda: mb.get("/api/queues/%s/%s" % (V, q(name)))["messages_unacknowledged"] == 1,
                 what="one unacked")
        path = "/api/queues/%s/%s/browse" % (V, q(name))
        b = mb.get(path)
        assert [m["payload"] for m in b["ready"]] == ["b1", "b2", "b3"]
        assert [m["position"] for m in b["ready"]] == [0, 1, 2]
        assert [m["payload"] for m in b["unacked"]] == ["b0"]
        assert b["unacked"][0]["consumer_tag"] == tag and b["unacked"][0]["delivery_tag"] == 1
        assert b["delayed"] == []
        # browsing consumed nothing
        assert mb.get("/api/queues/%s/%s" % (V, q(name)))["messages_ready"] == 3
        assert len(mb.get(path + "?limit=1")["ready"]) == 1

        msgs = "/api/queues/%s/%s/messages" % (V, q(name))
        assert mb.request("DELETE", msgs + "?position=1")[0] == 204  # b2
        assert mb.request("DELETE", msgs + "?message_id=mid3")[0] == 204
        assert mb.request("DELETE", msgs + "?message_id=mid3")[0] == 404
        assert mb.request("DELETE", msgs + "?position=9")[0] == 404
        assert mb.request("DELETE", msgs)[0] == 400
        assert [m["payload"] for m in mb.get(path)["ready"]] == ["b1"]
    finally:
        conn.close()


def test_browse_shows_delayed_messages_with_due_time(mb):
    name, x = uname("delayq"), uname("delayx")
    conn = mb.amqp()
    try:
        ch = conn.channel()
        ch.exchange_declare(x, "x-delayed-message", arguments={"x-delayed-type": "direct"})
        ch.queue_declare(name)
        ch.queue_bind(name, x, "k")
        ch.basic_publish(x, "k", b"later", pika.BasicProperties(headers={"x-delay": 600000}))
        wait_for(lambda: len(mb.get("/api/queues/%s/%s/browse" % (V, q(name)))["delayed"]) == 1, what="delayed")
        d = mb.get("/api/queues/%s/%s/browse" % (V, q(name)))["delayed"][0]
        assert d["payload"] == "later" and d["due_in_ms"] > 0 and d["due_at"] > time.time() * 1000
    finally:
        conn.close()


def test_rates_follow_traffic(mb):
    name = uname("rate")
    conn = mb.amqp()
    try:
        ch = conn.channel()
        ch.queue_declare(name)
        deadline = time.monotonic() + 60
        rate = 0.0
        # publish until a sample (every 5 s) shows a publish rate
        while time.monotonic() < deadline and rate <= 0:
            for _ in range(50):
                ch.basic_publish("", name, b"r")
            conn.process_data_events(0.2)
            rate = mb.get("/api/queues/%s/%s" % (V, q(name)))["message_stats"]["publish_details"]["rate"]
        assert rate > 0
        assert mb.get("/api/overview")["message_stats"]["publish_details"]["rate"] > 0
    finally:
        conn.close()


# --- minibroker ctl ---

def test_ctl_list_queues_table_and_json(mb):
    name = uname("ctl")
    mb.request("PUT", "/api/queues/%s/%s" % (V, q(name)), {"durable": False})
    mb.request("POST", "/api/exchanges/%s/amq.default/publish" % V,
               {"routing_key": name, "payload": "x", "payload_encoding": "string", "properties": {}})
    r = mb.ctl("list-queues")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "name\tmessages"
    assert "%s\t1" % name in lines
    r = mb.ctl("list-queues", "name", "messages_ready", "consumers", "message_stats.publish")
    assert "%s\t1\t0\t1" % name in r.stdout.splitlines()
    r = mb.ctl("list-queues", "--json")
    assert r.returncode == 0
    assert name in [x["name"] for x in json.loads(r.stdout)]


def test_ctl_list_exchanges_bindings_connections(mb):
    r = mb.ctl("list-exchanges")
    assert r.returncode == 0 and "amq.topic\ttopic" in r.stdout.splitlines()
    name = uname("ctlb")
    conn = mb.amqp()
    try:
        ch = conn.channel()
        ch.queue_declare(name)
        ch.queue_bind(name, "amq.fanout", "")
        r = mb.ctl("list-bindings")
        assert r.returncode == 0
        assert r.stdout.splitlines()[0] == "source\tdestination\tdestination_type\trouting_key"
        assert "amq.fanout\t%s\tqueue\t" % name in r.stdout.splitlines()
        r = mb.ctl("list-connections", "--json")
        assert r.returncode == 0 and len(json.loads(r.stdout)) >= 1
        r = mb.ctl("list-connections", "user", "vhost")
        assert "guest\t/" in r.stdout.splitlines()
    finally:
        conn.close()


def test_ctl_purge_and_delete_queue(mb):
    name = uname("ctlp")
    mb.request("PUT", "/api/queues/%s/%s" % (V, q(name)), {"durable": False})
    mb.request("POST", "/api/exchanges/%s/amq.default/publish" % V,
               {"routing_key": name, "payload": "x", "payload_encoding": "string", "properties": {}})
    r = mb.ctl("purge-queue", name)
    assert r.returncode == 0, r.stderr
    assert mb.get("/api/queues/%s/%s" % (V, q(name)))["messages"] == 0
    r = mb.ctl("delete-queue", name)
    assert r.returncode == 0, r.stderr
    assert mb.request("GET", "/api/queues/%s/%s" % (V, q(name)))[0] == 404
    r = mb.ctl("delete-queue", name)
    assert r.returncode == 1 and "404" in r.stderr


def test_ctl_status_and_errors(mb):
    r = mb.ctl("status")
    assert r.returncode == 0
    assert "listener: amqp 127.0.0.1:%d" % mb.port in r.stdout
    assert json.loads(mb.ctl("status", "--json").stdout)["product_name"] == "minibroker"
    r = mb.ctl("status", "--password", "wrong")
    assert r.returncode == 77 and "login refused" in r.stderr
    r = subprocess.run([default_binary(), "ctl", "--http-port", str(free_port()), "status"],
                       capture_output=True, text=True, timeout=HTTP_TIMEOUT)
    assert r.returncode == 69


def test_http_port_zero_turns_the_api_off(tmp_path):
    port = free_port()
    p = subprocess.Popen([default_binary(), "--port", str(port), "--http-port", "0", "--data-dir", str(tmp_path / "d")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out = b""
        deadline = time.monotonic() + START_TIMEOUT
        while b"listening on" not in out and time.monotonic() < deadline:
            out += p.stdout.read1(4096)
        assert b"listening on" in out and b"management HTTP API" not in out
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=15)


# --- shapes against RabbitMQ's captured answers ---

def _keys(obj):
    return set(obj) - OUR_EXTRAS


@pytest.mark.parametrize("sample,path", [
    ("overview", "/api/overview"), ("queues", "/api/queues/%2F"), ("exchanges", "/api/exchanges/%2F"),
    ("bindings", "/api/bindings/%2F"), ("connections", "/api/connections"), ("channels", "/api/channels"),
    ("consumers", "/api/consumers/%2F"), ("vhosts", "/api/vhosts"), ("whoami", "/api/whoami"),
    ("alarms", "/api/health/checks/alarms")])
def test_field_names_are_rabbitmqs(mb, sample, path):
    """Every field we send is one RabbitMQ sends under the same name (nested objects too)."""
    name = uname("shape")
    conn = mb.amqp()
    try:
        ch = conn.channel()
        ch.queue_declare(name, durable=True, arguments={"x-max-length": 100})
        ch.queue_bind(name, "amq.topic", "a.*", arguments={"k": "v"})
        ch.basic_publish("", name, b"x")
        ch.basic_consume(name, lambda *a: None)
        ours = mb.get(path)
        theirs = RABBIT[sample]["body"]
        if isinstance(theirs, list):
            assert ours, path
            ours, theirs = ours[0], theirs[0]
        assert _keys(ours) <= set(theirs), sorted(_keys(ours) - set(theirs))
        for k, v in ours.items():
            if isinstance(v, dict) and isinstance(theirs.get(k), dict) and k not in ("arguments", "client_properties"):
                assert set(v) <= set(theirs[k]), (k, sorted(set(v) - set(theirs[k])))
    finally:
        conn.close()


@pytest.mark.parametrize("sample,method,path,body", [
    ("put_queue_created", "PUT", "/api/queues/%2F/{q}", {"durable": False}),
    ("put_queue_existing", "PUT", "/api/queues/%2F/{q}", {"durable": False}),
    ("put_queue_inequivalent", "PUT", "/api/queues/%2F/{q}", {"durable": True}),
    ("publish", "POST", "/api/exchanges/%2F/amq.default/publish",
     {"routing_key": "{q}", "payload": "x", "payload_encoding": "string", "properties": {"message_id": "p1"}}),
    ("publish_unroutable", "POST", "/api/exchanges/%2F/amq.default/publish",
     {"routing_key": "nowhere", "payload": "x", "payload_encoding": "string", "properties": {}}),
    ("get", "POST", "/api/queues/%2F/{q}/get", {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}),
    ("purge", "DELETE", "/api/queues/%2F/{q}/contents", None),
    ("delete_queue", "DELETE", "/api/queues/%2F/{q}", None),
    ("delete_queue_missing", "DELETE", "/api/queues/%2F/{q}", None),
    ("put_exchange_no_type", "PUT", "/api/exchanges/%2F/{x}", {"durable": False}),
    ("put_exchange_created", "PUT", "/api/exchanges/%2F/{x}", {"type": "fanout", "durable": False}),
    ("delete_exchange", "DELETE", "/api/exchanges/%2F/{x}", None),
    ("not_found", "GET", "/api/queues/%2F/nope-{q}", None),
])
def test_command_answers_match_rabbitmq(mb, sample, method, path, body):
    """The same sequence RabbitMQ was sent, on fresh names: same status, same body shape."""
    names = test_command_answers_match_rabbitmq.names
    fill = lambda s: s.replace("{q}", names["q"]).replace("{x}", names["x"])
    if body is not None:
        body = json.loads(fill(json.dumps(body)))
    status, ours, _ = mb.request(method, fill(path), body)
    theirs = RABBIT[sample]
    assert status == theirs["status"], (sample, ours)
    if isinstance(theirs["body"], dict):
        assert set(ours) == set(theirs["body"])
        if "error" in theirs["body"]:
            assert ours["error"] == theirs["body"]["error"]
    elif isinstance(theirs["body"], list):
        assert len(ours) == len(theirs["body"]) and set(ours[0]) == set(theirs["body"][0])
    else:
        assert ours is None


test_command_answers_match_rabbitmq.names = {"q": uname("cmp"), "x": uname("cmpx")}


def test_close_connection_text_matches_rabbitmq(mb):
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", mb.port, heartbeat=0, client_properties={"connection_name": "to-close-default"}))
    c = next(c for c in mb.get("/api/connections")
             if c["client_properties"].get("connection_name") == "to-close-default")
    assert c["user_provided_name"] == "to-close-default"
    status, _, _ = mb.request("DELETE", "/api/connections/" + q(c["name"]))
    assert status == RABBIT["close_connection"]["status"]
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        for _ in range(100):
            conn.process_data_events(0.1)
    assert [e.value.reply_code, e.value.reply_text] == RABBIT["close_connection"]["amqp_close"]
