use super::*;
use orderly_common::protocol::{Dispatches, Welcome};
use serde_bytes::ByteBuf;

const INTERVAL_MS: u64 = 1000;

fn core(capacity: u32) -> Core {
    Core::new(CoreConfig::new("w1", 7, capacity))
}

fn dispatch(id: &str, attempt: u32) -> FanoutMsg {
    FanoutMsg::Dispatch(Dispatch {
        order: OrderKey::new("p", id),
        attempt,
        redelivered: attempt > 1,
        items: vec![ByteBuf::from(b"{}".to_vec())],
    })
}

fn broker_heartbeat(incarnation: u64) -> FanoutMsg {
    FanoutMsg::Heartbeat(BrokerHeartbeat { incarnation, interval_ms: INTERVAL_MS, member: None, leader: None, term: 0 })
}

fn controls(core: &mut Core) -> Vec<ControlMsg> {
    std::iter::from_fn(|| core.poll_control()).collect()
}

fn jobs(core: &mut Core) -> Vec<OrderKey> {
    std::iter::from_fn(|| core.poll_job()).map(|d| d.order).collect()
}

fn events(core: &mut Core) -> Vec<Event> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

fn heartbeats(msgs: &[ControlMsg]) -> Vec<&Heartbeat> {
    msgs.iter()
        .filter_map(|m| match m {
            ControlMsg::Heartbeat(hb) => Some(hb),
            _ => None,
        })
        .collect()
}

/// Every encoded control message must pass the broker's validation.
fn assert_valid(msgs: &[ControlMsg]) {
    for msg in msgs {
        assert_eq!(&ControlMsg::decode(&msg.encode()).expect("valid control message"), msg);
    }
}

#[test]
fn first_timeout_announces_the_worker() {
    let mut core = core(2);
    assert_eq!(core.poll_timeout(), 0);
    core.handle_timeout(0);
    let out = controls(&mut core);
    assert_valid(&out);
    assert_eq!(
        out,
        vec![ControlMsg::Heartbeat(Heartbeat {
            worker: "w1".into(),
            incarnation: 7,
            capacity: 2,
            in_flight: vec![],
            welcome: None,
            draining: false,
            broken: None,
            dispatches_max: limits::WORKER_DISPATCHES_MAX_DEFAULT,
        })]
    );
}

#[test]
fn welcome_is_echoed_at_once_and_in_later_heartbeats() {
    let mut core = core(1);
    core.handle_timeout(0);
    controls(&mut core);
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce: 99, orders_max: 0 }), 10);
    let out = controls(&mut core);
    assert_eq!(heartbeats(&out).len(), 1);
    assert_eq!(heartbeats(&out)[0].welcome, Some(99));
    core.handle_timeout(10 + INTERVAL_MS);
    assert_eq!(heartbeats(&controls(&mut core))[0].welcome, Some(99));
}

#[test]
fn dispatch_runs_and_duplicate_is_ignored() {
    let mut core = core(2);
    core.handle_fanout(dispatch("o1", 1), 0);
    core.handle_fanout(dispatch("o1", 1), 0);
    assert_eq!(jobs(&mut core), vec![OrderKey::new("p", "o1")]);
    assert_eq!(core.in_flight_len(), 1);
    assert_eq!(core.counters().duplicate_dispatches, 1);
    assert!(events(&mut core).contains(&Event::DuplicateDispatch { order: OrderKey::new("p", "o1"), attempt: 1 }));
}

#[test]
fn duplicate_with_a_later_attempt_is_answered_for_that_attempt() {
    let mut core = core(1);
    core.handle_fanout(dispatch("o1", 1), 0);
    core.handle_fanout(dispatch("o1", 2), 0);
    assert_eq!(jobs(&mut core).len(), 1);
    core.handle_done(OrderKey::new("p", "o1"), 1, Ok(()), 0);
    assert!(matches!(&controls(&mut core)[..], [ControlMsg::Ack(Ack { attempt: 2, .. })]));
}

