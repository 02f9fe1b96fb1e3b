#!/usr/bin/env bash
# Shared helpers for the cluster scenarios (tests/netns/*.sh). Source it.
#
# Each scenario gets its own cluster of network namespaces
# (deploy/netns-cluster.sh, prefix $ORDERLY_NETNS_PREFIX, unique per run),
# runs the broker (or a group of three on hosts broker, b2 and b3: see
# "a broker group of three" below), three workers and two producers on
# their own hosts, and ends with check_all: an independent check of the
# producers' confirmed logs against the workers' sinks. A trap removes
# processes, faults, namespaces and the work directory on success, failure
# or interrupt.
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
# Where the clients find the broker: the single broker's endpoints, or
# `--group FILE` (group_cluster_up).
PRODUCER_ENDPOINTS=(--intake "$INTAKE" --fanout "$FANOUT")
WORKER_ENDPOINTS=(--fanout "$FANOUT" --control "$CONTROL")
# Where status_json asks: the host, ADMIN, and flags (the admin token).
STATUS_HOST=broker
ADMIN_FLAGS=()
GROUP_FILE=""

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
    start "$id" "$id" "$BIN/orderly-worker" run --id "$id" "${WORKER_ENDPOINTS[@]}" \
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
    on "$id" timeout 120 "$BIN/orderly-producer" send --id "$id" "${PRODUCER_ENDPOINTS[@]}" \
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
        start "$id" "$id" "$BIN/orderly-producer" send --id "$id" "${PRODUCER_ENDPOINTS[@]}" \
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

# status_json: /status of the broker, or of a group's leader (found again
# when the one last seen no longer leads).
status_json() {
    if [ -z "$GROUP_FILE" ]; then
        on "$STATUS_HOST" "$BIN/orderly-broker" status --admin "$ADMIN" "${ADMIN_FLAGS[@]}" --json
        return
    fi
    local out
    if [ -n "${LEADER:-}" ] && out=$(member_status_json "$LEADER" 2>/dev/null) && is_leader_json <<<"$out"; then
        echo "$out"
        return
    fi
    find_leader "${GROUP_IDS[@]}" || return 1
    member_status_json "$LEADER"
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
        on "$STATUS_HOST" "$BIN/orderly-broker" dlq list --admin "$ADMIN" "${ADMIN_FLAGS[@]}" | sed 's/^/    /'
    fi
    echo "RESULT $SCENARIO: orders $confirmed confirmed of $SENT sent, duplicates $dups, dead letters $dead, run time $((SECONDS - STARTED_AT)) s${RESULT_EXTRA:-}"
}

# ---- a broker group of three (docs/REPLICATION.md) ---------------------------
#
# Member N runs on host GROUP_HOSTS[N-1] (broker, b2, b3: `netns-cluster.sh
# up --brokers 3`), with its Raft log and journal in $WORK/data-N, on the
# ports the single broker uses (peer 5574), its admin endpoint on its
# address (port 5573, so `group status` reaches it from any host) behind a
# token. The producers and workers take `--group FILE` and follow the
# leader; status_json and check_all ask whoever leads.
#
# Security: CURVE on every socket, peer traffic included (auto or curve;
# insecure: plaintext with --allow-insecure). Each member has a key of its
# own: its `KEY broker N` line in authorized_keys names its peer identity,
# and the group file's `public_key` for it is what producers and workers
# connect to it with (they take no --broker-public-key).

GROUP_HOSTS=(broker b2 b3)
GROUP_IDS=(1 2 3)
declare -A MEMBER_PID=() MEMBER_STARTS=()
LEADER=""

member_host() { echo "${GROUP_HOSTS[$(($1 - 1))]}"; }
member_ip() { "$CLUSTER" addr "$(member_host "$1")"; }

# write_group_file FILE: the group of three on the broker hosts (with
# CURVE, each member's public key file).
write_group_file() {
    local id ip
    : >"$1"
    for id in "${GROUP_IDS[@]}"; do
        ip=$(member_ip "$id")
        cat >>"$1" <<TOML
[[member]]
id = $id
intake = "tcp://$ip:5570"
fanout = "tcp://$ip:5571"
control = "tcp://$ip:5572"
peer = "tcp://$ip:5574"
admin = "$ip:5573"
TOML
        if [ "$SECURITY" = curve ]; then echo "public_key = \"$WORK/keys/broker-$id.pub\"" >>"$1"; fi
    done
}

