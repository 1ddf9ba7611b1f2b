"""Users, vhosts and permissions through the management HTTP API, and `minibroker ctl`
managing a running broker through it (issue 8). A real broker binary with --http-port,
urllib for HTTP, pika for AMQP.

Status codes, error bodies and key sets are compared with what RabbitMQ 3.10.8 answered
to the same requests (tests/data/mgmt/rabbitmq-3.10-access.json, made by
tests/data/mgmt/capture_access.py); values are checked against minibroker's own state.

Concerns:
- [x] /api/users: list, get, create (201), update (204), password or password_hash
      (RabbitMQ's base64 salt+sha256: the user logs in over AMQP with that password),
      tags as a string or a list; 400 without tags, on bad JSON, on a bad hash; 404 unknown
- [x] only administrators: 401 "Not administrator user"; no management tag at all: 401
      "Not management user"
- [x] PUT/DELETE /api/vhosts/{vhost}: usable at once by its creator over AMQP; deleting it
      closes its connections with 320
- [x] /api/permissions[/{vhost}/{user}], /api/users/{u}/permissions,
      /api/vhosts/{v}/permissions: 201/204/404, 400 on a bad regex, missing keys, unknown
      user or vhost; a permission set over HTTP is enforced at once over AMQP
- [x] DELETE /api/users/{u} closes that user's connections with 320
- [x] everything is persisted: a restart keeps users, vhosts, permissions
- [x] minibroker ctl against the running broker (through the API), its exit codes (70
      refused, 77 login refused, 69 no API)
- [x] HTTPS on --http-tls-port with a certificate made here; the plain port beside it
"""

import base64
import hashlib
import http.client
import json
import os
import ssl
import subprocess
import tempfile
import shutil
import time
import urllib.error
import urllib.request

import pika
import pytest

from minibroker_proc import default_binary
from rabbitmq_node import free_port
from test_http_api import HTTP_TIMEOUT, HttpBroker, q
from test_tls import make_ca, make_leaf
from util import uname

TARGET = os.environ.get("MB_E2E_TARGET", "minibroker").strip().lower()
pytestmark = pytest.mark.skipif(TARGET != "minibroker", reason="starts its own minibroker with --http-port")

RABBIT = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "mgmt",
                                     "rabbitmq-3.10-access.json")))
USER_KEYS = set(RABBIT["get_user"]["body"])
PERMISSION_KEYS = set(RABBIT["get_permission"]["body"])
NOT_FOUND = RABBIT["get_user_missing"]["body"]


@pytest.fixture(scope="module")
def mb():
    b = HttpBroker()
    yield b
    b.stop()


def like_rabbit(got, sample):
    """got is (status, body, headers): the same status as RabbitMQ, the same body for errors."""
    status, body, _ = got
    want = RABBIT[sample]
    assert status == want["status"], (sample, status, body, want)
    if status in (201, 204):
        assert body is None, (sample, body)
    elif status >= 400 and isinstance(want["body"], dict) and isinstance(want["body"].get("reason"), str):
        # the reasons RabbitMQ renders as Erlang terms (lists) are ours in words
        assert body == want["body"], (sample, body, want["body"])
    return body


def rabbit_hash(password, salt=b"\x05\x06\x07\x08"):
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def amqp(mb, user, password, vhost="/"):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", mb.port, virtual_host=vhost, credentials=pika.PlainCredentials(user, password),
        heartbeat=0, connection_attempts=1, socket_timeout=10, stack_timeout=20))


def refusal(mb, user, password, vhost):
    """The text of the error pika raises when connection.open is refused."""
    with pytest.raises(pika.exceptions.AMQPConnectionError) as e:
        amqp(mb, user, password, vhost)
    return str(e.value)


def closed_by_broker(conn, timeout=10):
    """The (code, text) of the connection.close the broker sends this idle connection."""
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            conn.process_data_events(0.1)
    return e.value.reply_code, e.value.reply_text


def add_user(mb, name, password, tags=""):
    assert mb.request("PUT", "/api/users/" + q(name), {"password": password, "tags": tags})[0] == 201


