"""Captures what RabbitMQ 3.10 (management plugin) answers to the user, vhost and
permission requests tests/e2e/test_http_access.py sends minibroker, into
rabbitmq-3.10-access.json: per request the method, path, body sent, HTTP status and
the body received. Run once by hand (it starts a private node, ~15 s):

    /usr/bin/python3 tests/data/mgmt/capture_access.py

The tests compare status codes and key sets, never values.
"""

import base64
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "e2e"))

from rabbitmq_node import RabbitMQNode, free_port  # noqa: E402


class ManagementNode(RabbitMQNode):
    def __init__(self):
        super().__init__(name_prefix="mgmtcap")
        self.http_port = free_port()

    @property
    def env(self):
        env = super().env
        env["RABBITMQ_ENABLED_PLUGINS_FILE"] = os.path.join(self.dir, "enabled_plugins")
        env["RABBITMQ_CONFIG_FILE"] = os.path.join(self.dir, "rabbitmq.conf")
        return env

    def _prepare_dirs(self):
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[rabbitmq_management].\n")
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            f.write("management.tcp.port = %d\nmanagement.tcp.ip = 127.0.0.1\n" % self.http_port)
        super()._prepare_dirs()


def rabbit_hash(password, salt=b"\x01\x02\x03\x04"):
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def main():
    node = ManagementNode()
    node.start(timeout=90)
    out = {}
    try:
        def call(key, method, path, body=None, user="guest", password="guest", raw=None):
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            req = urllib.request.Request("http://127.0.0.1:%d%s" % (node.http_port, path), data=data, method=method)
            req.add_header("Authorization", "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode())
            if data is not None:
                req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    status, text = r.status, r.read()
            except urllib.error.HTTPError as e:
                status, text = e.code, e.read()
            try:
                got = json.loads(text) if text else None
            except ValueError:
                got = text.decode(errors="replace")
            out[key] = {"method": method, "path": path, "sent": body if raw is None else raw.decode(),
                        "status": status, "body": got}
            print(key, status, got)

        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/" % node.http_port, timeout=2)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        call("list_users", "GET", "/api/users")
        call("put_user_created", "PUT", "/api/users/alice", {"password": "pw", "tags": "management"})
        call("put_user_updated", "PUT", "/api/users/alice", {"password": "pw", "tags": "management,monitoring"})
        call("get_user", "GET", "/api/users/alice")
        call("put_user_hash", "PUT", "/api/users/bob", {"password_hash": rabbit_hash("bob-pw"), "tags": ""})
        call("put_user_tag_list", "PUT", "/api/users/bob", {"password_hash": rabbit_hash("bob-pw"),
                                                             "tags": ["monitoring"]})
        call("get_user_hash", "GET", "/api/users/bob")
        call("put_user_no_password", "PUT", "/api/users/carol", {"tags": ""})
        call("get_user_no_password", "GET", "/api/users/carol")
        call("put_user_no_tags", "PUT", "/api/users/dave", {"password": "x"})
        call("put_user_bad_json", "PUT", "/api/users/eve", raw=b"{not json")
        call("put_user_bad_hash", "PUT", "/api/users/eve", {"password_hash": "!!!", "tags": ""})
        call("get_user_missing", "GET", "/api/users/nobody")
        call("delete_user_missing", "DELETE", "/api/users/nobody")
        call("non_admin_list_users", "GET", "/api/users", user="alice", password="pw")
        call("non_admin_put_user", "PUT", "/api/users/mallory", {"password": "x", "tags": "administrator"},
             user="alice", password="pw")
        call("non_admin_put_vhost", "PUT", "/api/vhosts/mallory", {}, user="alice", password="pw")
        call("non_admin_list_permissions", "GET", "/api/permissions", user="alice", password="pw")
        call("put_vhost_created", "PUT", "/api/vhosts/v1", {})
        call("put_vhost_existing", "PUT", "/api/vhosts/v1", {})
        call("put_vhost_no_body", "PUT", "/api/vhosts/v2")
        call("get_vhost", "GET", "/api/vhosts/v1")
        call("put_permission_created", "PUT", "/api/permissions/v1/alice",
             {"configure": ".*", "write": ".*", "read": ".*"})
        call("put_permission_updated", "PUT", "/api/permissions/v1/alice",
             {"configure": "^a", "write": ".*", "read": ".*"})
        call("get_permission", "GET", "/api/permissions/v1/alice")
        call("list_permissions", "GET", "/api/permissions")
        call("user_permissions", "GET", "/api/users/alice/permissions")
        call("vhost_permissions", "GET", "/api/vhosts/v1/permissions")
        call("user_permissions_missing", "GET", "/api/users/nobody/permissions")
        call("vhost_permissions_missing", "GET", "/api/vhosts/nope/permissions")
        call("put_permission_bad_regex", "PUT", "/api/permissions/v1/alice",
             {"configure": "(", "write": ".*", "read": ".*"})
        call("put_permission_missing_keys", "PUT", "/api/permissions/v1/alice", {"configure": ".*"})
        call("put_permission_unknown_user", "PUT", "/api/permissions/v1/nobody",
             {"configure": ".*", "write": ".*", "read": ".*"})
        call("put_permission_unknown_vhost", "PUT", "/api/permissions/nope/alice",
             {"configure": ".*", "write": ".*", "read": ".*"})
        call("get_permission_missing", "GET", "/api/permissions/v1/bob")
        call("delete_permission", "DELETE", "/api/permissions/v1/alice")
        call("delete_permission_missing", "DELETE", "/api/permissions/v1/alice")
        call("delete_vhost", "DELETE", "/api/vhosts/v1")
        call("delete_vhost_missing", "DELETE", "/api/vhosts/v1")
        call("delete_user", "DELETE", "/api/users/alice")
        call("delete_user_gone", "GET", "/api/users/alice")
    finally:
        node.cleanup()
    with open(os.path.join(HERE, "rabbitmq-3.10-access.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
