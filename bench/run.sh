#!/usr/bin/env bash
# End-to-end benchmark on loopback: a broker (journal on disk), noop
# workers and `orderly-producer bench` producers, release build. Prints one
# markdown table; exits non-zero if any order was lost.
#
#   bench/run.sh [--orders N] [--items K] [--item-bytes S] [--workers W]
#                [--producers P] [--fsync always|interval:MS|never] [--runs R]
#
# orders/s end to end = all orders acknowledged (broker's count) divided by
# the time from the first producer start to the last POSACK the broker
# recorded (polled every 50 ms through the admin endpoint, so it is a
# slight underestimate). Confirm latency percentiles are the producers'
# (Finish sent → Confirm received), from the first producer.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ORDERS=100000 ITEMS=10 ITEM_BYTES=100 WORKERS=1 PRODUCERS=1 FSYNC=always RUNS=1
while [ $# -gt 0 ]; do
    case "$1" in
        --orders) ORDERS=$2 ;;
        --items) ITEMS=$2 ;;
        --item-bytes) ITEM_BYTES=$2 ;;
        --workers) WORKERS=$2 ;;
        --producers) PRODUCERS=$2 ;;
        --fsync) FSYNC=$2 ;;
        --runs) RUNS=$2 ;;
        -h|--help) sed -n 2,14p "$0"; exit 0 ;;
        *) echo "bench: unknown flag $1 (see --help)" >&2; exit 2 ;;
    esac
    shift 2
done
cd "$ROOT"
scripts/setup.sh
cargo build --release --quiet --bins
BIN="$ROOT/target/release"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

one_run() {
    local work pids=() intake fanout control admin broker started
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
        "$BIN/orderly-worker" run --id "bench-w$w" --fanout "$fanout" --control "$control" --concurrency 256 \
            --noop --log-level warn 2>"$work/worker$w.log" &
        pids+=("$!")
    done
    sleep 1.5 # workers welcomed
    local total=$((ORDERS * PRODUCERS)) t0 t1 acked
    t0=$(date +%s.%N)
    local deadline=$((SECONDS + 600))
    for p in $(seq 1 "$PRODUCERS"); do
        "$BIN/orderly-producer" bench --id "bench-p$p" --intake "$intake" --fanout "$fanout" --orders "$ORDERS" \
            --items "$ITEMS" --item-bytes "$ITEM_BYTES" --timeout 60 >"$work/producer$p.out" 2>&1 &
        pids+=("$!")
    done
    while :; do
        acked=$("$BIN/orderly-broker" status --admin "$admin" --json |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["orders_acked"])')
        [ "$acked" -ge "$total" ] && break
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 0.05
    done
    t1=$(date +%s.%N)
    wait "${pids[@]:$((WORKERS + 1))}" || true
    local status rss cpu_ticks hz
    status=$("$BIN/orderly-broker" status --admin "$admin" --json)
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$broker/status")
    hz=$(getconf CLK_TCK)
    cpu_ticks=$(awk '{print $14 + $15}' "/proc/$broker/stat")
    python3 - "$status" "$t0" "$t1" "$total" "$ITEMS" "$rss" "$cpu_ticks" "$hz" "$work/producer1.out" <<'PY'
import json, re, sys
status, t0, t1, total, items, rss, ticks, hz, out = sys.argv[1:]
v = json.loads(status)
acked = v["counters"]["orders_acked"]
elapsed = float(t1) - float(t0)
line = open(out).read()
lat = re.search(r"p50 ([\d.]+) p99 ([\d.]+) p999 ([\d.]+)", line)
print("|".join([
    "", f" {acked}/{total} ", f" {acked / elapsed:,.0f} ", f" {acked * int(items) / elapsed:,.0f} ",
    f" {lat.group(1) if lat else '-'} / {lat.group(2) if lat else '-'} / {lat.group(3) if lat else '-'} ",
    f" {int(rss) / 1024:.0f} MiB ", f" {int(ticks) / int(hz) * 1e6 / max(acked, 1):.1f} ",
    f" {v['journal_bytes_written'] / max(acked, 1):.0f} ", ""]))
sys.exit(0 if acked >= int(total) else 1)
PY
}

echo "orderly bench: $ORDERS orders × $PRODUCERS producers, $ITEMS items × $ITEM_BYTES B, $WORKERS noop workers, fsync $FSYNC"
echo
echo "| acked | orders/s | items/s | confirm ms p50 / p99 / p999 | broker peak RSS | broker CPU µs/order | journal B/order |"
echo "|---|---|---|---|---|---|---|"
lost=0
for _ in $(seq 1 "$RUNS"); do one_run || lost=1; done
[ "$lost" -eq 0 ] || { echo "bench: orders were lost" >&2; exit 1; }