# ---------------------------------------------------------------- users

def test_users_create_update_get_list(mb):
    name = uname("u")
    path = "/api/users/" + q(name)
    like_rabbit(mb.request("PUT", path, {"password": "pw", "tags": "management"}), "put_user_created")
    like_rabbit(mb.request("PUT", path, {"password": "pw2", "tags": "management,monitoring"}), "put_user_updated")
    u = like_rabbit(mb.request("GET", path), "get_user")
    assert set(u) == USER_KEYS
    assert u["name"] == name and u["tags"] == ["management", "monitoring"]
    assert u["hashing_algorithm"] == "rabbit_password_hashing_sha256" and len(base64.b64decode(u["password_hash"])) == 36
    users = like_rabbit(mb.request("GET", "/api/users"), "list_users")
    assert all(set(x) == USER_KEYS for x in users)
    assert {"guest", name} <= {x["name"] for x in users}
    # the update changed the password
    amqp(mb, "guest", "guest").close()
    assert mb.request("GET", "/api/whoami", user=name, password="pw2")[1] == {"name": name,
                                                                              "tags": ["management", "monitoring"]}
    assert mb.request("GET", "/api/whoami", user=name, password="pw")[0] == 401
    like_rabbit(mb.request("DELETE", path), "delete_user")
    like_rabbit(mb.request("GET", path), "delete_user_gone")


def test_password_hash_and_tag_list(mb):
    name = uname("hash")
    path = "/api/users/" + q(name)
    like_rabbit(mb.request("PUT", path, {"password_hash": rabbit_hash("hash-pw"), "tags": ""}), "put_user_hash")
    like_rabbit(mb.request("PUT", path, {"password_hash": rabbit_hash("hash-pw"), "tags": ["monitoring"]}),
                "put_user_tag_list")
    u = mb.get(path)
    assert u["password_hash"] == rabbit_hash("hash-pw") and u["tags"] == ["monitoring"]
    mb.request("PUT", "/api/permissions/%2F/" + q(name), {"configure": ".*", "write": ".*", "read": ".*"})
    c = amqp(mb, name, "hash-pw")  # RabbitMQ's hash is ours: the password works over AMQP
    c.channel().queue_declare("", exclusive=True)
    c.close()
    # without password or hash: no password login (RabbitMQ's passwordless user)
    like_rabbit(mb.request("PUT", path, {"tags": "monitoring"}), "put_user_updated")
    assert mb.request("GET", "/api/whoami", user=name, password="hash-pw")[0] == 401
    mb.request("DELETE", path)


def test_user_errors(mb):
    like_rabbit(mb.request("PUT", "/api/users/" + uname("nt"), {"password": "x"}), "put_user_no_tags")
    raw = urllib.request.Request(mb.url("/api/users/" + uname("bj")), data=b"{not json", method="PUT")
    raw.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(raw, timeout=HTTP_TIMEOUT)
    assert e.value.code == RABBIT["put_user_bad_json"]["status"]
    status, body, _ = mb.request("PUT", "/api/users/" + uname("bh"), {"password_hash": "!!!", "tags": ""})
    assert (status, body["error"]) == (RABBIT["put_user_bad_hash"]["status"], "bad_request")
    like_rabbit(mb.request("GET", "/api/users/nobody"), "get_user_missing")
    like_rabbit(mb.request("DELETE", "/api/users/nobody"), "delete_user_missing")
    like_rabbit(mb.request("GET", "/api/users/nobody/permissions"), "user_permissions_missing")


