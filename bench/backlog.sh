#!/usr/bin/env bash
# Backlog benchmark on loopback (release build): a broker with no worker
# takes N orders (packed, fsync always by default) from one producer, so all
# N stay pending in its journal; then it is killed (kill -9) and restarted
# on the same data directory with a worker waiting. Prints one markdown row:
#
#   pending orders | broker peak RSS holding them | intake orders/s |
#   restart: journal replayed (ms, from the broker's log) |
#   restart: first dispatch (ms from exec to the broker's first dispatch) |
#   all N processed after the restart (s)
#
# then the restarted broker's peak RSS and both peaks per pending order.
#
#   bench/backlog.sh [--orders N] [--items K] [--item-bytes S] [--fsync P]
#                    [--payload-cache-bytes B]
#
# ORDERLY_BIN_DIR=DIR: use the release binaries in DIR instead of building
# them (as bench/run.sh: an A/B against another build's binaries).
#
# Exits non-zero if any order is missing after the restart.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ORDERS=1000000 ITEMS=10 ITEM_BYTES=100 FSYNC=always CACHE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --orders) ORDERS=$2 ;;
        --items) ITEMS=$2 ;;
        --item-bytes) ITEM_BYTES=$2 ;;
        --fsync) FSYNC=$2 ;;
        --payload-cache-bytes) CACHE=$2 ;;
        -h|--help) sed -n 2,21p "$0"; exit 0 ;;
        *) echo "backlog: unknown flag $1 (see --help)" >&2; exit 2 ;;
    esac
    shift 2
done
cd "$ROOT"
scripts/setup.sh
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_bins --bins
work="$(mktemp -d "${TMPDIR:-/tmp}/orderly-backlog.XXXXXX")"
pids=()
trap '{ kill -9 "${pids[@]}"; wait; } 2>/dev/null || true; rm -rf "$work"' EXIT
intake="tcp://127.0.0.1:$(port)" fanout="tcp://127.0.0.1:$(port)" control="tcp://127.0.0.1:$(port)"
admin="127.0.0.1:$(port)"
cache_flag=()
[ -z "$CACHE" ] || cache_flag=(--payload-cache-bytes "$CACHE")
broker() {
    "$BIN/orderly-broker" run --data-dir "$work/data" --fsync "$FSYNC" --intake "$intake" --fanout "$fanout" \
        --control "$control" --admin "$admin" --log-level info "${cache_flag[@]}" 2>>"$work/broker.log" &
    pids+=("$!")
    BROKER=$!
}
counter() {
    "$BIN/orderly-broker" status --admin "$admin" --json 2>/dev/null |
        python3 -c "import json,sys; print(json.load(sys.stdin)['counters']['$1'])" 2>/dev/null || echo -1
}
# await COUNTER N INTERVAL_S: waits in one python3 process (a process start
# per poll would take the CPU the restart is measured by) until the counter
# reaches N; prints the Unix time (s) it was seen there, or for orders_acked
# the broker's own last-ack time.
await() {
    python3 "$ROOT/bench/await_status.py" --counter "$1" --at-least "$2" --interval "$3" "$admin" |
        python3 -c 'import json, sys
v = json.load(sys.stdin)
print(((v["counter"] == "orders_acked" and v["last_ack_unix_ms"]) or v["seen_unix_ms"]) / 1000)'
}
broker
until [ "$(counter orders_sealed)" -ge 0 ]; do sleep 0.05; done
t0=$(date +%s.%N)
"$BIN/orderly-producer" bench --id backlog-p --intake "$intake" --fanout "$fanout" --orders "$ORDERS" \
    --items "$ITEMS" --item-bytes "$ITEM_BYTES" --timeout 120 --window 5000 >"$work/producer.out" 2>&1
t1=$(date +%s.%N)
sealed=$(counter orders_sealed)
rss=$(awk '/VmHWM/ {print $2}' "/proc/$BROKER/status")
kill -9 "$BROKER"
wait "$BROKER" 2>/dev/null || true
# A worker waits for the restarted broker; the clock runs from its exec.
"$BIN/orderly-worker" run --id backlog-w --fanout "$fanout" --control "$control" --concurrency 256 --noop \
    --log-level warn 2>"$work/worker.log" &
pids+=("$!")
: >"$work/broker.log"
r0=$(date +%s.%N)
broker
r1=$(await dispatches 1 0.01) || { echo "backlog: no dispatch within 600 s of the restart" >&2; exit 1; }
# Peak RSS of the restarted broker by its first dispatch: the replayed index.
rss_restart=$(awk '/VmHWM/ {print $2}' "/proc/$BROKER/status")
r2=$(await orders_acked "$ORDERS" 0.5 || true)
acked=$(counter orders_acked)
replay_ms=$(grep -o 'journal recovered.*' "$work/broker.log" | grep -o 'elapsed_ms=[0-9]*' | cut -d= -f2 || echo '?')
echo "| pending orders | broker peak RSS holding them | intake orders/s | replay ms | first dispatch ms after exec | all processed after restart s |"
echo "|---|---|---|---|---|---|"
python3 - "$sealed" "$rss" "$t0" "$t1" "$replay_ms" "$r0" "$r1" "$r2" "$rss_restart" <<'PY'
import sys
sealed, rss, t0, t1, replay, r0, r1, r2, rss_restart = sys.argv[1:]
print(f"| {int(sealed):,} | {int(rss) / 1024:.0f} MiB | {int(sealed) / (float(t1) - float(t0)):,.0f} | {replay} "
      f"| {(float(r1) - float(r0)) * 1000:,.0f} | {float(r2) - float(r0):.1f} |")
# Whole-process bytes (index, payload cache, buffers, binary) over orders:
# an upper bound on the index's cost per pending order.
print(f"\nrestarted broker's peak RSS by its first dispatch: {int(rss_restart) / 1024:.0f} MiB; "
      f"peak RSS per pending order: {int(rss) * 1024 / max(int(sealed), 1):.0f} B holding them, "
      f"{int(rss_restart) * 1024 / max(int(sealed), 1):.0f} B after the restart")
# Issue 20's targets for a backlog of 1,000,000 (never loosened).
if int(sealed) >= 1_000_000:
    first_ms = (float(r1) - float(r0)) * 1000
    mib = int(rss) / 1024
    print("\ntargets:")
    print(f"  ≤ 128 MiB holding 1,000,000 pending: {mib:.0f} MiB — {'met' if mib <= 128 else 'MISSED'}")
    print(f"  dispatching within 5 s of a restart: {first_ms / 1000:.1f} s — {'met' if first_ms <= 5000 else 'MISSED'}")
PY
[ "$acked" -ge "$ORDERS" ] || { echo "backlog: only $acked of $ORDERS orders processed after the restart" >&2; exit 1; }
