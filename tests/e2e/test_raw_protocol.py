"""Raw-socket protocol tests: malformed input, error codes, framing and heartbeats.

Concerns:
- [x] wrong protocol header -> b"AMQP\\x00\\x00\\x09\\x01" back, socket closed
- [x] garbage after a good handshake -> connection.close 501 (or a plain socket close)
- [x] frame larger than frame_max -> connection.close 501
- [x] bad frame-end octet -> 501
- [x] unknown class / method -> 540 or 503 (RabbitMQ 3.10 just drops the socket: strict
      version is minibroker_only)
- [x] content header / body frame without a method -> 505 UNEXPECTED_FRAME
- [x] method while a content header is expected -> 505
- [x] method on a channel never opened -> 504 CHANNEL_ERROR; second channel.open -> 504
- [x] truncated method arguments -> 501/502
- [x] heartbeat frame on a non-zero channel -> connection error
- [x] basic.publish immediate=true -> 540 "NOT_IMPLEMENTED - immediate=true"
- [x] server channel.close carries class/method ids; the connection survives it
- [x] close with reply-code 0 (py-amqp) accepted, for channel and connection
- [x] nowait=1 honoured exactly (no consume-ok / declare-ok)
- [x] frames pipelined in one write and split byte by byte
- [x] server sends heartbeats at the negotiated interval and drops a silent peer;
      client heartbeats keep the connection alive
- [x] header tables pass through byte for byte (every type of RabbitMQ's errata column)
- [x] x-death written with RabbitMQ's wire types (count l, reason/queue/exchange S, time T,
      routing-keys A of S) and x-first-death-* as S
- [x] server-generated consumer tags (amq.ctag-...); cancel of an unknown tag is fine
- [x] seeded random method frames (valid ids, random arguments) and many concurrent
      connections do not crash or wedge the broker
- [x] after each abuse a fresh pika client still works (autouse fixture)
"""

import socket
import struct
import time

import pika
import pytest

from amqp_raw import (CHANNEL_CLOSE, CONNECTION_CLOSE, PROTOCOL_HEADER, Closed, RawAMQP,
                      Reader, body_frame, content_header, frame, longstr, method_frame,
                      parse_table_typed, shortstr, table)
from util import uname


@pytest.fixture(autouse=True)
def fresh_client_still_works(broker):
    yield
    c = pika.BlockingConnection(broker.pika_params())
    try:
        ch = c.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, b"alive")
        assert ch.basic_get(q, auto_ack=True)[2] == b"alive"
    finally:
        c.close()


@pytest.fixture
def raw(broker):
    r = RawAMQP(broker.host, broker.port, timeout=5).handshake()
    yield r
    r.close()


def expect_connection_close(r, codes, timeout=5.0):
    """Expect connection.close with one of `codes`; answer close-ok; expect the socket closed.

    Returns (code, text, class_id, method_id)."""
    f = r.read_close(timeout=timeout)
    assert f is not None, "socket closed without connection.close (expected %r)" % (codes,)
    assert f.method == CONNECTION_CLOSE and f.channel == 0, \
        "expected connection.close, got %r %r" % (f, f.close_info())
    info = f.close_info()
    assert info[0] in codes, "reply code %r (%s) not in %r" % (info[0], info[1], codes)
    try:
        r.send(method_frame(0, 10, 51))
    except OSError:
        pass
    assert r.wait_closed(5), "server must close the socket after connection.close-ok"
    return info


def queue_declare_args(name, passive=False, nowait=False):
    bits = (1 if passive else 0) | (16 if nowait else 0)
    return struct.pack(">H", 0) + shortstr(name) + bytes([bits]) + table({})


# ------------------------------------------------------------------ protocol header
@pytest.mark.parametrize("header", [
    b"AMQP\x00\x00\x09\x00",          # 0-9-0
    b"AMQP\x01\x01\x00\x0a",          # 0-10
    b"AMQP\x00\x01\x00\x00",          # 1.0
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00\x01\x02\x03\x04\x05\x06\x07",
], ids=["0-9-0", "0-10", "1.0", "http", "binary"])
def test_wrong_protocol_header(broker, header):
    s = socket.create_connection((broker.host, broker.port), timeout=5)
    try:
        s.sendall(header)
        data = b""
        deadline = time.monotonic() + 5
        closed = False
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(100)
            except ConnectionResetError:
                closed = True
                break
            except socket.timeout:
                break
            if not chunk:
                closed = True
                break
            data += chunk
        assert data == PROTOCOL_HEADER, data
        assert closed, "socket must be closed after the protocol header reply"
    finally:
        s.close()


