#!/usr/bin/env bash
# Installs what the cluster suite needs beyond scripts/setup.sh, where it is
# missing: iproute2 (ip netns, tc) and nftables (nft). As root it uses
# apt-get; otherwise it prints the command and exits 1.
set -euo pipefail

missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v tc >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v timeout >/dev/null 2>&1 || missing+=(coreutils)
[ ${#missing[@]} -gt 0 ] || exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "netns setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "netns setup: missing ${missing[*]}; run:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
