#!/usr/bin/env bash
# Handler benchmark on loopback: the same workload through one worker whose
# handler differs, at the same --concurrency. A single broker (journal on
# disk, fsync always) and one `orderly-producer bench`, release build.
# Prints one markdown table: a row per handler with the median orders/s of
# the runs, each run's figure, and the ratio to --noop; exits non-zero if an
# order was lost.
#
#   bench/handlers.sh [--orders N] [--items K] [--item-bytes S] [--runs R]
#                     [--concurrency C] [--framing packed|per-item]
#                     [--handlers "noop serve python-inline python exec"]
#
# Handlers (default: noop serve python-inline python):
#   noop    orderly-worker run --noop (acknowledges in the loop thread)
#   serve   orderly-worker run --serve 'PY clients/python/examples/serve_ack.py'
#           (one persistent Python process, JSON lines; orderly.serve)
#   python-inline  the Python worker library, orderly.Worker(inline=True):
#           clients/python/examples/worker_noop.py, a handler that returns at
#           once, run in the socket thread (for handlers of microseconds)
#   python  the same with the handler in a pool of --concurrency threads
#           (worker_noop.py --threads; the default for handlers that block)
#   exec    orderly-worker run --exec 'cat >/dev/null' (a process per order;
#           runs min(N, 2000) orders: it is two orders of magnitude slower)
#
# orders/s = orders acknowledged (the broker's count, polled every 50 ms
# through the admin endpoint) / time from the producer's start to the last
# acknowledgement. ORDERLY_BIN_DIR=DIR uses the binaries in DIR instead of
# building a release (debug figures mean nothing). The Python handlers run in
# the venv that scripts/python-env.sh makes (target/python-venv).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ORDERS=50000 ITEMS=10 ITEM_BYTES=100 RUNS=3 CONCURRENCY=16 FRAMING=packed HANDLERS="noop serve python-inline python"
# exec starts a process per order: a few thousand are enough for its rate.
EXEC_ORDERS_MAX=2000
while [ $# -gt 0 ]; do
    case "$1" in
        --orders) ORDERS=$2 ;;
        --items) ITEMS=$2 ;;
        --item-bytes) ITEM_BYTES=$2 ;;
        --runs) RUNS=$2 ;;
        --concurrency) CONCURRENCY=$2 ;;
        --framing) FRAMING=$2 ;;
        --handlers) HANDLERS=$2 ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
        *) echo "bench: unknown flag $1 (see --help)" >&2; exit 2 ;;
    esac
    shift 2
done
case "$FRAMING" in
    packed) FRAMING_FLAG=() ;;
    per-item) FRAMING_FLAG=(--one-frame-per-item) ;;
    *) echo "bench: --framing is packed or per-item, not $FRAMING" >&2; exit 2 ;;
esac
for handler in $HANDLERS; do
    case "$handler" in
        noop|serve|python-inline|python|exec) ;;
        *) echo "bench: a handler is noop, serve, python-inline, python or exec, not $handler" >&2; exit 2 ;;
    esac
done
cd "$ROOT"
scripts/setup.sh
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_bins --bins
case " $HANDLERS " in
    *" serve "*|*" python"*) PY="$(scripts/python-env.sh)" ;;
esac
trap stop_run EXIT
trap 'exit 130' INT TERM

# one_run HANDLER ORDERS: prints the run's orders/s; fails if an order was lost.
one_run() {
    local handler=$1 orders=$2 worker=()
    RUN_WORK="$(mktemp -d "${TMPDIR:-/tmp}/orderly-bench-handlers.XXXXXX")"
    local work=$RUN_WORK
    local intake="tcp://127.0.0.1:$(port)" fanout="tcp://127.0.0.1:$(port)" control="tcp://127.0.0.1:$(port)"
    local admin="127.0.0.1:$(port)"
    "$BIN/orderly-broker" run --data-dir "$work/data" --fsync always --intake "$intake" --fanout "$fanout" \
        --control "$control" --admin "$admin" --log-level warn 2>"$work/broker.log" &
    RUN_PIDS+=("$!")
    until "$BIN/orderly-broker" status --admin "$admin" --json >/dev/null 2>&1; do sleep 0.05; done
    local rust_worker=("$BIN/orderly-worker" run --id bench-w --fanout "$fanout" --control "$control"
        --concurrency "$CONCURRENCY" --log-level warn)
    case "$handler" in
        noop) worker=("${rust_worker[@]}" --noop) ;;
        serve) worker=("${rust_worker[@]}" --serve "$PY $ROOT/clients/python/examples/serve_ack.py") ;;
        exec) worker=("${rust_worker[@]}" --exec 'cat >/dev/null') ;;
        python-inline|python) worker=("$PY" "$ROOT/clients/python/examples/worker_noop.py" --id bench-w
            --fanout "$fanout" --control "$control" --concurrency "$CONCURRENCY")
            [ "$handler" = python-inline ] || worker+=(--threads) ;;
    esac
    "${worker[@]}" 2>"$work/worker.log" &
    RUN_PIDS+=("$!")
    sleep 1.5 # the worker welcomed
    local t0
    t0=$(date +%s.%N)
    "$BIN/orderly-producer" bench --id bench-p --intake "$intake" --fanout "$fanout" --orders "$orders" \
        --items "$ITEMS" --item-bytes "$ITEM_BYTES" --timeout 60 "${FRAMING_FLAG[@]}" >"$work/producer.out" 2>&1 &
    RUN_PIDS+=("$!")
    # Nothing of the harness runs beside the producer (run.sh says why).
    wait "$!" || true
    await_acked "$work/acked.json" "$orders" "$admin" || true
    local acked t1
    acked=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["value"])' "$work/acked.json")
    t1=$(ended_at "$work/acked.json")
    stop_run
    if [ "$acked" -lt "$orders" ]; then
        echo "bench: $handler: $acked of $orders orders acknowledged" >&2
        return 1
    fi
    python3 -c 'import sys; print(f"{int(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2])):.0f}")' \
        "$acked" "$t0" "$t1"
}

echo "orderly handler bench: $ORDERS orders × $ITEMS items × $ITEM_BYTES B ($FRAMING), one worker at" \
    "--concurrency $CONCURRENCY, fsync always, $RUNS runs"
echo
echo "| handler | orders/s (median) | runs | vs --noop |"
echo "|---|---|---|---|"
NOOP_MEDIAN= lost=0
for handler in $HANDLERS; do
    orders=$ORDERS
    [ "$handler" != exec ] || orders=$((ORDERS < EXEC_ORDERS_MAX ? ORDERS : EXEC_ORDERS_MAX))
    rates=()
    for _ in $(seq 1 "$RUNS"); do
        if rate=$(one_run "$handler" "$orders"); then rates+=("$rate"); else lost=1; fi
    done
    [ ${#rates[@]} -gt 0 ] || continue
    median=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    [ "$handler" != noop ] || NOOP_MEDIAN=$median
    ratio=-
    [ -z "$NOOP_MEDIAN" ] || ratio=$(python3 -c 'import sys; print(f"{int(sys.argv[1]) / int(sys.argv[2]):.2f}")' \
        "$median" "$NOOP_MEDIAN")
    label=$handler
    [ "$orders" = "$ORDERS" ] || label="$handler ($orders orders)"
    echo "| $label | $(python3 -c 'import sys; print(f"{int(sys.argv[1]):,}")' "$median") | ${rates[*]} | $ratio |"
done
[ "$lost" -eq 0 ] || { echo "bench: orders were lost" >&2; exit 1; }