def test_slow_protocol_header_accepted(broker):
    """The 8-byte header split across writes still works."""
    r = RawAMQP(broker.host, broker.port)
    try:
        for b in PROTOCOL_HEADER:
            r.send(bytes([b]))
            time.sleep(0.01)
        f = r.read_method()
        assert f.method == (10, 10)
    finally:
        r.close()


def test_close_before_handshake_completes(broker):
    r = RawAMQP(broker.host, broker.port)
    r.send(PROTOCOL_HEADER)
    r.read_method()
    r.close()  # drop after connection.start: the broker must just carry on


# ------------------------------------------------------------------ framing errors
def test_garbage_after_handshake(raw):
    raw.send(b"\xde\xad\xbe\xef" * 16)
    f = raw.read_close()
    if f is not None:  # a close method is optional here, the socket must go either way
        assert f.method == CONNECTION_CLOSE
        assert f.close_info()[0] in (501, 502, 505)
        raw.send(method_frame(0, 10, 51))
    assert raw.wait_closed(5)


def test_frame_larger_than_frame_max_501(raw):
    size = raw.frame_max + 1000
    raw.send(struct.pack(">BHI", 1, 0, size) + b"\x00" * 64)
    expect_connection_close(raw, (501,))


def test_bad_frame_end_501(raw):
    raw.open_channel(1)
    raw.send(frame(1, 1, struct.pack(">HH", 50, 10) + queue_declare_args(uname()), end=0x00))
    expect_connection_close(raw, (501,))


def test_unknown_frame_type_501(raw):
    raw.send(frame(7, 0, b""))
    expect_connection_close(raw, (501,))


@pytest.mark.parametrize("cls,meth", [(99, 10), (60, 99), (10, 99)])
def test_unknown_class_or_method_closes(raw, cls, meth):
    raw.open_channel(1)
    raw.send(method_frame(1 if cls != 10 else 0, cls, meth, b"\x00" * 8))
    f = raw.read_close()
    if f is not None:
        assert f.close_info()[0] in (540, 503)
    else:
        assert raw.wait_closed(5)


@pytest.mark.minibroker_only
@pytest.mark.parametrize("cls,meth", [(99, 10), (60, 99), (10, 99)])
def test_unknown_class_or_method_540_or_503(raw, cls, meth):
    # The issue: "an unknown class or method ... gets its reply code": the spec names
    # 540 NOT_IMPLEMENTED / 503 COMMAND_INVALID. RabbitMQ 3.10's reader crashes on an
    # unknown method id and drops the socket without connection.close.
    raw.open_channel(1)
    raw.send(method_frame(1 if cls != 10 else 0, cls, meth, b"\x00" * 8))
    code, _, cid, mid = expect_connection_close(raw, (540, 503))


@pytest.mark.parametrize("kind", ["header", "body"])
def test_content_frame_without_method_505(raw, kind):
    raw.open_channel(1)
    raw.send(content_header(1, 5) if kind == "header" else body_frame(1, b"hello"))
    expect_connection_close(raw, (505,))


def test_method_while_content_header_expected_505(raw):
    raw.open_channel(1)
    pub = method_frame(1, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr("q") + b"\x00")
    raw.send(pub + pub)
    expect_connection_close(raw, (505,))


def test_method_on_unopened_channel_504(raw):
    raw.send(method_frame(3, 50, 10, queue_declare_args(uname())))
    code, _, cid, mid = expect_connection_close(raw, (504,))
    assert (cid, mid) == (50, 10)


def test_second_channel_open_504(raw):
    raw.open_channel(1)
    raw.send(method_frame(1, 20, 10, shortstr("")))
    expect_connection_close(raw, (504,))


def test_truncated_method_arguments(raw):
    raw.open_channel(1)
    raw.send(method_frame(1, 50, 10, b"\x00"))
    expect_connection_close(raw, (501, 502))


def test_heartbeat_on_nonzero_channel(raw):
    raw.open_channel(1)
    raw.send(frame(8, 1, b""))
    expect_connection_close(raw, (501, 503, 505))


