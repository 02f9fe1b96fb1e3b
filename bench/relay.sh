#!/usr/bin/env bash
# Outbox relay benchmark on a private PostgreSQL (release build): a broker,
# a worker (--noop) and one `orderly-producer relay` on loopback, the
# database started by this script on a fresh directory and a free port (as
# the `postgres` user when run as root; PostgreSQL refuses root), with its
# defaults (fsync on). Prints two markdown rows:
#
#   (a) backlog: ROWS rows committed before the relay starts → rows/s from
#       the relay's start to the last row's confirmed_at
#   (b) steady: a writer commits RATE rows/s (one transaction every 10 ms)
#       for SECONDS s while the relay runs → lag from commit (created_at) to
#       confirmed_at: p50 / p99 / max, and the rows/s confirmed
#
#   bench/relay.sh [--rows N] [--rate R] [--seconds S] [--smoke]
#
# --smoke: 500 rows, 200 rows/s for 2 s, binaries from ORDERLY_BIN_DIR (or
# target/debug) without building: checks the script, not the figures.
# ORDERLY_BIN_DIR=DIR uses the binaries in DIR instead of building release.
# Exits non-zero if a row is left unconfirmed.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROWS=10000 RATE=2000 SECONDS_RUN=10 SMOKE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) ROWS=$2; shift ;;
        --rate) RATE=$2; shift ;;
        --seconds) SECONDS_RUN=$2; shift ;;
        --smoke) SMOKE=1 ROWS=500 RATE=200 SECONDS_RUN=2 ;;
        -h|--help) sed -n 2,21p "$0"; exit 0 ;;
        *) echo "relay bench: unknown flag $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
cd "$ROOT"
if [ -n "${ORDERLY_BIN_DIR:-}" ]; then
    BIN="$ORDERLY_BIN_DIR"
elif [ "$SMOKE" = 1 ]; then
    BIN="$ROOT/target/debug"
else
    cargo build --release --quiet -p orderly-broker -p orderly-worker-cli -p orderly-producer-cli
    BIN="$ROOT/target/release"
fi
for name in orderly-broker orderly-worker orderly-producer; do
    [ -x "$BIN/$name" ] || { echo "relay bench: $BIN/$name is missing: build it (cargo build -p ...)" >&2; exit 1; }
done
source "$ROOT/bench/lib.sh"

# PostgreSQL's server programs: on PATH, or Debian's versioned directory.
pg_bin() {
    command -v "$1" 2>/dev/null && return
    local found
    found=$(ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1)
    [ -n "$found" ] || { echo "relay bench: $1 not found: apt-get install -y postgresql (scripts/setup.sh)" >&2; exit 1; }
    echo "$found"
}
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
INITDB=$(pg_bin initdb) PG_CTL=$(pg_bin pg_ctl)

RUN_WORK="$(mktemp -d "${TMPDIR:-/tmp}/orderly-relay-bench.XXXXXX")"
PGDATA_DIR="$RUN_WORK/pg"
pg_stop() { [ -f "$PGDATA_DIR/postmaster.pid" ] && as_postgres "$PG_CTL" -m immediate -D "$PGDATA_DIR" stop >/dev/null 2>&1 || true; }
trap 'pg_stop; stop_run' EXIT
trap 'exit 130' INT TERM
[ "$(id -u)" != 0 ] || chown postgres:postgres "$RUN_WORK"
as_postgres "$INITDB" -A trust -U postgres -D "$PGDATA_DIR" >/dev/null
pg_port=$(port)
as_postgres "$PG_CTL" -w -t 30 -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" \
    -o "-p $pg_port -k $RUN_WORK -c listen_addresses=127.0.0.1" start >/dev/null
URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
sql() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$URL" -c "$1"; }
"$BIN/orderly-producer" relay --print-schema --database "$URL" | psql -X -q -v ON_ERROR_STOP=1 "$URL" >/dev/null

