#!/usr/bin/env bash
# The three binaries with CURVE: keys made by each binary's keygen, an
# authorized-keys file, orders delivered byte-identical; a producer with an
# unknown key delivers nothing and times out.
source "$(dirname "$0")/../lib.sh"
ORDERS=${ORDERS:-200}
python3 "$HELPERS/orders.py" "$ORDERS" 4 "$WORK/orders.jsonl" "$WORK/expected.json" sec
"$BIN/orderly-broker" keygen --out "$WORK/broker" >/dev/null
"$BIN/orderly-worker" keygen --out "$WORK/w1" >/dev/null
"$BIN/orderly-producer" keygen --out "$WORK/shop" >/dev/null
"$BIN/orderly-producer" keygen --out "$WORK/stranger" >/dev/null
[ "$(stat -c %a "$WORK/shop.key")" = 600 ] || fail "secret key file is not mode 600"
{
    echo "$(cat "$WORK/w1.pub") worker w1"
    echo "$(cat "$WORK/shop.pub") producer shop"
} >"$WORK/authorized_keys"
start_broker --curve-secret-key "$WORK/broker.key" --authorized-keys "$WORK/authorized_keys"
start_worker w1 --concurrency 4 --sink "$WORK/sink" \
    --curve-secret-key "$WORK/w1.key" --broker-public-key "$WORK/broker.pub"
"$BIN/orderly-producer" send --id shop --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl" \
    --curve-secret-key "$WORK/shop.key" --broker-public-key "$(cat "$WORK/broker.pub")" \
    --confirmed-log "$WORK/confirmed.txt" --timeout 20 >"$WORK/producer.log" 2>&1 \
    || fail "producer exited $?: $(tail -n 3 "$WORK/producer.log")"
wait_for 30 "every order delivered" count_cmp -ge "$ORDERS" cat "$WORK/sink/deliveries.log"
python3 "$HELPERS/check_sinks.py" shop "$WORK/expected.json" --exactly-once "$WORK/sink"
if "$BIN/orderly-producer" send --id shop --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl" \
    --curve-secret-key "$WORK/stranger.key" --broker-public-key "$WORK/broker.pub" --timeout 2 \
    >"$WORK/stranger.log" 2>&1; then
    fail "a producer with an unknown key succeeded"
fi
grep -q "no answer from a broker" "$WORK/stranger.log" || fail "unexpected stranger output: $(tail -n 2 "$WORK/stranger.log")"
[ "$(status_field 'v["zap_refused"]')" -ge 1 ] || fail "the broker did not count the refused key"
echo "curve_pipeline: $ORDERS orders over CURVE delivered exactly once; an unknown key was refused"
