#!/usr/bin/env bash
# Shared helpers for the cluster scenarios (tests/netns/*.sh). Source it.
#
# Each scenario gets its own cluster of network namespaces
# (deploy/netns-cluster.sh, prefix $ORDERLY_NETNS_PREFIX, unique per run),
# runs the broker, three workers and two producers on their own hosts, and
# ends with check_all: an independent check of the producers' confirmed logs
# against the workers' sinks. A trap removes processes, faults, namespaces
# and the work directory on success, failure or interrupt.
#
# Environment:
#   ORDERLY_BIN_DIR         the binaries (default target/debug)
#   ORDERLY_NETNS_PREFIX    namespace prefix (default: on-<random>)
#   ORDERLY_NETNS_SECURITY  auto (default) | curve | insecure. auto: CURVE
#                           when every binary has the CURVE flags, otherwise
#                           plaintext with --allow-insecure
#   ORDERLY_NETNS_SINK_TMPDIR  where the workers' sinks go (default /dev/shm
#                           when it is a tmpfs, else $TMPDIR): a sink fsyncs
#                           four times per order, which on a slow disk would
#                           make the disk, not the network, the subject of the
#                           test. The broker's journal stays in $WORK, on disk.
#   ORDERLY_KEEP_WORK       keep the work directories (logs, journal, sinks)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${ORDERLY_BIN_DIR:-$ROOT/target/debug}"
HELPERS="$ROOT/tests/helpers"
CLUSTER="$ROOT/deploy/netns-cluster.sh"
SCENARIO="$(basename "$0" .sh)"
STARTED_AT=$SECONDS

if [ -z "${ORDERLY_NETNS_PREFIX:-}" ]; then
    ORDERLY_NETNS_PREFIX="on-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
fi
export ORDERLY_NETNS_PREFIX
WORK=""
SINKS=""
PIDS=()

