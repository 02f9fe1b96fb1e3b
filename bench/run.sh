#!/usr/bin/env bash
# End-to-end benchmark on loopback: a broker (journal on disk), noop
# workers and `orderly-producer bench` producers, release build. Prints one
# markdown table, a row per run; exits non-zero if any order was lost (in
# either run).
#
#   bench/run.sh [--orders N] [--items K] [--item-bytes S] [--workers W]
#                [--producers P] [--fsync always|interval:MS|never] [--runs R]
#                [--rate L] [--rate-orders M] [--framing both|per-item|packed]
#                [--concurrency C] [--group 1|3|5] [--curve off|on|both]
#                [--dispatches-max D]
#
# ORDERLY_BIN_DIR=DIR: use the binaries in DIR instead of building a
# release (the test command's smoke run; debug figures mean nothing).
#
# --group G: with 3 or 5, every run is made twice, on a single broker and
# then on a group of G brokers on this machine (`orderly-broker run --group`,
# docs/REPLICATION.md; free ports, a data directory each), same workload;
# the table's first column says which. Producers and workers take the group
# file (`--group FILE`) and follow the leader; the acked count is polled from
# the leader's admin endpoint. A group fsyncs every entry, so --fsync must be
# `always`. 1 (the default): the single broker only.
#
# --curve: `on` (or a bare `--curve`) runs every process with CURVE (keys
# made by the binaries' own `keygen`, an authorized_keys naming the
# producers, workers and, in a group, the members: docs/SECURITY.md);
# `both` runs each setup plaintext and then with CURVE, so the two come in
# interleaved pairs; `off` (the default): plaintext only. The table's first
# column says which.
#
# With the paced runs, the device's own 4 KiB write + fdatasync latency is
# measured before and after them (bench/fsync_probe.py, on $TMPDIR): a
# confirm p99 cannot be lower than the device's fsync tail.
#
# After the table: the median of each setup's runs and the ratios the
# issue's targets are about — group / single broker (with --group), CURVE /
# plaintext (with --curve both) — per framing.
#
# --concurrency: each noop worker's concurrency, i.e. its credits (default
# 1024, the most a worker may advertise): the orders in flight per worker.
#
# --dispatches-max: passed to each worker (`orderly-worker run
# --dispatches-max`): the most orders the broker sends it in one message;
# 0 keeps one order per message. Default: the worker's own (64).
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
# recorded (its /status `last_ack_unix_ms`, since 0.5, read once the
# producers have exited: nothing of the harness runs during a run); it
# includes the
# producers' start (connecting and, in a group, learning the leader from
# the members' heartbeats), which weighs on short runs. producer orders/s leaves that out: the sum of the
# producers' own rates, from their session being up to their last
# confirm. Confirm latency percentiles are the producers'
# (Finish sent → Confirm received), from the first producer: at full load,
# and at L orders/s in the last column (which says how many orders were
# acked if some were lost). The other columns are the full-load run's; for
# a group: peak RSS and journal figures are the leader's (journal B/order
# adds its Raft log, DATA_DIR/raft, to its event journal; commits are the
# event journal's), CPU is all members' together.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ORDERS=100000 ITEMS=10 ITEM_BYTES=100 WORKERS=1 PRODUCERS=1 FSYNC=always RUNS=1 RATE=1000 RATE_ORDERS=10000
FRAMING=both CONCURRENCY=1024 GROUP=1 CURVE=off DISPATCHES_MAX=
while [ $# -gt 0 ]; do
    case "$1" in
        --curve)
            # A bare --curve means on.
            case "${2:-}" in off|on|both) CURVE=$2 ;; *) CURVE=on; shift; continue ;; esac ;;
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
        --group) GROUP=$2 ;;
        --dispatches-max) DISPATCHES_MAX=$2 ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
        *) echo "bench: unknown flag $1 (see --help)" >&2; exit 2 ;;
    esac
    shift 2
done
case "$FRAMING" in
    both) FRAMINGS="per-item packed" ;;
    per-item|packed) FRAMINGS=$FRAMING ;;
    *) echo "bench: --framing is both, per-item or packed, not $FRAMING" >&2; exit 2 ;;
