use super::*;
use orderly_common::protocol::{
    Ack, Acked, Acks, Begin, Bye, Confirm, Confirms, ControlMsg, FanoutMsg, Finish, Heartbeat, IntakeMsg, Item, Items,
    Nack, Reject, RejectReason,
};

fn core() -> Core {
    Core::new(CoreConfig::with_incarnation(42))
}

fn begin(order: &str) -> IntakeMsg {
    IntakeMsg::Begin(Begin { producer: "p".into(), order: order.into() })
}

fn item(order: &str, seq: u32) -> IntakeMsg {
    IntakeMsg::Item(Item { producer: "p".into(), order: order.into(), seq, data: ByteBuf::from(vec![seq as u8; 3]) })
}

fn finish(order: &str, count: u32) -> IntakeMsg {
    IntakeMsg::Finish(Finish { producer: "p".into(), order: order.into(), count })
}

fn send_order(core: &mut Core, order: &str, items: u32) {
    core.handle_intake(begin(order), 0);
    for seq in 0..items {
        core.handle_intake(item(order, seq), 0);
    }
    core.handle_intake(finish(order, items), 0);
}

fn heartbeat(worker: &str, capacity: u32, welcome: Option<u64>) -> ControlMsg {
    ControlMsg::Heartbeat(Heartbeat {
        worker: worker.into(),
        incarnation: 1,
        capacity,
        in_flight: vec![],
        welcome,
        draining: false,
        broken: None,
        dispatches_max: 0,
    })
}

/// Events and published messages; a `confirms` message is listed as the
/// `confirm`s it stands for.
fn drain(core: &mut Core) -> (Vec<Event>, Vec<(String, FanoutMsg)>) {
    let events = std::iter::from_fn(|| core.poll_event()).collect();
    let out = std::iter::from_fn(|| core.poll_outbound())
        .flat_map(|o| {
            let topic = String::from_utf8(o.topic.to_vec()).unwrap();
            match FanoutMsg::decode(&o.body).unwrap() {
                FanoutMsg::Confirms(c) => c
                    .orders
                    .into_iter()
                    .map(|order| (topic.clone(), FanoutMsg::Confirm(Confirm { order })))
                    .collect::<Vec<_>>(),
                msg => vec![(topic, msg)],
            }
        })
        .collect();
    (events, out)
}

/// Registers a worker and completes the welcome handshake.
fn ready_worker(core: &mut Core, worker: &str, capacity: u32, now_ms: Millis) {
    core.handle_control(heartbeat(worker, capacity, None), now_ms);
    let (_, out) = drain(core);
    let nonce = out
        .iter()
        .find_map(|(topic, m)| match m {
            FanoutMsg::Welcome(w) if *topic == format!("w/{worker}/") => Some(w.nonce),
            _ => None,
        })
        .expect("welcome published on the worker's topic");
    core.handle_control(heartbeat(worker, capacity, Some(nonce)), now_ms);
}

fn dispatches(out: &[(String, FanoutMsg)]) -> Vec<(String, OrderKey, u32)> {
    out.iter()
        .filter_map(|(topic, m)| match m {
            FanoutMsg::Dispatch(d) => Some((topic.clone(), d.order.clone(), d.attempt)),
            _ => None,
        })
        .collect()
}

#[test]
fn aggregates_items_into_one_order_and_confirms() {
    let mut core = core();
    send_order(&mut core, "o1", 3);
    let (events, out) = drain(&mut core);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Sealed { key, count: 3, .. } if *key == OrderKey::new("p", "o1"))));
    assert_eq!(out, vec![("p/p/".to_string(), FanoutMsg::Confirm(Confirm { order: "o1".into() }))]);
    assert_eq!(core.status().pending_orders, 1);
    // 9 payload bytes, and the per-item charge for each of the 3 items.
    assert_eq!(core.status().held_bytes, 9 + 3 * limits::ITEM_OVERHEAD_BYTES);
}

/// The producer's confirm leaves before the dispatch sealed in the same
/// turn: it is what the producer waits on, and the worker shares the cores.
#[test]
fn a_turn_s_confirms_are_published_before_its_dispatches() {
    let mut core = core();
    ready_worker(&mut core, "w1", 4, 0);
    drain(&mut core);
    send_order(&mut core, "o1", 2);
    let (_, out) = drain(&mut core);
    let kinds: Vec<&str> = out.iter().map(|(_, m)| m.kind()).collect();
    assert_eq!(kinds, ["confirm", "dispatch"], "{out:?}");
}

#[test]
fn items_out_of_order_still_seal_in_sequence() {
    let mut core = core();
    ready_worker(&mut core, "w1", 1, 0);
    core.handle_intake(begin("o"), 0);
    for seq in [2, 0, 1] {
        core.handle_intake(item("o", seq), 0);
    }
    core.handle_intake(finish("o", 3), 0);
    let (_, out) = drain(&mut core);
    let FanoutMsg::Dispatch(d) = &out.iter().find(|(_, m)| matches!(m, FanoutMsg::Dispatch(_))).unwrap().1 else {
        unreachable!()
    };
    assert_eq!(d.items, vec![ByteBuf::from(vec![0; 3]), ByteBuf::from(vec![1; 3]), ByteBuf::from(vec![2; 3])]);
}

#[test]
fn a_gap_is_rejected_never_sealed() {
    let mut core = core();
    core.handle_intake(begin("o"), 0);
    core.handle_intake(item("o", 0), 0);
    core.handle_intake(item("o", 2), 0);
    core.handle_intake(finish("o", 3), 0);
    let (events, out) = drain(&mut core);
    assert!(!events.iter().any(|e| matches!(e, Event::Sealed { .. })));
    assert!(events.contains(&Event::Dropped { key: OrderKey::new("p", "o"), reason: RejectReason::Gap { missing: 1 } }));
    assert_eq!(
        out.last().unwrap().1,
        FanoutMsg::Reject(Reject { order: "o".into(), reason: RejectReason::Gap { missing: 1 } })
    );
    let status = core.status();
    assert_eq!((status.partial_orders, status.pending_orders, status.held_bytes), (0, 0, 0));
}

#[test]
fn items_beyond_the_count_are_rejected() {
    let mut core = core();
    send_order(&mut core, "o", 3);
    drain(&mut core);
    core.handle_intake(begin("x"), 0);
    for seq in 0..3 {
        core.handle_intake(item("x", seq), 0);
    }
    core.handle_intake(finish("x", 2), 0);
    let (_, out) = drain(&mut core);
    assert!(matches!(&out[0].1, FanoutMsg::Reject(r) if r.reason == RejectReason::ExtraItem { count: 2, seq: 2 }));
}

#[test]
fn finish_without_begin_is_rejected_and_a_resent_order_confirmed_again() {
    let mut core = core();
    core.handle_intake(finish("nope", 1), 0);
    let (_, out) = drain(&mut core);
    assert!(matches!(&out[0].1, FanoutMsg::Reject(r) if r.reason == RejectReason::UnknownOrder));
    send_order(&mut core, "o", 2);
    send_order(&mut core, "o", 2);
    let (events, out) = drain(&mut core);
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Sealed { .. })).count(), 1);
    assert_eq!(out.iter().filter(|(_, m)| matches!(m, FanoutMsg::Confirm(_))).count(), 2);
    assert_eq!(core.status().pending_orders, 1);
}

#[test]
fn nothing_is_dispatched_before_the_welcome_is_echoed() {
    let mut core = core();
    core.handle_control(heartbeat("w1", 4, None), 0);
    send_order(&mut core, "o", 1);
    let (_, out) = drain(&mut core);
    assert!(dispatches(&out).is_empty());
    // A wrong echo is not enough either; the welcome is repeated.
    core.handle_control(heartbeat("w1", 4, Some(12345)), 10);
    let (_, out) = drain(&mut core);
    assert!(dispatches(&out).is_empty());
    assert!(matches!(out[0].1, FanoutMsg::Welcome(_)));
}

#[test]
fn the_worker_with_most_free_credits_gets_the_order_and_capacity_is_never_exceeded() {
    let mut core = core();
    ready_worker(&mut core, "w1", 1, 0);
    ready_worker(&mut core, "w2", 3, 0);
    drain(&mut core);
    for n in 0..6 {
        send_order(&mut core, &format!("o{n}"), 1);
    }
    let (_, out) = drain(&mut core);
    let topics: Vec<String> = dispatches(&out).into_iter().map(|(t, _, _)| t).collect();
    // Most free credits first (w2 3, w2 2), then a 1-1 tie goes to the
    // lowest id; 4 credits in all, so 2 orders wait.
    assert_eq!(topics, ["w/w2/", "w/w2/", "w/w1/", "w/w2/"]);
    let status = core.status();
    assert_eq!((status.in_flight_orders, status.pending_orders), (4, 2));
    // An ack frees a credit at once.
    let ack = ControlMsg::Ack(Ack { worker: "w1".into(), incarnation: 1, order: OrderKey::new("p", "o2"), attempt: 1 });
    core.handle_control(ack, 5);
    let (events, out) = drain(&mut core);
    assert!(events.contains(&Event::Acked { key: OrderKey::new("p", "o2") }));
    assert_eq!(dispatches(&out), vec![("w/w1/".into(), OrderKey::new("p", "o4"), 1)]);
}