def test_publish_immediate_540(raw):
    raw.open_channel(1)
    raw.send(method_frame(1, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr("q") + b"\x02")
             + content_header(1, 1) + body_frame(1, b"x"))
    code, text, cid, mid = expect_connection_close(raw, (540,))
    assert text == "NOT_IMPLEMENTED - immediate=true"
    assert (cid, mid) == (60, 40)


# ------------------------------------------------------------------ channel errors
def test_channel_close_carries_ids_and_connection_survives(raw):
    raw.open_channel(1)
    raw.open_channel(2)
    raw.send(method_frame(1, 60, 20, struct.pack(">H", 0) + shortstr(uname()) + shortstr("")
                          + b"\x00" + table({})))
    f = raw.read_close()
    assert f is not None and f.method == CHANNEL_CLOSE and f.channel == 1
    code, text, cid, mid = f.close_info()
    assert code == 404 and text.startswith("NOT_FOUND") and (cid, mid) == (60, 20)
    raw.send(method_frame(1, 20, 41))  # channel.close-ok
    # channel 2 and the connection are unaffected; channel 1 can be reopened
    q = uname()
    raw.send(method_frame(2, 50, 10, queue_declare_args(q)))
    ok = raw.expect((50, 11))
    assert ok.channel == 2
    raw.open_channel(1)
    raw.close_connection()


def test_frames_on_closing_channel_are_ignored(raw):
    """After the server sent channel.close, it discards everything but close-ok."""
    raw.open_channel(1)
    raw.send(method_frame(1, 50, 10, queue_declare_args(uname(), passive=True)))
    f = raw.read_close()
    assert f.method == CHANNEL_CLOSE and f.close_info()[0] == 404
    raw.send(method_frame(1, 50, 10, queue_declare_args(uname())))  # must be dropped
    raw.send(method_frame(1, 20, 41))
    raw.open_channel(1)
    raw.close_connection()


def test_close_with_reply_code_zero_accepted(raw):
    raw.open_channel(1)
    raw.send(method_frame(1, 20, 40, struct.pack(">H", 0) + shortstr("") + struct.pack(">HH", 0, 0)))
    raw.expect((20, 41))
    raw.send(method_frame(0, 10, 50, struct.pack(">H", 0) + shortstr("") + struct.pack(">HH", 0, 0)))
    raw.expect((10, 51))
    # after close-ok the client (who sent close) closes the socket; nothing to check


def test_channel_open_ok_carries_longstr(broker):
    r = RawAMQP(broker.host, broker.port).handshake()
    try:
        f = r.open_channel(1)
        assert f.payload[4:] == b"\x00\x00\x00\x00"  # empty longstr, 4 bytes
    finally:
        r.close()


# ------------------------------------------------------------------ nowait
def test_nowait_consume_and_declare_send_no_ok(raw):
    raw.open_channel(1)
    q = uname()
    raw.send(method_frame(1, 50, 10, queue_declare_args(q, nowait=True)))
    # basic.consume nowait=1 (bit 3)
    raw.send(method_frame(1, 60, 20, struct.pack(">H", 0) + shortstr(q) + shortstr("None4")
                          + bytes([8]) + table({})))
    raw.publish(1, "", q, b"payload")
    f = raw.read_method()
    assert f.method == (60, 60), "expected basic.deliver first (no declare-ok/consume-ok), got %r" % (f,)
    r = f.args()
    assert r.shortstr() == "None4"
    hdr = raw.read_method()
    body = raw.read_method()
    assert hdr.type == 2 and body.type == 3 and body.payload == b"payload"
    raw.close_connection()


# ------------------------------------------------------------------ framing variants
def test_pipelined_frames_in_one_write(broker):
    r = RawAMQP(broker.host, broker.port)
    try:
        r.send(PROTOCOL_HEADER)
        r.expect((10, 10))
        q = uname()
        blob = (method_frame(0, 10, 11, table({}) + shortstr("PLAIN") + struct.pack(">I", 12)
                             + b"\x00guest\x00guest" + shortstr("en_US")))
        r.send(blob)
        r.expect((10, 30))
        blob = (method_frame(0, 10, 31, struct.pack(">HIH", 2047, 131072, 0))
                + method_frame(0, 10, 40, shortstr("/") + shortstr("") + b"\x00")
                + method_frame(1, 20, 10, shortstr(""))
                + method_frame(1, 50, 10, queue_declare_args(q))
                + method_frame(1, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr(q) + b"\x00")
                + content_header(1, 6) + body_frame(1, b"abc") + body_frame(1, b"def")
                + method_frame(1, 60, 70, struct.pack(">H", 0) + shortstr(q) + b"\x01"))
        r.send(blob)
        r.expect((10, 41))
        r.expect((20, 11))
        r.expect((50, 11))
        r.expect((60, 71))
        hdr = r.read_method()
        body = r.read_method()
        assert hdr.type == 2 and body.payload == b"abcdef"
    finally:
        r.close()