esac
case "$GROUP" in
    1) SETUPS="single" ;;
    3|5) SETUPS="single group" ;;
    *) echo "bench: --group is 1, 3 or 5 (the sizes a group file accepts), not $GROUP" >&2; exit 2 ;;
esac
case "$CURVE" in
    off) CURVES="off" ;;
    on) CURVES="on" ;;
    both) CURVES="off on" ;;
    *) echo "bench: --curve is off, on or both, not $CURVE" >&2; exit 2 ;;
esac
if [ "$GROUP" != 1 ] && [ "$FSYNC" != always ]; then
    echo "bench: --group $GROUP needs --fsync always (a group member fsyncs every entry)" >&2
    exit 2
fi
# Pacing is on when RATE is a number above 0 (the producer refuses a bad one).
PACED=$(python3 -c 'import sys; print(int(float(sys.argv[1]) > 0))' "$RATE")
cd "$ROOT"
scripts/setup.sh
# ORDERLY_BIN_DIR: binaries already built (the test command's smoke run
# uses the debug ones; its figures mean nothing, only that no order is
# lost and the script works).
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_bins --bins
# A group elects a leader in a few seconds (docs/REPLICATION.md); far longer
# is a broken run.
LEADER_WAIT_S=30
KEYS=

# make_keys DIR: CURVE key pairs made by the binaries' own keygen: the
# single broker's (broker), each group member's (broker-N), each worker's
# and producer's (by id); DIR/authorized_keys names the clients, and
# DIR/group_authorized_keys the members too (`broker N` lines).
make_keys() {
    local k=$1 id
    mkdir -m 700 "$k"
    "$BIN/orderly-broker" keygen --out "$k/broker" >/dev/null
    for id in $(seq 1 "$WORKERS"); do
        "$BIN/orderly-worker" keygen --out "$k/bench-w$id" >/dev/null
        echo "$(cat "$k/bench-w$id.pub") worker bench-w$id"
    done >"$k/authorized_keys"
    for id in $(seq 1 "$PRODUCERS"); do
        "$BIN/orderly-producer" keygen --out "$k/bench-p$id" >/dev/null
        echo "$(cat "$k/bench-p$id.pub") producer bench-p$id"
    done >>"$k/authorized_keys"
    cp "$k/authorized_keys" "$k/group_authorized_keys"
    [ "$GROUP" = 1 ] || for id in $(seq 1 "$GROUP"); do
        "$BIN/orderly-broker" keygen --out "$k/broker-$id" >/dev/null
        echo "$(cat "$k/broker-$id.pub") broker $id"
    done >>"$k/group_authorized_keys"
}

# leader_of ADMIN...: the admin address of the member serving as leader
# (role `leader` in its /status), or nothing.
leader_of() {
    local admin
    for admin in "$@"; do
        if "$BIN/orderly-broker" status --admin "$admin" --json 2>/dev/null | grep -q '"role": *"leader"'; then
            echo "$admin"
            return
        fi
    done
}