def test_only_administrators(mb):
    name = uname("mgmt")
    add_user(mb, name, "pw", "management")
    as_user = dict(user=name, password="pw")
    like_rabbit(mb.request("GET", "/api/users", **as_user), "non_admin_list_users")
    like_rabbit(mb.request("PUT", "/api/users/" + uname("m"), {"password": "x", "tags": "administrator"}, **as_user),
                "non_admin_put_user")
    like_rabbit(mb.request("PUT", "/api/vhosts/" + uname("v"), {}, **as_user), "non_admin_put_vhost")
    like_rabbit(mb.request("GET", "/api/permissions", **as_user), "non_admin_list_permissions")
    assert mb.request("DELETE", "/api/users/guest", **as_user)[0] == 401
    assert mb.request("GET", "/api/overview", **as_user)[0] == 200  # management users see the rest
    plain = uname("plain")
    add_user(mb, plain, "pw")
    status, body, _ = mb.request("GET", "/api/overview", user=plain, password="pw")
    assert (status, body) == (401, {"error": "not_authorised", "reason": "Not management user"})


def test_delete_user_closes_its_connections(mb):
    name = uname("gone")
    add_user(mb, name, "pw")
    mb.request("PUT", "/api/permissions/%2F/" + q(name), {"configure": ".*", "write": ".*", "read": ".*"})
    c = amqp(mb, name, "pw")
    other = amqp(mb, "guest", "guest")
    assert mb.request("DELETE", "/api/users/" + q(name))[0] == 204
    assert closed_by_broker(c) == (320, "CONNECTION_FORCED - user '%s' is deleted" % name)
    other.channel().queue_declare("", exclusive=True)  # others are untouched
    other.close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        amqp(mb, name, "pw")


# ---------------------------------------------------------------- vhosts and permissions

