"""Durability end to end (issue 3, "Tests (in CI)"): real pika clients against minibroker
processes of their own, stopped (SIGTERM), crashed (SIGKILL) and restarted on the SAME
data directory (pytest's tmp_path) and port.

Concerns (all pass against the build of commit 0deb33e, 2026-11-26):
- [x] restart keeps durable exchanges, queues (with arguments) and bindings; non-durable and
      exclusive ones are gone
- [x] persistent messages survive a clean restart, in order, bodies and properties intact;
      transient ones do not
- [x] SIGKILL at random moments while publishing with confirms (two pika publishers, one
      at a time, and one raw publisher with 200 confirms outstanding): every confirmed
      message is there, in order, uncorrupted, no duplicates (5 rounds, accumulating)
- [x] acked messages do not come back after a clean restart; redelivered only if delivered
- [x] delivered-but-unacked messages come back first, redelivered, after SIGKILL
- [x] x-delayed-message: delayed messages survive a restart and arrive when due
- [x] a second broker on the same data dir exits at once with a clear message
- [x] a data dir RocksDB cannot open: clear error, non-zero exit, no crash
- [x] x-delivery-limit: the delivery count survives restarts, redeliveries carry
      x-delivery-count, and the message is dead-lettered with reason delivery_limit
- [x] paging (a 16-message window): a 10,000-message backlog with transient ones mixed in is
      counted whole, survives a restart midway through the drain in order, unacked ones
      redelivered, transient ones gone

All minibroker_only: they run minibroker binaries of their own on one data dir.
Set MB_E2E_SEED to replay the random kill moments of test_crash_loses_no_confirmed_message
and MB_E2E_CRASH_ROUNDS to change its number of rounds (5).
"""

import os
import random
import threading
import time

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from durability_util import (DurableBroker, PipelinedPublisher, consume_n, make_body,
                             parse_body, queue_count, run_expect_exit, summarize, free_port)

pytestmark = pytest.mark.minibroker_only

PERSISTENT = 2
TRANSIENT = 1


# ---------------------------------------------------------------- fixtures / helpers
@pytest.fixture
def dbroker(tmp_path):
    b = DurableBroker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.cleanup()
        # shown by pytest only when the test failed
        print("\n--- broker history:", b.history)
        print(b.tail(60))


def _close(conn):
    try:
        if conn is not None and conn.is_open:
            conn.close()
    except Exception:
        pass


def _channel_error(conn, fn):
    """Run fn(new channel). Returns None if it succeeded, else (code, text) of the close."""
    ch = conn.channel()
    try:
        fn(ch)
    except ChannelClosedByBroker as e:
        return (e.reply_code, e.reply_text)
    if ch.is_open:
        ch.close()
    return None


def _publish_confirmed(ch, exchange, rk, body, props, mandatory=True):
    try:
        ch.basic_publish(exchange, rk, body, properties=props, mandatory=mandatory)
    except pika.exceptions.UnroutableError:
        raise AssertionError("publish to %r/%r came back unroutable" % (exchange, rk))
    except pika.exceptions.NackError:
        raise AssertionError("publish to %r/%r was nacked by the broker" % (exchange, rk))


# ---------------------------------------------------------------- 1. entities
QARGS = {"x-message-ttl": 600000, "x-max-length": 1000,
         "x-dead-letter-exchange": "dur1.dlx"}


