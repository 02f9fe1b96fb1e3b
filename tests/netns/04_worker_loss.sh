#!/usr/bin/env bash
# 20% of the frames to and from w1 are dropped at random (nftables numgen
# random on its switch port, both directions) for the whole run.
# needs: nft
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

LOSS_PERCENT=${LOSS_PERCENT:-20}
make_orders "${ORDERS:-10000}"
cluster_up
switch_loss w1 "$LOSS_PERCENT"
say "w1's link drops ${LOSS_PERCENT}% of frames each way"
start_broker
start_workers
start_producers --timeout 60
wait_producers 100
check_all 60
say "frames dropped on w1's link: $(on switch nft list table bridge loss_w1 | grep -o 'packets [0-9]*' | awk '{s+=$2} END {print s}')"
say "workers declared dead: $(status_field 'v["counters"]["workers_expired"]'), redeliveries: $(status_field 'v["counters"]["redeliveries"]')"
