"""Capture golden AMQP frames from real clients talking to a private RabbitMQ node.

Usage: /usr/bin/python3 tests/data/capture/capture.py OUTDIR [--more-only]

A loopback TCP proxy sits between each client and RabbitMQ and records both
directions of every connection; the streams are then split into frames and the
interesting ones written as hex under OUT (tests/data/frames).
"""
import datetime
import decimal
import json
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "e2e"))
from rabbitmq_node import RabbitMQNode, free_port  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else "/tmp/capture/out"
os.makedirs(OUT, exist_ok=True)


class Proxy:
    def __init__(self, upstream_port):
        self.upstream = ("127.0.0.1", upstream_port)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.conns = []  # list of dict(c2s=bytearray, s2c=bytearray)
        self.lock = threading.Lock()
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            u = socket.create_connection(self.upstream)
            rec = {"c2s": bytearray(), "s2c": bytearray(), "done": 0}
            with self.lock:
                self.conns.append(rec)
            threading.Thread(target=self._pump, args=(c, u, rec, "c2s"), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, rec, "s2c"), daemon=True).start()

    def _pump(self, src, dst, rec, key):
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                with self.lock:
                    rec[key] += b
                dst.sendall(b)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            with self.lock:
                rec["done"] += 1

    def take(self, timeout=5.0):
        """Waits until every recorded connection finished; returns and clears them."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if all(r["done"] == 2 for r in self.conns):
                    break
            time.sleep(0.05)
        with self.lock:
            out, self.conns = self.conns, []
        return out


def split_frames(stream, client):
    data = bytes(stream)
    pos = 0
    frames = []
    if client:
        assert data[:8] == b"AMQP\x00\x00\x09\x01", data[:8]
        pos = 8
    while pos + 7 <= len(data):
        t, ch, size = struct.unpack_from(">BHI", data, pos)
        end = pos + 7 + size + 1
        if end > len(data):
            break
        assert data[end - 1] == 0xCE
        frames.append(data[pos:end])
        pos = end
    return frames


def describe(f):
    t, ch, size = struct.unpack_from(">BHI", f, 0)
    if t == 1:
        c, m = struct.unpack_from(">HH", f, 7)
        return "method ch%d %d/%d" % (ch, c, m)
    return "type%d ch%d size%d" % (t, ch, size)


def find_method(frames, cm, nth=0):
    hits = [i for i, f in enumerate(frames) if f[0] == 1 and struct.unpack_from(">HH", f, 7) == cm]
    return hits[nth]


def save(name, comment, frames):
    path = os.path.join(OUT, name + ".hex")
    with open(path, "w") as fh:
        for line in comment.strip().splitlines():
            fh.write("# " + line + "\n")
        for f in frames:
            fh.write("# " + describe(f) + "\n")
            h = f.hex()
            for i in range(0, len(h), 64):
                fh.write(h[i:i + 64] + "\n")
    print("wrote", path, sum(len(f) for f in frames), "bytes")


def celery_headers(task_id):
    return {
        "lang": "py",
        "task": "addTask.add",
        "id": task_id,
        "shadow": None,
        "eta": "2026-11-26T19:31:20.327326+00:00",
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": "(5, 5)",
        "kwargsrepr": "{}",
        "origin": "gen13108@vm",
        "ignore_result": False,
    }


def main():
    node = RabbitMQNode(name_prefix="mbcodec")
    node.start(timeout=90)
    proxy = Proxy(node.port)
    url_port = proxy.port
    try:
        if "--more-only" not in sys.argv:
            run(proxy, url_port)
        run_more(proxy, url_port)
    finally:
        proxy.stop = True
        node.stop()


def run(proxy, port):
    import pika
    import amqp

    # ---------------- pika: handshake, declares, all 14 properties, get, consume
    params = pika.ConnectionParameters(host="127.0.0.1", port=port, heartbeat=60)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("mb.direct", "direct", durable=True)
    ch.queue_declare("mb.q1", durable=True,
                     arguments={"x-expires": 86400000, "x-message-ttl": 60000})
    ch.queue_bind("mb.q1", "mb.direct", routing_key="rk1")
    ch.basic_qos(prefetch_count=10)
    props = pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8",
        headers={"s": "str", "i": 42, "neg": -7, "big": 2**40, "t": True, "f": False,
                 "none": None, "arr": [1, "two", None, {"k": "v"}],
                 "nested": {"a": {"b": 1}}, "bytes": b"\x00\x01\xff",
                 "dec": decimal.Decimal("3.14"),
                 "ts": datetime.datetime(2026, 11, 26, 19, 31, 20)},
        delivery_mode=2, priority=5, correlation_id="corr-1", reply_to="reply.q",
        expiration="60000", message_id="msg-1", timestamp=1795000000, type="mytype",
        user_id="guest", app_id="mbtest", cluster_id="c1")
    ch.basic_publish("mb.direct", "rk1", b"hello pika", props, mandatory=True)
    m, p, body = ch.basic_get("mb.q1", auto_ack=False)
    ch.basic_ack(m.delivery_tag)
    ch.basic_publish("mb.direct", "rk1", b"second", pika.BasicProperties(delivery_mode=1))
    got = []

    def on_msg(c, method, properties, b):
        got.append(b)
        c.basic_ack(method.delivery_tag)
        c.stop_consuming()

    tag = ch.basic_consume("mb.q1", on_msg, consumer_tag="ctag-pika")
    ch.start_consuming()
    ch.basic_cancel(tag)
    ch.basic_get("mb.q1")  # get-empty
    ch.queue_delete("mb.q1")
    ch.exchange_delete("mb.direct")
    ch.close()
    conn.close()
    [rec] = proxy.take()
    c2s = split_frames(rec["c2s"], True)
    s2c = split_frames(rec["s2c"], False)
    json.dump({"c2s": [describe(f) for f in c2s], "s2c": [describe(f) for f in s2c]},
              open(os.path.join(OUT, "pika.index.json"), "w"), indent=1)
    with open(os.path.join(OUT, "pika.c2s.bin"), "wb") as fh:
        fh.write(rec["c2s"])
    with open(os.path.join(OUT, "pika.s2c.bin"), "wb") as fh:
        fh.write(rec["s2c"])

    src = "pika 1.2.0 client <-> RabbitMQ 3.10.8 (Debian), captured on loopback"
    save("rabbitmq_connection_start", "connection.start from RabbitMQ 3.10.8 (server-properties with "
         "nested capabilities table of booleans). " + src, [s2c[find_method(s2c, (10, 10))]])
    save("pika_connection_start_ok", "connection.start-ok from pika 1.2.0 (client-properties: "
         "nested capabilities F with t booleans; PLAIN response). " + src, [c2s[find_method(c2s, (10, 11))]])
    save("rabbitmq_connection_tune", "connection.tune from RabbitMQ (channel-max 2047, frame-max 131072, "
         "heartbeat 60). " + src, [s2c[find_method(s2c, (10, 30))]])
    save("pika_connection_tune_ok", "connection.tune-ok from pika. " + src, [c2s[find_method(c2s, (10, 31))]])
    save("pika_connection_open", "connection.open vhost '/' from pika. " + src, [c2s[find_method(c2s, (10, 40))]])
    save("rabbitmq_connection_open_ok", "connection.open-ok from RabbitMQ. " + src,
         [s2c[find_method(s2c, (10, 41))]])
    save("pika_channel_open", "channel.open on channel 1 from pika. " + src, [c2s[find_method(c2s, (20, 10))]])
    save("rabbitmq_channel_open_ok", "channel.open-ok (empty longstr) from RabbitMQ. " + src,
         [s2c[find_method(s2c, (20, 11))]])
    save("pika_confirm_select", "confirm.select from pika. " + src, [c2s[find_method(c2s, (85, 10))]])
    save("pika_exchange_declare", "exchange.declare mb.direct direct durable from pika. " + src,
         [c2s[find_method(c2s, (40, 10))]])
    save("pika_queue_declare_ttl", "queue.declare mb.q1 durable, arguments {x-expires: I 86400000, "
         "x-message-ttl: I 60000} from pika. " + src, [c2s[find_method(c2s, (50, 10))]])
    save("rabbitmq_queue_declare_ok", "queue.declare-ok mb.q1 0 0 from RabbitMQ. " + src,
         [s2c[find_method(s2c, (50, 11))]])
    save("pika_queue_bind", "queue.bind mb.q1 mb.direct rk1 from pika. " + src,
         [c2s[find_method(c2s, (50, 20))]])
    save("pika_basic_qos", "basic.qos prefetch-count 10 from pika. " + src, [c2s[find_method(c2s, (60, 10))]])
    i = find_method(c2s, (60, 40))
    save("pika_publish_all_properties", "basic.publish mb.direct/rk1 mandatory + content header with ALL 14 "
         "basic properties (headers: S, I, l, t, V, A, nested F, x, D, T) + body 'hello pika'. " + src,
         c2s[i:i + 3])
    save("rabbitmq_basic_ack_confirm", "basic.ack delivery-tag 1 (publisher confirm) from RabbitMQ. " + src,
         [s2c[find_method(s2c, (60, 80))]])
    i = find_method(s2c, (60, 71))
    save("rabbitmq_basic_get_ok", "basic.get-ok + header + body (properties passed through unchanged) "
         "from RabbitMQ. " + src, s2c[i:i + 3])
    save("rabbitmq_basic_get_empty", "basic.get-empty from RabbitMQ. " + src, [s2c[find_method(s2c, (60, 72))]])
    save("pika_basic_consume", "basic.consume mb.q1 ctag-pika from pika. " + src,
         [c2s[find_method(c2s, (60, 20))]])
    save("rabbitmq_basic_consume_ok", "basic.consume-ok ctag-pika from RabbitMQ. " + src,
         [s2c[find_method(s2c, (60, 21))]])
    i = find_method(s2c, (60, 60))
    save("rabbitmq_basic_deliver", "basic.deliver ctag-pika + header (delivery-mode 1) + body 'second' "
         "from RabbitMQ. " + src, s2c[i:i + 3])
    save("pika_basic_ack", "basic.ack from pika. " + src, [c2s[find_method(c2s, (60, 80))]])
    save("pika_basic_cancel", "basic.cancel ctag-pika from pika. " + src, [c2s[find_method(c2s, (60, 30))]])
    save("pika_queue_delete", "queue.delete mb.q1 from pika. " + src, [c2s[find_method(c2s, (50, 40))]])
    save("rabbitmq_queue_delete_ok", "queue.delete-ok from RabbitMQ. " + src, [s2c[find_method(s2c, (50, 41))]])
    save("pika_channel_close", "channel.close 0 'Normal shutdown' from pika. " + src,
         [c2s[find_method(c2s, (20, 40))]])
    save("pika_connection_close", "connection.close 200 'Normal shutdown' from pika. " + src,
         [c2s[find_method(c2s, (10, 50))]])
    save("rabbitmq_connection_close_ok", "connection.close-ok from RabbitMQ. " + src,
         [s2c[find_method(s2c, (10, 51))]])

    # ---------------- py-amqp: frame_max 4096, Celery headers, body in 3 frames, deliver
    c = amqp.Connection("127.0.0.1:%d" % port, frame_max=4096, heartbeat=0)
    c.connect()
    chan = c.channel()
    chan.exchange_declare("celery", "direct", durable=True, auto_delete=False)
    chan.queue_declare("celery", durable=True, auto_delete=False)
    chan.queue_bind("celery", "celery", "celery")
    chan.queue_declare("c3cdaa41-59d9-3e12-80de-d0754ecf1c8b", durable=False, auto_delete=True,
                       arguments={"x-expires": 86400000})
    task_id = "5eac2e01-3140-420f-bdbe-c3f2f9fda8a1"
    hdrs = celery_headers(task_id)
    hdrs.update({"score": 0.5, "price": decimal.Decimal("-12.345"),
                 "when": datetime.datetime(2026, 11, 26, 19, 31, 20),
                 "meta": {"nested": {"depth": 2, "ok": True}, "list": [1, [2, [3]]]}})
    body = ('[[5, 5], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
            + " " * 9919).encode()
    assert len(body) == 10000
    msg = amqp.Message(body, content_type="application/json", content_encoding="utf-8",
                       application_headers=hdrs, delivery_mode=2, priority=0,
                       correlation_id=task_id, reply_to="c3cdaa41-59d9-3e12-80de-d0754ecf1c8b")
    # py-amqp 5.1.1 ignores its own frame_max in tune-ok (it takes the server's 131072), so lower
    # its writer's limit after the handshake to split the body as a frame_max-4096 client would.
    c.frame_max = 4096
    chan.basic_publish(msg, exchange="", routing_key="celery")
    chan.close()
    c.close()
    [rec] = proxy.take()
    c2s = split_frames(rec["c2s"], True)
    json.dump({"c2s": [describe(f) for f in c2s]},
              open(os.path.join(OUT, "pyamqp.index.json"), "w"), indent=1)
    src = "py-amqp 5.1.1 (kombu's transport) -> RabbitMQ 3.10.8, captured on loopback"
    save("pyamqp_connection_start_ok", "connection.start-ok from py-amqp 5.1.1 (client-properties with "
         "nested capabilities F of t booleans; AMQPLAIN/PLAIN). " + src, [c2s[find_method(c2s, (10, 11))]])
    save("pyamqp_queue_declare_x_expires", "queue.declare of a Celery rpc reply queue, auto-delete, "
         "arguments {x-expires: I 86400000}, from py-amqp. " + src, [c2s[find_method(c2s, (50, 10), 1)]])
    i = find_method(c2s, (60, 40))
    save("pyamqp_celery_publish_3_body_frames",
         "Celery-style basic.publish ''/celery + content header (flags 0xFE00: content-type, "
         "content-encoding, headers, delivery-mode 2, priority 0, correlation-id, reply-to) with the "
         "task-protocol-2 headers table (S, V, I, A [V, V], t) plus d, D, T and nested F/A; "
         "body 10000 bytes split into 3 body frames (4088 + 4088 + 1824; py-amqp's writer limit set "
         "to frame_max 4096 after the handshake). " + src, c2s[i:i + 5])

    # ---------------- pika with frame_max 4096 consumes it: deliver with 3 body frames
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=port, frame_max=4096, heartbeat=0))
    ch = conn.channel()
    got = []

    def on_msg2(cc, method, properties, b):
        got.append(b)
        cc.basic_ack(method.delivery_tag)
        cc.stop_consuming()

    ch.basic_consume("celery", on_msg2, consumer_tag="None4")
    ch.start_consuming()
    assert got[0] == body
    ch.basic_cancel("None4")
    ch.queue_delete("celery")
    ch.exchange_delete("celery")
    ch.close()
    conn.close()
    [rec] = proxy.take()
    s2c = split_frames(rec["s2c"], False)
    c2s = split_frames(rec["c2s"], True)
    src = "RabbitMQ 3.10.8 -> pika 1.2.0 with frame_max 4096, captured on loopback"
    i = find_method(s2c, (60, 60))
    save("rabbitmq_deliver_3_body_frames", "basic.deliver None4 + the header py-amqp published (passed "
         "through unchanged) + the 10000-byte body in 3 body frames (4088 + 4088 + 1824). " + src,
         s2c[i:i + 5])
    save("pika_connection_tune_ok_4096", "connection.tune-ok channel-max 2047 frame-max 4096 heartbeat 0 "
         "from pika. " + src, [c2s[find_method(c2s, (10, 31))]])

    # ---------------- real Celery send_task through kombu/py-amqp
    import celery
    app = celery.Celery("addTask", broker="amqp://guest:guest@127.0.0.1:%d//" % port)
    r = app.send_task("addTask.add", args=(5, 5), task_id=task_id)
    app.close()
    try:
        app.pool.force_close_all()
    except Exception:
        pass
    time.sleep(0.5)
    recs = proxy.take()
    for rec in recs:
        c2s = split_frames(rec["c2s"], True)
        try:
            i = find_method(c2s, (60, 40))
        except IndexError:
            continue
        save("celery_send_task", "Real Celery 5.2.6 app.send_task('addTask.add', args=(5, 5)) through "
             "kombu 5.2.4 / py-amqp 5.1.1 to RabbitMQ 3.10.8: basic.publish ''/celery + content header "
             "(task protocol 2 headers) + body. captured on loopback", c2s[i:i + 3])

    # ---------------- does RabbitMQ accept py-amqp's 'L' (big int) in queue arguments?
    c = amqp.Connection("127.0.0.1:%d" % port, heartbeat=0)
    c.connect()
    chan = c.channel()
    result = "accepted"
    try:
        chan.queue_declare("mb.bigttl", auto_delete=True, arguments={"x-message-ttl": 2**33})
        chan.queue_delete("mb.bigttl")
    except Exception as e:  # noqa: BLE001
        result = "rejected: %r" % (e,)
    try:
        c.close()
    except Exception:
        pass
    [rec] = proxy.take()
    c2s = split_frames(rec["c2s"], True)
    save("pyamqp_queue_declare_big_ttl_L", "queue.declare mb.bigttl arguments {x-message-ttl: L 2**33} from "
         "py-amqp 5.1.1, which writes ints beyond 32 bits with tag 'L'. RabbitMQ 3.10.8 " + result +
         " it. captured on loopback", [c2s[find_method(c2s, (50, 10))]])
    print("big ttl L:", result)


def run_more(proxy, port):
    """The methods the first pass does not use: bindings, purge, reject/nack/recover, tx, return."""
    import pika
    conn = pika.BlockingConnection(pika.ConnectionParameters(host="127.0.0.1", port=port, heartbeat=0))
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda c, method, props, body: returned.append(body))
    ch.exchange_declare("mb.src", "fanout")
    ch.exchange_declare("mb.dst", "topic", auto_delete=True)
    ch.exchange_bind("mb.dst", "mb.src", "rk.#", arguments={"x-note": "e2e"})
    ch.exchange_unbind("mb.dst", "mb.src", "rk.#", arguments={"x-note": "e2e"})
    ch.queue_declare("mb.q2", exclusive=True, arguments={"x-max-priority": 10, "x-queue-mode": "lazy"})
    ch.queue_bind("mb.q2", "mb.dst", "a.*.c", arguments={"x-extra": "v"})
    ch.queue_unbind("mb.q2", "mb.dst", "a.*.c", arguments={"x-extra": "v"})
    for b in (b"1", b"2", b"3"):
        ch.basic_publish("", "mb.q2", b)
    m1, _, _ = ch.basic_get("mb.q2")
    ch.basic_reject(m1.delivery_tag, requeue=False)
    m2, _, _ = ch.basic_get("mb.q2")
    ch.basic_nack(m2.delivery_tag, multiple=True, requeue=True)
    ch.basic_recover(requeue=True)
    ch.queue_purge("mb.q2")
    ch.basic_publish("mb.src", "no.route", b"returned", pika.BasicProperties(message_id="r1"), mandatory=True)
    conn.process_data_events(time_limit=1)
    assert returned == [b"returned"], returned
    ch.tx_select()
    ch.basic_publish("", "mb.q2", b"tx")
    ch.tx_commit()
    ch.tx_rollback()
    ch.queue_delete("mb.q2", if_unused=True, if_empty=False)
    ch.exchange_delete("mb.src", if_unused=True)
    ch.close()
    conn.close()
    [rec] = proxy.take()
    c2s = split_frames(rec["c2s"], True)
    s2c = split_frames(rec["s2c"], False)
    src = "pika 1.2.0 <-> RabbitMQ 3.10.8, captured on loopback"
    one = [
        ("pika_exchange_bind", c2s, (40, 30), "exchange.bind mb.dst <- mb.src rk.# {x-note: S e2e}"),
        ("rabbitmq_exchange_bind_ok", s2c, (40, 31), "exchange.bind-ok"),
        ("pika_exchange_unbind", c2s, (40, 40), "exchange.unbind mb.dst <- mb.src rk.# {x-note: S e2e}"),
        ("rabbitmq_exchange_unbind_ok", s2c, (40, 51), "exchange.unbind-ok (method 51, not 41)"),
        ("pika_queue_declare_priority", c2s, (50, 10), "queue.declare mb.q2 exclusive {x-max-priority: I 10, "
         "x-queue-mode: S lazy}"),
        ("pika_queue_bind_args", c2s, (50, 20), "queue.bind mb.q2 mb.dst a.*.c {x-extra: S v}"),
        ("pika_queue_unbind", c2s, (50, 50), "queue.unbind mb.q2 mb.dst a.*.c {x-extra: S v}"),
        ("rabbitmq_queue_unbind_ok", s2c, (50, 51), "queue.unbind-ok"),
        ("pika_basic_reject", c2s, (60, 90), "basic.reject delivery-tag 1 requeue=0"),
        ("pika_basic_nack", c2s, (60, 120), "basic.nack delivery-tag 2 multiple=1 requeue=1"),
        ("pika_basic_recover", c2s, (60, 110), "basic.recover requeue=1"),
        ("rabbitmq_basic_recover_ok", s2c, (60, 111), "basic.recover-ok"),
        ("pika_queue_purge", c2s, (50, 30), "queue.purge mb.q2"),
        ("rabbitmq_queue_purge_ok", s2c, (50, 31), "queue.purge-ok"),
        ("pika_tx_select", c2s, (90, 10), "tx.select"),
        ("rabbitmq_tx_select_ok", s2c, (90, 11), "tx.select-ok"),
        ("pika_tx_commit", c2s, (90, 20), "tx.commit"),
        ("rabbitmq_tx_commit_ok", s2c, (90, 21), "tx.commit-ok"),
        ("pika_tx_rollback", c2s, (90, 30), "tx.rollback"),
        ("rabbitmq_tx_rollback_ok", s2c, (90, 31), "tx.rollback-ok"),
        ("pika_queue_delete_if_unused", c2s, (50, 40), "queue.delete mb.q2 if-unused=1"),
        ("pika_exchange_delete", c2s, (40, 20), "exchange.delete mb.src if-unused=1"),
        ("rabbitmq_exchange_delete_ok", s2c, (40, 21), "exchange.delete-ok"),
        ("rabbitmq_channel_close_ok", s2c, (20, 41), "channel.close-ok"),
    ]
    for name, frames, cm, what in one:
        save(name, what + " from " + ("RabbitMQ. " if frames is s2c else "pika. ") + src,
             [frames[find_method(frames, cm)]])
    i = find_method(s2c, (60, 50))
    save("rabbitmq_basic_return", "basic.return 312 NO_ROUTE mb.src/no.route + header (message-id r1) + body "
         "'returned', from RabbitMQ. " + src, s2c[i:i + 3])


if __name__ == "__main__":
    main()