def test_restart_keeps_durable_entities(dbroker):
    b = dbroker
    conn = b.connect()
    ch = conn.channel()
    ch.exchange_declare("dur1.x", "direct", durable=True)
    ch.exchange_declare("dur1.dlx", "fanout", durable=True)
    ch.queue_declare("dur1.q", durable=True, arguments=dict(QARGS))
    ch.queue_bind("dur1.q", "dur1.x", routing_key="rk")
    ch.exchange_declare("tmp1.x", "direct", durable=False)
    ch.queue_declare("tmp1.q", durable=False)
    ch.queue_bind("tmp1.q", "dur1.x", routing_key="rk")     # durable x -> transient q
    ch.queue_bind("dur1.q", "tmp1.x", routing_key="rk2")    # transient x -> durable q
    ch.queue_declare("excl1.q", durable=True, exclusive=True)
    b.sigterm()
    b.start()

    conn = b.connect()
    try:
        problems = []
        for name, kind in (("dur1.x", "direct"), ("dur1.dlx", "fanout")):
            err = _channel_error(conn, lambda c: c.exchange_declare(name, passive=True))
            if err:
                problems.append("durable exchange %s: passive declare after restart gave %s, "
                                "expected it to exist" % (name, err))
                continue
            err = _channel_error(conn, lambda c: c.exchange_declare(name, kind, durable=True))
            if err:
                problems.append("durable exchange %s: redeclare as %s/durable gave %s, "
                                "expected OK (type or durability not kept?)" % (name, kind, err))
        other = "topic"
        err = None if problems else _channel_error(
            conn, lambda c: c.exchange_declare("dur1.x", other, durable=True))
        if not problems and (err is None or err[0] != 406):
            problems.append("durable exchange dur1.x (direct): redeclare as %s gave %s, "
                            "expected 406 (type not kept?)" % (other, err or "OK"))

        err = _channel_error(conn, lambda c: c.queue_declare("dur1.q", passive=True))
        if err:
            problems.append("durable queue dur1.q: passive declare after restart gave %s, "
                            "expected it to exist" % (err,))
        else:
            err = _channel_error(conn, lambda c: c.queue_declare(
                "dur1.q", durable=True, arguments=dict(QARGS)))
            if err:
                problems.append("durable queue dur1.q: redeclare with the same arguments %s "
                                "gave %s, expected OK" % (QARGS, err))
            for key, val in (("x-message-ttl", 1000), ("x-max-length", 5),
                             ("x-dead-letter-exchange", "elsewhere")):
                args = dict(QARGS)
                args[key] = val
                err = _channel_error(conn, lambda c: c.queue_declare(
                    "dur1.q", durable=True, arguments=args))
                if err is None or err[0] != 406:
                    problems.append("durable queue dur1.q: redeclare with %s=%r (was %r) gave "
                                    "%s, expected 406 PRECONDITION_FAILED (argument not kept "
                                    "across the restart?)" % (key, val, QARGS[key], err or "OK"))

            # the binding dur1.x -rk-> dur1.q routes
            ch = conn.channel()
            ch.confirm_delivery()
            try:
                ch.basic_publish("dur1.x", "rk", b"after-restart",
                                 properties=pika.BasicProperties(delivery_mode=PERSISTENT),
                                 mandatory=True)
                m, _, body = ch.basic_get("dur1.q", auto_ack=True)
                if m is None or body != b"after-restart":
                    problems.append("binding dur1.x -rk-> dur1.q: published message not in "
                                    "dur1.q after restart (basic_get gave %r)" % (body,))
            except pika.exceptions.UnroutableError:
                problems.append("binding dur1.x -rk-> dur1.q lost across the restart: a "
                                "mandatory publish to dur1.x with key rk was returned")
            finally:
                if ch.is_open:
                    ch.close()

        for what, fn in (("non-durable exchange tmp1.x",
                          lambda c: c.exchange_declare("tmp1.x", passive=True)),
                         ("non-durable queue tmp1.q",
                          lambda c: c.queue_declare("tmp1.q", passive=True)),
                         ("exclusive queue excl1.q",
                          lambda c: c.queue_declare("excl1.q", passive=True))):
            err = _channel_error(conn, fn)
            if err is None or err[0] != 404:
                problems.append("%s: passive declare after restart gave %s, expected 404 "
                                "(it must not be kept)" % (what, err or "OK (still there)"))
        assert not problems, "after a SIGTERM + restart:\n  " + "\n  ".join(problems)
    finally:
        _close(conn)


