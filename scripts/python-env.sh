#!/usr/bin/env bash
# Makes the Python environment of the client package and prints its
# interpreter's path: a venv at target/python-venv (made if missing; Debian
# needs python3-venv, which scripts/setup.sh installs), the pinned test
# requirements, and ./clients/python installed into it (not editable, so
# the install itself is tested; reinstalled every time: the current source).
#
#   PY="$(scripts/python-env.sh)"   # then: "$PY" -c 'import orderly'
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/target/python-venv"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" >&2 || {
        echo "python-env: python3 -m venv failed; on Debian/Ubuntu run scripts/setup.sh (python3-venv)" >&2
        exit 1
    }
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$ROOT/clients/python/requirements-test.txt" >&2
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$ROOT/clients/python" >&2
echo "$VENV/bin/python"