#[test]
fn duplicate_acks_are_counted_and_harmless() {
    let mut core = core();
    ready_worker(&mut core, "w1", 1, 0);
    send_order(&mut core, "o", 1);
    let ack = ControlMsg::Ack(Ack { worker: "w1".into(), incarnation: 1, order: OrderKey::new("p", "o"), attempt: 1 });
    core.handle_control(ack.clone(), 1);
    core.handle_control(ack, 2);
    assert_eq!(core.counters().orders_acked, 1);
    assert_eq!(core.counters().duplicate_acks, 1);
}

#[test]
fn the_core_times_queue_wait_and_handlers_and_the_confirms_it_releases() {
    let mut core = core();
    send_order(&mut core, "o", 1); // sealed at 0, no worker yet
    drain(&mut core);
    let confirms = core.take_confirm_timing().expect("the confirm's timing, released with it");
    assert_eq!((confirms.read_ms, confirms.orders), (0, 1));
    assert_eq!(core.take_confirm_timing(), None, "taken once");
    ready_worker(&mut core, "w1", 1, 40); // dispatched at 40: waited 40 ms
    let key = OrderKey::new("p", "o");
    let nack = Nack {
        worker: "w1".into(),
        incarnation: 1,
        order: key.clone(),
        attempt: 1,
        retry: true,
        reason: "busy".into(),
        delay_ms: Some(500),
        returned: false,
    };
    core.handle_control(ControlMsg::Nack(nack), 140); // delayed until 640
    core.handle_timeout(700); // its wait starts when the delay ends: 60 ms
    let ack = ControlMsg::Ack(Ack { worker: "w1".into(), incarnation: 1, order: key, attempt: 2 });
    core.handle_control(ack.clone(), 1_700); // the handler took 1 s
    core.handle_control(ack, 1_800); // a duplicate: not timed
    let timings = core.timings();
    assert_eq!(timings.queue_wait.count(), 2);
    assert_eq!(timings.queue_wait.sum_us(), 100_000);
    assert_eq!(timings.handler.count(), 1, "a nack ends no handler timing; the duplicate ack is not timed");
    assert_eq!(timings.handler.sum_us(), 1_000_000);
}

#[test]
fn nacks_redeliver_then_dead_letter_after_max_attempts() {
    let mut core = Core::new(CoreConfig { retry_delay_initial_ms: 0, ..CoreConfig::with_incarnation(42) });
    ready_worker(&mut core, "w1", 1, 0);
    send_order(&mut core, "o", 1);
    let key = OrderKey::new("p", "o");
    for attempt in 1..=MAX {
        let (_, out) = drain(&mut core);
        assert_eq!(dispatches(&out), vec![("w/w1/".into(), key.clone(), attempt)]);
        let nack = Nack {
            worker: "w1".into(),
            incarnation: 1,
            order: key.clone(),
            attempt,
            retry: true,
            reason: "exit 1".into(),
            delay_ms: None,
            returned: false,
        };
        core.handle_control(ControlMsg::Nack(nack), 1);
    }
    let (events, out) = drain(&mut core);
    assert!(dispatches(&out).is_empty());
    assert!(matches!(events.last(), Some(Event::DeadLettered { reason, .. }) if reason.contains("exit 1")));
    assert_eq!(core.status().dead_letters, 1);
    const MAX: u32 = limits::MAX_ATTEMPTS_DEFAULT;
}

#[test]
fn a_nack_without_retry_dead_letters_at_once() {
    let mut core = core();
    ready_worker(&mut core, "w1", 1, 0);
    send_order(&mut core, "o", 1);
    let nack = Nack {
        worker: "w1".into(),
        incarnation: 1,
        order: OrderKey::new("p", "o"),
        attempt: 1,
        retry: false,
        reason: "bad".into(),
        delay_ms: None,
        returned: false,
    };
    core.handle_control(ControlMsg::Nack(nack), 1);
    assert_eq!(core.status().dead_letters, 1);
}

fn nack_for_good(order: &str) -> ControlMsg {
    let order = OrderKey::new("p", order);
    ControlMsg::Nack(Nack {
        worker: "w1".into(),
        incarnation: 1,
        order,
        attempt: 1,
        retry: false,
        reason: "bad".into(),
        delay_ms: None,
        returned: false,
    })
}

#[test]
fn dead_letters_page_in_key_order_and_a_discard_is_remembered_like_an_ack() {
    let mut core = core();
    ready_worker(&mut core, "w1", 8, 0);
    for id in ["c", "a", "b"] {
        send_order(&mut core, id, 1);
    }
    for id in ["c", "a", "b"] {
        core.handle_control(nack_for_good(id), 1);
    }
    let first = core.dead_letters_page(None, 2);
    assert_eq!(first.total, 3);
    let ids: Vec<&str> = first.dead_letters.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(first.dead_letters[0].last_worker.as_deref(), Some("w1"));
    let next = first.next_after.expect("a second page");
    let second = core.dead_letters_page(Some(&next), 2);
    assert_eq!(second.dead_letters.len(), 1);
    assert_eq!(second.next_after, None);
    assert_eq!(core.order_info(&OrderKey::new("p", "a")).map(|i| i.place), Some(OrderPlace::Dead));

    assert_eq!(core.discard_dead(Some(&OrderKey::new("p", "a")), 2), 1);
    assert_eq!(core.discard_dead(Some(&OrderKey::new("p", "a")), 2), 0, "gone already");
    assert_eq!(core.status().dead_letters, 2);
    assert!(core.order_info(&OrderKey::new("p", "a")).is_none());
    // A late resend of a deleted order is confirmed, not sealed again.
    let sealed = core.counters().orders_sealed;
    send_order(&mut core, "a", 1);
    assert_eq!(core.counters().orders_sealed, sealed);
    assert_eq!(core.discard_dead(None, 3), 2);
    assert_eq!(core.status().dead_letters, 0);
    assert_eq!(core.counters().orders_discarded, 3);
}

#[test]
fn a_silent_worker_is_declared_dead_and_its_orders_move() {
    let mut core = core();
    ready_worker(&mut core, "w1", 1, 0);
    ready_worker(&mut core, "w2", 1, 0);
    send_order(&mut core, "o", 1);
    let (_, out) = drain(&mut core);
    assert_eq!(dispatches(&out)[0].0, "w/w1/");
    // w2 keeps beating, w1 falls silent.
    let timeout = 3000;
    core.handle_control(heartbeat("w2", 1, None), timeout - 1);
    assert!(core.poll_timeout() <= timeout);
    core.handle_timeout(timeout);
    let (_, out) = drain(&mut core);
    assert_eq!(dispatches(&out), vec![("w/w2/".into(), OrderKey::new("p", "o"), 2)]);
    assert_eq!(core.counters().workers_expired, 1);
}

#[test]
fn a_restarted_worker_loses_its_old_orders_at_once() {
    let mut core = core();
    ready_worker(&mut core, "w1", 1, 0);
    send_order(&mut core, "o", 1);
    drain(&mut core);
    let restarted = ControlMsg::Heartbeat(Heartbeat {
        worker: "w1".into(),
        incarnation: 2,
        capacity: 1,
        in_flight: vec![],
        welcome: None,
        draining: false,
        broken: None,
        dispatches_max: 0,
    });
    core.handle_control(restarted, 5);
    let (events, _) = drain(&mut core);
    assert!(matches!(&events[0], Event::Requeued { reason, .. } if reason.contains("restarted")));
    assert_eq!(core.status().pending_orders, 1);
}

#[test]
fn bye_removes_the_worker() {
    let mut core = core();
    ready_worker(&mut core, "w1", 1, 0);
    core.handle_control(ControlMsg::Bye(Bye { worker: "w1".into(), incarnation: 1 }), 1);
    assert!(core.status().workers.is_empty());
}

#[test]
fn partial_orders_expire() {
    let mut core = Core::new(CoreConfig { partial_age_max_ms: 100, ..CoreConfig::with_incarnation(1) });
    core.handle_intake(begin("o"), 0);
    core.handle_timeout(50);
    assert_eq!(core.status().partial_orders, 1);
    core.handle_timeout(1_500);
    let (_, out) = drain(&mut core);
    assert!(out
        .iter()
        .any(|(_, m)| matches!(m, FanoutMsg::Reject(r) if matches!(r.reason, RejectReason::Expired { .. }))));
    assert_eq!(core.status().partial_orders, 0);
}

#[test]
fn partial_orders_do_not_age_while_a_full_disk_stops_intake() {
    // Heartbeat interval 1 s: the partial sweep runs at most once a second.
    let mut core = Core::new(CoreConfig { partial_age_max_ms: 3_000, ..CoreConfig::with_incarnation(1) });
    core.handle_intake(begin("o"), 0);
    core.handle_timeout(1_000);
    core.set_disk_paused(true, 1_000);
    // Paused for 9 s: far past the age limit, but its producer is blocked
    // by the broker's own unread queue.
    core.handle_timeout(5_000);
    core.handle_timeout(10_000);
    assert_eq!(core.status().partial_orders, 1);
    core.set_disk_paused(false, 10_000);
    // It keeps the two seconds it had left ...
    core.handle_timeout(11_000);
    assert_eq!(core.status().partial_orders, 1);
    // ... and expires after them.
    core.handle_timeout(12_500);
    assert_eq!(core.status().partial_orders, 0);
}

