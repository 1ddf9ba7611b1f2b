"""Shared fixtures for the minibroker end-to-end suite.

Target broker, chosen by MB_E2E_TARGET:
  minibroker (default)  run the binary at MB_BROKER_BIN
                        (default <repo>/build/broker/minibroker); a missing binary
                        is a hard error, never a silent skip.
  rabbitmq              a private RabbitMQ node (see rabbitmq_node.py).

One broker per test session (the machine is small).  Every test gets a
per-test timeout (pytest-timeout when installed, otherwise signal.alarm here),
default 60 s, overridable with @pytest.mark.timeout(N).
"""

import atexit
import os
import signal
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from rabbitmq_node import RabbitMQNode  # noqa: E402
from minibroker_proc import MinibrokerProc, check_binary, default_binary  # noqa: E402

TARGET = os.environ.get("MB_E2E_TARGET", "minibroker").strip().lower()
DEFAULT_TIMEOUT = int(os.environ.get("MB_E2E_TIMEOUT", "60"))

try:
    import pytest_timeout  # noqa: F401
    HAVE_PYTEST_TIMEOUT = True
except ImportError:
    HAVE_PYTEST_TIMEOUT = False


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "minibroker_only: behaviour required by the issue/DESIGN.md where RabbitMQ 3.10 "
        "differs; skipped when MB_E2E_TARGET=rabbitmq")
    config.addinivalue_line(
        "markers", "rabbitmq_only: RabbitMQ-specific check; skipped against minibroker")
    # kombu/celery on Python 3.11 warn about importlib.metadata on every import
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning")
    if not HAVE_PYTEST_TIMEOUT:
        config.addinivalue_line("markers", "timeout(seconds): per-test timeout (signal.alarm)")
    # SIGTERM to pytest: unwind like Ctrl-C so fixtures stop the broker/worker processes
    def _sigterm(signum, frame):
        raise KeyboardInterrupt("SIGTERM")
    try:
        signal.signal(signal.SIGTERM, _sigterm)
    except ValueError:  # not in the main thread
        pass
    if TARGET not in ("minibroker", "rabbitmq"):
        raise pytest.UsageError("MB_E2E_TARGET must be 'minibroker' or 'rabbitmq', not %r" % TARGET)


def pytest_sessionstart(session):
    if TARGET == "minibroker" and not session.config.option.collectonly:
        try:
            check_binary(default_binary())
        except RuntimeError as e:
            # one clear failure instead of an error per test; never a silent skip
            pytest.exit("e2e: %s" % e, returncode=1)


def pytest_report_header(config):
    if TARGET == "minibroker":
        return "e2e target: minibroker (%s)" % default_binary()
    return "e2e target: rabbitmq (private node)"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TARGET == "rabbitmq" and item.get_closest_marker("minibroker_only"):
            item.add_marker(pytest.mark.skip(
                reason="minibroker_only (RabbitMQ 3.10 differs, or it is about the "
                       "minibroker process; see the test's comment)"))
        if TARGET != "rabbitmq" and item.get_closest_marker("rabbitmq_only"):
            item.add_marker(pytest.mark.skip(reason="rabbitmq_only"))
        if HAVE_PYTEST_TIMEOUT and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT))


# ------------------------------------------------------------- timeouts
class TestTimeout(Exception):
    pass


def _alarm_handler(signum, frame):
    raise TestTimeout("e2e test timed out (signal.alarm)")


def _timeout_for(item):
    m = item.get_closest_marker("timeout")
    if m and m.args:
        return int(m.args[0])
    return DEFAULT_TIMEOUT


