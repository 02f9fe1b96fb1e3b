"""The wire codec, protocol version 1 (docs/PROTOCOL.md, common/src/protocol.rs).

A message is two ZeroMQ frames: a topic and a MessagePack body
``{"v": 1, "kind": KIND, "body": {...}}``. Bodies are maps of named fields
written in the Rust structs' field order, with every field present
(``None`` encodes as nil), bytes as MessagePack bin and integers in their
shortest form: exactly what rmp-serde writes, so a message encoded here
is byte for byte the one the Rust side encodes.

Decoding follows the Rust decoder: unknown fields are ignored, optional
fields may be absent, and a bad frame raises :class:`DecodeError` whose
``kind`` is the Rust error's name (``UnsupportedVersion``, ``UnknownKind``,
``Malformed``, ``Truncated``, ``TrailingBytes``, ``Invalid``, ``Oversized``).

A decoded message is ``(kind, body)``: `body` a dict holding every field of
the kind in Rust order (absent optional fields filled with their default),
order keys as ``{"producer": str, "id": str}`` dicts.
"""

from __future__ import annotations

import msgpack

from .errors import (
    ITEM_BYTES_MAX,
    ORDER_ID_BYTES_MAX,
    ORDER_ITEMS_MAX,
    PEER_ID_BYTES_MAX,
    REASON_BYTES_MAX,
    WORKER_CONCURRENCY_MAX,
    DecodeError,
    _PEER_ID,
)

#: The protocol version this package speaks.
PROTOCOL_VERSION = 1

#: Order keys a worker may list in one heartbeat.
HEARTBEAT_IN_FLIGHT_MAX = 1024
#: POSACKs in one `acks` message.
ACKS_PER_MESSAGE_MAX = 1024
#: Order ids in one `confirms` message.
CONFIRMS_PER_MESSAGE_MAX = 1024
#: Item payload bytes packed into one `items` frame (then a new frame).
PACKED_FRAME_BYTES_MAX = 256 * 1024
#: Whole orders in one `orders` intake message (since 0.4).
ORDERS_PER_MESSAGE_MAX = 1024
#: Orders in one `dispatches` fanout message (since 0.5).
DISPATCHES_PER_MESSAGE_MAX = 256
#: Orders a worker takes in one `dispatches` message unless told otherwise;
#: 0 keeps one order per message.
WORKER_DISPATCHES_MAX_DEFAULT = 64
#: Longest `backpressure` reason.
BACKPRESSURE_REASON_BYTES_MAX = 64
#: Longest retry delay a nack may ask for (24 h); longer ones are clamped.
RETRY_DELAY_MS_MAX = 24 * 60 * 60 * 1000
#: Bytes of message metadata around a frame's payload (only sizes limits).
FRAME_OVERHEAD_BYTES_MAX = 64 * 1024
#: Largest intake frame (one item plus its envelope).
INTAKE_FRAME_BYTES_MAX = ITEM_BYTES_MAX + FRAME_OVERHEAD_BYTES_MAX
#: Largest control frame (a heartbeat listing its in-flight orders).
CONTROL_FRAME_BYTES_MAX = HEARTBEAT_IN_FLIGHT_MAX * (PEER_ID_BYTES_MAX + ORDER_ID_BYTES_MAX + 16) + FRAME_OVERHEAD_BYTES_MAX
#: Largest fanout frame (a whole order of 16 MiB in 100,000 items); also
#: the SUB socket's ZMQ_MAXMSGSIZE.
FANOUT_FRAME_BYTES_MAX = 16 * 1024 * 1024 + ORDER_ITEMS_MAX * 5 + FRAME_OVERHEAD_BYTES_MAX
#: Bytes in a topic frame.
TOPIC_BYTES_MAX = PEER_ID_BYTES_MAX + 3

#: The broadcast topic (broker heartbeats, backpressure).
BROADCAST_TOPIC = b"b/"

U16_MAX = (1 << 16) - 1
U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1

_MISSING = object()


def worker_topic(worker: str) -> bytes:
    return b"w/" + worker.encode() + b"/"


def producer_topic(producer: str) -> bytes:
    return b"p/" + producer.encode() + b"/"


