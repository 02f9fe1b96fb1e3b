"""The exceptions of the orderly client, and the checks of ids and limits.

Every error says what was wrong and what to do about it.
"""

from __future__ import annotations

import re

#: Bytes in a producer or worker id (`[A-Za-z0-9._-]`): ids become topics
#: and file names.
PEER_ID_BYTES_MAX = 64
#: Bytes in an order id (any UTF-8).
ORDER_ID_BYTES_MAX = 256
#: Bytes in one item's payload.
ITEM_BYTES_MAX = 1024 * 1024
#: Items in one order.
ORDER_ITEMS_MAX = 100_000
#: Bytes in a failure reason (nack, reject, dead letter).
REASON_BYTES_MAX = 1024
#: Orders a worker may run at once (the broker's credit bound).
WORKER_CONCURRENCY_MAX = 1024

_PEER_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}\Z")


class OrderlyError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(OrderlyError, ValueError):
    """A bad argument: an id, a key file, a group file, an option."""


class ProtocolError(OrderlyError):
    """A peer broke the wire protocol."""


class DecodeError(ProtocolError):
    """A frame that is not a valid message.

    `kind` names the class of refusal, as the Rust decoder does:
    ``UnsupportedVersion``, ``UnknownKind``, ``Malformed``, ``Truncated``,
    ``TrailingBytes``, ``Invalid`` or ``Oversized``.
    """

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class Rejected(OrderlyError):
    """The broker refused an order.

    `reason` is the broker's reject reason as it came on the wire: a dict
    with one key naming the kind (``{"too_large": {"detail": "..."}}``,
    ``{"gap": {"missing": 3}}``, ...) or a plain string
    (``"unknown_order"``). `kind` is that key, e.g. ``"too_large"``.
    """

    def __init__(self, order_id: str, reason):
        self.order_id = order_id
        self.reason = reason
        if isinstance(reason, dict) and len(reason) == 1:
            (self.kind, self.detail), = reason.items()
        else:
            self.kind, self.detail = str(reason), None
        hint = ""
        if self.kind == "limit_reached":
            hint = "; back off and send it again later"
        super().__init__(f"order {order_id!r} was rejected by the broker: {self.kind} {self.detail or ''}".rstrip() + hint)


class Backpressure(TimeoutError, OrderlyError):
    """An order could not be handed over (or confirmed) in time.

    `reason` and `detail` are the broker's latest ``backpressure``
    announcement if one was heard recently (e.g. ``"pending_orders"``),
    else None: then the broker may be down or unreachable.
    """

    def __init__(self, message: str, reason: str | None = None, detail: str | None = None):
        if reason is not None:
            message = f"{message}: the broker is not reading intake ({reason}: {detail or 'no detail'})"
        super().__init__(message)
        self.reason = reason
        self.detail = detail


class Closed(OrderlyError):
    """The producer or worker was closed."""


def check_peer_id(what: str, value) -> str:
    """Checks a producer or worker id; returns it."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a str, not {type(value).__name__}")
    if not _PEER_ID.match(value.encode("utf-8", "replace")):
        raise ConfigError(
            f"{what} {value!r} is not valid: use 1 to {PEER_ID_BYTES_MAX} characters of A-Z a-z 0-9 . _ -"
            " (it becomes a topic and a file name)"
        )
    return value


def check_order_id(value) -> str:
    """Checks an order id (1 to 256 bytes of UTF-8); returns it."""
    if not isinstance(value, str):
        raise ConfigError(f"order id must be a str, not {type(value).__name__}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ConfigError(f"order id {value!r} is not valid UTF-8 (it holds a lone surrogate): use plain text") from None
    if not 1 <= size <= ORDER_ID_BYTES_MAX:
        raise ConfigError(
            f"order id is {size} bytes; it must be 1 to {ORDER_ID_BYTES_MAX} bytes of UTF-8 (shorten it, e.g. hash it)"
        )
    return value


def cut_reason(text: str, limit: int = REASON_BYTES_MAX) -> str:
    """The longest prefix of `text` of at most `limit` UTF-8 bytes."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text if isinstance(text, str) else data.decode()
    return data[:limit].decode("utf-8", "ignore")
