"""orderly.serve: the handler side of ``orderly-worker run --serve CMD``.

The worker writes one order per line on our stdin (the order object of
common/src/order_json.rs) and reads one answer per line from our stdout:
``{"producer":…,"id":…,"result":"ack"}`` or ``…"result":"nack","retry":…,
"delay_ms":…,"reason":…}``. We read stdin in large chunks, run the handler
for every complete line and write the answers of a chunk in one write.

Items reach the handler as bytes: a JSON item exactly as the producer sent
it (its bytes are cut out of the line, whitespace and all), an item the
worker sent as ``{"base64": …}`` (listed in ``base64_items``) decoded to its
raw bytes. Should a line not have the exact shape the worker writes, it is
parsed as plain JSON and its JSON items re-encoded compactly instead.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading

from ._order import Order, outcome_of

#: Bytes read from stdin at once.
READ_CHUNK_BYTES = 1 << 20
#: Longest line accepted (the worker's SERVE_LINE_BYTES_MAX is for our
#: answers; an order line may be a whole 16 MiB order, rendered as JSON
#: with base64 items: 4/3 of that, plus framing).
ORDER_LINE_BYTES_MAX = 32 * 1024 * 1024

_decoder = json.JSONDecoder()
_raw_decode = _decoder.raw_decode
_WHITESPACE = " \t\n\r"


def _expect(line: str, at: int, text: str) -> int:
    if not line.startswith(text, at):
        raise ValueError(f"expected {text!r} at {at}")
    return at + len(text)


def _skip_ws(line: str, at: int) -> int:
    while at < len(line) and line[at] in _WHITESPACE:
        at += 1
    return at


def parse_order_line(line: str) -> Order:
    """An Order from one line the worker wrote (without its newline)."""
    try:
        return _parse_exact(line)
    except (ValueError, IndexError, KeyError, TypeError):
        return _parse_loose(line)


class _LineOrder(Order):
    """An Order whose items are cut out of its line only when first read:
    a handler that never looks at them costs no item parsing."""

    __slots__ = ("_line", "_at", "_items")

    def __init__(self, producer, order_id, attempt, redelivered, line, at):
        self.producer, self.id, self.attempt, self.redelivered = producer, order_id, attempt, redelivered
        self._line, self._at, self._items = line, at, None

    @property
    def items(self) -> list:
        if self._items is None:
            try:
                self._items = _parse_items(self._line, self._at)
            except (ValueError, IndexError, KeyError, TypeError):
                self._items = _parse_loose(self._line).items
            self._line = None
        return self._items


def _parse_exact(line: str) -> Order:
    """The worker's exact rendering: the key fields now, items on demand."""
    at = _expect(line, 0, '{"producer":')
    producer, at = _raw_decode(line, at)
    at = _expect(line, at, ',"id":')
    order_id, at = _raw_decode(line, at)
    at = _expect(line, at, ',"attempt":')
    attempt, at = _raw_decode(line, at)
    at = _expect(line, at, ',"redelivered":')
    redelivered, at = _raw_decode(line, at)
    at = _expect(line, at, ',"items":[')
    if type(producer) is not str or type(order_id) is not str or type(attempt) is not int:
        raise ValueError("bad field types")
    if type(redelivered) is not bool:
        raise ValueError("bad field types")
    return _LineOrder(producer, order_id, attempt, redelivered, line, at)


def _parse_items(line: str, at: int) -> list:
    """The items after `"items":[` at `at`, each item's text byte for byte."""
    raw_items, values = [], []
    if line[_skip_ws(line, at)] == "]":
        at = _skip_ws(line, at) + 1
    else:
        while True:
            start = at
            value, end = _raw_decode(line, _skip_ws(line, at))
            end = _skip_ws(line, end)
            raw_items.append(line[start:end])
            values.append(value)
            if line[end] == ",":
                at = end + 1
            elif line[end] == "]":
                at = end + 1
                break
            else:
                raise ValueError("expected , or ]")
    base64_items = ()
    if line.startswith(',"base64_items":', at):
        base64_items, at = _raw_decode(line, at + len(',"base64_items":'))
    _expect(line, at, "}")
    items = [raw.encode() for raw in raw_items]
    for index in base64_items:
        items[index] = base64.b64decode(values[index]["base64"], validate=True)
    return items