cleanup() {
    local status=$?
    set +eu
    trap - INT TERM
    disown -a 2>/dev/null # no "Killed" job notices for what we stop below
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for _ in $(seq 1 30); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    # Removes the namespaces, with their links, qdiscs and nftables rules.
    "$CLUSTER" down >/dev/null 2>&1 || echo "$SCENARIO: cluster $ORDERLY_NETNS_PREFIX not fully removed" >&2
    if [ "$status" != 0 ] && [ -n "$WORK" ]; then
        echo "--- $SCENARIO failed; logs ($WORK) ---" >&2
        for log in "$WORK"/*.log; do
            [ -f "$log" ] || continue
            echo "== $(basename "$log") (last 15 lines)" >&2
            tail -n 15 "$log" >&2
        done
    fi
    if [ -z "${ORDERLY_KEEP_WORK:-}" ]; then
        rm -rf "$WORK" "$SINKS"
    else
        echo "$SCENARIO: work directories kept: $WORK $SINKS" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

WORK="$(mktemp -d "${TMPDIR:-/tmp}/orderly-netns-$SCENARIO.XXXXXX")"
SINK_TMPDIR=${ORDERLY_NETNS_SINK_TMPDIR:-}
if [ -z "$SINK_TMPDIR" ]; then
    if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] && [ -w /dev/shm ]; then SINK_TMPDIR=/dev/shm; else SINK_TMPDIR=${TMPDIR:-/tmp}; fi
fi
SINKS="$(mktemp -d "$SINK_TMPDIR/orderly-netns-sinks-$SCENARIO.XXXXXX")"

# Ports: every host has its own network stack, so fixed ports never collide.
BROKER_IP=$("$CLUSTER" addr broker)
INTAKE="tcp://$BROKER_IP:5570"
FANOUT="tcp://$BROKER_IP:5571"
CONTROL="tcp://$BROKER_IP:5572"
ADMIN="127.0.0.1:5573" # loopback of the broker's host
WORKERS=(w1 w2 w3)
PRODUCERS=(p1 p2)

fail() {
    echo "FAIL $SCENARIO: $*" >&2
    exit 1
}

say() {
    echo "[$SCENARIO +$((SECONDS - STARTED_AT))s] $*"
}

# wait_for SECONDS DESCRIPTION CMD ARGS...: runs CMD until it succeeds.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "timed out after ${seconds}s waiting for $what" >&2
            return 1
        fi
        sleep 0.5
    done
}

# on HOST CMD...: runs CMD on HOST, in the foreground.
on() {
    "$CLUSTER" exec "$@"
}

# start HOST NAME CMD...: runs CMD on HOST in the background, logging to
# $WORK/NAME.log; its PID (the command itself: `ip netns exec` execs it)
# goes to $LAST_PID and to the cleanup list.
start() {
    local host=$1 name=$2
    shift 2
    "$CLUSTER" exec "$host" "$@" >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# ---- the cluster and its security ------------------------------------------

cluster_up() {
    "$CLUSTER" up >"$WORK/cluster.txt" || fail "cannot create the cluster"
    SECURITY=$(security_mode)
    BROKER_SECURITY=()
    declare -gA CLIENT_SECURITY=()
    if [ "$SECURITY" = curve ]; then
        make_keys
    else
        BROKER_SECURITY=(--allow-insecure)
    fi
    say "cluster $ORDERLY_NETNS_PREFIX up (broker $BROKER_IP, workers ${WORKERS[*]}, producers ${PRODUCERS[*]}), security: $SECURITY"
}

security_mode() {
    case ${ORDERLY_NETNS_SECURITY:-auto} in
        curve | insecure) echo "$ORDERLY_NETNS_SECURITY" ;;
        auto)
            if "$BIN/orderly-producer" send --help 2>/dev/null | grep -q -- --broker-public-key &&
                "$BIN/orderly-worker" run --help 2>/dev/null | grep -q -- --broker-public-key; then
                echo curve
            else
                echo insecure
            fi
            ;;
        *) fail "ORDERLY_NETNS_SECURITY must be auto, curve or insecure" ;;
    esac
}

# make_keys: a CURVE key pair per process of this run, the broker admitting
# exactly these clients (role and id bound to each key).
make_keys() {
    local keys="$WORK/keys" id
    mkdir -m 700 "$keys"
    "$BIN/orderly-broker" keygen --out "$keys/broker" >/dev/null
    : >"$keys/authorized_keys"
    for id in "${WORKERS[@]}"; do
        "$BIN/orderly-worker" keygen --out "$keys/$id" >/dev/null
        echo "$(cat "$keys/$id.pub") worker $id" >>"$keys/authorized_keys"
        CLIENT_SECURITY[$id]="--curve-secret-key $keys/$id.key --broker-public-key $keys/broker.pub"
    done
    for id in "${PRODUCERS[@]}"; do
        "$BIN/orderly-producer" keygen --out "$keys/$id" >/dev/null
        echo "$(cat "$keys/$id.pub") producer $id" >>"$keys/authorized_keys"
        CLIENT_SECURITY[$id]="--curve-secret-key $keys/$id.key --broker-public-key $keys/broker.pub"
    done
    BROKER_SECURITY=(--curve-secret-key "$keys/broker.key" --authorized-keys "$keys/authorized_keys")
}

# client_security ID: sets CLIENT_FLAGS to the CURVE flags of client ID
# (none without CURVE).
client_security() {
    # Word-split on purpose: WORK paths have no spaces (mktemp under TMPDIR).
    # shellcheck disable=SC2206
    CLIENT_FLAGS=(${CLIENT_SECURITY[$1]:-})
}

# ---- the three roles ---------------------------------------------------------

# start_broker [FLAGS...]: the broker on its host, journal in $WORK/broker-data
# (the same directory on every restart); waits for its admin endpoint.
start_broker() {
    BROKER_STARTS=$((${BROKER_STARTS:-0} + 1))
    start broker "broker.$BROKER_STARTS" "$BIN/orderly-broker" run --data-dir "$WORK/broker-data" \
        --intake "$INTAKE" --fanout "$FANOUT" --control "$CONTROL" --admin "$ADMIN" \
        --status-interval-secs 5 "${BROKER_SECURITY[@]}" "$@"
    BROKER_PID=$LAST_PID
    wait_for 30 "the broker's admin endpoint" broker_answers ||
        fail "the broker did not start: $(tail -n 3 "$WORK/broker.$BROKER_STARTS.log")"
}

broker_answers() {
    kill -0 "$BROKER_PID" 2>/dev/null || fail "the broker exited: $(tail -n 3 "$WORK/broker.$BROKER_STARTS.log")"
    status_json >/dev/null 2>&1
}

# start_worker ID [FLAGS...]: worker ID on host ID, writing to $SINKS/ID.
start_worker() {
    local id=$1
    shift
    client_security "$id"
    start "$id" "$id" "$BIN/orderly-worker" run --id "$id" --fanout "$FANOUT" --control "$CONTROL" \
        --concurrency 4 --sink "$SINKS/$id" "${CLIENT_FLAGS[@]}" "$@"
    WORKER_PID[$id]=$LAST_PID
}
declare -A WORKER_PID=()

start_workers() {
    local id
    for id in "${WORKERS[@]}"; do start_worker "$id" "$@"; done
    wait_for 30 "${#WORKERS[@]} ready workers" status_cmp 'sum(1 for w in v["workers"] if w["ready"])' -eq "${#WORKERS[@]}" ||
        fail "workers did not become ready"
    say "broker up, workers ${WORKERS[*]} ready"
}

# make_orders COUNT: $WORK/ID.jsonl and ID.expected.json for every producer,
# 10 items per order (tests/helpers/orders.py: varied JSON, unicode, escapes).
make_orders() {
    ORDERS=$1
    SENT=$((ORDERS * ${#PRODUCERS[@]}))
    local id
    for id in "${PRODUCERS[@]}"; do
        python3 "$HELPERS/orders.py" "$ORDERS" 10 "$WORK/$id.jsonl" "$WORK/$id.expected.json" "$id"
    done
}

# send_more ID COUNT: producer ID (on its host, after its first run ended)
# sends COUNT new orders and must have them all confirmed; they join its
# expected orders and confirmed log, so check_all covers them too.
send_more() {
    local id=$1 count=$2 code=0
    python3 "$HELPERS/orders.py" "$count" 10 "$WORK/$id.more.jsonl" "$WORK/$id.more.json" "$id-more"
    python3 - "$WORK/$id.expected.json" "$WORK/$id.more.json" <<'PY'
import json, sys
expected = json.load(open(sys.argv[1], encoding="utf-8"))
expected.update(json.load(open(sys.argv[2], encoding="utf-8")))
json.dump(expected, open(sys.argv[1], "w", encoding="utf-8"), ensure_ascii=False)
PY
    SENT=$((SENT + count))
    client_security "$id"
    on "$id" timeout 120 "$BIN/orderly-producer" send --id "$id" --intake "$INTAKE" --fanout "$FANOUT" \
        --file "$WORK/$id.more.jsonl" --confirmed-log "$WORK/$id.confirmed" --timeout 60 "${CLIENT_FLAGS[@]}" \
        >"$WORK/$id.more.log" 2>&1 || code=$?
    [ "$code" = 0 ] || fail "producer $id (more orders) exited $code: $(tail -n 3 "$WORK/$id.more.log")"
    say "producer $id: $(grep -h '^sent' "$WORK/$id.more.log" | tail -n 1)"
}

# stop_worker ID: SIGTERM (the worker drains, says bye, exits 0).
stop_worker() {
    local pid=${WORKER_PID[$1]} code=0
    kill -TERM "$pid"
    wait_for 60 "worker $1 to drain and exit" eval "! kill -0 $pid 2>/dev/null" || fail "worker $1 did not stop"
    wait "$pid" || code=$?
    [ "$code" = 0 ] || fail "worker $1 exited $code on SIGTERM: $(tail -n 3 "$WORK/$1.log")"
}

# deliveries ID: how many orders worker ID has processed.
deliveries() {
    if [ -f "$SINKS/$1/deliveries.log" ]; then wc -l <"$SINKS/$1/deliveries.log"; else echo 0; fi
}

# start_producers [FLAGS...]: every producer on its own host, sending its
# file; each appends what the broker confirmed to $WORK/ID.confirmed. With
# INPUT_RATE=N the file reaches the producer through a FIFO at N orders/s
# (a scenario that must act while orders flow cannot race fast producers).
start_producers() {
    local id input
    for id in "${PRODUCERS[@]}"; do
        client_security "$id"
        input="$WORK/$id.jsonl"
        if [ -n "${INPUT_RATE:-}" ]; then
            input="$WORK/$id.fifo"
            mkfifo "$input"
            python3 -c '
import sys, time
rate, start = float(sys.argv[1]), time.monotonic()
with open(sys.argv[2]) as src, open(sys.argv[3], "w") as out:
    for n, line in enumerate(src):
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
        out.write(line)
        out.flush()
' "$INPUT_RATE" "$WORK/$id.jsonl" "$input" &
            PIDS+=("$!")
        fi
        start "$id" "$id" "$BIN/orderly-producer" send --id "$id" --intake "$INTAKE" --fanout "$FANOUT" \
            --file "$input" --confirmed-log "$WORK/$id.confirmed" "${CLIENT_FLAGS[@]}" "$@"
        PRODUCER_PID[$id]=$LAST_PID
    done
}
declare -A PRODUCER_PID=()

producers_running() {
    local id
    for id in "${PRODUCERS[@]}"; do kill -0 "${PRODUCER_PID[$id]}" 2>/dev/null && return 0; done
    return 1
}

# wait_producers SECONDS: waits for every producer to exit; each must have
# had every order confirmed (exit 0: producers resend what is unanswered).
wait_producers() {
    local seconds=$1 id code
    wait_for "$seconds" "the producers to finish" eval '! producers_running' || fail "producers still running after ${seconds}s"
    for id in "${PRODUCERS[@]}"; do
        code=0
        wait "${PRODUCER_PID[$id]}" || code=$?
        [ "$code" = 0 ] || fail "producer $id exited $code: $(tail -n 3 "$WORK/$id.log")"
        say "producer $id: $(grep -h '^sent' "$WORK/$id.log" | tail -n 1)"
    done
}

confirmed_count() {
    cat "$WORK"/*.confirmed 2>/dev/null | sort -u | wc -l
}

# confirmed_at_least N: the producers have N orders confirmed between them.
confirmed_at_least() {
    [ "$(cat "$WORK"/*.confirmed 2>/dev/null | wc -l)" -ge "$1" ]
}

# ---- the broker's view (admin endpoint, on the broker's host) --------------

status_json() {
    on broker "$BIN/orderly-broker" status --admin "$ADMIN" --json
}

# status_field EXPR: a value from /status (a python expression on v).
status_field() {
    status_json | python3 -c "import json,sys; v=json.load(sys.stdin); print($1)"
}

# status_cmp EXPR OP N
status_cmp() {
    local value
    value=$(status_field "$1" 2>/dev/null) || return 1
    test "$value" "$2" "$3"
}

# broker_idle: no partial, pending or in-flight orders (dead letters are
# final: check_all reports them).
broker_idle() {
    status_cmp 'v["partial_orders"] + v["pending_orders"] + v["in_flight_orders"]' -eq 0
}

# ---- faults -----------------------------------------------------------------

# switch_cut HOST / switch_heal HOST: the switch drops every frame to or
# from HOST's port (a pulled cable, without the link going down).
switch_cut() {
    on switch nft -f - <<EOF
table bridge cut_$1 {
    chain forward {
        type filter hook forward priority -200; policy accept;
        iifname "$("$CLUSTER" port "$1")" drop
        oifname "$("$CLUSTER" port "$1")" drop
    }
}
EOF
}
switch_heal() {
    on switch nft delete table bridge "cut_$1"
}

# firewall_cut HOST / firewall_heal HOST: HOST's own firewall drops all
# traffic on its interface, both ways.
firewall_cut() {
    on "$1" nft -f - <<EOF
table inet cut {
    chain input { type filter hook input priority -200; policy accept; iifname "eth0" drop; }
    chain output { type filter hook output priority -200; policy accept; oifname "eth0" drop; }
}
EOF
}
firewall_heal() {
    on "$1" nft delete table inet cut
}

# switch_loss HOST PERCENT: the switch drops PERCENT% of frames, chosen at
# random (nftables numgen), in each direction of HOST's port.
switch_loss() {
    local port
    port=$("$CLUSTER" port "$1")
    on switch nft -f - <<EOF
table bridge loss_$1 {
    chain forward {
        type filter hook forward priority -200; policy accept;
        iifname "$port" numgen random mod 100 < $2 counter drop
        oifname "$port" numgen random mod 100 < $2 counter drop
    }
}
EOF
}

# throttle HOST RATE: token bucket (tc tbf) on both ends of HOST's link:
# the switch port (towards HOST) and HOST's eth0 (from HOST).
throttle() {
    on switch tc qdisc add dev "$("$CLUSTER" port "$1")" root tbf rate "$2" burst 16kb latency 500ms
    on "$1" tc qdisc add dev eth0 root tbf rate "$2" burst 16kb latency 500ms
}

# ---- the independent check --------------------------------------------------

# delivered_ok: every confirmed order of every producer is in the sinks,
# item for item (tests/helpers/check_sinks.py --only CONFIRMED_LOG).
delivered_ok() {
    local id sinks=()
    for id in "${WORKERS[@]}"; do sinks+=("$SINKS/$id"); done
    for id in "${PRODUCERS[@]}"; do
        touch "$WORK/$id.confirmed"
        python3 "$HELPERS/check_sinks.py" "$id" "$WORK/$id.expected.json" --only "$WORK/$id.confirmed" \
            "${sinks[@]}" >"$WORK/check-$id.out" 2>&1 || return 1
    done
}

# check_all [SECONDS]: waits (default 180 s) until the broker has nothing
# left to deliver and every confirmed order is delivered, then prints the
# scenario's line: orders confirmed, duplicate deliveries, run time. Dead
# letters fail the check only through it (a confirmed order never
# processed); one that a worker did process is reported as a warning.
check_all() {
    local seconds=${1:-180} id dups=0 d per_worker="" dead
    wait_for "$seconds" "the broker to have nothing left to deliver" broker_idle ||
        fail "orders left at the broker: $(status_field '{k: v[k] for k in ("partial_orders", "pending_orders", "in_flight_orders", "dead_letters")}')"
    # An order acknowledged twice lands twice; give a late one a moment.
    sleep 1
    if ! wait_for 30 "every confirmed order in the sinks" delivered_ok; then
        cat "$WORK"/check-*.out >&2
        fail "confirmed orders missing or different in the sinks"
    fi
    for id in "${PRODUCERS[@]}"; do
        say "check $id: $(head -n 1 "$WORK/check-$id.out")"
        d=$(sed -n 's/.*duplicate deliveries \([0-9]*\).*/\1/p' "$WORK/check-$id.out")
        dups=$((dups + ${d:-0}))
    done
    for id in "${WORKERS[@]}"; do
        per_worker+=" $id=$(deliveries "$id")"
    done
    local confirmed
    confirmed=$(confirmed_count)
    [ "$confirmed" -gt 0 ] || fail "no order was confirmed"
    say "deliveries per worker:$per_worker"
    dead=$(status_field 'v["dead_letters"]')
    if [ "$dead" -gt 0 ]; then
        say "WARNING: $dead dead letters, although every confirmed order was processed (their acks came too late):"
        on broker "$BIN/orderly-broker" dlq list --admin "$ADMIN" | sed 's/^/    /'
    fi
    echo "RESULT $SCENARIO: orders $confirmed confirmed of $SENT sent, duplicates $dups, dead letters $dead, run time $((SECONDS - STARTED_AT)) s"
}
