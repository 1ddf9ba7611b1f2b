"""Abuse: a peer that lies, stalls or floods gets RabbitMQ's reply code and the broker
stays up and keeps serving a normal client afterwards (every test ends by checking that).
The abuses the issue names also run a well-behaved client beside them the whole time
(LatencyProbe) and print its round-trip latency during the abuse (run with -s to see it).

Concerns:
- [x] a frame header announcing a 2 GiB or 4 GiB payload: 501 FRAME_ERROR, nothing allocated
- [x] slowloris: a protocol header sent one byte at a time, never finished, and a
      handshake stalled mid-frame, are both dropped by the 10 s handshake timeout
- [x] 10,000 connection attempts (connect and close, or connect, header, close)
- [x] a consumer that never reads: its deliveries stop at the outbound bound, the rest stays
      queued; the broker's memory does not follow the backlog
- [x] field tables nested 10,000 deep: queue.declare arguments 502; message headers match
      no headers binding (312 NO_ROUTE when mandatory) and pass the default exchange untouched
- [x] 100,000 queues declared on one connection (pipelined), all gone with it
- [x] a channel opened twice: 504 CHANNEL_ERROR
- [x] acks (single and multiple) for unknown delivery tags: 406 PRECONDITION_FAILED, channel only
- [x] EMFILE (own broker, 64 descriptors): accepting pauses and resumes, existing clients,
      queues and the store keep working; the soft descriptor limit is raised to the hard one
      and both are logged
- [x] --max-connections counts handshakes in progress: half-open connections take slots,
      a real client gets 530 while they hold them and is served once they go
- [x] channel.open above the negotiated channel_max: 530 NOT_ALLOWED
- [x] 10,000 channel open/close cycles on one connection
- [x] a body longer than the content header declared: a connection error
- [x] content frames without a header, frames on a channel the broker closed
- [x] unknown class and method ids: 540 NOT_IMPLEMENTED
- [x] limits (own brokers): --max-connections (530 at connection.open, slots freed on
      close), --max-consumers-per-channel (530), --max-queues (406, channel only)
"""

import os
import resource
import socket
import struct
import threading
import time

import pika
import pytest

from amqp_raw import (CONNECTION_CLOSE, CHANNEL_CLOSE, FRAME_BODY, PROTOCOL_HEADER, RawAMQP,
                      body_frame, content_header, method_frame, shortstr, table)
from latency_probe import LatencyProbe
from minibroker_proc import MinibrokerProc, default_binary
from util import uname

HANDSHAKE_TIMEOUT = 10  # seconds, RabbitMQ's handshake_timeout and minibroker's


def serves_normal_client(host, port):
    """A pika client can declare, publish and get a message back."""
    c = pika.BlockingConnection(pika.ConnectionParameters(
        host=host, port=port, connection_attempts=3, retry_delay=1, socket_timeout=10))
    try:
        ch = c.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, b"still here")
        for _ in range(100):
            m, _, body = ch.basic_get(q, auto_ack=True)
            if m is not None:
                return body == b"still here"
            time.sleep(0.05)
        return False
    finally:
        c.close()


def assert_connection_close(raw, code):
    f = raw.read_close(timeout=10)
    assert f is not None, "socket closed without connection.close %d" % code
    assert f.method == CONNECTION_CLOSE, f
    got, text, _, _ = f.close_info()
    assert got == code, (got, text)
    return text


@pytest.fixture
def raw(broker):
    r = RawAMQP(broker.host, broker.port, timeout=10).handshake()
    yield r
    r.close()
    assert serves_normal_client(broker.host, broker.port)


@pytest.mark.parametrize("size", [2 << 30, 0xFFFFFFFF], ids=["2GiB", "4GiB"])
def test_huge_frame_size_header_501(broker, raw, size):
    with LatencyProbe(broker.host, broker.port, "a %d-byte frame header" % size):
        raw.open_channel(1)
        # A body frame header claiming that many payload bytes, then nothing more.
        raw.send(struct.pack(">BHI", FRAME_BODY, 1, size))
        assert_connection_close(raw, 501)


