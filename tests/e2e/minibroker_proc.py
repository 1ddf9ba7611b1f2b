"""Start and stop the minibroker binary for end-to-end tests.

    from minibroker_proc import MinibrokerProc, default_binary
    b = MinibrokerProc(default_binary())
    b.start()          # waits (<=10 s) for TCP connect + a full AMQP handshake
    ... b.host, b.port, b.url ...
    b.stop()           # SIGTERM to the process group, then SIGKILL

The binary is run as
    minibroker --port P --bind 127.0.0.1 --data-dir D --loglevel info
with stdout/stderr captured to D/../broker.log (see .log_path / .tail()).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from rabbitmq_node import free_port, amqp_handshake_ok

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def default_binary():
    return os.environ.get("MB_BROKER_BIN") or os.path.join(REPO, "build", "broker", "minibroker")


def check_binary(binary):
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise RuntimeError(
            "minibroker binary not found or not executable: %s\n"
            "Build it first (cmake --build build), set MB_BROKER_BIN, or run against "
            "RabbitMQ with MB_E2E_TARGET=rabbitmq." % binary)


class MinibrokerProc:
    def __init__(self, binary=None, port=None, base_dir=None, loglevel="info", extra_args=()):
        self.binary = binary or default_binary()
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._own_dir = base_dir is None
        self.dir = base_dir or tempfile.mkdtemp(prefix="mb-e2e-")
        self.data_dir = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "broker.log")
        self.loglevel = loglevel
        self.extra_args = list(extra_args)  # more minibroker flags: paging window, limits, TLS, --http-port
        self.proc = None

    @property
    def url(self):
        return "amqp://guest:guest@%s:%d//" % (self.host, self.port)

    def check_binary(self):
        check_binary(self.binary)

    def start(self, timeout=10.0):
        self.check_binary()
        os.makedirs(self.data_dir, exist_ok=True)
        log = open(self.log_path, "ab")
        log.write(b"=== starting %s on port %d ===\n" % (self.binary.encode(), self.port))
        log.flush()
        # The management HTTP API only where a test asks for it: brokers of
        # tests running side by side must not compete for port 15672.
        http = [] if "--http-port" in self.extra_args else ["--http-port", "0"]
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--data-dir", self.data_dir, "--loglevel", self.loglevel] + http + self.extra_args,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise RuntimeError("minibroker exited during start-up (rc=%s)\n%s"
                                   % (rc, self.tail()))
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    pass
                if amqp_handshake_ok(self.host, self.port, timeout=2.0):
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("minibroker did not complete an AMQP handshake within %.0fs\n%s"
                           % (timeout, self.tail()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0):
        """SIGTERM the process group, wait, then SIGKILL. Returns the exit code (or None)."""
        if self.proc is None:
            return None
        rc = None
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        rc = self.proc.poll()
        # make sure nothing of our group survives
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc = None
        return rc

    def restart(self, timeout=10.0):
        self.stop()
        return self.start(timeout=timeout)

    def tail(self, n=80):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()[-n:]
            return "==> %s <==\n%s" % (self.log_path, "\n".join(lines))
        except OSError:
            return "(no log at %s)" % self.log_path

    def cleanup(self):
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
