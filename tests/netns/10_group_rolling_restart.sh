#!/usr/bin/env bash
# A rolling restart of a broker group of three while two --group producers
# send: members 1, 2 and 3, one after another, get SIGTERM (exit 0
# expected), start again on the same data directory, and the next waits
# until `orderly-broker group status` exits 0 (one leader, a majority
# answering) and the restarted member has applied what the leader had
# committed. Restarting the leader moves the leadership (its time without
# confirms is printed, not judged: 07 and 08 judge failovers). Every
# confirmed order reaches the sinks (check_all), duplicates are counted.
#
# CURVE on every socket, members' own keys in the group file (lib.sh).
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

make_orders "${ORDERS:-7000}"
INPUT_RATE=${INPUT_RATE:-200} # 35 s of sending per producer
group_cluster_up
start_group
start_workers
start_producers --timeout 60
TOTAL=$((ORDERS * ${#PRODUCERS[@]}))
wait_for 60 "orders under way" confirmed_at_least $((TOTAL / 10)) || fail "no progress"
for id in "${GROUP_IDS[@]}"; do
    producers_running || fail "the producers finished before member $id's restart"
    find_leader || wait_leader 30 || fail "no leader before member $id's restart"
    was_leader=$([ "$LEADER" = "$id" ] && echo " (the leader)" || true)
    stopped_at=$(now)
    stop_member "$id"
    [ "$MEMBER_EXIT" = 0 ] || fail "member $id exited $MEMBER_EXIT on SIGTERM: $(tail -n 3 "$(member_log "$id")")"
    start_member "$id"
    if [ -n "$was_leader" ]; then
        confirms_resume "$stopped_at"
        say "leader $id restarted: confirms resumed ${FAILOVER_SECS:-(no stall seen)} s after its SIGTERM"
    fi
    restarted_at=$SECONDS
    wait_for 60 "group status to exit 0 after member $id's restart" group_status ||
        fail "group status after member $id's restart: $(cat "$WORK/group-status.txt")"
    wait_caught_up 60 "$id" || fail "member $id did not catch up: $(member_status_json "$id")"
    say "member $id$was_leader restarted and caught up in $((SECONDS - restarted_at)) s; leader now $LEADER, $(confirmed_count) orders confirmed"
done
wait_producers 100
check_all 60
group_final_check