def test_vhost_usable_at_once_and_deleted_with_its_connections(mb):
    vhost = uname("vh")
    path = "/api/vhosts/" + q(vhost)
    like_rabbit(mb.request("PUT", path, {}), "put_vhost_created")
    like_rabbit(mb.request("PUT", path, {}), "put_vhost_existing")
    assert mb.get(path)["name"] == vhost
    # the creator (guest) got permissions on it, as RabbitMQ's management plugin does
    assert mb.get("/api/permissions/%s/guest" % q(vhost)) == {
        "user": "guest", "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
    c = amqp(mb, "guest", "guest", vhost)
    ch = c.channel()
    ch.queue_declare("in-" + vhost, durable=True)
    assert mb.get("/api/queues/%s/%s" % (q(vhost), q("in-" + vhost)))["vhost"] == vhost
    like_rabbit(mb.request("DELETE", path), "delete_vhost")
    assert closed_by_broker(c) == (320, "CONNECTION_FORCED - vhost '%s' is deleted" % vhost)
    like_rabbit(mb.request("DELETE", path), "delete_vhost_missing")
    assert mb.request("GET", "/api/queues/%s" % q(vhost))[0] == 404
    assert "(530) 'NOT_ALLOWED - vhost %s not found'" % vhost in refusal(mb, "guest", "guest", vhost)
    like_rabbit(mb.request("PUT", "/api/vhosts/" + q(uname("nb"))), "put_vhost_no_body")


def test_permissions_crud_and_enforced_at_once(mb):
    user, vhost = uname("pu"), uname("pv")
    add_user(mb, user, "pw")
    mb.request("PUT", "/api/vhosts/" + q(vhost), {})
    path = "/api/permissions/%s/%s" % (q(vhost), q(user))
    like_rabbit(mb.request("GET", path), "get_permission_missing")
    like_rabbit(mb.request("PUT", path, {"configure": ".*", "write": ".*", "read": ".*"}), "put_permission_created")
    c = amqp(mb, user, "pw", vhost)
    ch = c.channel()
    ch.queue_declare("a-" + user, auto_delete=True)
    like_rabbit(mb.request("PUT", path, {"configure": "^a", "write": ".*", "read": ".*"}), "put_permission_updated")
    p = like_rabbit(mb.request("GET", path), "get_permission")
    assert set(p) == PERMISSION_KEYS
    assert p == {"user": user, "vhost": vhost, "configure": "^a", "write": ".*", "read": ".*"}
    # the open connection is held to the new permissions at once
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("b-" + user)
    assert e.value.reply_code == 403
    c.close()

    listed = like_rabbit(mb.request("GET", "/api/permissions"), "list_permissions")
    assert all(set(x) == PERMISSION_KEYS for x in listed) and p in listed
    assert like_rabbit(mb.request("GET", "/api/users/%s/permissions" % q(user)), "user_permissions") == [p]
    in_vhost = like_rabbit(mb.request("GET", "/api/vhosts/%s/permissions" % q(vhost)), "vhost_permissions")
    assert sorted(x["user"] for x in in_vhost) == sorted(["guest", user])
    like_rabbit(mb.request("GET", "/api/vhosts/nope/permissions"), "vhost_permissions_missing")

    status, body, _ = mb.request("PUT", path, {"configure": "(", "write": ".*", "read": ".*"})
    assert (status, body["error"]) == (RABBIT["put_permission_bad_regex"]["status"], "bad_request")
    like_rabbit(mb.request("PUT", path, {"configure": ".*"}), "put_permission_missing_keys")
    like_rabbit(mb.request("PUT", "/api/permissions/%s/nobody" % q(vhost), {"configure": "", "write": "", "read": ""}),
                "put_permission_unknown_user")
    like_rabbit(mb.request("PUT", "/api/permissions/nope/%s" % q(user), {"configure": "", "write": "", "read": ""}),
                "put_permission_unknown_vhost")
    like_rabbit(mb.request("DELETE", path), "delete_permission")
    like_rabbit(mb.request("DELETE", path), "delete_permission_missing")
    text = refusal(mb, user, "pw", vhost)
    assert "(530)" in text and "NOT_ALLOWED - access to vhost '%s' refused" % vhost in text


@pytest.mark.timeout(90)
def test_changes_survive_a_restart():
    b = HttpBroker()
    try:
        user, vhost = uname("ru"), uname("rv")
        add_user(b, user, "pw", "monitoring")
        b.request("PUT", "/api/vhosts/" + q(vhost), {})
        b.request("PUT", "/api/permissions/%s/%s" % (q(vhost), q(user)), {"configure": "^x", "write": "", "read": ".*"})
        before = (b.get("/api/users/" + q(user)), b.get("/api/users/%s/permissions" % q(user)))
        b.restart()
        assert (b.get("/api/users/" + q(user)), b.get("/api/users/%s/permissions" % q(user))) == before
        assert vhost in [v["name"] for v in b.get("/api/vhosts")]
        amqp(b, user, "pw", vhost).close()
    finally:
        b.stop()


# ---------------------------------------------------------------- minibroker ctl, through the API

def ctl(mb, *args):
    return subprocess.run([default_binary(), "ctl", "--http-port", str(mb.http_port)] + list(args),
                          capture_output=True, text=True, timeout=HTTP_TIMEOUT)


def test_ctl_against_the_running_broker(mb):
    user, vhost = uname("cu"), uname("cv")
    r = ctl(mb, "add-user", user, "pw1", "--tags", "monitoring")
    assert r.returncode == 0, r.stderr
    assert ctl(mb, "add-user", user, "x").returncode == 70
    assert {"user": user, "tags": ["monitoring"]} in json.loads(ctl(mb, "list-users", "--json").stdout)
    assert ctl(mb, "add-vhost", vhost).returncode == 0
    assert ctl(mb, "add-vhost", vhost).returncode == 70
    assert vhost in ctl(mb, "list-vhosts", "-q", "-s").stdout.split()
    assert ctl(mb, "set-permissions", "-p", vhost, user, ".*", ".*", ".*").returncode == 0
    assert ctl(mb, "set-permissions", "-p", vhost, "nobody", ".*", ".*", ".*").returncode == 70
    assert sorted(ctl(mb, "list-permissions", "-p", vhost, "-q", "-s").stdout.splitlines()) == sorted([
        "guest\t.*\t.*\t.*", "%s\t.*\t.*\t.*" % user])
    assert ctl(mb, "list-user-permissions", user, "-q", "-s").stdout.splitlines() == ["%s\t.*\t.*\t.*" % vhost]
    amqp(mb, user, "pw1", vhost).close()  # in effect at once

    assert ctl(mb, "change-password", user, "pw2").returncode == 0
    c = amqp(mb, user, "pw2", vhost)
    assert ctl(mb, "set-user-tags", user, "management").returncode == 0
    assert mb.get("/api/users/" + q(user))["tags"] == ["management"]
    amqp(mb, user, "pw2", vhost).close()  # set-user-tags kept the password
    assert ctl(mb, "clear-permissions", "-p", vhost, user).returncode == 0
    assert ctl(mb, "clear-permissions", "-p", vhost, user).returncode == 0  # nothing to clear is fine
    assert ctl(mb, "delete-vhost", vhost).returncode == 0
    assert closed_by_broker(c)[0] == 320
    assert ctl(mb, "delete-vhost", vhost).returncode == 70
    assert ctl(mb, "delete-user", user).returncode == 0
    r = ctl(mb, "delete-user", user)
    assert r.returncode == 70 and "does not exist" in r.stderr


def test_ctl_exit_codes_over_http(mb):
    r = ctl(mb, "list-users", "--password", "wrong")
    assert r.returncode == 77 and "login refused" in r.stderr
    name = uname("nonadmin")
    add_user(mb, name, "pw", "management")
    r = ctl(mb, "add-vhost", uname("v"), "--user", name, "--password", "pw")
    assert r.returncode == 77 and "Not administrator user" in r.stderr
    r = subprocess.run([default_binary(), "ctl", "--http-port", str(free_port()), "list-users"],
                       capture_output=True, text=True, timeout=HTTP_TIMEOUT)
    assert r.returncode == 69 and "cannot reach the management API" in r.stderr


def test_ctl_data_dir_in_use_goes_through_the_api(mb):
    r = subprocess.run([default_binary(), "ctl", "--data-dir", os.path.join(mb.dir, "data"), "--http-port",
                        str(mb.http_port), "list-vhosts", "-q", "-s"],
                       capture_output=True, text=True, timeout=HTTP_TIMEOUT)
    assert r.returncode == 0 and "/" in r.stdout.split(), r.stderr
    r = subprocess.run([default_binary(), "ctl", "--data-dir", os.path.join(mb.dir, "data"), "--http-port",
                        str(free_port()), "list-vhosts"], capture_output=True, text=True, timeout=HTTP_TIMEOUT)
    assert r.returncode == 69 and "in use by a running minibroker" in r.stderr


# ---------------------------------------------------------------- HTTPS

@pytest.fixture(scope="module")
def https_broker():
    d = tempfile.mkdtemp(prefix="mb-https-")
    try:
        make_ca(d, "ca")
        make_leaf(d, "server", "ca", san="DNS:localhost,IP:127.0.0.1")
        tls_port = free_port()
        b = HttpBroker(extra_args=["--http-tls-port", str(tls_port), "--tls-port", str(free_port()),
                                   "--tls-cert", os.path.join(d, "server.pem"),
                                   "--tls-key", os.path.join(d, "server.key")])
        b.tls_port, b.ca = tls_port, os.path.join(d, "ca.pem")
        yield b
        b.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def https_get(b, path, context):
    req = urllib.request.Request("https://localhost:%d%s" % (b.tls_port, path))
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT, context=context) as r:
        return r.status, json.loads(r.read())


def test_https_api(https_broker):
    b = https_broker
    status, who = https_get(b, "/api/whoami", ssl.create_default_context(cafile=b.ca))
    assert (status, who) == (200, {"name": "guest", "tags": ["administrator"]})
    # a client that does not trust the certificate is refused
    with pytest.raises(urllib.error.URLError) as e:
        https_get(b, "/api/whoami", ssl.create_default_context())
    assert isinstance(e.value.reason, ssl.SSLError)
    # plain HTTP on the TLS port gets no API answer; the plain port still serves
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen("http://127.0.0.1:%d/api/whoami" % b.tls_port, timeout=10)
    assert b.get("/api/whoami")["name"] == "guest"
    with open(b.log_path) as f:
        assert "management HTTP API listening on 127.0.0.1:%d (HTTPS)" % b.tls_port in f.read()
