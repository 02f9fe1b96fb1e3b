"""The protocol's test vectors (docs/protocol-vectors.json), checked with
this package's codec: the same file the Rust tests check.

ORDERLY_PROTOCOL_VECTORS names another file (e.g. to try new vectors).
A missing file fails: the vectors are part of the spec."""

from __future__ import annotations

import json
import os

import msgpack
import pytest
from conftest import REPO
from orderly import DecodeError
from orderly import _protocol as proto

VECTORS = os.environ.get("ORDERLY_PROTOCOL_VECTORS") or os.path.join(REPO, "docs", "protocol-vectors.json")
ERRORS = {"UnsupportedVersion", "UnknownKind", "Malformed", "Truncated", "TrailingBytes", "Invalid"}


def load_vectors() -> list:
    if not os.path.exists(VECTORS):
        pytest.fail(f"{VECTORS} is missing: the protocol's test vectors are part of the spec (docs/PROTOCOL.md)")
    with open(VECTORS, encoding="utf-8") as f:
        doc = json.load(f)
    assert doc.get("format") == 1, f"{VECTORS}: format {doc.get('format')!r}; this test reads format 1"
    assert doc["vectors"], "no vectors"
    return doc["vectors"]


def project(value):
    """The JSON projection of an unpacked MessagePack value."""
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, dict):
        return {str(k): project(v) for k, v in value.items()}
    if isinstance(value, list):
        return [project(v) for v in value]
    assert not isinstance(value, float), "floats never appear in the protocol"
    return value


def test_vectors():
    problems = []
    vectors = load_vectors()
    for vector in vectors:
        name, socket = vector["name"], vector["socket"]
        body = bytes.fromhex(vector["body_hex"])
        if "error" in vector:
            assert vector["error"] in ERRORS, f"{name}: unknown error class {vector['error']}"
            try:
                decoded = proto.decode(socket, body)
            except DecodeError as e:
                if e.kind != vector["error"]:
                    problems.append(f"{name}: refused as {e.kind} ({e.detail}), the vector says {vector['error']}")
            else:
                problems.append(f"{name}: accepted ({decoded}), the vector says {vector['error']}")
            continue
        unpacked = msgpack.unpackb(body, raw=False, strict_map_key=False)
        if project(unpacked) != vector["decoded"]:
            problems.append(f"{name}: unpacks to {project(unpacked)}, the vector says {vector['decoded']}")
        try:
            kind, fields = proto.decode(socket, body)
        except DecodeError as e:
            problems.append(f"{name}: refused as {e}")
            continue
        if socket == "fanout":  # the hot path must agree with the general one
            assert proto.decode_fanout(body) == (kind, fields), name
        if vector["canonical"] and proto.encode(socket, kind, fields) != body:
            problems.append(f"{name}: re-encodes to {proto.encode(socket, kind, fields).hex()}, not {vector['body_hex']}")
    assert not problems, "\n".join(problems)
    kinds = {(v["socket"], v.get("decoded", {}).get("kind")) for v in vectors if "error" not in v}
    assert len(kinds) >= 10, f"the vectors cover only {sorted(kinds)}"
