"""orderly.Producer: sends orders and learns which the broker confirmed.

`send` validates an order and puts it in the outbox; a background thread,
the only one touching the sockets, shakes hands with the broker (``hello``
every 100 ms until its ``welcome`` proves our subscription is live), sends
each order as packed ``items`` frames (a whole order in one frame up to
256 KiB of items, else as few as fit; or one frame per item) — or, when
the broker's welcome says it takes them (0.4 and later), several whole
orders due together in one ``orders`` message of at most 256 KiB — and
keeps each until the broker confirms or rejects it. An order without an answer is
sent again after `confirm_timeout` (doubling up to a minute), at once when
the broker restarts (a new incarnation in its heartbeats) and when a new
group leader is announced. Resending is safe: the broker confirms an order
it already holds again and never processes it twice.
"""

from __future__ import annotations

import collections
import heapq
import random
import threading
import time

import zmq

from . import _protocol as proto
from ._sockets import Waker, open_push, open_sub
from .config import Leadership, load_group
from .errors import (
    ITEM_BYTES_MAX,
    ORDER_ITEMS_MAX,
    Backpressure,
    Closed,
    ConfigError,
    DecodeError,
    OrderlyError,
    Rejected,
    check_order_id,
    check_peer_id,
)

#: The hello is repeated this often until the welcome arrives.
HELLO_INTERVAL = 0.1
#: Default wait for a confirm before an order is sent again (seconds).
CONFIRM_TIMEOUT_DEFAULT = 5.0
#: The resend wait doubles per attempt up to this (seconds).
RESEND_BACKOFF_MAX = 60.0
#: Default bound on unconfirmed orders (sent or waiting to be sent).
OUTBOX_ORDERS_MAX_DEFAULT = 10_000
#: Default bound on the item bytes of unconfirmed orders.
OUTBOX_BYTES_MAX_DEFAULT = 256 * 1024 * 1024
#: Default wait of `send` for room in a full outbox (seconds).
SEND_TIMEOUT_DEFAULT = 30.0
#: Default wait for the broker's welcome when connecting (seconds).
HANDSHAKE_TIMEOUT_DEFAULT = 10.0
#: A refused send (high-water mark, no broker connected) is tried again
#: this much later (seconds).
TRANSMIT_RETRY_DELAY = 0.05
#: A `backpressure` announcement counts as current for this many of its
#: intervals (it repeats every interval while intake stays closed).
BACKPRESSURE_FRESH_INTERVALS = 3
#: Fanout messages read in one turn before timers get a turn.
RECEIVE_BATCH_LEN_MAX = 4096
#: Longest single poll (seconds), so close() is never late by more.
POLL_TIMEOUT_MAX = 0.1


class Receipt:
    """The broker's answer to one order, once it comes."""

    __slots__ = ("order_id", "_event", "_error", "_producer")

    def __init__(self, order_id: str, producer: "Producer"):
        self.order_id = order_id
        self._event = threading.Event()
        self._error = None
        self._producer = producer

    def done(self) -> bool:
        """True once confirmed, rejected or abandoned by close()."""
        return self._event.is_set()

    @property
    def confirmed(self) -> bool:
        return self._event.is_set() and self._error is None

    def wait(self, timeout: float | None = None) -> None:
        """Returns once the broker confirmed the order (it is durable).
        Raises :class:`orderly.Rejected` if it was refused,
        :class:`orderly.Backpressure` (a TimeoutError) if `timeout` passed
        while the broker announced it is not reading intake, TimeoutError
        if it passed otherwise, :class:`orderly.Closed` if the producer was
        closed first."""
        if not self._event.wait(timeout):
            reason = self._producer._backpressure_now()
            message = f"order {self.order_id!r} not confirmed within {timeout} s"
            if reason is not None:
                raise Backpressure(message, *reason)
            raise TimeoutError(message + " (no backpressure announced: is the broker up and reachable?)")
        if self._error is not None:
            raise self._error

    def _settle(self, error) -> None:
        self._error = error
        self._event.set()

    def __repr__(self) -> str:
        state = "pending" if not self.done() else "confirmed" if self._error is None else repr(self._error)
        return f"Receipt({self.order_id!r}, {state})"


