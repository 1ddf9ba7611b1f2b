"""Helpers for test_durability.py: a minibroker that is stopped, killed and restarted on
the SAME data directory and port several times within one test, plus message helpers.

    b = DurableBroker(tmp_path)       # data dir tmp_path/data, log tmp_path/broker.log
    b.start()                         # waits for a real AMQP handshake (minibroker_proc)
    b.sigterm()                       # clean stop; fails the test unless exit 0 within 20 s
    b.sigkill()                       # kill -9 of the process group, no flush
    b.restart()                       # start again on the same data dir and port
    b.cleanup()                       # SIGTERM/SIGKILL whatever is left (fixture teardown)

Every wait is bounded; every process is started in its own process group and killed by
that group id, never by name.
"""

import hashlib
import os
import select
import signal
import struct
import subprocess
import threading
import time

import pika

from minibroker_proc import MinibrokerProc, default_binary
from rabbitmq_node import free_port  # noqa: F401

START_TIMEOUT = 15.0     # start-up (recovery included) on 2 shared cores
SIGTERM_TIMEOUT = 20.0   # a clean stop flushes the store


class DurableBroker(MinibrokerProc):
    """A minibroker process bound to one data directory and one port for its whole life."""

    def __init__(self, base_dir, port=None, binary=None, extra_args=()):
        super().__init__(binary or default_binary(), port=port, base_dir=str(base_dir),
                         extra_args=extra_args)
        self.history = []   # what happened, for failure messages: "start", "SIGTERM rc=0", ...

    # ------------------------------------------------------------ lifecycle
    def start(self, timeout=START_TIMEOUT):
        t0 = time.monotonic()
        try:
            super().start(timeout=timeout)
        except RuntimeError as e:
            raise AssertionError("broker (re)start on the same data dir failed after %s:\n%s"
                                 % (self.history, e)) from None
        self.history.append("start(%.2fs)" % (time.monotonic() - t0))
        return self

    def sigterm(self, timeout=SIGTERM_TIMEOUT, expect_rc=0):
        """Clean stop: SIGTERM, wait for the exit. Fails unless it exits with expect_rc."""
        assert self.proc is not None, "sigterm(): broker not running"
        if self.proc.poll() is not None:
            rc = self.proc.returncode
            self.proc = None
            raise AssertionError("broker had already exited (rc=%s) before SIGTERM\n%s"
                                 % (rc, self.tail(40)))
        t0 = time.monotonic()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_group()
            raise AssertionError("broker did not exit within %.0fs of SIGTERM\n%s"
                                 % (timeout, self.tail(40)))
        self._kill_group()
        self.history.append("SIGTERM rc=%s (%.2fs)" % (rc, time.monotonic() - t0))
        if expect_rc is not None and rc != expect_rc:
            raise AssertionError("broker exited with rc=%s on SIGTERM, expected %s "
                                 "(negative = killed by that signal)\n%s"
                                 % (rc, expect_rc, self.tail(40)))
        return rc

    def sigkill(self):
        """Crash: SIGKILL to the whole process group, nothing gets flushed."""
        assert self.proc is not None, "sigkill(): broker not running"
        rc = self._kill_group()
        self.history.append("SIGKILL rc=%s" % rc)
        return rc

    def restart(self, timeout=START_TIMEOUT):
        if self.alive():
            self.sigterm()
        else:
            self.proc = None
        return self.start(timeout=timeout)

    def _kill_group(self):
        p = self.proc
        if p is None:
            return None
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None
        return p.returncode

    # ------------------------------------------------------------ clients
    def params(self, **kw):
        p = dict(host=self.host, port=self.port,
                 credentials=pika.PlainCredentials("guest", "guest"),
                 connection_attempts=1, socket_timeout=5, stack_timeout=10,
                 blocked_connection_timeout=15)
        p.update(kw)
        return pika.ConnectionParameters(**p)

    def connect(self, **kw):
        return pika.BlockingConnection(self.params(**kw))


def run_expect_exit(data_dir, port=None, timeout=10.0, binary=None, log_path=None):
    """Run a broker that is expected to refuse to start. Returns (rc, output, seconds).

    rc is None when it was still running after `timeout` (it is then killed)."""
    binary = binary or default_binary()
    port = port or free_port()
    t0 = time.monotonic()
    p = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--http-port", "0", "--data-dir", str(data_dir),
         "--loglevel", "info"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        out, _ = p.communicate(timeout=10)
        rc = None
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)   # nothing of its group may survive
        except (ProcessLookupError, PermissionError):
            pass
    text = out.decode("utf-8", "replace")
    if log_path:
        with open(log_path, "a") as f:
            f.write(text)
    return rc, text, time.monotonic() - t0


