#!/usr/bin/env bash
# The local demo: a broker, two workers writing to sink directories, and a
# producer sending 1000 orders of 10 items; ends with "N/N orders processed".
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
ORDERS=${ORDERS:-1000}

scripts/setup.sh
echo "demo: building (release)..." >&2
cargo build --release --quiet --bins
BIN="$ROOT/target/release"
export ORDERLY_BIN_DIR="$BIN"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/orderly-demo.XXXXXX")"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
INTAKE="tcp://127.0.0.1:$(port)"
FANOUT="tcp://127.0.0.1:$(port)"
CONTROL="tcp://127.0.0.1:$(port)"

python3 tests/helpers/orders.py "$ORDERS" 10 "$WORK/orders.jsonl" "$WORK/expected.json" demo
echo "demo: broker on $INTAKE (intake) $FANOUT (fanout) $CONTROL (control); work dir $WORK" >&2
"$BIN/orderly-broker" run --data-dir "$WORK/data" --intake "$INTAKE" --fanout "$FANOUT" --control "$CONTROL" --admin "${ADMIN:-127.0.0.1:0}" \
    2>"$WORK/broker.log" &
PIDS+=($!)
for w in 1 2; do
    "$BIN/orderly-worker" run --id "demo-w$w" --fanout "$FANOUT" --control "$CONTROL" --concurrency 4 \
        --sink "$WORK/sink" 2>"$WORK/worker$w.log" &
    PIDS+=($!)
done
"$BIN/orderly-producer" send --id demo --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl" \
    --confirmed-log "$WORK/confirmed.txt"

processed=0
for _ in $(seq 1 300); do
    processed=$( (cut -f2 "$WORK/sink/deliveries.log" 2>/dev/null || true) | sort -u | wc -l)
    [ "$processed" -ge "$ORDERS" ] && break
    sleep 0.1
done
python3 tests/helpers/check_sinks.py demo "$WORK/expected.json" "$WORK/sink" >&2 || true
echo "demo: orders are in $WORK/sink/demo/, one JSON file each; logs in $WORK" >&2
echo "$processed/$ORDERS orders processed"
[ "$processed" -eq "$ORDERS" ]
