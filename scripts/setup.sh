#!/usr/bin/env bash
# Installs what orderly needs to build and test, where it is missing:
# libzmq3-dev (the system libzmq, built with libsodium: CURVE), pkg-config,
# python3 (test helpers), python3-venv (the Python client's tests), libssl-dev
# (the relay's TLS to PostgreSQL). As root it uses apt-get; otherwise it prints
# the exact command to run and stops.
#
#   scripts/setup.sh [COMMAND=PACKAGE ...]   also needs COMMAND, from PACKAGE
set -euo pipefail

missing=()
dpkg -s libzmq3-dev >/dev/null 2>&1 || missing+=(libzmq3-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# `python3 -m venv` (scripts/test-python.sh) needs ensurepip, which Debian
# ships apart from python3.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
command -v timeout >/dev/null 2>&1 || missing+=(coreutils)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus) # promtool: broker/tests/metrics.rs
dpkg -s postgresql >/dev/null 2>&1 || missing+=(postgresql) # initdb, pg_ctl: producer-cli/tests/relay_postgres.rs
dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev) # OpenSSL for the relay's TLS to PostgreSQL (native-tls)
command -v chromium >/dev/null 2>&1 || missing+=(chromium) # tests/browser/run.sh (the dashboard)
command -v node >/dev/null 2>&1 || missing+=(nodejs) # tests/browser/run.sh drives chromium
command -v npm >/dev/null 2>&1 || missing+=(npm) # tests/browser/run.sh installs playwright-core
for need in "$@"; do
    command -v "${need%%=*}" >/dev/null 2>&1 || missing+=("${need#*=}")
done
[ ${#missing[@]} -eq 0 ] || mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup: missing ${missing[*]}; run:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install Rust from your distribution or with rustup, then rerun" >&2
    exit 1
fi