def test_huge_frame_before_handshake_is_dropped(broker):
    s = socket.create_connection((broker.host, broker.port), timeout=10)
    try:
        s.sendall(PROTOCOL_HEADER + struct.pack(">BHI", 1, 0, 0xFFFFFFF0))
        # connection.start arrives, then the broker closes (501 or a plain close).
        s.settimeout(10)
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:  # RabbitMQ 3.10 resets; minibroker closes
            pass
        assert data[:1] == b"\x01"  # it did answer the header with connection.start
    finally:
        s.close()
    assert serves_normal_client(broker.host, broker.port)


@pytest.mark.minibroker_only  # RabbitMQ waits its own handshake_timeout too, but logs differently
@pytest.mark.timeout(90)
def test_slowloris_protocol_header_closed_by_handshake_timeout(broker):
    s = socket.create_connection((broker.host, broker.port), timeout=5)
    start = time.monotonic()
    closed = False
    try:
        with LatencyProbe(broker.host, broker.port, "slowloris (unfinished protocol header)"):
            s.sendall(b"AMQ")  # never finish the 8-byte header; trickle nothing else
            s.settimeout(HANDSHAKE_TIMEOUT * 4)
            try:
                closed = s.recv(1) == b""
            except ConnectionResetError:
                closed = True
    finally:
        s.close()
    assert closed, "the broker kept a stalled handshake open"
    assert time.monotonic() - start >= HANDSHAKE_TIMEOUT - 1  # not closed for some other reason
    assert serves_normal_client(broker.host, broker.port)


@pytest.mark.minibroker_only
@pytest.mark.timeout(90)
def test_slowloris_partial_frame_during_handshake(broker):
    s = socket.create_connection((broker.host, broker.port), timeout=5)
    closed = False
    try:
        s.sendall(PROTOCOL_HEADER)
        s.settimeout(HANDSHAKE_TIMEOUT * 4)
        # start-ok announced as 1000 bytes; send them one every second, never all.
        s.sendall(struct.pack(">BHI", 1, 0, 1000))
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT * 4
        with LatencyProbe(broker.host, broker.port, "slowloris (a byte per second during the handshake)"):
            while time.monotonic() < deadline:
                try:
                    s.sendall(b"x")
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                s.settimeout(1.0)
                try:
                    chunk = s.recv(65536)
                    if chunk == b"":
                        closed = True
                        break
                except socket.timeout:
                    pass
                except ConnectionResetError:
                    closed = True
                    break
    finally:
        s.close()
    assert closed, "a handshake trickled byte by byte was never closed"
    assert serves_normal_client(broker.host, broker.port)


def test_channel_above_channel_max_530(broker):
    r = RawAMQP(broker.host, broker.port, timeout=10)
    try:
        r.send(PROTOCOL_HEADER)
        r.expect((10, 10))
        r.send(method_frame(0, 10, 11, table({}) + shortstr("PLAIN") + struct.pack(">I", 12)
                            + b"\x00guest\x00guest" + shortstr("en_US")))
        r.expect((10, 30))
        r.send(method_frame(0, 10, 31, struct.pack(">HIH", 4, 131072, 0)))  # channel_max 4
        r.send(method_frame(0, 10, 40, shortstr("/") + shortstr("") + b"\x00"))
        r.expect((10, 41))
        for ch in range(1, 5):
            r.open_channel(ch)
        r.send(method_frame(5, 20, 10, shortstr("")))
        assert_connection_close(r, 530)
    finally:
        r.close()
    assert serves_normal_client(broker.host, broker.port)


@pytest.mark.timeout(180)
def test_ten_thousand_channel_opens(raw):
    batch = 500  # pipelined: open + close, 500 pairs per write
    for start in range(0, 10_000, batch):
        data = b"".join(method_frame(1 + (i % 2000), 20, 10, shortstr("")) +
                        method_frame(1 + (i % 2000), 20, 40, struct.pack(">H", 200) + shortstr("")
                                     + struct.pack(">HH", 0, 0))
                        for i in range(start, start + batch))
        raw.send(data)
        # RabbitMQ runs channels apart, so replies on different channels may interleave.
        replies = [raw.read_method().method for _ in range(2 * batch)]
        assert replies.count((20, 11)) == batch and replies.count((20, 41)) == batch


