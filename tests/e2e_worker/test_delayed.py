"""End-to-end: tasks due later (countdown, eta, retries) wait in the broker's
delayed exchange where it has one (minibroker), else in the worker, unacked
(Debian's RabbitMQ, or --delay-mode worker). Runs on each broker.

What tells the modes apart: stop the worker while a task waits. Held by the
worker, the task is requeued at once (the queue has it); in the broker's
delayed exchange, the queue is empty until the task is due, then has it.

Concerns:
[x] the worker logs which mode it uses; auto picks the delayed exchange on minibroker only
[x] producer countdown: the queue is empty until due (broker) / requeued on stop (worker)
[x] retry with a countdown: republished through the exchange and acked (broker) / held (worker)
[x] a task sent with an eta straight to its queue (as a Celery client does) is moved to the exchange
[x] retry-twice-then-succeed with a 1 s countdown honours both countdowns, retries = 2
[x] --delay-mode broker on a broker without the exchange type: exit 2, said why
[x] a task held here does not take the prefetch window: with a window of 1, a task
    sent after a held one runs before the held one is due (the raised basic.qos
    applies to the live consumer, on RabbitMQ too)
"""

import signal
import time

import pika
import pytest

from worker_helpers import Worker, producer, producer_bg

BROKER_LOG = "tasks due later wait in the broker"
WORKER_LOG = "tasks due later wait in this worker"


def ready_count(broker, queue):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


def wait_for_count(broker, queue, count, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready_count(broker, queue) == count:
            return True
        time.sleep(0.1)
    return False


def expected_mode(broker, worker_mode):
    if worker_mode == "worker" or broker.kind == "rabbitmq":
        return "worker"
    return "broker"


def stop(w):
    w.signal(signal.SIGTERM)
    assert w.wait(timeout=30) == 0, w.log()[-3000:]


def stop_check_and_finish(broker, start_worker, queue, w, mode, p, expected, *worker_args):
    """Stops the worker while a task waits (due in 4 s): checks where it waits;
    then another worker runs it and the producer p gets `expected`."""
    stop(w)
    if mode == "worker":
        assert ready_count(broker, queue) == 1  # it was held unacked: requeued
    else:
        assert ready_count(broker, queue) == 0  # waiting in the exchange, not the queue
        assert wait_for_count(broker, queue, 1, 4 + 10)
    w2 = start_worker(*worker_args)
    out, err = p.communicate(timeout=40)
    assert p.returncode == 0, err + w2.log()[-3000:]
    assert out.strip() == expected


@pytest.mark.parametrize("worker_mode", ["auto", "worker"])
def test_countdown_waits_where_the_mode_says(broker, start_worker, queue_name, worker_mode):
    if broker.kind == "rabbitmq" and worker_mode == "worker":
        pytest.skip("RabbitMQ without the plugin has one mode only")
    mode = expected_mode(broker, worker_mode)
    w = start_worker("--delay-mode", worker_mode)
    assert (BROKER_LOG if mode == "broker" else WORKER_LOG) in w.log()
    p = producer_bg(broker.url, queue_name, "add", "2", "3", "--countdown", "4", "--wait", "--timeout", "40",
                    "--delay-mode", worker_mode)
    try:
        if mode == "worker":
            w.wait_for("held here until", timeout=20)
        else:
            time.sleep(1)  # published to the exchange: the worker sees nothing until due
        stop_check_and_finish(broker, start_worker, queue_name, w, mode, p, "5", "--delay-mode", worker_mode)
    finally:
        p.kill()


def test_retry_countdown_goes_through_the_broker(broker, start_worker, queue_name):
    mode = expected_mode(broker, "auto")
    w = start_worker()
    p = producer_bg(broker.url, queue_name, "retry_twice", "4", "--wait", "--timeout", "40")
    try:
        w.wait_for("retry in 4s", timeout=20)
        w.wait_for("waits in the broker" if mode == "broker" else "held here until", timeout=20)
        stop_check_and_finish(broker, start_worker, queue_name, w, mode, p, "2")
    finally:
        p.kill()


def test_eta_sent_to_the_queue_is_moved_to_the_exchange(broker, start_worker, queue_name):
    """A producer that does not use the exchange (--delay-mode worker, or a Celery client)."""
    mode = expected_mode(broker, "auto")
    w = start_worker()
    p = producer_bg(broker.url, queue_name, "add", "1", "1", "--countdown", "4", "--wait", "--timeout", "40",
                    "--delay-mode", "worker")
    try:
        w.wait_for("waits in the broker" if mode == "broker" else "held here until", timeout=20)
        stop_check_and_finish(broker, start_worker, queue_name, w, mode, p, "2")
    finally:
        p.kill()


def test_retry_twice_with_countdown(broker, start_worker, queue_name):
    w = start_worker()
    t0 = time.monotonic()
    r = producer(broker.url, queue_name, "retry_twice", "1", "--wait", "--timeout", "30")
    assert r.returncode == 0, r.stderr + w.log()[-2000:]
    assert r.stdout.strip() == "2"
    assert time.monotonic() - t0 >= 2.0
    assert w.log().count("retry in 1s") == 2


def test_forced_broker_mode_without_the_exchange_type(broker, queue_name):
    if broker.kind != "rabbitmq":
        pytest.skip("minibroker has the exchange type")
    w = Worker(broker.url, queue_name, "--delay-mode", "broker").start(wait_ready=False)
    try:
        assert w.wait(timeout=30) == 2
        assert "the broker has no x-delayed-message exchange type" in w.log()
    finally:
        w.stop()


def test_held_task_does_not_take_the_window(broker, start_worker, queue_name):
    w = start_worker("--delay-mode", "worker", "--prefetch-multiplier", "1", concurrency=1)
    assert "prefetch 1)" in w.log()
    held = producer_bg(broker.url, queue_name, "add", "2", "3", "--countdown", "20", "--wait", "--timeout", "60",
                       "--delay-mode", "worker")
    try:
        w.wait_for("held here until", timeout=20)
        t0 = time.monotonic()
        r = producer(broker.url, queue_name, "add", "1", "1", "--wait", "--timeout", "15", timeout=30)
        assert r.returncode == 0, r.stderr + w.log()[-3000:]
        assert r.stdout.strip() == "2"
        assert time.monotonic() - t0 < 10  # not after the held task, due in 20 s
    finally:
        held.kill()