# ---------------------------------------------------------------- schemas
#
# A type is a string: "str", "bin", "bool", "u16", "u32", "u64", "key"
# (an order key), "acked", "reject_reason"; "[T]" a list of T; "T?" an
# optional T (absent or nil: None). A field is (name, type, default);
# `_MISSING` as default makes it required. Option fields are optional
# even without a default (serde fills None).

_REQ = _MISSING

_INTAKE = {
    "hello": [("producer", "str", _REQ), ("nonce", "u64", _REQ)],
    "begin": [("producer", "str", _REQ), ("order", "str", _REQ)],
    "item": [("producer", "str", _REQ), ("order", "str", _REQ), ("seq", "u32", _REQ), ("data", "bin", _REQ)],
    "items": [
        ("producer", "str", _REQ),
        ("order", "str", _REQ),
        ("begin", "bool", False),
        ("first", "u32", _REQ),
        ("data", "[bin]", _REQ),
        ("finish", "u32?", None),
    ],
    "orders": [("producer", "str", _REQ), ("orders", "[whole]", _REQ)],
    "finish": [("producer", "str", _REQ), ("order", "str", _REQ), ("count", "u32", _REQ)],
}

_CONTROL = {
    "heartbeat": [
        ("worker", "str", _REQ),
        ("incarnation", "u64", _REQ),
        ("capacity", "u32", _REQ),
        ("in_flight", "[key]", _REQ),
        ("welcome", "u64?", None),
        ("draining", "bool", False),
        ("broken", "str?", None),
        ("dispatches_max", "u32", 0),
    ],
    "ack": [("worker", "str", _REQ), ("incarnation", "u64", _REQ), ("order", "key", _REQ), ("attempt", "u32", _REQ)],
    "acks": [("worker", "str", _REQ), ("incarnation", "u64", _REQ), ("acks", "[acked]", _REQ)],
    "nack": [
        ("worker", "str", _REQ),
        ("incarnation", "u64", _REQ),
        ("order", "key", _REQ),
        ("attempt", "u32", _REQ),
        ("retry", "bool", _REQ),
        ("reason", "str", _REQ),
        ("delay_ms", "u64?", None),
        ("returned", "bool", False),
    ],
    "bye": [("worker", "str", _REQ), ("incarnation", "u64", _REQ)],
}

_FANOUT = {
    "welcome": [("nonce", "u64", _REQ), ("orders_max", "u32", 0)],
    "dispatch": [("order", "key", _REQ), ("attempt", "u32", _REQ), ("redelivered", "bool", _REQ), ("items", "[bin]", _REQ)],
    "dispatches": [("dispatches", "[dispatch]", _REQ)],
    "confirm": [("order", "str", _REQ)],
    "confirms": [("orders", "[str]", _REQ)],
    "reject": [("order", "str", _REQ), ("reason", "reject_reason", _REQ)],
    "heartbeat": [
        ("incarnation", "u64", _REQ),
        ("interval_ms", "u64", _REQ),
        ("member", "u64?", None),
        ("leader", "u64?", None),
        ("term", "u64", 0),
    ],
    "backpressure": [("reason", "str", _REQ), ("detail", "str", ""), ("interval_ms", "u64", _REQ)],
}

_KEY = [("producer", "str", _REQ), ("id", "str", _REQ)]
_DISPATCH = _FANOUT["dispatch"]
_ACKED = [("order", "key", _REQ), ("attempt", "u32", _REQ)]
_WHOLE = [("order", "str", _REQ), ("data", "[bin]", _REQ)]

#: Reject reasons: the struct variants' fields; None for a unit variant.
_REJECT_REASONS = {
    "gap": [("missing", "u32", _REQ)],
    "extra_item": [("count", "u32", _REQ), ("seq", "u32", _REQ)],
    "too_large": [("detail", "str", _REQ)],
    "limit_reached": [("detail", "str", _REQ)],
    "expired": [("age_ms", "u64", _REQ)],
    "unknown_order": None,
    "malformed": [("detail", "str", _REQ)],
}