class _Entry:
    __slots__ = ("id", "items", "bytes", "receipt", "attempts", "due")

    def __init__(self, order_id, items, size, receipt):
        self.id, self.items, self.bytes, self.receipt = order_id, items, size, receipt
        self.attempts = 0
        self.due = 0.0


class Producer:
    """A producer of orders.

    `intake`/`fanout`: the broker's endpoints, or ``group="group.toml"``
    (the members of a broker group: orders go to the announced leader).
    `curve`: :class:`orderly.Curve`. Waits up to `handshake_timeout`
    seconds for the broker's welcome (None: do not wait); raises
    :class:`orderly.Backpressure` / TimeoutError if none comes.

    Bounds: at most `outbox_orders_max` orders and `outbox_bytes_max` item
    bytes unconfirmed; `send` waits up to `send_timeout` for room, then
    raises :class:`orderly.Backpressure`. `one_frame_per_item` sends the
    per-item form (begin, item…, finish) instead of packed ``items``.
    """

    def __init__(
        self,
        producer_id: str,
        intake: str | None = None,
        fanout: str | None = None,
        *,
        group=None,
        curve=None,
        confirm_timeout: float = CONFIRM_TIMEOUT_DEFAULT,
        send_timeout: float = SEND_TIMEOUT_DEFAULT,
        handshake_timeout: float | None = HANDSHAKE_TIMEOUT_DEFAULT,
        outbox_orders_max: int = OUTBOX_ORDERS_MAX_DEFAULT,
        outbox_bytes_max: int = OUTBOX_BYTES_MAX_DEFAULT,
        one_frame_per_item: bool = False,
        context: zmq.Context | None = None,
    ):
        self.producer_id = check_peer_id("producer id", producer_id)
        self.members = None
        if group is not None:
            self.members = load_group(group)
        elif intake is None or fanout is None:
            raise ConfigError("Producer needs intake= and fanout= endpoints (e.g. tcp://127.0.0.1:5570), or group=")
        for name, value in (("confirm_timeout", confirm_timeout), ("send_timeout", send_timeout)):
            if not value > 0:
                raise ConfigError(f"{name} must be > 0 seconds, not {value!r}")
        if type(outbox_orders_max) is not int or outbox_orders_max < 1:
            raise ConfigError(f"outbox_orders_max must be a positive integer, not {outbox_orders_max!r}")
        if curve is not None:
            for member in self.members or [None]:
                curve.for_member(member)
        self.intake, self.fanout, self.curve = intake, fanout, curve
        self.confirm_timeout = confirm_timeout
        self.send_timeout = send_timeout
        self.outbox_orders_max = outbox_orders_max
        self.outbox_bytes_max = outbox_bytes_max
        self.one_frame_per_item = one_frame_per_item
        self.context = context or zmq.Context.instance()
        self.topic = proto.producer_topic(producer_id)
        self.counters = collections.Counter()

        # Shared with the socket thread, under `_lock`.
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # an order left the outbox
        self._submitted = collections.deque()  # entries the socket thread has not taken yet
        self._held: dict = {}  # order id -> _Entry, until answered
        self._held_bytes = 0
        self._welcomed = threading.Event()
        self._backpressure = None  # (reason, detail, interval_s, arrival)
        self._closing = False
        self._error = None  # the socket thread's fatal error
        self._waker = Waker()
        self._thread = threading.Thread(target=self._run, name=f"orderly-producer-{producer_id}", daemon=True)
        self._thread.start()
        if handshake_timeout is not None and not self._welcomed.wait(handshake_timeout):
            reason = self._backpressure_now()
            where = self.intake if self.members is None else "the group's members"
            self.close(timeout=0)
            message = f"no answer from a broker at {where} within {handshake_timeout} s"
            if reason is not None:
                raise Backpressure(message, *reason)
            raise TimeoutError(message + ": is it running, and are the endpoints (and CURVE keys) right?")

    # ------------------------------------------------------------ API

    def send(self, order_id: str, items: list) -> Receipt:
        """Queues an order (its items: bytes) and returns its Receipt."""
        check_order_id(order_id)
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"items must be a list of bytes, not {type(items).__name__}")
        if len(items) > ORDER_ITEMS_MAX:
            raise ConfigError(f"order {order_id!r} has {len(items)} items; the limit is {ORDER_ITEMS_MAX}: split it")
        size = 0
        for n, item in enumerate(items):
            if type(item) is not bytes:
                if not isinstance(item, (bytes, bytearray, memoryview)):
                    raise ConfigError(f"item {n} of order {order_id!r} is {type(item).__name__}; items are bytes")
                items = [bytes(i) for i in items]
                item = items[n]
            if len(item) > ITEM_BYTES_MAX:
                raise ConfigError(
                    f"item {n} of order {order_id!r} is {len(item)} bytes; the limit is {ITEM_BYTES_MAX}: split it"
                )
            size += len(item)
        receipt = Receipt(order_id, self)
        entry = _Entry(order_id, list(items), size, receipt)
        deadline = time.monotonic() + self.send_timeout
        with self._lock:
            while True:
                self._check_open()
                if order_id in self._held:
                    raise ConfigError(f"order {order_id!r} is already being sent; wait for its receipt first")
                full = len(self._held) >= self.outbox_orders_max or (
                    self._held and self._held_bytes + size > self.outbox_bytes_max
                )
                if not full:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Backpressure(
                        f"order {order_id!r} not sent: {len(self._held)} orders ({self._held_bytes} bytes) are"
                        f" unconfirmed, the producer's bound, for {self.send_timeout} s",
                        *(self._backpressure_now() or (None, None)),
                    )
                self._room.wait(min(left, 0.1))
            self._held[order_id] = entry
            self._held_bytes += size
            self._submitted.append(entry)
        self._waker.wake()
        return receipt

    def flush(self, timeout: float | None = None) -> None:
        """Waits until every order sent so far is answered (confirmed or
        rejected; see the receipts). Raises Backpressure / TimeoutError if
        `timeout` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._held:
                self._check_open()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    message = f"{len(self._held)} orders still unconfirmed after {timeout} s"
                    reason = self._backpressure_now()
                    if reason is not None:
                        raise Backpressure(message, *reason)
                    raise TimeoutError(message + " (no backpressure announced: is the broker up and reachable?)")
                self._room.wait(0.1 if left is None else min(left, 0.1))

    def unconfirmed(self) -> int:
        """Orders sent and not answered yet."""
        with self._lock:
            return len(self._held)

    def close(self, timeout: float | None = 5.0) -> None:
        """Waits up to `timeout` seconds for unanswered orders (see
        :meth:`flush`), then stops; receipts still pending then raise
        :class:`orderly.Closed` (their orders may still be confirmed: send
        them again later, it is safe)."""
        if self._thread.is_alive() and not self._closing:
            try:
                self.flush(timeout if timeout is None or timeout > 0 else 0.000001)
            except (TimeoutError, OrderlyError):
                pass
        with self._lock:
            self._closing = True
        self._waker.pending = False
        self._waker.wake()
        self._thread.join()
        with self._lock:
            for entry in self._held.values():
                entry.receipt._settle(Closed(f"the producer was closed before order {entry.id!r} was confirmed"))
            self._held.clear()
            self._held_bytes = 0
            self._room.notify_all()
        self._waker.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closing:
            raise Closed("the producer is closed")

    def _backpressure_now(self):
        """(reason, detail) of a current backpressure announcement, or None."""
        bp = self._backpressure
        if bp is None:
            return None
        reason, detail, interval, arrival = bp
        if time.monotonic() - arrival > BACKPRESSURE_FRESH_INTERVALS * interval:
            return None
        return reason, detail

    # ------------------------------------------------------------ socket thread

    def _run(self) -> None:
        try:
            _Loop(self).run()
        except BaseException as e:  # surfaced to callers: never a silent hang
            self._error = OrderlyError(f"the producer's socket thread failed: {e!r}")
            with self._lock:
                for entry in self._held.values():
                    entry.receipt._settle(self._error)
                self._room.notify_all()
            raise


#: Bytes of one `orders` message at most (items, ids, framing): larger
#: orders go alone as `items` frames.
BATCH_BYTES_MAX = proto.PACKED_FRAME_BYTES_MAX


def _batch_cost(entry: "_Entry") -> int:
    """Bytes an order takes in an `orders` message, framing included."""
    return sum(len(item) + 5 for item in entry.items) + len(entry.id.encode()) + 24


class _Loop:
    def __init__(self, p: Producer):
        self.p = p
        self.push = None
        self.nonce = random.getrandbits(64)
        self.welcomed = False
        #: Orders per `orders` message the broker takes (its welcome's
        #: `orders_max`; 0 before 0.4): whole orders due together go in one.
        self.orders_max = 0
        self.hello_due = 0.0
        self.blocked_until = 0.0
        self.due = []  # heap of (due, seq, entry)
        self.seq = 0
        self.broker_incarnation = None
        self.leadership = Leadership(p.members) if p.members is not None else None

    def run(self) -> None:
        p = self.p
        if p.members is None:
            self.sub = open_sub(p.context, p.topic, p.curve, [(p.fanout, None)])
            self.push = open_push(p.context, p.curve)
            self.push.connect(p.intake)
        else:
            self.sub = open_sub(p.context, p.topic, p.curve, [(m.fanout, m) for m in p.members])
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(p._waker.read_fd, zmq.POLLIN)
        try:
            while not p._closing:
                now = time.monotonic()
                poller.poll(self._timeout(now) * 1000)
                p._waker.clear()
                now = time.monotonic()
                self._read_fanout(now)
                self._take_submitted(now)
                self._transmit(now)
        finally:
            self.sub.close(linger=0)
            if self.push is not None:
                self.push.close(linger=0)

    def _timeout(self, now: float) -> float:
        if self.push is None:
            return POLL_TIMEOUT_MAX
        if not self.welcomed:
            wake = self.hello_due
        elif self.due:
            wake = max(self.due[0][0], self.blocked_until)
        else:
            wake = now + POLL_TIMEOUT_MAX
        return max(0.0, min(wake - now, POLL_TIMEOUT_MAX))

    def _schedule(self, entry: _Entry, at: float) -> None:
        entry.due = at
        self.seq += 1
        heapq.heappush(self.due, (at, self.seq, entry))

    def _all_due(self, now: float) -> None:
        with self.p._lock:
            # Under the lock, so an order is neither missed nor scheduled twice.
            self.p._submitted.clear()
            entries = list(self.p._held.values())
        self.due = []
        for entry in entries:
            self._schedule(entry, now)

    def _take_submitted(self, now: float) -> None:
        submitted = self.p._submitted
        while submitted:
            self._schedule(submitted.popleft(), now)

    # ------------------------------------------------------------ fanout

    def _read_fanout(self, now: float) -> None:
        p = self.p
        for _ in range(RECEIVE_BATCH_LEN_MAX):
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2 or len(frames[0]) > proto.TOPIC_BYTES_MAX:
                p.counters["decode_errors"] += 1
                continue
            try:
                kind, body = proto.decode_fanout(frames[1])
            except DecodeError:
                p.counters["decode_errors"] += 1
                continue
            if kind == "confirm":
                self._answer(body["order"], None)
            elif kind == "confirms":
                for order_id in body["orders"]:
                    self._answer(order_id, None)
            elif kind == "reject":
                self._answer(body["order"], Rejected(body["order"], body["reason"]))
            elif kind == "welcome":
                if frames[0] == p.topic and body["nonce"] == self.nonce and not self.welcomed:
                    self.welcomed = True
                    self.orders_max = min(body["orders_max"], proto.ORDERS_PER_MESSAGE_MAX)
                    p._welcomed.set()
            elif kind == "heartbeat":
                self._on_heartbeat(body, now)
            elif kind == "backpressure":
                p._backpressure = (body["reason"], body["detail"], body["interval_ms"] / 1000, now)

    def _answer(self, order_id: str, error) -> None:
        p = self.p
        with p._lock:
            entry = p._held.pop(order_id, None)
            if entry is None:
                p.counters["answers_unexpected"] += 1
                return
            p._held_bytes -= entry.bytes
            p._room.notify_all()
        p.counters["rejected" if error is not None else "confirmed"] += 1
        entry.receipt._settle(error)

    def _on_heartbeat(self, hb: dict, now: float) -> None:
        self.p.counters["heartbeats"] += 1
        if self.leadership is not None:
            changed = self.leadership.observe(hb)
            if changed is not None:
                self._follow(changed[0], now)
                self.broker_incarnation = hb["incarnation"] if hb["member"] == changed[0] else None
                return
            if hb["member"] is None or hb["member"] != self.leadership.leader:
                return
        old, self.broker_incarnation = self.broker_incarnation, hb["incarnation"]
        if old is not None and old != hb["incarnation"]:
            # A restarted broker may have lost what it had not committed:
            # shake hands anew and send every unconfirmed order at once.
            self.p.counters["broker_restarts"] += 1
            self._rehandshake(now)

    def _follow(self, leader: int, now: float) -> None:
        p = self.p
        member = next(m for m in p.members if m.id == leader)
        old, self.push = self.push, open_push(p.context, p.curve, member)
        self.push.connect(member.intake)
        if old is not None:
            old.close(linger=0)
        p.counters["leader_changes"] += 1
        self._rehandshake(now)

    def _rehandshake(self, now: float) -> None:
        self.welcomed = False
        self.orders_max = 0  # the new welcome says again
        self.nonce = (self.nonce + 1) % (1 << 64)
        self.hello_due = now
        self.blocked_until = 0.0
        self._all_due(now)

    # ------------------------------------------------------------ intake

    def _send(self, body: bytes) -> bool:
        try:
            self.push.send_multipart((self.p.topic, body), zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def _transmit(self, now: float) -> None:
        p = self.p
        if self.push is None:
            return  # a group with no leader announced yet
        if not self.welcomed:
            if now >= self.hello_due:
                self.hello_due = now + HELLO_INTERVAL
                self._send(proto.encode_hello(p.producer_id, self.nonce))
            return
        if now < self.blocked_until:
            return
        while True:
            batch = self._take_due(now)
            if not batch:
                return
            if len(batch) == 1:
                sent = self._send_order(batch[0])
            else:
                sent = self._send(proto.encode_orders(p.producer_id, [(e.id, e.items) for e in batch]))
            if not sent:
                # Not an attempt: due again once the retry delay is over.
                for entry in batch:
                    self._schedule(entry, now)
                self.blocked_until = now + TRANSMIT_RETRY_DELAY
                return
            for entry in batch:
                entry.attempts += 1
                p.counters["transmissions"] += 1
                backoff = min(
                    p.confirm_timeout * (2 ** min(entry.attempts - 1, 16)), max(RESEND_BACKOFF_MAX, p.confirm_timeout)
                )
                self._schedule(entry, now + backoff)

    def _take_due(self, now: float) -> list:
        """The next orders to send together, taken from the schedule: the
        earliest due, plus (when the broker takes `orders` batches and orders
        are packed) more due orders while they fit BATCH_BYTES_MAX."""
        due, batch, size = self.due, [], 0
        batch_max = 1 if self.p.one_frame_per_item or self.orders_max < 2 else self.orders_max
        while due and due[0][0] <= now and len(batch) < batch_max:
            at, _, entry = due[0]
            if entry.due != at or entry.receipt.done():
                heapq.heappop(due)  # stale: answered or rescheduled
                continue
            cost = _batch_cost(entry)
            if batch and (size + cost > BATCH_BYTES_MAX or cost > BATCH_BYTES_MAX):
                break
            heapq.heappop(due)
            batch.append(entry)
            size += cost
        return batch

    def _send_order(self, entry: _Entry) -> bool:
        """Sends the whole order; False if the socket refused a frame (the
        order goes again whole later)."""
        producer, items = self.p.producer_id, entry.items
        if self.p.one_frame_per_item:
            frames = [proto.encode_begin(producer, entry.id)]
            frames += [proto.encode_item(producer, entry.id, seq, data) for seq, data in enumerate(items)]
            frames.append(proto.encode_finish(producer, entry.id, len(items)))
        else:
            frames, start = [], 0
            for end in proto.pack_runs(items):
                finish = len(items) if end == len(items) else None
                frames.append(proto.encode_items(producer, entry.id, start == 0, start, items[start:end], finish))
                start = end
        for frame in frames:
            if not self._send(frame):
                return False
        return True