@pytest.mark.minibroker_only  # RabbitMQ 3.10 sends nothing within 10 s (observed)
def test_body_longer_than_declared(raw):
    raw.open_channel(1)
    q = uname()
    raw.queue_declare(1, q, exclusive=True)
    raw.send(method_frame(1, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr(q) + b"\x00"))
    raw.send(content_header(1, 4))
    raw.send(body_frame(1, b"12345678"))
    f = raw.read_close(timeout=10)
    assert f is not None
    code, text, _, _ = f.close_info()
    assert f.method == CONNECTION_CLOSE and code in (505, 501), (code, text)


@pytest.mark.parametrize("kind", ["header", "body"])
def test_content_without_publish(raw, kind):
    raw.open_channel(1)
    raw.send(content_header(1, 3) if kind == "header" else body_frame(1, b"abc"))
    assert_connection_close(raw, 505)


def test_body_without_header(raw):
    raw.open_channel(1)
    raw.send(method_frame(1, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr("x") + b"\x00"))
    raw.send(body_frame(1, b"abc"))
    assert_connection_close(raw, 505)


def test_frames_on_channel_closed_by_broker(raw):
    raw.open_channel(1)
    # 404 on a passive declare: the broker closes channel 1 and waits for close-ok.
    raw.send(method_frame(1, 50, 10, struct.pack(">H", 0) + shortstr(uname("missing")) + b"\x01" + table({})))
    f = raw.read_close(timeout=10)
    assert f.method == CHANNEL_CLOSE and f.close_info()[0] == 404
    # Every method but close-ok on that channel is ignored (spec 2.3.5.2)... (RabbitMQ 3.10
    # still assembles content there and answers a publish without content with 505;
    # minibroker ignores it all: not tested)
    raw.send(method_frame(1, 50, 10, struct.pack(">H", 0) + shortstr("x") + b"\x00" + table({})))
    raw.send(method_frame(1, 20, 41))
    # ...and the channel can be opened again.
    raw.open_channel(1)


def test_frames_on_never_opened_channel(raw):
    raw.send(method_frame(7, 50, 10, struct.pack(">H", 0) + shortstr("x") + b"\x00" + table({})))
    assert_connection_close(raw, 504)


@pytest.mark.minibroker_only  # RabbitMQ 3.10 drops the socket without connection.close
@pytest.mark.parametrize("cls,meth", [(999, 1), (60, 999), (10, 999)])
def test_unknown_class_or_method_540(raw, cls, meth):
    if cls != 10:
        raw.open_channel(1)
    raw.send(method_frame(0 if cls == 10 else 1, cls, meth, b""))
    assert_connection_close(raw, 540)


def test_channel_opened_twice_504(broker, raw):
    with LatencyProbe(broker.host, broker.port, "a channel opened twice"):
        raw.open_channel(1)
        raw.send(method_frame(1, 20, 10, shortstr("")))
        text = assert_connection_close(raw, 504)
        assert "channel.open" in text


def test_acks_for_unknown_delivery_tags_406(broker, raw):
    with LatencyProbe(broker.host, broker.port, "acks for unknown delivery tags"):
        for ch, multiple in ((1, 0), (2, 1)):
            raw.open_channel(ch)
            raw.send(method_frame(ch, 60, 80, struct.pack(">QB", 999, multiple)))
            f = raw.read_close(timeout=10)
            assert f.method == CHANNEL_CLOSE and f.channel == ch, f
            code, text, _, _ = f.close_info()
            assert (code, text) == (406, "PRECONDITION_FAILED - unknown delivery tag 999")
            raw.send(method_frame(ch, 20, 41))  # close-ok: the connection goes on
        raw.open_channel(3)


def nested_table(levels):
    """A field table {"n": {"n": ... {}}} nested `levels` deep, encoded."""
    inner = b""
    for _ in range(levels):
        inner = shortstr("n") + b"F" + struct.pack(">I", len(inner)) + inner
    return struct.pack(">I", len(inner)) + inner


