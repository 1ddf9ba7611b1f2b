#!/usr/bin/python3
"""Builds the libFuzzer seed corpus from the golden captures in tests/data/frames.

corpus/frame/: each capture whole (several frames in one buffer) and each frame alone.
corpus/table/: every field table found in the captures (server/client properties,
method arguments, message headers), plus one table holding every field type.
corpus/connection/: what a client sends after the handshake (connection_fuzz sends
the handshake itself): channel.open then each client capture, and one whole session
of them in a plausible order.
File names are content hashes, as libFuzzer names its own finds. Re-run after
adding captures:  /usr/bin/python3 tests/fuzz/make_corpus.py
"""
import glob
import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
FRAMES = os.path.join(HERE, "..", "data", "frames")


def load_hex(path):
    hexdigits = "".join(line.strip() for line in open(path) if not line.startswith("#"))
    return bytes.fromhex(hexdigits)


def split_frames(data):
    pos = 0
    while pos + 8 <= len(data):
        _, _, size = struct.unpack_from(">BHI", data, pos)
        yield data[pos:pos + 8 + size]
        pos += 8 + size


def shortstr_end(p, pos):
    return pos + 1 + p[pos]


def table_at(p, pos):
    (n,) = struct.unpack_from(">I", p, pos)
    return p[pos:pos + 4 + n]


def tables_in_method(p):
    cm = struct.unpack_from(">HH", p, 0)
    if cm == (10, 10):  # connection.start: version, server-properties
        return [table_at(p, 6)]
    if cm == (10, 11):  # connection.start-ok: client-properties
        return [table_at(p, 4)]
    if cm == (50, 10):  # queue.declare: reserved, queue, bits, arguments
        return [table_at(p, shortstr_end(p, 6) + 1)]
    if cm in ((50, 20), (40, 30), (40, 40)):  # queue.bind, exchange.bind/unbind: 3 shortstr, bits
        pos = shortstr_end(p, shortstr_end(p, shortstr_end(p, 6)))
        return [table_at(p, pos + 1)]
    if cm in ((40, 10), (60, 20)):  # exchange.declare, basic.consume: 2 shortstr, bits
        return [table_at(p, shortstr_end(p, shortstr_end(p, 6)) + 1)]
    return []


def headers_in_content_header(p):
    props = p[12:]
    (flags,) = struct.unpack_from(">H", props, 0)
    pos = 2
    if flags & 0x8000:
        pos = shortstr_end(props, pos)
    if flags & 0x4000:
        pos = shortstr_end(props, pos)
    return [table_at(props, pos)] if flags & 0x2000 else []


def every_type_table():
    def entry(name, tag, value):
        return bytes([len(name)]) + name + tag + value
    items = [
        entry(b"t", b"t", b"\x01"), entry(b"b", b"b", b"\xfe"), entry(b"B", b"B", b"\xc8"),
        entry(b"s", b"s", b"\xfe\xd4"), entry(b"u", b"u", b"\xfd\xe8"),
        entry(b"I", b"I", struct.pack(">i", -70000)), entry(b"i", b"i", struct.pack(">I", 4000000000)),
        entry(b"l", b"l", struct.pack(">q", -2)), entry(b"L", b"L", struct.pack(">q", 2 ** 33)),
        entry(b"f", b"f", struct.pack(">f", 1.5)), entry(b"d", b"d", struct.pack(">d", 0.5)),
        entry(b"D", b"D", struct.pack(">Bi", 3, -12345)), entry(b"S", b"S", struct.pack(">I", 2) + b"ab"),
        entry(b"x", b"x", struct.pack(">I", 3) + b"\x00\x01\xff"), entry(b"T", b"T", struct.pack(">Q", 1795721480)),
        entry(b"V", b"V", b""), entry(b"A", b"A", struct.pack(">I", 3) + b"t\x01V"),
        entry(b"F", b"F", struct.pack(">I", 7) + b"\x01kI\x00\x00\x00\x01"),
    ]
    body = b"".join(items)
    return struct.pack(">I", len(body)) + body


def write(dirname, blob):
    os.makedirs(dirname, exist_ok=True)
    name = hashlib.sha1(blob).hexdigest()
    with open(os.path.join(dirname, name), "wb") as f:
        f.write(blob)


# Client captures in the order a session would send them (handshake ones excluded).
SESSION = ["pika_exchange_declare", "pika_queue_declare_priority", "pika_queue_declare_ttl",
           "pyamqp_queue_declare_x_expires", "pika_queue_bind", "pika_queue_bind_args", "pika_exchange_bind",
           "pika_basic_qos", "pika_confirm_select", "pika_publish_all_properties", "celery_send_task",
           "pyamqp_celery_publish_3_body_frames", "pika_basic_consume", "pika_basic_ack", "pika_basic_nack",
           "pika_basic_reject", "pika_basic_recover", "pika_basic_cancel", "pika_queue_unbind",
           "pika_exchange_unbind", "pika_queue_purge", "pika_queue_delete_if_unused", "pika_queue_delete",
           "pika_exchange_delete", "pika_channel_close", "pika_connection_close"]
HANDSHAKE = ("pika_connection_start_ok", "pika_connection_tune_ok", "pika_connection_tune_ok_4096",
             "pika_connection_open", "pyamqp_connection_start_ok")


def connection_seeds(conn_dir):
    def capture(name):
        return load_hex(os.path.join(FRAMES, name + ".hex"))
    channel_open = capture("pika_channel_open")
    client = [os.path.basename(p)[:-4] for p in glob.glob(os.path.join(FRAMES, "*.hex"))]
    client = [n for n in client if not n.startswith("rabbitmq_") and n not in HANDSHAKE]
    for name in sorted(client):
        data = capture(name)
        write(conn_dir, data if name == "pika_channel_open" else channel_open + data)
    write(conn_dir, channel_open + b"".join(capture(n) for n in SESSION))
    # tx: select, publish, commit, publish, rollback
    write(conn_dir, channel_open + capture("pika_queue_declare_ttl") + capture("pika_tx_select")
          + capture("pika_publish_all_properties") + capture("pika_tx_commit")
          + capture("pika_publish_all_properties") + capture("pika_tx_rollback"))


def main():
    frame_dir = os.path.join(HERE, "corpus", "frame")
    table_dir = os.path.join(HERE, "corpus", "table")
    conn_dir = os.path.join(HERE, "corpus", "connection")
    for d in (frame_dir, table_dir, conn_dir):
        for old in glob.glob(os.path.join(d, "*")):
            os.remove(old)
    for path in sorted(glob.glob(os.path.join(FRAMES, "*.hex"))):
        data = load_hex(path)
        write(frame_dir, data)
        for f in split_frames(data):
            if len(f) > 4096 + 8:
                continue  # big bodies add size, not coverage
            write(frame_dir, f)
            payload = f[7:-1]
            if f[0] == 1:
                for t in tables_in_method(payload):
                    write(table_dir, t)
            elif f[0] == 2:
                for t in headers_in_content_header(payload):
                    write(table_dir, t)
    write(table_dir, every_type_table())
    write(frame_dir, bytes([8, 0, 0, 0, 0, 0, 0, 0xCE]))  # heartbeat
    connection_seeds(conn_dir)
    print("frame seeds:", len(os.listdir(frame_dir)), "table seeds:", len(os.listdir(table_dir)),
          "connection seeds:", len(os.listdir(conn_dir)))


if __name__ == "__main__":
    main()
