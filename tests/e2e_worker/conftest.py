"""Fixtures for the task runtime's end-to-end tests (issue 4).

Every scenario runs against each broker in MB_WORKER_BROKERS (comma-separated,
default "rabbitmq,minibroker"); minibroker is skipped when its binary is not
built. Each broker is private: free ports, its own temp dir, stopped after.
Binaries come from MB_WORKER_BUILD (default: build/, else build-worker/).
Helpers live in worker_helpers.py (not imported as "conftest": tests/e2e has one too).
"""

import os
import re
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from worker_helpers import Worker, broker_kinds, make_broker, next_id  # noqa: E402


@pytest.fixture(scope="session", params=broker_kinds())
def broker(request):
    """A broker shared by the scenarios that do not restart it."""
    b = make_broker(request.param)
    b.kind = request.param
    yield b
    b.cleanup()


@pytest.fixture(params=broker_kinds())
def own_broker(request):
    """A broker of the test's own (for restarts)."""
    b = make_broker(request.param)
    b.kind = request.param
    yield b
    b.cleanup()


@pytest.fixture
def app(broker):
    """A Python Celery client app on the broker, with the rpc:// result backend."""
    from celery import Celery  # here: the task runtime's suites do not need Celery imported
    a = Celery("addTask", broker=broker.url, backend="rpc://")
    a.conf.broker_connection_retry_on_startup = False
    yield a
    a.close()


@pytest.fixture
def queue_name(request):
    """A queue of the test's own, so tests sharing a broker do not interfere."""
    return "q_" + re.sub(r"\W", "_", request.node.name)[:60] + "_%d_%d" % (os.getpid(), next_id())


@pytest.fixture
def start_worker(broker, queue_name):
    started = []

    def start(*extra, url=None, queue=None, wait_ready=True, **kw):
        w = Worker(url or broker.url, queue or queue_name, *extra, **kw)
        started.append(w)
        return w.start(wait_ready=wait_ready)

    yield start
    for w in started:
        w.stop()
        shutil.rmtree(w.dir, ignore_errors=True)
