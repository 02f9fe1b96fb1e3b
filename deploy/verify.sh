#!/usr/bin/env bash
# Checks the files in deploy/ without deploying anything:
#   1. the example TOML files are accepted by the binaries: a broker,
#      a worker and a producer run on them (ipc:// endpoints and throwaway
#      CURVE keys in a temp directory replace hosts and key paths, through
#      ORDERLY_* variables, which win over the files) and one order goes
#      through; relay.toml likewise runs the outbox relay (its database
#      swapped for a SQLite file) and one outbox row reaches the handler;
#   2. the systemd units (the member template too) pass `systemd-analyze verify` (in a throwaway root,
#      so no systemd needs to be running), with no warning at all, and set
#      a memory limit;
#   2b. a group of three runs on group.toml and broker-member.toml with
#      CURVE (the addresses moved to loopback ports, /etc/orderly to a temp
#      directory holding the key layout of docs/DEPLOY.md: a key pair per
#      member, authorized_keys with `broker N` lines; each member's
#      environment read from orderly-broker-member@.service), elects a
#      leader (`group status`), and one order goes through from a producer
#      to a worker in their group form (worker.toml and producer.toml with
#      `group` instead of their broker endpoints and broker_public_key; the
#      worker's environment from orderly-worker@.service and its group
#      drop-in);
#   3. compose.yaml parses, names a broker and three workers, and limits
#      the broker's memory; compose-group.yaml parses, names three members
#      whose ids and addresses are group-compose.toml's, a worker and a
#      producer on that group file, and limits memory; its keys service,
#      run here on a temp directory, makes every key the services name and
#      an authorized_keys whose `broker N` lines match group-compose.toml's
#      public_key of each member;
#   4. netns-cluster.sh parses.
# Docker itself is not run (it may be absent). Prints what it skipped; exits
# non-zero if a check fails. ORDERLY_VERIFY_KEEP=1 keeps its temp directory
# (logs, the relocated files and keys) for a look after a failure.
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
    [ -n "${ORDERLY_VERIFY_KEEP:-}" ] || rm -rf "$T"
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

# exit_code SECONDS PID: sets EXIT_CODE to PID's exit status once it exits,
# or to "still running after SECONDS s" (then it is killed). Not in $(...):
# a subshell cannot wait for this shell's children.
exit_code() {
    local deadline=$((SECONDS + $1))
    while kill -0 "$2" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill -KILL "$2" 2>/dev/null || true
            EXIT_CODE="still running after $1 s"
            return
        fi
        sleep 0.1
    done
    EXIT_CODE=0
    wait "$2" || EXIT_CODE=$?
}