# ---------------------------------------------------------------- 2. clean restart
def test_persistent_messages_survive_clean_restart(dbroker):
    b = dbroker
    q = "dur2.q"
    conn = b.connect()
    ch = conn.channel()
    ch.queue_declare(q, durable=True)
    ch.confirm_delivery()
    persistent = []
    for i in range(1100):
        if i % 11 == 10:   # 100 transient ones, interleaved
            _publish_confirmed(ch, "", q, b"transient-%04d" % i,
                               pika.BasicProperties(delivery_mode=TRANSIENT))
        else:
            k = len(persistent)
            body = b"persistent-%04d-" % k + make_body(0, k)
            persistent.append(body)
            _publish_confirmed(ch, "", q, body, pika.BasicProperties(
                delivery_mode=PERSISTENT, message_id="m%d" % k, content_type="application/x-test",
                correlation_id="c%d" % k, priority=3, headers={"seq": k, "who": "test2"}))
    assert len(persistent) == 1000
    before = queue_count(conn, q)
    assert before == 1100, "before restart the queue holds %d messages, expected 1100" % before
    _close(conn)

    b.sigterm()
    b.start()
    conn = b.connect()
    try:
        after = queue_count(conn, q)
        ch = conn.channel()
        got = consume_n(conn, ch, q, 1000, timeout=20)
        bodies = [g[2] for g in got]
        transient = [x for x in bodies if x.startswith(b"transient-")]
        assert not transient, ("%d transient messages came back after a restart, expected none: %s"
                               % (len(transient), [x[:14] for x in transient[:5]]))
        assert len(bodies) == 1000, (
            "after a clean restart %d messages were delivered (passive declare said %d), "
            "expected exactly the 1000 persistent ones; missing: %s"
            % (len(bodies), after, summarize(i for i, x in enumerate(persistent)
                                              if x not in set(bodies))))
        for k, (m, props, body) in enumerate(got):
            if body != persistent[k]:
                pos = persistent.index(body) if body in persistent else None
                raise AssertionError("message %d after restart: expected persistent #%d, got %s"
                                     % (k, k, "persistent #%s (order not kept)" % pos
                                        if pos is not None else "a corrupted body %r" % body[:40]))
            want = ("m%d" % k, "c%d" % k, "application/x-test", PERSISTENT, 3)
            have = (props.message_id, props.correlation_id, props.content_type,
                    props.delivery_mode, props.priority)
            assert have == want and (props.headers or {}).get("seq") == k, (
                "message %d after restart: properties (message_id, correlation_id, content_type, "
                "delivery_mode, priority) = %r headers=%r, expected %r headers seq=%d"
                % (k, have, props.headers, want, k))
        assert after == 1000, "passive declare after restart counts %d, expected 1000" % after
    finally:
        _close(conn)


# ---------------------------------------------------------------- 3. crash
class _Publisher(threading.Thread):
    """Publishes make_body(pub, n), n = start, start+1, ... with confirms until it fails.
    confirmed = highest n whose basic_publish returned (all below it too: one at a time)."""

    def __init__(self, broker, queue, pub, start):
        super().__init__(daemon=True)
        self.params = broker.params(socket_timeout=3, stack_timeout=5)
        self.queue, self.pub, self.start_n = queue, pub, start
        self.confirmed = start - 1
        self.attempted = start - 1
        self.error = None
        self.error_at = None
        self.ready = threading.Event()

    def run(self):
        try:
            conn = pika.BlockingConnection(self.params)
            ch = conn.channel()
            ch.confirm_delivery()
        except Exception as e:
            self.error, self.error_at = e, time.monotonic()
            self.ready.set()
            return
        self.ready.set()
        props = pika.BasicProperties(delivery_mode=PERSISTENT)
        n = self.start_n
        while True:
            self.attempted = n
            try:
                ch.basic_publish("", self.queue, make_body(self.pub, n), properties=props,
                                 mandatory=True)
            except Exception as e:
                self.error, self.error_at = e, time.monotonic()
                break
            self.confirmed = n
            n += 1
        _close(conn)

    def confirmed_set(self):
        return set(range(self.start_n, self.confirmed + 1))