SOCKETS = {"intake": _INTAKE, "control": _CONTROL, "fanout": _FANOUT}
_FRAME_MAX = {"intake": INTAKE_FRAME_BYTES_MAX, "control": CONTROL_FRAME_BYTES_MAX, "fanout": FANOUT_FRAME_BYTES_MAX}


class _Bad(Exception):
    """A type error inside a body: becomes DecodeError("Malformed")."""


def _check(value, typ: str, where: str):
    """Checks (and normalizes) one value of type `typ`; raises _Bad."""
    if typ.endswith("?"):
        return None if value is None else _check(value, typ[:-1], where)
    if typ.startswith("["):
        if not isinstance(value, list):
            raise _Bad(f"{where}: expected a list, got {type(value).__name__}")
        inner = typ[1:-1]
        if inner == "bin":
            for item in value:
                if type(item) is not bytes:
                    # serde_bytes also takes a str as bytes.
                    if type(item) is str:
                        return [v.encode() if type(v) is str else _check(v, "bin", where) for v in value]
                    raise _Bad(f"{where}: expected bin items, got {type(item).__name__}")
            return value
        return [_check(item, inner, where) for item in value]
    t = type(value)
    if typ == "str":
        if t is str:
            return value
        if t is bytes:  # rmp-serde reads bin as a string when it is UTF-8
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise _Bad(f"{where}: invalid UTF-8") from None
        raise _Bad(f"{where}: expected a string, got {t.__name__}")
    if typ == "bin":
        if t is bytes:
            return value
        if t is str:
            return value.encode("utf-8")
        raise _Bad(f"{where}: expected bin, got {t.__name__}")
    if typ == "bool":
        if t is bool:
            return value
        raise _Bad(f"{where}: expected a bool, got {t.__name__}")
    if typ in ("u16", "u32", "u64"):
        if t is not int:
            raise _Bad(f"{where}: expected an unsigned integer, got {t.__name__}")
        top = U64_MAX if typ == "u64" else U32_MAX if typ == "u32" else U16_MAX
        if not 0 <= value <= top:
            raise _Bad(f"{where}: {value} is out of range for {typ}")
        return value
    if typ == "key":
        return _fields(value, _KEY, where)
    if typ == "acked":
        return _fields(value, _ACKED, where)
    if typ == "whole":
        return _fields(value, _WHOLE, where)
    if typ == "dispatch":
        return _fields(value, _DISPATCH, where)
    if typ == "reject_reason":
        return _reject_reason(value, where)
    raise AssertionError(f"unknown schema type {typ}")


def _fields(value, schema, where: str) -> dict:
    """A struct from a map: fields in schema order, unknown ones dropped."""
    if type(value) is not dict:
        raise _Bad(f"{where}: expected a map, got {type(value).__name__}")
    out = {}
    for name, typ, default in schema:
        got = value.get(name, _MISSING)
        if got is _MISSING:
            if default is _MISSING:
                if typ.endswith("?"):
                    out[name] = None
                    continue
                raise _Bad(f"{where}: missing field `{name}`")
            out[name] = default
        else:
            out[name] = _check(got, typ, f"{where}.{name}")
    return out


def _reject_reason(value, where: str):
    if type(value) is str:
        if value in _REJECT_REASONS and _REJECT_REASONS[value] is None:
            return value
        raise _Bad(f"{where}: unknown or incomplete reject reason {value!r}")
    if type(value) is dict and len(value) == 1:
        (name, fields), = value.items()
        if name in _REJECT_REASONS:
            schema = _REJECT_REASONS[name]
            if schema is None:
                if fields is None:
                    return name
                raise _Bad(f"{where}: reject reason {name!r} takes no fields")
            return {name: _fields(fields, schema, f"{where}.{name}")}
        raise _Bad(f"{where}: unknown reject reason {name!r}")
    raise _Bad(f"{where}: expected a reject reason (a string or a map with one key)")


# ---------------------------------------------------------------- decoding