#[test]
fn intake_closes_at_a_bound() {
    let mut core = Core::new(CoreConfig { pending_orders_max: 2, ..CoreConfig::with_incarnation(1) });
    send_order(&mut core, "a", 1);
    assert!(core.intake_open());
    assert_eq!(core.intake_closed(), None);
    send_order(&mut core, "b", 1);
    assert!(!core.intake_open());
    let closed = core.intake_closed().expect("a reason");
    assert_eq!(closed.reason, orderly_common::protocol::backpressure::PENDING_ORDERS);
    assert_eq!(closed.detail, "2 orders await workers (limit 2)");
}

#[test]
fn oversized_orders_are_rejected() {
    let mut core = core();
    core.handle_intake(begin("big"), 0);
    let chunk = ByteBuf::from(vec![0u8; limits::ITEM_BYTES_MAX]);
    for seq in 0..=(ORDER_BYTES_MAX / limits::ITEM_BYTES_MAX) as u32 {
        core.handle_intake(
            IntakeMsg::Item(Item { producer: "p".into(), order: "big".into(), seq, data: chunk.clone() }),
            0,
        );
    }
    let (_, out) = drain(&mut core);
    assert!(out
        .iter()
        .any(|(_, m)| matches!(m, FanoutMsg::Reject(r) if matches!(r.reason, RejectReason::TooLarge { .. }))));
    assert_eq!(core.status().held_bytes, 0);
}

#[test]
fn replaying_the_events_rebuilds_the_same_orders() {
    let mut live = core();
    ready_worker(&mut live, "w1", 2, 0);
    for n in 0..5 {
        send_order(&mut live, &format!("o{n}"), 2);
    }
    live.handle_intake(begin("partial"), 0);
    live.handle_intake(item("partial", 0), 0);
    let ack = ControlMsg::Ack(Ack { worker: "w1".into(), incarnation: 1, order: OrderKey::new("p", "o0"), attempt: 1 });
    live.handle_control(ack, 1);
    let (events, _) = drain(&mut live);
    let mut replayed = core();
    for event in &events {
        replayed.apply(event);
    }
    let (a, b) = (live.status(), replayed.status());
    assert_eq!(
        (a.partial_orders, a.pending_orders + a.in_flight_orders, a.held_bytes),
        (b.partial_orders, b.pending_orders + b.in_flight_orders, b.held_bytes)
    );
}

#[test]
fn a_dispatch_the_worker_does_not_list_is_requeued_after_a_grace() {
    let mut core = core();
    ready_worker(&mut core, "w1", 1, 0);
    send_order(&mut core, "o", 1);
    drain(&mut core);
    // Within the grace the worker may simply not have received it yet.
    core.handle_control(heartbeat("w1", 1, None), 2_000);
    assert_eq!(core.status().in_flight_orders, 1);
    // Listed: kept.
    let holding = ControlMsg::Heartbeat(Heartbeat {
        worker: "w1".into(),
        incarnation: 1,
        capacity: 1,
        in_flight: vec![OrderKey::new("p", "o")],
        welcome: None,
        draining: false,
        broken: None,
        dispatches_max: 0,
    });
    core.handle_control(holding, 4_500);
    assert_eq!(core.status().in_flight_orders, 1);
    // Not listed after the grace (liveness + 1 intervals): lost, so
    // delivered again.
    core.handle_control(heartbeat("w1", 1, None), 4_600);
    let (events, out) = drain(&mut core);
    assert!(matches!(&events[0], Event::Requeued { reason, .. } if reason.contains("does not hold")));
    // A lost dispatch spent no attempt: the next one is attempt 1 again.
    assert_eq!(dispatches(&out), vec![("w/w1/".into(), OrderKey::new("p", "o"), 1)]);
}

#[test]
fn a_draining_worker_gets_nothing_new() {
    let mut core = core();
    ready_worker(&mut core, "w1", 4, 0);
    let draining = ControlMsg::Heartbeat(Heartbeat {
        worker: "w1".into(),
        incarnation: 1,
        capacity: 4,
        in_flight: vec![],
        welcome: None,
        draining: true,
        broken: None,
        dispatches_max: 0,
    });
    core.handle_control(draining, 1);
    send_order(&mut core, "o", 1);
    let (_, out) = drain(&mut core);
    assert!(dispatches(&out).is_empty());
    assert_eq!(core.status().pending_orders, 1);
}

#[test]
fn a_resend_after_the_ack_is_confirmed_again_not_processed_twice() {
    let mut core = core();
    ready_worker(&mut core, "w1", 1, 0);
    send_order(&mut core, "o", 2);
    let ack = ControlMsg::Ack(Ack { worker: "w1".into(), incarnation: 1, order: OrderKey::new("p", "o"), attempt: 1 });
    core.handle_control(ack, 10);
    drain(&mut core);
    for _ in 0..2 {
        send_order(&mut core, "o", 2);
    }
    let (events, out) = drain(&mut core);
    assert!(!events.iter().any(|e| matches!(e, Event::Begun { .. } | Event::Sealed { .. })), "{events:?}");
    assert_eq!(out.iter().filter(|(_, m)| matches!(m, FanoutMsg::Confirm(_))).count(), 2);
    assert!(dispatches(&out).is_empty());
    assert_eq!(core.counters().orders_deduplicated, 2);
}

#[test]
fn keys_leave_the_dedup_window_and_survive_replay_until_then() {
    let config = CoreConfig { dedup_window_ms: 5_000, ..CoreConfig::with_incarnation(1) };
    let mut core = Core::new(config.clone());
    ready_worker(&mut core, "w1", 1, 0);
    send_order(&mut core, "o", 1);
    let ack = ControlMsg::Ack(Ack { worker: "w1".into(), incarnation: 1, order: OrderKey::new("p", "o"), attempt: 1 });
    core.handle_control(ack, 10);
    let (journal, _) = drain(&mut core);
    // Replayed, the key is still remembered.
    let mut replayed = Core::new(config);
    replayed.start_replay(1_000);
    journal.iter().for_each(|e| replayed.apply(e));
    assert_eq!(replayed.remembered_keys(), 1);
    // Past the window it is forgotten (recorded), and a resend is new work.
    core.handle_timeout(10_000);
    let (events, _) = drain(&mut core);
    assert!(events.contains(&Event::Forgotten { key: OrderKey::new("p", "o") }));
    send_order(&mut core, "o", 1);
    let (events, _) = drain(&mut core);
    assert!(events.iter().any(|e| matches!(e, Event::Sealed { .. })));
}

#[test]
fn one_producer_cannot_hold_every_partial_slot() {
    let mut core = Core::new(CoreConfig { partial_orders_per_producer_max: 2, ..CoreConfig::with_incarnation(1) });
    for order in ["a", "b", "c"] {
        core.handle_intake(begin(order), 0);
    }
    let (_, out) = drain(&mut core);
    assert!(
        matches!(&out[..], [(_, FanoutMsg::Reject(r))] if r.order == "c" && matches!(r.reason, RejectReason::LimitReached { .. }))
    );
    // Another producer is not affected.
    core.handle_intake(IntakeMsg::Begin(Begin { producer: "q".into(), order: "a".into() }), 0);
    assert_eq!(core.status().partial_orders, 3);
}

#[test]
fn configured_order_limits_reject_with_too_large() {
    let mut core = Core::new(CoreConfig { order_bytes_max: 5, order_items_max: 2, ..CoreConfig::with_incarnation(1) });
    send_order(&mut core, "bytes", 2); // 6 bytes
    send_order(&mut core, "items", 3);
    let (_, out) = drain(&mut core);
    let rejected: Vec<&str> = out
        .iter()
        .filter_map(|(_, m)| match m {
            FanoutMsg::Reject(r) if matches!(r.reason, RejectReason::TooLarge { .. }) => Some(r.order.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(rejected, ["bytes", "items"]);
}

#[test]
fn a_restart_during_the_last_attempt_dead_letters_instead_of_redelivering() {
    let config = CoreConfig { max_attempts: 1, ..CoreConfig::with_incarnation(1) };
    let mut live = Core::new(config.clone());
    ready_worker(&mut live, "w1", 1, 0);
    send_order(&mut live, "o", 0);
    let (journal, out) = drain(&mut live);
    assert_eq!(dispatches(&out).len(), 1);
    let mut restarted = Core::new(CoreConfig { incarnation: 2, ..config });
    restarted.start_replay(100);
    journal.iter().for_each(|e| restarted.apply(e));
    restarted.finish_recovery(100);
    let (events, _) = drain(&mut restarted);
    assert!(events.iter().any(|e| matches!(e, Event::DeadLettered { reason, .. } if reason.contains("restarted"))));
    ready_worker(&mut restarted, "w1", 1, 100);
    let (_, out) = drain(&mut restarted);
    assert!(dispatches(&out).is_empty(), "attempt 2 of an order allowed 1");
    assert_eq!(restarted.status().dead_letters, 1);
}

#[test]
fn a_packed_order_is_one_record_and_confirms_batch_per_producer() {
    let mut core = core();
    let packed = |order: &str, n: u32| {
        IntakeMsg::Items(Items {
            producer: "p".into(),
            order: order.into(),
            begin: true,
            first: 0,
            data: (0..n).map(|i| ByteBuf::from(vec![i as u8; 3])).collect(),
            finish: Some(n),
        })
    };
    core.handle_intake(packed("a", 3), 0);
    core.handle_intake(packed("b", 2), 0);
    let events: Vec<Event> = std::iter::from_fn(|| core.poll_event()).collect();
    assert!(matches!(&events[..], [Event::Accepted { .. }, Event::Accepted { .. }]), "{events:?}");
    let out: Vec<FanoutMsg> =
        std::iter::from_fn(|| core.poll_outbound()).map(|o| FanoutMsg::decode(&o.body).unwrap()).collect();
    assert_eq!(out, vec![FanoutMsg::Confirms(Confirms { orders: vec!["a".into(), "b".into()] })]);
    // A resend is confirmed again, not sealed twice.
    core.handle_intake(packed("a", 3), 1);
    let (events, out) = drain(&mut core);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(out, vec![("p/p/".to_string(), FanoutMsg::Confirm(Confirm { order: "a".into() }))]);
    // Dispatched with its items, acknowledged in one `acks` message.
    ready_worker(&mut core, "w1", 8, 2);
    let (_, out) = drain(&mut core);
    let sent = dispatches(&out);
    assert_eq!(sent.len(), 2);
    let acks = sent.iter().map(|(_, order, attempt)| Acked { order: order.clone(), attempt: *attempt }).collect();
    core.handle_control(ControlMsg::Acks(Acks { worker: "w1".into(), incarnation: 1, acks }), 3);
    let (events, _) = drain(&mut core);
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Acked { .. })).count(), 2);
    assert_eq!(core.status().pending_orders + core.status().in_flight_orders, 0);
}