# ---------------------------------------------------------------- message bodies
def _payload(pub, n):
    size = 40 + (n * 37 + pub * 101) % 900
    seed = hashlib.sha256(b"%d/%d" % (pub, n)).digest()
    return (seed * (size // len(seed) + 1))[:size]


def make_body(pub, n):
    """b"<pub>:<n>:<payload>:<sha256 prefix>" -- self-checking, varied sizes."""
    head = b"%d:%010d:" % (pub, n)
    payload = _payload(pub, n)
    return head + payload + b":" + hashlib.sha256(head + payload).hexdigest()[:32].encode()


def parse_body(body):
    """(pub, n) of a make_body body; ValueError when it is corrupted."""
    try:
        pub_s, n_s, rest = body.split(b":", 2)
        payload, digest = rest.rsplit(b":", 1)
        pub, n = int(pub_s), int(n_s)
    except ValueError:
        raise ValueError("unparsable body %r" % body[:60])
    head = b"%d:%010d:" % (pub, n)
    if hashlib.sha256(head + payload).hexdigest()[:32].encode() != digest:
        raise ValueError("checksum mismatch in message %d/%d" % (pub, n))
    if payload != _payload(pub, n):
        raise ValueError("payload differs in message %d/%d" % (pub, n))
    return pub, n


# ---------------------------------------------------------------- consuming
def consume_n(conn, ch, queue, n, timeout=20.0, linger=0.3, auto_ack=False):
    """Consume until n deliveries arrived (bounded by timeout), then `linger` more seconds
    to catch extras. Returns [(method, properties, body)] in delivery order; the consumer
    is cancelled, unacked deliveries stay unacked on `ch`."""
    got = []

    def cb(_ch, method, props, body):
        got.append((method, props, body))

    tag = ch.basic_consume(queue, cb, auto_ack=auto_ack)
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    end = time.monotonic() + linger
    while time.monotonic() < end:
        conn.process_data_events(time_limit=0.05)
    ch.basic_cancel(tag)
    return got


def queue_count(conn, queue):
    """message_count of a passive declare on a fresh channel (404 -> AssertionError)."""
    ch = conn.channel()
    try:
        return ch.queue_declare(queue, passive=True).method.message_count
    except pika.exceptions.ChannelClosedByBroker as e:
        raise AssertionError("durable queue %r: passive declare failed with %s %s (lost "
                             "across the restart?)" % (queue, e.reply_code, e.reply_text)) from None
    finally:
        if ch.is_open:
            ch.close()


def summarize(nums, limit=12):
    """Compact text for a list of ints in failure messages."""
    nums = list(nums)
    if len(nums) <= limit:
        return str(nums)
    return "%s ... %s (%d in all)" % (nums[:limit // 2], nums[-limit // 2:], len(nums))


# ---------------------------------------------------------------- pipelined publisher
class PipelinedPublisher(threading.Thread):
    """Publishes make_body(pub, n), n = start, start+1, ... persistent, on a raw AMQP
    connection in confirm mode with up to `window` publishes in flight (many messages per
    group commit; a kill catches many unconfirmed ones). Runs until the connection fails.

    confirmed: set of numbers the broker acked (basic.ack, multiple honoured);
    nacked: numbers it nacked; attempted: highest number sent."""

    def __init__(self, broker, queue, pub, start, window=200, rate=1500):
        super().__init__(daemon=True)
        self.host, self.port = broker.host, broker.port
        self.queue, self.pub, self.start_n, self.window = queue, pub, start, window
        self.rate = rate    # messages/s at most: the queue accumulates over the rounds
        self.confirmed, self.nacked = set(), set()
        self.attempted = start - 1
        self.error = None
        self.error_at = None
        self.ready = threading.Event()

    def run(self):
        from amqp_raw import RawAMQP, method_frame, content_header, body_frame, shortstr
        try:
            c = RawAMQP(self.host, self.port, timeout=5)
            c.handshake(heartbeat=0)
            c.open_channel(1)
            c.send(method_frame(1, 85, 10, b"\x00"))     # confirm.select
            c.expect((85, 11))
        except Exception as e:
            self.error, self.error_at = e, time.monotonic()
            self.ready.set()
            return
        self.ready.set()
        pending = {}      # delivery tag -> number, in tag order
        tag = 0
        n = self.start_n
        publish_head = (struct.pack(">H", 0) + shortstr("") + shortstr(self.queue) + b"\x00")
        t0 = time.monotonic()
        try:
            while True:
                chunks = []
                budget = int(self.rate * (time.monotonic() - t0)) + 50 - (n - self.start_n)
                while len(pending) < self.window and len(chunks) < min(50, budget):
                    body = make_body(self.pub, n)
                    chunks.append(method_frame(1, 60, 40, publish_head)
                                  + content_header(1, len(body), flags=0x1000, props=b"\x02")
                                  + body_frame(1, body))
                    tag += 1
                    pending[tag] = n
                    self.attempted = n
                    n += 1
                if chunks:
                    c.send(b"".join(chunks))
                r, _, _ = select.select([c.sock], [], [], 0.01 if not chunks else 0)
                if not r:
                    continue
                data = c.sock.recv(65536)
                if not data:
                    raise ConnectionError("broker closed the connection")
                c.buf += data
                while len(c.buf) >= 7:
                    ftype, ch, size = struct.unpack(">BHI", c.buf[:7])
                    if len(c.buf) < 8 + size:
                        break
                    payload = c.buf[7:7 + size]
                    c.buf = c.buf[8 + size:]
                    if ftype != 1:
                        continue
                    cls, meth = struct.unpack(">HH", payload[:4])
                    if (cls, meth) in ((60, 80), (60, 120)):     # basic.ack / basic.nack
                        dtag, bits = struct.unpack(">QB", payload[4:13])
                        into = self.confirmed if meth == 80 else self.nacked
                        if bits & 1:
                            for t in [t for t in pending if t <= dtag]:
                                into.add(pending.pop(t))
                        elif dtag in pending:
                            into.add(pending.pop(dtag))
                    elif (cls, meth) in ((10, 50), (20, 40)):
                        raise ConnectionError("broker closed: %r" % payload[:80])
        except Exception as e:
            self.error, self.error_at = e, time.monotonic()
        finally:
            c.close()

    def confirmed_set(self):
        return set(self.confirmed)