def test_frames_split_byte_by_byte(raw):
    raw.open_channel(1)
    q = uname()
    raw.queue_declare(1, q)
    data = (method_frame(1, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr(q) + b"\x00")
            + content_header(1, 4) + body_frame(1, b"slow"))
    for i in range(len(data)):
        raw.send(data[i:i + 1])
    raw.send(method_frame(1, 60, 70, struct.pack(">H", 0) + shortstr(q) + b"\x01"))
    raw.expect((60, 71))
    raw.read_method()
    assert raw.read_method().payload == b"slow"


def test_body_split_into_frame_max_chunks_on_delivery(raw):
    raw.open_channel(1)
    q = uname()
    raw.queue_declare(1, q)
    size = raw.frame_max * 2 + 123
    body = bytes(i % 256 for i in range(size))
    chunk = raw.frame_max - 8
    data = (method_frame(1, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr(q) + b"\x00")
            + content_header(1, size))
    for i in range(0, size, chunk):
        data += body_frame(1, body[i:i + chunk])
    raw.send(data)
    raw.send(method_frame(1, 60, 70, struct.pack(">H", 0) + shortstr(q) + b"\x01"))
    raw.expect((60, 71))
    hdr = raw.read_method()
    assert struct.unpack(">Q", hdr.payload[4:12])[0] == size
    got = b""
    frames = 0
    while len(got) < size:
        f = raw.read_method()
        assert f.type == 3 and len(f.payload) <= raw.frame_max - 8
        got += f.payload
        frames += 1
    assert got == body and frames == 3


def test_client_chosen_smaller_frame_max_is_honoured(broker):
    r = RawAMQP(broker.host, broker.port).handshake(frame_max=4096)
    try:
        r.open_channel(1)
        q = uname()
        r.queue_declare(1, q)
        body = bytes(range(256)) * 40  # 10240 bytes -> 3 body frames of <= 4088
        r.send(method_frame(1, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr(q) + b"\x00")
               + content_header(1, len(body)) + body_frame(1, body[:4088])
               + body_frame(1, body[4088:8176]) + body_frame(1, body[8176:]))
        r.send(method_frame(1, 60, 70, struct.pack(">H", 0) + shortstr(q) + b"\x01"))
        r.expect((60, 71))
        r.read_method()
        got, frames = b"", 0
        while len(got) < len(body):
            f = r.read_method()
            assert f.type == 3 and len(f.payload) <= 4096 - 8
            got += f.payload
            frames += 1
        assert got == body and frames == 3
        # and a frame above the negotiated 4096 (but below the server's 131072) is an error
        r.send(method_frame(1, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr(q) + b"\x00")
               + content_header(1, 5000) + body_frame(1, b"x" * 5000))
        expect_connection_close(r, (501,))
    finally:
        r.close()


@pytest.mark.timeout(60)
def test_message_larger_than_max_size_406(raw):
    """Default max message size is 128 MiB: one byte more -> channel.close 406."""
    raw.sock.settimeout(30)
    raw.open_channel(1)
    size = 128 * 1024 * 1024 + 1
    raw.send(method_frame(1, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr("q") + b"\x00")
             + content_header(1, size))
    chunk = b"\x00" * (raw.frame_max - 8)
    sent = 0
    try:
        while sent < size:
            n = min(len(chunk), size - sent)
            raw.send(body_frame(1, chunk[:n]))
            sent += n
    except OSError:
        pass  # the broker may refuse early (on the header) and stop reading
    f = raw.read_close(timeout=30)
    assert f is not None and f.close_info()[0] == 406
    if f.method == CHANNEL_CLOSE:
        raw.send(method_frame(1, 20, 41))
        raw.open_channel(2)  # connection still usable