# ---- 1. TOML files, run for real ----------------------------------------------
check_configs() {
    local k="$T/keys"
    mkdir -m 700 "$k"
    "$BIN/orderly-broker" keygen --out "$k/broker" >/dev/null
    "$BIN/orderly-worker" keygen --out "$k/worker" >/dev/null
    "$BIN/orderly-producer" keygen --out "$k/producer" >/dev/null
    "$BIN/orderly-producer" keygen --out "$k/relay" >/dev/null
    # The ids are the ones in worker.toml and producer.toml.
    {
        echo "$(cat "$k/worker.pub") worker worker-1"
        echo "$(cat "$k/producer.pub") producer shop-1"
        echo "$(cat "$k/relay.pub") producer shop-outbox"
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

    # relay.toml: the outbox relay on it, its database swapped for SQLite
    # (the file's is a PostgreSQL URL): a row committed to the outbox
    # reaches the handler, and SIGTERM ends the relay with exit 0.
    local db="$T/app.db" metrics_port
    metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$BIN/orderly-producer" relay --config "$DEPLOY/relay.toml" --database "sqlite:$db" --print-schema |
        python3 -c '
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.executescript(sys.stdin.read())
db.execute("INSERT INTO orderly_outbox (order_id, items) VALUES (?, ?)", ("verify-relay-1", "[{\"sku\": \"B7\"}]"))
db.commit()' "$db"
    ORDERLY_PRODUCER_INTAKE="$ep/intake" ORDERLY_PRODUCER_FANOUT="$ep/fanout" ORDERLY_PRODUCER_DATABASE="sqlite:$db" \
        ORDERLY_PRODUCER_METRICS="127.0.0.1:$metrics_port" \
        ORDERLY_PRODUCER_CURVE_SECRET_KEY="$k/relay.key" ORDERLY_PRODUCER_BROKER_PUBLIC_KEY="$k/broker.pub" \
        "$BIN/orderly-producer" relay --config "$DEPLOY/relay.toml" >"$T/relay.log" 2>&1 &
    local relay=$!
    PIDS+=("$relay")
    if ! wait_log 30 "$T/handled.json" '"verify-relay-1"' "$relay"; then
        bad "relay.toml: the outbox row never reached the handler: $(tail -n 2 "$T/relay.log")"
        return
    fi
    kill -TERM "$relay"
    exit_code 40 "$relay"
    if [ "$EXIT_CODE" = 0 ]; then
        ok "relay.toml: the relay runs on it (CURVE); an outbox row reached the worker's handler; SIGTERM exits 0"
    else
        bad "relay.toml: the relay exited $EXIT_CODE after SIGTERM: $(tail -n 2 "$T/relay.log")"
    fi
    kill -TERM "$worker" "$broker"
    code=0
    wait "$worker" || code=$?
    if [ "$code" = 0 ]; then ok "worker drained and exited 0 on SIGTERM"; else bad "worker exited $code on SIGTERM"; fi
    code=0
    wait "$broker" || code=$?
    if [ "$code" = 0 ]; then ok "broker exited 0 on SIGTERM"; else bad "broker exited $code on SIGTERM"; fi
}

# ---- 2b. a group of three on group.toml and broker-member.toml -------------------
# loopback_group IN OUT ETC: IN with every member address moved to a free
# loopback port (the hosts in the example are not this machine's) and
# /etc/orderly moved to ETC.
loopback_group() {
    python3 - "$1" "$2" "$3" <<'PY'
import re, socket, sys
text = open(sys.argv[1]).read().replace("/etc/orderly/", sys.argv[3] + "/")
socks = []
def free(match):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)  # held until all are drawn: every port distinct
    return f"127.0.0.1:{s.getsockname()[1]}"
out, n = re.subn(r"\b\d+\.\d+\.\d+\.\d+:\d+\b", free, text)
assert n == 15, f"expected 3 members x 5 addresses, found {n}"
open(sys.argv[2], "w").write(out)
PY
}

# unit_env UNIT INSTANCE ETC STATE [DROP-IN...]: the variables the unit
# instance (with its drop-ins) sets, one NAME=VALUE a line, with %i, %S and
# /etc/orderly moved as for a host whose /etc/orderly is ETC and whose
# state directory is STATE. EnvironmentFile= (optional) is left out.
unit_env() {
    python3 - "$@" <<'PY'
import sys
unit, instance, etc, state, *dropins = sys.argv[1:]
env = {}
for path in [unit, *dropins]:
    for line in open(path):
        line = line.strip()
        if line.startswith("Environment="):
            for word in line.split("=", 1)[1].split():
                name, value = word.split("=", 1)
                env[name] = value
        elif line.startswith("UnsetEnvironment="):
            for name in line.split("=", 1)[1].split():
                env.pop(name, None)
for name, value in env.items():
    value = value.replace("%i", instance).replace("%S", state).replace("/etc/orderly/", etc + "/")
    print(f"{name}={value}")
PY
}

# group_keys ETC: the key layout of docs/DEPLOY.md, "A group of brokers", in
# ETC/keys: a key pair per member (broker-N), the worker's (worker-w1, as
# orderly-worker@w1 names it) and the producer's (shop-1, producer.toml's),
# authorized_keys with `broker N` lines and the clients', the admin token.
group_keys() {
    local k="$1/keys" id
    mkdir -p -m 700 "$k"
    for id in 1 2 3; do
        "$BIN/orderly-broker" keygen --out "$k/broker-$id" >/dev/null
        echo "$(cat "$k/broker-$id.pub") broker $id"
    done >"$k/authorized_keys"
    "$BIN/orderly-worker" keygen --out "$k/worker-w1" >/dev/null
    "$BIN/orderly-producer" keygen --out "$k/shop-1" >/dev/null
    {
        echo "$(cat "$k/worker-w1.pub") worker w1"
        echo "$(cat "$k/shop-1.pub") producer shop-1"
    } >>"$k/authorized_keys"
    (umask 077 && head -c 32 /dev/urandom | base64 >"$k/admin.token")
}

