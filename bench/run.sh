#!/usr/bin/env bash
# End-to-end benchmark on loopback: a broker (journal on disk), noop
# workers and `orderly-producer bench` producers, release build. Prints one
# markdown table, a row per run; exits non-zero if any order was lost (in
# either run).
#
#   bench/run.sh [--orders N] [--items K] [--item-bytes S] [--workers W]
#                [--producers P] [--fsync always|interval:MS|never] [--runs R]
#                [--rate L] [--rate-orders M] [--framing both|per-item|packed]
#                [--concurrency C]
#
# --concurrency: each noop worker's concurrency, i.e. its credits (default
# 1024, the most a worker may advertise): the orders in flight per worker.
#
# --framing: how producers put items on the wire — `per-item` (Begin, one
# Item message per item, Finish: --one-frame-per-item) or `packed` (an
# order's items in as few `items` frames as fit; the library's default).
# `both` (the default) runs each, a table row per framing and run.
#
# Each run is a full-load run (every producer sends N orders as fast as its
# window allows) and then, unless --rate is 0, a fixed-load run of the same
# setup (a fresh broker and workers): every producer sends M orders (default
# 10000) on a fixed schedule, L orders/s in all (default 1000, split evenly
# across the producers; open loop, see `orderly-producer bench --help`).
#
# orders/s end to end = all orders acknowledged (broker's count) divided by
# the time from the first producer start to the last POSACK the broker
# recorded (polled every 50 ms through the admin endpoint, so it is a
# slight underestimate). Confirm latency percentiles are the producers'
# (Finish sent → Confirm received), from the first producer: at full load,
# and at L orders/s in the last column (which says how many orders were
# acked if some were lost). The other columns are the full-load run's.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ORDERS=100000 ITEMS=10 ITEM_BYTES=100 WORKERS=1 PRODUCERS=1 FSYNC=always RUNS=1 RATE=1000 RATE_ORDERS=10000
FRAMING=both CONCURRENCY=1024
while [ $# -gt 0 ]; do
    case "$1" in
        --orders) ORDERS=$2 ;;
        --items) ITEMS=$2 ;;
        --item-bytes) ITEM_BYTES=$2 ;;
        --workers) WORKERS=$2 ;;
        --producers) PRODUCERS=$2 ;;
        --fsync) FSYNC=$2 ;;
        --runs) RUNS=$2 ;;
        --rate) RATE=$2 ;;
        --rate-orders) RATE_ORDERS=$2 ;;
        --framing) FRAMING=$2 ;;
        --concurrency) CONCURRENCY=$2 ;;
        -h|--help) sed -n 2,32p "$0"; exit 0 ;;
        *) echo "bench: unknown flag $1 (see --help)" >&2; exit 2 ;;
    esac
    shift 2
done
case "$FRAMING" in
    both) FRAMINGS="per-item packed" ;;
    per-item|packed) FRAMINGS=$FRAMING ;;
    *) echo "bench: --framing is both, per-item or packed, not $FRAMING" >&2; exit 2 ;;
