"""Fixtures: real orderly binaries (ORDERLY_BIN_DIR, default
<repo>/target/debug) on loopback ports chosen at run time. Every process a
test starts is killed by its PID when the test ends, pass or fail."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import threading

import orderly
import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BIN_DIR = os.environ.get("ORDERLY_BIN_DIR") or os.path.join(REPO, "target", "debug")
EXAMPLES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "examples"))


def binary(name: str) -> str:
    path = os.path.join(BIN_DIR, name)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} not found: build it (cargo build) or set ORDERLY_BIN_DIR to the directory holding it")
    return path


# Tries of a broker's first start when a picked port was taken meanwhile.
FIRST_START_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout: float = 20.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Procs:
    """Processes started by one test; all killed (by PID) at its end."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.procs = []

    def start(self, name: str, args: list, **kwargs) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")
        kwargs.setdefault("stdout", log)
        kwargs.setdefault("stderr", log)
        proc = subprocess.Popen(args, stdin=kwargs.pop("stdin", subprocess.DEVNULL), **kwargs)
        proc.log_path = self.tmp / f"{name}.log"
        self.procs.append(proc)
        return proc

    def kill_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    yield p
    p.kill_all()


class Broker:
    """One orderly-broker on run-time ports; restartable (same ports, data)."""

    def __init__(self, procs: Procs, name: str = "broker", extra: list | None = None):
        self.procs = procs
        self.name = name
        self.extra = list(extra or [])
        self._pick_ports()
        self.data_dir = procs.tmp / f"{name}-data"
        self.starts = 0
        self.proc = None

    def _pick_ports(self):
        port = free_port
        self.intake = f"tcp://127.0.0.1:{port()}"
        self.fanout = f"tcp://127.0.0.1:{port()}"
        self.control = f"tcp://127.0.0.1:{port()}"
        self.admin = f"127.0.0.1:{port()}"

    def start(self):
        # A port free when picked can be taken (by another test's outgoing
        # connection) before the broker binds it: the first start picks
        # new ports and tries again; a restart keeps its ports.
        first = self.starts == 0
        for attempt in range(FIRST_START_ATTEMPTS):
            self.starts += 1
            args = [
                binary("orderly-broker"), "run", "--data-dir", str(self.data_dir), "--intake", self.intake,
                "--fanout", self.fanout, "--control", self.control, "--admin", self.admin,
                "--heartbeat-interval-ms", "200",
            ] + self.extra
            self.proc = self.procs.start(f"{self.name}.{self.starts}", args)
            try:
                wait_for("the broker's admin endpoint", self._ready)
                return self
            except AssertionError as e:
                if not (first and "already in use" in str(e)) or attempt + 1 == FIRST_START_ATTEMPTS:
                    raise
                self._pick_ports()
        raise AssertionError("unreachable")

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"the broker exited {self.proc.returncode}: {self.proc.log_path.read_text()[-2000:]}")
        try:
            self.status()
            return True
        except OSError:
            return False

    def get(self, path: str):
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as answer:
            return json.load(answer)

    def status(self) -> dict:
        return self.get("/status")

    def dlq(self) -> list:
        return self.get("/dlq")

    def acked(self) -> int:
        return self.status()["counters"].get("orders_acked", 0)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def broker(procs):
    return Broker(procs).start()


@pytest.fixture
def make_broker(procs):
    def make(**kwargs):
        return Broker(procs, **kwargs)

    return make


def items_sha256(items: list) -> str:
    """The checksum the Rust sink writes to deliveries.log."""
    h = hashlib.sha256()
    for item in items:
        h.update(len(item).to_bytes(4, "big"))
        h.update(item)
    return h.hexdigest()


def sink_deliveries(sink_dir) -> dict:
    """(producer, order id) -> set of item checksums from a sink's log."""
    out = {}
    path = os.path.join(sink_dir, "deliveries.log")
    if not os.path.exists(path):
        return out
    for line in open(path, encoding="utf-8"):
        fields = line.rstrip("\n").split("\t")
        if len(fields) >= 4:
            out.setdefault((fields[0], fields[1]), set()).add(fields[3])
    return out


PYTHON = sys.executable


@pytest.fixture
def python_worker_on():
    """start(broker, handler, worker_id="pw1", **options): a Python Worker
    running in a thread; stopped (and checked to stop) at the test's end."""
    started = []

    def start(broker, handler, worker_id="pw1", **kwargs):
        kwargs.setdefault("heartbeat_interval", 0.2)
        worker = orderly.Worker(worker_id, broker.fanout, broker.control, handler=handler, **kwargs)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append((worker, thread))
        return worker

    yield start
    for worker, thread in started:
        worker.stop()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the worker did not stop within 10 s"


@pytest.fixture
def python_worker(broker, python_worker_on):
    """start(handler, **options): a Python Worker on `broker`."""
    return lambda handler, **kwargs: python_worker_on(broker, handler, **kwargs)
