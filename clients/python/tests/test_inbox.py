"""orderly.Inbox on real SQLite: claims and duplicates, and end to end
through a real broker and the package's Worker, with a redelivery after the
commit that the inbox turns into a skip."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import sqlite3
import subprocess
import tempfile
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


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for version in sorted(os.listdir("/usr/lib/postgresql"), reverse=True) if os.path.isdir("/usr/lib/postgresql") else []:
        path = f"/usr/lib/postgresql/{version}/bin/{name}"
        if os.access(path, os.X_OK):
            return path
    pytest.fail(f"{name} not found: install PostgreSQL (apt-get install -y postgresql, as scripts/setup.sh does)")


def _as_postgres(args: list) -> list:
    # PostgreSQL refuses to run as root (CI runs as root).
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture
def postgres_url():
    """A private PostgreSQL (initdb + pg_ctl on a free port), stopped and
    removed at the end. In /tmp, not pytest's tmp_path: the postgres user
    must reach it (pytest's base directory is root's alone)."""
    from conftest import free_port

    base = pathlib.Path(tempfile.mkdtemp(prefix="orderly-pg-"))
    data = base / "data"
    data.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", str(base)], check=True)
    port = free_port()
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = _pg_bin("pg_ctl")
    try:
        subprocess.run(
            _as_postgres([_pg_bin("initdb"), "-A", "trust", "-U", "postgres", "--no-sync", "-D", str(data)]),
            check=True, stdout=subprocess.DEVNULL, timeout=120,
        )
        subprocess.run(
            _as_postgres([pg_ctl, "-w", "-t", "30", "-o", options, "-l", str(base / "server.log"), "-D", str(data),
                          "start"]),
            check=True, stdout=subprocess.DEVNULL, timeout=60,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-m", "immediate", "-D", str(data), "stop"]), stdout=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_postgres_claims_and_a_concurrent_duplicate_waits(postgres_url):
    psycopg = pytest.importorskip("psycopg")
    inbox = Inbox()
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(inbox.schema("postgres"))
    with psycopg.connect(postgres_url) as first, psycopg.connect(postgres_url) as second:
        cur = first.cursor()
        assert inbox.claim(cur, ("shop", "o-1")) is True, "psycopg's %s parameters are chosen from the cursor"
        assert inbox.claim(cur, ("shop", "o-1")) is False
        # The same order in a second transaction while the first is open:
        # the insert waits for the first transaction, then sees its commit.
        answer = []
        other = threading.Thread(target=lambda: answer.append(inbox.claim(second.cursor(), ("shop", "o-1"))))
        other.start()
        other.join(timeout=0.5)
        assert other.is_alive(), "the second claim must wait for the first transaction"
        first.commit()
        other.join(timeout=10)
        assert answer == [False]
        second.commit()
        # A rolled-back claim is forgotten.
        assert inbox.once(cur, ("shop", "o-2"), lambda c: 1) == (True, 1)
        first.rollback()
        assert inbox.once(cur, ("shop", "o-2"), lambda c: 2) == (True, 2)
        first.commit()
        assert cur.execute("SELECT COUNT(*) FROM orderly_inbox").fetchone()[0] == 2