#[test]
fn a_packed_frame_mixes_with_single_items() {
    let mut core = core();
    core.handle_intake(
        IntakeMsg::Items(Items {
            producer: "p".into(),
            order: "o".into(),
            begin: true,
            first: 0,
            data: vec![ByteBuf::from(b"0".to_vec()), ByteBuf::from(b"1".to_vec())],
            finish: None,
        }),
        0,
    );
    core.handle_intake(item("o", 2), 0);
    core.handle_intake(finish("o", 3), 0);
    let (events, out) = drain(&mut core);
    assert!(events.iter().any(|e| matches!(e, Event::Sealed { count: 3, .. })), "{events:?}");
    assert!(matches!(&out[..], [(_, FanoutMsg::Confirm(_))]));
}

#[test]
fn partial_items_in_ram_are_bounded_apart_from_the_journal_held_backlog() {
    // Room for one 3-byte item and its per-item charge, not for two.
    let partial_bytes_max = 4 + limits::ITEM_OVERHEAD_BYTES;
    let mut core = Core::new(CoreConfig { partial_bytes_max, ..CoreConfig::with_incarnation(42) });
    core.handle_intake(begin("o"), 0);
    core.handle_intake(item("o", 0), 0);
    assert!(core.intake_open(), "{:?}", core.status());
    core.handle_intake(item("o", 1), 0);
    core.handle_intake(item("o", 2), 0);
    assert!(!core.intake_open(), "partial bytes {} reached the bound", core.status().partial_bytes);
    assert_eq!(core.intake_closed().map(|c| c.reason), Some(orderly_common::protocol::backpressure::PARTIAL_BYTES));
    core.handle_intake(finish("o", 3), 0);
    assert_eq!(core.status().partial_bytes, 0);
    assert!(core.intake_open(), "a sealed order's items leave the partial bound");
}

/// Drains like the IO loop: every event "appended" (payload records
/// reported with `payload_stored`, so spilled orders leave RAM), every
/// message dropped. Returns the events, as the journal would hold them.
fn drain_recording(core: &mut Core, journal: &mut Vec<Event>) {
    while let Some(event) = core.poll_event() {
        let seq = journal.len() as u64;
        if let Some(key) = event.payload_key() {
            core.payload_stored(key, PayloadRef { seq, segment: 1, offset: seq });
        }
        journal.push(event);
    }
    while core.poll_outbound().is_some() {}
}

/// A restarted core: `journal` replayed as the IO loop does, then recovered.
fn recover(config: CoreConfig, journal: &[Event], now_ms: Millis) -> Core {
    let mut core = Core::new(config);
    core.start_replay(now_ms);
    for (seq, event) in journal.iter().enumerate() {
        core.apply(event);
        if let Some(key) = event.payload_key() {
            core.payload_stored(key, PayloadRef { seq: seq as u64, segment: 1, offset: seq as u64 });
        }
    }
    core.finish_recovery(now_ms);
    core
}

fn nack(order: &str, attempt: u32, retry: bool) -> ControlMsg {
    let order = OrderKey::new("p", order);
    ControlMsg::Nack(Nack {
        worker: "w1".into(),
        incarnation: 1,
        order,
        attempt,
        retry,
        reason: "no".into(),
        delay_ms: None,
        returned: false,
    })
}

#[test]
fn the_counters_agree_with_the_tables_through_a_realistic_run() {
    let config = CoreConfig {
        max_attempts: 2,
        payload_cache_bytes: 10, // a few orders: the rest spill
        dedup_window_ms: 2_000,
        partial_age_max_ms: 1_500,
        retry_delay_initial_ms: 0, // o1's second attempt follows at once
        ..CoreConfig::with_incarnation(7)
    };
    let mut core = Core::new(config.clone());
    let mut journal = Vec::new();
    let step = |core: &mut Core, journal: &mut Vec<Event>| {
        drain_recording(core, journal);
        core.check_invariants();
    };
    ready_worker(&mut core, "w1", 2, 0);
    ready_worker(&mut core, "w2", 1, 0);
    for n in 0..8 {
        send_order(&mut core, &format!("o{n}"), n % 4);
        step(&mut core, &mut journal);
    }
    let packed = Items {
        producer: "p".into(),
        order: "packed".into(),
        begin: true,
        first: 0,
        data: vec![ByteBuf::from(vec![1; 6])],
        finish: Some(1),
    };
    core.handle_intake(IntakeMsg::Items(packed), 1);
    core.handle_intake(begin("abandoned"), 1);
    core.handle_intake(item("abandoned", 0), 1);
    step(&mut core, &mut journal);
    // o0 acked, o1 nacked twice (dead), w2 goes silent (its order moves).
    let ack = ControlMsg::Ack(Ack { worker: "w1".into(), incarnation: 1, order: OrderKey::new("p", "o0"), attempt: 1 });
    core.handle_control(ack, 10);
    step(&mut core, &mut journal);
    for attempt in 1..=2 {
        core.handle_control(nack("o1", attempt, true), 20 + u64::from(attempt));
        step(&mut core, &mut journal);
    }
    for now_ms in (1_000..6_000).step_by(500) {
        core.handle_control(heartbeat("w1", 2, None), now_ms);
        core.handle_timeout(now_ms);
        step(&mut core, &mut journal);
    }
    assert_eq!(core.status().dead_letters, 1, "{:?}", core.status());
    assert_eq!(core.retry_dead(None, 6_000), 1);
    step(&mut core, &mut journal);
    assert!(core.counters().workers_expired >= 1 && core.remembered_keys() == 0);
    let kinds = |f: fn(&Event) -> bool| journal.iter().filter(|e| f(e)).count();
    assert!(kinds(|e| matches!(e, Event::Restored { .. })) > 0, "spilled");
    assert!(kinds(|e| matches!(e, Event::Forgotten { .. })) > 0, "forgotten");
    assert!(kinds(|e| matches!(e, Event::Dropped { .. })) > 0, "expired");
    assert!(kinds(|e| matches!(e, Event::Revived { .. })) > 0, "revived");
    // A restart: the journal replayed into a new core agrees with itself too.
    let restarted = recover(CoreConfig { incarnation: 8, ..config }, &journal, 7_000);
    restarted.check_invariants();
    assert_eq!(
        restarted.status().pending_orders + restarted.status().dead_letters,
        core.status().pending_orders + core.status().in_flight_orders + core.status().dead_letters
    );
}

#[test]
#[should_panic(expected = "`pending_len` is 2 but the tables add up to 1")]
fn a_desynchronised_counter_is_caught() {
    let mut core = core();
    send_order(&mut core, "o", 1);
    core.check_invariants();
    core.desync_pending_len_for_test();
    core.check_invariants();
}

fn ack_from(worker: &str, order: &str) -> ControlMsg {
    ControlMsg::Ack(Ack { worker: worker.into(), incarnation: 1, order: OrderKey::new("p", order), attempt: 1 })
}

fn acks_from(worker: &str, orders: &[&str]) -> ControlMsg {
    let acks = orders.iter().map(|o| Acked { order: OrderKey::new("p", *o), attempt: 1 }).collect();
    ControlMsg::Acks(Acks { worker: worker.into(), incarnation: 1, acks })
}

fn nack_from(worker: &str, order: &str, attempt: u32, retry: bool) -> ControlMsg {
    let order = OrderKey::new("p", order);
    ControlMsg::Nack(Nack {
        worker: worker.into(),
        incarnation: 1,
        order,
        attempt,
        retry,
        reason: "no".into(),
        delay_ms: None,
        returned: false,
    })
}

