#!/usr/bin/env python3
"""A trivial `orderly-worker run --serve` handler: acknowledges every order.

Stdlib only. Reads stdin in large chunks with os.read, answers every
complete line of a chunk with an ack, and writes all the answers of a chunk
with one os.write: the fastest a handler can be, for the benchmark in the
worker's docs (a handler that does real work is bound by that work).
Exits on EOF, as the contract asks.
"""
import json
import os
import sys

CHUNK_BYTES = 1 << 20


def main():
    pending = b""
    while True:
        chunk = os.read(0, CHUNK_BYTES)
        if not chunk:
            return 0
        pending += chunk
        *lines, pending = pending.split(b"\n")
        answers = []
        for line in lines:
            if not line:
                continue
            order = json.loads(line)
            answers.append(json.dumps({"producer": order["producer"], "id": order["id"], "result": "ack"}))
        if answers:
            out = ("\n".join(answers) + "\n").encode()
            while out:
                out = out[os.write(1, out):]


if __name__ == "__main__":
    sys.exit(main())