@pytest.mark.timeout(100)
def test_crash_loses_no_confirmed_message(dbroker):
    b = dbroker
    q = "dur3.q"
    rounds = int(os.environ.get("MB_E2E_CRASH_ROUNDS", "5"))
    seed = int(os.environ.get("MB_E2E_SEED", str(int(time.time() * 1000) % 1000000)))
    rng = random.Random(seed)
    # one kill moment per slice of 0.2..1.5 s, in random order
    delays = [0.2 + 1.3 * (i + rng.random()) / rounds for i in range(rounds)]
    rng.shuffle(delays)
    ctx = "seed=%d (MB_E2E_SEED to replay)" % seed

    conn = b.connect()
    conn.channel().queue_declare(q, durable=True)
    _close(conn)

    # publishers 0, 1: pika, one publish at a time (confirm_delivery); publisher 2: raw AMQP
    # with up to 200 confirms outstanding. Concurrent confirms share group commits.
    npub = 3
    next_n = [1] * npub            # next number per publisher (numbers only grow)
    survivors = {p: [] for p in range(npub)}   # seen after the last restart: must stay
    total_confirmed = 0
    log = []
    for r, delay in enumerate(delays):
        pubs = [_Publisher(b, q, p, next_n[p]) for p in range(npub - 1)]
        pubs.append(PipelinedPublisher(b, q, npub - 1, next_n[npub - 1], window=200))
        for p in pubs:
            p.start()
        for p in pubs:
            assert p.ready.wait(10), "round %d: publisher %d did not connect within 10 s" % (r, p.pub)
            assert p.error is None, "round %d: publisher %d could not connect: %r" % (r, p.pub, p.error)
        time.sleep(delay)
        kill_at = time.monotonic()
        b.sigkill()
        for p in pubs:
            p.join(10)
            assert not p.is_alive(), ("round %d: publisher %d still blocked 10 s after the "
                                      "broker was SIGKILLed" % (r, p.pub))
            assert p.error is not None and p.error_at >= kill_at - 0.05, (
                "round %d: publisher %d failed before the kill (%.2fs before): %r -- %s"
                % (r, p.pub, kill_at - (p.error_at or kill_at), p.error, ctx))
        b.start()

        conn = b.connect()
        try:
            count = queue_count(conn, q)
            ch = conn.channel()
            got = consume_n(conn, ch, q, count, timeout=20, linger=0.3)
            seen = {p: [] for p in range(npub)}
            corrupt = []
            for m, props, body in got:
                try:
                    pub, n = parse_body(body)
                except ValueError as e:
                    corrupt.append(str(e))
                    continue
                seen.setdefault(pub, []).append(n)
            assert not corrupt, "round %d: corrupted messages after SIGKILL + restart: %s -- %s" % (
                r, corrupt[:5], ctx)
            assert len(got) == count, ("round %d: passive declare counted %d messages but %d "
                                       "were delivered -- %s" % (r, count, len(got), ctx))
            for p in pubs:
                nums = seen.get(p.pub, [])
                dup_or_disorder = [(a, c) for a, c in zip(nums, nums[1:]) if c <= a]
                assert not dup_or_disorder, (
                    "round %d publisher %d: messages out of order or duplicated (pairs %s) -- %s"
                    % (r, p.pub, dup_or_disorder[:5], ctx))
                have = set(nums)
                confirmed = p.confirmed_set()
                nacked = sorted(getattr(p, "nacked", ()))
                assert not nacked, ("round %d publisher %d: the broker nacked %s (no disk "
                                    "trouble here) -- %s" % (r, p.pub, summarize(nacked), ctx))
                must = set(survivors[p.pub]) | confirmed
                missing = sorted(must - have)
                lost_old = sorted(set(survivors[p.pub]) - have)
                assert not missing, (
                    "round %d (SIGKILL %.2fs after publishing began) publisher %d: %d confirmed "
                    "messages missing after restart: %s (this round sent %d..%d, %d confirmed; "
                    "survivors of earlier rounds that vanished: %s) -- %s"
                    % (r, delay, p.pub, len(missing), summarize(missing), p.start_n,
                       p.attempted, len(confirmed), summarize(lost_old), ctx))
                allowed = must | set(range(p.start_n, p.attempted + 1))
                phantom = sorted(have - allowed)
                assert not phantom, (
                    "round %d publisher %d: messages that were never published (or were "
                    "dropped earlier) appeared: %s -- %s" % (r, p.pub, summarize(phantom), ctx))
                survivors[p.pub] = nums
                total_confirmed += len(confirmed)
                unconf = set(range(p.start_n, p.attempted + 1)) - confirmed
                log.append("r%d p%d sent %d..%d, %d confirmed, %d unconfirmed of which kept %d"
                           % (r, p.pub, p.start_n, p.attempted, len(confirmed), len(unconf),
                              len(have & unconf)))
                next_n[p.pub] = p.attempted + 1
        finally:
            _close(conn)   # unacked deliveries go back to the queue, still persistent
    print("crash rounds (%s):\n  %s" % (ctx, "\n  ".join(log)))
    assert total_confirmed > 0, ("no message was confirmed in %d rounds (kill delays %s): the "
                                 "test proved nothing -- %s" % (rounds, delays, ctx))