def _unpack(frame: bytes):
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=False, use_list=True)
    except msgpack.ExtraData as e:
        raise DecodeError("TrailingBytes", f"message has {len(e.extra)} bytes after its end") from None
    except msgpack.OutOfData:
        raise DecodeError("Truncated", "message is truncated") from None
    except UnicodeDecodeError as e:
        raise DecodeError("Malformed", f"a string is not valid UTF-8: {e}") from None
    except ValueError as e:
        if "incomplete" in str(e):
            raise DecodeError("Truncated", "message is truncated") from None
        raise DecodeError("Malformed", str(e)) from None
    except Exception as e:  # FormatError, StackError, TypeError from odd input
        raise DecodeError("Malformed", f"{type(e).__name__}: {e}") from None


def _open_envelope(envelope, socket: str):
    """(kind, raw body) from an unpacked envelope, or a DecodeError."""
    if type(envelope) is not dict:
        raise DecodeError("Malformed", "expected a map {v, kind, body}")
    version = kind = _MISSING
    for key, value in envelope.items():
        if type(key) is not str:
            raise DecodeError("Malformed", f"envelope key {key!r} is not a string")
        if key == "v":
            if type(value) is not int or not 0 <= value <= U16_MAX:
                raise DecodeError("Malformed", f"`v` must be an unsigned 16-bit integer, not {value!r}")
            if value != PROTOCOL_VERSION:
                raise DecodeError(
                    "UnsupportedVersion",
                    f"protocol version {value} is not supported; this build speaks version {PROTOCOL_VERSION}",
                )
            version = value
        elif key == "kind":
            if type(value) is not str:
                raise DecodeError("Malformed", "`kind` must be a string")
            kind = value
        elif key == "body":
            if version is _MISSING:
                raise DecodeError("Malformed", '"v" must come before "body"')
            if kind is _MISSING:
                raise DecodeError("Malformed", '"kind" must come before "body"')
            schema = SOCKETS[socket].get(kind)
            if schema is None:
                raise DecodeError("UnknownKind", f"unknown message kind {kind!r} on the {socket} socket")
            return kind, schema, value
    missing = "v" if version is _MISSING else "kind" if kind is _MISSING else "body"
    raise DecodeError("Malformed", f"missing field `{missing}`")


def decode(socket: str, frame: bytes):
    """Decodes and validates one body frame received on `socket`
    (``"intake"``, ``"control"`` or ``"fanout"``): ``(kind, body)``."""
    limit = _FRAME_MAX[socket]
    if len(frame) > limit:
        raise DecodeError("Oversized", f"frame is {len(frame)} bytes; the limit is {limit}")
    kind, schema, raw = _open_envelope(_unpack(frame), socket)
    try:
        body = _fields(raw, schema, kind)
    except _Bad as e:
        raise DecodeError("Malformed", str(e)) from None
    _VALIDATE[socket](kind, body)
    return kind, body


_DISPATCH_KEYS = ("order", "attempt", "redelivered", "items")
_ENVELOPE_KEYS = ("v", "kind", "body")
_KEY_KEYS = ("producer", "id")
_BYTES_ONLY = {bytes}


def _fast_dispatch(body) -> bool:
    """A dispatch body exactly as the broker writes it, passing every check."""
    if type(body) is not dict or tuple(body) != _DISPATCH_KEYS:
        return False
    order, attempt, items = body["order"], body["attempt"], body["items"]
    return bool(
        type(order) is dict
        and tuple(order) == _KEY_KEYS
        and type(order["producer"]) is str
        and type(order["id"]) is str
        and type(attempt) is int
        and 0 <= attempt <= U32_MAX
        and type(body["redelivered"]) is bool
        and type(items) is list
        and (not items or set(map(type, items)) == _BYTES_ONLY)
        and len(items) <= ORDER_ITEMS_MAX
        and _PEER_ID.match(order["producer"].encode())
        and 1 <= len(order["id"].encode()) <= ORDER_ID_BYTES_MAX
    )