#[test]
fn done_produces_ack_or_nack() {
    let mut core = core(3);
    for id in ["ok", "again", "never"] {
        core.handle_fanout(dispatch(id, 1), 0);
    }
    assert_eq!(jobs(&mut core).len(), 3);
    core.handle_done(OrderKey::new("p", "ok"), 1, Ok(()), 0);
    core.handle_done(OrderKey::new("p", "again"), 1, Err(Failure::retry("exit code 3")), 0);
    core.handle_done(OrderKey::new("p", "never"), 1, Err(Failure::permanent("bad item")), 0);
    let out = controls(&mut core);
    assert_valid(&out);
    assert_eq!(
        out,
        vec![
            ControlMsg::Ack(Ack { worker: "w1".into(), incarnation: 7, order: OrderKey::new("p", "ok"), attempt: 1 }),
            ControlMsg::Nack(Nack {
                worker: "w1".into(),
                incarnation: 7,
                order: OrderKey::new("p", "again"),
                attempt: 1,
                retry: true,
                reason: "exit code 3".into(),
                delay_ms: None,
                returned: false,
            }),
            ControlMsg::Nack(Nack {
                worker: "w1".into(),
                incarnation: 7,
                order: OrderKey::new("p", "never"),
                attempt: 1,
                retry: false,
                reason: "bad item".into(),
                delay_ms: None,
                returned: false,
            }),
        ]
    );
    assert_eq!(core.in_flight_len(), 0);
    assert_eq!((core.counters().orders_acked, core.counters().orders_nacked), (1, 2));
}

#[test]
fn long_reasons_are_cut_on_a_char_boundary() {
    let mut core = core(1);
    core.handle_fanout(dispatch("o", 1), 0);
    // 'é' is two bytes: an odd limit falls inside one.
    let reason = "é".repeat(REASON_BYTES_MAX);
    core.handle_done(OrderKey::new("p", "o"), 1, Err(Failure::retry(reason)), 0);
    let out = controls(&mut core);
    assert_valid(&out);
    let ControlMsg::Nack(nack) = &out[0] else { panic!("expected a nack: {out:?}") };
    assert!(nack.reason.len() <= REASON_BYTES_MAX);
    assert!(nack.reason.len() >= REASON_BYTES_MAX - 1);
    assert_eq!(truncate_on_char_boundary("aé", 2), "a");
    assert_eq!(truncate_on_char_boundary("abc", 5), "abc");
}

#[test]
fn capacity_is_respected() {
    let mut core = core(2);
    for id in ["a", "b", "c"] {
        core.handle_fanout(dispatch(id, 1), 0);
    }
    assert_eq!(jobs(&mut core), vec![OrderKey::new("p", "a"), OrderKey::new("p", "b")]);
    assert_eq!(core.counters().refused_dispatches, 1);
    assert!(events(&mut core).contains(&Event::Refused {
        order: OrderKey::new("p", "c"),
        attempt: 1,
        why: Refusal::NoCapacity
    }));
    // A freed slot takes the redelivery.
    core.handle_done(OrderKey::new("p", "a"), 1, Ok(()), 0);
    core.handle_fanout(dispatch("c", 2), 0);
    assert_eq!(jobs(&mut core), vec![OrderKey::new("p", "c")]);
}

/// The in-flight list is sorted, whatever order the orders came in and
/// whatever the map's seed: a simulation seed replays exactly.
#[test]
fn heartbeats_list_in_flight_orders_sorted() {
    let mut core = core(16);
    let ids = ["o9", "o1", "o5", "o12", "o3", "o7", "o2", "o10"];
    for id in ids {
        core.handle_fanout(dispatch(id, 1), 0);
    }
    core.handle_timeout(0);
    let msgs = controls(&mut core);
    let listed = &heartbeats(&msgs)[0].in_flight;
    let mut sorted: Vec<OrderKey> = ids.iter().map(|id| OrderKey::new("p", *id)).collect();
    sorted.sort();
    assert_eq!(listed, &sorted);
}