# ---------------------------------------------------------------- 4. acks are durable
def test_acked_messages_do_not_come_back(dbroker):
    b = dbroker
    q = "dur4.q"
    N = 200
    conn = b.connect()
    ch = conn.channel()
    ch.queue_declare(q, durable=True)
    ch.confirm_delivery()
    for i in range(N):
        _publish_confirmed(ch, "", q, b"m4-%04d" % i, pika.BasicProperties(delivery_mode=PERSISTENT))
    cch = conn.channel()
    cch.basic_qos(prefetch_count=150)
    got = consume_n(conn, cch, q, 150, timeout=10, linger=0.2)
    assert [g[2] for g in got] == [b"m4-%04d" % i for i in range(150)], (
        "before restart: expected the first 150 messages in order, got %d: %s"
        % (len(got), [g[2] for g in got[:5]]))
    for m, _, _ in got[:50]:                   # 0..49 one by one
        cch.basic_ack(m.delivery_tag)
    cch.basic_ack(got[99][0].delivery_tag, multiple=True)   # 50..99 at once
    # a round trip on the same channel: the acks before it have been processed
    left = cch.queue_declare(q, passive=True).method.message_count
    assert left == 50, "before restart: %d ready messages, expected 50 (150 delivered)" % left
    b.sigterm()          # 100..149 delivered, not acked; 150..199 never delivered
    b.start()

    conn = b.connect()
    try:
        count = queue_count(conn, q)
        ch = conn.channel()
        got = consume_n(conn, ch, q, N - 100, timeout=10)
        bodies = [g[2] for g in got]
        back = sorted(int(x[3:]) for x in bodies if int(x[3:]) < 100)
        assert not back, ("%d acked messages came back after a clean restart: %s"
                          % (len(back), summarize(back)))
        want = [b"m4-%04d" % i for i in range(100, N)]
        assert bodies == want, ("after restart expected messages 100..%d in order, got %d "
                                "messages (passive declare: %d): first %s"
                                % (N - 1, len(bodies), count, bodies[:5]))
        wrong = [(i + 100, g[0].redelivered) for i, g in enumerate(got)
                 if g[0].redelivered != (i + 100 < 150)]
        assert not wrong, ("redelivered flag after restart: messages 100..149 had been delivered "
                           "(expected True), 150..199 never (expected False); wrong for %s"
                           % summarize(wrong, 8))
    finally:
        _close(conn)


# ---------------------------------------------------------------- 5. unacked after crash
def test_unacked_come_back_redelivered(dbroker):
    b = dbroker
    q, barrier_q = "dur5.q", "dur5.barrier"
    conn = b.connect()
    ch = conn.channel()
    ch.queue_declare(q, durable=True)
    ch.queue_declare(barrier_q, durable=True)
    ch.confirm_delivery()
    for i in range(20):
        _publish_confirmed(ch, "", q, b"m5-%02d" % i, pika.BasicProperties(delivery_mode=PERSISTENT))
    cch = conn.channel()
    cch.basic_qos(prefetch_count=5)
    got = consume_n(conn, cch, q, 5, timeout=10, linger=0.2)
    assert [g[2] for g in got] == [b"m5-%02d" % i for i in range(5)], (
        "before the kill: expected deliveries m5-00..04, got %s" % [g[2] for g in got])
    # Barrier: a confirmed persistent publish after the deliveries. Its confirm means every
    # write issued before it (the delivery marks) is durable too.
    _publish_confirmed(ch, "", barrier_q, b"barrier", pika.BasicProperties(delivery_mode=PERSISTENT))
    b.sigkill()
    b.start()

    conn = b.connect()
    try:
        queue_count(conn, q)
        ch = conn.channel()
        got = consume_n(conn, ch, q, 20, timeout=10)
        bodies = [g[2] for g in got]
        assert bodies == [b"m5-%02d" % i for i in range(20)], (
            "after SIGKILL + restart expected m5-00..19 in order (the 5 unacked first), got %d: %s"
            % (len(bodies), bodies[:8]))
        flags = [g[0].redelivered for g in got[:5]]
        assert all(flags), ("the 5 delivered-but-unacked messages came back with redelivered=%s, "
                            "expected True" % flags)
    finally:
        _close(conn)