def decode_fanout(frame: bytes):
    """:func:`decode` for the fanout socket (what producers and workers read).

    A dispatch, or a batch of them (since 0.5), exactly as the broker
    writes it (no unknown fields) takes a fast path with the same checks;
    anything else the general one."""
    if len(frame) <= FANOUT_FRAME_BYTES_MAX:
        try:
            envelope = msgpack.unpackb(frame, raw=False, strict_map_key=False)
        except Exception:
            envelope = None  # the general path says why
        if type(envelope) is dict and tuple(envelope) == _ENVELOPE_KEYS and envelope["v"] == 1:
            kind, body = envelope["kind"], envelope["body"]
            if type(envelope["v"]) is int and kind == "dispatch" and _fast_dispatch(body):
                return "dispatch", body
            if type(envelope["v"]) is int and kind == "dispatches" and type(body) is dict and tuple(body) == ("dispatches",):
                entries = body["dispatches"]
                if (
                    type(entries) is list
                    and 1 <= len(entries) <= DISPATCHES_PER_MESSAGE_MAX
                    and all(map(_fast_dispatch, entries))
                ):
                    return "dispatches", body
    return decode("fanout", frame)


# ---------------------------------------------------------------- validation


def _invalid(field: str, reason: str):
    raise DecodeError("Invalid", f"invalid {field}: {reason}")


def _valid_peer(what: str, value: str):
    if not _PEER_ID.match(value.encode()):
        _invalid("id", f"{what} {value!r} must be 1 to {PEER_ID_BYTES_MAX} bytes of [A-Za-z0-9._-]")


def _valid_order(value: str):
    if not 1 <= len(value.encode()) <= ORDER_ID_BYTES_MAX:
        _invalid("id", f"order id must be 1 to {ORDER_ID_BYTES_MAX} bytes")


def _valid_key(key: dict):
    _valid_peer("producer id", key["producer"])
    _valid_order(key["id"])


def _valid_whole_items(data: list):
    if len(data) > ORDER_ITEMS_MAX:
        _invalid("items", f"{len(data)} items; the limit is {ORDER_ITEMS_MAX} per order")
    for item in data:
        if len(item) > ITEM_BYTES_MAX:
            _invalid("item data", f"{len(item)} bytes; the limit is {ITEM_BYTES_MAX}")


def _validate_intake(kind: str, m: dict):
    _valid_peer("producer id", m["producer"])
    if kind == "hello":
        return
    if kind == "orders":
        if not 1 <= len(m["orders"]) <= ORDERS_PER_MESSAGE_MAX:
            _invalid("orders", f"{len(m['orders'])} orders; it must be 1..={ORDERS_PER_MESSAGE_MAX}")
        for whole in m["orders"]:
            _valid_order(whole["order"])
            _valid_whole_items(whole["data"])
        return
    _valid_order(m["order"])
    if kind == "item":
        if len(m["data"]) > ITEM_BYTES_MAX:
            _invalid("item data", f"{len(m['data'])} bytes; the limit is {ITEM_BYTES_MAX}")
        if m["seq"] >= ORDER_ITEMS_MAX:
            _invalid("item seq", f"{m['seq']}; the limit is {ORDER_ITEMS_MAX - 1}")
    elif kind == "items":
        end = m["first"] + len(m["data"])
        if end > ORDER_ITEMS_MAX:
            _invalid("items", f"items up to {end}; the limit is {ORDER_ITEMS_MAX} per order")
        for data in m["data"]:
            if len(data) > ITEM_BYTES_MAX:
                _invalid("item data", f"{len(data)} bytes; the limit is {ITEM_BYTES_MAX}")
        if m["finish"] is not None and m["finish"] > ORDER_ITEMS_MAX:
            _invalid("finish count", f"{m['finish']}; the limit is {ORDER_ITEMS_MAX}")
    elif kind == "finish":
        if m["count"] > ORDER_ITEMS_MAX:
            _invalid("finish count", f"{m['count']}; the limit is {ORDER_ITEMS_MAX}")