#[test]
fn heartbeats_follow_the_virtual_clock_and_list_in_flight() {
    let mut core = core(4);
    let mut now_ms = 0;
    let mut sent_at = Vec::new();
    core.handle_fanout(dispatch("o1", 1), 0);
    while now_ms <= 3 * INTERVAL_MS {
        core.handle_timeout(now_ms);
        for hb in heartbeats(&controls(&mut core)) {
            assert_eq!(hb.in_flight, vec![OrderKey::new("p", "o1")]);
            sent_at.push(now_ms);
        }
        // Jump to the next wake-up, as the IO loop would sleep until then.
        now_ms = core.poll_timeout().max(now_ms + 1);
    }
    assert_eq!(sent_at, vec![0, INTERVAL_MS, 2 * INTERVAL_MS, 3 * INTERVAL_MS]);
}

#[test]
fn broker_restart_drops_the_welcome_and_reannounces() {
    let mut core = core(1);
    core.handle_fanout(broker_heartbeat(1), 0);
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce: 5, orders_max: 0 }), 1);
    core.handle_fanout(broker_heartbeat(1), 500);
    controls(&mut core);
    core.handle_fanout(broker_heartbeat(2), 600);
    let out = controls(&mut core);
    assert_eq!(heartbeats(&out).len(), 1, "re-announced at once");
    assert_eq!(heartbeats(&out)[0].welcome, None);
    assert_eq!(core.counters().broker_restarts, 1);
    let events = events(&mut core);
    assert!(events.contains(&Event::BrokerFound { incarnation: 1 }));
    assert!(events.contains(&Event::BrokerRestarted { old: 1, new: 2 }));
}

#[test]
fn silent_broker_loses_the_welcome_but_heartbeats_go_on() {
    let mut core = core(1);
    core.handle_fanout(broker_heartbeat(1), 0);
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce: 5, orders_max: 0 }), 0);
    let timeout_ms = INTERVAL_MS * u64::from(limits::HEARTBEAT_LIVENESS_DEFAULT);
    core.handle_timeout(timeout_ms - 1);
    assert_eq!(core.welcome(), Some(5));
    core.handle_timeout(timeout_ms);
    assert_eq!(core.welcome(), None);
    assert_eq!(core.counters().broker_losses, 1);
    assert!(events(&mut core).contains(&Event::BrokerLost { silent_ms: timeout_ms }));
    controls(&mut core);
    core.handle_timeout(timeout_ms + INTERVAL_MS);
    assert_eq!(heartbeats(&controls(&mut core)).len(), 1, "still heartbeating");
    assert_eq!(core.counters().broker_losses, 1, "lost once, not every tick");
    core.handle_fanout(broker_heartbeat(1), timeout_ms + 2 * INTERVAL_MS);
    assert_eq!(events(&mut core), vec![Event::BrokerBack]);
}

#[test]
fn drain_refuses_new_orders_and_finishes_with_bye() {
    let mut core = core(2);
    core.handle_fanout(dispatch("running", 1), 0);
    jobs(&mut core);
    core.start_drain();
    core.handle_fanout(dispatch("new", 1), 0);
    assert!(jobs(&mut core).is_empty());
    assert!(events(&mut core).iter().any(|e| matches!(e, Event::Refused { why: Refusal::Draining, .. })));
    assert!(!core.is_drained());
    core.handle_done(OrderKey::new("p", "running"), 1, Ok(()), 0);
    assert!(core.is_drained());
    assert_eq!(core.bye(), ControlMsg::Bye(Bye { worker: "w1".into(), incarnation: 7 }));
}

#[test]
fn producer_traffic_is_ignored() {
    let mut core = core(1);
    core.handle_fanout(FanoutMsg::Confirm(orderly_common::protocol::Confirm { order: "x".into() }), 0);
    let backpressure =
        orderly_common::protocol::Backpressure { reason: "disk_full".into(), detail: String::new(), interval_ms: 1000 };
    core.handle_fanout(FanoutMsg::Backpressure(backpressure), 0);
    assert!(controls(&mut core).is_empty());
    assert!(jobs(&mut core).is_empty());
}