/// Issue 14, attack 1: an authorized worker key acking orders it never
/// held (pending ones, or another worker's) must not retire them.
#[test]
fn a_strangers_ack_or_nack_is_refused_and_counted() {
    let mut core = core();
    send_order(&mut core, "pending", 1);
    // A worker that never registered acks a pending order under its own id.
    core.handle_control(acks_from("mallory", &["pending"]), 1);
    assert_eq!(core.status().pending_orders, 1, "a stranger's ack retired a pending order");
    assert_eq!(core.counters().orders_acked, 0);
    assert_eq!(core.counters().acks_refused, 1);

    ready_worker(&mut core, "w1", 1, 2);
    let (_, out) = drain(&mut core);
    assert_eq!(dispatches(&out), vec![("w/w1/".to_string(), OrderKey::new("p", "pending"), 1)]);
    // Another registered worker acks and nacks w1's order.
    ready_worker(&mut core, "w2", 1, 3);
    core.handle_control(ack_from("w2", "pending"), 4);
    core.handle_control(nack_from("w2", "pending", 1, false), 5);
    assert_eq!(core.status().in_flight_orders, 1);
    assert_eq!(core.status().dead_letters, 0);
    assert_eq!(core.counters().acks_refused, 3);
    assert_eq!(core.counters().stale_nacks, 0);

    // The holder's ack counts.
    core.handle_control(ack_from("w1", "pending"), 6);
    assert_eq!(core.counters().orders_acked, 1);
    assert_eq!(core.status().in_flight_orders, 0);
}

#[test]
fn the_holders_nack_counts() {
    let mut core = core();
    ready_worker(&mut core, "w1", 1, 0);
    send_order(&mut core, "o", 1);
    core.handle_control(nack_from("w1", "o", 1, false), 1);
    assert_eq!(core.status().dead_letters, 1);
    assert_eq!(core.counters().acks_refused, 0);
}

/// A late ack: from the worker of the latest dispatch while no dispatch
/// is current it counts (dead letter, or requeued and not yet sent
/// again); once the order went to another worker only that one's counts.
#[test]
fn a_late_ack_counts_only_from_the_latest_holder() {
    let mut core = Core::new(CoreConfig { max_attempts: 1, ..CoreConfig::with_incarnation(42) });
    ready_worker(&mut core, "w1", 1, 0);
    send_order(&mut core, "dead", 1);
    core.handle_control(nack_from("w1", "dead", 1, true), 1);
    assert_eq!(core.status().dead_letters, 1, "its one attempt failed");
    core.handle_control(ack_from("w2", "dead"), 2);
    assert_eq!(core.status().dead_letters, 1, "w2 never held it");
    core.handle_control(ack_from("w1", "dead"), 3);
    assert_eq!(core.status().dead_letters, 0, "the last holder's late ack retires a dead letter");
    assert_eq!(core.counters().orders_acked, 1);

    let mut core = self::core();
    ready_worker(&mut core, "w1", 1, 0);
    send_order(&mut core, "o", 1);
    core.handle_control(ControlMsg::Bye(Bye { worker: "w1".into(), incarnation: 1 }), 1);
    assert_eq!(core.status().pending_orders, 1, "requeued");
    ready_worker(&mut core, "w2", 1, 2);
    assert_eq!(core.status().in_flight_orders, 1, "sent again, to w2");
    core.handle_control(ack_from("w1", "o"), 3);
    assert_eq!(core.status().in_flight_orders, 1, "w1's dispatch is no longer the latest");
    assert_eq!(core.counters().acks_refused, 1);
    core.handle_control(ack_from("w2", "o"), 4);
    assert_eq!(core.counters().orders_acked, 1);
}

/// Issue 14, attack 3: empty items cost RAM and journal; the byte bounds
/// are charged `ITEM_OVERHEAD_BYTES` for each, so 100,000 empty items are
/// not "0 bytes".
#[test]
fn empty_items_are_charged_to_every_byte_bound() {
    let items = limits::ORDER_ITEMS_MAX as usize;
    let per_order = items as u64 * limits::ITEM_OVERHEAD_BYTES;
    let whole = |order: &str| {
        IntakeMsg::Items(Items {
            producer: "p".into(),
            order: order.into(),
            begin: true,
            first: 0,
            data: vec![ByteBuf::new(); items],
            finish: Some(items as u32),
        })
    };
    // Room for three such orders: the fourth closes intake.
    let config = CoreConfig {
        pending_bytes_max: 3 * per_order + 1,
        payload_cache_bytes: per_order,
        ..CoreConfig::with_incarnation(42)
    };
    let mut core = Core::new(config);
    for (i, order) in ["a", "b", "c"].into_iter().enumerate() {
        assert!(core.intake_open(), "closed after {i} orders: {:?}", core.status());
        core.handle_intake(whole(order), 0);
    }
    assert_eq!(core.status().held_bytes, 3 * per_order);
    // The cache holds one order's charge: the others left RAM.
    assert!(core.status().cached_bytes <= per_order, "{:?}", core.status());
    core.handle_intake(whole("d"), 0);
    assert!(!core.intake_open(), "held bytes {} (limit {})", core.status().held_bytes, 3 * per_order + 1);
    assert_eq!(core.intake_closed().map(|c| c.reason), Some(orderly_common::protocol::backpressure::PENDING_BYTES));

    // Partial orders: the partial bound stops a stream of empty items.
    let config = CoreConfig { partial_bytes_max: per_order / 2, ..CoreConfig::with_incarnation(42) };
    let mut core = Core::new(config);
    core.handle_intake(begin("s"), 0);
    let half = IntakeMsg::Items(Items {
        producer: "p".into(),
        order: "s".into(),
        begin: false,
        first: 0,
        data: vec![ByteBuf::new(); items / 2],
        finish: None,
    });
    core.handle_intake(half, 0);
    assert_eq!(core.status().partial_bytes, per_order / 2);
    assert!(!core.intake_open());
    assert_eq!(core.intake_closed().map(|c| c.reason), Some(orderly_common::protocol::backpressure::PARTIAL_BYTES));
}

fn whole_from(producer: &str, order: &str) -> IntakeMsg {
    let data = vec![ByteBuf::from(vec![1])];
    IntakeMsg::Items(Items {
        producer: producer.into(),
        order: order.into(),
        begin: true,
        first: 0,
        data,
        finish: Some(1),
    })
}