# ------------------------------------------------------------------ heartbeats
@pytest.mark.timeout(30)
def test_server_sends_heartbeats_and_drops_silent_peer(broker):
    r = RawAMQP(broker.host, broker.port, timeout=10).handshake(heartbeat=1)
    try:
        t0 = time.monotonic()
        beats = 0
        closed_at = None
        r.sock.settimeout(10)
        try:
            while time.monotonic() - t0 < 10:
                f = r.read_frame()
                if f.type == 8:
                    assert f.channel == 0
                    beats += 1
                elif f.method == CONNECTION_CLOSE:
                    pass
        except (Closed, ConnectionResetError, socket.timeout):
            closed_at = time.monotonic() - t0
        assert beats >= 1, "server sent no heartbeat with heartbeat=1"
        assert closed_at is not None, "silent peer was not dropped"
        assert 1.5 <= closed_at <= 6, "dropped after %.1fs (expect ~2 intervals)" % closed_at
    finally:
        r.close()


@pytest.mark.timeout(30)
def test_client_heartbeats_keep_connection_alive(broker):
    r = RawAMQP(broker.host, broker.port, timeout=10).handshake(heartbeat=1)
    try:
        t0 = time.monotonic()
        r.sock.settimeout(0.3)
        while time.monotonic() - t0 < 4:
            r.send(frame(8, 0, b""))
            try:
                r.read_frame()
            except socket.timeout:
                pass
        r.sock.settimeout(5)
        r.open_channel(1)
        r.close_connection()
    finally:
        r.close()


@pytest.mark.timeout(20)
def test_heartbeat_zero_means_no_heartbeats(broker):
    r = RawAMQP(broker.host, broker.port, timeout=10).handshake(heartbeat=0)
    try:
        r.sock.settimeout(3)
        with pytest.raises(socket.timeout):
            r.read_frame()
        r.sock.settimeout(5)
        r.open_channel(1)
    finally:
        r.close()


def test_server_properties_and_tune(broker):
    r = RawAMQP(broker.host, broker.port)
    try:
        r.send(PROTOCOL_HEADER)
        start = r.expect((10, 10))
        a = start.args()
        assert (a.octet(), a.octet()) == (0, 9)
        props = a.longstr()
        mechs = a.longstr().split()
        assert b"PLAIN" in mechs and b"AMQPLAIN" in mechs
        for key in (b"product", b"version", b"platform", b"capabilities"):
            assert key in props, key
        for cap in (b"publisher_confirms", b"exchange_exchange_bindings", b"basic.nack",
                    b"consumer_cancel_notify", b"connection.blocked", b"consumer_priorities",
                    b"authentication_failure_close", b"per_consumer_qos", b"direct_reply_to"):
            assert cap in props, cap
        r.send(method_frame(0, 10, 11, table({}) + shortstr("PLAIN") + struct.pack(">I", 12)
                            + b"\x00guest\x00guest" + shortstr("en_US")))
        tune = r.expect((10, 30))
        a = tune.args()
        assert (a.short(), a.long(), a.short()) == (2047, 131072, 60)
    finally:
        r.close()


def test_amqplain_login(broker):
    r = RawAMQP(broker.host, broker.port)
    try:
        r.send(PROTOCOL_HEADER)
        r.expect((10, 10))
        resp = table({"LOGIN": "guest", "PASSWORD": "guest"})[4:]  # table body w/o length
        r.send(method_frame(0, 10, 11, table({}) + shortstr("AMQPLAIN")
                            + struct.pack(">I", len(resp)) + resp + shortstr("en_US")))
        r.expect((10, 30))
        r.send(method_frame(0, 10, 31, struct.pack(">HIH", 2047, 131072, 0)))
        r.send(method_frame(0, 10, 40, shortstr("/") + shortstr("") + b"\x00"))
        r.expect((10, 41))
    finally:
        r.close()


def test_bad_credentials_raw_403(broker):
    r = RawAMQP(broker.host, broker.port)
    try:
        r.send(PROTOCOL_HEADER)
        r.expect((10, 10))
        r.send(method_frame(0, 10, 11, table({"capabilities": {"authentication_failure_close": True}})
                            + shortstr("PLAIN") + struct.pack(">I", 12)
                            + b"\x00guest\x00wrong" + shortstr("en_US")))
        f = r.read_close()
        assert f is not None and f.close_info()[0] == 403
    finally:
        r.close()


