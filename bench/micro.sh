#!/usr/bin/env bash
# Microbenchmarks (divan), each printing time per iteration and throughput:
#   codec   (orderly-common)  encode/decode of Begin, Item (100 B), Finish, Ack, and a
#                             Dispatch of 10 x 100 B items: messages/s and bytes/s
#   append  (orderly-journal) append N = 1, 64, 1024 records of 1,100 B, then one group commit,
#                             with fsync always and never: records/s and bytes/s (on the project's disk)
#   core    (orderly-broker)  whole orders (Begin, 10 Items, Finish — or one packed items message —, then the Ack) through the
#                             sans-IO broker core with one ready worker: orders/s
# Extra arguments go to every bench (divan's), e.g.:
#   bench/micro.sh --sample-count 20
#   bench/micro.sh fsync_always      # only benches whose name matches
set -euo pipefail

cd "$(dirname "$0")/.."

cargo bench -p orderly-common --bench codec -- "$@"
cargo bench -p orderly-journal --bench append -- "$@"
cargo bench -p orderly-broker --bench core -- "$@"
