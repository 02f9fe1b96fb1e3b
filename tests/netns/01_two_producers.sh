#!/usr/bin/env bash
# Two producers on their own hosts send 20,000 orders each (10 items) to a
# broker on a third host; three workers on three more hosts process them.
# Every confirmed order is in a sink, item for item; duplicates are counted.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

make_orders "${ORDERS:-20000}"
cluster_up
start_broker
start_workers
start_producers --timeout 60
wait_producers 100
check_all 60
