"""Start and stop a private RabbitMQ node (Debian's rabbitmq-server 3.10) for tests.

Reusable by other suites:

    from rabbitmq_node import RabbitMQNode
    node = RabbitMQNode()          # picks free AMQP + dist ports and a temp dir
    node.start(timeout=60)         # waits for a real AMQP handshake
    ... node.host, node.port, node.url ...
    node.stop()                    # rabbitmqctl stop, then kills the process group

See /work/shared/RABBITMQ.md: the data/log dirs must belong to the `rabbitmq`
user (the Debian wrapper switches to it), and env.conf raises the fd limit and
pins distribution to loopback.  epmd (port 4369) is shared and left running.
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def amqp_handshake_ok(host, port, timeout=2.0):
    """True when a full AMQP handshake (start/start-ok/tune/open) succeeds.

    Done by hand with a raw socket so it works without any client library.
    """
    try:
        from amqp_raw import RawAMQP  # local helper, same directory
    except ImportError:  # pragma: no cover - used standalone
        RawAMQP = None
    if RawAMQP is not None:
        try:
            c = RawAMQP(host, port, timeout=timeout)
            try:
                c.handshake()
                c.close_connection()
            finally:
                c.sock.close()
            return True
        except Exception:
            return False
    try:
        import pika
        params = pika.ConnectionParameters(
            host=host, port=port, socket_timeout=timeout,
            blocked_connection_timeout=timeout, connection_attempts=1,
            stack_timeout=timeout + 1)
        conn = pika.BlockingConnection(params)
        conn.close()
        return True
    except Exception:
        return False


def _port_open(host, port, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class RabbitMQNode:
    """A private RabbitMQ node listening on 127.0.0.1:<port>."""

    def __init__(self, port=None, dist_port=None, base_dir=None, name_prefix="mbtest"):
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.dist_port = dist_port or free_port()
        while self.dist_port == self.port:
            self.dist_port = free_port()
        self._own_dir = base_dir is None
        self.dir = base_dir or tempfile.mkdtemp(prefix="rmq-e2e-")
        self.nodename = "%s%d@localhost" % (name_prefix, self.port)
        self.proc = None
        self.beam_pid = None
        self.out_path = os.path.join(self.dir, "server.out")

    # -- properties ----------------------------------------------------
    @property
    def url(self):
        return "amqp://guest:guest@%s:%d//" % (self.host, self.port)

    @property
    def env(self):
        env = dict(os.environ)
        env.update({
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": os.path.join(self.dir, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.dir, "log"),
            "RABBITMQ_CONF_ENV_FILE": os.path.join(self.dir, "env.conf"),
        })
        return env

    # -- lifecycle -----------------------------------------------------
    def _prepare_dirs(self):
        for sub in ("mnesia", "log"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        with open(os.path.join(self.dir, "env.conf"), "w") as f:
            f.write("ulimit -n 20000\n")
            f.write('SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"\n')
        try:
            pw = pwd.getpwnam("rabbitmq")
        except KeyError:
            return
        for root, dirs, files in os.walk(self.dir):
            for n in [root] + [os.path.join(root, x) for x in dirs + files]:
                try:
                    os.chown(n, pw.pw_uid, pw.pw_gid)
                except OSError:
                    pass

    def start(self, timeout=60.0):
        self._prepare_dirs()
        out = open(self.out_path, "ab")
        self.proc = subprocess.Popen(
            ["rabbitmq-server"], env=self.env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("rabbitmq-server exited early (rc=%s)\n%s"
                                   % (self.proc.returncode, self.tail()))
            if _port_open(self.host, self.port) and amqp_handshake_ok(self.host, self.port):
                # `su rabbitmq` puts beam.smp in a session of its own, out of our process
                # group: remember its pid to be able to kill exactly it.
                self.beam_pid = self._listener_pid()
                return self
            time.sleep(0.25)
        self.stop()
        raise RuntimeError("RabbitMQ did not accept an AMQP handshake within %.0fs\n%s"
                           % (timeout, self.tail()))

    def ctl(self, *args, timeout=30):
        """Run rabbitmqctl against this node; returns CompletedProcess."""
        return subprocess.run(["rabbitmqctl", "-n", self.nodename] + list(args),
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def list_queues(self, *cols):
        cols = cols or ("name", "messages")
        r = self.ctl("list_queues", "-q", "--no-table-headers", *cols)
        rows = []
        for line in r.stdout.splitlines():
            if line.strip():
                rows.append(line.split("\t"))
        return rows

    def stop(self, timeout=30.0):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                r = self.ctl("stop", timeout=timeout)
                if os.environ.get("MB_E2E_DEBUG"):
                    print("rabbitmqctl stop:", r.returncode, r.stdout, r.stderr)
            except Exception as e:
                if os.environ.get("MB_E2E_DEBUG"):
                    print("rabbitmqctl stop failed:", repr(e))
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # Kill whatever remains of our own process group (beam.smp, erl_child_setup...).
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                self.proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        # beam runs in its own session (the wrapper uses su): kill exactly our node's
        # beam.smp if rabbitmqctl stop did not end it.
        for pid in {self.beam_pid, self._listener_pid()}:
            if pid and self._is_our_beam(pid):
                deadline = time.monotonic() + 10
                while self._is_our_beam(pid) and time.monotonic() < deadline:
                    time.sleep(0.2)
                if self._is_our_beam(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
        self.proc = None
        self.beam_pid = None

    def restart(self, timeout=60.0):
        self.stop()
        self.start(timeout=timeout)
        return self

    def _is_our_beam(self, pid):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                args = f.read().split(b"\0")
            with open("/proc/%d/stat" % pid, "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            return False
        if state == b"Z":
            return False
        if not any(a.endswith(b"beam.smp") for a in args):
            return False
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            return False
        return ("RABBITMQ_NODENAME=" + self.nodename).encode() in env

    def _listener_pid(self):
        try:
            r = subprocess.run(["ss", "-ltnpH", "sport = :%d" % self.port],
                               capture_output=True, text=True, timeout=5)
        except Exception:
            return None
        import re
        m = re.search(r'"beam\.smp",pid=(\d+)', r.stdout)
        return int(m.group(1)) if m else None

    def tail(self, n=60):
        chunks = []
        paths = [self.out_path]
        logdir = os.path.join(self.dir, "log")
        if os.path.isdir(logdir):
            paths += [os.path.join(logdir, p) for p in sorted(os.listdir(logdir))]
        for p in paths:
            try:
                with open(p, "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()[-n:]
                chunks.append("==> %s <==\n%s" % (p, "\n".join(lines)))
            except OSError:
                pass
        return "\n".join(chunks)

    def cleanup(self):
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()


if __name__ == "__main__":  # manual smoke test
    n = RabbitMQNode()
    t = time.monotonic()
    n.start()
    print("up on", n.url, "in %.1fs" % (time.monotonic() - t))
    n.cleanup()
    print("stopped")
