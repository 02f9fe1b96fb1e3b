"""orderly.Worker: runs a handler for every order the broker dispatches.

One thread (the one calling :meth:`Worker.run`) owns the sockets: it reads
dispatches in batches, hands orders to a pool of `concurrency` handler
threads (or runs them itself with ``inline=True``), and sends heartbeats,
acks (batched per loop turn) and nacks. It follows worker/src/core.rs:
heartbeats list every order held and echo the broker's welcome; an order
beyond capacity or while draining is handed back with a ``returned`` nack;
a broker restart (new incarnation) or a new group leader makes us
announce ourselves at once.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import sys
import threading
import time

import zmq

from . import _protocol as proto
from ._order import Order, outcome_of
from ._sockets import SOCKET_LINGER_MS, Waker, open_push, open_sub
from .config import Leadership, load_group
from .errors import WORKER_CONCURRENCY_MAX, ConfigError, DecodeError, check_peer_id

NOBLOCK = zmq.NOBLOCK

#: Fanout messages read in one loop turn before timers get a turn.
FANOUT_BATCH_LEN_MAX = 1024
#: Inline handlers run in slices of this many orders, each slice's acks
#: sent before the next is read (see _Loop.run).
INLINE_SLICE_LEN = 4
#: Control messages held while the broker is unreachable; past it the
#: oldest is dropped (a lost ack only means a redelivery).
CONTROL_OUTBOX_LEN_MAX = 4 * WORKER_CONCURRENCY_MAX
#: Default heartbeat interval (seconds).
HEARTBEAT_INTERVAL_DEFAULT = 1.0
#: Broker heartbeat intervals of silence before the broker is presumed lost.
HEARTBEAT_LIVENESS = 3
#: Longest single poll, so a stop is never late by more (seconds).
POLL_TIMEOUT_MAX = 1.0
#: At most one decode warning per this many seconds.
DECODE_WARN_INTERVAL = 1.0


class _Pool:
    """`n` handler threads taking orders one at a time from a shared queue:
    an order starts as soon as any thread is free, and a busy pool needs no
    wake-up per order. Results go to `results`; `waker` tells the socket
    thread."""

    def __init__(self, n: int, handler, waker: Waker):
        self.handler = handler
        self.waker = waker
        self.jobs = collections.deque()
        self.results = collections.deque()
        self.cond = threading.Condition()
        self.idle = 0
        self.stopping = False
        self.threads = [threading.Thread(target=self._run, name=f"orderly-handler-{i}", daemon=True) for i in range(n)]
        for thread in self.threads:
            thread.start()

    def submit(self, orders: list) -> None:
        self.jobs.extend(orders)
        with self.cond:
            if self.idle:
                self.cond.notify(min(len(orders), self.idle))

    def _run(self) -> None:
        jobs, results, handler, waker = self.jobs, self.results, self.handler, self.waker
        while True:
            try:
                order = jobs.popleft()
            except IndexError:
                with self.cond:
                    if jobs:
                        continue
                    if self.stopping:
                        return
                    self.idle += 1
                    self.cond.wait()
                    self.idle -= 1
                continue
            results.append((order, outcome_of(handler, order)))
            waker.wake()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        for thread in self.threads:
            thread.join(timeout=0.1)


class Worker:
    """A worker: `handler(order)` runs for every order dispatched to it.

    `fanout` and `control` are the broker's endpoints; with
    ``group="group.toml"`` they come from the group file and the worker
    follows the leader. `concurrency` orders run at once (1 to 1024), each
    in one of as many handler threads; ``inline=True`` runs them in the
    socket thread instead (fastest for handlers that take well under a
    heartbeat interval; a slow one delays heartbeats). `curve`:
    :class:`orderly.Curve`. `drain_timeout` (seconds, None: no limit)
    bounds how long a stop waits for running handlers. `dispatches_max`
    (0 to 256, since 0.5): the broker may send up to this many orders in
    one message (each still run and acknowledged on its own); 0 keeps one
    order per message.
    """

    def __init__(
        self,
        worker_id: str,
        fanout: str | None = None,
        control: str | None = None,
        handler=None,
        concurrency: int = 1,
        *,
        group=None,
        curve=None,
        heartbeat_interval: float = HEARTBEAT_INTERVAL_DEFAULT,
        drain_timeout: float | None = None,
        inline: bool = False,
        dispatches_max: int = proto.WORKER_DISPATCHES_MAX_DEFAULT,
        context: zmq.Context | None = None,
    ):
        self.worker_id = check_peer_id("worker id", worker_id)
        if handler is None or not callable(handler):
            raise ConfigError("Worker needs handler=, a callable taking an orderly.Order")
        if type(concurrency) is not int or not 1 <= concurrency <= WORKER_CONCURRENCY_MAX:
            raise ConfigError(f"concurrency must be an integer from 1 to {WORKER_CONCURRENCY_MAX}, not {concurrency!r}")
        if type(dispatches_max) is not int or not 0 <= dispatches_max <= proto.DISPATCHES_PER_MESSAGE_MAX:
            raise ConfigError(
                f"dispatches_max must be an integer from 0 to {proto.DISPATCHES_PER_MESSAGE_MAX} "
                f"(0: one order per message), not {dispatches_max!r}"
            )
        self.dispatches_max = dispatches_max
        if not heartbeat_interval > 0:
            raise ConfigError(f"heartbeat_interval must be > 0 seconds, not {heartbeat_interval!r}")
        self.members = None
        if group is not None:
            self.members = load_group(group)
        elif fanout is None or control is None:
            raise ConfigError("Worker needs fanout= and control= endpoints (e.g. tcp://127.0.0.1:5571), or group=")
        self.fanout, self.control = fanout, control
        self.handler = handler
        self.concurrency = concurrency
        self.curve = curve
        if curve is not None:  # a missing broker key is a config error now, not in run()
            for member in self.members or [None]:
                curve.for_member(member)
        self.heartbeat_interval = heartbeat_interval
        self.drain_timeout = drain_timeout
        self.inline = inline
        self.context = context or zmq.Context.instance()
        self.incarnation = random.getrandbits(64)
        self._waker = Waker()
        self._stop = False
        self._running = False
        self.counters = collections.Counter()

    # ------------------------------------------------------------ control

    def stop(self) -> None:
        """Asks :meth:`run` to drain and return; safe from any thread and
        from a signal handler."""
        self._stop = True
        self._waker.pending = False
        self._waker.wake()

    def run(self) -> None:
        """Runs until :meth:`stop` (or SIGTERM/SIGINT when called in the
        main thread), then drains: no new orders, running ones finish,
        ``bye``, return."""
        if self._running:
            raise RuntimeError("Worker.run is already running")
        self._running = True
        restore = self._install_signals()
        try:
            _Loop(self).run()
        finally:
            for sig, old in restore:
                signal.signal(sig, old)
            self._running = False

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return []
        restore = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            restore.append((sig, signal.signal(sig, lambda *_: self.stop())))
        return restore


class _Loop:
    """The socket thread's state: the Rust worker core's, with its IO."""

    def __init__(self, worker: Worker):
        self.w = worker
        self.topic = proto.worker_topic(worker.worker_id)
        self.in_flight: dict = {}  # (producer, id) -> latest attempt
        self.welcome = None
        self.broker_incarnation = None
        self.broker_heard = None
        self.broker_lost = False
        self.draining = False
        self.drain_deadline = None
        self.heartbeat_due = 0.0
        self.control_out = collections.deque()
        self.acks: list = []
        self.leadership = Leadership(worker.members) if worker.members is not None else None
        self.push = None
        self.decode_warned = 0.0

    # ------------------------------------------------------------ sockets

    def _open(self):
        w = self.w
        if w.members is None:
            fanouts = [(w.fanout, None)]
        else:
            fanouts = [(m.fanout, m) for m in w.members]
        self.sub = open_sub(w.context, self.topic, w.curve, fanouts)
        if w.members is None:
            self.push = open_push(w.context, w.curve)
            self.push.connect(w.control)

    def _follow(self, leader: int) -> None:
        member = next(m for m in self.w.members if m.id == leader)
        old, self.push = self.push, open_push(self.w.context, self.w.curve, member)
        self.push.connect(member.control)
        if old is not None:
            old.close(linger=0)
        self.welcome = None
        self.counters["leader_changes"] += 1

    @property
    def counters(self):
        return self.w.counters

    # ------------------------------------------------------------ loop

    def run(self) -> None:
        self._open()
        w = self.w
        pool = None if w.inline else _Pool(w.concurrency, w.handler, w._waker)
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(w._waker.read_fd, zmq.POLLIN)
        try:
            while True:
                now = time.monotonic()
                timeout = max(0.0, min(self.heartbeat_due - now, POLL_TIMEOUT_MAX))
                if pool is None or not pool.results:
                    poller.poll(timeout * 1000)
                w._waker.clear()
                waited = time.monotonic()
                self.counters["turns"] += 1
                self.counters["wait_us"] += int((waited - now) * 1e6)
                now = waited
                if pool is None:
                    # Small slices, each answered at once: the broker gets
                    # credits back (and dispatches more) while we run the rest.
                    while True:
                        jobs = self._read_fanout(now, INLINE_SLICE_LEN)
                        if jobs:
                            self._run_inline(jobs)
                            self._flush_acks()
                            self._send_control()
                        if self.read_len < INLINE_SLICE_LEN:
                            break
                else:
                    jobs = self._read_fanout(now, FANOUT_BATCH_LEN_MAX)
                    if jobs:
                        pool.submit(jobs)
                if pool is not None:
                    self._take_results(pool.results)
                if w._stop and not self.draining:
                    self.draining = True
                    if w.drain_timeout is not None:
                        self.drain_deadline = now + w.drain_timeout
                    self._heartbeat(now)
                self._timers(now)
                self._flush_acks()
                self._send_control()
                if self.draining and (
                    not self.in_flight or (self.drain_deadline is not None and now >= self.drain_deadline)
                ):
                    break
            self._say_bye()
            if os.environ.get("ORDERLY_WORKER_STATS"):
                print(f"orderly worker {w.worker_id}: {dict(self.counters)}", file=sys.stderr)
        finally:
            if pool is not None:
                pool.stop()
            self.sub.close(linger=0)
            if self.push is not None:
                self.push.close(linger=SOCKET_LINGER_MS)

    def _read_fanout(self, now: float, limit: int) -> list:
        jobs = []
        sub = self.sub
        decode, heard = proto.decode_fanout, False
        self.read_len = 0
        for _ in range(limit):
            # Frames without copying, for their `more` flag: cheaper than
            # recv_multipart's RCVMORE look-ups (the hot path of a worker).
            try:
                topic = sub.recv(NOBLOCK, copy=False)
            except zmq.Again:
                break
            self.read_len += 1
            if not topic.more:
                self._decode_warning("a fanout message of 1 frame; expected 2 (topic, body)")
                continue
            frame = sub.recv(0, copy=False)  # the rest of a message is there at once
            if frame.more:
                while sub.recv(0, copy=False).more:
                    pass
                self._decode_warning("a fanout message of more than 2 frames; expected 2 (topic, body)")
                continue
            topic = topic.bytes
            if len(topic) > proto.TOPIC_BYTES_MAX:
                self._decode_warning(f"a topic of {len(topic)} bytes")
                continue
            try:
                kind, body = decode(frame.bytes)
            except DecodeError as e:
                self._decode_warning(str(e))
                continue
            if not heard:
                heard = True
                self._heard(now)
            if kind == "dispatch":
                order = self._on_dispatch(body)
                if order is not None:
                    jobs.append(order)
            elif kind == "dispatches":
                # Since 0.5: each entry is a dispatch of its own (duplicates,
                # credits and returns alike), answered on its own.
                self.counters["dispatch_batches"] += 1
                for entry in body["dispatches"]:
                    order = self._on_dispatch(entry)
                    if order is not None:
                        jobs.append(order)
            elif kind == "heartbeat":
                self._on_broker_heartbeat(body, now)
            elif kind == "welcome" and topic == self.topic:
                self.welcome = body["nonce"]
                self._heartbeat(now)  # echo at once: nothing is dispatched before
            # confirm/confirms/reject are producers'; backpressure does not
            # concern workers (a broker not reading intake still dispatches).
        return jobs

    def _decode_warning(self, what: str) -> None:
        self.counters["decode_errors"] += 1
        now = time.monotonic()
        if now - self.decode_warned >= DECODE_WARN_INTERVAL:
            self.decode_warned = now
            print(f"orderly worker {self.w.worker_id}: dropped a bad fanout message: {what}", file=sys.stderr)

    def _heard(self, now: float) -> None:
        self.broker_heard = now
        self.broker_lost = False

    def _on_dispatch(self, body: dict):
        key = (body["order"]["producer"], body["order"]["id"])
        attempt = body["attempt"]
        latest = self.in_flight.get(key)
        if latest is not None:
            # Redelivered while it runs: answer for the attempt now awaited.
            self.in_flight[key] = max(latest, attempt)
            self.counters["duplicate_dispatches"] += 1
            return None
        if self.draining:
            self._returned(key, attempt, "refused: the worker is shutting down")
            return None
        if len(self.in_flight) >= self.w.concurrency:
            self._returned(key, attempt, "refused: no free slot")
            return None
        self.in_flight[key] = attempt
        self.counters["orders_started"] += 1
        return Order(key[0], key[1], attempt, body["redelivered"], body["items"])

    def _returned(self, key, attempt: int, reason: str) -> None:
        self.counters["refused_dispatches"] += 1
        self._flush_acks()
        self.control_out.append(
            proto.encode_nack(self.w.worker_id, self.w.incarnation, key[0], key[1], attempt, True, reason, None, True)
        )

    def _on_broker_heartbeat(self, hb: dict, now: float) -> None:
        if self.leadership is not None:
            changed = self.leadership.observe(hb)
            if changed is not None:
                self._follow(changed[0])
                self.broker_incarnation = hb["incarnation"] if hb["member"] == changed[0] else None
                self._heartbeat(now)
                return
            if hb["member"] is None or hb["member"] != self.leadership.leader:
                return  # only the leader's restarts matter
        old, self.broker_incarnation = self.broker_incarnation, hb["incarnation"]
        if old is not None and old != hb["incarnation"]:
            # A new broker process does not know us: our welcome is stale.
            self.welcome = None
            self.counters["broker_restarts"] += 1
            self._heartbeat(now)

    def _run_inline(self, jobs: list) -> None:
        handler = self.w.handler
        self._take_results(collections.deque([(order, outcome_of(handler, order)) for order in jobs]))

    def _take_results(self, results: collections.deque) -> None:
        in_flight, acks = self.in_flight, self.acks
        while results:
            order, outcome = results.popleft()
            key = (order.producer, order.id)
            attempt = max(in_flight.pop(key, order.attempt), order.attempt)
            if outcome is None:
                acks.append((order.producer, order.id, attempt))
                self.counters["orders_acked"] += 1
                if len(acks) >= proto.ACKS_PER_MESSAGE_MAX:
                    self._flush_acks()
            else:
                retry, reason, delay_ms = outcome
                self.counters["orders_nacked"] += 1
                self._flush_acks()
                self.control_out.append(
                    proto.encode_nack(
                        self.w.worker_id, self.w.incarnation, order.producer, order.id, attempt, retry, reason,
                        delay_ms, False,
                    )
                )

    def _flush_acks(self) -> None:
        if self.acks:
            self.control_out.append(proto.encode_acks(self.w.worker_id, self.w.incarnation, self.acks))
            self.acks = []

    def _timers(self, now: float) -> None:
        if now >= self.heartbeat_due:
            self._heartbeat(now)
        silent_for = self.w.heartbeat_interval * HEARTBEAT_LIVENESS
        if self.broker_heard is not None and not self.broker_lost and now - self.broker_heard >= silent_for:
            # Keep heartbeating (ZeroMQ reconnects); without a welcome the
            # broker welcomes us anew when it is back.
            self.broker_lost = True
            self.welcome = None
            self.counters["broker_losses"] += 1

    def _heartbeat(self, now: float) -> None:
        self.heartbeat_due = now + self.w.heartbeat_interval
        self._flush_acks()
        in_flight = list(self.in_flight)[: proto.HEARTBEAT_IN_FLIGHT_MAX]
        self.control_out.append(
            proto.encode_heartbeat(
                self.w.worker_id,
                self.w.incarnation,
                self.w.concurrency,
                in_flight,
                self.welcome,
                self.draining,
                None,
                self.w.dispatches_max,
            )
        )

    def _send_control(self) -> None:
        out, push = self.control_out, self.push
        while len(out) > CONTROL_OUTBOX_LEN_MAX:
            out.popleft()
            self.counters["control_dropped"] += 1
        if push is None:
            return  # a group without a leader yet
        while out:
            try:
                push.send_multipart((self.topic, out[0]), zmq.NOBLOCK)
            except zmq.Again:
                return  # no broker connected (IMMEDIATE): kept for later
            out.popleft()

    def _say_bye(self) -> None:
        self._flush_acks()
        self.control_out.append(proto.encode_bye(self.w.worker_id, self.w.incarnation))
        deadline = time.monotonic() + SOCKET_LINGER_MS / 1000
        while self.control_out and self.push is not None and time.monotonic() < deadline:
            self._send_control()
            if self.control_out:
                time.sleep(0.01)
