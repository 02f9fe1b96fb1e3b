#!/usr/bin/env bash
# The wire's floor on this machine: orders a second that libzmq alone
# moves from one process to another as the producer's intake messages
# (orderly-zmq-floor: per item 12 messages an order, packed 1), plaintext
# and CURVE, with nothing else running — no encoding, no broker, no
# journal, no dispatch, no confirms. The end-to-end figures of
# `bench/run.sh` can never pass these here; the issue 20 targets are
# printed beside them. Prints one markdown table, a row per framing and
# security, medians of --runs runs.
#
#   bench/floor.sh [--orders N] [--items K] [--item-bytes S] [--runs R]
#
# ORDERLY_BIN_DIR=DIR: use the binaries in DIR instead of building a
# release (the test command's smoke run; debug figures mean nothing).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ORDERS=100000 ITEMS=10 ITEM_BYTES=100 RUNS=3
while [ $# -gt 0 ]; do
    case "$1" in
        --orders) ORDERS=$2 ;;
        --items) ITEMS=$2 ;;
        --item-bytes) ITEM_BYTES=$2 ;;
        --runs) RUNS=$2 ;;
        -h|--help) sed -n 2,14p "$0"; exit 0 ;;
        *) echo "floor: unknown flag $1 (see --help)" >&2; exit 2 ;;
    esac
    shift 2
done
cd "$ROOT"
scripts/setup.sh
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_bins -p orderly-tests --bin orderly-zmq-floor
out="$(mktemp "${TMPDIR:-/tmp}/orderly-floor.XXXXXX")"
trap 'rm -f "$out"' EXIT
# Runs interleaved (per-item, packed, each plaintext then CURVE), so a
# busy moment lands on every row alike.
for _ in $(seq "$RUNS"); do
    for framing in per-item packed; do
        for curve in "" --curve; do
            timeout 600 "$BIN/orderly-zmq-floor" --orders "$ORDERS" --items "$ITEMS" --item-bytes "$ITEM_BYTES" \
                --framing "$framing" $curve >>"$out"
        done
    done
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
median = lambda key, f, c: statistics.median(r[key] for r in rows if r["framing"] == f and r["curve"] == c)
target = {"per-item": 100_000, "packed": 250_000}
print("| framing | security | orders/s (median) | messages/s | receiver CPU µs/order | sender CPU µs/order | "
      "CURVE / plaintext | issue 20 target (end to end) |")
print("|---|---|---|---|---|---|---|---|")
for f in ("per-item", "packed"):
    plain = median("orders_per_s", f, False)
    for c in (False, True):
        ops = median("orders_per_s", f, c)
        ratio = f"{ops / plain:.2f}" if c else "—"
        goal = f"{target[f]:,} orders/s" if not c else "≥ 0.80 of plaintext"
        print(f"| {f} | {'CURVE' if c else 'plaintext'} | {ops:,.0f} | {median('messages_per_s', f, c):,.0f} | "
              f"{median('receiver_cpu_us_per_order', f, c):.2f} | {median('sender_cpu_us_per_order', f, c):.2f} | "
              f"{ratio} | {goal} |")
runs = {len([r for r in rows if r["framing"] == f]) // 2 for f in ("per-item", "packed")}
print(f"\nmedians of {max(runs)} runs of {rows[0]['orders']:,} orders each; libzmq only, one sender and one receiver process")
PY