/// Issue 14, attack 4: one producer at its share of pending orders gets
/// `limit_reached`; another is still read and confirmed.
#[test]
fn a_producer_at_its_pending_limit_is_rejected_others_are_not() {
    let config =
        CoreConfig { pending_orders_max: 10, pending_orders_per_producer_max: 3, ..CoreConfig::with_incarnation(42) };
    let mut core = Core::new(config);
    for i in 0..3 {
        core.handle_intake(whole_from("a", &format!("a{i}")), 0);
    }
    drain(&mut core);
    core.handle_intake(whole_from("a", "a3"), 0);
    core.handle_intake(IntakeMsg::Begin(Begin { producer: "a".into(), order: "a4".into() }), 0);
    core.handle_intake(whole_from("a", "a0"), 0); // a resend is still confirmed
    core.handle_intake(whole_from("b", "b0"), 0);
    let (_, out) = drain(&mut core);
    let rejected: Vec<&str> = out
        .iter()
        .filter_map(|(topic, m)| match m {
            FanoutMsg::Reject(Reject { order, reason: RejectReason::LimitReached { .. } }) if topic == "p/a/" => {
                Some(order.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(rejected, vec!["a3", "a4"]);
    assert!(out.contains(&("p/a/".to_string(), FanoutMsg::Confirm(Confirm { order: "a0".into() }))));
    assert!(out.contains(&("p/b/".to_string(), FanoutMsg::Confirm(Confirm { order: "b0".into() }))));
    assert_eq!(core.counters().producer_limit_rejects, 2);
    assert_eq!(core.status().pending_orders, 4);
    assert!(core.intake_open());

    // Once a worker acks one of a's orders, a has room again.
    ready_worker(&mut core, "w1", 1, 1);
    let (_, out) = drain(&mut core);
    let (_, first, _) = dispatches(&out).pop().expect("one dispatch to w1");
    let ack = ControlMsg::Ack(Ack { worker: "w1".into(), incarnation: 1, order: first, attempt: 1 });
    core.handle_control(ack, 2);
    assert_eq!(core.counters().orders_acked, 1);
    core.handle_intake(whole_from("a", "a3"), 3);
    let (_, out) = drain(&mut core);
    assert!(out.contains(&("p/a/".to_string(), FanoutMsg::Confirm(Confirm { order: "a3".into() }))), "{out:?}");
}

// ---------------------------------------------------------------- issue 15

/// A heartbeat from a ready worker (incarnation 1) listing `holding`.
fn holding(worker: &str, capacity: u32, welcome: Option<u64>, holding: &[&str]) -> ControlMsg {
    ControlMsg::Heartbeat(Heartbeat {
        worker: worker.into(),
        incarnation: 1,
        capacity,
        in_flight: holding.iter().map(|o| OrderKey::new("p", *o)).collect(),
        welcome,
        draining: false,
        broken: None,
        dispatches_max: 0,
    })
}

fn returned(worker: &str, order: &str, attempt: u32) -> ControlMsg {
    ControlMsg::Nack(Nack {
        worker: worker.into(),
        incarnation: 1,
        order: OrderKey::new("p", order),
        attempt,
        retry: true,
        reason: "no free slot".into(),
        delay_ms: None,
        returned: true,
    })
}

fn failed(worker: &str, order: &str, attempt: u32, delay_ms: Option<u64>) -> ControlMsg {
    ControlMsg::Nack(Nack {
        worker: worker.into(),
        incarnation: 1,
        order: OrderKey::new("p", order),
        attempt,
        retry: true,
        reason: "exit 1".into(),
        delay_ms,
        returned: false,
    })
}

fn welcome_nonce(out: &[(String, FanoutMsg)]) -> u64 {
    out.iter().find_map(|(_, m)| if let FanoutMsg::Welcome(w) = m { Some(w.nonce) } else { None }).expect("welcome")
}

fn notices(core: &mut Core) -> Vec<Notice> {
    std::iter::from_fn(|| core.poll_notice()).collect()
}

fn requeue_delay(events: &[Event]) -> u64 {
    events.iter().find_map(|e| if let Event::Requeued { delay_ms, .. } = e { Some(*delay_ms) } else { None }).unwrap()
}

/// Issue 15, item 1: a worker the broker lost track of (silent too long)
/// comes back still running A with capacity 1: it gets nothing until A is
/// acknowledged.
#[test]
fn a_worker_still_running_an_order_it_was_not_sent_gets_nothing_more() {
    let mut core = core();
    ready_worker(&mut core, "w1", 1, 0);
    send_order(&mut core, "a", 1);
    drain(&mut core);
    core.handle_timeout(3_000); // silent for liveness: lost, A requeued
    send_order(&mut core, "b", 1);
    drain(&mut core);
    core.handle_control(holding("w1", 1, None, &["a"]), 3_100);
    let (_, out) = drain(&mut core);
    core.handle_control(holding("w1", 1, Some(welcome_nonce(&out)), &["a"]), 3_100);
    core.handle_control(holding("w1", 1, None, &["a"]), 4_000);
    let (_, out) = drain(&mut core);
    assert_eq!(dispatches(&out), vec![], "its one slot is taken by A");
    assert_eq!(core.status().workers[0].credits, 0);
    core.check_invariants();
    // It finishes A (it held the latest dispatch): its slot is free again.
    core.handle_control(ack_from("w1", "a"), 4_100);
    let (_, out) = drain(&mut core);
    assert_eq!(dispatches(&out), vec![("w/w1/".into(), OrderKey::new("p", "b"), 1)]);
}

#[test]
fn a_listed_foreign_order_leaves_at_the_next_heartbeat_without_it() {
    let mut core = core();
    ready_worker(&mut core, "w1", 2, 0);
    core.handle_control(holding("w1", 2, None, &["x"]), 1);
    assert_eq!(core.status().workers[0].credits, 1);
    core.check_invariants();
    core.handle_control(holding("w1", 2, None, &[]), 2);
    assert_eq!(core.status().workers[0].credits, 2);
}

#[test]
fn a_returned_or_lost_dispatch_spends_no_attempt_and_never_dead_letters() {
    let config = CoreConfig { max_attempts: 2, ..CoreConfig::with_incarnation(42) };
    let mut core = Core::new(config.clone());
    let mut journal = Vec::new();
    ready_worker(&mut core, "w1", 1, 0);
    send_order(&mut core, "o", 1);
    for round in 0..5u64 {
        let (events, out) = drain(&mut core);
        journal.extend(events);
        assert_eq!(dispatches(&out), vec![("w/w1/".into(), OrderKey::new("p", "o"), 1)], "round {round}");
        core.handle_control(returned("w1", "o", 1), 10 + round);
        // Nothing more for w1 until its next heartbeat says how it is:
        // a lone worker and the order do not bounce at wire speed.
        let (events, out) = drain(&mut core);
        journal.extend(events);
        assert!(dispatches(&out).is_empty(), "round {round}: sent again before a heartbeat");
        core.handle_control(heartbeat("w1", 1, None), 10 + round);
    }
    // Lost on the way (never listed after the grace): no attempt either.
    let (events, out) = drain(&mut core);
    assert_eq!(dispatches(&out).len(), 1);
    journal.extend(events);
    core.handle_control(heartbeat("w1", 1, None), 5_000);
    let (events, out) = drain(&mut core);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Requeued { refunded: true, reason, .. } if reason.contains("does not hold"))));
    assert_eq!(dispatches(&out), vec![("w/w1/".into(), OrderKey::new("p", "o"), 1)]);
    journal.extend(events);
    assert_eq!((core.status().dead_letters, core.counters().orders_returned), (0, 5));
    // The journal agrees: replayed, the order has spent its one dispatch.
    let restarted = recover(CoreConfig { incarnation: 43, ..config }, &journal, 6_000);
    assert_eq!(restarted.order_info(&OrderKey::new("p", "o")).unwrap().attempts, 1);
}

#[test]
fn an_order_is_not_handed_straight_back_to_the_worker_that_dropped_it() {
    let mut core = core();
    ready_worker(&mut core, "w1", 2, 0);
    ready_worker(&mut core, "w2", 1, 0);
    send_order(&mut core, "o", 1);
    let (_, out) = drain(&mut core);
    assert_eq!(dispatches(&out)[0].0, "w/w1/"); // the most free credits
    core.handle_control(returned("w1", "o", 1), 1);
    let (_, out) = drain(&mut core);
    // w1 still has the most free credits, but w2 can take it.
    assert_eq!(dispatches(&out), vec![("w/w2/".into(), OrderKey::new("p", "o"), 1)]);
}

#[test]
fn a_failed_attempt_waits_its_backoff_doubling_with_jitter() {
    let config =
        CoreConfig { retry_delay_initial_ms: 1_000, retry_delay_max_ms: 3_000, ..CoreConfig::with_incarnation(1) };
    let mut core = Core::new(config.clone());
    ready_worker(&mut core, "w1", 1, 0);
    send_order(&mut core, "o", 1);
    let key = OrderKey::new("p", "o");
    let mut now = 0;
    let mut delays = Vec::new();
    for attempt in 1..=4u32 {
        let (_, out) = drain(&mut core);
        assert_eq!(dispatches(&out), vec![("w/w1/".into(), key.clone(), attempt)]);
        now += 10;
        core.handle_control(failed("w1", "o", attempt, None), now);
        let (events, out) = drain(&mut core);
        assert!(dispatches(&out).is_empty(), "attempt {attempt}: redelivered at once");
        let delay = requeue_delay(&events);
        let full = (1_000u64 << (attempt - 1)).min(3_000);
        assert!((full / 2..=full).contains(&delay), "attempt {attempt}: delay {delay}, full {full}");
        delays.push(delay);
        assert_eq!(core.status().delayed_orders, 1);
        let info = core.order_info(&key).unwrap();
        assert_eq!((info.place, info.retry_in_ms), (OrderPlace::Delayed, Some(delay)));
        assert!(info.last_reason.unwrap().contains("exit 1"));
        assert!(core.poll_timeout() <= now + delay);
        core.handle_timeout(now + delay - 1);
        assert!(dispatches(&drain(&mut core).1).is_empty());
        now += delay;
        core.handle_control(holding("w1", 1, None, &[]), now); // keep w1 alive
        core.handle_timeout(now);
        core.check_invariants();
    }
    // The same seed draws the same jitter.
    let mut again = Core::new(config);
    ready_worker(&mut again, "w1", 1, 0);
    send_order(&mut again, "o", 1);
    drain(&mut again);
    again.handle_control(failed("w1", "o", 1, None), 10);
    assert_eq!(requeue_delay(&drain(&mut again).0), delays[0]);
}

#[test]
fn a_nack_may_name_its_delay_clamped_and_a_dead_worker_s_orders_are_not_delayed() {
    let mut core = core();
    ready_worker(&mut core, "w1", 1, 0);
    send_order(&mut core, "o", 1);
    drain(&mut core);
    core.handle_control(failed("w1", "o", 1, Some(30_000)), 5);
    assert_eq!(requeue_delay(&drain(&mut core).0), 30_000);
    core.handle_control(holding("w1", 1, None, &[]), 30_005);
    core.handle_timeout(30_005);
    drain(&mut core);
    core.handle_control(failed("w1", "o", 2, Some(u64::MAX)), 30_006);
    assert_eq!(requeue_delay(&drain(&mut core).0), limits::RETRY_DELAY_MS_MAX);
    // Not the order's fault: a worker that said bye.
    let mut core = Core::new(CoreConfig::with_incarnation(42));
    ready_worker(&mut core, "w1", 1, 0);
    ready_worker(&mut core, "w2", 1, 0);
    send_order(&mut core, "o", 1);
    drain(&mut core);
    core.handle_control(ControlMsg::Bye(Bye { worker: "w1".into(), incarnation: 1 }), 1);
    let (events, out) = drain(&mut core);
    assert_eq!(requeue_delay(&events), 0);
    assert_eq!(dispatches(&out), vec![("w/w2/".into(), OrderKey::new("p", "o"), 2)]);
}

#[test]
fn due_orders_go_first_and_delays_survive_replay_and_compaction() {
    let config = CoreConfig { retry_delay_initial_ms: 1_000, ..CoreConfig::with_incarnation(3) };
    let mut core = Core::new(config.clone());
    let mut journal = Vec::new();
    ready_worker(&mut core, "w1", 1, 0);
    for order in ["a", "b", "c"] {
        send_order(&mut core, order, 1);
    }
    drain_recording(&mut core, &mut journal);
    core.handle_control(failed("w1", "a", 1, None), 10); // a waits, b goes
    let delay = requeue_delay(
        &std::iter::from_fn(|| core.poll_event()).inspect(|e| journal.push(e.clone())).collect::<Vec<_>>(),
    );
    drain_recording(&mut core, &mut journal);
    // The broker restarts while a waits: the wait restarts in full.
    let restarted = recover(CoreConfig { incarnation: 4, ..config.clone() }, &journal, 100_000);
    assert_eq!(restarted.status().delayed_orders, 1);
    assert_eq!(restarted.order_info(&OrderKey::new("p", "a")).unwrap().retry_in_ms, Some(delay));
    // Compaction copies what is left of the wait.
    core.handle_control(holding("w1", 1, None, &["b"]), 10 + delay / 2);
    let Some(Event::Restored { snapshot: Snapshot::Sealed { retry_in_ms, .. }, .. }) =
        core.snapshot(&OrderKey::new("p", "a"))
    else {
        panic!("a sealed snapshot")
    };
    assert_eq!(retry_in_ms, delay - delay / 2);
    // Due, a goes before c, which waited in the queue longer.
    core.handle_timeout(10 + delay);
    core.handle_control(holding("w1", 1, None, &["b"]), 10 + delay);
    core.handle_control(ack_from("w1", "b"), 11 + delay);
    let (_, out) = drain(&mut core);
    assert_eq!(dispatches(&out), vec![("w/w1/".into(), OrderKey::new("p", "a"), 2)]);
}

#[test]
fn an_attempt_held_past_the_time_cap_is_taken_back_even_while_listed() {
    let config = CoreConfig { ack_timeout_ms: 1_000, attempt_timeout_ms: 5_000, ..CoreConfig::with_incarnation(1) };
    let mut core = Core::new(config);
    ready_worker(&mut core, "w1", 1, 0);
    send_order(&mut core, "o", 1);
    drain(&mut core);
    for now in (500..5_000).step_by(500) {
        core.handle_control(holding("w1", 1, None, &["o"]), now);
        core.handle_timeout(now);
        assert_eq!(core.status().in_flight_orders, 1, "at {now}");
    }
    core.handle_control(holding("w1", 1, None, &["o"]), 4_999);
    assert!(core.poll_timeout() <= 5_000);
    core.handle_timeout(5_000);
    let (events, _) = drain(&mut core);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Requeued { reason, refunded: false, .. } if reason.contains("attempt time cap"))));
    assert_eq!(core.counters().attempt_timeouts, 1);
}

