#!/usr/bin/env bash
# The Python client's tests (clients/python) against the real binaries.
#
#   scripts/test-python.sh [PYTEST ARGS...]
#
# Idempotent: makes a venv at target/python-venv if missing (python3 -m venv;
# Debian needs python3-venv: scripts/setup.sh installs it), installs
# ./clients/python into it (not editable, so the install itself is tested)
# with the pinned test requirements, and runs pytest on clients/python/tests
# with the binaries in ORDERLY_BIN_DIR (default: target/debug; build them
# first with `cargo build`). Bounded by TIMEOUT_SECS (default 600).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/target/python-venv"
export ORDERLY_BIN_DIR="${ORDERLY_BIN_DIR:-$ROOT/target/debug}"
TIMEOUT_SECS=${TIMEOUT_SECS:-600}

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || {
        echo "test-python: python3 -m venv failed; on Debian/Ubuntu run scripts/setup.sh (python3-venv)" >&2
        exit 1
    }
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$ROOT/clients/python/requirements-test.txt"
# Reinstalled every run: the package under test is the current source.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$ROOT/clients/python"
for bin in orderly-broker orderly-worker orderly-producer; do
    [ -x "$ORDERLY_BIN_DIR/$bin" ] || {
        echo "test-python: $ORDERLY_BIN_DIR/$bin is missing: run cargo build (or set ORDERLY_BIN_DIR)" >&2
        exit 1
    }
done
cd "$ROOT/clients/python"
exec timeout --kill-after=10 "$TIMEOUT_SECS" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
