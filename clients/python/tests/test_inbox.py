"""orderly.Inbox on real SQLite: claims and duplicates, and end to end
through a real broker and the package's Worker, with a redelivery after the
commit that the inbox turns into a skip."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import threading

import orderly
import pytest
from conftest import EXAMPLES, wait_for
from orderly.inbox import Inbox


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_claim_first_time_only_and_rollback_forgets(tmp_path):
    db = sqlite3.connect(tmp_path / "inbox.db", isolation_level=None)
    inbox = Inbox("my_inbox")
    db.executescript(inbox.schema("sqlite"))
    cur = db.cursor()
    cur.execute("BEGIN")
    assert inbox.claim(cur, ("shop", "o-1")) is True
    assert inbox.claim(cur, ("shop", "o-1")) is False
    assert inbox.claim(cur, ("other-shop", "o-1")) is True, "the key is (producer, order id)"
    cur.execute("COMMIT")
    cur.execute("BEGIN")
    assert inbox.once(cur, ("shop", "o-2"), lambda c: 42) == (True, 42)
    cur.execute("ROLLBACK")
    cur.execute("BEGIN")
    assert inbox.once(cur, ("shop", "o-2"), lambda c: 43) == (True, 43), "a rolled-back claim is forgotten"
    assert inbox.once(cur, ("shop", "o-2"), lambda c: pytest.fail("ran twice")) == (False, None)
    cur.execute("COMMIT")
    rows = db.execute("SELECT producer, order_id, processed_at FROM my_inbox ORDER BY 1, 2").fetchall()
    assert [r[:2] for r in rows] == [("other-shop", "o-1"), ("shop", "o-1"), ("shop", "o-2")]
    assert all(r[2] > 1_700_000_000_000 for r in rows), "processed_at is Unix ms"


def test_bad_arguments_say_what_to_do():
    with pytest.raises(orderly.ConfigError, match="not a plain identifier"):
        Inbox("Orders; DROP TABLE x")
    with pytest.raises(orderly.ConfigError, match="use 'sqlite' or 'postgres'"):
        Inbox().schema("mysql")
    with pytest.raises(orderly.ConfigError, match="paramstyle"):
        Inbox(paramstyle="named")

    class Cursor:
        pass

    with pytest.raises(orderly.ConfigError, match="Inbox\\(paramstyle='qmark'\\)"):
        Inbox().claim(Cursor(), ("shop", "o-1"))
    assert "timestamptz" in Inbox().schema("postgres")
    assert "CREATE TABLE IF NOT EXISTS orderly_inbox" in Inbox().schema("postgresql")


def test_redelivered_orders_are_applied_once(broker, python_worker, tmp_path):
    example = load_example("inbox_sqlite")
    path = str(tmp_path / "shop.db")
    apply = example.InboxHandler(path)
    orders = 40
    # Every 4th order fails after its transaction committed (as a crash
    # before the acknowledgement would): the broker delivers it again.
    failed_once = set()
    lock = threading.Lock()

    def handle(order: orderly.Order) -> None:
        apply(order)
        with lock:
            first = int(order.id.split("-")[1]) % 4 == 0 and order.id not in failed_once
            failed_once.add(order.id)
        if first:
            raise orderly.Retry(delay=0, reason="lost the acknowledgement")

    python_worker(handle, concurrency=4)
    with orderly.Producer("shop", broker.intake, broker.fanout) as producer:
        for n in range(orders):
            producer.send(f"o-{n}", [b'{"sku": "a", "qty": 1}'])
        producer.flush(timeout=20)
    db = sqlite3.connect(path)
    count = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
    wait_for("every order acknowledged", lambda: broker.acked() >= orders)
    assert count("SELECT COUNT(*) FROM applied") == orders
    assert count("SELECT COUNT(*) FROM applied WHERE times <> 1") == 0, "an order was applied twice"
    assert count("SELECT COUNT(*) FROM orderly_inbox") == orders
    assert count("SELECT COUNT(*) FROM deliveries") == orders + orders // 4, "the redeliveries reached the handler"