# ---------------------------------------------------------------- 6. delayed
def test_delayed_messages_survive_restart(dbroker):
    b = dbroker
    x, q = "dur6.delayed", "dur6.q"
    conn = b.connect()
    ch = conn.channel()
    ch.exchange_declare(x, "x-delayed-message", durable=True,
                        arguments={"x-delayed-type": "direct"})
    ch.queue_declare(q, durable=True)
    ch.queue_bind(q, x, routing_key="k")
    ch.confirm_delivery()
    t_first = time.monotonic()
    for i in range(5):
        _publish_confirmed(ch, x, "k", b"delayed-%d" % i,
                           pika.BasicProperties(delivery_mode=PERSISTENT, headers={"x-delay": 3000}),
                           mandatory=False)
    t_last = time.monotonic()
    _close(conn)
    b.sigterm()
    b.start()
    t_up = time.monotonic()

    conn = b.connect()
    try:
        c = queue_count(conn, q)
        if time.monotonic() < t_first + 3.0 - 0.05:
            assert c == 0, ("%d delayed messages (x-delay 3000) were in %s %.1fs after publishing, "
                            "right after the restart" % (c, q, time.monotonic() - t_first))
        err = _channel_error(conn, lambda c: c.exchange_declare(x, passive=True))
        assert err is None, ("durable x-delayed-message exchange %s: passive declare after the "
                             "restart gave %s" % (x, err))
        ch = conn.channel()
        due_min = t_first + 3.0
        deadline = max(t_last + 3.0, t_up) + 1.5
        arrived = []
        early = []
        while len(arrived) < 5 and time.monotonic() < deadline:
            m, _, body = ch.basic_get(q, auto_ack=True)
            now = time.monotonic()
            if m is None:
                time.sleep(0.05)
                continue
            arrived.append((body, now))
            if now < due_min - 0.05:
                early.append((body, round(now - t_first, 2)))
        assert not early, ("delayed messages (x-delay 3000) delivered too early, seconds after "
                           "publishing: %s" % early)
        bodies = sorted(a[0] for a in arrived)
        assert bodies == [b"delayed-%d" % i for i in range(5)], (
            "after a restart, by %.1fs after publishing (due at 3.0s, restart took %.1fs), got "
            "%s; expected delayed-0..4" % (deadline - t_first, t_up - t_last, bodies))
        assert queue_count(conn, q) == 0
    finally:
        _close(conn)


# ---------------------------------------------------------------- 7. one broker per dir
def test_second_broker_on_same_dir_exits(dbroker, tmp_path):
    b = dbroker
    conn = b.connect()
    ch = conn.channel()
    ch.queue_declare("dur7.q", durable=True)
    ch.confirm_delivery()
    _publish_confirmed(ch, "", "dur7.q", b"first", pika.BasicProperties(delivery_mode=PERSISTENT))
    _close(conn)

    rc, out, secs = run_expect_exit(b.data_dir, port=free_port(), timeout=10,
                                    log_path=str(tmp_path / "second.log"))
    assert rc is not None, ("a second broker on the data dir of a running one was still running "
                            "after 10 s; it must exit at once. Output:\n%s" % out[-2000:])
    assert rc > 0, "second broker exited with rc=%s, expected a non-zero exit code (not a signal)\n%s" % (
        rc, out[-2000:])
    assert secs < 5, "second broker took %.1fs to exit, expected at once" % secs
    low = out.lower()
    assert ("in use" in low or "lock" in low) and b.data_dir in out, (
        "second broker's output should say that the data directory %s is in use; it was:\n%s"
        % (b.data_dir, out[-2000:]))
    assert b.alive(), "the first broker died when a second one tried its data dir\n" + b.tail(30)

    conn = b.connect()
    try:
        assert queue_count(conn, "dur7.q") == 1
        ch = conn.channel()
        ch.confirm_delivery()
        _publish_confirmed(ch, "", "dur7.q", b"second", pika.BasicProperties(delivery_mode=PERSISTENT))
        m, _, body = ch.basic_get("dur7.q", auto_ack=True)
        assert body == b"first", "first broker: basic_get gave %r, expected b'first'" % (body,)
    finally:
        _close(conn)
    b.sigterm()     # and its store is unharmed
    b.start()
    conn = b.connect()
    try:
        m, _, body = conn.channel().basic_get("dur7.q", auto_ack=True)
        assert body == b"second", ("after the second broker's attempt and a restart, the first "
                                   "broker's queue gave %r, expected b'second'" % (body,))
    finally:
        _close(conn)


