#!/usr/bin/env bash
# Runs every shell scenario under tests/scenarios (or those named as
# arguments), each with a time limit, and ends with "N passed, N failed".
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LIMIT_SECS=${ORDERLY_SCENARIO_TIMEOUT_SECS:-300}
if [ $# -gt 0 ]; then scenarios=("$@"); else scenarios=("$ROOT"/tests/scenarios/*.sh); fi
passed=0
failed=0
failures=()
for scenario in "${scenarios[@]}"; do
    name=$(basename "$scenario" .sh)
    started=$SECONDS
    if timeout --kill-after=10 "$LIMIT_SECS" bash "$scenario"; then
        passed=$((passed + 1))
        echo "PASS $name ($((SECONDS - started)) s)"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "FAIL $name ($((SECONDS - started)) s)"
    fi
done
[ "$failed" -gt 0 ] && echo "failed scenarios: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