#[test]
fn acks_back_to_back_are_packed_into_one_message() {
    let mut core = core(3);
    for id in ["a", "b", "c"] {
        core.handle_fanout(dispatch(id, 1), 0);
    }
    jobs(&mut core);
    controls(&mut core);
    core.handle_done(OrderKey::new("p", "a"), 1, Ok(()), 0);
    core.handle_done(OrderKey::new("p", "b"), 1, Err(Failure::retry("x")), 0);
    core.handle_done(OrderKey::new("p", "c"), 1, Ok(()), 0);
    core.handle_timeout(INTERVAL_MS);
    let mut queue = VecDeque::new();
    for msg in controls(&mut core) {
        if let Some(msg) = pack_ack(&mut queue, msg) {
            queue.push_back(msg);
        }
    }
    let kinds: Vec<&str> = queue.iter().map(ControlMsg::kind).collect();
    assert_eq!(kinds, ["ack", "nack", "ack", "heartbeat"], "only acks back to back are packed");
    let mut queue = VecDeque::new();
    for id in ["a", "b", "c"] {
        core.handle_done(OrderKey::new("p", id), 2, Ok(()), 0);
    }
    for msg in controls(&mut core) {
        if let Some(msg) = pack_ack(&mut queue, msg) {
            queue.push_back(msg);
        }
    }
    let [ControlMsg::Acks(acks)] = queue.make_contiguous() else { panic!("one acks message: {queue:?}") };
    assert_eq!(acks.acks.len(), 3);
}

fn nacks(msgs: &[ControlMsg]) -> Vec<&Nack> {
    msgs.iter()
        .filter_map(|m| match m {
            ControlMsg::Nack(nack) => Some(nack),
            _ => None,
        })
        .collect()
}

fn returned(id: &str, attempt: u32, reason: &str) -> Nack {
    Nack {
        worker: "w1".into(),
        incarnation: 7,
        order: OrderKey::new("p", id),
        attempt,
        retry: true,
        reason: reason.into(),
        delay_ms: None,
        returned: true,
    }
}

#[test]
fn a_dispatch_without_a_free_slot_is_returned_at_once() {
    let mut core = core(1);
    core.handle_fanout(dispatch("a", 1), 0);
    controls(&mut core);
    core.handle_fanout(dispatch("b", 3), 0);
    let out = controls(&mut core);
    assert_valid(&out);
    assert_eq!(out, vec![ControlMsg::Nack(returned("b", 3, "refused: no free slot"))]);
    assert_eq!(core.in_flight_len(), 1, "the returned order is not held");
}

#[test]
fn a_dispatch_while_draining_is_returned_at_once() {
    let mut core = core(2);
    core.start_drain();
    core.handle_fanout(dispatch("late", 2), 0);
    let out = controls(&mut core);
    assert_eq!(out, vec![ControlMsg::Nack(returned("late", 2, "refused: the worker is shutting down"))]);
    assert!(events(&mut core).contains(&Event::Refused {
        order: OrderKey::new("p", "late"),
        attempt: 2,
        why: Refusal::Draining
    }));
}

#[test]
fn retry_later_carries_the_delay_clamped() {
    let mut core = core(2);
    core.handle_fanout(dispatch("soon", 1), 0);
    core.handle_fanout(dispatch("huge", 1), 0);
    controls(&mut core);
    core.handle_done(OrderKey::new("p", "soon"), 1, Err(Failure::retry_later("exit code 75", Some(30_000))), 0);
    core.handle_done(OrderKey::new("p", "huge"), 1, Err(Failure::retry_later("exit code 75", Some(u64::MAX))), 0);
    let out = controls(&mut core);
    assert_valid(&out);
    let delays: Vec<_> = nacks(&out).iter().map(|n| (n.delay_ms, n.returned, n.retry)).collect();
    assert_eq!(delays, [(Some(30_000), false, true), (Some(limits::RETRY_DELAY_MS_MAX), false, true)]);
}