# ---------------------------------------------------------------- 8. bad data dir
@pytest.mark.parametrize("kind", ["regular_file", "garbled_CURRENT"])
def test_unopenable_data_dir(tmp_path, kind):
    if kind == "regular_file":
        data_dir = tmp_path / "not-a-dir"
        data_dir.write_bytes(b"this is a file, not a directory\n")
    else:
        b = DurableBroker(tmp_path)
        try:
            b.start()          # a valid store first
            b.sigterm()
        finally:
            b.cleanup()
        data_dir = tmp_path / "data"
        (data_dir / "CURRENT").write_bytes(b"\x00\xffMANIFEST-garbage\x07")   # no newline
    rc, out, secs = run_expect_exit(str(data_dir), timeout=6,
                                    log_path=str(tmp_path / "refused.log"))
    assert rc is not None, ("broker kept running on an unopenable data dir (%s) for 6 s; expected "
                            "a clear error and a non-zero exit. Output:\n%s" % (kind, out[-2000:]))
    assert rc > 0, ("broker on an unopenable data dir (%s) exited with rc=%s, expected a positive "
                    "exit code (negative = died of a signal: crash/abort)\n%s" % (kind, rc, out[-2000:]))
    crashy = [w for w in ("Segmentation", "core dumped", "terminate called", "Aborted",
                          "AddressSanitizer", "Assertion", "stack trace", "Traceback")
              if w.lower() in out.lower()]
    assert not crashy, "output looks like a crash (%s):\n%s" % (crashy, out[-2000:])
    assert str(data_dir) in out and ("error" in out.lower() or "cannot" in out.lower()), (
        "the error should name the data directory %s; output was:\n%s" % (data_dir, out[-2000:]))


# ---------------------------------------------------------------- 9. delivery limit
def test_delivery_count_survives_restart(dbroker):
    b = dbroker
    q, dlx, dlq = "dur9.q", "dur9.dlx", "dur9.dead"
    limit = 2
    conn = b.connect()
    ch = conn.channel()
    ch.exchange_declare(dlx, "fanout", durable=True)
    ch.queue_declare(dlq, durable=True)
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(q, durable=True,
                     arguments={"x-delivery-limit": limit, "x-dead-letter-exchange": dlx})
    ch.confirm_delivery()
    _publish_confirmed(ch, "", q, b"poison", pika.BasicProperties(delivery_mode=PERSISTENT))
    _close(conn)

    deliveries = []   # (redelivered, x-delivery-count header) per delivery
    for attempt in range(limit + 4):
        b.sigterm()
        b.start()
        conn = b.connect()
        try:
            queue_count(conn, q)
            ch = conn.channel()
            m, props, body = ch.basic_get(q, auto_ack=False)
            if m is None:
                break
            assert body == b"poison", "delivery %d: body %r" % (attempt + 1, body)
            deliveries.append((m.redelivered, (props.headers or {}).get("x-delivery-count")))
            ch.basic_reject(m.delivery_tag, requeue=True)
            ch.queue_declare(q, passive=True)    # round trip: the reject was processed
        finally:
            _close(conn)
    n = len(deliveries)
    assert n <= limit + 1, ("with x-delivery-limit %d the message was delivered %d times across "
                            "restarts and is still in the queue (deliveries: %s): the delivery "
                            "count did not survive the restarts" % (limit, n, deliveries))
    assert n >= limit, ("with x-delivery-limit %d the message was dead-lettered after only %d "
                        "deliveries (%s)" % (limit, n, deliveries))
    conn = b.connect()
    try:
        assert queue_count(conn, q) == 0, "the message is still in %s" % q
        assert queue_count(conn, dlq) == 1, "the dead-lettered copy is not in %s" % dlq
        m, props, body = conn.channel().basic_get(dlq, auto_ack=True)
        deaths = (props.headers or {}).get("x-death") or []
        reasons = [(d.get("reason"), d.get("queue")) for d in deaths]
        assert body == b"poison" and ("delivery_limit", q) in reasons, (
            "dead-lettered message: body %r, x-death (reason, queue) %s; expected reason "
            "delivery_limit from %s" % (body, reasons, q))
    finally:
        _close(conn)
    # RabbitMQ quorum-queue semantics: the n-th delivery (n >= 2) carries redelivered=True
    # and x-delivery-count = n - 1 (earlier deliveries), also across restarts.
    bad = [(k + 1, d) for k, d in enumerate(deliveries)
           if k > 0 and (d[0] is not True or d[1] != k)]
    assert not bad, ("the message was dead-lettered correctly, but redeliveries after restarts "
                     "should carry redelivered=True and x-delivery-count = earlier deliveries "
                     "(1, 2, ...); got (delivery #, (redelivered, x-delivery-count)) %s" % bad)


