"""orderly: Python client of the orderly order pipeline.

- :class:`Producer` sends orders to a broker and reports which it confirmed.
- :class:`Worker` runs a handler for every order a broker dispatches.
- :func:`serve` is the handler side of ``orderly-worker run --serve CMD``.
- :class:`Inbox` (``orderly.inbox``) makes a handler's database change
  happen once per order, although an order may be delivered twice.
- :class:`Curve` holds CURVE keys; ``group="group.toml"`` follows a broker
  group's leader.
"""

from ._order import Fatal, Order, Retry
from .config import Curve, Member, load_group
from .errors import (
    Backpressure,
    Closed,
    ConfigError,
    DecodeError,
    OrderlyError,
    ProtocolError,
    Rejected,
)
from .inbox import Inbox
from .producer import Producer, Receipt
from .serve import serve
from .worker import Worker

__version__ = "0.2.0"

__all__ = [
    "Backpressure",
    "Closed",
    "ConfigError",
    "Curve",
    "DecodeError",
    "Fatal",
    "Inbox",
    "Member",
    "Order",
    "OrderlyError",
    "Producer",
    "ProtocolError",
    "Receipt",
    "Rejected",
    "Retry",
    "Worker",
    "load_group",
    "serve",
]