# make_group_keys: a key pair per member and per client; authorized_keys
# admits the members as `broker N` and the clients by role and id.
make_group_keys() {
    local keys="$WORK/keys" id
    mkdir -m 700 "$keys"
    : >"$keys/authorized_keys"
    for id in "${GROUP_IDS[@]}"; do
        "$BIN/orderly-broker" keygen --out "$keys/broker-$id" >/dev/null
        echo "$(cat "$keys/broker-$id.pub") broker $id" >>"$keys/authorized_keys"
        MEMBER_SECURITY[$id]="--curve-secret-key $keys/broker-$id.key --authorized-keys $keys/authorized_keys"
    done
    for id in "${WORKERS[@]}"; do
        "$BIN/orderly-worker" keygen --out "$keys/$id" >/dev/null
        echo "$(cat "$keys/$id.pub") worker $id" >>"$keys/authorized_keys"
        CLIENT_SECURITY[$id]="--curve-secret-key $keys/$id.key"
    done
    for id in "${PRODUCERS[@]}"; do
        "$BIN/orderly-producer" keygen --out "$keys/$id" >/dev/null
        echo "$(cat "$keys/$id.pub") producer $id" >>"$keys/authorized_keys"
        CLIENT_SECURITY[$id]="--curve-secret-key $keys/$id.key"
    done
}

# group_cluster_up: the cluster with three broker hosts, the group file,
# the admin token and the clients' flags (see above for security).
group_cluster_up() {
    "$CLUSTER" up --brokers 3 >"$WORK/cluster.txt" || fail "cannot create the cluster"
    SECURITY=$(security_mode)
    BROKER_SECURITY=()
    declare -gA CLIENT_SECURITY=() MEMBER_SECURITY=()
    if [ "$SECURITY" = curve ]; then
        make_group_keys
    else
        BROKER_SECURITY=(--allow-insecure)
    fi
    GROUP_FILE="$WORK/group.toml"
    write_group_file "$GROUP_FILE"
    (umask 077 && head -c 32 /dev/urandom | base64 >"$WORK/admin-token")
    ADMIN_FLAGS=(--admin-token "$WORK/admin-token")
    PRODUCER_ENDPOINTS=(--group "$GROUP_FILE")
    WORKER_ENDPOINTS=(--group "$GROUP_FILE")
    say "cluster $ORDERLY_NETNS_PREFIX up (members 1-3 on ${GROUP_HOSTS[*]}, workers ${WORKERS[*]}, producers ${PRODUCERS[*]}), security: $SECURITY"
}

# start_member N [FLAGS...]: member N on its host ($WORK/member-N.K.log for
# its K-th start), data in $WORK/data-N.
start_member() {
    local id=$1 member_security
    shift
    # Word-split on purpose, as client_security does.
    # shellcheck disable=SC2206
    member_security=(${MEMBER_SECURITY[$id]:-})
    MEMBER_STARTS[$id]=$((${MEMBER_STARTS[$id]:-0} + 1))
    start "$(member_host "$id")" "member-$id.${MEMBER_STARTS[$id]}" "$BIN/orderly-broker" run \
        --group "$GROUP_FILE" --node-id "$id" --data-dir "${MEMBER_DATA_ROOT:-$WORK}/data-$id" \
        --status-interval-secs 5 "${ADMIN_FLAGS[@]}" "${BROKER_SECURITY[@]}" "${member_security[@]}" "$@"
    MEMBER_PID[$id]=$LAST_PID
}

member_log() { echo "$WORK/member-$1.${MEMBER_STARTS[$1]}.log"; }

# start_group: the three members; waits for a leader.
start_group() {
    local id
    for id in "${GROUP_IDS[@]}"; do start_member "$id"; done
    wait_leader 30 || fail "no leader: $(for id in "${GROUP_IDS[@]}"; do tail -n 2 "$(member_log "$id")"; done)"
    say "group up: member $LEADER leads"
}

# member_status_json N: member N's /status, asked on its own host (so it
# answers even while its host is cut off).
member_status_json() {
    on "$(member_host "$1")" "$BIN/orderly-broker" status --admin "$(member_ip "$1"):5573" "${ADMIN_FLAGS[@]}" --json
}

is_leader_json() {
    python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["group"]["role"] == "leader" else 1)'
}

# member_field N EXPR: a value from member N's /status (python on v).
member_field() {
    member_status_json "$1" 2>/dev/null | python3 -c "import json,sys; v=json.load(sys.stdin); print($2)" 2>/dev/null
}

# member_role N: leader, catching_up or follower (fails if N does not answer).
member_role() { member_field "$1" 'v["group"]["role"]'; }

# member_follows N L: member N is a follower that knows L as its leader.
member_follows() {
    [ "$(member_field "$1" 'v["group"]["role"] + " " + str(v["group"]["leader"])')" = "follower $2" ]
}

