"""Orders across Python and Rust producers and workers, items exact."""

from __future__ import annotations

import json
import threading
import time

import orderly
import pytest
from conftest import binary, items_sha256, sink_deliveries, wait_for


class Collecting:
    """A handler that records what it got (thread-safe)."""

    def __init__(self, answer=None):
        self.lock = threading.Lock()
        self.orders = []
        self.answer = answer

    def __call__(self, order: orderly.Order):
        with self.lock:
            self.orders.append(order)
        if self.answer is not None:
            self.answer(order)

    def by_key(self):
        with self.lock:
            return {(o.producer, o.id): o for o in self.orders}


def sample_items(n: int) -> list:
    return [json.dumps({"n": n, "i": i, "text": "ünïcode ✓"}, ensure_ascii=False).encode() for i in range(3)]


def test_python_producer_to_rust_sink_worker(broker, procs, tmp_path):
    sink = tmp_path / "sink"
    procs.start("sink-worker", [
        binary("orderly-worker"), "run", "--id", "w1", "--fanout", broker.fanout, "--control", broker.control,
        "--heartbeat-interval-ms", "200", "--concurrency", "4", "--sink", str(sink),
    ])
    sent = {}
    with orderly.Producer("py-shop", broker.intake, broker.fanout) as producer:
        receipts = []
        for n in range(50):
            order_id = f"o-{n}" if n % 5 else f"o/{n} needs escaping"
            items = sample_items(n)
            sent[order_id] = items
            receipts.append(producer.send(order_id, items))
        big = [b'"' + b"x" * (200 * 1024) + b'"' for _ in range(3)]  # > 256 KiB: several frames
        sent["big"] = big
        receipts.append(producer.send("big", big))
        for receipt in receipts:
            receipt.wait(timeout=20)
    wait_for("every order in the sink", lambda: len(sink_deliveries(sink)) >= len(sent), timeout=20)
    delivered = sink_deliveries(sink)
    for order_id, items in sent.items():
        safe = _file_safe(order_id)
        assert delivered[("py-shop", safe)] == {items_sha256(items)}, order_id


def _file_safe(text: str) -> str:
    out = []
    for index, byte in enumerate(text.encode()):
        c = chr(byte)
        if (c.isascii() and c.isalnum()) or c in "_-" or (c == "." and index > 0):
            out.append(c)
        else:
            out.append("%%%02X" % byte)
    return "".join(out)


def test_rust_producer_to_python_worker(broker, procs, tmp_path, python_worker):
    handler = Collecting()
    python_worker(handler, concurrency=4)
    lines, expected = [], {}
    for n in range(40):
        raws = [json.dumps({"sku": f"S-{n}", "qty": n}), '{"spaced" :  [1 , 2] }', json.dumps("tab\t✓")]
        order_id = f"r-{n}"
        expected[order_id] = [r.encode() for r in raws]
        lines.append('{"id": ' + json.dumps(order_id) + ', "items": [' + ", ".join(raws) + "]}")
    orders_file = tmp_path / "orders.jsonl"
    orders_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sender = procs.start("rust-producer", [
        binary("orderly-producer"), "send", "--id", "rs", "--intake", broker.intake, "--fanout", broker.fanout,
        "--file", str(orders_file), "--timeout", "20",
    ])
    assert sender.wait(timeout=30) == 0, sender.log_path.read_text()
    wait_for("every order handled", lambda: len(handler.by_key()) >= len(expected), timeout=20)
    got = handler.by_key()
    for order_id, items in expected.items():
        order = got[("rs", order_id)]
        assert order.items == items
        assert (order.attempt, order.redelivered) == (1, False)
    wait_for("every order acked", lambda: broker.acked() >= len(expected), timeout=10)


@pytest.mark.parametrize("inline", [False, True])
def test_rust_bench_to_python_worker(broker, procs, python_worker, inline):
    handler = Collecting()
    python_worker(handler, concurrency=16, inline=inline)
    bench = procs.start("bench", [
        binary("orderly-producer"), "bench", "--id", "bench", "--intake", broker.intake, "--fanout", broker.fanout,
        "--orders", "500", "--items", "3", "--item-bytes", "50", "--timeout", "30",
    ])
    assert bench.wait(timeout=60) == 0, bench.log_path.read_text()
    wait_for("500 orders acked", lambda: broker.acked() >= 500, timeout=30)
    order = next(iter(handler.by_key().values()))
    assert len(order.items) == 3 and all(len(item) == 50 for item in order.items)


@pytest.mark.parametrize("dispatches_max", [0, 64])
def test_python_worker_takes_dispatch_batches_only_when_it_asks(broker, procs, python_worker, dispatches_max):
    """Since 0.5: a worker with dispatches_max >= 2 gets several orders per
    message from the real broker (each handled and acked on its own); one
    with 0 gets one `dispatch` per order, as workers before 0.5."""
    handler = Collecting()
    worker = python_worker(handler, concurrency=16, dispatches_max=dispatches_max)
    bench = procs.start("bench", [
        binary("orderly-producer"), "bench", "--id", "bench", "--intake", broker.intake, "--fanout", broker.fanout,
        "--orders", "500", "--items", "1", "--item-bytes", "10", "--timeout", "30",
    ])
    assert bench.wait(timeout=60) == 0, bench.log_path.read_text()
    wait_for("500 orders acked", lambda: broker.acked() >= 500, timeout=30)
    assert len(handler.by_key()) == 500
    if dispatches_max:
        assert worker.counters["dispatch_batches"] > 0
    else:
        assert worker.counters["dispatch_batches"] == 0


def test_python_to_python_with_binary_items(broker, python_worker):
    handler = Collecting()
    python_worker(handler, concurrency=2)
    items = [bytes(range(256)), b"", b"\xff\xfe not utf-8"]
    with orderly.Producer("pp", broker.intake, broker.fanout, one_frame_per_item=True) as producer:
        producer.send("bin-1", items).wait(timeout=10)
        producer.send("packed-1", items[:1]).wait(timeout=10)
    wait_for("both orders handled", lambda: len(handler.by_key()) == 2, timeout=10)
    assert handler.by_key()[("pp", "bin-1")].items == items
    wait_for("both acked", lambda: broker.acked() == 2, timeout=10)
