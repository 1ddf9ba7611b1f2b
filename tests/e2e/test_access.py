"""Users, vhosts and permissions (issue 8), driven with pika.

Against minibroker the suite runs its own broker (the users are set up with
`minibroker ctl` on the data directory while the broker is stopped); against
RabbitMQ (MB_E2E_TARGET=rabbitmq) it sets the same users up with rabbitmqctl
on the session node, and removes them afterwards. Reply codes and texts are
RabbitMQ 3.10's.

Concerns:
- [x] guest logs in from loopback
- [x] wrong password, unknown user: 403 ACCESS_REFUSED at start-ok, generic text; a client
      without the authentication_failure_close capability just sees the socket close
- [x] AMQPLAIN (py-amqp) logs in and is refused the same way
- [x] unknown vhost: 530 "vhost ... not found"; no permissions on it: 530 "access to vhost ... refused"
- [x] declare without configure, publish without write, consume/get/purge without read,
      bind without write on the queue or read on the exchange: channel closed with 403 and
      RabbitMQ's text; the connection stays usable
- [x] the default exchange is checked as "amq.default"
- [x] a server-named queue is checked under its generated name (amq.gen-...)
- [x] user_id property that is not the login: 406
- [x] vhosts are isolated; a durable queue in another vhost survives a restart
- [x] users and permissions survive a restart
- [x] minibroker ctl: with the broker running and no API, exit 69; lists as JSON, deletes a vhost
      with its durable queues (minibroker_only)
"""

import json
import os
import re
import subprocess

import amqp
import pika
import pika.exceptions as pex
import pytest

from amqp_raw import PROTOCOL_HEADER, RawAMQP, longstr, method_frame, shortstr, table
from minibroker_proc import MinibrokerProc, default_binary
from rabbitmq_node import free_port
from util import uname

TARGET = os.environ.get("MB_E2E_TARGET", "minibroker").strip().lower()

ALICE, ALICE_PW = "e2e-alice", "alice-pw"      # everything on "/" and on VHOST
RUTH, RUTH_PW = "e2e-ruth", "ruth-pw"          # only resources named r-* on "/"
NOVA, NOVA_PW = "e2e-nova", "nova-pw"          # no permissions anywhere
VHOST = "e2e-vhost"
USERS = (ALICE, RUTH, NOVA)


class Minibroker:
    """Own minibroker; set-up through `minibroker ctl` while it is stopped."""

    def __init__(self):
        self.proc = MinibrokerProc(default_binary())
        self.host = self.proc.host

    @property
    def port(self):
        return self.proc.port

    def ctl(self, *args, check=True):
        r = subprocess.run([self.proc.binary, "ctl", "--data-dir", self.proc.data_dir] + list(args),
                           capture_output=True, text=True, timeout=60)
        if check:
            assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
        return r

    def set_up(self):
        os.makedirs(self.proc.data_dir, exist_ok=True)
        self.ctl("add-user", ALICE, ALICE_PW, "--tags", "management")
        self.ctl("add-user", RUTH, RUTH_PW)
        self.ctl("add-user", NOVA, NOVA_PW)
        self.ctl("add-vhost", VHOST)
        self.ctl("set-permissions", ALICE, ".*", ".*", ".*")
        self.ctl("set-permissions", "-p", VHOST, ALICE, ".*", ".*", ".*")
        self.ctl("set-permissions", RUTH, "^r-", "^r-", "^r-")
        self.proc.start(timeout=10)

    def restart(self):
        self.proc.restart(timeout=10)

    def tear_down(self):
        self.proc.cleanup()


