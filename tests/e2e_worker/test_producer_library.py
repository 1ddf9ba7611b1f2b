"""End-to-end: the C++ producer library (not the command) against a miniworker.
(Across a broker restart: worker/examples/producer_reconnect.cpp, run by
test_task_runtime.py's broker restart test, which restarts the broker anyway.)

worker/examples/producer_example.cpp is an application that links mb_client
and uses Producer::delay / apply_async / AsyncResult::get; it checks each
result itself and exits non-zero on any mismatch. Runs on each broker.
"""

import os
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

