#!/usr/bin/env bash
# broker_crash.sh with a payload cache of 4 KiB: almost every pending
# order's items leave RAM (orders sent item by item get a Restored copy
# first), dispatch reads them back from the journal, and compaction copies
# them from there — all across kill -9 restarts. Every confirmed order must
# still be delivered item-for-item identical.
BROKER_FLAGS="--payload-cache-bytes 4096 --journal-segment-bytes 1048576" KILLS=${KILLS:-6} EXPECT_PAYLOAD_READS=1 \
    exec "$(dirname "$0")/broker_crash.sh"
