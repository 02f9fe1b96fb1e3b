"""A Worker that applies each order once in effect, with orderly.Inbox on SQLite.

    python3 examples/inbox_sqlite.py --id w1 --fanout tcp://127.0.0.1:5571 \
        --control tcp://127.0.0.1:5572 --database shop.db [--concurrency 4]

Per order, in ONE transaction: count the delivery (`deliveries`, duplicates
included), claim the order in the inbox and, only the first time, add one
to `applied.times` (a double apply would show 2). Then commit, then return
(acknowledge). A crash between the commit and the acknowledgement makes
the broker deliver the order again: the delivery is counted, the business
change is not repeated. The Rust twin: worker/examples/inbox.rs.
"""

from __future__ import annotations

import argparse
import sqlite3
import threading

import orderly
from orderly.inbox import Inbox

#: Seconds an SQLite writer waits for the database lock.
SQLITE_BUSY_TIMEOUT = 10.0

BUSINESS_SCHEMA = """
CREATE TABLE IF NOT EXISTS applied (
    producer text NOT NULL, order_id text NOT NULL, items bigint NOT NULL, times bigint NOT NULL,
    PRIMARY KEY (producer, order_id)
);
CREATE TABLE IF NOT EXISTS deliveries (producer text NOT NULL, order_id text NOT NULL, attempt bigint NOT NULL);
"""


class InboxHandler:
    """The handler: one SQLite connection per pool thread."""

    def __init__(self, path: str, inbox: Inbox | None = None):
        self.path = path
        self.inbox = inbox or Inbox()
        self.local = threading.local()
        with self._connect() as db:
            db.executescript(self.inbox.schema("sqlite") + BUSINESS_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we say BEGIN and COMMIT ourselves.
        return sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None)

    def __call__(self, order: orderly.Order) -> None:
        db = getattr(self.local, "db", None)
        if db is None:
            db = self.local.db = self._connect()
        cur = db.cursor()
        cur.execute("BEGIN IMMEDIATE")  # the write lock first: a second writer waits
        try:
            cur.execute(
                "INSERT INTO deliveries (producer, order_id, attempt) VALUES (?, ?, ?)",
                (order.producer, order.id, order.attempt),
            )
            if self.inbox.claim(cur, order):
                cur.execute(
                    "INSERT INTO applied (producer, order_id, items, times) VALUES (?, ?, ?, 1) "
                    "ON CONFLICT (producer, order_id) DO UPDATE SET times = applied.times + 1",
                    (order.producer, order.id, len(order.items)),
                )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--id", required=True, help="worker id (1-64 of A-Za-z0-9._-)")
    parser.add_argument("--fanout", help="the broker's fanout endpoint")
    parser.add_argument("--control", help="the broker's control endpoint")
    parser.add_argument("--group", help="a broker group file instead of --fanout/--control")
    parser.add_argument("--database", required=True, help="the SQLite file (created if missing)")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    handler = InboxHandler(args.database)
    orderly.Worker(
        args.id, args.fanout, args.control, handler=handler, concurrency=args.concurrency, group=args.group
    ).run()


if __name__ == "__main__":
    main()