class RabbitMQ:
    """The session's RabbitMQ node; set-up through rabbitmqctl."""

    def __init__(self, broker):
        self.broker = broker
        self.node = broker._impl
        self.host = broker.host

    @property
    def port(self):
        return self.broker.port

    def ctl(self, *args):
        r = self.node.ctl(*args)
        assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)

    def set_up(self):
        for u, pw in ((ALICE, ALICE_PW), (RUTH, RUTH_PW), (NOVA, NOVA_PW)):
            self.ctl("add_user", u, pw)
        self.ctl("set_user_tags", ALICE, "management")
        self.ctl("add_vhost", VHOST)
        self.ctl("set_permissions", ALICE, ".*", ".*", ".*")
        self.ctl("set_permissions", "-p", VHOST, ALICE, ".*", ".*", ".*")
        self.ctl("set_permissions", RUTH, "^r-", "^r-", "^r-")

    def restart(self):
        self.broker.restart()

    def tear_down(self):
        for u in USERS:
            self.node.ctl("delete_user", u)
        self.node.ctl("delete_vhost", VHOST)


@pytest.fixture(scope="module")
def target(request):
    if TARGET == "rabbitmq":
        t = RabbitMQ(request.getfixturevalue("broker"))
    else:
        t = Minibroker()
    try:
        t.set_up()
    except Exception:
        t.tear_down()
        raise
    yield t
    t.tear_down()


def connect(t, user="guest", password="guest", vhost="/"):
    return pika.BlockingConnection(pika.ConnectionParameters(
        host=t.host, port=t.port, virtual_host=vhost,
        credentials=pika.PlainCredentials(user, password),
        connection_attempts=1, socket_timeout=10, stack_timeout=20))


def refused(t, **kw):
    """The (code, text) of the connection.close a login or connection.open gets."""
    with pytest.raises(pex.AMQPConnectionError) as ei:
        connect(t, **kw)
    err = ei.value
    # pika wraps the broker's close in the error it raises (an exception, or its text)
    while err.args and isinstance(err.args[0], Exception):
        err = err.args[0]
    if isinstance(err, pex.ConnectionClosedByBroker):
        return err.reply_code, err.reply_text
    m = re.search(r"ConnectionClosedByBroker: \((\d+)\) (['\"])(.*)\2", str(err))
    assert m, repr(ei.value)
    return int(m.group(1)), m.group(3)


def channel_error(fn):
    """Runs fn (which ends with a synchronous call); returns the channel.close it got."""
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        fn()
    return ei.value.reply_code, ei.value.reply_text


def refusal(kind, name, user, vhost="/"):
    return (403, "ACCESS_REFUSED - access to %s '%s' in vhost '%s' refused for user '%s'" % (kind, name, vhost, user))


# ---------------------------------------------------------------- logging in

def test_guest_from_loopback(target):
    c = connect(target)
    ch = c.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    assert q.startswith("amq.gen-")
    c.close()


@pytest.mark.parametrize("user,password", [(ALICE, "wrong"), ("e2e-nobody", "x"), ("guest", "")])
def test_bad_login_is_403(target, user, password):
    assert refused(target, user=user, password=password) == (
        403, "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. "
             "For details see the broker logfile.")


def test_bad_login_without_capability_closes_the_socket(target):
    raw = RawAMQP(target.host, target.port)
    try:
        raw.send(PROTOCOL_HEADER)
        raw.expect((10, 10))
        raw.send(method_frame(0, 10, 11, table({"product": "e2e-raw"}) + shortstr("PLAIN")
                              + longstr(b"\x00" + ALICE.encode() + b"\x00wrong") + shortstr("en_US")))
        assert raw.read_close(timeout=10) is None  # no connection.close, no reason given
    finally:
        raw.close()


def test_amqplain_login(target):
    c = amqp.Connection(host="%s:%d" % (target.host, target.port), userid=ALICE, password=ALICE_PW,
                        login_method="AMQPLAIN", connect_timeout=10)
    c.connect()
    ch = c.channel()
    q = uname()
    ch.queue_declare(q, auto_delete=True)
    c.close()
    bad = amqp.Connection(host="%s:%d" % (target.host, target.port), userid=ALICE, password="wrong",
                          login_method="AMQPLAIN", connect_timeout=10)
    with pytest.raises(amqp.exceptions.AccessRefused) as ei:
        bad.connect()
    assert "Login was refused using authentication mechanism AMQPLAIN" in str(ei.value)


def test_unknown_vhost_is_530(target):
    assert refused(target, vhost="e2e-no-such-vhost") == (530, "NOT_ALLOWED - vhost e2e-no-such-vhost not found")


