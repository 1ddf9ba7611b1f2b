"""End-to-end: the C++ producer library (not the command) against a miniworker,
and across a broker restart (worker/examples/producer_reconnect.cpp).

worker/examples/producer_example.cpp is an application that links mb_client
and uses Producer::delay / apply_async / AsyncResult::get; it checks each
result itself and exits non-zero on any mismatch. Runs on each broker.
"""

import os
import shutil
import subprocess

from worker_helpers import BUILD

PRODUCER_EXAMPLE = os.path.join(BUILD, "worker", "examples", "producer_example")


def test_producer_library_round_trips(broker, start_worker, queue_name):
    start_worker()
    r = subprocess.run([PRODUCER_EXAMPLE, broker.url, queue_name],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 4, r.stdout
    assert all(line.startswith("ok ") for line in lines), r.stdout
    assert "add(5, 5) == 10: SUCCESS 10" in lines[0]


PRODUCER_RECONNECT = os.path.join(BUILD, "worker", "examples", "producer_reconnect")


def test_producer_library_across_a_broker_restart(own_broker, queue_name):
    """worker/examples/producer_reconnect.cpp: calls made after the restart complete."""
    from worker_helpers import Worker

    w = Worker(own_broker.url, queue_name, concurrency=2).start()
    p = subprocess.Popen([PRODUCER_RECONNECT, own_broker.url, queue_name, "20"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = []
        for line in p.stdout:
            lines.append(line)
            if line.startswith("restart now"):
                break
        assert lines and lines[-1].startswith("restart now"), "".join(lines)
        own_broker.restart()
        p.stdin.write("go\n")
        p.stdin.flush()
        out, _ = p.communicate(timeout=120)
        out = "".join(lines) + out
        assert p.returncode == 0, out + w.log()[-2000:]
        assert "ok before the restart: 20 of 20 right" in out
        assert "ok after the restart: 20 of 20 right" in out
        in_flight = [line for line in out.splitlines() if line.startswith("in flight: ")]
        assert len(in_flight) == 1, out
        assert in_flight[0] == "in flight: SUCCESS" or "the broker connection was lost" in in_flight[0], out
    finally:
        p.kill()
        w.stop()
        shutil.rmtree(w.dir, ignore_errors=True)
