#!/usr/bin/env bash
# Checks the files in deploy/ without deploying anything:
#   1. the three example TOML files are accepted by the binaries: a broker,
#      a worker and a producer run on them (ipc:// endpoints and throwaway
#      CURVE keys in a temp directory replace hosts and key paths, through
#      ORDERLY_* variables, which win over the files) and one order goes
#      through;
#   2. the systemd units pass `systemd-analyze verify` (in a throwaway root,
#      so no systemd needs to be running), with no warning at all, and set
#      a memory limit;
#   3. compose.yaml parses, names a broker and three workers, and limits
#      the broker's memory;
#   4. netns-cluster.sh parses.
# Docker itself is not run (it may be absent). Prints what it skipped; exits
# non-zero if a check fails.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEPLOY="$ROOT/deploy"
BIN="${ORDERLY_BIN_DIR:-$ROOT/target/debug}"
T="$(mktemp -d "${TMPDIR:-/tmp}/orderly-deploy-verify.XXXXXX")"
PIDS=()
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    disown -a 2>/dev/null || true
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT
failed=0
ok() { echo "ok    $*"; }
bad() {
    echo "FAIL  $*"
    failed=1
}
skip() { echo "skip  $*"; }

# wait_log SECONDS FILE TEXT [PID]: until FILE holds TEXT (while PID lives).
wait_log() {
    local deadline=$((SECONDS + $1))
    until grep -q "$3" "$2" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        [ -z "${4:-}" ] || kill -0 "$4" 2>/dev/null || return 1
        sleep 0.1
    done
}

# ---- 1. TOML files, run for real ----------------------------------------------
check_configs() {
    local k="$T/keys"
    mkdir -m 700 "$k"
    "$BIN/orderly-broker" keygen --out "$k/broker" >/dev/null
    "$BIN/orderly-worker" keygen --out "$k/worker" >/dev/null
    "$BIN/orderly-producer" keygen --out "$k/producer" >/dev/null
    # The ids are the ones in worker.toml and producer.toml.
    {
        echo "$(cat "$k/worker.pub") worker worker-1"
        echo "$(cat "$k/producer.pub") producer shop-1"
    } >"$k/authorized_keys"
    local ep="ipc://$T"

    ORDERLY_BROKER_DATA_DIR="$T/data" ORDERLY_BROKER_INTAKE="$ep/intake" ORDERLY_BROKER_FANOUT="$ep/fanout" \
        ORDERLY_BROKER_CONTROL="$ep/control" ORDERLY_BROKER_ADMIN=off \
        ORDERLY_BROKER_CURVE_SECRET_KEY="$k/broker.key" ORDERLY_BROKER_AUTHORIZED_KEYS="$k/authorized_keys" \
        "$BIN/orderly-broker" run --config "$DEPLOY/broker.toml" >"$T/broker.log" 2>&1 &
    local broker=$!
    PIDS+=("$broker")
    if ! wait_log 20 "$T/broker.log" "broker listening" "$broker"; then
        bad "broker.toml: $(tail -n 2 "$T/broker.log")"
        return
    fi
    ok "broker.toml: broker runs on it"

    ORDERLY_WORKER_FANOUT="$ep/fanout" ORDERLY_WORKER_CONTROL="$ep/control" ORDERLY_WORKER_EXEC="cat > $T/handled.json" \
        ORDERLY_WORKER_CURVE_SECRET_KEY="$k/worker.key" ORDERLY_WORKER_BROKER_PUBLIC_KEY="$k/broker.pub" \
        "$BIN/orderly-worker" run --config "$DEPLOY/worker.toml" >"$T/worker.log" 2>&1 &
    local worker=$!
    PIDS+=("$worker")
    if ! wait_log 20 "$T/worker.log" "broker found" "$worker"; then
        bad "worker.toml: $(tail -n 2 "$T/worker.log")"
        return
    fi
    ok "worker.toml: worker runs on it and reaches the broker (CURVE)"

    local code=0
    echo '{"id": "verify-1", "items": [{"sku": "A1", "qty": 2}]}' |
        ORDERLY_PRODUCER_INTAKE="$ep/intake" ORDERLY_PRODUCER_FANOUT="$ep/fanout" ORDERLY_PRODUCER_TIMEOUT=20 \
            ORDERLY_PRODUCER_CURVE_SECRET_KEY="$k/producer.key" ORDERLY_PRODUCER_BROKER_PUBLIC_KEY="$k/broker.pub" \
            timeout 60 "$BIN/orderly-producer" send --config "$DEPLOY/producer.toml" >"$T/producer.log" 2>&1 || code=$?
    if [ "$code" != 0 ]; then
        bad "producer.toml: producer exited $code: $(tail -n 2 "$T/producer.log")"
        return
    fi
    if wait_log 20 "$T/handled.json" '"verify-1"'; then
        ok "producer.toml: producer runs on it; its order reached the worker's handler"
    else
        bad "the order confirmed to the producer never reached the handler"
    fi
    kill -TERM "$worker" "$broker"
    code=0
    wait "$worker" || code=$?
    if [ "$code" = 0 ]; then ok "worker drained and exited 0 on SIGTERM"; else bad "worker exited $code on SIGTERM"; fi
    code=0
    wait "$broker" || code=$?
    if [ "$code" = 0 ]; then ok "broker exited 0 on SIGTERM"; else bad "broker exited $code on SIGTERM"; fi
}