def test_vhost_without_permissions_is_530(target):
    assert refused(target, user=NOVA, password=NOVA_PW) == (
        530, "NOT_ALLOWED - access to vhost '/' refused for user '%s'" % NOVA)
    assert refused(target, user=RUTH, password=RUTH_PW, vhost=VHOST) == (
        530, "NOT_ALLOWED - access to vhost '%s' refused for user '%s'" % (VHOST, RUTH))


# ---------------------------------------------------------------- permissions

def test_declare_needs_configure(target):
    c = connect(target, RUTH, RUTH_PW)
    ch = c.channel()
    ch.queue_declare("r-" + uname(), auto_delete=True)
    ch.exchange_declare("r-" + uname("x"), "direct", auto_delete=True)
    name = uname()
    assert channel_error(lambda: ch.queue_declare(name)) == refusal("queue", name, RUTH)
    ch = c.channel()  # the connection is still usable
    xname = uname("x")
    assert channel_error(lambda: ch.exchange_declare(xname, "fanout")) == refusal("exchange", xname, RUTH)
    ch = c.channel()
    # a passive declare needs no permission: 404, not 403
    assert channel_error(lambda: ch.queue_declare(name, passive=True))[0] == 404
    ch = c.channel()
    code, text = channel_error(lambda: ch.queue_declare(""))  # checked under its generated name
    assert code == 403 and text.startswith("ACCESS_REFUSED - access to queue 'amq.gen-"), text
    c.close()


def test_publish_needs_write(target):
    c = connect(target, RUTH, RUTH_PW)
    ch = c.channel()
    q = "r-" + uname()
    ch.queue_declare(q, auto_delete=True)
    ch.basic_publish("", q, b"x")
    assert channel_error(lambda: ch.queue_declare(q, passive=True)) == refusal("exchange", "amq.default", RUTH)
    ch = c.channel()
    ch.basic_publish("amq.fanout", "rk", b"x")
    assert channel_error(lambda: ch.queue_declare(q, passive=True)) == refusal("exchange", "amq.fanout", RUTH)
    ch = c.channel()
    x = "r-" + uname("x")
    ch.exchange_declare(x, "fanout", auto_delete=True)
    ch.confirm_delivery()
    ch.basic_publish(x, "rk", b"x")  # write on r-* is granted: confirmed
    c.close()


def test_consume_get_purge_need_read(target):
    owner = connect(target, ALICE, ALICE_PW)
    och = owner.channel()
    q = uname()
    och.queue_declare(q, auto_delete=False)
    och.basic_publish("", q, b"hello")
    c = connect(target, RUTH, RUTH_PW)
    try:
        ch = c.channel()
        assert channel_error(lambda: ch.basic_consume(q, lambda *a: None)) == refusal("queue", q, RUTH)
        ch = c.channel()
        assert channel_error(lambda: ch.basic_get(q)) == refusal("queue", q, RUTH)
        ch = c.channel()
        assert channel_error(lambda: ch.queue_purge(q)) == refusal("queue", q, RUTH)
        ch = c.channel()
        assert channel_error(lambda: ch.queue_delete(q)) == refusal("queue", q, RUTH)
        assert och.queue_declare(q, passive=True).method.message_count == 1  # untouched
    finally:
        och.queue_delete(q)
        owner.close()
        c.close()


def test_bind_needs_write_on_queue_and_read_on_exchange(target):
    c = connect(target, RUTH, RUTH_PW)
    ch = c.channel()
    q = "r-" + uname()
    ch.queue_declare(q, auto_delete=True)
    assert channel_error(lambda: ch.queue_bind(q, "amq.direct", "k")) == refusal("exchange", "amq.direct", RUTH)
    ch = c.channel()
    x = "r-" + uname("x")
    ch.exchange_declare(x, "direct", auto_delete=True)
    ch.queue_bind(q, x, "k")
    other = uname()
    assert channel_error(lambda: ch.queue_bind(other, x, "k")) == refusal("queue", other, RUTH)
    c.close()


