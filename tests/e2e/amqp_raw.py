"""A tiny hand-rolled AMQP 0-9-1 client for protocol-abuse tests.

Speaks just enough of the protocol to do the handshake (connection.start-ok
with PLAIN, tune-ok, open), open channels, send arbitrary frames/bytes and
read frames back, decoding connection.close / channel.close.
"""

import socket
import struct
import time

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE

CONNECTION_CLOSE = (10, 50)
CONNECTION_CLOSE_OK = (10, 51)
CHANNEL_CLOSE = (20, 40)
CHANNEL_CLOSE_OK = (20, 41)


class Closed(Exception):
    """The peer closed the socket."""


# ---------------------------------------------------------------- encoding
def shortstr(s):
    if isinstance(s, str):
        s = s.encode()
    return struct.pack("B", len(s)) + s


def longstr(s):
    if isinstance(s, str):
        s = s.encode()
    return struct.pack(">I", len(s)) + s


def table(d):
    out = b""
    for k, v in (d or {}).items():
        out += shortstr(k)
        if isinstance(v, bool):
            out += b"t" + struct.pack("B", 1 if v else 0)
        elif isinstance(v, int):
            out += b"I" + struct.pack(">i", v)
        elif isinstance(v, dict):
            out += b"F" + table(v)
        else:
            out += b"S" + longstr(v)
    return struct.pack(">I", len(out)) + out


def frame(ftype, channel, payload, end=FRAME_END):
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + bytes([end])


def method_frame(channel, class_id, method_id, args=b""):
    return frame(FRAME_METHOD, channel, struct.pack(">HH", class_id, method_id) + args)


def content_header(channel, body_size, class_id=60, flags=0, props=b""):
    return frame(FRAME_HEADER, channel,
                 struct.pack(">HHQH", class_id, 0, body_size, flags) + props)


def body_frame(channel, data):
    return frame(FRAME_BODY, channel, data)


# ---------------------------------------------------------------- decoding
class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        b = self.data[self.pos:self.pos + n]
        if len(b) < n:
            raise ValueError("truncated")
        self.pos += n
        return b

    def octet(self):
        return self.take(1)[0]

    def short(self):
        return struct.unpack(">H", self.take(2))[0]

    def long(self):
        return struct.unpack(">I", self.take(4))[0]

    def shortstr(self):
        return self.take(self.octet()).decode("utf-8", "replace")

    def longstr(self):
        return self.take(self.long())


class Frame:
    def __init__(self, ftype, channel, payload):
        self.type, self.channel, self.payload = ftype, channel, payload
        self.method = None
        if ftype == FRAME_METHOD and len(payload) >= 4:
            self.method = struct.unpack(">HH", payload[:4])

    def args(self):
        return Reader(self.payload[4:])

    def close_info(self):
        """(reply_code, reply_text, class_id, method_id) of a connection/channel close."""
        r = self.args()
        return r.short(), r.shortstr(), r.short(), r.short()

    def __repr__(self):
        return "Frame(type=%d, ch=%d, method=%r, len=%d)" % (
            self.type, self.channel, self.method, len(self.payload))


