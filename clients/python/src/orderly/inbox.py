"""The inbox: handle an order once in effect, although the broker may
deliver it more than once (at-least-once: a redelivery after a worker died
or missed its heartbeats).

The handler records the order's key (producer, order id) in an inbox table
*in the same database transaction* as its business change; the insert says
whether the key is new, and on a duplicate the handler skips the work and
still returns (acknowledges). The key and the change commit together or not
at all. The same table and SQL as the Rust worker's ``orderly_worker::inbox``.

Works with any DB-API cursor of sqlite3 (stdlib, ``?`` parameters) or
psycopg 3 (``%s``), chosen from the cursor's module; other drivers pass
``paramstyle="qmark"`` or ``"format"``::

    import sqlite3, orderly
    from orderly.inbox import Inbox

    inbox = Inbox()                      # table orderly_inbox
    db = sqlite3.connect("shop.db", isolation_level=None, check_same_thread=False)
    db.executescript(inbox.schema("sqlite"))

    def handle(order: orderly.Order) -> None:
        cur = db.cursor()
        cur.execute("BEGIN IMMEDIATE")   # take the write lock first
        try:
            if inbox.claim(cur, order):  # False: done before, skip the work
                cur.execute("UPDATE stock SET qty = qty - 1 WHERE sku = 'a'")
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

Concurrency: the same order can run on two workers at once. On PostgreSQL
(READ COMMITTED) the second insert waits for the first transaction and
then sees its outcome (skip if it committed, claim if it rolled back);
under REPEATABLE READ or SERIALIZABLE it raises a serialization error
instead: let it propagate, the order is retried. On SQLite writers are
serialised by the database lock: begin with ``BEGIN IMMEDIATE`` and give
the connection a busy timeout (``sqlite3.connect(..., timeout=10)``).
"""

from __future__ import annotations

import re

from .errors import ConfigError

#: The inbox table's default name.
TABLE_DEFAULT = "orderly_inbox"
#: Longest table name (PostgreSQL's identifier limit).
TABLE_NAME_BYTES_MAX = 63

_TABLE = re.compile(r"[a-z_][a-z0-9_]*\Z")
_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}
_PROCESSED_AT = {
    "postgres": "processed_at timestamptz NOT NULL DEFAULT now()",
    # Unix ms; julianday because unixepoch('subsec') needs SQLite 3.42.
    "sqlite": "processed_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))",
}


class Inbox:
    """The inbox of one table (``[a-z_][a-z0-9_]*``, it goes into SQL)."""

    def __init__(self, table: str = TABLE_DEFAULT, paramstyle: str | None = None):
        if not isinstance(table, str) or not _TABLE.match(table) or len(table) > TABLE_NAME_BYTES_MAX:
            raise ConfigError(
                f"inbox table name {table!r} is not a plain identifier: use lower-case letters, digits and _, "
                f"starting with a letter or _, at most {TABLE_NAME_BYTES_MAX} bytes (e.g. {TABLE_DEFAULT})"
            )
        if paramstyle is not None and paramstyle not in _PLACEHOLDER:
            raise ConfigError(f"paramstyle {paramstyle!r}: use one of {sorted(_PLACEHOLDER)}")
        self.table = table
        self.paramstyle = paramstyle

    def schema(self, dialect: str) -> str:
        """``CREATE TABLE IF NOT EXISTS`` for ``"sqlite"`` or ``"postgres"``."""
        key = "postgres" if dialect == "postgresql" else dialect
        if key not in _PROCESSED_AT:
            raise ConfigError(f"inbox dialect {dialect!r}: use 'sqlite' or 'postgres'")
        return (
            "-- orderly inbox: one row per order handled, written in the handler's transaction.\n"
            f"CREATE TABLE IF NOT EXISTS {self.table} (\n"
            "    producer text NOT NULL,\n"
            "    order_id text NOT NULL,\n"
            f"    {_PROCESSED_AT[key]},\n"
            "    PRIMARY KEY (producer, order_id)\n"
            ");\n"
        )

    def claim(self, cursor, order) -> bool:
        """Inserts the order's key with ``cursor``, inside the caller's
        transaction: True the first time, False if it is already there
        (skip the work). ``order`` is an :class:`orderly.Order` or a
        ``(producer, order_id)`` pair."""
        producer, order_id = _key(order)
        mark = _PLACEHOLDER[self.paramstyle or _paramstyle(cursor)]
        cursor.execute(
            f"INSERT INTO {self.table} (producer, order_id) VALUES ({mark}, {mark}) "
            "ON CONFLICT (producer, order_id) DO NOTHING",
            (producer, order_id),
        )
        return cursor.rowcount == 1

    def once(self, cursor, order, work):
        """Calls ``work(cursor)`` only if the order is new to the inbox;
        returns ``(True, its result)``, or ``(False, None)`` for a duplicate."""
        if not self.claim(cursor, order):
            return False, None
        return True, work(cursor)


def _key(order) -> tuple[str, str]:
    if isinstance(order, tuple) and len(order) == 2:
        return order
    try:
        return order.producer, order.id
    except AttributeError:
        raise ConfigError(f"inbox: {order!r} is neither an orderly.Order nor a (producer, order_id) pair") from None


def _paramstyle(cursor) -> str:
    module = type(cursor).__module__.split(".")[0]
    if module in ("sqlite3", "_sqlite3"):
        return "qmark"
    if module == "psycopg":
        return "format"
    raise ConfigError(
        f"inbox: cannot tell the parameter style of a {type(cursor).__module__}.{type(cursor).__name__} cursor: "
        "pass Inbox(paramstyle='qmark') or Inbox(paramstyle='format')"
    )