#[test]
fn a_broken_worker_gets_nothing_until_it_recovers() {
    let mut core = core();
    ready_worker(&mut core, "w1", 1, 0);
    notices(&mut core);
    let broken = |reason: Option<&str>| {
        ControlMsg::Heartbeat(Heartbeat {
            worker: "w1".into(),
            incarnation: 1,
            capacity: 1,
            in_flight: vec![],
            welcome: None,
            draining: false,
            broken: reason.map(str::to_owned),
            dispatches_max: 0,
        })
    };
    core.handle_control(broken(Some("exec: no such file")), 1);
    send_order(&mut core, "o", 1);
    let (_, out) = drain(&mut core);
    assert!(dispatches(&out).is_empty());
    let w = &core.status().workers[0];
    assert_eq!((w.broken.as_deref(), w.credits), (Some("exec: no such file"), 0));
    core.handle_control(broken(None), 2);
    let (_, out) = drain(&mut core);
    assert_eq!(dispatches(&out).len(), 1);
    assert_eq!(
        notices(&mut core),
        vec![
            Notice::WorkerBroken { worker: "w1".into(), reason: "exec: no such file".into() },
            Notice::WorkerRecovered { worker: "w1".into() },
        ]
    );
}

#[test]
fn orders_keep_when_they_were_seen_and_died_and_their_last_failure() {
    const EPOCH: u64 = 1_700_000_000_000;
    let config = CoreConfig { epoch_unix_ms: EPOCH, ..CoreConfig::with_incarnation(1) };
    let mut core = Core::new(config.clone());
    let mut journal = Vec::new();
    ready_worker(&mut core, "w1", 1, 0);
    send_order(&mut core, "o", 1);
    drain_recording(&mut core, &mut journal);
    core.handle_control(failed("w1", "o", 1, Some(1)), 5);
    core.handle_timeout(6);
    drain_recording(&mut core, &mut journal);
    let key = OrderKey::new("p", "o");
    let info = core.order_info(&key).unwrap();
    assert_eq!((info.first_seen_unix_ms, info.dead_since_unix_ms), (Some(EPOCH), None));
    assert!(info.last_reason.unwrap().contains("exit 1"), "the last failure, while pending");
    core.handle_control(nack_from("w1", "o", 2, false), 7);
    drain_recording(&mut core, &mut journal);
    let dead = &core.dead_letters(10)[0];
    assert_eq!((dead.first_seen_unix_ms, dead.dead_since_unix_ms), (Some(EPOCH), Some(EPOCH + 7)));
    let restarted = recover(CoreConfig { incarnation: 2, ..config }, &journal, 50);
    assert_eq!(&restarted.dead_letters(10)[0], dead);
}

#[test]
fn intake_closes_at_the_dead_letter_bound_and_says_what_to_do() {
    let mut core = Core::new(CoreConfig { dead_letters_max: 2, ..CoreConfig::with_incarnation(1) });
    ready_worker(&mut core, "w1", 2, 0);
    for order in ["a", "b"] {
        send_order(&mut core, order, 1);
    }
    drain(&mut core);
    core.handle_control(nack_from("w1", "a", 1, false), 1);
    assert!(core.intake_open());
    core.handle_control(nack_from("w1", "b", 1, false), 1);
    assert!(!core.intake_open());
    let closed = core.intake_closed().unwrap();
    assert_eq!(closed.reason, orderly_common::protocol::backpressure::DEAD_LETTERS);
    assert!(closed.detail.contains("2 dead letters") && closed.detail.contains("dlq"), "{}", closed.detail);
    core.check_invariants();
    core.discard_dead(Some(&OrderKey::new("p", "a")), 2);
    assert!(core.intake_open());
}

#[test]
fn notices_tell_of_joins_losses_and_dead_letters() {
    let mut core = core();
    ready_worker(&mut core, "w1", 1, 0);
    send_order(&mut core, "o", 1);
    core.handle_timeout(3_000);
    assert_eq!(
        notices(&mut core),
        vec![
            Notice::WorkerJoined { worker: "w1".into(), capacity: 1 },
            Notice::WorkerLost { worker: "w1".into(), why: LostWhy::Silence, requeued: 1 },
        ]
    );
    ready_worker(&mut core, "w2", 1, 3_001);
    core.handle_control(nack_from("w2", "o", 2, false), 3_002);
    let last = notices(&mut core).pop().unwrap();
    assert!(
        matches!(&last, Notice::DeadLettered { key, attempts: 2, reason } if key.id == "o" && reason.contains("refused")),
        "{last:?}"
    );
}

#[test]
fn an_order_a_worker_listed_as_held_besides_counts_once_when_dispatched_to_it() {
    let mut core = core();
    ready_worker(&mut core, "w1", 2, 0);
    send_order(&mut core, "a", 1);
    drain(&mut core);
    core.handle_timeout(3_000); // lost track of w1; a requeued
    core.handle_control(holding("w1", 2, None, &["a"]), 3_100);
    let (_, out) = drain(&mut core);
    core.handle_control(holding("w1", 2, Some(welcome_nonce(&out)), &["a"]), 3_100);
    let (_, out) = drain(&mut core);
    assert_eq!(dispatches(&out).len(), 1, "its second slot takes a again");
    core.check_invariants();
    assert_eq!(core.status().workers[0].credits, 1);
}

/// A million pending orders must fit the RSS target (issue 20): a field
/// added to `Order` is paid a million times, so it goes in `History`
/// unless every order needs it.
#[test]
fn a_pending_order_stays_small() {
    // 136 before issue 20; the state a one-byte tag, the payload's place
    // packed (16 bytes), the byte count a `u32`, the payload boxed.
    // 56 with the attempts in the history and the queue wait's start 4 bytes.
    assert!(std::mem::size_of::<Order>() <= 56, "Order is {} bytes", std::mem::size_of::<Order>());
    // The slab entry: the id inline (16), producer, generation; 80 with
    // the anchor taken from the payload's place (no field of its own).
    let entry = table::entry_bytes::<Order>();
    assert!(entry <= 80, "a slab entry is {entry} bytes");
    assert_eq!(std::mem::size_of::<OrderState>(), 1);
    let mut core = core();
    core.apply(&Event::Accepted {
        key: OrderKey::new("p", "o"),
        items: vec![ByteBuf::from(b"x".to_vec())].into(),
        at_unix_ms: 1,
    });
    let order = core.orders.get(&OrderKey::new("p", "o")).expect("sealed");
    assert!(order.history.is_none(), "a fresh order has no history to pay for");
}

/// A key in the dedup window is paid for every order acknowledged within
/// it (issue 20: RSS at full load): its slab entry was 56 bytes and its
/// queue pair 16 before 0.5.2.
#[test]
fn a_remembered_key_stays_small() {
    let entry = table::entry_bytes::<Remembered>();
    assert!(entry <= 40, "a remembered key's slab entry is {entry} bytes");
    assert!(std::mem::size_of::<Handle>() <= 8, "a remembered key's place in the expiry queue");
}

/// The queue wait's start keeps 32 bits of the clock: a wait is timed
/// right across their wrap, and one that lies ahead (a retry delay) is 0.
#[test]
fn a_queue_wait_is_timed_across_the_clocks_wrap_and_one_ahead_is_zero() {
    let mut core = core();
    let key = OrderKey::new("p", "o");
    core.apply(&Event::Accepted { key: key.clone(), items: Payload::default(), at_unix_ms: 1 });
    let order = core.orders.get_mut(&key).expect("sealed");
    order.set_queued(u64::from(u32::MAX) - 5);
    assert_eq!(order.queued_for_ms(u64::from(u32::MAX) + 10), 15);
    order.set_queued(7 << 32 | 1_000);
    assert_eq!((order.queued_for_ms(7 << 32 | 500), order.queued_for_ms(7 << 32 | 1_250)), (0, 250));
}