# one_run SETUP ORDERS RATE OUT FRAMING CURVE: one run on SETUP (single:
# one broker; group: GROUP members), every producer sending ORDERS orders
# (at RATE/PRODUCERS orders/s each if RATE is above 0) with FRAMING, with
# CURVE on or off; writes its figures as JSON to OUT. Fails if an order was
# lost.
one_run() {
    local setup=$1 orders=$2 rate=$3 out=$4 framing=$5 curve=$6 per_producer framing_flag=()
    [ "$framing" = packed ] || framing_flag=(--one-frame-per-item)
    local brokers=() admins=() admin id producer_flags worker_flags broker_curve=() key_line=""
    if [ "$curve" = on ]; then
        broker_curve=(--curve-secret-key "$KEYS/broker.key" --authorized-keys "$KEYS/authorized_keys")
    fi
    per_producer=$(python3 -c 'import sys; print(float(sys.argv[1]) / int(sys.argv[2]))' "$rate" "$PRODUCERS")
    RUN_PIDS=()
    RUN_WORK="$(mktemp -d "${TMPDIR:-/tmp}/orderly-bench.XXXXXX")"
    local work=$RUN_WORK
    trap 'stop_run; trap - RETURN' RETURN
    if [ "$setup" = single ]; then
        local intake="tcp://127.0.0.1:$(port)" fanout="tcp://127.0.0.1:$(port)" control="tcp://127.0.0.1:$(port)"
        admin="127.0.0.1:$(port)"
        admins=("$admin")
        "$BIN/orderly-broker" run --data-dir "$work/data" --fsync "$FSYNC" --intake "$intake" --fanout "$fanout" \
            --control "$control" --admin "$admin" --log-level warn "${broker_curve[@]}" 2>"$work/broker.log" &
        RUN_PIDS+=("$!") brokers+=("$!")
        until "$BIN/orderly-broker" status --admin "$admin" --json >/dev/null 2>&1; do sleep 0.05; done
        producer_flags=(--intake "$intake" --fanout "$fanout") worker_flags=(--fanout "$fanout" --control "$control")
        [ "$curve" = off ] || producer_flags+=(--broker-public-key "$KEYS/broker.pub")
        [ "$curve" = off ] || worker_flags+=(--broker-public-key "$KEYS/broker.pub")
    else
        local file="$work/group.toml"
        for id in $(seq 1 "$GROUP"); do
            admins+=("127.0.0.1:$(port)")
            printf '[[member]]\nid = %s\nintake = "tcp://127.0.0.1:%s"\nfanout = "tcp://127.0.0.1:%s"\n' \
                "$id" "$(port)" "$(port)" >>"$file"
            [ "$curve" = off ] || key_line="public_key = \"$KEYS/broker-$id.pub\""
            printf 'control = "tcp://127.0.0.1:%s"\npeer = "tcp://127.0.0.1:%s"\nadmin = "%s"\n%s\n' \
                "$(port)" "$(port)" "${admins[$((id - 1))]}" "$key_line" >>"$file"
        done
        for id in $(seq 1 "$GROUP"); do
            [ "$curve" = off ] || broker_curve=(--curve-secret-key "$KEYS/broker-$id.key"
                --authorized-keys "$KEYS/group_authorized_keys")
            "$BIN/orderly-broker" run --group "$file" --node-id "$id" --data-dir "$work/data$id" --log-level warn \
                "${broker_curve[@]}" 2>"$work/broker$id.log" &
            RUN_PIDS+=("$!") brokers+=("$!")
        done
        local leader_deadline=$((SECONDS + LEADER_WAIT_S))
        admin=
        while [ -z "$admin" ]; do
            [ "$SECONDS" -lt "$leader_deadline" ] || { echo "bench: no leader within ${LEADER_WAIT_S} s" >&2; return 1; }
            sleep 0.2
            admin=$(leader_of "${admins[@]}")
        done
        producer_flags=(--group "$file") worker_flags=(--group "$file")
    fi
    local nbrokers=${#brokers[@]}
    for w in $(seq 1 "$WORKERS"); do
        local worker_curve=()
        [ "$curve" = off ] || worker_curve=(--curve-secret-key "$KEYS/bench-w$w.key")
        "$BIN/orderly-worker" run --id "bench-w$w" "${worker_flags[@]}" --concurrency "$CONCURRENCY" \
            ${DISPATCHES_MAX:+--dispatches-max "$DISPATCHES_MAX"} \
            --noop --log-level warn "${worker_curve[@]}" 2>"$work/worker$w.log" &
        RUN_PIDS+=("$!")
    done
    sleep 1.5 # workers welcomed
    # A worker that refused its flags (e.g. --concurrency above 1024) would
    # leave the run waiting for acks until AWAIT_TIMEOUT_S: stop at once.
    local pid
    for pid in "${RUN_PIDS[@]:$nbrokers:$WORKERS}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "bench: a worker exited at start; its log:" >&2
            cat "$work"/worker*.log >&2
            exit 1
        fi
    done
    local total=$((orders * PRODUCERS)) t0
    t0=$(date +%s.%N)
    for p in $(seq 1 "$PRODUCERS"); do
        local producer_curve=()
        [ "$curve" = off ] || producer_curve=(--curve-secret-key "$KEYS/bench-p$p.key")
        "$BIN/orderly-producer" bench --id "bench-p$p" "${producer_flags[@]}" --orders "$orders" \
            --items "$ITEMS" --item-bytes "$ITEM_BYTES" --rate "$per_producer" --timeout 60 "${framing_flag[@]}" \
            "${producer_curve[@]}" >"$work/producer$p.out" 2>&1 &
        RUN_PIDS+=("$!")
    done
    # Nothing of the harness runs while the producers do (they exit once
    # all their orders are answered, or after --timeout): the acks that
    # trail their last confirm are awaited after, and the run's end is the
    # broker's last-ack time. The leader first (a group's may change
    # mid-run: it should not here, and the poller follows it).
    wait "${RUN_PIDS[@]:$((nbrokers + WORKERS))}" || true
    # A broker or worker that dies mid-run ends the wait at once (its log is
    # printed and the bench fails), not after AWAIT_TIMEOUT_S.
    AWAIT_WATCH_PIDS=("${RUN_PIDS[@]:0:$((nbrokers + WORKERS))}")
    await_acked "$work/acked.json" "$total" "$admin" "${admins[@]}" || true
    AWAIT_WATCH_PIDS=()
    if await_failed "$work/acked.json" "$work"/broker*.log "$work"/worker*.log; then
        exit 1
    fi
    admin=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["admin"] or "")' "$work/acked.json")
    [ -n "$admin" ] || admin=$(leader_of "${admins[@]}")
    local status rss cpu_ticks=0 hz leader_pid=${brokers[0]} raft_bytes=0 i
    status=$("$BIN/orderly-broker" status --admin "$admin" --json)
    for i in "${!admins[@]}"; do
        [ "${admins[$i]}" = "$admin" ] || continue
        leader_pid=${brokers[$i]}
        [ "$setup" = group ] || continue
        # The Raft log's bytes as `journal verify` counts them (the segments
        # are preallocated: their size on disk says nothing); it reads
        # DIR/journal, so a link points it at the Raft log.
        mkdir -p "$work/raft-view"
        ln -sfn "$work/data$((i + 1))/raft" "$work/raft-view/journal"
        raft_bytes=$("$BIN/orderly-broker" journal verify --data-dir "$work/raft-view" |
            awk '$1 == "segment" { bytes += $3 } END { print bytes + 0 }')
    done
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$leader_pid/status")
    hz=$(getconf CLK_TCK)
    for i in "${brokers[@]}"; do cpu_ticks=$((cpu_ticks + $(awk '{print $14 + $15}' "/proc/$i/stat"))); done
    python3 - "$status" "$t0" "$work/acked.json" "$total" "$rss" "$cpu_ticks" "$hz" "$raft_bytes" \
        "$work"/producer*.out >"$out" <<'PY'
import json, re, sys
status, t0, awaited, total, rss, ticks, hz, raft_bytes = sys.argv[1:9]
outs = [open(path).read() for path in sys.argv[9:]]
v = json.loads(status)
acked = v["counters"]["orders_acked"]
# The end: the broker's last ack (a broker older than 0.5 does not say:
# when the poll saw the total).
seen = json.load(open(awaited))
t1 = (v.get("last_ack_unix_ms") or seen["seen_unix_ms"]) / 1000
lat = re.search(r"p50 ([\d.]+) p99 ([\d.]+) p999 ([\d.]+)", outs[0])
# Each producer's own rate, from its session being up (connected; in a
# group, the leader found) to its last confirm.
rates = [re.search(r" s: ([\d.]+) orders/s", out) for out in outs]
json.dump({
    "acked": acked, "total": int(total), "elapsed": float(t1) - float(t0),
    "producer_rate": sum(float(r.group(1)) for r in rates) if all(rates) else None,
    "latency": list(lat.groups()) if lat else ["-", "-", "-"], "rss_kib": int(rss),
    "cpu_s": int(ticks) / int(hz), "journal_bytes": v["journal_bytes_written"] + int(raft_bytes),
    "commits": v.get("journal_commits", 0), "commit_s": v.get("journal_commit_seconds", 0.0),
}, sys.stdout)
sys.exit(0 if acked >= int(total) else 1)
PY
}

