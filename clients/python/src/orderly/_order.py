"""What a handler gets (Order) and how it answers (return, Retry, Fatal)."""

from __future__ import annotations

from .errors import REASON_BYTES_MAX, OrderlyError, cut_reason

#: Longest retry delay a handler may ask for (24 h); longer ones are clamped.
RETRY_DELAY_MS_MAX = 24 * 60 * 60 * 1000


class Order:
    """One order to handle: `producer`, `id` (its key), `attempt` (1 on
    first delivery), `redelivered` (attempt > 1) and `items` (list of bytes,
    exactly as the producer sent them)."""

    __slots__ = ("producer", "id", "attempt", "redelivered", "items")

    def __init__(self, producer: str, id: str, attempt: int, redelivered: bool, items: list):
        self.producer = producer
        self.id = id
        self.attempt = attempt
        self.redelivered = redelivered
        self.items = items

    @property
    def key(self) -> tuple[str, str]:
        return (self.producer, self.id)

    def __repr__(self) -> str:
        return (
            f"Order(producer={self.producer!r}, id={self.id!r}, attempt={self.attempt}, "
            f"redelivered={self.redelivered}, items=<{len(self.items)} items>)"
        )


class Retry(OrderlyError):
    """Raise in a handler to nack the order for a retry, after `delay`
    seconds (None: the broker's backoff)."""

    def __init__(self, delay: float | None = None, reason: str = "the handler asked for a retry"):
        super().__init__(reason)
        if delay is not None and not delay >= 0:
            raise ValueError(f"Retry delay must be >= 0 seconds, not {delay!r}")
        self.delay = delay
        self.reason = reason


class Fatal(OrderlyError):
    """Raise in a handler to nack the order without retry: the broker
    dead-letters it at once."""

    def __init__(self, reason: str = "the handler refused the order"):
        super().__init__(reason)
        self.reason = reason


def outcome_of(handler, order: Order):
    """Runs `handler(order)`: None for an ack, else (retry, reason, delay_ms)."""
    try:
        handler(order)
        return None
    except Retry as e:
        delay_ms = None if e.delay is None else min(int(e.delay * 1000), RETRY_DELAY_MS_MAX)
        return (True, cut_reason(str(e.reason), REASON_BYTES_MAX), delay_ms)
    except Fatal as e:
        return (False, cut_reason(str(e.reason), REASON_BYTES_MAX), None)
    except Exception as e:  # any other failure: retried with the broker's backoff
        return (True, cut_reason(repr(e), REASON_BYTES_MAX), None)