# ------------------------------------------------------------------ content pass-through
ALL_FIELDS = [(b"t", b"\x01"), (b"b", b"\xfe"), (b"s", struct.pack(">h", -2)),
              (b"I", struct.pack(">i", -5)), (b"l", struct.pack(">q", -7)),
              (b"f", struct.pack(">f", 1.5)), (b"d", struct.pack(">d", 2.5)),
              (b"D", b"\x02" + struct.pack(">i", 12345)), (b"S", longstr("str")),
              (b"x", longstr(b"\x00\x01bytes")),
              (b"A", struct.pack(">I", 7) + b"I" + struct.pack(">i", 1) + b"t\x00"),
              (b"T", struct.pack(">Q", 1700000000)), (b"F", table({"n": 1})), (b"V", b"")]


def _raw_get(r, ch, q, no_ack=True):
    r.send(method_frame(ch, 60, 70, struct.pack(">H", 0) + shortstr(q) + (b"\x01" if no_ack else b"\x00")))
    m = r.read_method()
    assert m.method == (60, 71), m
    hdr = r.read_method()
    size = struct.unpack(">Q", hdr.payload[4:12])[0]
    body = b""
    while len(body) < size:
        body += r.read_method().payload
    return m, hdr, body


def test_header_table_passes_through_byte_for_byte(raw):
    raw.open_channel(1)
    q = uname()
    raw.queue_declare(1, q)
    tbl = b"".join(shortstr("k_" + t.decode()) + t + v for t, v in ALL_FIELDS)
    # all 14 basic properties, in flag order
    props = (shortstr("application/json") + shortstr("utf-8")
             + struct.pack(">I", len(tbl)) + tbl + b"\x02" + b"\x05" + shortstr("corr")
             + shortstr("reply") + shortstr("60000") + shortstr("mid")
             + struct.pack(">Q", 1700000000) + shortstr("type") + shortstr("guest")
             + shortstr("app") + shortstr("cluster"))
    flags = 0xFFFC
    raw.send(method_frame(1, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr(q) + b"\x00")
             + content_header(1, 3, flags=flags, props=props) + body_frame(1, b"abc"))
    m, hdr, body = _raw_get(raw, 1, q)
    assert body == b"abc"
    assert struct.unpack(">H", hdr.payload[12:14])[0] == flags
    assert hdr.payload[14:] == props, "properties must be delivered byte for byte"


def test_x_death_wire_types(raw):
    raw.open_channel(1)
    dlx, dlq, src = uname("dlx"), uname(), uname()
    # exchange.declare fanout
    raw.send(method_frame(1, 40, 10, struct.pack(">H", 0) + shortstr(dlx) + shortstr("fanout")
                          + b"\x00" + table({})))
    raw.expect((40, 11))
    raw.queue_declare(1, dlq)
    raw.send(method_frame(1, 50, 20, struct.pack(">H", 0) + shortstr(dlq) + shortstr(dlx)
                          + shortstr("") + b"\x00" + table({})))
    raw.expect((50, 21))
    raw.send(method_frame(1, 50, 10, struct.pack(">H", 0) + shortstr(src) + b"\x00"
                          + table({"x-dead-letter-exchange": dlx})))
    raw.expect((50, 11))
    raw.publish(1, "", src, b"dead")
    m, _, _ = _raw_get(raw, 1, src, no_ack=False)
    tag = struct.unpack(">Q", m.payload[4:12])[0]
    raw.send(method_frame(1, 60, 90, struct.pack(">QB", tag, 0)))  # reject, requeue=0
    deadline = time.monotonic() + 5
    while True:
        raw.send(method_frame(1, 60, 70, struct.pack(">H", 0) + shortstr(dlq) + b"\x01"))
        f = raw.read_method()
        if f.method == (60, 71):
            break
        assert f.method == (60, 72) and time.monotonic() < deadline, f
        time.sleep(0.05)
    hdr = raw.read_method()
    raw.read_method()
    flags = struct.unpack(">H", hdr.payload[12:14])[0]
    assert flags & 0x2000, "dead-lettered message must carry headers"
    rd = Reader(hdr.payload[14:])
    if flags & 0x8000:
        rd.shortstr()
    if flags & 0x4000:
        rd.shortstr()
    headers = {k: (t, v) for k, t, v in parse_table_typed(rd.take(rd.long()))}
    t, xdeath = headers["x-death"]
    assert t == b"A" and len(xdeath) == 1 and xdeath[0][0] == b"F"
    d = {k: (tt, v) for k, tt, v in xdeath[0][1]}
    assert d["count"] == (b"l", struct.pack(">q", 1))
    assert d["reason"] == (b"S", b"rejected")
    assert d["queue"] == (b"S", src.encode())
    assert d["exchange"] == (b"S", b"")
    assert d["routing-keys"] == (b"A", [(b"S", src.encode())])
    assert d["time"][0] == b"T"
    assert abs(struct.unpack(">Q", d["time"][1])[0] - time.time()) < 120
    assert headers["x-first-death-reason"] == (b"S", b"rejected")
    assert headers["x-first-death-queue"] == (b"S", src.encode())
    assert headers["x-first-death-exchange"] == (b"S", b"")


