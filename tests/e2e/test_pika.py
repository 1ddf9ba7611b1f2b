"""pika (BlockingConnection) against the broker: the behaviours of the broker-core issue.

Concerns:
- [x] declare / bind / publish / get / ack; properties and header tables pass through
- [x] server-named queues (amq.gen-...)
- [x] exclusive queues: 405 RESOURCE_LOCKED for others, die with their connection
- [x] auto-delete: dies with its last consumer, never before the first
- [x] passive declare of a missing queue -> 404; inequivalent redeclare -> 406
- [x] exchange types: direct, fanout, topic (* and #), headers (x-match all/any)
- [x] exchange-to-exchange bindings (bind/unbind), alternate-exchange
- [x] amq.* names -> 403; binding the default exchange -> 403
- [x] unknown exchange type -> 406 channel close (minibroker decision; 3.10 says 503)
- [x] mandatory unroutable -> basic.return 312 NO_ROUTE, before the confirm
- [x] publisher confirms
- [x] large bodies (1 MB, 300 KB) split across frames; reading on after idle buffers are released
- [x] per-message expiration, x-message-ttl, x-expires
- [x] x-max-length with drop-head and reject-publish (nack under confirms)
- [x] dead-lettering with x-death (rejected / expired / maxlen), x-dead-letter-routing-key
- [x] x-max-priority ordering; x-single-active-consumer; consumer priority x-priority
- [x] basic.qos per consumer (global=false) and per channel (global=true); qos changes live
- [x] basic.get message_count / get-empty
- [x] ack / nack / reject, multiple and requeue; requeue keeps the original position
- [x] basic.recover; unacked requeued on channel close and on abrupt TCP close (FIN and RST)
- [x] broker-side consumer cancel when the queue is deleted
- [x] queue.purge counts, queue.delete if_unused / if_empty, exchange.delete if_unused
- [x] tx.select / commit / rollback
- [x] ack of an unknown delivery tag -> 406; publish to a missing exchange -> 404
- [x] wrong password -> 403 (ProbableAuthenticationError); unknown vhost -> 530
- [x] channel errors leave the connection and other channels usable
- [x] argument validation: bad x-arguments / expiration / x-priority -> 406, prefetch_size
      -> 540, tx<->confirm switch -> 406; delete of missing entities is idempotent
- [x] an existing amq.* exchange may be redeclared equivalently (spec: "MAY declare ... if
      the exchange already exists"); inequivalent -> 406; deleting it -> 403
"""

import datetime
import decimal
import socket
import struct
import time

import pika
import pytest
from pika.exceptions import (ChannelClosedByBroker, NackError,
                             ProbableAccessDeniedError, ProbableAuthenticationError,
                             UnroutableError)

from amqp_raw import RawAMQP, method_frame, shortstr
from util import uname, wait_for


# ------------------------------------------------------------------ fixtures/helpers
@pytest.fixture
def connect(broker):
    conns = []

    def _connect(**kw):
        c = pika.BlockingConnection(broker.pika_params(**kw))
        conns.append(c)
        return c

    yield _connect
    for c in conns:
        try:
            if c.is_open:
                c.close()
        except Exception:
            pass


@pytest.fixture
def conn(connect):
    return connect()


@pytest.fixture
def ch(conn):
    return conn.channel()


def channel_error(fn, *a, **kw):
    """Run fn, expect the broker to close the channel; return (code, text)."""
    with pytest.raises(ChannelClosedByBroker) as ei:
        fn(*a, **kw)
    return ei.value.reply_code, ei.value.reply_text


def queue_exists(conn, name):
    c = conn.channel()
    try:
        c.queue_declare(name, passive=True)
    except ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False
    c.close()
    return True


def exchange_exists(conn, name):
    c = conn.channel()
    try:
        c.exchange_declare(name, passive=True)
    except ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False
    c.close()
    return True


def get_all(ch, q, ack=True):
    out = []
    while True:
        m, p, b = ch.basic_get(q, auto_ack=ack)
        if m is None:
            return out
        out.append(b)


def qdeclare(ch, name=None, **kw):
    return ch.queue_declare(name if name is not None else uname(), **kw).method.queue


class Collector:
    """A basic.consume callback recording (tag, method, props, body)."""

    def __init__(self, ack=False):
        self.msgs = []
        self.ack = ack

    def __call__(self, channel, method, props, body):
        self.msgs.append((method, props, body))
        if self.ack:
            channel.basic_ack(method.delivery_tag)

    @property
    def bodies(self):
        return [b for _, _, b in self.msgs]