# find_leader [IDS...]: sets LEADER (and where status_json asks) to the
# member among IDS (default all) that says it leads; fails while none does.
find_leader() {
    local id
    [ $# -gt 0 ] || set -- "${GROUP_IDS[@]}"
    for id in "$@"; do
        if [ "$(member_field "$id" 'v["group"]["role"]')" = leader ]; then
            LEADER=$id
            STATUS_HOST=$(member_host "$id")
            ADMIN="$(member_ip "$id"):5573"
            return 0
        fi
    done
    return 1
}

# wait_leader SECONDS [IDS...]
wait_leader() {
    local seconds=$1
    shift
    wait_for "$seconds" "a leader among members ${*:-${GROUP_IDS[*]}}" find_leader "$@"
}

# group_status: `orderly-broker group status` from a client host (p1),
# to $WORK/group-status.txt; its exit status (0: one leader, a majority
# answering).
group_status() {
    on p1 "$BIN/orderly-broker" group status --group "$GROUP_FILE" "${ADMIN_FLAGS[@]}" >"$WORK/group-status.txt" 2>&1
}

# caught_up N INDEX: member N answers as a follower with applied >= INDEX.
caught_up() {
    local applied
    applied=$(member_field "$1" 'v["group"]["applied"]') || return 1
    [ -n "$applied" ] && [ "$applied" -ge "$2" ]
}

# wait_caught_up SECONDS N: member N has applied what the leader had
# committed when asked (while orders flow the leader moves on; this is
# "not behind by more than the time it took").
wait_caught_up() {
    local commit
    find_leader || wait_leader 30 || return 1
    commit=$(member_field "$LEADER" 'v["group"]["commit"]') || return 1
    wait_for "$1" "member $2 to apply up to index $commit" caught_up "$2" "$commit"
}

# stop_member N: SIGTERM, waits for the exit (any status: counted by
# the caller if it matters).
stop_member() {
    local pid=${MEMBER_PID[$1]}
    kill -TERM "$pid" 2>/dev/null || true
    wait_for 30 "member $1 to exit" eval "! kill -0 $pid 2>/dev/null" || fail "member $1 did not stop on SIGTERM"
    MEMBER_EXIT=0
    wait "$pid" 2>/dev/null || MEMBER_EXIT=$?
}

# kill_member N: kill -9.
kill_member() {
    kill -KILL "${MEMBER_PID[$1]}"
    { wait "${MEMBER_PID[$1]}" || true; } 2>/dev/null
}

now() { date +%s.%N; }

# FAILOVER_TARGET_SECS: what docs/REPLICATION.md promises (election time,
# default heartbeats); FAILOVER_BUG_SECS: above this the scenario fails
# (a generous bound: the machine is shared, the build is debug).
FAILOVER_TARGET_SECS=3
FAILOVER_BUG_SECS=10

# confirms_resume T0: waits (at most 30 s) for the producers' confirms to
# resume after the leader is lost at T0 (seconds since the epoch) and sets
# FAILOVER_SECS to the time from T0 to the first confirm that follows a
# stall of at least 0.5 s; "" when none came. Method: the confirmed logs'
# sizes, polled every 20 ms; a confirm already on its way at T0 may land
# just after it, so the failover is the end of the stall, not the first
# growth. Every confirm after the stall comes from a new leader: the old
# one is dead (kill -9) or cut off (it can neither commit nor send).
confirms_resume() {
    FAILOVER_SECS=$(python3 - "$1" "$WORK" <<'PY'
import glob, os, sys, time
t0, work = float(sys.argv[1]), sys.argv[2]
STALL_MIN, POLL, BOUND = 0.5, 0.02, 30.0
def size():
    return sum(os.stat(f).st_size for f in glob.glob(os.path.join(work, "*.confirmed")))
last, last_at = size(), t0
while time.time() < t0 + BOUND:
    time.sleep(POLL)
    now, current = time.time(), size()
    if current > last:
        if now - last_at >= STALL_MIN:
            print(f"{now - t0:.2f}")
            break
        last, last_at = current, now
PY
)
}

# failover_verdict WHAT: prints the failover time against the target and
# fails above FAILOVER_BUG_SECS or when the confirms never resumed.
failover_verdict() {
    [ -n "$FAILOVER_SECS" ] || fail "$1: confirms did not resume within 30 s"
    local met
    met=$(python3 -c "print('met' if $FAILOVER_SECS <= $FAILOVER_TARGET_SECS else 'MISSED')")
    say "FAILOVER $1: ${FAILOVER_SECS} s from leader lost to the first confirm from the new leader (member $LEADER); target <= ${FAILOVER_TARGET_SECS} s: $met; bug bound ${FAILOVER_BUG_SECS} s"
    python3 -c "import sys; sys.exit(0 if $FAILOVER_SECS <= $FAILOVER_BUG_SECS else 1)" ||
        fail "$1: failover took ${FAILOVER_SECS} s, above the bug bound of ${FAILOVER_BUG_SECS} s"
    RESULT_EXTRA+=", failover ($1) ${FAILOVER_SECS} s (target ${FAILOVER_TARGET_SECS} s: $met)"
}

# group_final_check: every member answers, one leads, and all have applied
# the same index (nothing left to replicate once the orders are done).
group_final_check() {
    wait_for 30 "group status to exit 0 with every member answering" \
        eval 'group_status && ! grep -q unreachable "$WORK/group-status.txt"' ||
        fail "group status: $(cat "$WORK/group-status.txt")"
    wait_for 30 "every member to apply the same index" same_applied ||
        fail "members differ: $(cat "$WORK/group-status.txt")"
    sed 's/^/    /' "$WORK/group-status.txt"
}

same_applied() {
    group_status || return 1
    [ "$(awk '{for (i = 1; i < NF; i++) if ($i == "applied") print $(i + 1)}' "$WORK/group-status.txt" | sort -u | wc -l)" = 1 ]
}

