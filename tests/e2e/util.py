"""Small helpers shared by the e2e test files."""

import time
import uuid


def uname(prefix="q"):
    """A unique entity name so tests sharing one broker never collide."""
    return "e2e.%s.%s" % (prefix, uuid.uuid4().hex[:10])


def wait_for(pred, timeout=5.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)
