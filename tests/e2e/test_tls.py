"""AMQPS: minibroker's --tls-port with certificates made here, in a temp dir, by the
openssl command (a CA, a server certificate for localhost/127.0.0.1, a client one).

Concerns:
- [x] pika over TLS: declare, publish, consume; the plain port keeps working beside it
- [x] a client that trusts another CA fails its handshake; the broker stays up
- [x] plain AMQP sent to the TLS port: the broker closes the connection, stays up
- [x] --tls-ca: a client without a certificate is refused, one signed by the CA is served
All minibroker_only: they start brokers of their own with TLS flags.
"""

import os
import shutil
import socket
import ssl
import subprocess
import tempfile

import pika
import pytest

from amqp_raw import PROTOCOL_HEADER
from minibroker_proc import MinibrokerProc, default_binary
from rabbitmq_node import free_port

pytestmark = pytest.mark.minibroker_only

# pika raises the ssl module's error for a failed handshake, or AMQPConnectionError
# when the server dropped the connection during it; ssl.SSLError is an OSError.
HANDSHAKE_REFUSED = (pika.exceptions.AMQPConnectionError, OSError)
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]  # fast to make


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def make_ca(d, name):
    openssl("req", "-x509", *EC_KEY, "-keyout", name + ".key", "-out", name + ".pem", "-days", "2",
            "-subj", "/CN=" + name, cwd=d)


def make_leaf(d, name, ca, san=None):
    openssl("req", *EC_KEY, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name, cwd=d)
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\n")
        if san:
            f.write("subjectAltName=%s\n" % san)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", ext, cwd=d)


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="mb-tls-")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_leaf(d, "server", "ca", san="DNS:localhost,IP:127.0.0.1")
    make_leaf(d, "client", "ca")
    yield lambda name: os.path.join(d, name)
    shutil.rmtree(d, ignore_errors=True)


def tls_broker(pki, verify_peer=False):
    port = free_port()
    args = ["--tls-port", str(port), "--tls-cert", pki("server.pem"), "--tls-key", pki("server.key")]
    if verify_peer:
        args += ["--tls-ca", pki("ca.pem")]
    b = MinibrokerProc(default_binary(), extra_args=args)
    b.tls_port = port
    b.start(timeout=10)
    return b


@pytest.fixture
def broker_tls(pki):
    b = tls_broker(pki)
    yield b
    alive = b.alive()
    b.cleanup()
    assert alive, "the broker died"


@pytest.fixture
def broker_tls_verify(pki):
    b = tls_broker(pki, verify_peer=True)
    yield b
    alive = b.alive()
    b.cleanup()
    assert alive, "the broker died"


def tls_params(b, cafile, cert=None):
    ctx = ssl.create_default_context(cafile=cafile)
    if cert:
        ctx.load_cert_chain(cert + ".pem", cert + ".key")
    return pika.ConnectionParameters(host="127.0.0.1", port=b.tls_port, connection_attempts=1,
                                     socket_timeout=10, stack_timeout=15,
                                     ssl_options=pika.SSLOptions(ctx, "localhost"))


def round_trip(params, n=20):
    c = pika.BlockingConnection(params)
    try:
        ch = c.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        bodies = [b"tls-%d" % i * (i + 1) for i in range(n)]
        for body in bodies:
            ch.basic_publish("", q, body)
        got = []
        for _, _, body in ch.consume(q, auto_ack=True, inactivity_timeout=10):
            if body is None:
                break
            got.append(body)
            if len(got) == n:
                break
        ch.cancel()
        return got == bodies
    finally:
        c.close()


def test_pika_over_tls_publish_and_consume(broker_tls, pki):
    assert round_trip(tls_params(broker_tls, pki("ca.pem")))
    # the plain listener works beside it
    assert round_trip(pika.ConnectionParameters(host="127.0.0.1", port=broker_tls.port, socket_timeout=10))
    with open(broker_tls.log_path) as f:
        assert "AMQPS on 127.0.0.1:%d" % broker_tls.tls_port in f.read()


def test_client_trusting_another_ca_fails_handshake(broker_tls, pki):
    with pytest.raises(HANDSHAKE_REFUSED):
        pika.BlockingConnection(tls_params(broker_tls, pki("other-ca.pem")))
    assert round_trip(tls_params(broker_tls, pki("ca.pem")), n=1)


def test_plain_amqp_to_tls_port_is_closed(broker_tls, pki):
    s = socket.create_connection(("127.0.0.1", broker_tls.tls_port), timeout=10)
    try:
        s.sendall(PROTOCOL_HEADER)
        data = b""
        while True:  # at most a TLS alert, then EOF; never an AMQP frame
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        assert not data.startswith(b"\x01") and not data.startswith(b"AMQP"), data
    except ConnectionResetError:
        pass
    finally:
        s.close()
    assert round_trip(tls_params(broker_tls, pki("ca.pem")), n=1)


def test_verify_peer_requires_client_certificate(broker_tls_verify, pki):
    with pytest.raises(HANDSHAKE_REFUSED):
        pika.BlockingConnection(tls_params(broker_tls_verify, pki("ca.pem")))
    assert round_trip(tls_params(broker_tls_verify, pki("ca.pem"), cert=pki("client")))