esac
# Pacing is on when RATE is a number above 0 (the producer refuses a bad one).
PACED=$(python3 -c 'import sys; print(int(float(sys.argv[1]) > 0))' "$RATE")
cd "$ROOT"
scripts/setup.sh
cargo build --release --quiet --bins
BIN="$ROOT/target/release"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# one_run ORDERS RATE OUT FRAMING: one run of the setup, every producer
# sending ORDERS orders (at RATE/PRODUCERS orders/s each if RATE is above 0)
# with FRAMING; writes its figures as JSON to OUT. Fails if an order was lost.
one_run() {
    local orders=$1 rate=$2 out=$3 framing=$4 per_producer framing_flag=()
    [ "$framing" = packed ] || framing_flag=(--one-frame-per-item)
    local work pids=() intake fanout control admin broker started
    per_producer=$(python3 -c 'import sys; print(float(sys.argv[1]) / int(sys.argv[2]))' "$rate" "$PRODUCERS")
    work="$(mktemp -d "${TMPDIR:-/tmp}/orderly-bench.XXXXXX")"
    intake="tcp://127.0.0.1:$(port)" fanout="tcp://127.0.0.1:$(port)" control="tcp://127.0.0.1:$(port)"
    admin="127.0.0.1:$(port)"
    "$BIN/orderly-broker" run --data-dir "$work/data" --fsync "$FSYNC" --intake "$intake" --fanout "$fanout" \
        --control "$control" --admin "$admin" --log-level warn 2>"$work/broker.log" &
    broker=$!
    pids+=("$broker")
    trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' RETURN
    until "$BIN/orderly-broker" status --admin "$admin" --json >/dev/null 2>&1; do sleep 0.05; done
    for w in $(seq 1 "$WORKERS"); do
        "$BIN/orderly-worker" run --id "bench-w$w" --fanout "$fanout" --control "$control" --concurrency "$CONCURRENCY" \
            --noop --log-level warn 2>"$work/worker$w.log" &
        pids+=("$!")
    done
    sleep 1.5 # workers welcomed
    local total=$((orders * PRODUCERS)) t0 t1 acked
    t0=$(date +%s.%N)
    local deadline=$((SECONDS + 600))
    for p in $(seq 1 "$PRODUCERS"); do
        "$BIN/orderly-producer" bench --id "bench-p$p" --intake "$intake" --fanout "$fanout" --orders "$orders" \
            --items "$ITEMS" --item-bytes "$ITEM_BYTES" --rate "$per_producer" --timeout 60 "${framing_flag[@]}" \
            >"$work/producer$p.out" 2>&1 &
        pids+=("$!")
    done
    # The poll is a small binary and a grep, not a Python start: on two cores
    # a heavier poll would itself slow the run. A fixed-load run is timed by
    # its producers, so it polls only every half second.
    local poll_s=0.05
    [ "$rate" = 0 ] || poll_s=0.5
    while :; do
        acked=$("$BIN/orderly-broker" status --admin "$admin" --json | grep -o '"orders_acked": [0-9]*' | grep -o '[0-9]*$')
        [ "${acked:-0}" -ge "$total" ] && break
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep "$poll_s"
    done
    t1=$(date +%s.%N)
    wait "${pids[@]:$((WORKERS + 1))}" || true
    local status rss cpu_ticks hz
    status=$("$BIN/orderly-broker" status --admin "$admin" --json)
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$broker/status")
    hz=$(getconf CLK_TCK)
    cpu_ticks=$(awk '{print $14 + $15}' "/proc/$broker/stat")
    python3 - "$status" "$t0" "$t1" "$total" "$rss" "$cpu_ticks" "$hz" "$work/producer1.out" >"$out" <<'PY'
import json, re, sys
status, t0, t1, total, rss, ticks, hz, out = sys.argv[1:]
v = json.loads(status)
acked = v["counters"]["orders_acked"]
lat = re.search(r"p50 ([\d.]+) p99 ([\d.]+) p999 ([\d.]+)", open(out).read())
json.dump({
    "acked": acked, "total": int(total), "elapsed": float(t1) - float(t0),
    "latency": list(lat.groups()) if lat else ["-", "-", "-"], "rss_kib": int(rss),
    "cpu_s": int(ticks) / int(hz), "journal_bytes": v["journal_bytes_written"],
    "commits": v.get("journal_commits", 0), "commit_s": v.get("journal_commit_seconds", 0.0),
}, sys.stdout)
sys.exit(0 if acked >= int(total) else 1)
PY
}

# row FRAMING FULL [FIXED]: the table row of a full-load run's figures (and of the
# fixed-load run's confirm latency).
row() {
    python3 - "$ITEMS" "$@" <<'PY'
import json, sys
items, framing, full = int(sys.argv[1]), sys.argv[2], json.load(open(sys.argv[3]))
fixed = json.load(open(sys.argv[4])) if len(sys.argv) > 4 else None
acked, elapsed = full["acked"], full["elapsed"]
cells = [
    framing, f"{acked}/{full['total']}", f"{acked / elapsed:,.0f}", f"{acked * items / elapsed:,.0f}",
    " / ".join(full["latency"]), f"{full['rss_kib'] / 1024:.0f} MiB",
    f"{full['cpu_s'] * 1e6 / max(acked, 1):.1f}", f"{full['journal_bytes'] / max(acked, 1):.0f}",
    f"{full['commits']:,} × {full['commit_s'] * 1000 / max(full['commits'], 1):.2f}",
]
if fixed is not None:
    cell = " / ".join(fixed["latency"])
    if fixed["acked"] < fixed["total"]:
        cell += f" ({fixed['acked']}/{fixed['total']} acked)"
    cells.append(cell)
print("| " + " | ".join(cells) + " |")
PY
}

RATE_LABEL=$(python3 -c 'import sys; print(f"{float(sys.argv[1]):,g}")' "$RATE")
echo "orderly bench: $ORDERS orders × $PRODUCERS producers, $ITEMS items × $ITEM_BYTES B, $WORKERS noop workers, fsync $FSYNC"
[ "$PACED" -eq 0 ] || echo "fixed load: $RATE_ORDERS orders × $PRODUCERS producers at $RATE_LABEL orders/s in all"
echo
header="| framing | acked | orders/s | items/s | confirm ms p50 / p99 / p999 | broker peak RSS | broker CPU µs/order"
header+=" | journal B/order | commits × mean ms |"
rule="|---|---|---|---|---|---|---|---|---|"
[ "$PACED" -eq 0 ] || { header+=" confirm ms at $RATE_LABEL/s p50 / p99 / p999 |"; rule+="---|"; }
echo "$header"
echo "$rule"
results="$(mktemp -d "${TMPDIR:-/tmp}/orderly-bench-results.XXXXXX")"
trap 'rm -rf "$results"' EXIT
lost=0
for framing in $FRAMINGS; do
    for _ in $(seq 1 "$RUNS"); do
        rm -f "$results"/*.json
        one_run "$ORDERS" 0 "$results/full.json" "$framing" || lost=1
        if [ "$PACED" -eq 1 ]; then
            one_run "$RATE_ORDERS" "$RATE" "$results/fixed.json" "$framing" || lost=1
            row "$framing" "$results/full.json" "$results/fixed.json"
        else
            row "$framing" "$results/full.json"
        fi
    done
done
[ "$lost" -eq 0 ] || { echo "bench: orders were lost" >&2; exit 1; }