/// Runs one order that cannot run at `now_ms`; returns what was sent.
fn break_once(core: &mut Core, id: &str, now_ms: Millis) -> Vec<ControlMsg> {
    core.handle_fanout(dispatch(id, 1), now_ms);
    assert_eq!(jobs(core).len(), 1, "{id} runs");
    core.handle_done(OrderKey::new("p", id), 1, Err(Failure::cannot_run("exit code 127")), now_ms);
    controls(core)
}

#[test]
fn a_handler_that_cannot_run_breaks_the_worker_until_a_probe() {
    let mut core = core(2);
    controls(&mut core);
    let out = break_once(&mut core, "a", 100);
    assert_valid(&out);
    assert_eq!(nacks(&out), [&returned("a", 1, "exit code 127")], "returned, no attempt spent");
    let hb = heartbeats(&out);
    assert_eq!(hb.len(), 1, "the broker is told at once");
    assert_eq!(hb[0].broken.as_deref(), Some("exit code 127"));
    assert_eq!(core.broken(), Some("exit code 127"));
    let broke =
        Event::HandlerBroken { reason: "exit code 127".into(), probes_failed: 0, probe_in_ms: PROBE_DELAY_MS_INITIAL };
    assert!(events(&mut core).contains(&broke));
    // Dispatches that still arrive are returned unrun.
    events(&mut core);
    core.handle_fanout(dispatch("b", 1), 200);
    assert!(jobs(&mut core).is_empty());
    let out = controls(&mut core);
    assert!(nacks(&out)[0].returned && nacks(&out)[0].reason.contains("cannot run"), "{out:?}");
    assert!(matches!(&events(&mut core)[..], [Event::Refused { why: Refusal::Broken, .. }]));
    // Every heartbeat says so until the probe.
    assert_eq!(core.poll_timeout(), 100 + PROBE_DELAY_MS_INITIAL);
    core.handle_timeout(100 + INTERVAL_MS - 1);
    assert!(heartbeats(&controls(&mut core)).iter().all(|hb| hb.broken.is_some()));
    core.handle_timeout(100 + PROBE_DELAY_MS_INITIAL);
    let hb = controls(&mut core);
    assert_eq!(heartbeats(&hb).len(), 1, "an unbroken heartbeat at once");
    assert_eq!(heartbeats(&hb)[0].broken, None);
    assert_eq!(events(&mut core), vec![Event::HandlerProbing]);
    assert_eq!((core.counters().orders_returned, core.counters().orders_nacked), (1, 0));
}

#[test]
fn failed_probes_double_the_delay_up_to_the_cap() {
    let mut core = core(1);
    let mut now_ms = 0;
    let mut delays = Vec::new();
    for n in 0..9 {
        break_once(&mut core, &format!("o{n}"), now_ms);
        let Some(Event::HandlerBroken { probe_in_ms, probes_failed, .. }) =
            events(&mut core).into_iter().find(|e| matches!(e, Event::HandlerBroken { .. }))
        else {
            panic!("broken again");
        };
        assert_eq!(probes_failed, n);
        delays.push(probe_in_ms);
        now_ms = core.health.probe_due_ms.expect("broken");
        core.handle_timeout(now_ms);
        assert_eq!(core.broken(), None, "probing");
    }
    assert_eq!(delays, [1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000]);
    assert_eq!(core.counters().handler_breaks, 9);
}

