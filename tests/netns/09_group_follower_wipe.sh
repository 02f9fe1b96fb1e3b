#!/usr/bin/env bash
# A follower of a broker group of three loses its disk while two --group
# producers send: it is stopped (SIGTERM), its whole data directory
# (Raft log and journal) is deleted, and it starts again empty. It must
# catch up from the leader (from the log, or from a snapshot when the
# log no longer reaches back) until its applied index reaches what the
# leader had committed, while the group keeps confirming. Then the leader
# is killed (-9): the wiped member and the other follower are all that is
# left, so every later commit needs the wiped member's log. Every
# confirmed order reaches the sinks (check_all), duplicates are counted;
# the failover after the kill is printed (as in 07; fails only above
# 10 s).
#
# WIPE_RESTART (default "now"): when the wiped member starts again.
#   now                  at once, under the leader that knew it: its
#                        heartbeats commit only what the member holds
#                        (replication/node.rs, `Node::step`; before that the
#                        member panicked in raft-rs: "to_commit N is out of
#                        range [last_index 0]") and its probe sends the log
#                        again.
#   after-leader-change  the leader is killed while the wiped member is
#                        down (one member of three left: no confirms), then
#                        the wiped member starts empty; a new leader, which
#                        never knew its old log, brings it up, and confirms
#                        resume only once it holds the log. Its stall is
#                        printed as the failover.
#
# CURVE on every socket, members' own keys in the group file (lib.sh).
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

WIPE_RESTART=${WIPE_RESTART:-now}
case $WIPE_RESTART in now | after-leader-change) ;; *) fail "WIPE_RESTART must be now or after-leader-change" ;; esac
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

# wiped_caught_up INDEX: the wiped member runs and has applied INDEX.
BUG=""
wiped_caught_up() {
    if ! kill -0 "${MEMBER_PID[$WIPED]}" 2>/dev/null; then
        BUG=$(grep -m 1 -A 1 "panicked at" "$(member_log "$WIPED")" | tr '\n' ' ')
        return 0 # stop waiting; BUG says why
    fi
    caught_up "$WIPED" "$1"
}

OLD=$LEADER
others=()
for id in "${GROUP_IDS[@]}"; do [ "$id" = "$OLD" ] || others+=("$id"); done
if [ "$WIPE_RESTART" = now ]; then
    start_member "$WIPED"
    restarted_at=$SECONDS
    commit=$(member_field "$LEADER" 'v["group"]["commit"]')
    wait_for 60 "the wiped member $WIPED to apply up to $commit" wiped_caught_up "$commit" ||
        fail "the wiped member $WIPED did not catch up: $(member_status_json "$WIPED")"
    if [ -n "$BUG" ]; then
        say "PRODUCT BUG: the wiped member $WIPED, restarted empty under leader $LEADER, exited: $BUG"
        say "the group goes on with members ${OLD} and the other follower; checking that nothing confirmed is lost"
    else
        say "wiped member $WIPED caught up in $((SECONDS - restarted_at)) s: applied $(member_field "$WIPED" 'v["group"]["applied"]'), leader $LEADER commit $(member_field "$LEADER" 'v["group"]["commit"]')"
        before=$(confirmed_count)
        wait_for 20 "confirms after the catch-up" confirmed_at_least $((before + 1)) || fail "no confirms after the catch-up"
        producers_running || fail "the producers finished before the leader could be killed"
        kill_member "$OLD"
        KILLED_AT=$(now)
        say "leader $OLD killed (-9) with $(confirmed_count) orders confirmed; left: $WIPED (wiped) and the other follower"
        confirms_resume "$KILLED_AT"
        wait_leader 30 "${others[@]}" || fail "no new leader among ${others[*]}"
        failover_verdict "leader kill after the wipe"
    fi
else
    kill_member "$OLD"
    KILLED_AT=$(now)
    say "leader $OLD killed (-9) with $(confirmed_count) orders confirmed while $WIPED is down: one member left, no confirms"
    sleep 3
    start_member "$WIPED"
    say "wiped member $WIPED started empty"
    confirms_resume "$KILLED_AT"
    wait_leader 30 "${others[@]}" || fail "no new leader among ${others[*]}"
    [ -z "$FAILOVER_SECS" ] || say "confirms resumed ${FAILOVER_SECS} s after the kill (the wiped member back after 3 s)"
    commit=$(member_field "$LEADER" 'v["group"]["commit"]')
    wait_for 60 "the wiped member $WIPED to apply up to $commit" wiped_caught_up "$commit" ||
        fail "the wiped member $WIPED did not catch up: $(member_status_json "$WIPED")"
    [ -z "$BUG" ] || fail "the wiped member $WIPED exited: $BUG"
    say "wiped member $WIPED caught up under leader $LEADER: applied $(member_field "$WIPED" 'v["group"]["applied"]')"
    [ -n "$FAILOVER_SECS" ] || fail "confirms did not resume after the wiped member came back"
    RESULT_EXTRA+=", confirms resumed ${FAILOVER_SECS} s after the leader's kill (wiped member back at 3 s)"
fi
[ -n "$BUG" ] || say "leader now: member $LEADER ($([ "$LEADER" = "$WIPED" ] && echo "the wiped one" || echo "every commit needs the wiped member's log"))"
wait_producers 100
check_all 60
if [ -n "$BUG" ]; then
    fail "PRODUCT BUG: a member restarted with an empty data directory under the leader that knew it exits: $BUG (nothing confirmed was lost: see the check above)"
fi
# The killed leader comes back on its own data.
start_member "$OLD"
group_final_check