# row SETUP CURVE FRAMING FULL [FIXED]: the table row of a full-load run's
# figures (and of the fixed-load run's confirm latency).
row() {
    python3 - "$ITEMS" "$GROUP" "$@" <<'PY'
import json, sys
items, group, setup, curve, framing = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
full = json.load(open(sys.argv[6]))
fixed = json.load(open(sys.argv[7])) if len(sys.argv) > 7 else None
acked, elapsed = full["acked"], full["elapsed"]
cells = [
    ("single broker" if setup == "single" else f"group of {group}") + (", CURVE" if curve == "on" else ""),
    framing, f"{acked}/{full['total']}", f"{acked / elapsed:,.0f}",
    "-" if full["producer_rate"] is None else f"{full['producer_rate']:,.0f}", f"{acked * items / elapsed:,.0f}",
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
[ "$GROUP" = 1 ] || echo "a single broker, then a group of $GROUP brokers on this machine (loopback), same workload"
case "$CURVE" in
    on) echo "CURVE on (every producer, worker and broker)" ;;
    both) echo "each setup plaintext, then with CURVE (every producer, worker and broker)" ;;
esac
[ "$PACED" -eq 0 ] || echo "fixed load: $RATE_ORDERS orders × $PRODUCERS producers at $RATE_LABEL orders/s in all"
echo
header="| brokers | framing | acked | orders/s | producer orders/s | items/s | confirm ms p50 / p99 / p999 | broker peak RSS"
header+=" | broker CPU µs/order | journal B/order | commits × mean ms |"
rule="|---|---|---|---|---|---|---|---|---|---|---|"
[ "$PACED" -eq 0 ] || { header+=" confirm ms at $RATE_LABEL/s p50 / p99 / p999 |"; rule+="---|"; }
echo "$header"
echo "$rule"
results="$(mktemp -d "${TMPDIR:-/tmp}/orderly-bench-results.XXXXXX")"
trap 'stop_run; rm -rf "$results"' EXIT
trap 'exit 130' INT TERM
if [ "$CURVE" != off ]; then
    KEYS="$results/keys"
    make_keys "$KEYS"