def test_server_generated_consumer_tag_and_unknown_cancel(raw):
    raw.open_channel(1)
    q = uname()
    raw.queue_declare(1, q)
    tags = []
    for _ in range(2):
        raw.send(method_frame(1, 60, 20, struct.pack(">H", 0) + shortstr(q) + shortstr("")
                              + b"\x00" + table({})))
        tags.append(raw.expect((60, 21)).args().shortstr())
    assert all(t.startswith("amq.ctag-") for t in tags) and tags[0] != tags[1], tags
    raw.publish(1, "", q, b"x")
    f = raw.read_method()
    assert f.method == (60, 60) and f.args().shortstr() in tags
    raw.read_method()
    raw.read_method()
    # cancelling a tag that does not exist is not an error: cancel-ok echoes it
    raw.send(method_frame(1, 60, 30, shortstr("no-such-tag") + b"\x00"))
    ok = raw.expect((60, 31))
    assert ok.args().shortstr() == "no-such-tag"
    raw.send(method_frame(1, 60, 30, shortstr(tags[0]) + b"\x00"))
    assert raw.expect((60, 31)).args().shortstr() == tags[0]


# ------------------------------------------------------------------ robustness
METHODS = [(10, m) for m in (10, 11, 20, 21, 30, 31, 40, 41, 50, 51)] + \
          [(20, m) for m in (10, 11, 20, 21, 40, 41)] + \
          [(40, m) for m in (10, 11, 20, 21, 30, 31, 40, 51)] + \
          [(50, m) for m in (10, 11, 20, 21, 30, 31, 40, 41, 50, 51)] + \
          [(60, m) for m in (10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90,
                             100, 110, 111, 120)] + \
          [(85, 10), (85, 11)] + [(90, m) for m in (10, 11, 20, 21, 30, 31)]


@pytest.mark.timeout(120)
def test_random_method_arguments_do_not_crash(broker):
    import random
    rnd = random.Random(0xA3)
    deadline = time.monotonic() + 60
    for i in range(120):
        if time.monotonic() > deadline:
            break
        r = RawAMQP(broker.host, broker.port, timeout=3).handshake()
        try:
            r.open_channel(1)
            for _ in range(rnd.randint(1, 3)):
                cls, meth = rnd.choice(METHODS)
                ch = 0 if cls == 10 else rnd.choice((1, 1, 1, 2))
                n = rnd.choice((0, 1, 2, 4, 8, 16, 40))
                args = bytes(rnd.getrandbits(8) for _ in range(n))
                r.send(method_frame(ch, cls, meth, args))
                if rnd.random() < 0.3:
                    r.send(content_header(ch, rnd.randint(0, 10)) + body_frame(ch, b"x" * 3))
            # end politely; whatever state the broker is in it must answer or hang up
            r.send(method_frame(0, 10, 50, struct.pack(">H", 200) + shortstr("") + b"\0\0\0\0"))
            end = time.monotonic() + 5
            while time.monotonic() < end:
                try:
                    f = r.read_frame()
                except (Closed, OSError):
                    break
                if isinstance(f, bytes):
                    break
                if f.method in ((10, 51), (10, 50)):
                    break
            else:
                pytest.fail("iteration %d: no close-ok / close / hang-up within 5 s" % i)
        except (Closed, OSError):
            pass
        finally:
            r.close()
        assert broker.alive(), "broker died at iteration %d" % i


@pytest.mark.timeout(60)
def test_many_concurrent_connections(broker):
    conns = []
    try:
        for _ in range(100):
            r = RawAMQP(broker.host, broker.port, timeout=10).handshake()
            r.open_channel(1)
            conns.append(r)
        for r in conns[::10]:
            r.queue_declare(1, "", exclusive=True)
    finally:
        for r in conns:
            r.close()
