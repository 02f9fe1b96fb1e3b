#!/usr/bin/env bash
# The broker is killed with kill -9 while producers send and workers work,
# and restarted on the same host and data directory (KILLS times, default
# 3). Producers resend what was left unanswered; every confirmed order is
# processed at least once.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

KILLS=${KILLS:-3}
make_orders "${ORDERS:-15000}"
# Orders reach the producers at 600/s each (25 s of sending): packed,
# 10,000 were sent in about 1.5 s, less than the kill schedule's
# granularity (0.5 s polls, random sleeps, 1 s restarts), and the
# producers sometimes finished before a kill; at 1,000/s (15 s) they
# still did once, when two restarts took 3 s each and the resends after
# the second confirmed everything before kill 3.
INPUT_RATE=${INPUT_RATE:-600}
cluster_up
start_broker
start_workers
start_producers --timeout 60
# Kill k comes once k/(KILLS+1) of all orders are confirmed, give or take
# a random fraction of a second, so every kill lands while orders flow.
TOTAL=$((ORDERS * ${#PRODUCERS[@]}))
for kill_no in $(seq 1 "$KILLS"); do
    wait_for 120 "confirms before kill $kill_no" confirmed_at_least $((TOTAL * kill_no / (KILLS + 1))) ||
        fail "no progress before kill $kill_no"
    sleep "0.$((RANDOM % 10))"
    producers_running || fail "the producers finished before kill $kill_no"
    kill -KILL "$BROKER_PID"
    wait "$BROKER_PID" 2>/dev/null || true
    say "kill $kill_no: broker killed (-9) with $(confirmed_count) orders confirmed so far"
    sleep 1
    start_broker
    say "broker restarted: $(status_field '"pending %d, partial %d" % (v["pending_orders"], v["partial_orders"])') recovered from the journal"
done
wait_producers 100
check_all 60
grep -q "torn tail" "$WORK"/broker.*.log && say "(a restart cut off a torn tail, as designed)"
true
