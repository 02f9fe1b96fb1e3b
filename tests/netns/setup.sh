#!/usr/bin/env bash
# Installs what the cluster suite needs beyond the build, where it is
# missing: iproute2 (ip netns, tc) and nftables (nft), through
# scripts/setup.sh (apt-get as root; otherwise it prints the command and
# exits 1).
set -euo pipefail
exec "$(cd "$(dirname "$0")/../.." && pwd)/scripts/setup.sh" ip=iproute2 tc=iproute2 nft=nftables
