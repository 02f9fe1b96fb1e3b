#!/usr/bin/env bash
# The dashboard in a real browser: starts a debug broker (with an admin
# token and --max-attempts 1), a worker whose handler fails some orders,
# sends orders (one id is an HTML tag), then drives Debian's chromium
# headless through dashboard.mjs (playwright-core): overview, workers,
# token, show, retry, delete, escaping, "disconnected". Writes the
# screenshot to target/dashboard.png, or to SCREENSHOT (the one kept in
# docs/ is made with SCREENSHOT=docs/dashboard.png).
#
#   tests/browser/run.sh          (needs chromium, node, npm: scripts/setup.sh)
#   ORDERLY_BIN_DIR=target/debug tests/browser/run.sh   with binaries built already
#
# On failure it prints the end of the broker's and the worker's logs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# Where the screenshot goes (absolute: the browser runs in tests/browser);
# tests leave the committed docs/dashboard.png alone unless asked.
screenshot=${SCREENSHOT:-$root/target/dashboard.png}
case "$screenshot" in /*) ;; *) screenshot="$PWD/$screenshot" ;; esac
mkdir -p "$(dirname "$screenshot")"
# The browser part at most (it takes some 10 s).
browser_timeout_secs=120

for need in chromium node npm; do
    command -v "$need" >/dev/null 2>&1 || {
        echo "browser test: $need not found; run scripts/setup.sh (as root it installs it)" >&2
        exit 1
    }
done

if [ ! -d "$here/node_modules/playwright-core" ]; then
    (cd "$here" && timeout 300 npm ci --no-audit --no-fund --loglevel=error)
fi

# The debug binaries: ORDERLY_BIN_DIR's (as tests/run.sh takes them), or built here.
if [ -n "${ORDERLY_BIN_DIR:-}" ]; then
    bin=$(cd "$ORDERLY_BIN_DIR" && pwd)
else
    (cd "$root" && cargo build -q -p orderly-broker -p orderly-worker-cli -p orderly-producer-cli)
    bin="$root/target/debug"
fi

dir=$(mktemp -d)
pids=()
cleanup() {
    local status=$?
    if [ $status -ne 0 ]; then
        for name in broker worker open-broker; do
            echo "--- the end of the $name's log" >&2
            tail -n 30 "$dir/$name.log" >&2 || true
        done
    fi
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$dir"
}
trap cleanup EXIT

ep() { echo "ipc://$dir/$1"; }
# A port free on loopback now (the broker binds it a moment later).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_healthy() {
    local deadline=$((SECONDS + 30))
    until curl -fsS "http://$1/healthz" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || { echo "browser test: the broker at $1 did not start" >&2; exit 1; }
        sleep 0.1
    done
}
port=$(free_port)
admin="127.0.0.1:$port"
token="browser-test-token-$RANDOM$RANDOM$RANDOM"
(umask 077 && echo "$token" >"$dir/admin.token")

"$bin/orderly-broker" run --data-dir "$dir/data" \
    --intake "$(ep intake)" --fanout "$(ep fanout)" --control "$(ep control)" \
    --admin "$admin" --admin-token "$dir/admin.token" \
    --max-attempts 1 --fsync never --heartbeat-interval-ms 200 \
    >"$dir/broker.log" 2>&1 &
broker_pid=$!
pids+=("$broker_pid")

# Fails orders whose id begins with "bad" or "<" until the file heal exists
# (the test creates it before it retries one, so the retry then succeeds).
handler="test -e '$dir/heal' && exit 0; case \"\$ORDERLY_ORDER_ID\" in bad*|'<'*) exit 3;; esac; exit 0"
"$bin/orderly-worker" run --id w1 --fanout "$(ep fanout)" --control "$(ep control)" \
    --concurrency 4 --heartbeat-interval-ms 200 --exec "$handler" \
    >"$dir/worker.log" 2>&1 &
pids+=("$!")

wait_healthy "$admin"

printf '%s\n' \
    '{"id": "good-1", "items": [{"sku": "A1", "qty": 2}]}' \
    '{"id": "good-2", "items": [{"sku": "B7", "qty": 1}]}' \
    '{"id": "bad-1", "items": [{"sku": "C3", "qty": 5}]}' \
    '{"id": "bad-2", "items": [{"sku": "C4", "qty": 1}]}' \
    '{"id": "<script>alert(1)</script>", "items": [{"note": "an id that is HTML"}]}' \
    '{"id": "<img src=x onerror=alert(2)>", "items": [{"note": "another"}]}' |
    timeout 60 "$bin/orderly-producer" send --id shop --intake "$(ep intake)" --fanout "$(ep fanout)" --timeout 30

# A steady trickle (20 orders/s) while the browser looks, so the rates
# it computes are above zero. Bounded: it ends by itself after 4 minutes.
for n in $(seq 1 4800); do
    echo "{\"id\": \"flow-$n\", \"items\": [{\"n\": $n}]}"
    sleep 0.05
done 2>/dev/null | "$bin/orderly-producer" send --id flow --intake "$(ep intake)" --fanout "$(ep fanout)" \
    --timeout 3 >"$dir/flow.log" 2>&1 & # --timeout: it quits soon after the test stops the broker
pids+=("$!")

# A second broker, a group of one, whose admin listens beyond loopback:
# there the page's own reads need the token too, and it has a group.
open_port=$(free_port)
cat >"$dir/group.toml" <<TOML
[[member]]
id = 1
intake = "$(ep open-intake)"
fanout = "$(ep open-fanout)"
control = "$(ep open-control)"
peer = "$(ep open-peer)"
admin = "0.0.0.0:$open_port"
TOML
"$bin/orderly-broker" run --group "$dir/group.toml" --node-id 1 --data-dir "$dir/open-data" \
    --admin-token "$dir/admin.token" \
    >"$dir/open-broker.log" 2>&1 &
pids+=("$!")
wait_healthy "127.0.0.1:$open_port"

cd "$here"
ADMIN_OPEN="127.0.0.1:$open_port" ADMIN="$admin" TOKEN="$token" HEAL_FILE="$dir/heal" BROKER_PID="$broker_pid" \
    SCREENSHOT="$screenshot" EXPECTED_DEAD=4 \
    timeout -k 5 "$browser_timeout_secs" node dashboard.mjs
echo "browser test: ok (screenshot in $screenshot)"
