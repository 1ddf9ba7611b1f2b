"""py-amqp (import amqp), the transport under kombu/Celery.

Concerns:
- [x] connect (PLAIN), server_properties seen, channel open
- [x] declare exchange/queue, bind, publish with properties + headers
- [x] basic_get with message_count; basic_get on an empty queue returns None
- [x] basic_consume + drain_events, ack; client-chosen tags like Celery's "None1"
- [x] nowait consume (Celery uses it with -Q a,b): no consume-ok, messages still flow
- [x] close with reply code 0 (py-amqp's channel.close / connection.close) accepted
- [x] channel error surfaces as amqp.exceptions.NotFound and the connection stays usable
"""

import amqp
import pytest

from util import uname


@pytest.fixture
def connection(broker):
    c = amqp.Connection(host="%s:%d" % (broker.host, broker.port), userid="guest",
                        password="guest", virtual_host="/", connect_timeout=5,
                        read_timeout=5, write_timeout=5)
    c.connect()
    yield c
    try:
        c.close()
    except Exception:
        pass


def test_connect_and_server_properties(connection):
    sp = connection.server_properties
    assert "product" in sp and "version" in sp
    assert connection.connected


def test_declare_publish_get(connection):
    ch = connection.channel()
    ex, q = uname("ex"), uname()
    ch.exchange_declare(ex, "direct", durable=False, auto_delete=False)
    name, count, consumers = ch.queue_declare(q, durable=False, auto_delete=False,
                                              arguments={"x-message-ttl": 60000})
    assert (name, count, consumers) == (q, 0, 0)
    ch.queue_bind(q, ex, routing_key="rk")
    for i in range(3):
        ch.basic_publish(amqp.Message(b"body%d" % i, content_type="application/json",
                                      application_headers={"task": "x", "retries": 0, "lst": [1, "a"]},
                                      delivery_mode=2, priority=0, correlation_id="c%d" % i),
                         exchange=ex, routing_key="rk")
    m = ch.basic_get(q, no_ack=False)
    assert m.body == b"body0"
    assert m.delivery_info["message_count"] == 2
    assert m.properties["content_type"] == "application/json"
    assert m.properties["correlation_id"] == "c0"
    h = m.properties["application_headers"]
    assert h["task"] == "x" and h["retries"] == 0 and h["lst"] == [1, "a"]
    ch.basic_ack(m.delivery_tag)
    assert ch.basic_get(q, no_ack=True).body == b"body1"
    assert ch.basic_get(q, no_ack=True).body == b"body2"
    assert ch.basic_get(q) is None
    ch.close()


def test_consume_drain_events(connection):
    ch = connection.channel()
    q = uname()
    ch.queue_declare(q, auto_delete=True)
    got = []

    def on_msg(m):
        got.append(m.body)
        ch.basic_ack(m.delivery_tag)

    tag = ch.basic_consume(q, consumer_tag="None1", callback=on_msg, no_ack=False)
    assert tag == "None1"
    for i in range(5):
        ch.basic_publish(amqp.Message(b"%d" % i), exchange="", routing_key=q)
    while len(got) < 5:
        connection.drain_events(timeout=5)
    assert got == [b"0", b"1", b"2", b"3", b"4"]
    ch.basic_cancel(tag)


def test_nowait_consume_two_queues_one_channel(connection):
    ch = connection.channel()
    q1, q2 = uname(), uname()
    ch.queue_declare(q1)
    ch.queue_declare(q2)
    got = []
    ch.basic_consume(q1, consumer_tag="None4", callback=lambda m: got.append(("a", m.body)),
                     no_ack=True, nowait=True)
    ch.basic_consume(q2, consumer_tag="None5", callback=lambda m: got.append(("b", m.body)),
                     no_ack=True)
    ch.basic_qos(0, 8, False)
    ch.basic_publish(amqp.Message(b"1"), exchange="", routing_key=q1)
    ch.basic_publish(amqp.Message(b"2"), exchange="", routing_key=q2)
    while len(got) < 2:
        connection.drain_events(timeout=5)
    assert sorted(got) == [("a", b"1"), ("b", b"2")]


def test_channel_error_and_close_code_zero(connection):
    ch = connection.channel()
    with pytest.raises(amqp.exceptions.NotFound):
        ch.queue_declare(uname(), passive=True)
    ch2 = connection.channel()
    q = ch2.queue_declare("", exclusive=True).queue
    assert q.startswith("amq.gen-")
    ch2.close()  # py-amqp sends channel.close with reply code 0
    connection.close()  # ... and connection.close with reply code 0
    assert not connection.connected
