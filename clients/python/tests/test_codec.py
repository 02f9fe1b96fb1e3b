"""The codec without sockets: hot-path encoders agree with the general one,
decoding rules (unknown fields, absent optional fields, typed errors)."""

from __future__ import annotations

import msgpack
import pytest
from orderly import ConfigError, DecodeError
from orderly import _protocol as proto
from orderly.errors import check_order_id, check_peer_id, cut_reason

U64_MAX = (1 << 64) - 1


def test_hot_path_encoders_write_what_the_general_encoder_writes():
    key = {"producer": "p1", "id": "o-1"}
    assert proto.encode_hello("p1", U64_MAX) == proto.encode("intake", "hello", {"producer": "p1", "nonce": U64_MAX})
    assert proto.encode_items("p1", "o", True, 0, [b"a", b""], 2) == proto.encode(
        "intake", "items", {"producer": "p1", "order": "o", "begin": True, "first": 0, "data": [b"a", b""], "finish": 2}
    )
    assert proto.encode_heartbeat("w1", 7, 16, [("p1", "o-1")], None, False, None) == proto.encode(
        "control", "heartbeat", {"worker": "w1", "incarnation": 7, "capacity": 16, "in_flight": [key]}
    )
    assert proto.encode_heartbeat("w1", 7, 16, [], 3, False, None, 64) == proto.encode(
        "control", "heartbeat", {"worker": "w1", "incarnation": 7, "capacity": 16, "in_flight": [], "welcome": 3,
                                 "dispatches_max": 64}
    )
    assert proto.encode_acks("w1", 7, [("p1", "o-1", 2)]) == proto.encode(
        "control", "ack", {"worker": "w1", "incarnation": 7, "order": key, "attempt": 2}
    )
    assert proto.encode_acks("w1", 7, [("p1", "o-1", 2)] * 2) == proto.encode(
        "control", "acks", {"worker": "w1", "incarnation": 7, "acks": [{"order": key, "attempt": 2}] * 2}
    )
    assert proto.encode_nack("w1", 7, "p1", "o-1", 1, True, "r", 5, False) == proto.encode(
        "control", "nack",
        {"worker": "w1", "incarnation": 7, "order": key, "attempt": 1, "retry": True, "reason": "r", "delay_ms": 5},
    )
    orders = [("o-1", [b"a", b""]), ("o-2", [])]
    assert proto.encode_orders("p1", orders) == proto.encode(
        "intake", "orders", {"producer": "p1", "orders": [{"order": o, "data": d} for o, d in orders]}
    )
    assert proto.decode("intake", proto.encode_orders("p1", orders)) == (
        "orders",
        {"producer": "p1", "orders": [{"order": "o-1", "data": [b"a", b""]}, {"order": "o-2", "data": []}]},
    )


def envelope(kind, body, **extra) -> bytes:
    return msgpack.packb({"v": 1, "kind": kind, "body": body, **extra}, use_bin_type=True)


def test_unknown_fields_are_ignored_and_optional_ones_may_be_absent():
    body = {"incarnation": U64_MAX, "interval_ms": 1000, "later": [1, {"x": None}]}
    kind, hb = proto.decode_fanout(envelope("heartbeat", body, trailer="new"))
    assert kind == "heartbeat"
    assert hb == {"incarnation": U64_MAX, "interval_ms": 1000, "member": None, "leader": None, "term": 0}
    dispatch = {"items": [b"x"], "order": {"id": "o", "producer": "p", "extra": 1}, "redelivered": True, "attempt": 2}
    kind, d = proto.decode_fanout(envelope("dispatch", dispatch))
    assert d == {"order": {"producer": "p", "id": "o"}, "attempt": 2, "redelivered": True, "items": [b"x"]}


