"""The Celery app an unmodified Python `celery worker` runs in test_celery_python_worker.py.

The broker comes from MB_PYWORKER_BROKER; results go back through rpc://.
"""

import os

from celery import Celery

app = Celery("pyworker_app", broker=os.environ["MB_PYWORKER_BROKER"], backend="rpc://")
app.conf.broker_connection_retry_on_startup = False


@app.task(name="addTask.add")
def add(x, y):
    return x + y


@app.task(name="py.fail")
def fail(message):
    raise ValueError(message)


@app.task(name="py.request", bind=True)
def request(self, *args, **kwargs):
    """What the worker made of the message: the options a producer maps to headers and properties."""
    r = self.request
    return {"args": list(args), "kwargs": kwargs, "retries": r.retries, "eta": r.eta, "expires": r.expires,
            "priority": (r.delivery_info or {}).get("priority"), "root_id": r.root_id, "id": r.id,
            "origin": r.origin, "timelimit": list(r.timelimit or ())}
