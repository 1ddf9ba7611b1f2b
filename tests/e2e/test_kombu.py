"""kombu against the broker.

Concerns:
- [x] SimpleQueue put/get round trip (JSON), get on empty raises Empty
- [x] kombu Producer/Consumer with an explicit topic exchange
- [x] Connection(heartbeat=2) stays alive ~7 s while idle: the broker sends heartbeats
      (py-amqp sees bytes arrive) and accepts the client's; the connection is usable after
"""

import socket
import time

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from util import uname


def test_simplequeue_round_trip(broker):
    with Connection(broker.url, connect_timeout=5) as conn:
        name = uname()
        q = conn.SimpleQueue(name)
        try:
            q.put({"hello": "world", "n": [1, 2, 3]})
            q.put("second")
            m = q.get(block=True, timeout=5)
            assert m.payload == {"hello": "world", "n": [1, 2, 3]}
            m.ack()
            m = q.get(block=True, timeout=5)
            assert m.payload == "second"
            m.ack()
            with pytest.raises(q.Empty):
                q.get(block=True, timeout=0.5)
        finally:
            q.close()
            conn.default_channel.queue_delete(name)


def test_producer_consumer_topic(broker):
    ex = Exchange(uname("ex"), type="topic", durable=False)
    queue = Queue(uname(), exchange=ex, routing_key="worker.#", durable=False, auto_delete=True)
    got = []
    with Connection(broker.url, connect_timeout=5) as conn:
        with conn.channel() as ch:
            consumer = Consumer(ch, queues=[queue], accept=["json"],
                                callbacks=[lambda body, msg: (got.append(body), msg.ack())])
            consumer.consume()
            producer = Producer(conn.channel(), exchange=ex, serializer="json")
            producer.publish({"k": 1}, routing_key="worker.heartbeat")
            producer.publish({"k": 2}, routing_key="task.multi")  # not matched
            producer.publish({"k": 3}, routing_key="worker.online")
            deadline = time.monotonic() + 5
            while len(got) < 2 and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=0.5)
                except socket.timeout:
                    pass
            consumer.cancel()
    assert got == [{"k": 1}, {"k": 3}]


@pytest.mark.timeout(40)
def test_heartbeat_connection_stays_alive_when_idle(broker):
    conn = Connection(broker.url, heartbeat=2, connect_timeout=5)
    try:
        conn.connect()
        transport_conn = conn.connection  # amqp.Connection
        assert transport_conn.heartbeat == 2, "negotiated heartbeat should be min(60, 2)"
        recv_before = transport_conn.bytes_recv
        t0 = time.monotonic()
        while time.monotonic() - t0 < 7:
            try:
                conn.drain_events(timeout=0.5)
            except socket.timeout:
                pass
            # sends our heartbeat when due; raises ConnectionForced when the broker was silent
            conn.heartbeat_check(rate=2)
        assert transport_conn.bytes_recv > recv_before, "broker sent no heartbeat frames"
        name = uname()
        q = conn.SimpleQueue(name)
        try:
            q.put("after idle")
            assert q.get(timeout=5).payload == "after idle"
        finally:
            q.close()
            conn.default_channel.queue_delete(name)
    finally:
        conn.release()
