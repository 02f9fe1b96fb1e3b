"""Socket options, set explicitly as the Rust clients set them
(producer/src/io.rs, worker/src/io.rs), and a wake-up pipe.

Every socket:
- ``LINGER`` 2000 ms: closing may wait that long to flush a final ack or
  bye, never for ever (libzmq's default).
- ``SNDHWM``/``RCVHWM`` 100,000 messages.
- ``RECONNECT_IVL`` 100 ms doubling to ``RECONNECT_IVL_MAX`` 5000 ms: back
  soon after a broker restart, cheap during a long outage.

PUSH (intake, control): ``IMMEDIATE`` 1, so with no broker connected a send
is refused at once (and retried by us) instead of queued for a connection
that may never come.

SUB (fanout): ``MAXMSGSIZE`` = the largest fanout frame (a whole 16 MiB
order), subscribed to our own topic and ``b/``.
"""

from __future__ import annotations

import os

import zmq

from ._protocol import BROADCAST_TOPIC, FANOUT_FRAME_BYTES_MAX

#: LINGER on every socket (ms).
SOCKET_LINGER_MS = 2000
#: High-water marks on every socket (messages).
SOCKET_HWM = 100_000
#: First reconnect delay (ms) ...
RECONNECT_IVL_MS = 100
#: ... doubling up to this (ms).
RECONNECT_IVL_MAX_MS = 5000


def _configure(socket: zmq.Socket) -> None:
    socket.setsockopt(zmq.LINGER, SOCKET_LINGER_MS)
    socket.setsockopt(zmq.SNDHWM, SOCKET_HWM)
    socket.setsockopt(zmq.RCVHWM, SOCKET_HWM)
    socket.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    socket.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)


def open_push(context: zmq.Context, curve, member=None) -> zmq.Socket:
    push = context.socket(zmq.PUSH)
    _configure(push)
    push.setsockopt(zmq.IMMEDIATE, 1)
    if curve is not None:
        curve.apply(push, member)
    return push


def open_sub(context: zmq.Context, own_topic: bytes, curve, fanouts) -> zmq.Socket:
    """A SUB connected to each of `fanouts`: (endpoint, member or None)."""
    sub = context.socket(zmq.SUB)
    _configure(sub)
    sub.setsockopt(zmq.MAXMSGSIZE, FANOUT_FRAME_BYTES_MAX)
    sub.setsockopt(zmq.SUBSCRIBE, own_topic)
    sub.setsockopt(zmq.SUBSCRIBE, BROADCAST_TOPIC)
    for endpoint, member in fanouts:
        if curve is not None:
            # Each connect takes the server key set just before it.
            curve.apply(sub, member)
        sub.connect(endpoint)
    return sub


class Waker:
    """A pipe the socket thread polls beside its sockets: other threads
    (and signal handlers) write a byte to wake it. Writes are coalesced."""

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self.pending = False

    def wake(self) -> None:
        if self.pending:
            return
        self.pending = True
        try:
            os.write(self.write_fd, b"\0")
        except (BlockingIOError, OSError):
            pass  # full (already awake) or closed (shutting down)

    def clear(self) -> None:
        """Call before looking at what the wakers left, never after."""
        self.pending = False
        try:
            while os.read(self.read_fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