def _validate_control(kind: str, m: dict):
    _valid_peer("worker id", m["worker"])
    if kind == "heartbeat":
        if not 1 <= m["capacity"] <= WORKER_CONCURRENCY_MAX:
            _invalid("capacity", f"{m['capacity']}; it must be 1..={WORKER_CONCURRENCY_MAX}")
        if len(m["in_flight"]) > HEARTBEAT_IN_FLIGHT_MAX:
            _invalid("in_flight", f"{len(m['in_flight'])} orders; the limit is {HEARTBEAT_IN_FLIGHT_MAX}")
        for key in m["in_flight"]:
            _valid_key(key)
        if m["broken"] is not None and len(m["broken"].encode()) > REASON_BYTES_MAX:
            _invalid("broken", f"the limit is {REASON_BYTES_MAX} bytes")
    elif kind in ("ack", "nack"):
        _valid_key(m["order"])
        if kind == "nack" and len(m["reason"].encode()) > REASON_BYTES_MAX:
            _invalid("reason", f"{len(m['reason'].encode())} bytes; the limit is {REASON_BYTES_MAX}")
    elif kind == "acks":
        if len(m["acks"]) > ACKS_PER_MESSAGE_MAX:
            _invalid("acks", f"{len(m['acks'])} acks; the limit is {ACKS_PER_MESSAGE_MAX}")
        for acked in m["acks"]:
            _valid_key(acked["order"])


def _valid_dispatch(m: dict):
    _valid_key(m["order"])
    if len(m["items"]) > ORDER_ITEMS_MAX:
        _invalid("items", f"{len(m['items'])} items; the limit is {ORDER_ITEMS_MAX}")


def _validate_fanout(kind: str, m: dict):
    if kind == "dispatch":
        _valid_dispatch(m)
    elif kind == "dispatches":
        n = len(m["dispatches"])
        if not 1 <= n <= DISPATCHES_PER_MESSAGE_MAX:
            _invalid("dispatches", f"{n} orders; it must be 1..={DISPATCHES_PER_MESSAGE_MAX}")
        for entry in m["dispatches"]:
            _valid_dispatch(entry)
    elif kind == "backpressure":
        size = len(m["reason"].encode())
        if not 1 <= size <= BACKPRESSURE_REASON_BYTES_MAX:
            _invalid("backpressure reason", f"{size} bytes; it must be 1..={BACKPRESSURE_REASON_BYTES_MAX}")
        if len(m["detail"].encode()) > REASON_BYTES_MAX:
            _invalid("backpressure detail", f"the limit is {REASON_BYTES_MAX} bytes")


_VALIDATE = {"intake": _validate_intake, "control": _validate_control, "fanout": _validate_fanout}


# ---------------------------------------------------------------- encoding


def _ordered(value, typ: str):
    """`value` rebuilt in schema order (dicts' keys in Rust field order)."""
    if value is None or typ in ("str", "bin", "bool", "u16", "u32", "u64"):
        return value
    if typ.endswith("?"):
        return _ordered(value, typ[:-1])
    if typ.startswith("["):
        inner = typ[1:-1]
        if inner in ("bin", "str"):
            return list(value)
        return [_ordered(v, inner) for v in value]
    if typ == "key":
        return {"producer": value["producer"], "id": value["id"]}
    if typ == "acked":
        return {"order": _ordered(value["order"], "key"), "attempt": value["attempt"]}
    if typ == "whole":
        return {"order": value["order"], "data": list(value["data"])}
    if typ == "dispatch":
        return {f: _ordered(value[f], t) for f, t, _ in _DISPATCH}
    if typ == "reject_reason":
        if isinstance(value, str):
            return value
        (name, fields), = value.items()
        return {name: {f: fields[f] for f, _, _ in _REJECT_REASONS[name]}}
    raise AssertionError(typ)


def encode(socket: str, kind: str, body: dict) -> bytes:
    """Encodes a message of `kind` exactly as the Rust side does: every
    field in Rust order; a missing optional field as its default."""
    schema = SOCKETS[socket][kind]
    out = {}
    for name, typ, default in schema:
        value = body.get(name, _MISSING)
        if value is _MISSING:
            if default is _MISSING and not typ.endswith("?"):
                raise ValueError(f"{kind} needs field `{name}`")
            value = None if default is _MISSING else default
        out[name] = _ordered(value, typ)
    return msgpack.packb({"v": PROTOCOL_VERSION, "kind": kind, "body": out}, use_bin_type=True)


# Hot-path encoders: the same bytes as `encode`, without the schema walk.


def encode_items(producer: str, order: str, begin: bool, first: int, data: list, finish) -> bytes:
    return msgpack.packb(
        {
            "v": 1,
            "kind": "items",
            "body": {"producer": producer, "order": order, "begin": begin, "first": first, "data": data, "finish": finish},
        },
        use_bin_type=True,
    )


