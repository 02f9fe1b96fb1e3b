"""Worker throughput: a Rust `--noop` worker against Python workers, on one
workload (a broker on free loopback ports, `orderly-producer bench`).

    python bench/worker_bench.py --bin /tmp/orderly-rel --orders 30000 --runs 3 \
        --workers rust-noop,python,python-inline,serve [--concurrency 16] [--preload]

`python` is the Worker with its pool of `concurrency` handler threads,
`python-inline` with inline=True, `serve` a Rust worker with --serve
examples/serve_ack.py. For each run: a fresh broker, the worker, then the producer; the time is
from the producer's start until the broker's /status counts every order
acked. With --preload the orders are queued first (no worker) and the time
runs from the worker's start: the worker's own speed, not the producer's.
Prints orders/s per run and the median per worker.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "examples")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def acked(admin: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{admin}/status", timeout=5) as answer:
            return json.load(answer)["counters"]["orders_acked"]
    except OSError:
        return -1


def worker_command(kind: str, bin_dir: str, fanout: str, control: str, concurrency: int) -> list:
    common = ["--id", "bench-w1", "--fanout", fanout, "--control", control, "--concurrency", str(concurrency)]
    if kind == "rust-noop":
        return [f"{bin_dir}/orderly-worker", "run", *common, "--noop", "--log-level", "warn"]
    if kind == "python":
        return [sys.executable, f"{EXAMPLES}/worker_noop.py", *common, "--threads"]
    if kind == "python-inline":
        return [sys.executable, f"{EXAMPLES}/worker_noop.py", *common, "--inline"]
    if kind == "serve":
        serve = f"{shlex.quote(sys.executable)} {shlex.quote(EXAMPLES + '/serve_ack.py')}"
        return [f"{bin_dir}/orderly-worker", "run", *common, "--serve", serve, "--log-level", "warn"]
    raise SystemExit(f"unknown worker kind {kind!r}: rust-noop, python, python-inline or serve")


def one_run(args, kind: str) -> float:
    work = tempfile.mkdtemp(prefix="orderly-pybench.")
    intake, fanout, control = (f"tcp://127.0.0.1:{free_port()}" for _ in range(3))
    admin = f"127.0.0.1:{free_port()}"
    procs = []
    ok = False
    log = open(os.path.join(work, "log"), "ab")
    try:
        broker = subprocess.Popen([
            f"{args.bin}/orderly-broker", "run", "--data-dir", f"{work}/data", "--intake", intake, "--fanout", fanout,
            "--control", control, "--admin", admin, "--log-level", "warn",
        ], stdout=log, stderr=log)
        procs.append(broker)
        deadline = time.monotonic() + 20
        while acked(admin) < 0:
            if time.monotonic() > deadline:
                raise SystemExit("the broker did not come up")
            time.sleep(0.05)
        producer_args = [
            f"{args.bin}/orderly-producer", "bench", "--id", "bench-p1", "--intake", intake, "--fanout", fanout,
            "--orders", str(args.orders), "--items", str(args.items), "--item-bytes", str(args.item_bytes),
            "--timeout", "120",
        ]
        worker_args = worker_command(kind, args.bin, fanout, control, args.concurrency)
        if args.preload:
            producer = subprocess.Popen(producer_args, stdout=log, stderr=log)
            procs.append(producer)
            if producer.wait(timeout=300) != 0:
                raise SystemExit(f"the producer failed; see {work}/log")
            t0 = time.monotonic()
            procs.append(subprocess.Popen(worker_args, stdout=log, stderr=log))
        else:
            procs.append(subprocess.Popen(worker_args, stdout=log, stderr=log))
            time.sleep(1.5)  # welcomed
            t0 = time.monotonic()
            procs.append(subprocess.Popen(producer_args, stdout=log, stderr=log))
        deadline = time.monotonic() + 600
        while acked(admin) < args.orders:
            if time.monotonic() > deadline:
                raise SystemExit(f"not every order acked in time; see {work}/log")
            time.sleep(0.02)
        rate = args.orders / (time.monotonic() - t0)
        ok = True
        return rate
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        log.close()
        # A failed run keeps its directory: the error message points at its log.
        if ok:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default="target/release", help="directory of the orderly binaries")
    parser.add_argument("--orders", type=int, default=30000)
    parser.add_argument("--items", type=int, default=10)
    parser.add_argument("--item-bytes", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", default="rust-noop,python")
    parser.add_argument("--preload", action="store_true")
    args = parser.parse_args()
    for kind in args.workers.split(","):
        rates = [one_run(args, kind) for _ in range(args.runs)]
        shown = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"{kind:14} median {statistics.median(rates):>9,.0f} orders/s  (runs: {shown})", flush=True)


if __name__ == "__main__":
    main()
