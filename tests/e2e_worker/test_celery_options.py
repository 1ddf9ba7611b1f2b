"""Celery task options honoured by miniworker, seen from a Python Celery client (issue 5).

Concerns:
[x] expires: a task that expired while held for its countdown gets REVOKED / TaskRevokedError
[x] retries: the C++ task's retry is republished with retries + 1 (the task sees 1, then 2)
[x] failures: exc_type / exc_module / exc_message as Celery writes them, rebuilt by .get()
[x] an unknown task gets FAILURE NotRegistered, the real celery.exceptions class
[x] soft time limit from the timelimit header -> SoftTimeLimitExceeded; hard -> TimeLimitExceeded
[x] ignore_result: no result is published
Runs against each broker of MB_WORKER_BROKERS, like the rest of this folder.
"""

import celery.exceptions
import pytest


def test_expired_while_waiting_for_countdown_is_revoked(app, start_worker, queue_name):
    start_worker()
    r = app.send_task("add", args=(1, 1), queue=queue_name, countdown=3, expires=1)
    with pytest.raises(celery.exceptions.TaskRevokedError) as info:
        r.get(timeout=20)
    assert "expired" in str(info.value)
    assert r.state == "REVOKED"


def test_retry_republishes_with_retries_plus_one(app, start_worker, queue_name):
    w = start_worker()
    r = app.send_task("retry_twice", args=(0.2,), queue=queue_name)
    assert r.get(timeout=30) == 2  # the task returns the retries count it was called with
    log = w.log()
    assert "try again 1" in log and "try again 2" in log


def test_cpp_exception_shape(app, start_worker, queue_name):
    start_worker()
    r = app.send_task("fail", args=("kaput from C++",), queue=queue_name)
    exc = r.get(timeout=15, propagate=False)
    assert r.state == "FAILURE"
    assert isinstance(exc, Exception)
    assert type(exc).__name__ == "std::runtime_error"
    assert exc.args == ("kaput from C++",)
    assert "kaput from C++" in r.traceback


def test_unknown_task_is_not_registered(app, start_worker, queue_name):
    w = start_worker()
    r = app.send_task("no.such.task", args=(1,), queue=queue_name)
    with pytest.raises(celery.exceptions.NotRegistered):
        r.get(timeout=15)
    w.wait_for("unregistered task no.such.task")


def test_soft_time_limit_from_header(app, start_worker, queue_name):
    start_worker()
    r = app.send_task("sleep", args=(10.0,), queue=queue_name, soft_time_limit=0.5)
    with pytest.raises(celery.exceptions.SoftTimeLimitExceeded):
        r.get(timeout=20)


def test_hard_time_limit_from_header(app, start_worker, queue_name):
    start_worker(pool="prefork")
    r = app.send_task("sleep", args=(30.0,), queue=queue_name, time_limit=1)
    with pytest.raises(celery.exceptions.TimeLimitExceeded):
        r.get(timeout=20)
    # The pool replaced the killed child: the worker still serves.
    assert app.send_task("add", args=(2, 2), queue=queue_name).get(timeout=15) == 4


def test_ignore_result(app, start_worker, queue_name):
    w = start_worker()
    r = app.send_task("add", args=(3, 4), queue=queue_name, ignore_result=True)
    w.wait_for("add[%s] succeeded" % r.id)
    # r.get() returns None at once for an ignored result; a fresh handle really waits,
    # and would get the result had the worker published one to our reply queue.
    again = app.AsyncResult(r.id)
    with pytest.raises(celery.exceptions.TimeoutError):
        again.get(timeout=3)
    # ... while the next call, without the option, gets its result.
    assert app.send_task("add", args=(3, 4), queue=queue_name).get(timeout=15) == 7