# ---- 2. systemd units -----------------------------------------------------------
check_units() {
    # The answer to a multipart flood (docs/SECURITY.md) is a memory limit.
    local unit
    for unit in orderly-broker.service orderly-worker@.service; do
        if grep -q '^MemoryMax=' "$DEPLOY/$unit" && grep -q '^MemorySwapMax=0$' "$DEPLOY/$unit"; then
            ok "$unit: MemoryMax= and MemorySwapMax=0 set"
        else
            bad "$unit: no MemoryMax= or MemorySwapMax=0"
        fi
    done
    if ! command -v systemd-analyze >/dev/null 2>&1; then
        skip "systemd units: systemd-analyze not installed (apt-get install systemd)"
        return
    fi
    local r="$T/root" out
    mkdir -p "$r/usr/local/bin" "$r/usr/bin" "$r/usr/lib/systemd" "$r/etc/systemd/system"
    ln -s usr/bin "$r/bin"
    # The unit search path and the programs the units name, as on a real host.
    cp -r /lib/systemd/system "$r/usr/lib/systemd/"
    cp "$(type -P kill)" "$r/usr/bin/kill"
    cp "$BIN/orderly-broker" "$BIN/orderly-worker" "$r/usr/local/bin/"
    cp "$DEPLOY/orderly-broker.service" "$DEPLOY/orderly-worker@.service" "$r/etc/systemd/system/"
    if out=$(cd "$r/etc/systemd/system" && systemd-analyze verify --root="$r" --man=no \
        orderly-broker.service orderly-worker@w1.service 2>&1) && [ -z "$out" ]; then
        ok "systemd units: systemd-analyze verify, no warnings"
    else
        bad "systemd units: $out"
    fi
}

# ---- 3. compose.yaml ------------------------------------------------------------
check_compose() {
    if docker compose version >/dev/null 2>&1; then
        if docker compose -f "$DEPLOY/compose.yaml" config --quiet; then ok "compose.yaml: docker compose config"; else bad "compose.yaml: docker compose config"; fi
        return
    fi
    if ! python3 -c 'import yaml' 2>/dev/null; then
        skip "compose.yaml: neither docker compose nor python3-yaml is installed"
        return
    fi
    if python3 - "$DEPLOY/compose.yaml" <<'PY'; then
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
services = doc["services"]
assert {"broker", "w1", "w2", "w3"} <= set(services), sorted(services)
for name in ("w1", "w2", "w3"):
    env = services[name]["environment"]
    assert env["ORDERLY_WORKER_ID"] == name, name
    assert env["ORDERLY_WORKER_CURVE_SECRET_KEY"].endswith(f"/{name}.key"), name
for name in ("broker", "w1", "w2", "w3"):
    service = services[name]
    assert service.get("mem_limit") and service.get("memswap_limit") == service["mem_limit"], name
for name, service in services.items():
    for volume in service.get("volumes", []):
        assert volume.split(":")[0] in doc["volumes"], (name, volume)
PY
        ok "compose.yaml: parses; a broker and workers w1 w2 w3 with their own ids and keys, memory limits (docker compose not installed: not run)"
    else
        bad "compose.yaml"
    fi
}

# ---- 4. netns-cluster.sh --------------------------------------------------------
check_scripts() {
    if bash -n "$DEPLOY/netns-cluster.sh"; then ok "netns-cluster.sh parses"; else bad "netns-cluster.sh"; fi
}

for bin in orderly-broker orderly-worker orderly-producer; do
    [ -x "$BIN/$bin" ] || { echo "verify: $BIN/$bin missing; build first (cargo build --bins)" >&2; exit 1; }
done
check_configs
check_units
check_compose
check_scripts
skip "Dockerfile: not built here (needs a Docker daemon): docker build -f deploy/Dockerfile ."
[ "$failed" = 0 ] && echo "deploy: all checks passed" || echo "deploy: some checks failed"
exit "$failed"
