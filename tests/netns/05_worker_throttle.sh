#!/usr/bin/env bash
# w1's link is throttled with tc tbf (both directions) while w2 and w3 run
# at full speed: nothing is lost, and the broker's credits keep the slow
# worker from holding up the rest (it processes the fewest orders).
# needs: tc
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

RATE=${RATE:-256kbit}
make_orders "${ORDERS:-10000}"
cluster_up
throttle w1 "$RATE"
say "w1's link throttled to $RATE (tc tbf, both directions)"
start_broker
start_workers
start_producers --timeout 60
wait_producers 100
check_all 60
if [ "$(deliveries w1)" -ge "$(deliveries w2)" ] || [ "$(deliveries w1)" -ge "$(deliveries w3)" ]; then
    fail "the throttled worker processed $(deliveries w1) orders, not fewer than w2 ($(deliveries w2)) and w3 ($(deliveries w3))"
fi