@pytest.mark.minibroker_only  # RabbitMQ decodes any depth; minibroker stops at 32 levels
def test_deeply_nested_declare_arguments_502(broker, raw):
    with LatencyProbe(broker.host, broker.port, "a table nested 10,000 deep in queue.declare arguments"):
        raw.open_channel(1)
        raw.send(method_frame(1, 50, 10, struct.pack(">H", 0) + shortstr(uname()) + b"\x00"
                              + nested_table(10_000)))
        assert "nested too deeply" in assert_connection_close(raw, 502)


@pytest.mark.minibroker_only  # RabbitMQ decodes any depth and would route it
def test_deeply_nested_headers_match_no_headers_binding_312(broker, raw):
    with LatencyProbe(broker.host, broker.port, "headers nested 10,000 deep routed by amq.headers"):
        raw.open_channel(1)
        q = uname()
        raw.queue_declare(1, q, exclusive=True)
        raw.send(method_frame(1, 50, 20, struct.pack(">H", 0) + shortstr(q) + shortstr("amq.headers")
                              + shortstr("") + b"\x00" + table({"x-match": "any", "n": "x"})))
        raw.expect((50, 21))
        # mandatory: headers too deep to read match no binding, so the message comes back
        raw.send(method_frame(1, 60, 40, struct.pack(">H", 0) + shortstr("amq.headers") + shortstr("") + b"\x01"))
        raw.send(content_header(1, 1, flags=0x2000, props=nested_table(10_000)))
        raw.send(body_frame(1, b"x"))
        ret = raw.expect((60, 50))
        assert ret.args().short() == 312  # NO_ROUTE


def test_deeply_nested_headers_pass_through_the_default_exchange(broker, raw):
    """Routing by queue name never reads the headers: the table goes through untouched, as in RabbitMQ."""
    with LatencyProbe(broker.host, broker.port, "headers nested 10,000 deep through the default exchange"):
        raw.open_channel(1)
        q = uname()
        raw.queue_declare(1, q, exclusive=True)
        deep = nested_table(10_000)
        raw.send(method_frame(1, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr(q) + b"\x00"))
        raw.send(content_header(1, 1, flags=0x2000, props=deep))
        raw.send(body_frame(1, b"x"))
        raw.send(method_frame(1, 60, 70, struct.pack(">H", 0) + shortstr(q) + b"\x01"))  # basic.get, no-ack
        raw.expect((60, 71))
        header = raw.read_frame()
        assert header.payload[14:] == deep  # class, weight, body size, flags, then the table as sent
        assert raw.read_frame().payload == b"x"