def _parse_loose(line: str) -> Order:
    obj = json.loads(line)
    base64_items = set(obj.get("base64_items") or ())
    items = []
    for index, value in enumerate(obj["items"]):
        if index in base64_items:
            items.append(base64.b64decode(value["base64"], validate=True))
        else:
            items.append(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    return Order(obj["producer"], obj["id"], obj["attempt"], bool(obj["redelivered"]), items)


def answer_line(order: Order, outcome) -> bytes:
    """The answer for `order`: None acks; (retry, reason, delay_ms) nacks."""
    if outcome is None:
        answer = {"producer": order.producer, "id": order.id, "result": "ack"}
    else:
        retry, reason, delay_ms = outcome
        answer = {"producer": order.producer, "id": order.id, "result": "nack", "retry": retry, "reason": reason}
        if delay_ms is not None:
            answer["delay_ms"] = delay_ms
    return json.dumps(answer, separators=(",", ":")).encode() + b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _warn(text: str) -> None:
    print(f"orderly.serve: {text}", file=sys.stderr, flush=True)


def serve(handler, *, threads: int = 0, stdin_fd: int = 0, stdout_fd: int = 1) -> None:
    """Serves orders from the worker until stdin closes.

    `handler(order)` as for :class:`orderly.Worker`: returning acks,
    raising :class:`orderly.Retry` / :class:`orderly.Fatal` / anything
    else nacks. With ``threads=0`` (the default: fastest for quick
    handlers) orders run one after another in this thread; ``threads=N``
    runs up to N at once in a pool (for handlers that wait on IO; the
    worker sends at most its ``--concurrency`` orders at once). Returns
    after EOF once every order read has been answered.
    """
    if threads:
        return _serve_pool(handler, threads, stdin_fd, stdout_fd)
    for batch in _order_batches(stdin_fd):
        out = [answer_line(order, outcome_of(handler, order)) for order in batch]
        if out:
            _write_all(stdout_fd, b"".join(out))


def _order_batches(stdin_fd: int):
    """Yields the orders of each chunk read from stdin (a list per chunk, so
    their answers can go out in one write), the last line at EOF too."""
    pending = b""
    while True:
        chunk = os.read(stdin_fd, READ_CHUNK_BYTES)
        if not chunk:
            break
        data = pending + chunk if pending else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            pending = data
            _check_line_length(pending)
            continue
        pending = data[cut + 1 :]
        orders = (_order_of(raw) for raw in data[:cut].split(b"\n"))
        yield [order for order in orders if order is not None]
    order = _order_of(pending)
    if order is not None:
        yield [order]


def _check_line_length(pending: bytes) -> None:
    if len(pending) > ORDER_LINE_BYTES_MAX:
        raise ValueError(f"an order line is longer than {ORDER_LINE_BYTES_MAX} bytes: is stdin the worker's?")


def _order_of(raw: bytes):
    if not raw.strip():
        return None
    try:
        return parse_order_line(raw.decode("utf-8"))
    except (ValueError, KeyError, TypeError, IndexError) as e:
        # Without a key we cannot answer; the worker's handler time limit
        # gets the order back.
        _warn(f"ignored a line that is not an order ({e}): {raw[:80]!r}")
        return None


def _serve_pool(handler, threads: int, stdin_fd: int, stdout_fd: int) -> None:
    if type(threads) is not int or threads < 1:
        raise ValueError(f"threads must be a positive integer, not {threads!r}")
    import queue

    jobs = queue.SimpleQueue()
    lock = threading.Lock()

    def run():
        while True:
            order = jobs.get()
            if order is None:
                return
            line = answer_line(order, outcome_of(handler, order))
            with lock:
                _write_all(stdout_fd, line)

    pool = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for batch in _order_batches(stdin_fd):
        for order in batch:
            jobs.put(order)
    for _ in pool:
        jobs.put(None)
    for thread in pool:
        thread.join()