check_group() {
    local g="$T/group" id code line
    local etc="$g/etc" state="$g/state"
    mkdir -p "$etc" "$state"
    loopback_group "$DEPLOY/group.toml" "$etc/group.toml" "$etc" || { bad "group.toml: not 3 members of 5 addresses"; return; }
    group_keys "$etc"
    sed "s|/etc/orderly/|$etc/|g" "$DEPLOY/broker-member.toml" >"$etc/broker-member.toml"
    local members=() member_env
    for id in 1 2 3; do
        # As orderly-broker-member@ID.service runs it: the unit's
        # environment, the config file (/etc/orderly moved).
        member_env=()
        while IFS= read -r line; do member_env+=("$line"); done \
            < <(unit_env "$DEPLOY/orderly-broker-member@.service" "$id" "$etc" "$state")
        mkdir -p "$state/orderly-member/$id"
        env "${member_env[@]}" "$BIN/orderly-broker" run --config "$etc/broker-member.toml" >"$g/member$id.log" 2>&1 &
        members+=("$!")
        PIDS+=("$!")
    done
    local deadline=$((SECONDS + 30))
    until "$BIN/orderly-broker" group status --group "$etc/group.toml" --admin-token "$etc/keys/admin.token" \
        >"$g/status.txt" 2>&1; do
        for id in 1 2 3; do
            if ! kill -0 "${members[$((id - 1))]}" 2>/dev/null; then
                bad "group.toml + broker-member.toml: member $id exited: $(grep -m1 -i error "$g/member$id.log")"
                return
            fi
        done
        if [ "$SECONDS" -ge "$deadline" ]; then
            bad "group.toml + broker-member.toml: no leader within 30 s: $(tail -n 3 "$g/status.txt") $(tail -n 2 "$g/member1.log")"
            return
        fi
        sleep 0.5
    done
    local plain=()
    for id in 1 2 3; do
        grep -q "CURVE on" "$g/member$id.log" || plain+=("$id")
    done
    if [ ${#plain[@]} != 0 ]; then
        bad "group: member(s) ${plain[*]} run without CURVE"
        return
    fi
    ok "group.toml + broker-member.toml + orderly-broker-member@.service: three members run on them with CURVE (a key pair each) and elect a leader (group status)"

    # The documented edit for a group: `group` instead of the broker
    # endpoints, no broker_public_key (the members' keys are in the group
    # file); the worker runs as orderly-worker@w1 with the group drop-in.
    sed -e 's/^\(fanout\|control\) =/# &/' -e 's/^# group = /group = /' -e "s|/etc/orderly/|$etc/|g" \
        "$DEPLOY/worker.toml" >"$etc/worker.toml"
    sed -e 's/^\(intake\|fanout\|broker_public_key\) =/# &/' -e 's/^# group = /group = /' -e "s|/etc/orderly/|$etc/|g" \
        "$DEPLOY/producer.toml" >"$etc/producer.toml"
    local worker_env=()
    while IFS= read -r line; do worker_env+=("$line"); done \
        < <(unit_env "$DEPLOY/orderly-worker@.service" w1 "$etc" "$state" "$DEPLOY/orderly-worker@.service.d/group.conf")
    env "${worker_env[@]}" ORDERLY_WORKER_EXEC="cat > $g/handled.json" \
        "$BIN/orderly-worker" run --config "$etc/worker.toml" >"$g/worker.log" 2>&1 &
    local worker=$!
    PIDS+=("$worker")
    code=0
    echo '{"id": "verify-group-1", "items": [{"sku": "A1", "qty": 2}]}' |
        ORDERLY_PRODUCER_TIMEOUT=30 \
            timeout 60 "$BIN/orderly-producer" send --config "$etc/producer.toml" >"$g/producer.log" 2>&1 || code=$?
    if [ "$code" != 0 ]; then
        bad "producer.toml (group form): producer exited $code: $(tail -n 2 "$g/producer.log")"
        return
    fi
    if wait_log 20 "$g/handled.json" '"verify-group-1"'; then
        ok "worker.toml (+ group.conf), producer.toml with group = ... and CURVE: an order confirmed by the group reached the worker's handler"
    else
        bad "group: the order confirmed to the producer never reached the handler: $(tail -n 2 "$g/worker.log")"
    fi
    kill -TERM "$worker" "${members[@]}"
    exit_code 40 "$worker"
    [ "$EXIT_CODE" = 0 ] || bad "group: worker exited $EXIT_CODE on SIGTERM"
    local failed_members=()
    for id in 1 2 3; do
        exit_code 30 "${members[$((id - 1))]}"
        [ "$EXIT_CODE" = 0 ] || failed_members+=("member $id: $EXIT_CODE")
    done
    if [ ${#failed_members[@]} = 0 ]; then ok "group members exited 0 on SIGTERM"; else bad "group: ${failed_members[*]}"; fi
}

# ---- 2. systemd units -----------------------------------------------------------
check_units() {
    # The answer to a multipart flood (docs/SECURITY.md) is a memory limit.
    local unit
    for unit in orderly-broker.service orderly-broker-member@.service orderly-worker@.service orderly-relay@.service; do
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
    cp "$BIN/orderly-broker" "$BIN/orderly-worker" "$BIN/orderly-producer" "$r/usr/local/bin/"
    cp -r "$DEPLOY/orderly-broker.service" "$DEPLOY/orderly-broker-member@.service" "$DEPLOY/orderly-worker@.service" \
        "$DEPLOY/orderly-worker@.service.d" "$DEPLOY/orderly-relay@.service" "$r/etc/systemd/system/"
    if out=$(cd "$r/etc/systemd/system" && systemd-analyze verify --root="$r" --man=no \
        orderly-broker.service orderly-broker-member@1.service orderly-worker@w1.service orderly-relay@shop.service 2>&1) && [ -z "$out" ]; then
        ok "systemd units (and the worker's group drop-in): systemd-analyze verify, no warnings"
    else
        bad "systemd units: $out"
    fi
}

# ---- 3. compose.yaml, compose-group.yaml -----------------------------------------
check_compose() {
    if docker compose version >/dev/null 2>&1; then
        local file
        for file in compose.yaml compose-group.yaml; do
            if docker compose -f "$DEPLOY/$file" config --quiet; then ok "$file: docker compose config"; else bad "$file: docker compose config"; fi
        done
        check_compose_group_file
        check_compose_group_keys
        return
    fi
    if ! python3 -c 'import yaml' 2>/dev/null; then
        skip "compose.yaml, compose-group.yaml: neither docker compose nor python3-yaml is installed"
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
    if python3 - "$DEPLOY/compose-group.yaml" "$DEPLOY/group-compose.toml" <<'PY'; then
import ipaddress, sys, tomllib, yaml
doc = yaml.safe_load(open(sys.argv[1]))
group = tomllib.load(open(sys.argv[2], "rb"))
services = doc["services"]
members = {m["id"]: m for m in group["member"]}
assert sorted(members) == [1, 2, 3], sorted(members)
subnet = ipaddress.ip_network(doc["networks"]["group"]["ipam"]["config"][0]["subnet"])
GROUP_MOUNT = "./group-compose.toml:/etc/orderly/group.toml:ro"
for id, member in members.items():
    service = services[f"broker{id}"]
    env = service["environment"]
    assert env["ORDERLY_BROKER_NODE_ID"] == str(id), id
    assert env["ORDERLY_BROKER_GROUP"] == "/etc/orderly/group.toml", id
    assert env["ORDERLY_BROKER_ADMIN_TOKEN"], id
    address = service["networks"]["group"]["ipv4_address"]
    assert ipaddress.ip_address(address) in subnet, (id, address)
    # The member binds its group-file addresses: they must be its own.
    for key in ("intake", "fanout", "control", "peer", "admin"):
        assert member[key].split("//")[-1].rsplit(":", 1)[0] == address, (id, key, member[key], address)
    assert member["admin"] in service["healthcheck"]["test"], (id, service["healthcheck"]["test"])
    assert GROUP_MOUNT in service["volumes"], id
for name, env_key in (("w1", "ORDERLY_WORKER_GROUP"), ("producer", "ORDERLY_PRODUCER_GROUP")):
    service = services[name]
    assert service["environment"][env_key] == "/etc/orderly/group.toml", name
    assert GROUP_MOUNT in service["volumes"], name
    assert {f"broker{id}" for id in members} <= set(service["depends_on"]), name
for name in ("broker1", "broker2", "broker3", "w1"):
    service = services[name]
    assert service.get("mem_limit") and service.get("memswap_limit") == service["mem_limit"], name
for name, service in services.items():
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        assert source.startswith("./") or source in doc["volumes"], (name, volume)
PY
        ok "compose-group.yaml: parses; members broker1-3 at group-compose.toml's ids and addresses, w1 and producer on the group file, memory limits (docker compose not installed: not run)"
    else
        bad "compose-group.yaml"
    fi
    check_compose_group_file
    check_compose_group_keys
}

# group-compose.toml is a group file the binaries accept (its members are
# not reachable from here: they are unreachable, not refused).
check_compose_group_file() {
    local out code=0
    out=$(timeout 60 "$BIN/orderly-broker" group status --group "$DEPLOY/group-compose.toml" 2>&1) || code=$?
    if [ "$code" = 1 ] && [ "$(grep -c ' unreachable' <<<"$out")" = 3 ]; then
        ok "group-compose.toml: a valid group file (group status: 3 members, unreachable from here)"
    else
        bad "group-compose.toml: group status exited $code: $out"
    fi
}

# compose-group.yaml's keys service, run here on a temp directory (the
# binaries from $BIN): the keys every service names exist, authorized_keys
# admits each member as `broker N` with the key group-compose.toml gives
# clients for it, and the worker and producer by their ids.
check_compose_group_keys() {
    if ! python3 -c 'import yaml' 2>/dev/null; then
        skip "compose-group.yaml keys service: python3-yaml not installed"
        return
    fi
    local k="$T/compose-keys"
    mkdir -m 700 "$k"
    if PATH="$BIN:$PATH" python3 - "$DEPLOY/compose-group.yaml" "$DEPLOY/group-compose.toml" "$k" \
        >"$T/compose-keys.out" 2>&1 <<'PY'; then
import os, subprocess, sys, tomllib, yaml
doc = yaml.safe_load(open(sys.argv[1]))
group = tomllib.load(open(sys.argv[2], "rb"))
keys = sys.argv[3]
KEYS = "/etc/orderly/keys"
services = doc["services"]
script = services["keys"]["command"][0].replace("$$", "$").replace(KEYS, keys)
for run in (1, 2):  # the second start keeps the keys
    subprocess.run(["sh", "-ec", script], check=True, capture_output=True)
    if run == 1:
        first = {name: open(os.path.join(keys, name)).read() for name in os.listdir(keys)}
assert all(open(os.path.join(keys, name)).read() == text for name, text in first.items()), "a second start changed keys"
local = lambda path: os.path.join(keys, path.removeprefix(KEYS + "/"))
lines = {tuple(line.split()[1:]): line.split()[0] for line in open(os.path.join(keys, "authorized_keys"))}
for member in group["member"]:
    id = member["id"]
    env = services[f"broker{id}"]["environment"]
    assert "ORDERLY_BROKER_ALLOW_INSECURE" not in env, id
    secret = env["ORDERLY_BROKER_CURVE_SECRET_KEY"]
    public = member["public_key"]
    assert secret.removesuffix(".key") == public.removesuffix(".pub"), (id, secret, public)
    assert os.path.exists(local(secret)) and os.path.exists(local(env["ORDERLY_BROKER_AUTHORIZED_KEYS"])), id
    assert lines.get(("broker", str(id))) == open(local(public)).read().strip(), (id, "no matching broker line")
    assert f"keys:{KEYS}:ro" in services[f"broker{id}"]["volumes"], id
for name, prefix, role in (("w1", "ORDERLY_WORKER", "worker"), ("producer", "ORDERLY_PRODUCER", "producer")):
    env = services[name]["environment"]
    secret = env[f"{prefix}_CURVE_SECRET_KEY"]
    public = local(secret).removesuffix(".key") + ".pub"
    assert lines.get((role, env[f"{prefix}_ID"])) == open(public).read().strip(), (name, "no matching line")
    assert f"keys:{KEYS}:ro" in services[name]["volumes"], name
PY
        ok "compose-group.yaml: its keys service (run here) makes a key per member and client, authorized_keys with \`broker N\` lines matching group-compose.toml's public_key, and keeps the keys on a second start"
    else
        bad "compose-group.yaml keys service: $(tail -n 3 "$T/compose-keys.out")"
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
check_group
check_units
check_compose
check_scripts
skip "Dockerfile: not built here (needs a Docker daemon): docker build -f deploy/Dockerfile ."
[ "$failed" = 0 ] && echo "deploy: all checks passed" || echo "deploy: some checks failed"
exit "$failed"
