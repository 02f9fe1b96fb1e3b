#!/usr/bin/env bash
# The broker host's link is cut at the switch for 10 seconds while the
# producers keep sending: producers wait (generous --timeout) and resend
# what went unanswered, workers are welcomed again; nothing confirmed is
# lost.
# needs: nft
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

CUT_SECS=${CUT_SECS:-10}
make_orders "${ORDERS:-10000}"
cluster_up
start_broker
start_workers
start_producers --timeout 60
wait_for 60 "orders under way" confirmed_at_least 2000 || fail "no progress"
switch_cut broker
cut_at=$(confirmed_count)
say "broker's link cut for ${CUT_SECS}s with $cut_at orders confirmed"
sleep "$CUT_SECS"
producers_running || fail "the producers were not sending any more when the link came back"
[ "$(confirmed_count)" -eq "$cut_at" ] || say "note: $(( $(confirmed_count) - cut_at )) confirms arrived during the cut (already in flight)"
switch_heal broker
say "broker's link back"
wait_producers 100
check_all 60
say "workers declared dead: $(status_field 'v["counters"]["workers_expired"]'), redeliveries: $(status_field 'v["counters"]["redeliveries"]')"