def pump(conn, until=None, timeout=3.0, settle=0.0):
    """Process events until `until()` is true (or timeout); then optionally `settle` more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
        if until is not None and until():
            break
    end = time.monotonic() + settle
    while time.monotonic() < end:
        conn.process_data_events(time_limit=0.05)


# ------------------------------------------------------------------ basics
def test_declare_bind_publish_get_ack(ch):
    ex, q = uname("ex"), uname()
    ch.exchange_declare(ex, exchange_type="direct")
    ok = ch.queue_declare(q)
    assert ok.method.queue == q
    assert ok.method.message_count == 0 and ok.method.consumer_count == 0
    ch.queue_bind(q, ex, routing_key="rk")
    props = pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8",
        headers={"s": "str", "i": 7, "neg": -3, "big": 2 ** 40, "b": True, "f": decimal.Decimal("1.5"),
                 "ts": datetime.datetime(2026, 1, 2, 3, 4, 5),
                 "nested": {"a": 1, "l": [1, "x", None]}, "none": None},
        delivery_mode=2, priority=3, correlation_id="cid", reply_to="rt",
        expiration="60000", message_id="mid", timestamp=1700000000, type="t",
        user_id="guest", app_id="app", cluster_id="cl")
    ch.basic_publish(ex, "rk", b"hello", properties=props)
    ch.basic_publish(ex, "other", b"nowhere")
    m, p, body = ch.basic_get(q)
    assert body == b"hello"
    assert m.exchange == ex and m.routing_key == "rk" and m.redelivered is False
    assert m.delivery_tag == 1
    assert m.message_count == 0
    for attr in ("content_type", "content_encoding", "delivery_mode", "priority",
                 "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
                 "type", "user_id", "app_id", "cluster_id"):
        assert getattr(p, attr) == getattr(props, attr), attr
    assert p.headers["s"] == "str" and p.headers["i"] == 7 and p.headers["neg"] == -3
    assert p.headers["big"] == 2 ** 40 and p.headers["b"] is True and p.headers["f"] == decimal.Decimal("1.5")
    assert p.headers["ts"] == datetime.datetime(2026, 1, 2, 3, 4, 5)
    assert p.headers["nested"]["a"] == 1 and p.headers["nested"]["l"][:2] == [1, "x"]
    assert p.headers["none"] is None
    ch.basic_ack(m.delivery_tag)
    assert ch.basic_get(q) == (None, None, None)
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_publish_without_properties_and_empty_body(ch):
    q = qdeclare(ch)
    ch.basic_publish("", q, b"")
    m, p, body = ch.basic_get(q, auto_ack=True)
    assert body == b"" and m is not None
    assert p.headers is None and p.content_type is None


def test_delivery_tags_per_channel_count_from_one(conn):
    c1, c2 = conn.channel(), conn.channel()
    q = qdeclare(c1)
    for i in range(4):
        c1.basic_publish("", q, b"%d" % i)
    tags1 = [c1.basic_get(q)[0].delivery_tag for _ in range(2)]
    tags2 = [c2.basic_get(q)[0].delivery_tag for _ in range(2)]
    assert tags1 == [1, 2] and tags2 == [1, 2]


def test_server_named_queue(ch):
    ok = ch.queue_declare("", exclusive=True)
    name = ok.method.queue
    assert name.startswith("amq.gen-") and len(name) > len("amq.gen-")
    ch.basic_publish("", name, b"x")
    assert ch.basic_get(name, auto_ack=True)[2] == b"x"
    assert ch.queue_declare("", exclusive=True).method.queue != name


def test_exclusive_queue_locked_and_dies_with_connection(connect):
    c1, c2 = connect(), connect()
    ch1 = c1.channel()
    q = qdeclare(ch1, exclusive=True)
    code, _ = channel_error(c2.channel().queue_declare, q)
    assert code == 405
    code, _ = channel_error(c2.channel().queue_declare, q, passive=True)
    assert code == 405
    code, _ = channel_error(c2.channel().basic_consume, q, lambda *a: None)
    assert code == 405
    code, _ = channel_error(c2.channel().basic_get, q)
    assert code == 405
    # owner can use it on another channel of the same connection
    ch1b = c1.channel()
    ch1b.basic_publish("", q, b"m")
    assert ch1b.basic_get(q, auto_ack=True)[2] == b"m"
    c1.close()
    wait_for(lambda: not queue_exists(c2, q), what="exclusive queue deleted")


def test_exclusive_queue_dies_on_abrupt_disconnect(broker, connect):
    raw = RawAMQP(broker.host, broker.port).handshake()
    raw.open_channel(1)
    q = uname()
    raw.queue_declare(1, q, exclusive=True)
    other = connect()
    code, _ = channel_error(other.channel().queue_declare, q)
    assert code == 405
    raw.close()  # FIN, no connection.close
    wait_for(lambda: not queue_exists(other, q), what="exclusive queue deleted after FIN")


def test_auto_delete_lifecycle(conn):
    ch = conn.channel()
    q = qdeclare(ch, auto_delete=True)
    ch.basic_publish("", q, b"kept")
    time.sleep(0.3)
    assert queue_exists(conn, q), "auto-delete queue must not die before its first consumer"
    ca, cb = Collector(), Collector()
    ta = ch.basic_consume(q, ca, auto_ack=True)
    tb = ch.basic_consume(q, cb, auto_ack=True)
    pump(conn, lambda: ca.msgs or cb.msgs)
    assert (ca.bodies + cb.bodies) == [b"kept"]
    ch.basic_cancel(ta)
    time.sleep(0.2)
    assert queue_exists(conn, q), "must survive while a consumer remains"
    ch.basic_cancel(tb)
    wait_for(lambda: not queue_exists(conn, q), what="auto-delete after last consumer")


def test_auto_delete_dies_when_consumer_connection_closes(connect):
    c1, c2 = connect(), connect()
    ch1 = c1.channel()
    q = qdeclare(ch1, auto_delete=True)
    ch1.basic_consume(q, lambda *a: None)
    c1.close()
    wait_for(lambda: not queue_exists(c2, q), what="auto-delete after consumer conn closed")


def test_passive_declare_missing_queue_404(conn):
    code, text = channel_error(conn.channel().queue_declare, uname(), passive=True)
    assert code == 404 and text.startswith("NOT_FOUND")
    code, _ = channel_error(conn.channel().exchange_declare, uname("ex"), passive=True)
    assert code == 404


def test_inequivalent_redeclare_406(conn):
    ch = conn.channel()
    q = qdeclare(ch, durable=False)
    code, text = channel_error(ch.queue_declare, q, durable=True)
    assert code == 406 and text.startswith("PRECONDITION_FAILED")
    ch = conn.channel()
    q2 = qdeclare(ch, arguments={"x-message-ttl": 1000})
    ch.queue_declare(q2, arguments={"x-message-ttl": 1000})  # identical: fine
    code, _ = channel_error(ch.queue_declare, q2, arguments={"x-message-ttl": 2000})
    assert code == 406
    ch = conn.channel()
    ex = uname("ex")
    ch.exchange_declare(ex, exchange_type="direct")
    ch.exchange_declare(ex, exchange_type="direct")
    code, _ = channel_error(ch.exchange_declare, ex, exchange_type="fanout")
    assert code == 406
    # passive declare ignores attributes
    conn.channel().queue_declare(q, passive=True, durable=True)


# ------------------------------------------------------------------ exchange types
def _queues_for(ch, ex, bindings, arguments_for=None):
    qs = {}
    for key in bindings:
        q = qdeclare(ch)
        args = arguments_for(key) if arguments_for else None
        ch.queue_bind(q, ex, routing_key=key if not arguments_for else "", arguments=args)
        qs[key] = q
    return qs


def test_direct_exchange(ch):
    ex = uname("ex")
    ch.exchange_declare(ex, "direct")
    qa, qb, qa2 = qdeclare(ch), qdeclare(ch), qdeclare(ch)
    ch.queue_bind(qa, ex, "a")
    ch.queue_bind(qa2, ex, "a")
    ch.queue_bind(qb, ex, "b")
    ch.queue_bind(qb, ex, "b")  # duplicate binding: one copy only
    ch.basic_publish(ex, "a", b"1")
    ch.basic_publish(ex, "b", b"2")
    ch.basic_publish(ex, "c", b"3")
    assert get_all(ch, qa) == [b"1"] and get_all(ch, qa2) == [b"1"]
    assert get_all(ch, qb) == [b"2"]
    ch.queue_unbind(qa, ex, "a")
    ch.basic_publish(ex, "a", b"4")
    assert get_all(ch, qa) == [] and get_all(ch, qa2) == [b"4"]


def test_default_exchange_routes_by_queue_name(ch):
    q = qdeclare(ch)
    ch.basic_publish("", q, b"d")
    ch.basic_publish("", uname(), b"lost")
    assert get_all(ch, q) == [b"d"]


def test_fanout_exchange(ch):
    ex = uname("ex")
    ch.exchange_declare(ex, "fanout")
    qs = [qdeclare(ch) for _ in range(3)]
    for i, q in enumerate(qs):
        ch.queue_bind(q, ex, "ignored%d" % i)
    ch.basic_publish(ex, "whatever", b"f")
    assert [get_all(ch, q) for q in qs] == [[b"f"]] * 3


def test_predeclared_exchanges(ch):
    for name, kind in (("amq.direct", "direct"), ("amq.fanout", "fanout"),
                       ("amq.topic", "topic"), ("amq.headers", "headers"),
                       ("amq.match", "headers")):
        ch.exchange_declare(name, exchange_type=kind, passive=True)
    q = qdeclare(ch)
    ch.queue_bind(q, "amq.topic", "x.#")
    ch.basic_publish("amq.topic", "x.y", b"t")
    assert get_all(ch, q) == [b"t"]


def test_topic_exchange(ch):
    ex = uname("ex")
    ch.exchange_declare(ex, "topic")
    patterns = ["a.*", "a.#", "#", "*.b.*", "#.z", "a.*.c", "worker.#", "*"]
    qs = _queues_for(ch, ex, patterns)
    keys = ["a", "a.b", "a.b.c", "x.y.z", "worker.heartbeat", "a.x.y.c", "", "q.b.r", "z"]
    for k in keys:
        ch.basic_publish(ex, k, k.encode() or b"<empty>")
    got = {p: sorted(get_all(ch, q)) for p, q in qs.items()}

    def exp(*ks):
        return sorted((k.encode() or b"<empty>") for k in ks)

    assert got["a.*"] == exp("a.b")
    assert got["a.#"] == exp("a", "a.b", "a.b.c", "a.x.y.c")
    assert got["#"] == exp(*keys)
    assert got["*.b.*"] == exp("a.b.c", "q.b.r")
    assert got["#.z"] == exp("x.y.z", "z")
    assert got["a.*.c"] == exp("a.b.c")
    assert got["worker.#"] == exp("worker.heartbeat")
    assert got["*"] == exp("a", "z")


def test_headers_exchange(ch):
    ex = uname("ex")
    ch.exchange_declare(ex, "headers")
    q_all, q_any, q_default, q_novalue = (qdeclare(ch) for _ in range(4))
    ch.queue_bind(q_all, ex, "", arguments={"x-match": "all", "format": "pdf", "type": "report"})
    ch.queue_bind(q_any, ex, "", arguments={"x-match": "any", "format": "zip", "type": "log"})
    ch.queue_bind(q_default, ex, "", arguments={"format": "pdf", "type": "report"})  # all
    ch.queue_bind(q_novalue, ex, "", arguments={"x-match": "any", "k": 1})

    def pub(body, headers):
        ch.basic_publish(ex, "rk-ignored", body, pika.BasicProperties(headers=headers))

    pub(b"both", {"format": "pdf", "type": "report"})
    pub(b"one", {"format": "pdf", "type": "log"})
    pub(b"zip", {"format": "zip"})
    pub(b"none", None)
    pub(b"int", {"k": 1})
    assert get_all(ch, q_all) == [b"both"]
    assert get_all(ch, q_default) == [b"both"]
    assert get_all(ch, q_any) == [b"one", b"zip"]
    assert get_all(ch, q_novalue) == [b"int"]


def test_exchange_to_exchange_binding(ch):
    src, dst = uname("src"), uname("dst")
    ch.exchange_declare(src, "topic")
    ch.exchange_declare(dst, "fanout")
    q = qdeclare(ch)
    ch.queue_bind(q, dst, "")
    ch.exchange_bind(destination=dst, source=src, routing_key="k.*")
    ch.basic_publish(src, "k.1", b"via-e2e")
    ch.basic_publish(src, "nomatch", b"no")
    assert get_all(ch, q) == [b"via-e2e"]
    ch.exchange_unbind(destination=dst, source=src, routing_key="k.*")
    ch.basic_publish(src, "k.2", b"after-unbind")
    assert get_all(ch, q) == []


def test_alternate_exchange(ch):
    ae, ex = uname("ae"), uname("ex")
    ch.exchange_declare(ae, "fanout")
    q_alt, q_main = qdeclare(ch), qdeclare(ch)
    ch.queue_bind(q_alt, ae, "")
    ch.exchange_declare(ex, "direct", arguments={"alternate-exchange": ae})
    ch.queue_bind(q_main, ex, "yes")
    ch.basic_publish(ex, "yes", b"routed")
    ch.basic_publish(ex, "no", b"unroutable")
    assert get_all(ch, q_main) == [b"routed"]
    assert get_all(ch, q_alt) == [b"unroutable"]


def test_amq_prefix_declare_refused_403(conn):
    code, text = channel_error(conn.channel().exchange_declare, "amq.e2e-" + uname(), "direct")
    assert code == 403 and text.startswith("ACCESS_REFUSED")
    code, _ = channel_error(conn.channel().queue_declare, "amq.e2e-" + uname())
    assert code == 403
    # passive declare of a predeclared amq.* exchange is fine
    conn.channel().exchange_declare("amq.direct", passive=True)


def test_redeclare_existing_amq_exchange(conn):
    # 0-9-1 exchange.declare: "The client MAY declare an exchange starting with 'amq.' if
    # the passive option is set, or the exchange already exists." RabbitMQ accepts an
    # equivalent redeclare of amq.direct, refuses an inequivalent one with 406.
    conn.channel().exchange_declare("amq.direct", "direct", durable=True)
    conn.channel().exchange_declare("amq.topic", "topic", durable=True)
    code, _ = channel_error(conn.channel().exchange_declare, "amq.direct", "fanout", durable=True)
    assert code == 406
    code, _ = channel_error(conn.channel().exchange_delete, "amq.direct")
    assert code == 403


def test_bind_default_exchange_refused_403(conn):
    ch = conn.channel()
    q = qdeclare(ch)
    code, _ = channel_error(ch.queue_bind, q, "", routing_key="x")
    assert code == 403


@pytest.mark.minibroker_only
def test_unknown_exchange_type_406_channel_close(conn):
    # DESIGN.md Decisions: unknown exchange type closes the *channel* with 406
    # (RabbitMQ 3.11+); RabbitMQ 3.10 closes the connection with 503 instead.
    ch = conn.channel()
    code, _ = channel_error(ch.exchange_declare, uname("ex"), exchange_type="no-such-type")
    assert code == 406
    assert conn.is_open
    conn.channel().queue_declare("", exclusive=True)


# ------------------------------------------------------------------ publishing
def test_mandatory_unroutable_returned_312_without_confirms(conn):
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m, b)))
    ex = uname("ex")
    ch.exchange_declare(ex, "direct")
    ch.basic_publish(ex, "nowhere", b"back", mandatory=True)
    ch.basic_publish("", uname(), b"back2", mandatory=True)
    pump(conn, lambda: len(returned) >= 2)
    assert [b for _, b in returned] == [b"back", b"back2"]
    m = returned[0][0]
    assert m.reply_code == 312 and m.reply_text == "NO_ROUTE"
    assert m.exchange == ex and m.routing_key == "nowhere"


def test_mandatory_unroutable_return_precedes_confirm(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    ex = uname("ex")
    ch.exchange_declare(ex, "direct")
    # pika raises UnroutableError only if basic.return arrived before the basic.ack
    with pytest.raises(UnroutableError) as ei:
        ch.basic_publish(ex, "nowhere", b"r", mandatory=True)
    rm = ei.value.messages[0]
    assert rm.method.reply_code == 312 and rm.body == b"r"
    q = qdeclare(ch)
    ch.basic_publish("", q, b"ok", mandatory=True)  # routable: no exception
    assert get_all(ch, q) == [b"ok"]


def test_publisher_confirms(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    q = qdeclare(ch)
    for i in range(50):
        ch.basic_publish("", q, b"%d" % i)  # raises NackError on nack
    ex = uname("ex")
    ch.exchange_declare(ex, "fanout")
    ch.basic_publish(ex, "", b"unrouted-but-acked")  # no queue: still acked
    assert ch.queue_declare(q, passive=True).method.message_count == 50


def test_publisher_confirms_raw_tags(broker):
    """confirm.select-ok, then basic.ack with delivery tags counting from 1."""
    raw = RawAMQP(broker.host, broker.port).handshake()
    try:
        raw.open_channel(1)
        q = uname()
        raw.queue_declare(1, q, exclusive=True)
        raw.send(method_frame(1, 85, 10, b"\x00"))  # confirm.select nowait=0
        raw.expect((85, 11))
        for i in range(3):
            raw.publish(1, "", q, b"m%d" % i)
        acked = set()
        deadline = time.monotonic() + 5
        while len(acked) < 3 and time.monotonic() < deadline:
            f = raw.expect((60, 80))
            tag, multiple = struct.unpack(">QB", f.payload[4:13])
            if multiple & 1:
                acked.update(range(1, tag + 1))
            else:
                acked.add(tag)
        assert acked == {1, 2, 3}
    finally:
        raw.close()


@pytest.mark.parametrize("size", [300 * 1024, 1024 * 1024])
def test_large_body(conn, size):
    ch = conn.channel()
    q = qdeclare(ch)
    body = bytes((i * 7 + size) % 251 for i in range(size))
    ch.basic_publish("", q, body)
    m, p, got = ch.basic_get(q, auto_ack=True)
    assert got == body
    # and through a consumer
    ch.basic_publish("", q, body)
    col = Collector()
    ch.basic_consume(q, col, auto_ack=True)
    pump(conn, lambda: col.msgs, timeout=10)
    assert col.bodies == [body]


def test_reads_on_after_an_idle_connection_releases_its_buffers(conn):
    # A 300 KB body grows the connection's read buffer; idle for longer than
    # kReadBufferIdleSeconds (2 s, checked by the 1 s connection timer) it is
    # released. The connection must read, and write, as before afterwards.
    ch = conn.channel()
    q = qdeclare(ch)
    body = bytes((i * 13) % 251 for i in range(300 * 1024))
    ch.basic_publish("", q, body)
    assert ch.basic_get(q, auto_ack=True)[2] == body
    time.sleep(3.5)
    ch.basic_publish("", q, b"small after idle")
    ch.basic_publish("", q, body)
    assert ch.basic_get(q, auto_ack=True)[2] == b"small after idle"
    assert ch.basic_get(q, auto_ack=True)[2] == body


def test_per_message_expiration(ch):
    q = qdeclare(ch)
    ch.basic_publish("", q, b"short", pika.BasicProperties(expiration="100"))
    ch.basic_publish("", q, b"long", pika.BasicProperties(expiration="60000"))
    ch.basic_publish("", q, b"zero", pika.BasicProperties(expiration="0"))
    time.sleep(0.5)
    assert get_all(ch, q) == [b"long"]


def test_x_message_ttl(ch):
    q = qdeclare(ch, arguments={"x-message-ttl": 150})
    ch.basic_publish("", q, b"a")
    ch.basic_publish("", q, b"b", pika.BasicProperties(expiration="60000"))  # min wins
    time.sleep(0.6)
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    assert get_all(ch, q) == []
    ch.basic_publish("", q, b"fresh")
    assert get_all(ch, q) == [b"fresh"]


def test_x_expires(conn):
    ch = conn.channel()
    q = qdeclare(ch, arguments={"x-expires": 400})
    assert queue_exists(conn, q)
    # do not poll: a (passive) declare counts as use and restarts the expiry timer
    time.sleep(1.5)
    assert not queue_exists(conn, q), "x-expires: unused queue must be deleted"


def test_x_expires_not_while_consumed(conn):
    ch = conn.channel()
    q = qdeclare(ch, arguments={"x-expires": 300})
    ch.basic_consume(q, lambda *a: None)
    pump(conn, timeout=0.01, settle=0.8)
    assert queue_exists(conn, q), "a queue with consumers must not expire"


def test_max_length_drop_head(ch):
    q = qdeclare(ch, arguments={"x-max-length": 2})
    for b in (b"1", b"2", b"3", b"4"):
        ch.basic_publish("", q, b)
    # (RabbitMQ may answer a passive declare before the publishes have reached the queue)
    wait_for(lambda: ch.queue_declare(q, passive=True).method.message_count == 2,
             what="2 messages")
    time.sleep(0.1)
    assert ch.queue_declare(q, passive=True).method.message_count == 2
    assert get_all(ch, q) == [b"3", b"4"]


def test_max_length_bytes(ch):
    q = qdeclare(ch, arguments={"x-max-length-bytes": 10})
    for b in (b"aaaa", b"bbbb", b"cccc"):
        ch.basic_publish("", q, b)
    assert get_all(ch, q) == [b"bbbb", b"cccc"]


def test_max_length_reject_publish_nacks(conn):
    ch = conn.channel()
    q = qdeclare(ch, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q, b"2")
    with pytest.raises(NackError):
        ch.basic_publish("", q, b"3")
    assert get_all(ch, q) == [b"1", b"2"]
    ch.basic_publish("", q, b"4")  # room again
    assert get_all(ch, q) == [b"4"]


def test_max_length_reject_publish_dlx(conn):
    ch = conn.channel()
    dlx, dlq, src = _dlx_setup(ch, **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"})
    ch.confirm_delivery()
    ch.basic_publish("", src, b"kept")
    with pytest.raises(NackError):
        ch.basic_publish("", src, b"refused")
    m, p, body = wait_for(lambda: (lambda r: r if r[0] else None)(ch.basic_get(dlq, auto_ack=True)),
                          what="reject-publish-dlx dead-letter")
    assert body == b"refused"
    _check_xdeath(p, "maxlen", src, "", [src])
    assert get_all(ch, src) == [b"kept"]


def test_internal_exchange_refuses_publish_403(conn):
    ch = conn.channel()
    ex = uname("int")
    ch.exchange_declare(ex, "fanout", internal=True)
    ch.basic_publish(ex, "", b"x")
    code, _ = channel_error(ch.queue_declare, "", exclusive=True)
    assert code == 403


# ------------------------------------------------------------------ dead-lettering
def _dlx_setup(ch, **qargs):
    dlx = uname("dlx")
    ch.exchange_declare(dlx, "fanout")
    dlq = qdeclare(ch)
    ch.queue_bind(dlq, dlx, "")
    args = {"x-dead-letter-exchange": dlx}
    args.update(qargs)
    src = qdeclare(ch, arguments=args)
    return dlx, dlq, src


def _check_xdeath(props, reason, queue, exchange, rks, count=1):
    h = props.headers
    assert h is not None and "x-death" in h, h
    xd = h["x-death"]
    assert isinstance(xd, list) and len(xd) >= 1
    d = xd[0]
    assert d["reason"] == reason
    assert d["queue"] == queue
    assert d["exchange"] == exchange
    assert list(d["routing-keys"]) == rks
    assert d["count"] == count
    assert isinstance(d["time"], datetime.datetime)  # AMQP timestamp ('T')
    assert abs((d["time"] - datetime.datetime.utcnow()).total_seconds()) < 120
    assert h.get("x-first-death-reason") == reason
    assert h.get("x-first-death-queue") == queue
    assert h.get("x-first-death-exchange") == exchange


def test_dead_letter_rejected(ch):
    dlx, dlq, src = _dlx_setup(ch)
    ch.basic_publish("", src, b"bad", pika.BasicProperties(headers={"keep": "me"}))
    m, _, _ = ch.basic_get(src)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, p, body = wait_for(lambda: (lambda r: r if r[0] else None)(ch.basic_get(dlq, auto_ack=True)),
                          what="dead-lettered message")
    assert body == b"bad"
    assert p.headers["keep"] == "me"
    _check_xdeath(p, "rejected", src, "", [src])
    assert m.exchange == dlx and m.routing_key == src


def test_dead_letter_nack_and_routing_key(ch):
    dlx = uname("dlx")
    ch.exchange_declare(dlx, "direct")
    dlq = qdeclare(ch)
    ch.queue_bind(dlq, dlx, "dead")
    src = qdeclare(ch, arguments={"x-dead-letter-exchange": dlx,
                                  "x-dead-letter-routing-key": "dead"})
    ch.basic_publish("", src, b"n")
    m, _, _ = ch.basic_get(src)
    ch.basic_nack(m.delivery_tag, multiple=False, requeue=False)
    m, p, body = wait_for(lambda: (lambda r: r if r[0] else None)(ch.basic_get(dlq, auto_ack=True)),
                          what="dead-lettered message")
    assert body == b"n" and m.routing_key == "dead"
    _check_xdeath(p, "rejected", src, "", [src])


def test_dead_letter_expired(ch):
    dlx, dlq, src = _dlx_setup(ch, **{"x-message-ttl": 50})
    ch.basic_publish("", src, b"old")
    m, p, body = wait_for(lambda: (lambda r: r if r[0] else None)(ch.basic_get(dlq, auto_ack=True)),
                          what="expired message dead-lettered")
    assert body == b"old"
    _check_xdeath(p, "expired", src, "", [src])


def test_dead_letter_per_message_expired_keeps_original_expiration(ch):
    dlx, dlq, src = _dlx_setup(ch)
    ch.basic_publish("", src, b"pm", pika.BasicProperties(expiration="50"))
    m, p, body = wait_for(lambda: (lambda r: r if r[0] else None)(ch.basic_get(dlq, auto_ack=True)),
                          what="expired message dead-lettered")
    assert body == b"pm"
    _check_xdeath(p, "expired", src, "", [src])
    # RabbitMQ moves the expiration into x-death["original-expiration"] and drops it
    assert p.expiration is None
    assert p.headers["x-death"][0].get("original-expiration") == "50"


def test_dead_letter_maxlen(ch):
    dlx, dlq, src = _dlx_setup(ch, **{"x-max-length": 1})
    ex = uname("ex")
    ch.exchange_declare(ex, "direct")
    ch.queue_bind(src, ex, "k")
    ch.basic_publish(ex, "k", b"first")
    ch.basic_publish(ex, "k", b"second")
    m, p, body = wait_for(lambda: (lambda r: r if r[0] else None)(ch.basic_get(dlq, auto_ack=True)),
                          what="maxlen dead-letter")
    assert body == b"first"
    _check_xdeath(p, "maxlen", src, ex, ["k"])
    assert get_all(ch, src) == [b"second"]


def test_dead_letter_count_increments(ch):
    dlx, dlq, src = _dlx_setup(ch)
    ch.basic_publish("", src, b"again")
    for expected in (1, 2):
        m, _, _ = ch.basic_get(src)
        ch.basic_reject(m.delivery_tag, requeue=False)
        m, p, body = wait_for(lambda: (lambda r: r if r[0] else None)(ch.basic_get(dlq, auto_ack=True)),
                              what="dead-letter")
        _check_xdeath(p, "rejected", src, "", [src], count=expected)
        # republish with the headers it came back with
        ch.basic_publish("", src, body, pika.BasicProperties(headers=p.headers))


# ------------------------------------------------------------------ priorities / consumers
def test_x_max_priority_ordering(ch):
    q = qdeclare(ch, arguments={"x-max-priority": 10})
    for body, prio in ((b"p1", 1), (b"p5a", 5), (b"p9", 9), (b"p0", None), (b"p5b", 5),
                       (b"p20", 20)):
        ch.basic_publish("", q, body, pika.BasicProperties(priority=prio))
    # priority above the max counts as the max; no priority counts as 0
    assert get_all(ch, q) == [b"p20", b"p9", b"p5a", b"p5b", b"p1", b"p0"]


def test_single_active_consumer(conn):
    ch1, ch2 = conn.channel(), conn.channel()
    q = qdeclare(ch1, arguments={"x-single-active-consumer": True})
    c1, c2 = Collector(ack=True), Collector(ack=True)
    t1 = ch1.basic_consume(q, c1)
    ch2.basic_consume(q, c2)
    for i in range(6):
        ch1.basic_publish("", q, b"%d" % i)
    pump(conn, lambda: len(c1.msgs) >= 6)
    assert len(c1.msgs) == 6 and c2.msgs == []
    ch1.basic_cancel(t1)
    for i in range(6, 9):
        ch1.basic_publish("", q, b"%d" % i)
    pump(conn, lambda: len(c2.msgs) >= 3)
    assert c2.bodies == [b"6", b"7", b"8"] and len(c1.msgs) == 6


def test_consumer_priority(conn):
    ch1, ch2 = conn.channel(), conn.channel()
    q = qdeclare(ch1)
    low, high = Collector(ack=True), Collector(ack=True)
    ch1.basic_consume(q, low)
    ch2.basic_consume(q, high, arguments={"x-priority": 10})
    for i in range(10):
        ch1.basic_publish("", q, b"%d" % i)
    pump(conn, lambda: len(low.msgs) + len(high.msgs) >= 10, settle=0.2)
    assert len(high.msgs) == 10 and low.msgs == []


def test_consumer_priority_falls_back_when_high_is_full(conn):
    ch1, ch2 = conn.channel(), conn.channel()
    q = qdeclare(ch1)
    ch2.basic_qos(prefetch_count=2)
    low, high = Collector(ack=True), Collector(ack=False)
    ch1.basic_consume(q, low)
    ch2.basic_consume(q, high, arguments={"x-priority": 10})
    for i in range(6):
        ch1.basic_publish("", q, b"%d" % i)
    pump(conn, lambda: len(low.msgs) + len(high.msgs) >= 6, settle=0.2)
    assert len(high.msgs) == 2 and len(low.msgs) == 4


def test_round_robin_between_consumers(conn):
    ch = conn.channel()
    q = qdeclare(ch)
    a, b = Collector(ack=True), Collector(ack=True)
    ch.basic_consume(q, a)
    ch.basic_consume(q, b)
    for i in range(10):
        ch.basic_publish("", q, b"%d" % i)
    pump(conn, lambda: len(a.msgs) + len(b.msgs) >= 10)
    assert len(a.msgs) == 5 and len(b.msgs) == 5


# ------------------------------------------------------------------ qos
def test_qos_per_consumer_global_false(conn):
    ch = conn.channel()
    ch.basic_qos(prefetch_count=2, global_qos=False)
    q1, q2 = qdeclare(ch), qdeclare(ch)
    for i in range(5):
        ch.basic_publish("", q1, b"a%d" % i)
        ch.basic_publish("", q2, b"b%d" % i)
    c1, c2 = Collector(), Collector()
    ch.basic_consume(q1, c1)
    ch.basic_consume(q2, c2)
    pump(conn, lambda: len(c1.msgs) >= 2 and len(c2.msgs) >= 2, settle=0.3)
    assert len(c1.msgs) == 2 and len(c2.msgs) == 2, "prefetch applies per consumer"
    ch.basic_ack(c1.msgs[0][0].delivery_tag)
    pump(conn, lambda: len(c1.msgs) >= 3, settle=0.2)
    assert len(c1.msgs) == 3 and len(c2.msgs) == 2


def test_qos_per_channel_global_true(conn):
    ch = conn.channel()
    ch.basic_qos(prefetch_count=3, global_qos=True)
    q1, q2 = qdeclare(ch), qdeclare(ch)
    for i in range(5):
        ch.basic_publish("", q1, b"a%d" % i)
        ch.basic_publish("", q2, b"b%d" % i)
    c1, c2 = Collector(), Collector()
    ch.basic_consume(q1, c1)
    ch.basic_consume(q2, c2)
    pump(conn, lambda: len(c1.msgs) + len(c2.msgs) >= 3, settle=0.3)
    assert len(c1.msgs) + len(c2.msgs) == 3, "prefetch shared by the channel's consumers"
    first = (c1.msgs + c2.msgs)[0][0]
    ch.basic_ack(first.delivery_tag)
    pump(conn, lambda: len(c1.msgs) + len(c2.msgs) >= 4, settle=0.3)
    assert len(c1.msgs) + len(c2.msgs) == 4


def test_qos_global_change_while_consuming(conn):
    # Celery (seeing product=RabbitMQ) raises the global prefetch by one for every
    # held ETA task, and lowers it back: the change must act on live consumers.
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1, global_qos=True)
    q = qdeclare(ch)
    for i in range(6):
        ch.basic_publish("", q, b"%d" % i)
    col = Collector()
    ch.basic_consume(q, col)
    pump(conn, lambda: len(col.msgs) >= 1, settle=0.3)
    assert len(col.msgs) == 1
    ch.basic_qos(prefetch_count=3, global_qos=True)
    pump(conn, lambda: len(col.msgs) >= 3, settle=0.3)
    assert len(col.msgs) == 3
    ch.basic_qos(prefetch_count=2, global_qos=True)
    ch.basic_ack(col.msgs[0][0].delivery_tag)
    pump(conn, timeout=0.01, settle=0.3)
    assert len(col.msgs) == 3, "2 unacked = new limit 2: nothing more may be delivered"
    ch.basic_ack(col.msgs[1][0].delivery_tag)
    pump(conn, lambda: len(col.msgs) >= 4, settle=0.3)
    assert len(col.msgs) == 4


@pytest.mark.minibroker_only
def test_qos_per_consumer_change_while_consuming(conn):
    # minibroker calls itself "minibroker", so Celery sends basic.qos with global=false
    # and raises it for held countdown tasks (celery-wire.md §1.2, §6): the issue says
    # "qos may change at any time". RabbitMQ 3.10 applies a global=false change only to
    # consumers created afterwards, so this is minibroker-only.
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1)
    q = qdeclare(ch)
    for i in range(6):
        ch.basic_publish("", q, b"%d" % i)
    col = Collector()
    ch.basic_consume(q, col)
    pump(conn, lambda: len(col.msgs) >= 1, settle=0.3)
    assert len(col.msgs) == 1
    ch.basic_qos(prefetch_count=3)
    pump(conn, lambda: len(col.msgs) >= 3, settle=0.3)
    assert len(col.msgs) == 3


def test_qos_prefetch_with_basic_get_unlimited(ch):
    # basic.get is not limited by prefetch
    ch.basic_qos(prefetch_count=1)
    q = qdeclare(ch)
    for i in range(3):
        ch.basic_publish("", q, b"%d" % i)
    ms = [ch.basic_get(q)[0] for _ in range(3)]
    assert all(m is not None for m in ms)


# ------------------------------------------------------------------ get / ack / nack / reject
def test_basic_get_message_count_and_empty(ch):
    q = qdeclare(ch)
    assert ch.basic_get(q) == (None, None, None)
    for i in range(3):
        ch.basic_publish("", q, b"%d" % i)
    counts = []
    for _ in range(3):
        m, _, _ = ch.basic_get(q, auto_ack=True)
        counts.append(m.message_count)
    assert counts == [2, 1, 0]
    assert ch.basic_get(q) == (None, None, None)


def test_ack_multiple_nack_multiple_requeue_order(ch):
    q = qdeclare(ch)
    for i in range(1, 6):
        ch.basic_publish("", q, b"m%d" % i)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(5)]
    assert tags == [1, 2, 3, 4, 5]
    ch.basic_ack(2, multiple=True)               # acks m1, m2
    ch.basic_nack(4, multiple=True, requeue=True)  # requeues m3, m4 (in order)
    m3, _, b3 = ch.basic_get(q)
    m4, _, b4 = ch.basic_get(q)
    assert (b3, b4) == (b"m3", b"m4")
    assert m3.redelivered and m4.redelivered
    assert ch.basic_get(q) == (None, None, None)  # m5 still unacked
    ch.basic_reject(5, requeue=True)
    m5, _, b5 = ch.basic_get(q, auto_ack=True)
    assert b5 == b"m5" and m5.redelivered
    ch.basic_ack(0, multiple=True)  # everything outstanding
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_requeue_goes_back_to_original_position(ch):
    q = qdeclare(ch)
    for b in (b"a", b"b", b"c"):
        ch.basic_publish("", q, b)
    ma, _, _ = ch.basic_get(q)
    mb, _, _ = ch.basic_get(q)
    ch.basic_reject(mb.delivery_tag, requeue=True)
    ch.basic_reject(ma.delivery_tag, requeue=True)
    got = [ch.basic_get(q, auto_ack=True) for _ in range(3)]
    assert [g[2] for g in got] == [b"a", b"b", b"c"]
    assert [g[0].redelivered for g in got] == [True, True, False]


def test_reject_without_requeue_drops(ch):
    q = qdeclare(ch)
    ch.basic_publish("", q, b"x")
    m, _, _ = ch.basic_get(q)
    ch.basic_reject(m.delivery_tag, requeue=False)
    assert ch.basic_get(q) == (None, None, None)


def test_nack_requeue_redelivers_to_consumer(conn):
    ch = conn.channel()
    q = qdeclare(ch)
    seen = []

    def cb(c, m, p, b):
        seen.append((m.delivery_tag, m.redelivered, b))
        if not m.redelivered:
            c.basic_nack(m.delivery_tag, requeue=True)
        else:
            c.basic_ack(m.delivery_tag)

    ch.basic_consume(q, cb)
    ch.basic_publish("", q, b"once")
    pump(conn, lambda: len(seen) >= 2)
    assert seen == [(1, False, b"once"), (2, True, b"once")]


def test_basic_recover_requeues(ch):
    q = qdeclare(ch)
    for b in (b"1", b"2"):
        ch.basic_publish("", q, b)
    ch.basic_get(q)
    ch.basic_get(q)
    ch.basic_recover(requeue=True)
    wait_for(lambda: ch.queue_declare(q, passive=True).method.message_count == 2,
             what="requeue after recover")
    got = [ch.basic_get(q, auto_ack=True) for _ in range(2)]
    assert [g[2] for g in got] == [b"1", b"2"]
    assert all(g[0].redelivered for g in got)


def test_unacked_requeued_on_channel_close(conn):
    ch1, ch2 = conn.channel(), conn.channel()
    q = qdeclare(ch2)
    for b in (b"1", b"2", b"3"):
        ch2.basic_publish("", q, b)
    # publishes on another channel are not ordered with ch1's gets: wait until queued
    wait_for(lambda: ch1.queue_declare(q, passive=True).method.message_count == 3,
             what="3 messages queued")
    assert ch1.basic_get(q)[2] == b"1"
    assert ch1.basic_get(q)[2] == b"2"
    ch1.close()
    # RabbitMQ answers close-ok before its queue has finished requeueing: wait for it
    wait_for(lambda: ch2.queue_declare(q, passive=True).method.message_count == 3,
             what="requeue after channel close")
    got = [ch2.basic_get(q, auto_ack=True) for _ in range(3)]
    assert [g[2] for g in got] == [b"1", b"2", b"3"]
    assert [g[0].redelivered for g in got] == [True, True, False]


def test_unacked_of_consumer_requeued_on_connection_close(connect):
    c1, c2 = connect(), connect()
    ch1, ch2 = c1.channel(), c2.channel()
    q = qdeclare(ch2)
    for b in (b"1", b"2"):
        ch2.basic_publish("", q, b)
    col = Collector()
    ch1.basic_consume(q, col)
    pump(c1, lambda: len(col.msgs) >= 2)
    c1.close()
    got = wait_for(lambda: ch2.queue_declare(q, passive=True).method.message_count == 2,
                   what="requeue after close")
    got = [ch2.basic_get(q, auto_ack=True) for _ in range(2)]
    assert [g[2] for g in got] == [b"1", b"2"] and all(g[0].redelivered for g in got)


def _raw_consume_unacked(broker, q, n):
    raw = RawAMQP(broker.host, broker.port).handshake()
    raw.open_channel(1)
    # basic.consume queue=q tag='' no_ack=0 nowait=0
    raw.send(method_frame(1, 60, 20, struct.pack(">H", 0) + shortstr(q) + shortstr("")
                          + b"\x00" + struct.pack(">I", 0)))
    raw.expect((60, 21))
    got = 0
    while got < n:
        f = raw.read_method()
        if f.method == (60, 60):
            got += 1
    return raw


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_unacked_requeued_on_abrupt_tcp_close(broker, ch, how):
    q = qdeclare(ch)
    for b in (b"1", b"2", b"3"):
        ch.basic_publish("", q, b)
    raw = _raw_consume_unacked(broker, q, 3)
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    if how == "rst":
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.sock.close()
    wait_for(lambda: ch.queue_declare(q, passive=True).method.message_count == 3,
             what="requeue after abrupt close")
    got = [ch.basic_get(q, auto_ack=True) for _ in range(3)]
    assert [g[2] for g in got] == [b"1", b"2", b"3"] and all(g[0].redelivered for g in got)


def test_unacked_of_cancelled_consumer_can_still_be_acked(conn):
    ch = conn.channel()
    q = qdeclare(ch)
    ch.basic_publish("", q, b"late")
    col = Collector()
    tag = ch.basic_consume(q, col)
    pump(conn, lambda: col.msgs)
    ch.basic_cancel(tag)
    time.sleep(0.1)
    assert ch.queue_declare(q, passive=True).method.message_count == 0, \
        "cancel must not requeue unacked deliveries"
    ch.basic_ack(col.msgs[0][0].delivery_tag)
    ch.close()
    assert conn.channel().queue_declare(q, passive=True).method.message_count == 0


def test_consumer_cancelled_by_broker_when_queue_deleted(conn):
    ch, other = conn.channel(), conn.channel()
    q = qdeclare(ch)
    cancels = []
    ch.add_on_cancel_callback(lambda frame: cancels.append(frame))
    tag = ch.basic_consume(q, lambda *a: None)
    other.queue_delete(q)
    pump(conn, lambda: cancels)
    assert cancels and cancels[0].method.consumer_tag == tag
    assert tag not in ch.consumer_tags
    assert ch.is_open


# ------------------------------------------------------------------ purge / delete
def test_queue_purge_count(ch):
    q = qdeclare(ch)
    for i in range(3):
        ch.basic_publish("", q, b"%d" % i)
    ch.basic_get(q)  # one unacked: not purged
    assert ch.queue_purge(q).method.message_count == 2
    assert ch.queue_purge(q).method.message_count == 0


def test_queue_delete_if_unused_if_empty(conn):
    ch = conn.channel()
    q = qdeclare(ch)
    ch.basic_publish("", q, b"x")
    code, text = channel_error(conn.channel().queue_delete, q, if_empty=True)
    assert code == 406 and text.startswith("PRECONDITION_FAILED")
    ch.basic_consume(q, lambda *a: None, auto_ack=True)
    pump(conn, timeout=0.01, settle=0.2)
    code, _ = channel_error(conn.channel().queue_delete, q, if_unused=True)
    assert code == 406
    ch2 = conn.channel()
    ch2.basic_publish("", q, b"y")
    time.sleep(0.1)
    ok = ch2.queue_delete(q)
    assert ok.method.message_count in (0, 1)
    assert not queue_exists(conn, q)


def test_queue_delete_returns_message_count(ch):
    q = qdeclare(ch)
    for i in range(4):
        ch.basic_publish("", q, b"%d" % i)
    assert ch.queue_delete(q).method.message_count == 4


def test_exchange_delete_if_unused(conn):
    ch = conn.channel()
    ex = uname("ex")
    ch.exchange_declare(ex, "direct")
    q = qdeclare(ch)
    ch.queue_bind(q, ex, "k")
    code, _ = channel_error(conn.channel().exchange_delete, ex, if_unused=True)
    assert code == 406
    ch = conn.channel()
    ch.queue_unbind(q, ex, "k")
    ch.exchange_delete(ex, if_unused=True)
    assert not exchange_exists(conn, ex)


def test_auto_delete_exchange_dies_with_last_binding(conn):
    ch = conn.channel()
    ex = uname("ex")
    ch.exchange_declare(ex, "direct", auto_delete=True)
    q1, q2 = qdeclare(ch), qdeclare(ch)
    time.sleep(0.2)
    assert exchange_exists(conn, ex), "never bound: must not be deleted yet"
    ch.queue_bind(q1, ex, "a")
    ch.queue_bind(q2, ex, "b")
    ch.queue_unbind(q1, ex, "a")
    assert exchange_exists(conn, ex)
    ch.queue_unbind(q2, ex, "b")
    wait_for(lambda: not exchange_exists(conn, ex), what="auto-delete exchange removed")


def test_unbind_missing_binding_is_ok(ch):
    ex = uname("ex")
    ch.exchange_declare(ex, "direct")
    q = qdeclare(ch)
    ch.queue_unbind(q, ex, "never-bound")  # no error, as RabbitMQ
    ch.queue_bind(q, ex, "k")
    ch.basic_publish(ex, "k", b"ok")
    assert get_all(ch, q) == [b"ok"]


def test_delete_exchange_removes_bindings(ch):
    ex = uname("ex")
    ch.exchange_declare(ex, "fanout")
    q = qdeclare(ch)
    ch.queue_bind(q, ex)
    ch.exchange_delete(ex)
    ch.exchange_declare(ex, "fanout")
    ch.basic_publish(ex, "", b"x")
    assert get_all(ch, q) == []


# ------------------------------------------------------------------ transactions
def test_tx_commit_rollback(conn):
    ch = conn.channel()
    q = qdeclare(ch)
    ch.tx_select()
    ch.basic_publish("", q, b"rolled-back")
    ch.tx_rollback()
    obs = conn.channel()
    assert obs.queue_declare(q, passive=True).method.message_count == 0
    ch.basic_publish("", q, b"c1")
    ch.basic_publish("", q, b"c2")
    assert obs.queue_declare(q, passive=True).method.message_count == 0
    ch.tx_commit()
    assert obs.queue_declare(q, passive=True).method.message_count == 2
    # acks are transactional too
    m, _, _ = ch.basic_get(q)
    ch.basic_ack(m.delivery_tag)
    ch.tx_rollback()
    ch.close()  # unacked (ack rolled back) -> requeued
    wait_for(lambda: obs.queue_declare(q, passive=True).method.message_count == 2,
             what="requeue after close")
    assert get_all(obs, q) == [b"c1", b"c2"]


def test_tx_commit_without_select_is_error(conn):
    code, _ = channel_error(conn.channel().tx_commit)
    assert code == 406


# ------------------------------------------------------------------ errors
def test_ack_unknown_delivery_tag_406(conn):
    ch = conn.channel()
    q = qdeclare(ch)
    ch.basic_ack(999)
    code, text = channel_error(ch.queue_declare, q, passive=True)
    assert code == 406 and text.startswith("PRECONDITION_FAILED")
    assert conn.is_open
    conn.channel().queue_declare(q, passive=True)


def test_double_ack_406(conn):
    ch = conn.channel()
    q = qdeclare(ch)
    ch.basic_publish("", q, b"x")
    m, _, _ = ch.basic_get(q)
    ch.basic_ack(m.delivery_tag)
    ch.basic_ack(m.delivery_tag)
    code, _ = channel_error(ch.queue_declare, q, passive=True)
    assert code == 406


def test_publish_to_missing_exchange_404(conn):
    ch = conn.channel()
    ch.basic_publish(uname("nosuch"), "k", b"x")
    code, text = channel_error(ch.queue_declare, "", exclusive=True)
    assert code == 404 and text.startswith("NOT_FOUND")
    assert conn.is_open


def test_bind_to_missing_exchange_or_queue_404(conn):
    ch = conn.channel()
    q = qdeclare(ch)
    code, _ = channel_error(ch.queue_bind, q, uname("nosuch"), "k")
    assert code == 404
    code, _ = channel_error(conn.channel().queue_bind, uname(), "amq.direct", "k")
    assert code == 404


def test_consume_missing_queue_404(conn):
    code, _ = channel_error(conn.channel().basic_consume, uname(), lambda *a: None)
    assert code == 404


def test_duplicate_consumer_tag_530(broker, ch):
    # pika refuses a duplicate tag client-side, so speak raw AMQP
    q = qdeclare(ch)
    raw = RawAMQP(broker.host, broker.port).handshake()
    try:
        raw.open_channel(1)
        consume = method_frame(1, 60, 20, struct.pack(">H", 0) + shortstr(q) + shortstr("dup")
                               + b"\x00" + struct.pack(">I", 0))
        raw.send(consume)
        raw.expect((60, 21))
        raw.send(consume)
        f = raw.read_close()
        assert f is not None, "socket closed without a close method"
        assert f.close_info()[0] == 530
    finally:
        raw.close()


def test_exclusive_consumer_403(conn):
    ch1, ch2 = conn.channel(), conn.channel()
    q = qdeclare(ch1)
    ch1.basic_consume(q, lambda *a: None, exclusive=True)
    code, _ = channel_error(ch2.basic_consume, q, lambda *a: None)
    assert code == 403


def test_wrong_password_403(broker):
    with pytest.raises(ProbableAuthenticationError) as ei:
        pika.BlockingConnection(broker.pika_params(
            credentials=pika.PlainCredentials("guest", "wrong")))
    assert "403" in str(ei.value) and "ACCESS_REFUSED" in str(ei.value)


def test_unknown_user_403(broker):
    with pytest.raises(ProbableAuthenticationError) as ei:
        pika.BlockingConnection(broker.pika_params(
            credentials=pika.PlainCredentials("nobody", "guest")))
    assert "403" in str(ei.value)


def test_unknown_vhost_530(broker):
    with pytest.raises(ProbableAccessDeniedError) as ei:
        pika.BlockingConnection(broker.pika_params(virtual_host="no-such-vhost"))
    assert "530" in str(ei.value) and "NOT_ALLOWED" in str(ei.value)


def test_channel_error_leaves_others_usable(conn):
    good = conn.channel()
    q = qdeclare(good)
    bad = conn.channel()
    code, _ = channel_error(bad.queue_declare, uname(), passive=True)
    assert code == 404
    assert bad.is_closed and good.is_open and conn.is_open
    good.basic_publish("", q, b"still")
    assert get_all(good, q) == [b"still"]
    again = conn.channel()
    again.basic_publish("", q, b"new channel")
    assert get_all(again, q) == [b"new channel"]


def test_connection_close_is_clean(broker):
    c = pika.BlockingConnection(broker.pika_params())
    c.channel().queue_declare("", exclusive=True)
    c.close()
    assert c.is_closed


def test_many_channels_and_connections(connect):
    conns = [connect() for _ in range(5)]
    chans = [c.channel() for c in conns for _ in range(10)]
    q = qdeclare(chans[0])
    for i, c in enumerate(chans):
        c.basic_publish("", q, b"%d" % i)
    # publishes from other connections are not ordered with this declare: poll
    wait_for(lambda: chans[-1].queue_declare(q, passive=True).method.message_count == 50,
             what="50 messages from 5 connections")


# ------------------------------------------------------------------ argument validation
@pytest.mark.parametrize("args", [
    {"x-max-length": -1},
    {"x-message-ttl": "abc"},
    {"x-message-ttl": -1},
    {"x-overflow": "nope"},
    {"x-expires": 0},
    {"x-max-priority": 300},
    {"x-dead-letter-routing-key": "k"},  # without x-dead-letter-exchange
    {"x-single-active-consumer": "yes"},
], ids=lambda a: "%s=%r" % next(iter(a.items())))
def test_invalid_queue_arguments_406(conn, args):
    code, text = channel_error(conn.channel().queue_declare, uname(), arguments=args)
    assert code == 406 and text.startswith("PRECONDITION_FAILED")


def test_unknown_queue_argument_ignored(ch):
    ch.queue_declare(uname(), arguments={"x-e2e-unknown": 1})


def test_invalid_consumer_priority_406(conn):
    ch = conn.channel()
    q = qdeclare(ch)
    code, _ = channel_error(ch.basic_consume, q, lambda *a: None, arguments={"x-priority": "hi"})
    assert code == 406


@pytest.mark.parametrize("expiration", ["abc", "-5"])
def test_invalid_expiration_406(conn, expiration):
    ch = conn.channel()
    q = qdeclare(ch)
    ch.basic_publish("", q, b"x", pika.BasicProperties(expiration=expiration))
    code, _ = channel_error(ch.queue_declare, q, passive=True)
    assert code == 406


def test_prefetch_size_not_implemented_540(connect):
    c = connect()
    from pika.exceptions import ConnectionClosedByBroker
    with pytest.raises((ConnectionClosedByBroker, ChannelClosedByBroker)) as ei:
        c.channel().basic_qos(prefetch_size=10)
    assert ei.value.reply_code == 540


def test_tx_confirm_mode_switch_406(conn):
    ch = conn.channel()
    ch.tx_select()
    code, _ = channel_error(ch.confirm_delivery)
    assert code == 406
    ch = conn.channel()
    ch.confirm_delivery()
    code, _ = channel_error(ch.tx_select)
    assert code == 406


def test_missing_entities(conn):
    # delete of something missing is idempotent (RabbitMQ 3.x); purge/get/consume -> 404
    assert conn.channel().queue_delete(uname()).method.message_count == 0
    conn.channel().exchange_delete(uname("ex"))
    code, _ = channel_error(conn.channel().queue_purge, uname())
    assert code == 404
    code, _ = channel_error(conn.channel().basic_get, uname())
    assert code == 404