def encode_orders(producer: str, orders: list) -> bytes:
    """An `orders` message (since 0.4): `orders` is a list of (order id,
    items) pairs, each a whole order. Send it only to a broker whose
    welcome's `orders_max` is at least `len(orders)`."""
    body = {"producer": producer, "orders": [{"order": order, "data": list(data)} for order, data in orders]}
    return msgpack.packb({"v": 1, "kind": "orders", "body": body}, use_bin_type=True)


def encode_hello(producer: str, nonce: int) -> bytes:
    return msgpack.packb({"v": 1, "kind": "hello", "body": {"producer": producer, "nonce": nonce}}, use_bin_type=True)


def encode_begin(producer: str, order: str) -> bytes:
    return msgpack.packb({"v": 1, "kind": "begin", "body": {"producer": producer, "order": order}}, use_bin_type=True)


def encode_item(producer: str, order: str, seq: int, data: bytes) -> bytes:
    return msgpack.packb(
        {"v": 1, "kind": "item", "body": {"producer": producer, "order": order, "seq": seq, "data": data}},
        use_bin_type=True,
    )


def encode_finish(producer: str, order: str, count: int) -> bytes:
    return msgpack.packb(
        {"v": 1, "kind": "finish", "body": {"producer": producer, "order": order, "count": count}}, use_bin_type=True
    )


def encode_heartbeat(worker, incarnation, capacity, in_flight, welcome, draining, broken, dispatches_max=0) -> bytes:
    """`in_flight`: (producer, id) pairs. `dispatches_max` (since 0.5):
    the most orders the broker may send in one `dispatches` message; 0
    asks for one `dispatch` per order."""
    return msgpack.packb(
        {
            "v": 1,
            "kind": "heartbeat",
            "body": {
                "worker": worker,
                "incarnation": incarnation,
                "capacity": capacity,
                "in_flight": [{"producer": p, "id": i} for p, i in in_flight],
                "welcome": welcome,
                "draining": draining,
                "broken": broken,
                "dispatches_max": dispatches_max,
            },
        },
        use_bin_type=True,
    )


def encode_acks(worker: str, incarnation: int, acks) -> bytes:
    """`acks`: (producer, id, attempt) triples; one `ack` if there is one,
    else an `acks` message (at most ACKS_PER_MESSAGE_MAX: the caller splits)."""
    if len(acks) == 1:
        (p, i, a), = acks
        body = {"worker": worker, "incarnation": incarnation, "order": {"producer": p, "id": i}, "attempt": a}
        return msgpack.packb({"v": 1, "kind": "ack", "body": body}, use_bin_type=True)
    listed = [{"order": {"producer": p, "id": i}, "attempt": a} for p, i, a in acks]
    return msgpack.packb(
        {"v": 1, "kind": "acks", "body": {"worker": worker, "incarnation": incarnation, "acks": listed}},
        use_bin_type=True,
    )


def encode_nack(worker, incarnation, producer, order_id, attempt, retry, reason, delay_ms, returned) -> bytes:
    return msgpack.packb(
        {
            "v": 1,
            "kind": "nack",
            "body": {
                "worker": worker,
                "incarnation": incarnation,
                "order": {"producer": producer, "id": order_id},
                "attempt": attempt,
                "retry": retry,
                "reason": reason,
                "delay_ms": delay_ms,
                "returned": returned,
            },
        },
        use_bin_type=True,
    )


def encode_bye(worker: str, incarnation: int) -> bytes:
    return msgpack.packb({"v": 1, "kind": "bye", "body": {"worker": worker, "incarnation": incarnation}}, use_bin_type=True)


def pack_runs(items, budget: int = PACKED_FRAME_BYTES_MAX) -> list:
    """Splits items into runs of at most `budget` payload bytes (plus 5 of
    framing per item; an item larger than that alone in its run), like the
    Rust `pack_runs`: the end index of each run."""
    ends, used = [], 0
    for i, item in enumerate(items):
        cost = len(item) + 5
        if used > 0 and used + cost > budget:
            ends.append(i)
            used = 0
        used += cost
    ends.append(len(items))
    return ends
