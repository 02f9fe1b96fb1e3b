#!/usr/bin/env python3
"""Checks worker sinks against the orders that were sent.

usage: check_sinks.py PRODUCER EXPECTED.json [--exactly-once] [--only IDS_FILE] SINK_DIR...
--only: require only the orders listed (one id per line, e.g. a producer's
confirmed log); deliveries of other sent orders are allowed, of orders
never sent are not.
For every expected order: at least one delivery (exactly one with
--exactly-once), a sink file whose items equal what was sent, and a
deliveries.log checksum equal to the SHA-256 of the exact item bytes
(each item as a 4-byte big-endian length, then its bytes). Prints counts.
"""
import hashlib
import json
import os
import sys
import urllib.parse


def file_safe(text):
    out = []
    for index, byte in enumerate(text.encode()):
        c = chr(byte)
        if (c.isascii() and c.isalnum()) or c in "_-" or (c == "." and index > 0):
            out.append(c)
        else:
            out.append("%%%02X" % byte)
    return "".join(out)


def sink_file_name(order_id):
    """The worker's sink_file_name: the escaped id, hashed when too long."""
    safe = file_safe(order_id)
    if len(safe) + len(".json") <= 255:
        return safe + ".json"
    cut = 255 - len(".json") - 1 - 64
    at = safe.rfind("%", cut - 2, cut)
    if at >= 0:
        cut = at
    return safe[:cut] + "~" + hashlib.sha256(order_id.encode()).hexdigest() + ".json"


def items_sha256(raws):
    h = hashlib.sha256()
    for raw in raws:
        data = raw.encode()
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.hexdigest()


args = sys.argv[1:]
producer, expected_path = args[0], args[1]
exactly_once = "--exactly-once" in args
only_path = args[args.index("--only") + 1] if "--only" in args else None
sinks = [a for a in args[2:] if a not in ("--exactly-once", "--only", only_path)]
sent = json.load(open(expected_path, encoding="utf-8"))
expected = sent
if only_path:
    wanted = set(line.rstrip("\n") for line in open(only_path, encoding="utf-8") if line.strip())
    missing = wanted - set(sent)
    if missing:
        print(f"problem: {len(missing)} required ids were never sent, e.g. {sorted(missing)[:3]}")
        sys.exit(1)
    expected = {k: v for k, v in sent.items() if k in wanted}
by_safe_id = {file_safe(order_id): order_id for order_id in sent}

deliveries = {}
for sink in sinks:
    log = os.path.join(sink, "deliveries.log")
    if not os.path.exists(log):
        continue
    for line in open(log, encoding="utf-8"):
        prod, safe_id, attempt, digest = line.rstrip("\n").split("\t")
        if prod != producer:
            continue
        deliveries.setdefault(safe_id, []).append((sink, digest))

problems = []
duplicates = 0
extra = 0
for order_id, raws in sent.items():
    safe = file_safe(order_id)
    got = deliveries.get(safe, [])
    if order_id not in expected:
        if not got:
            continue
        extra += 1  # sent, not required, delivered anyway: still checked below
    if not got:
        problems.append(f"order {order_id!r} was never delivered")
        continue
    duplicates += len(got) - 1
    if exactly_once and len(got) != 1:
        problems.append(f"order {order_id!r} was delivered {len(got)} times")
    want = items_sha256(raws)
    for sink, digest in got:
        if digest != want:
            problems.append(f"order {order_id!r} in {sink}: checksum {digest} != {want}")
        path = os.path.join(sink, file_safe(producer), sink_file_name(order_id))
        with open(path, "rb") as f:
            body = f.read()
        doc = json.loads(body)
        if doc["id"] != order_id or doc["producer"] != producer:
            problems.append(f"{path}: id/producer mismatch")
        if doc["items"] != [json.loads(r) for r in raws]:
            problems.append(f"{path}: items differ from what was sent")
        for raw in raws:
            if raw.encode() not in body:
                problems.append(f"{path}: item bytes {raw!r} not found verbatim")
                break

unknown = set(deliveries) - set(by_safe_id)
for safe in sorted(unknown)[:10]:
    problems.append(f"delivery of an order that was never sent: {safe}")
delivered = len(expected) - sum(1 for o in expected if file_safe(o) not in deliveries)
print(f"orders required {len(expected)}, delivered {delivered}, duplicate deliveries {duplicates}, "
      f"delivered but not required {extra}, never sent {len(unknown)}")
for p in problems[:20]:
    print("problem:", p)
sys.exit(1 if problems else 0)
