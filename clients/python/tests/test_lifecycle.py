"""Broker restarts, and workers draining on stop() and SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time

import orderly
from conftest import wait_for


def test_orders_lost_in_a_broker_crash_are_resent_on_restart(broker):
    # confirm_timeout is long: only the restart (a new incarnation in the
    # broker's heartbeats) can make them go again in time.
    with orderly.Producer("p", broker.intake, broker.fanout, confirm_timeout=60) as producer:
        producer.send("before", [b"0"]).wait(timeout=10)
        # The producer learns the broker's incarnation from its heartbeats
        # (every 200 ms here): a crash before the first one is covered by
        # the confirm timeout only.
        wait_for("a broker heartbeat", lambda: producer.counters["heartbeats"] > 0, timeout=5)
        broker.proc.send_signal(signal.SIGSTOP)  # it takes nothing in now ...
        receipts = [producer.send(f"o{n}", [str(n).encode()]) for n in range(20)]
        time.sleep(0.5)  # ... while they go out into its socket
        assert not any(r.done() for r in receipts)
        broker.kill9()  # ... and are lost with it
        broker.start()
        for receipt in receipts:
            receipt.wait(timeout=20)
    assert broker.status()["pending_orders"] == 21  # with "before"


def test_stop_drains_running_orders(broker, python_worker):
    started = threading.Event()

    def slow(order):
        started.set()
        time.sleep(1.0)

    worker = python_worker(slow, concurrency=3)
    with orderly.Producer("p", broker.intake, broker.fanout) as producer:
        for n in range(3):
            producer.send(f"o{n}", [b"1"]).wait(timeout=10)
    assert started.wait(timeout=10)
    time.sleep(0.1)  # every order running
    stopped_at = time.monotonic()
    worker.stop()
    wait_for("the worker's acks", lambda: broker.acked() == 3, timeout=10)
    assert time.monotonic() - stopped_at >= 0.5, "the running orders were not waited for"
    wait_for("the worker's bye", lambda: broker.status()["workers"] == [], timeout=10)
    assert broker.status()["pending_orders"] == 0


WORKER_SCRIPT = textwrap.dedent(
    """
    import sys, time, orderly
    fanout, control, marker = sys.argv[1:4]
    def handler(order):
        open(marker, "a").write(order.id + "\\n")
        time.sleep(1.5)
    orderly.Worker("sig-w", fanout, control, handler=handler, concurrency=2, heartbeat_interval=0.2).run()
    print("drained", flush=True)
    """
)


def test_sigterm_drains(broker, procs, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    marker = tmp_path / "started"
    worker = procs.start(
        "py-worker", [sys.executable, str(script), broker.fanout, broker.control, str(marker)], stdout=subprocess.PIPE
    )
    with orderly.Producer("p", broker.intake, broker.fanout) as producer:
        for n in range(2):
            producer.send(f"o{n}", [b"1"]).wait(timeout=10)
    wait_for("both orders running", lambda: marker.exists() and len(marker.read_text().split()) == 2, timeout=10)
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=15)
    assert worker.returncode == 0
    assert b"drained" in out
    assert broker.acked() == 2, "SIGTERM must let running orders finish and ack"
