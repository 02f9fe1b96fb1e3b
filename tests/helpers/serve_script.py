#!/usr/bin/env python3
"""A scripted `orderly-worker run --serve` handler for the worker's tests.

Usage: serve_script.py LOG_FILE

What it does with an order depends on the start of its id:
  ack-...     acks.
  delay-...   attempt 1: nacks with retry and delay_ms 1500; later: acks.
  final-...   nacks with retry false (the broker dead-letters it).
  die-...     attempt 1: exits at once (code 3) without answering; later: acks.
  hang-...    attempt 1: never answers (and stops reading); later: acks.
  hold-N-...  holds the order until N hold orders are held, then acks them all.
  stray-...   first prints a non-JSON line, an answer naming an order it does
              not hold and a line without "result", then acks.
  long-...    attempt 1: writes a line over 1 MiB (a protocol error); later: acks.
  binary-...  acks.
Every order it gets is logged to LOG_FILE as one JSON line:
  {"process": ORDERLY_SERVE_PROCESS, "pid": ..., "id": ..., "attempt": ...,
   "time": ..., "items_hex": [hex of each item's bytes, base64 decoded]}
Stdlib only.
"""
import base64
import json
import os
import sys
import time

LOG = sys.argv[1]
PROCESS = os.environ.get("ORDERLY_SERVE_PROCESS", "?")
PARENT = os.getppid()
held = []


def answer(order, result, **extra):
    line = {"producer": order["producer"], "id": order["id"], "result": result, **extra}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def item_bytes(order):
    wrapped = set(order.get("base64_items", []))
    out = []
    for i, item in enumerate(order["items"]):
        data = base64.b64decode(item["base64"]) if i in wrapped else json.dumps(item).encode()
        out.append(data.hex())
    return out


def log(order):
    entry = {"process": PROCESS, "pid": os.getpid(), "id": order["id"], "attempt": order["attempt"],
             "time": time.time(), "items_hex": item_bytes(order),
             "env_serve": os.environ.get("ORDERLY_SERVE"), "env_worker": os.environ.get("ORDERLY_WORKER")}
    with open(LOG, "a") as f:
        f.write(json.dumps(entry) + "\n")


def handle(order):
    log(order)
    oid, first = order["id"], order["attempt"] == 1
    if oid.startswith("delay-") and first:
        answer(order, "nack", retry=True, delay_ms=1500, reason="busy, try later")
    elif oid.startswith("final-"):
        answer(order, "nack", retry=False, reason="this order can never succeed")
    elif oid.startswith("die-") and first:
        os._exit(3)
    elif oid.startswith("hang-") and first:
        # Hung, until killed; but not orphaned for ever should the test
        # process die first (then it is re-parented).
        while os.getppid() == PARENT:
            time.sleep(0.2)
        os._exit(1)
    elif oid.startswith("hold-"):
        want = int(oid.split("-")[1])
        held.append(order)
        if len(held) >= want:
            for o in held:
                answer(o, "ack")
            held.clear()
    elif oid.startswith("long-") and first:
        sys.stdout.write("x" * ((1 << 20) + 10) + "\n")
        sys.stdout.flush()
    elif oid.startswith("stray-"):
        sys.stdout.write("hello from a stray print()\n")
        answer({"producer": order["producer"], "id": "not-held-here"}, "ack")
        sys.stdout.write(json.dumps({"producer": order["producer"], "id": oid}) + "\n")
        answer(order, "ack", note="unknown fields are ignored")
    else:
        answer(order, "ack")


def main():
    for line in sys.stdin:
        handle(json.loads(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