fi
# The device's own commit latency before and after the paced runs: a
# confirm p99 is read beside it (bench/fsync_probe.py).
probe_device() { [ "$PACED" -eq 0 ] || python3 "$ROOT/bench/fsync_probe.py" "${TMPDIR:-/tmp}" >"$results/fsync_$1.json"; }
probe_device before
lost=0
for framing in $FRAMINGS; do
    for run in $(seq 1 "$RUNS"); do
        for setup in $SETUPS; do
            for curve in $CURVES; do
                name="$results/${setup}_${curve}_${framing}_$run"
                one_run "$setup" "$ORDERS" 0 "$name.full.json" "$framing" "$curve" || lost=1
                if [ "$PACED" -eq 1 ]; then
                    one_run "$setup" "$RATE_ORDERS" "$RATE" "$name.fixed.json" "$framing" "$curve" || lost=1
                    row "$setup" "$curve" "$framing" "$name.full.json" "$name.fixed.json"
                else
                    row "$setup" "$curve" "$framing" "$name.full.json"
                fi
            done
        done
    done
done
probe_device after
# The medians, and the ratios the targets are about (group / single broker:
# ≥ 0.5 packed; CURVE / plaintext: ≥ 0.8), each beside its two figures.
# With the targets' own workload (10 items of 100 B, fsync always; the
# latency target at 1,000 orders/s), each target is printed beside its
# figure.
TARGETS=0
if [ "$ITEMS" = 10 ] && [ "$ITEM_BYTES" = 100 ] && [ "$FSYNC" = always ]; then TARGETS=1; fi
python3 - "$results" "$GROUP" "$RUNS" "$RATE_LABEL" "$PACED" "$TARGETS" <<'PY'
import glob, json, os, statistics, sys
results, group, runs, rate, paced = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
targets = sys.argv[6] == "1"
figures = {}
for path in glob.glob(os.path.join(results, "*.full.json")):
    setup, curve, framing, _ = os.path.basename(path)[: -len(".full.json")].split("_")
    full = json.load(open(path))
    fixed_path = path.replace(".full.json", ".fixed.json")
    p99 = None
    if os.path.exists(fixed_path):
        try:
            p99 = float(json.load(open(fixed_path))["latency"][1])
        except ValueError:
            pass
    entry = figures.setdefault((setup, curve, framing), {"rate": [], "p99": [], "rss_kib": []})
    entry["rate"].append(full["acked"] / full["elapsed"])
    entry["rss_kib"].append(full["rss_kib"])
    if p99 is not None:
        entry["p99"].append(p99)