@pytest.mark.timeout(180)
def test_ten_thousand_connection_attempts(broker):
    def attempts(n, header):
        for _ in range(n):
            s = socket.create_connection((broker.host, broker.port), timeout=30)
            if header:
                s.sendall(PROTOCOL_HEADER)
            s.close()

    with LatencyProbe(broker.host, broker.port, "10,000 connection attempts"):
        t0 = time.monotonic()
        threads = [threading.Thread(target=attempts, args=(2500, i % 2 == 1)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print("\n10,000 connection attempts took %.1f s" % (time.monotonic() - t0))
    assert serves_normal_client(broker.host, broker.port)


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.minibroker_only  # reads the broker's RSS from /proc
@pytest.mark.timeout(120)
def test_consumer_that_never_reads(broker):
    body, count = b"n" * (64 << 10), 800  # 50 MiB queued for it
    q = uname("unread")
    c = pika.BlockingConnection(broker.pika_params())
    ch = c.channel()
    ch.queue_declare(q, auto_delete=False)
    for _ in range(count):
        ch.basic_publish("", q, body)
    ch.queue_declare(q, passive=True)  # a round trip: every publish arrived
    rss_before = rss_bytes(broker._impl.proc.pid)
    # A consumer with no prefetch limit that, after basic.consume, never reads a byte.
    stalled = RawAMQP(broker.host, broker.port, timeout=10).handshake()
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        with LatencyProbe(broker.host, broker.port, "a consumer that never reads"):
            stalled.open_channel(1)
            stalled.send(method_frame(1, 60, 20, struct.pack(">H", 0) + shortstr(q) + shortstr("stalled")
                                      + b"\x00" + table({})))
            time.sleep(3)
            ready = ch.queue_declare(q, passive=True).method.message_count
            growth = rss_bytes(broker._impl.proc.pid) - rss_before
            print("\nnever-reading consumer: %d of %d messages still queued, broker RSS grew %.1f MiB"
                  % (ready, count, growth / 2 ** 20))
            # The broker stopped at its outbound bound (4 MiB, plus what the kernel's socket
            # buffers took) instead of pulling the 50 MiB backlog towards that socket.
            assert ready >= count // 2, ready
    finally:
        stalled.close()
        ch.queue_delete(q)
        c.close()
    assert serves_normal_client(broker.host, broker.port)


@pytest.mark.timeout(300)
def test_hundred_thousand_queues(broker):
    n, batch = 100_000, 5_000
    prefix = uname("hq") + "-"
    r = RawAMQP(broker.host, broker.port, timeout=60).handshake()
    try:
        with LatencyProbe(broker.host, broker.port, "100,000 queues declared"):
            r.open_channel(1)
            t0 = time.monotonic()
            for start in range(0, n, batch):
                # exclusive (4), no-wait (16): no reply per queue; a synchronous declare ends each batch
                r.send(b"".join(method_frame(1, 50, 10, struct.pack(">H", 0) + shortstr(prefix + str(i))
                                             + b"\x14" + table({}))
                                for i in range(start, start + batch - 1)))
                r.queue_declare(1, prefix + str(start + batch - 1), exclusive=True)
            print("\n100,000 queues declared in %.1f s" % (time.monotonic() - t0))
            # they exist: a passive declare of one in the middle answers
            r.send(method_frame(1, 50, 10, struct.pack(">H", 0) + shortstr(prefix + "54321") + b"\x01" + table({})))
            r.expect((50, 11))
    finally:
        r.close_connection()
        r.close()
    assert serves_normal_client(broker.host, broker.port)


# ---------------------------------------------------------------- limits (own brokers)

@pytest.fixture
def limited_broker():
    b = MinibrokerProc(default_binary(), extra_args=[
        "--max-connections", "3", "--max-consumers-per-channel", "2", "--max-queues", "5"])
    b.start(timeout=10)
    yield b
    alive = b.alive()
    b.cleanup()
    assert alive, "the broker died"


@pytest.mark.minibroker_only
def test_max_connections_530_then_slot_freed(limited_broker):
    b = limited_broker
    conns = [RawAMQP(b.host, b.port, timeout=10).handshake() for _ in range(3)]
    extra = [RawAMQP(b.host, b.port, timeout=10) for _ in range(5)]
    try:
        for r in extra:
            with pytest.raises(AssertionError, match="530"):
                r.handshake()
        conns.pop().close_connection()
        # a slot is free again (the broker counts it down once it has seen the close)
        for _ in range(50):
            try:
                conns.append(RawAMQP(b.host, b.port, timeout=10).handshake())
                break
            except AssertionError:
                time.sleep(0.1)
        assert len(conns) == 3
    finally:
        for r in conns + extra:
            r.close()
    assert serves_normal_client(b.host, b.port)


@pytest.mark.minibroker_only
def test_max_consumers_per_channel_530(limited_broker):
    b = limited_broker
    c = pika.BlockingConnection(pika.ConnectionParameters(host=b.host, port=b.port, socket_timeout=10))
    ch = c.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_consume(q, lambda *a: None)
    ch.basic_consume(q, lambda *a: None)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        ch.basic_consume(q, lambda *a: None)
    assert e.value.reply_code == 530 and "consumers per channel" in e.value.reply_text
    assert serves_normal_client(b.host, b.port)


@pytest.mark.minibroker_only
def test_max_queues_406(limited_broker):
    b = limited_broker
    c = pika.BlockingConnection(pika.ConnectionParameters(host=b.host, port=b.port, socket_timeout=10))
    try:
        ch = c.channel()
        names = [ch.queue_declare("", exclusive=True).method.queue for _ in range(5)]
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare("", exclusive=True)
        assert e.value.reply_code == 406 and "queue limit" in e.value.reply_text
        # a channel error: the connection goes on; redeclaring an existing queue is no new queue
        ch = c.channel()
        ch.queue_declare(names[0], exclusive=True)
        ch.queue_delete(names[0])
        ch.queue_declare("", exclusive=True)  # the deleted one's room
    finally:
        c.close()
    # exclusive queues went with the connection: room again
    assert serves_normal_client(b.host, b.port)


@pytest.mark.minibroker_only
def test_half_open_connections_take_slots(limited_broker):
    b = limited_broker  # --max-connections 3

    def half_open():
        s = socket.create_connection((b.host, b.port), timeout=10)
        s.sendall(b"AMQ")  # a handshake that never finishes
        return s

    half = [half_open() for _ in range(3)]
    try:
        with pytest.raises(AssertionError, match="530"):
            RawAMQP(b.host, b.port, timeout=10).handshake()
        # Twice the limit in all (3 holding slots, 3 handshaking towards their 530): the
        # broker stops accepting; a 7th connection waits in the kernel's backlog.
        half += [half_open() for _ in range(3)]
        waiting = socket.create_connection((b.host, b.port), timeout=10)
        waiting.sendall(PROTOCOL_HEADER)
        waiting.settimeout(1.5)
        with pytest.raises(socket.timeout):
            waiting.recv(1)
        half.pop().close()  # one goes: accepting resumes, connection.start arrives
        waiting.settimeout(10)
        assert waiting.recv(1) == b"\x01"
        waiting.close()
    finally:
        for s in half:
            s.close()
    for _ in range(50):  # the slots come back once the broker has seen the sockets close
        try:
            RawAMQP(b.host, b.port, timeout=10).handshake().close()
            break
        except AssertionError:
            time.sleep(0.1)
    else:
        raise AssertionError("slots never came back")
    with open(b.log_path) as f:
        assert "accepting paused" in f.read()
    assert serves_normal_client(b.host, b.port)


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


@pytest.mark.minibroker_only
@pytest.mark.timeout(120)
def test_emfile_pauses_accepting_and_resumes():
    # Started with a soft descriptor limit below the hard one: the broker raises it and says so.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        b = MinibrokerProc(default_binary())
        b.start(timeout=10)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        with open(b.log_path) as f:
            assert "file descriptors: soft limit %d (was %d), hard limit %d" % (hard, low, hard) in f.read()
        pid = b.proc.pid
        client = pika.BlockingConnection(pika.ConnectionParameters(host=b.host, port=b.port, socket_timeout=10))
        ch = client.channel()
        q = uname("emfile")
        ch.queue_declare(q, durable=True)
        with LatencyProbe(b.host, b.port, "EMFILE (descriptors exhausted)"):
            # 20 descriptors to spare, then 60 connections: the broker runs out.
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_fds(pid) + 20, open_fds(pid) + 20))
            flood = [socket.create_connection((b.host, b.port), timeout=10) for _ in range(60)]
            deadline = time.monotonic() + 20
            while "Too many open files" not in open(b.log_path).read():
                assert time.monotonic() < deadline, "the broker never ran out of descriptors"
                time.sleep(0.1)
            # existing clients, queues and the store keep working
            for i in range(20):
                ch.basic_publish("", q, b"kept-%d" % i, pika.BasicProperties(delivery_mode=2))
            assert ch.queue_declare(q, passive=True).method.message_count == 20
            for s in flood:
                s.close()
            # accepting resumed: a new client gets in
            assert serves_normal_client(b.host, b.port)
        assert ch.basic_get(q, auto_ack=True)[2] == b"kept-0"
        ch.queue_delete(q)
        client.close()
        with open(b.log_path) as f:
            log = f.read()
        assert "accept failed: Too many open files; retrying" in log
        assert b.alive()
    finally:
        b.cleanup()