@pytest.mark.parametrize(
    "frame, error",
    [
        (envelope("welcome", {"nonce": -1}), "Malformed"),
        (envelope("welcome", {}), "Malformed"),
        (envelope("dispatch", {"order": {"producer": "p/", "id": "o"}, "attempt": 1, "redelivered": False, "items": []}),
         "Invalid"),
        (envelope("hello", {"producer": "p", "nonce": 1}), "UnknownKind"),
        (msgpack.packb({"v": 2, "kind": "welcome", "body": {"nonce": 1}}), "UnsupportedVersion"),
        (msgpack.packb({"body": {"nonce": 1}, "v": 1, "kind": "welcome"}), "Malformed"),
        (envelope("welcome", {"nonce": 1})[:-1], "Truncated"),
        (envelope("welcome", {"nonce": 1}) + b"\x00", "TrailingBytes"),
        (b"\xc1", "Malformed"),
        (envelope("dispatches", {"dispatches": []}), "Invalid"),
        (envelope("dispatches", {"dispatches": [{"order": {"producer": "p", "id": ""}, "attempt": 1,
                                                 "redelivered": False, "items": []}]}), "Invalid"),
        (envelope("dispatches", {"dispatches": [{"order": {"producer": "p", "id": "o"}, "attempt": 1}]}),
         "Malformed"),
    ],
)
def test_bad_frames_raise_typed_errors(frame, error):
    with pytest.raises(DecodeError) as raised:
        proto.decode_fanout(frame)
    assert raised.value.kind == error


def test_ids_are_checked_with_a_hint():
    assert check_peer_id("worker id", "w-1.a_B") == "w-1.a_B"
    for bad in ("", "a/b", "x" * 65, "ü"):
        with pytest.raises(ConfigError, match="1 to 64 characters"):
            check_peer_id("worker id", bad)
    assert check_order_id("ü" * 128) == "ü" * 128
    with pytest.raises(ConfigError, match="257 bytes"):
        check_order_id("ü" * 128 + "x")


def test_reasons_are_cut_on_a_character_boundary():
    assert cut_reason("ü" * 600) == "ü" * 512
    assert cut_reason("short") == "short"


def test_pack_runs_like_the_rust_producer():
    assert proto.pack_runs([]) == [0]
    assert proto.pack_runs([b"x" * 100] * 3) == [3]
    assert proto.pack_runs([b"x" * (200 * 1024)] * 3) == [1, 2, 3]


def test_dispatches_decode_entry_by_entry():
    """Since 0.5: a `dispatches` message is a list of dispatch bodies, each
    decoded (unknown fields dropped) and checked as a lone dispatch; at
    most DISPATCHES_PER_MESSAGE_MAX of them."""
    def entry(i, **extra):
        return {"order": {"producer": "p", "id": f"o{i}"}, "attempt": 1 + i, "redelivered": i > 0, "items": [b"x"],
                **extra}
    frame = envelope("dispatches", {"dispatches": [entry(0, later=1), entry(1)]})
    kind, body = proto.decode_fanout(frame)
    assert kind == "dispatches"
    assert body == {"dispatches": [entry(0), entry(1)]}
    assert proto.encode("fanout", "dispatches", body) == envelope("dispatches", {"dispatches": [entry(0), entry(1)]})
    too_many = envelope("dispatches", {"dispatches": [entry(0)] * (proto.DISPATCHES_PER_MESSAGE_MAX + 1)})
    with pytest.raises(DecodeError) as raised:
        proto.decode_fanout(too_many)
    assert raised.value.kind == "Invalid"
    kind, _ = proto.decode_fanout(envelope("dispatches", {"dispatches": [entry(0)] * proto.DISPATCHES_PER_MESSAGE_MAX}))
    assert kind == "dispatches"


def test_worker_dispatches_max_is_checked():
    from orderly import Worker
    for bad in (-1, proto.DISPATCHES_PER_MESSAGE_MAX + 1, "64", 1.5):
        with pytest.raises(ConfigError, match="dispatches_max must be an integer from 0 to 256"):
            Worker("w1", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", handler=print, dispatches_max=bad)
    assert Worker("w1", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", handler=print).dispatches_max == 64
