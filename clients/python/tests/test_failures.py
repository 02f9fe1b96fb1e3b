"""Nacks (Retry, Fatal, exceptions), rejects and backpressure, end to end."""

from __future__ import annotations

import time

import orderly
import pytest
from conftest import wait_for


def test_retry_with_delay_then_attempt_two(broker, python_worker):
    seen = []

    def handler(order):
        seen.append((order.attempt, order.redelivered, time.monotonic()))
        if order.attempt == 1:
            raise orderly.Retry(delay=1.0, reason="try later")

    python_worker(handler)
    with orderly.Producer("p", broker.intake, broker.fanout) as producer:
        producer.send("r1", [b"1"]).wait(timeout=10)
    wait_for("the second attempt", lambda: len(seen) >= 2, timeout=15)
    (a1, r1, t1), (a2, r2, t2) = seen[:2]
    assert (a1, r1, a2, r2) == (1, False, 2, True)
    assert t2 - t1 >= 0.9, f"the retry came after {t2 - t1:.3f} s, before the 1 s asked for"
    wait_for("the ack of attempt 2", lambda: broker.acked() == 1, timeout=10)


def test_fatal_dead_letters_at_once(broker, python_worker):
    calls = []

    def handler(order):
        calls.append(order.attempt)
        raise orderly.Fatal("bad order: no such sku")

    python_worker(handler)
    with orderly.Producer("p", broker.intake, broker.fanout) as producer:
        producer.send("f1", [b'{"sku": 0}']).wait(timeout=10)
    dead = wait_for("a dead letter", lambda: broker.dlq(), timeout=10)
    assert [(d["producer"], d["id"]) for d in dead] == [("p", "f1")]
    assert "no such sku" in dead[0]["reason"]
    assert calls == [1]


def test_an_exception_is_retried(make_broker, python_worker_on):
    broker = make_broker(extra=["--retry-delay-initial-ms", "100"]).start()
    calls = []

    def handler(order):
        calls.append(order.attempt)
        if order.attempt < 3:
            raise ValueError("flaky database")

    python_worker_on(broker, handler)
    with orderly.Producer("p", broker.intake, broker.fanout) as producer:
        producer.send("e1", [b"1"]).wait(timeout=10)
    wait_for("the ack of attempt 3", lambda: broker.acked() == 1, timeout=15)
    assert calls == [1, 2, 3]


def test_oversize_order_is_rejected(make_broker):
    broker = make_broker(extra=["--order-bytes-max", "1000"]).start()
    with orderly.Producer("p", broker.intake, broker.fanout) as producer:
        receipt = producer.send("big", [b'"' + b"x" * 2000 + b'"'])
        with pytest.raises(orderly.Rejected) as raised:
            receipt.wait(timeout=10)
        assert raised.value.kind == "too_large"
        assert "too_large" in raised.value.reason
        producer.send("small", [b"1"]).wait(timeout=10)


def test_bad_ids_and_items_are_config_errors(broker):
    with pytest.raises(orderly.ConfigError, match="A-Z a-z 0-9"):
        orderly.Producer("bad id!", broker.intake, broker.fanout)
    with orderly.Producer("p", broker.intake, broker.fanout) as producer:
        with pytest.raises(orderly.ConfigError, match="1 to 256 bytes"):
            producer.send("", [b"1"])
        with pytest.raises(orderly.ConfigError, match="1 to 256 bytes"):
            producer.send("x" * 257, [b"1"])
        with pytest.raises(orderly.ConfigError, match="items are bytes"):
            producer.send("o", ["text"])
        with pytest.raises(orderly.ConfigError, match="the limit is 1048576"):
            producer.send("o", [b"x" * (1024 * 1024 + 1)])


def test_backpressure_carries_the_brokers_reason(make_broker):
    broker = make_broker(extra=["--pending-orders-max", "2"]).start()
    with orderly.Producer("p", broker.intake, broker.fanout, send_timeout=1, outbox_orders_max=3) as producer:
        # o0 and o1 reach the bound; o2 goes after their confirms, in a
        # message of its own (orders sent together may go in one `orders`
        # batch, which a broker below the bound takes whole).
        receipts = [producer.send(f"o{n}", [b"1"]) for n in range(2)]
        receipts[0].wait(timeout=10)
        receipts[1].wait(timeout=10)
        receipts.append(producer.send("o2", [b"1"]))
        with pytest.raises(orderly.Backpressure) as raised:
            receipts[2].wait(timeout=2)
        assert raised.value.reason == "pending_orders"
        assert isinstance(raised.value, TimeoutError)
        # The outbox bound: a 4th order waits for room, then gives up.
        producer.send("o3", [b"1"])
        producer.send("o4", [b"1"])
        started = time.monotonic()
        with pytest.raises(orderly.Backpressure, match="unconfirmed") as raised:
            producer.send("o5", [b"1"])
        assert 0.9 <= time.monotonic() - started < 5, "send waits send_timeout for room, then gives up"
        assert raised.value.reason == "pending_orders"
        producer.close(timeout=0)


def test_no_broker_is_a_timeout_not_a_hang(procs):
    from conftest import free_port

    started = time.monotonic()
    with pytest.raises(TimeoutError, match="no answer from a broker"):
        orderly.Producer("p", f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}", handshake_timeout=0.5)
    assert time.monotonic() - started < 5