label = lambda setup, curve: ("single broker" if setup == "single" else f"group of {group}") + (
    ", CURVE" if curve == "on" else "")
median = lambda values: statistics.median(values) if values else None
print(f"\nmedians of {runs} run(s): orders/s end to end" + (f"; confirm p99 ms at {rate}/s" if paced else ""))
device = [json.load(open(p)) for p in (os.path.join(results, f"fsync_{w}.json") for w in ("before", "after"))
          if os.path.exists(p)]
if device:
    print("  this device alone, a 4 KiB write + fdatasync (before / after the runs): p50 "
          + " / ".join(f"{d['p50']:.3f}" for d in device) + " ms, p99 "
          + " / ".join(f"{d['p99']:.3f}" for d in device) + " ms")
order = lambda key: (key[2] != "per-item", key[0] != "single", key[1] != "off")
for (setup, curve, framing), entry in sorted(figures.items(), key=lambda kv: order(kv[0])):
    p99 = median(entry["p99"])
    print(f"  {label(setup, curve)}, {framing}: {median(entry['rate']):,.0f} orders/s"
          + ("" if p99 is None else f"; p99 {p99:.3f} ms"))
def rate_of(key):
    return median(figures[key]["rate"]) if key in figures else None
def ratio(name, a, b):
    x, y = rate_of(a), rate_of(b)
    if x is not None and y is not None:
        print(f"{name}, {a[2]}: {x / y:.2f} ({x:,.0f} / {y:,.0f} orders/s)")
for framing in ("per-item", "packed"):
    for curve in ("off", "on"):
        ratio(f"group of {group} / single broker" + (", CURVE" if curve == "on" else ""),
              ("group", curve, framing), ("single", curve, framing))
    for setup in ("single", "group"):
        ratio(f"CURVE / plaintext, {label(setup, 'off')}", (setup, "on", framing), (setup, "off", framing))
if targets:
    # Issue 20's targets (docs/PERF-PROGRESS.md), never loosened: each
    # beside this run's median, met or missed.
    verdicts = []
    def verdict(name, shown, met):
        verdicts.append(f"  {name}: {shown} — {'met' if met else 'MISSED'}")
    for framing, goal in (("per-item", 100_000), ("packed", 250_000)):
        value = rate_of(("single", "off", framing))
        if value is not None:
            verdict(f"≥ {goal:,} orders/s, {framing}", f"{value:,.0f} orders/s", value >= goal)
    for framing in ("per-item", "packed"):
        entry = figures.get(("single", "off", framing))
        if entry and entry["p99"] and rate == "1,000":
            p99 = median(entry["p99"])
            verdict(f"confirm p99 ≤ 1 ms at 1,000 orders/s, {framing}", f"{p99:.3f} ms", p99 <= 1.0)
    single_rss = [kib for (setup, curve, _), e in figures.items() if setup == "single" and curve == "off"
                  for kib in e["rss_kib"]]
    if single_rss:
        mib = max(single_rss) / 1024
        verdict("broker peak RSS ≤ 64 MiB at full load (largest run)", f"{mib:.0f} MiB", mib <= 64)
    for key_a, key_b, goal, name in (
        (("group", "off", "packed"), ("single", "off", "packed"), 0.5, f"group of {group} ≥ 50 % of single, packed"),
        (("single", "on", "per-item"), ("single", "off", "per-item"), 0.8, "CURVE ≥ 80 % of plaintext, per-item"),
        (("single", "on", "packed"), ("single", "off", "packed"), 0.8, "CURVE ≥ 80 % of plaintext, packed"),
    ):
        a, b = rate_of(key_a), rate_of(key_b)
        if a is not None and b is not None:
            verdict(name, f"{a / b:.2f}", a / b >= goal)
    if verdicts:
        print("\ntargets (medians of this run; README \"Performance\" says what limits a missed one):")
        print("\n".join(verdicts))
        print("  (≤ 128 MiB holding 1,000,000 pending and dispatching within 5 s of a restart: bench/backlog.sh)")
PY
[ "$lost" -eq 0 ] || { echo "bench: orders were lost" >&2; exit 1; }