if not HAVE_PYTEST_TIMEOUT:
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(item):
        # fixtures (a broker or a Celery worker starting) get a generous budget
        old = signal.signal(signal.SIGALRM, _alarm_handler)
        signal.alarm(max(_timeout_for(item), 120))
        try:
            yield
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(item):
        old = signal.signal(signal.SIGALRM, _alarm_handler)
        signal.alarm(_timeout_for(item))
        try:
            yield
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(item):
        old = signal.signal(signal.SIGALRM, _alarm_handler)
        signal.alarm(90)
        try:
            yield
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------- broker
class Broker:
    """What tests see: host, port, url, target, restart(), tail(), alive()."""

    def __init__(self, target):
        self.target = target
        if target == "rabbitmq":
            self._impl = RabbitMQNode()
        else:
            self._impl = MinibrokerProc(default_binary())
        self.crashes = 0

    host = property(lambda self: self._impl.host)
    port = property(lambda self: self._impl.port)
    url = property(lambda self: self._impl.url)

    @property
    def url_noslash(self):
        """amqp-tools form: no trailing slash (a '/' path would mean vhost '')."""
        return "amqp://guest:guest@%s:%d" % (self.host, self.port)

    @property
    def is_rabbitmq(self):
        return self.target == "rabbitmq"

    def start(self):
        if self.target == "rabbitmq":
            self._impl.start(timeout=90)
        else:
            self._impl.start(timeout=10)
        return self

    def stop(self):
        return self._impl.stop()

    def restart(self):
        if self.target == "rabbitmq":
            self._impl.restart(timeout=90)
        else:
            self._impl.restart(timeout=10)
        return self

    def alive(self):
        if self.target == "rabbitmq":
            return self._impl.proc is not None and self._impl.proc.poll() is None
        return self._impl.alive()

    def tail(self, n=60):
        return self._impl.tail(n)

    def cleanup(self):
        self._impl.cleanup()

    def pika_params(self, **kw):
        import pika
        p = dict(host=self.host, port=self.port,
                 credentials=pika.PlainCredentials("guest", "guest"),
                 connection_attempts=1, socket_timeout=5, stack_timeout=10,
                 blocked_connection_timeout=10)
        p.update(kw)
        return pika.ConnectionParameters(**p)


_BROKER = None


@atexit.register
def _last_resort_cleanup():
    # fixture finalizers normally do this; here for interpreter exits that skip them
    if _BROKER is not None:
        try:
            _BROKER.cleanup()
        except Exception:
            pass


@pytest.fixture(scope="session")
def broker():
    global _BROKER
    if TARGET == "minibroker":
        check_binary(default_binary())  # a clear failure, never a skip
    b = Broker(TARGET)
    try:
        b.start()
    except Exception as e:
        b.cleanup()
        pytest.fail("could not start %s: %s" % (TARGET, e), pytrace=False)
    _BROKER = b
    try:
        yield b
    finally:
        _BROKER = None
        if TARGET == "minibroker" and os.environ.get("MB_E2E_KEEP_LOG"):
            print("\nminibroker log kept in", b._impl.log_path)
            b.stop()
        else:
            b.cleanup()


@pytest.fixture(autouse=True)
def _broker_still_alive(request):
    """After each test using the broker: if it died, report it, show its log and restart it."""
    yield
    if "broker" not in request.fixturenames or _BROKER is None:
        return
    b = _BROKER
    if not b.alive():
        b.crashes += 1
        rc = getattr(getattr(b._impl, "proc", None), "returncode", None)
        tail = "exit status %s (negative = killed by that signal)\n%s" % (rc, b.tail())
        try:
            b.restart()
        except Exception as e:  # pragma: no cover
            tail += "\n(restart failed: %s)" % e
        pytest.fail("the broker process died during this test\n" + tail, pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and _BROKER is not None and TARGET == "minibroker":
        rep.sections.append(("minibroker log (tail)", _BROKER.tail(40)))


# ------------------------------------------------------------- helpers
@pytest.fixture
def tmpdir_e2e():
    d = tempfile.mkdtemp(prefix="e2e-")
    yield d
    import shutil
    shutil.rmtree(d, ignore_errors=True)
