#!/usr/bin/env bash
# The cluster suite: runs every scenario in tests/netns (or those named as
# arguments), each on its own cluster of network namespaces with a unique
# name prefix and a time limit, removes what a scenario left behind, prints
# each scenario's result line, and ends with "N passed, N failed".
#
# Scenarios 01-06 run one broker; 07-10 a broker group of three on hosts
# broker, b2 and b3 (`netns-cluster.sh up --brokers 3`): leader killed,
# leader's host partitioned, a follower's disk wiped, a rolling restart.
# Their RESULT lines add the failover time measured against its target.
#
# Needs root and `ip netns`; without them it says why, counts every
# scenario as skipped and exits 0. A scenario whose tool (nft, tc) is
# missing after tests/netns/setup.sh is skipped the same way.
#
# Environment: ORDERLY_BIN_DIR (default target/debug),
# ORDERLY_NETNS_SCENARIO_TIMEOUT_SECS (default 120), ORDERLY_NETNS_SECURITY
# (auto | curve | insecure), ORDERLY_KEEP_WORK (keep logs and sinks).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CLUSTER="$ROOT/deploy/netns-cluster.sh"
LIMIT_SECS=${ORDERLY_NETNS_SCENARIO_TIMEOUT_SECS:-120}
export ORDERLY_BIN_DIR="${ORDERLY_BIN_DIR:-$ROOT/target/debug}"
shopt -s nullglob
if [ $# -gt 0 ]; then scenarios=("$@"); else scenarios=("$ROOT"/tests/netns/[0-9]*.sh); fi

passed=0
failed=0
skipped=0
failures=()
results=()
started=$SECONDS

summary() {
    echo "---- netns cluster suite ($((SECONDS - started)) s) ----"
    for line in "${results[@]}"; do echo "$line"; done
    [ "$skipped" -gt 0 ] && echo "$skipped skipped"
    [ "$failed" -gt 0 ] && echo "failed scenarios: ${failures[*]}"
    echo "$passed passed, $failed failed"
}

skip_all() {
    echo "netns suite skipped: $1"
    skipped=${#scenarios[@]}
    summary
    exit 0
}

[ "$(id -u)" = 0 ] || skip_all "not root (network namespaces, nftables and tc need root)"
command -v ip >/dev/null 2>&1 || "$ROOT/tests/netns/setup.sh" >&2 || true
command -v ip >/dev/null 2>&1 || skip_all "iproute2 (ip) is not installed"
ip netns list >/dev/null 2>&1 || skip_all "'ip netns' is unavailable"
probe="orderly-probe-$$-$RANDOM"
if ! ip netns add "$probe" 2>/dev/null; then
    skip_all "cannot create a network namespace here (a container without CAP_SYS_ADMIN?)"
fi
ip netns delete "$probe"
"$ROOT/tests/netns/setup.sh" >&2 || echo "netns suite: setup incomplete; scenarios needing a missing tool are skipped" >&2

for bin in orderly-broker orderly-worker orderly-producer; do
    if [ ! -x "$ORDERLY_BIN_DIR/$bin" ]; then
        echo "netns suite: $ORDERLY_BIN_DIR/$bin is missing; build first (cargo build --bins)"
        failed=${#scenarios[@]}
        failures=("(no binaries)")
        summary
        exit 1
    fi
done

# The scenario running now, so an interrupt can stop it and sweep its cluster.
child=
prefix=
interrupted=0
on_signal() {
    interrupted=1
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
}
trap on_signal INT TERM

for scenario in "${scenarios[@]}"; do
    name=$(basename "$scenario" .sh)
    missing=""
    # shellcheck disable=SC2013 # the tools are words
    for tool in $(sed -n 's/^# needs: //p' "$scenario"); do
        command -v "$tool" >/dev/null 2>&1 || missing+=" $tool"
    done
    if [ -n "$missing" ]; then
        skipped=$((skipped + 1))
        echo "SKIP $name (missing:$missing)"
        results+=("SKIP $name: missing$missing")
        continue
    fi
    prefix="on-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
    scenario_started=$SECONDS
    log=$(mktemp "${TMPDIR:-/tmp}/orderly-netns-run.XXXXXX")
    # timeout puts the scenario in a process group of its own and signals
    # the whole group at the limit; the scenario's trap then cleans up.
    ORDERLY_NETNS_PREFIX=$prefix timeout --kill-after=10 "$LIMIT_SECS" bash "$scenario" >"$log" 2>&1 &
    child=$!
    # Shows the log as it grows; ends once the scenario has (and the log is read).
    (trap '' INT TERM; exec tail -n +1 -s 0.2 -f --pid="$child" "$log") &
    follower=$!
    code=0
    while :; do
        wait "$child"
        code=$?
        # wait returns early (above 128) when a signal arrives: wait again
        # for the scenario itself, which the trap has told to stop.
        kill -0 "$child" 2>/dev/null || break
    done
    child=
    wait "$follower"
    # Whatever happened (even kill -9 at the limit), no namespace survives.
    ORDERLY_NETNS_PREFIX=$prefix "$CLUSTER" down >/dev/null 2>&1
    secs=$((SECONDS - scenario_started))
    result=$(grep -h '^RESULT ' "$log" | tail -n 1)
    rm -f "$log"
    if [ "$code" = 0 ] && [ "$interrupted" = 0 ]; then
        passed=$((passed + 1))
        echo "PASS $name ($secs s)"
        results+=("PASS ${result#RESULT }")
    else
        failed=$((failed + 1))
        failures+=("$name")
        [ "$code" = 124 ] && why="time limit ${LIMIT_SECS}s" || why="exit $code"
        echo "FAIL $name ($secs s, $why)"
        results+=("FAIL $name: $why after $secs s")
    fi
    [ "$interrupted" = 0 ] || { echo "interrupted"; break; }
done
summary
[ "$failed" -eq 0 ] && [ "$interrupted" = 0 ]