/// A payload's journal place packs into `u32`s up to the journal's bound
/// and back unchanged.
#[test]
fn a_journal_place_packs_and_unpacks_unchanged() {
    let limit = orderly_journal::SEGMENT_BYTES_TARGET_MAX + orderly_journal::BATCH_BYTES_MAX_DEFAULT;
    let at = PayloadRef { seq: u64::MAX, segment: u64::from(u32::MAX), offset: limit - 1 };
    assert_eq!(Stored::new(at).map(Stored::at), Some(at));
    assert_eq!(Stored::new(PayloadRef { seq: 0, segment: 1, offset: 0 }), None);
}

/// A place the index could not find again stops the broker, loudly, rather
/// than losing the payload.
#[test]
#[should_panic(expected = "past u32")]
fn a_journal_place_past_u32_is_refused() {
    Stored::new(PayloadRef { seq: 1, segment: 1, offset: u64::from(u32::MAX) + 1 });
}

// ------------------------------------------------------------ dispatch batches (issue 20)

/// A worker ready for orders that declares `dispatches_max`.
fn ready_batching_worker(core: &mut Core, worker: &str, capacity: u32, dispatches_max: u32) {
    let hb = |welcome| {
        let ControlMsg::Heartbeat(hb) = heartbeat(worker, capacity, welcome) else { unreachable!() };
        ControlMsg::Heartbeat(Heartbeat { dispatches_max, ..hb })
    };
    core.handle_control(hb(None), 0);
    let (_, out) = drain(core);
    let nonce = out
        .iter()
        .find_map(|(_, m)| match m {
            FanoutMsg::Welcome(w) => Some(w.nonce),
            _ => None,
        })
        .expect("welcomed");
    core.handle_control(hb(Some(nonce)), 0);
}

/// Each published message as decoded, by topic; a batch stays one message.
fn published(core: &mut Core) -> Vec<(String, FanoutMsg)> {
    while core.poll_event().is_some() {}
    std::iter::from_fn(|| core.poll_outbound())
        .map(|o| (String::from_utf8(o.topic.to_vec()).unwrap(), FanoutMsg::decode(&o.body).unwrap()))
        .collect()
}

fn send_whole(core: &mut Core, orders: std::ops::Range<u32>) {
    for n in orders {
        core.handle_intake(whole_from("p", &format!("o{n}")), 0);
    }
}

#[test]
fn a_batching_worker_gets_its_orders_in_one_message_each_with_its_own_dispatch() {
    let mut core = core();
    send_whole(&mut core, 0..5);
    let _ = published(&mut core);
    ready_batching_worker(&mut core, "w1", 8, 64);
    let events: Vec<Event> = std::iter::from_fn(|| core.poll_event()).collect();
    let out: Vec<_> = std::iter::from_fn(|| core.poll_outbound()).collect();
    assert_eq!(out.len(), 1, "one message for five orders");
    let FanoutMsg::Dispatches(batch) = FanoutMsg::decode(&out[0].body).unwrap() else { panic!("not a batch") };
    let keys: Vec<_> = batch.dispatches.iter().map(|d| (d.order.id.clone(), d.attempt, d.items.len())).collect();
    assert_eq!(keys, (0..5).map(|n| (format!("o{n}"), 1, 1)).collect::<Vec<_>>());
    let dispatched = events.iter().filter(|e| matches!(e, Event::Dispatched { attempt: 1, .. })).count();
    assert_eq!(dispatched, 5, "each order its own Dispatched event");
    assert_eq!(core.status().in_flight_orders, 5);
    core.check_invariants();
}

#[test]
fn an_old_worker_never_gets_a_batch() {
    for dispatches_max in [0, 1] {
        let mut core = core();
        send_whole(&mut core, 0..4);
        let _ = published(&mut core);
        ready_batching_worker(&mut core, "w1", 8, dispatches_max);
        let out = published(&mut core);
        assert_eq!(out.len(), 4, "dispatches_max {dispatches_max}");
        assert!(out.iter().all(|(_, m)| matches!(m, FanoutMsg::Dispatch(_))), "{out:?}");
    }
}

/// Batches stop at the worker's `dispatches_max`, at the credits it has,
/// and at `DISPATCH_BATCH_BYTES_MAX`; a lone order goes as a `dispatch`.
#[test]
fn batches_respect_count_credit_and_byte_bounds() {
    let mut core = self::core();
    send_whole(&mut core, 0..7);
    let _ = published(&mut core);
    ready_batching_worker(&mut core, "w1", 7, 3);
    let sizes: Vec<usize> = published(&mut core)
        .into_iter()
        .map(|(_, m)| match m {
            FanoutMsg::Dispatches(b) => b.dispatches.len(),
            FanoutMsg::Dispatch(_) => 1,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sizes, vec![3, 3, 1]);

    // Credits: capacity 2 takes two orders now, the rest as credits free.
    let mut core = self::core();
    send_whole(&mut core, 0..5);
    let _ = published(&mut core);
    ready_batching_worker(&mut core, "w1", 2, 64);
    let out = published(&mut core);
    assert!(matches!(&out[..], [(_, FanoutMsg::Dispatches(b))] if b.dispatches.len() == 2), "{out:?}");

    // Bytes: orders of 400 KiB, so at most two fit the 1 MiB budget.
    let big = limits::DISPATCH_BATCH_BYTES_MAX * 2 / 5;
    let mut core = Core::new(CoreConfig {
        payload_cache_bytes: 64 * 1024 * 1024,
        pending_bytes_max: 64 * 1024 * 1024,
        order_bytes_max: big as u64 + 1,
        ..CoreConfig::with_incarnation(1)
    });
    for n in 0..5 {
        let data = vec![ByteBuf::from(vec![7; big])];
        let order = format!("b{n}");
        let msg = IntakeMsg::Items(Items { producer: "p".into(), order, begin: true, first: 0, data, finish: Some(1) });
        core.handle_intake(msg, 0);
    }
    let _ = published(&mut core);
    ready_batching_worker(&mut core, "w1", 8, 64);
    let out: Vec<_> = std::iter::from_fn(|| core.poll_outbound()).collect();
    assert!(out.iter().all(|o| o.body.len() <= limits::DISPATCH_BATCH_BYTES_MAX));
    let sizes: Vec<usize> = out
        .iter()
        .map(|o| match FanoutMsg::decode(&o.body).unwrap() {
            FanoutMsg::Dispatches(b) => b.dispatches.len(),
            _ => 1,
        })
        .collect();
    assert_eq!(sizes, vec![2, 2, 1]);
}

/// Orders whose payload left RAM are filled from the journal by the IO
/// loop, in the batch's order, beside the ones still cached.
#[test]
fn a_batch_mixes_cached_and_journal_payloads() {
    let charge = 1 + limits::ITEM_OVERHEAD_BYTES;
    let mut core = Core::new(CoreConfig { payload_cache_bytes: 2 * charge, ..CoreConfig::with_incarnation(1) });
    let mut journal = Vec::new();
    send_whole(&mut core, 0..4);
    drain_recording(&mut core, &mut journal);
    ready_batching_worker(&mut core, "w1", 8, 64);
    while core.poll_event().is_some() {}
    let mut out: Vec<_> = std::iter::from_fn(|| core.poll_outbound()).collect();
    assert_eq!(out.len(), 1);
    let batch = &mut out[0];
    assert!(batch.body.is_empty() && batch.needs_fill());
    let from_journal = batch.batch.iter().filter(|e| matches!(e, BatchEntry::Fill(_))).count();
    assert_eq!(from_journal, 2, "the two newest orders spilled");
    let mut read = Vec::new();
    batch
        .fill_with(|fill| {
            read.push(fill.key.id.clone());
            let event = &journal[fill.from.seq as usize];
            Ok::<_, ()>(event.payload().expect("a payload record").clone())
        })
        .unwrap();
    assert_eq!(read, ["o2", "o3"]);
    assert!(!batch.needs_fill());
    let FanoutMsg::Dispatches(b) = FanoutMsg::decode(&batch.body).unwrap() else { panic!("not a batch") };
    let ids: Vec<_> = b.dispatches.iter().map(|d| d.order.id.as_str()).collect();
    assert_eq!(ids, ["o0", "o1", "o2", "o3"]);
    assert!(b.dispatches.iter().all(|d| d.items == vec![ByteBuf::from(vec![1])]));
}

/// Fairness is pump's, not the batch's: two batching workers share the
/// orders, most free credits first.
#[test]
fn batches_keep_the_most_free_credits_first_choice() {
    let mut core = self::core();
    ready_batching_worker(&mut core, "w1", 3, 64);
    ready_batching_worker(&mut core, "w2", 3, 64);
    let _ = published(&mut core);
    send_whole(&mut core, 0..6);
    let out: Vec<(String, usize)> = published(&mut core)
        .into_iter()
        .filter_map(|(t, m)| match m {
            FanoutMsg::Dispatches(b) => Some((t, b.dispatches.len())),
            FanoutMsg::Dispatch(_) => Some((t, 1)),
            _ => None,
        })
        .collect();
    let to = |w: &str| out.iter().filter(|(t, _)| *t == format!("w/{w}/")).map(|(_, n)| n).sum::<usize>();
    assert_eq!((to("w1"), to("w2")), (3, 3), "{out:?}");
}
