#!/usr/bin/env bash
# A follower of a broker group of three loses its disk while two --group
# producers send: it is stopped (SIGTERM), its whole data directory
# (Raft log and journal) is deleted, and it starts again empty. It catches
# up from the leader (no snapshots yet: the leader still holds its whole
# log) until its applied index reaches what the leader had committed, and
# the group keeps confirming throughout. Then the leader is killed (-9):
# the wiped member and the other follower are all that is left, so every
# later commit needs the wiped member's log, and one of the two leads.
# Every confirmed order reaches the sinks (check_all), duplicates are
# counted; the failover after the kill is printed (as in 07; fails only
# above 10 s).
#
# Orders in plaintext: --group clients cannot speak CURVE to a group yet
# (lib.sh; 07 runs the CURVE peer check).
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

make_orders "${ORDERS:-6000}"
INPUT_RATE=${INPUT_RATE:-200} # 30 s of sending per producer
group_cluster_up
start_group
start_workers
start_producers --timeout 60
TOTAL=$((ORDERS * ${#PRODUCERS[@]}))
wait_for 60 "a fifth of the orders confirmed" confirmed_at_least $((TOTAL / 5)) || fail "no progress"
find_leader || fail "no leader"
for id in "${GROUP_IDS[@]}"; do [ "$id" = "$LEADER" ] || { WIPED=$id; break; }; done
stop_member "$WIPED"
say "follower $WIPED stopped (exit $MEMBER_EXIT), its data directory ($(du -sh "$WORK/data-$WIPED" | cut -f1)) deleted"
rm -rf "$WORK/data-$WIPED"
before=$(confirmed_count)
sleep 2
[ "$(confirmed_count)" -gt "$before" ] || fail "no confirm while a follower was down"
start_member "$WIPED"
RESTARTED_AT=$SECONDS
wait_caught_up 60 "$WIPED" || fail "the wiped member $WIPED did not catch up: $(member_status_json "$WIPED")"
say "wiped member $WIPED caught up in $((SECONDS - RESTARTED_AT)) s: applied $(member_field "$WIPED" 'v["group"]["applied"]'), leader $LEADER commit $(member_field "$LEADER" 'v["group"]["commit"]')"
before=$(confirmed_count)
wait_for 20 "confirms after the catch-up" confirmed_at_least $((before + 1)) || fail "no confirms after the catch-up"
producers_running || fail "the producers finished before the leader could be killed"
OLD=$LEADER
kill_member "$OLD"
KILLED_AT=$(now)
say "leader $OLD killed (-9) with $(confirmed_count) orders confirmed; left: $WIPED (wiped) and the other follower"
confirms_resume "$KILLED_AT"
others=()
for id in "${GROUP_IDS[@]}"; do [ "$id" = "$OLD" ] || others+=("$id"); done
wait_leader 30 "${others[@]}" || fail "no new leader among ${others[*]}"
failover_verdict "leader kill after the wipe"
say "new leader: member $LEADER ($([ "$LEADER" = "$WIPED" ] && echo "the wiped one" || echo "the other follower; every commit needs the wiped member's log"))"
wait_producers 100
check_all 60
start_member "$OLD"
group_final_check