#[test]
fn a_run_that_starts_resets_the_backoff() {
    for outcome in [Ok(()), Err(Failure::retry("exit code 1"))] {
        let mut core = core(1);
        break_once(&mut core, "a", 0);
        core.handle_timeout(PROBE_DELAY_MS_INITIAL);
        break_once(&mut core, "b", PROBE_DELAY_MS_INITIAL);
        let probe_ms = core.health.probe_due_ms.expect("broken");
        assert_eq!(probe_ms, 3 * PROBE_DELAY_MS_INITIAL, "doubled");
        core.handle_timeout(probe_ms);
        core.handle_fanout(dispatch("c", 1), probe_ms);
        jobs(&mut core);
        core.handle_done(OrderKey::new("p", "c"), 1, outcome.clone(), probe_ms);
        assert!(events(&mut core).contains(&Event::HandlerRecovered), "{outcome:?}");
        // Broken again later: the first delay again, and a loud first line.
        break_once(&mut core, "d", probe_ms + 10);
        let broke = Event::HandlerBroken {
            reason: "exit code 127".into(),
            probes_failed: 0,
            probe_in_ms: PROBE_DELAY_MS_INITIAL,
        };
        assert_eq!(events(&mut core), vec![broke], "{outcome:?}");
    }
}

#[test]
fn orders_running_when_the_handler_breaks_are_returned_and_reported_once() {
    let mut core = core(3);
    for id in ["a", "b", "c"] {
        core.handle_fanout(dispatch(id, 1), 0);
    }
    jobs(&mut core);
    controls(&mut core);
    for id in ["a", "b", "c"] {
        core.handle_done(OrderKey::new("p", id), 1, Err(Failure::cannot_run("exit code 126")), 5);
    }
    let out = controls(&mut core);
    assert_eq!(nacks(&out).iter().filter(|n| n.returned).count(), 3);
    let breaks = events(&mut core).into_iter().filter(|e| matches!(e, Event::HandlerBroken { .. })).count();
    assert_eq!(breaks, 1, "one report per break, not per order");
    assert_eq!(core.health.probe_due_ms, Some(5 + PROBE_DELAY_MS_INITIAL), "one backoff step, not three");
}

// ------------------------------------------------------------ groups

fn group_core() -> Core {
    use orderly_common::members::{Member, Members};
    let endpoint = |port: u16| format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let members = (1..=3).map(|id| Member {
        id,
        intake: endpoint(1),
        fanout: endpoint(2),
        control: endpoint(3),
        public_key: None,
    });
    Core::in_group(CoreConfig::new("w1", 7, 2), &Members::new(members.collect()).unwrap())
}

/// A heartbeat of `member` (incarnation 100 + id) naming `leader` in `term`.
fn announce(member: u64, leader: u64, term: u64) -> FanoutMsg {
    FanoutMsg::Heartbeat(BrokerHeartbeat {
        incarnation: 100 + member,
        interval_ms: INTERVAL_MS,
        member: Some(member),
        leader: Some(leader),
        term,
    })
}

/// A group core following member 1 (term 1), welcomed by it.
fn welcomed_by_member_1() -> Core {
    let mut core = group_core();
    core.handle_timeout(0);
    core.handle_fanout(announce(1, 1, 1), 10);
    assert_eq!(core.poll_leader(), Some(1));
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce: 5, orders_max: 0 }), 20);
    controls(&mut core);
    events(&mut core);
    core
}

#[test]
fn a_new_leader_is_announced_to_at_once_without_the_old_welcome() {
    let mut core = welcomed_by_member_1();
    assert_eq!(core.welcome(), Some(5));
    // Well before the next heartbeat is due (at 1020 ms).
    core.handle_fanout(announce(3, 2, 2), 30); // a follower names the new leader
    assert_eq!((core.poll_leader(), core.leader()), (Some(2), Some(2)));
    let out = controls(&mut core);
    assert_eq!(heartbeats(&out).len(), 1, "a heartbeat at once: {out:?}");
    assert_eq!(heartbeats(&out)[0].welcome, None, "the new leader welcomes us anew");
    assert_eq!(events(&mut core), [Event::LeaderChanged { leader: 2, term: 2 }]);
    assert_eq!(core.counters().leader_changes, 2);
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce: 6, orders_max: 0 }), 40);
    assert_eq!(heartbeats(&controls(&mut core))[0].welcome, Some(6));
}