class RawAMQP:
    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.frame_max = 131072
        self.server_properties = None

    # -- low level
    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed("peer closed after %d/%d bytes" % (len(self.buf), n))
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self):
        hdr = self.recv_exact(7)
        if hdr.startswith(b"AMQP"):
            # protocol header reply (8 bytes)
            rest = self.recv_exact(1)
            return hdr + rest
        ftype, ch, size = struct.unpack(">BHI", hdr)
        payload = self.recv_exact(size)
        end = self.recv_exact(1)
        if end[0] != FRAME_END:
            raise ValueError("bad frame end from server: %r" % end)
        return Frame(ftype, ch, payload)

    def read_method(self, skip_heartbeats=True):
        while True:
            f = self.read_frame()
            if isinstance(f, bytes):
                return f
            if f.type == FRAME_HEARTBEAT and skip_heartbeats:
                continue
            return f

    def expect(self, method):
        f = self.read_method()
        if not isinstance(f, Frame) or f.method != method:
            if isinstance(f, Frame) and f.method in (CONNECTION_CLOSE, CHANNEL_CLOSE):
                raise AssertionError("expected %r, got close %r" % (method, f.close_info()))
            raise AssertionError("expected %r, got %r" % (method, f))
        return f

    def wait_closed(self, timeout=5.0):
        """Read until the socket closes; return True if it closed within timeout."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.05, deadline - time.monotonic()))
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        return False

    def read_close(self, timeout=5.0):
        """Read frames until a connection.close or channel.close (or socket EOF).

        Returns the Frame of the close, or None when the socket closed without one.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("no close within %.1fs" % timeout)
            self.sock.settimeout(remaining)
            try:
                f = self.read_frame()
            except (Closed, ConnectionResetError, BrokenPipeError):
                return None
            except socket.timeout:
                raise AssertionError("no connection.close/channel.close within %.1fs" % timeout)
            if isinstance(f, Frame) and f.method in (CONNECTION_CLOSE, CHANNEL_CLOSE):
                return f

    # -- protocol steps
    def handshake(self, user="guest", password="guest", vhost="/", heartbeat=0, frame_max=None):
        self.send(PROTOCOL_HEADER)
        start = self.expect((10, 10))
        r = start.args()
        r.octet(); r.octet()
        self.server_properties = r.longstr()
        mechanisms = r.longstr()
        assert b"PLAIN" in mechanisms.split(), mechanisms
        response = b"\x00" + user.encode() + b"\x00" + password.encode()
        self.send(method_frame(0, 10, 11,
                               table({"product": "e2e-raw"}) + shortstr("PLAIN")
                               + longstr(response) + shortstr("en_US")))
        tune = self.expect((10, 30))
        r = tune.args()
        channel_max, server_frame_max, _server_hb = r.short(), r.long(), r.short()
        if frame_max is None:
            frame_max = server_frame_max
        self.frame_max = frame_max or 131072
        self.send(method_frame(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, heartbeat)))
        self.send(method_frame(0, 10, 40, shortstr(vhost) + shortstr("") + b"\x00"))
        self.expect((10, 41))
        return self

    def open_channel(self, ch):
        self.send(method_frame(ch, 20, 10, shortstr("")))
        return self.expect((20, 11))

    def queue_declare(self, ch, name, exclusive=False, auto_delete=False):
        bits = (4 if exclusive else 0) | (8 if auto_delete else 0)
        self.send(method_frame(ch, 50, 10, struct.pack(">H", 0) + shortstr(name)
                               + bytes([bits]) + table({})))
        return self.expect((50, 11))

    def publish(self, ch, exchange, routing_key, body):
        self.send(method_frame(ch, 60, 40, struct.pack(">H", 0) + shortstr(exchange)
                               + shortstr(routing_key) + b"\x00"))
        self.send(content_header(ch, len(body)))
        if body:
            self.send(body_frame(ch, body))

    def close_connection(self):
        self.send(method_frame(0, 10, 50, struct.pack(">H", 200) + shortstr("bye")
                               + struct.pack(">HH", 0, 0)))
        try:
            self.expect(CONNECTION_CLOSE_OK)
        except Closed:
            pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- field tables (typed)
_FIXED = {b"t": 1, b"b": 1, b"B": 1, b"s": 2, b"u": 2, b"I": 4, b"i": 4, b"l": 8, b"L": 8,
          b"f": 4, b"d": 8, b"D": 5, b"T": 8, b"V": 0}


def parse_table_typed(data):
    """Decode a field table body (without its length) to [(key, type_tag, value)].

    Values stay raw bytes, except nested tables (lists again) and arrays
    ([(type_tag, value)]), so tests can check the wire type of every field.
    """
    rd = Reader(data)
    out = []
    while rd.pos < len(data):
        k = rd.shortstr()
        t = rd.take(1)
        out.append((k, t, _parse_value(rd, t)))
    return out


def _parse_value(rd, t):
    if t in (b"S", b"x"):
        return rd.longstr()
    if t == b"F":
        return parse_table_typed(rd.take(rd.long()))
    if t == b"A":
        d = rd.take(rd.long())
        r2, arr = Reader(d), []
        while r2.pos < len(d):
            tt = r2.take(1)
            arr.append((tt, _parse_value(r2, tt)))
        return arr
    if t not in _FIXED:
        raise ValueError("unknown field type %r" % t)
    return rd.take(_FIXED[t])