def test_user_id_must_be_the_login(target):
    c = connect(target, ALICE, ALICE_PW)
    ch = c.channel()
    q = uname()
    ch.queue_declare(q, auto_delete=True)
    ch.basic_publish("", q, b"ok", pika.BasicProperties(user_id=ALICE))
    ch.basic_publish("", q, b"bad", pika.BasicProperties(user_id="guest"))
    code, text = channel_error(lambda: ch.queue_declare(q, passive=True))
    assert (code, text) == (406, "PRECONDITION_FAILED - user_id property set to 'guest' but authenticated "
                                 "user was '%s'" % ALICE)
    c.close()


# ---------------------------------------------------------------- vhosts and restarts

def test_vhosts_are_isolated_and_survive_restart(target):
    q = uname()
    c = connect(target, ALICE, ALICE_PW, vhost=VHOST)
    ch = c.channel()
    ch.queue_declare(q, durable=True)
    ch.basic_publish("", q, b"kept", pika.BasicProperties(delivery_mode=2))
    c.close()
    c = connect(target, ALICE, ALICE_PW)
    ch = c.channel()
    code, text = channel_error(lambda: ch.queue_declare(q, passive=True))
    assert (code, text) == (404, "NOT_FOUND - no queue '%s' in vhost '/'" % q)
    c.close()

    target.restart()

    # users, tags and permissions came back with the broker
    assert refused(target, user=NOVA, password=NOVA_PW)[0] == 530
    c = connect(target, RUTH, RUTH_PW)
    ch = c.channel()
    assert channel_error(lambda: ch.queue_declare(q)) == refusal("queue", q, RUTH)
    c.close()
    c = connect(target, ALICE, ALICE_PW, vhost=VHOST)
    ch = c.channel()
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    _, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"kept"
    ch.queue_delete(q)
    c.close()


# ---------------------------------------------------------------- minibroker ctl

@pytest.mark.minibroker_only
def test_ctl_needs_the_api_while_the_broker_runs(target):
    # The data directory is locked: ctl goes to the management API (test_http_access.py),
    # which this broker does not serve (--http-port 0).
    r = target.ctl("list-users", "--http-port", str(free_port()), check=False)
    assert r.returncode == 69, (r.returncode, r.stdout, r.stderr)
    assert "in use by a running minibroker" in r.stderr and "cannot reach the management API" in r.stderr


@pytest.mark.minibroker_only
def test_ctl_lists_and_deletes_a_vhost_with_its_queues(target):
    q = uname()
    c = connect(target, ALICE, ALICE_PW, vhost=VHOST)
    c.channel().queue_declare(q, durable=True)
    c.close()
    target.proc.stop()
    try:
        users = json.loads(target.ctl("list-users", "--json").stdout)
        assert {"user": ALICE, "tags": ["management"]} in users
        assert {"user": "guest", "tags": ["administrator"]} in users
        perms = target.ctl("list-permissions", "-p", VHOST, "-q").stdout.splitlines()
        assert perms == ["user\tconfigure\twrite\tread", "%s\t.*\t.*\t.*" % ALICE]
        assert target.ctl("add-user", ALICE, "x", check=False).returncode == 70
        target.ctl("delete-vhost", VHOST)
        assert VHOST not in target.ctl("list-vhosts", "-q", "-s").stdout.split()
    finally:
        target.proc.start(timeout=10)
    assert refused(target, user=ALICE, password=ALICE_PW, vhost=VHOST) == (
        530, "NOT_ALLOWED - vhost %s not found" % VHOST)
    # re-created empty: the durable queue went with the vhost, and so did the permissions
    target.proc.stop()
    try:
        target.ctl("add-vhost", VHOST)
        assert target.ctl("list-permissions", "-p", VHOST, "-q", "-s").stdout == ""
        target.ctl("set-permissions", "-p", VHOST, ALICE, ".*", ".*", ".*")
    finally:
        target.proc.start(timeout=10)
    c = connect(target, ALICE, ALICE_PW, vhost=VHOST)
    ch = c.channel()
    assert channel_error(lambda: ch.queue_declare(q, passive=True))[0] == 404
    c.close()