#[test]
fn the_deposed_leader_and_the_followers_heartbeats_change_nothing() {
    let mut core = welcomed_by_member_1();
    core.handle_fanout(announce(2, 2, 2), 30);
    core.poll_leader();
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce: 6, orders_max: 0 }), 40);
    controls(&mut core);
    events(&mut core);
    // The old leader in its old term, and followers with incarnations of
    // their own: no leader change, no "broker restarted".
    core.handle_fanout(announce(1, 1, 1), 50);
    core.handle_fanout(announce(3, 2, 2), 60);
    core.handle_fanout(announce(2, 2, 2), 70);
    assert_eq!(core.poll_leader(), None);
    assert_eq!(core.welcome(), Some(6));
    assert!(controls(&mut core).is_empty());
    assert!(events(&mut core).is_empty());
    // The leader itself restarting (same term) is still a restart.
    let restarted = FanoutMsg::Heartbeat(BrokerHeartbeat {
        incarnation: 999,
        interval_ms: INTERVAL_MS,
        member: Some(2),
        leader: Some(2),
        term: 2,
    });
    core.handle_fanout(restarted, 80);
    assert_eq!(core.welcome(), None);
    assert_eq!(core.counters().broker_restarts, 1);
}

#[test]
fn a_deposed_leaders_dispatch_runs_and_its_ack_goes_out() {
    let mut core = welcomed_by_member_1();
    core.handle_fanout(announce(2, 2, 2), 30);
    controls(&mut core);
    // Member 1 dispatched before it learned it was deposed.
    core.handle_fanout(dispatch("late", 1), 40);
    assert_eq!(jobs(&mut core), [OrderKey::new("p", "late")]);
    core.handle_done(OrderKey::new("p", "late"), 1, Ok(()), 50);
    assert!(controls(&mut core).iter().any(|m| matches!(m, ControlMsg::Ack(ack) if ack.order.id == "late")));
}

/// Each entry of a `dispatches` message goes the way a lone dispatch
/// does: run while a slot is free, a duplicate answered for its latest
/// attempt, the rest returned unrun, one by one.
#[test]
fn each_entry_of_a_batch_is_a_dispatch() {
    let mut core = core(2);
    core.handle_fanout(dispatch("a", 1), 0);
    let entry = |id: &str, attempt| {
        let FanoutMsg::Dispatch(d) = dispatch(id, attempt) else { unreachable!() };
        d
    };
    let batch = Dispatches { dispatches: vec![entry("a", 2), entry("b", 1), entry("c", 1)] };
    core.handle_fanout(FanoutMsg::Dispatches(batch), 0);
    assert_eq!(jobs(&mut core), vec![OrderKey::new("p", "a"), OrderKey::new("p", "b")]);
    assert_eq!(core.counters().duplicate_dispatches, 1);
    assert_eq!(core.counters().refused_dispatches, 1);
    let returned: Vec<_> = controls(&mut core)
        .into_iter()
        .filter_map(|m| match m {
            ControlMsg::Nack(n) if n.returned => Some(n.order.id),
            _ => None,
        })
        .collect();
    assert_eq!(returned, ["c"]);
    // The duplicate is answered for the attempt the broker waits for.
    core.handle_done(OrderKey::new("p", "a"), 1, Ok(()), 0);
    let acks: Vec<_> = controls(&mut core)
        .into_iter()
        .filter_map(|m| match m {
            ControlMsg::Ack(a) => Some(a.attempt),
            _ => None,
        })
        .collect();
    assert_eq!(acks, [2]);
}

#[test]
fn heartbeats_advertise_dispatches_max_within_the_limit() {
    for (configured, sent) in [(0, 0), (64, 64), (u32::MAX, limits::DISPATCHES_PER_MESSAGE_MAX as u32)] {
        let mut core = Core::new(CoreConfig { dispatches_max: configured, ..CoreConfig::new("w1", 7, 2) });
        core.handle_timeout(0);
        let out = controls(&mut core);
        assert_eq!(heartbeats(&out)[0].dispatches_max, sent, "configured {configured}");
    }
}
