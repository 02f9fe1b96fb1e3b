#!/usr/bin/env bash
# Worker w1's own firewall (nftables on its host) drops everything for
# longer than the broker's liveness timeout (3 s) while it holds orders:
# the broker declares it dead and hands its orders to w2 and w3. Healed, w1
# is welcomed again; its late acks are harmless. To prove it works again,
# w2 and w3 then leave (SIGTERM: drain, bye) and 1,000 more orders must all
# be processed by w1.
# needs: nft
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

CUT_SECS=${CUT_SECS:-8}
MORE=${MORE:-1000}
make_orders "${ORDERS:-10000}"
cluster_up
start_broker
start_workers
start_producers --timeout 60
w1_busy() { [ "$(deliveries w1)" -ge 200 ]; }
wait_for 60 "w1 to be processing orders" w1_busy || fail "w1 processed nothing"
expired_before=$(status_field 'v["counters"]["workers_expired"]')
firewall_cut w1
say "w1 cut off by its firewall for ${CUT_SECS}s (liveness timeout 3 s) while holding $(status_field '[w["in_flight"] for w in v["workers"] if w["id"]=="w1"][0]') orders"
sleep "$CUT_SECS"
status_cmp 'v["counters"]["workers_expired"]' -gt "$expired_before" || fail "the broker did not declare w1 dead"
status_cmp '[w["ready"] for w in v["workers"] if w["id"]=="w1"] in ([], [False])' = True ||
    fail "w1 still counts as ready while cut off"
firewall_heal w1
say "w1 healed; $(confirmed_count) orders confirmed so far"
wait_for 30 "w1 to be welcomed again" status_cmp 'sum(1 for w in v["workers"] if w["ready"])' -eq 3 ||
    fail "w1 did not come back"
say "w1 ready again"
wait_producers 100
wait_for 60 "the first orders to be processed" broker_idle || fail "orders left at the broker"
stop_worker w2
stop_worker w3
w1_before=$(deliveries w1)
say "w2 and w3 stopped; w1 alone gets $MORE more orders"
send_more p1 "$MORE"
check_all 60
w1_after=$(deliveries w1)
[ $((w1_after - w1_before)) -ge "$MORE" ] || fail "w1 processed $((w1_after - w1_before)) of the $MORE orders sent after the heal"
say "w1 processed $((w1_after - w1_before)) orders after the heal"
