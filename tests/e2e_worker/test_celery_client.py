"""A Python Celery client calling miniworker (issue 5, first part).

Concerns:
[x] add.delay-style call by the Celery name (addTask.add) returns 10 through rpc://
[x] a value of each JSON type round-trips (list, map, string, double, bool, null via echo)
[x] a C++ exception reaches .get() as an exception carrying the C++ message
[x] countdown: the result is not earlier than the countdown
[x] control plane and events: test_celery_control.py; expires, retries, limits: test_celery_options.py
Runs against each broker of MB_WORKER_BROKERS, like the rest of this folder.
"""

import time

import pytest


def call(app, name, queue, *args, **options):
    return app.send_task(name, args=args, queue=queue, **options)


def test_add_by_celery_name(app, start_worker, queue_name):
    start_worker()
    assert call(app, "addTask.add", queue_name, 5, 5).get(timeout=15) == 10
    assert call(app, "add", queue_name, 2, 3).get(timeout=15) == 5


@pytest.mark.parametrize("task,value", [
    ("echo_list", [1, "a", 2.5, True, None]),
    ("echo_map", {"a": 1, "b": [1, 2], "c": {"d": "e"}}),
    ("echo_string", "héllo"),
    ("echo_double", 2.5),
    ("echo_bool", True),
    ("echo_int", -7),
])
def test_json_values_round_trip(app, start_worker, queue_name, task, value):
    start_worker()
    assert call(app, task, queue_name, value).get(timeout=15) == value


def test_cpp_exception_reaches_get(app, start_worker, queue_name):
    start_worker()
    r = call(app, "fail", queue_name, "kaput from C++")
    with pytest.raises(Exception) as info:
        r.get(timeout=15)
    assert "kaput from C++" in str(info.value)
    assert r.state == "FAILURE"


def test_countdown(app, start_worker, queue_name):
    start_worker()
    t0 = time.monotonic()
    assert call(app, "add", queue_name, 1, 1, countdown=2).get(timeout=20) == 2
    assert time.monotonic() - t0 >= 1.9
