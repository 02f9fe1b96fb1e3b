#!/usr/bin/env python3
"""The device's own commit latency, for reading a confirm p99 beside it.

Writes a 4 KiB block and fdatasyncs it, N times (0.5 ms apart, as a
broker at 1,000 orders/s would), into a preallocated, zero-filled file in
DIR (a journal's blocks are written ahead the same way on a quiet
broker), and prints one line of JSON: {"samples", "p50", "p99", "p999"}
in ms. The file is removed.

    bench/fsync_probe.py DIR [N]
"""
import json
import os
import sys
import time

BLOCK = 4096
FILE_BYTES = 16 * 1024 * 1024


def main() -> None:
    directory = sys.argv[1]
    samples = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    if samples < 1 or samples * BLOCK > FILE_BYTES:
        sys.exit(f"fsync_probe: N must be 1..{FILE_BYTES // BLOCK}, got {samples}")
    path = os.path.join(directory, f"fsync-probe.{os.getpid()}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        zeros = bytes(1024 * 1024)
        for offset in range(0, FILE_BYTES, len(zeros)):
            os.pwrite(fd, zeros, offset)
        os.fsync(fd)
        block = os.urandom(BLOCK)
        latencies = []
        for i in range(samples):
            start = time.perf_counter()
            os.pwrite(fd, block, i * BLOCK)
            os.fdatasync(fd)
            latencies.append((time.perf_counter() - start) * 1000)
            time.sleep(0.0005)
    finally:
        os.close(fd)
        os.unlink(path)
    latencies.sort()
    at = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
    print(json.dumps({"samples": samples, "p50": round(at(0.5), 3), "p99": round(at(0.99), 3),
                      "p999": round(at(0.999), 3)}))


if __name__ == "__main__":
    main()