# ---------------------------------------------------------------- 9. paging
PAGING_FLAGS = ["--queue-memory-messages", "16", "--queue-memory-bytes", "65536"]


def test_paged_backlog_survives_restart_in_order(tmp_path):
    """A broker that keeps 16 messages per durable queue in memory: a 10,000-message backlog
    (with transient ones mixed in) is mostly on disk; a restart midway through draining it
    keeps every persistent message, in order, the unacked ones first and redelivered, and
    loses the transient ones (as RabbitMQ does)."""
    b = DurableBroker(tmp_path, extra_args=PAGING_FLAGS)
    b.start()
    try:
        q = "dur9.paged"
        sent = []
        conn = b.connect()
        ch = conn.channel()
        ch.queue_declare(q, durable=True)
        for i in range(10000):
            if i % 100 == 50:
                body = b"t-%05d" % i
                ch.basic_publish("", q, body, pika.BasicProperties(delivery_mode=TRANSIENT))
                sent.append(body)
            body = b"p-%05d" % i
            ch.basic_publish("", q, body, pika.BasicProperties(delivery_mode=PERSISTENT))
            sent.append(body)
        deadline = time.monotonic() + 60
        while queue_count(conn, q) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert queue_count(conn, q) == len(sent), "queue.declare-ok must count the paged-out backlog"

        first, acked = 3000, 2990
        cch = conn.channel()
        cch.basic_qos(prefetch_count=first)
        got = consume_n(conn, cch, q, first, timeout=60, linger=0.3)
        bodies = [g[2] for g in got]
        assert bodies == sent[:first], "before the restart: deliveries out of order or missing"
        cch.basic_ack(got[acked - 1][0].delivery_tag, multiple=True)
        queue_count(conn, q)  # a round trip on the connection: the ack has been handled
        _close(conn)
        b.sigterm()
        b.start()

        expected = [s for s in sent[acked:] if s.startswith(b"p-")]
        conn = b.connect()
        ch = conn.channel()
        got = consume_n(conn, ch, q, len(expected), timeout=120, linger=0.5, auto_ack=True)
        bodies = [g[2] for g in got]
        assert len(bodies) == len(expected), "after the restart: got %d of %d messages" % (
            len(bodies), len(expected))
        assert bodies == expected, "after the restart: order differs (first %s)" % bodies[:5]
        unacked = [s for s in sent[acked:first] if s.startswith(b"p-")]
        flags = [g[0].redelivered for g in got]
        assert flags[:len(unacked)] == [True] * len(unacked), "unacked ones must be redelivered"
        assert not any(flags[len(unacked):]), "never-delivered ones must not be redelivered"
        assert queue_count(conn, q) == 0
        _close(conn)
    finally:
        b.cleanup()
        print("\n--- broker history:", b.history)
        print(b.tail(60))
