#!/usr/bin/env bash
# The Python client's tests (clients/python) against the real binaries.
#
#   scripts/test-python.sh [PYTEST ARGS...]
#
# Idempotent: the venv of scripts/python-env.sh (target/python-venv, with
# ./clients/python installed, not editable), then pytest on clients/python/tests
# with the binaries in ORDERLY_BIN_DIR (default: target/debug; build them
# first with `cargo build`). Bounded by TIMEOUT_SECS (default 600).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ORDERLY_BIN_DIR="${ORDERLY_BIN_DIR:-$ROOT/target/debug}"
# Absolute: pytest runs in clients/python.
ORDERLY_BIN_DIR="$(cd "$ORDERLY_BIN_DIR" && pwd)" || { echo "test-python: no directory $ORDERLY_BIN_DIR" >&2; exit 1; }
export ORDERLY_BIN_DIR
TIMEOUT_SECS=${TIMEOUT_SECS:-600}

PY="$("$ROOT/scripts/python-env.sh")"
for bin in orderly-broker orderly-worker orderly-producer; do
    [ -x "$ORDERLY_BIN_DIR/$bin" ] || {
        echo "test-python: $ORDERLY_BIN_DIR/$bin is missing: run cargo build (or set ORDERLY_BIN_DIR)" >&2
        exit 1
    }
done
cd "$ROOT/clients/python"
exec timeout --kill-after=10 "$TIMEOUT_SECS" "$PY" -m pytest -q -p no:cacheprovider tests "$@"