intake="tcp://127.0.0.1:$(port)" fanout="tcp://127.0.0.1:$(port)" control="tcp://127.0.0.1:$(port)"
"$BIN/orderly-broker" run --data-dir "$RUN_WORK/broker" --intake "$intake" --fanout "$fanout" \
    --control "$control" --admin off 2>"$RUN_WORK/broker.log" &
RUN_PIDS+=("$!")
"$BIN/orderly-worker" run --id w1 --fanout "$fanout" --control "$control" --noop 2>"$RUN_WORK/worker.log" &
RUN_PIDS+=("$!")

# wait_confirmed PREFIX N DEADLINE_S: until N rows PREFIX-* are confirmed.
wait_confirmed() {
    local deadline=$((SECONDS + $3))
    while [ "$(sql "SELECT count(*) FROM orderly_outbox WHERE state = 'confirmed' AND order_id LIKE '$1-%'")" -lt "$2" ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "relay bench: rows $1-* not all confirmed within $3 s (logs in $RUN_WORK)" >&2
            trap - EXIT; pg_stop; RUN_WORK= stop_run; exit 1
        fi
        sleep 0.1
    done
}

# (a) A backlog committed before the relay starts.
sql "INSERT INTO orderly_outbox (order_id, items) SELECT 'pre-' || g, '[{\"sku\": \"A1\", \"qty\": 1}]'
     FROM generate_series(1, $ROWS) g" >/dev/null
started=$(date +%s.%N)
"$BIN/orderly-producer" relay --id bench-relay --intake "$intake" --fanout "$fanout" --database "$URL" \
    --log-level info 2>"$RUN_WORK/relay.log" &
RUN_PIDS+=("$!")
wait_confirmed pre "$ROWS" 300
backlog_s=$(sql "SELECT round((extract(epoch FROM max(confirmed_at)) - $started)::numeric, 3)
                 FROM orderly_outbox WHERE order_id LIKE 'pre-%'")

# (b) A writer at RATE rows/s: one transaction every 10 ms with the rows due.
python3 - "$RATE" "$SECONDS_RUN" <<'PY' | psql -X -q -v ON_ERROR_STOP=1 "$URL" >/dev/null
import sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
total, start, written = int(rate * seconds), time.monotonic(), 0
while written < total:
    due = min(total, int((time.monotonic() - start) * rate) + 1)
    if due > written:
        rows = ", ".join(f"('live-{i}', '[{{\"sku\": \"A1\", \"qty\": 1}}]')" for i in range(written, due))
        print(f"INSERT INTO orderly_outbox (order_id, items) VALUES {rows};", flush=True)
        written = due
    time.sleep(0.01)
PY
live=$(python3 -c "print(int($RATE * $SECONDS_RUN))")
wait_confirmed live "$live" 300
steady=$(sql "SELECT round(1000 * extract(epoch FROM percentile_disc(0.5) WITHIN GROUP (ORDER BY confirmed_at - created_at)))
              || ' | ' || round(1000 * extract(epoch FROM percentile_disc(0.99) WITHIN GROUP (ORDER BY confirmed_at - created_at)))
              || ' | ' || round(1000 * extract(epoch FROM max(confirmed_at - created_at)))
              || ' | ' || round(count(*) / extract(epoch FROM max(confirmed_at) - min(created_at)))
              FROM orderly_outbox WHERE order_id LIKE 'live-%'")
echo "| run | rows | rows/s (commit → confirm) | lag p50 ms | lag p99 ms | lag max ms |"
echo "|---|---|---|---|---|---|"
echo "| (a) backlog before start | $ROWS | $(python3 -c "print(round($ROWS / $backlog_s))") (${backlog_s} s) | | | |"
IFS='|' read -r p50 p99 max rows_s <<<"$steady"
echo "| (b) writer at $RATE rows/s for $SECONDS_RUN s | $live |$rows_s |$p50 |$p99 |$max |"
