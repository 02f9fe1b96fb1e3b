//! The end of a turn over a real journal on the simulated disk, filled up:
//! a full disk holds the turn (nothing published before its commit) and
//! the turn goes on once space returns (issue 13, reproduction 4: a full
//! disk used to stop the broker).

use std::path::Path;
use std::sync::Arc;

use orderly_common::protocol::{FanoutMsg, IntakeMsg, Items};
use orderly_journal::{Journal, Options, SimStorage, SpaceState};
use serde_bytes::ByteBuf;

use super::{persist_then_publish, Persisted, Recorder};
use crate::compaction::Anchors;
use crate::core::codec::decode_event;
use crate::core::{Core, CoreConfig, Event};

const SEGMENT_BYTES: u64 = 16 * 1024;
const ITEM_BYTES: usize = 1000;

fn options() -> Options {
    Options { segment_bytes_target: SEGMENT_BYTES, ..Options::default() }
}

fn open(sim: &SimStorage) -> Journal {
    Journal::open_on(Arc::new(sim.clone()), Path::new("/data/journal"), options()).expect("opens").0
}

/// One whole order in one `items` message.
fn whole_order(core: &mut Core, id: &str) {
    let data = vec![ByteBuf::from(vec![b'x'; ITEM_BYTES])];
    let items = Items { producer: "p".into(), order: id.into(), begin: true, first: 0, data, finish: Some(1) };
    core.handle_intake(IntakeMsg::Items(items), 1);
}

/// One turn; the confirms it published.
fn turn(core: &mut Core, recorder: &mut Recorder<Journal>) -> (Persisted, Vec<String>) {
    let mut confirmed = Vec::new();
    let persisted = persist_then_publish(core, recorder, |out| {
        match FanoutMsg::decode(&out.body) {
            Ok(FanoutMsg::Confirm(c)) => confirmed.push(c.order),
            Ok(FanoutMsg::Confirms(c)) => confirmed.extend(c.orders),
            _ => {}
        }
        Ok(())
    })
    .expect("a full disk is not an error");
    (persisted, confirmed)
}

#[test]
fn a_full_disk_holds_the_turn_until_space_returns() {
    let sim = SimStorage::new(13);
    let journal = open(&sim);
    // The disk is full from here on: the segment and its reserve exist,
    // nothing more can be allocated.
    sim.set_capacity(Some(sim.used_bytes()));
    let mut core = Core::new(CoreConfig::with_incarnation(1));
    let mut recorder = Recorder::new(journal, Anchors::default());
    let mut confirmed = Vec::new();
    let mut held_order = None;
    for n in 0..1000 {
        let id = format!("o{n}");
        whole_order(&mut core, &id);
        match turn(&mut core, &mut recorder) {
            (Persisted::Published, ids) => {
                assert_eq!(ids, [id.as_str()]);
                confirmed.extend(ids);
            }
            (Persisted::Held, ids) => {
                assert!(ids.is_empty(), "nothing is published before its commit: {ids:?}");
                held_order = Some(id);
                break;
            }
        }
    }
    let held_order = held_order.expect("the disk filled up");
    // The reserve carried the broker one whole segment past the full disk.
    assert!(confirmed.len() as u64 * ITEM_BYTES as u64 > SEGMENT_BYTES, "{} confirmed", confirmed.len());
    assert!(matches!(recorder.log.space(), SpaceState::Low { .. }));
    assert!(
        recorder.held().is_some_and(|why| why.contains("No space") || why.contains("no space")),
        "{:?}",
        recorder.held()
    );
    assert!(!recorder.log.is_poisoned());
    // Still full: the retry holds again, publishing nothing.
    assert_eq!(turn(&mut core, &mut recorder), (Persisted::Held, vec![]));

    sim.set_capacity(None);
    assert_eq!(recorder.log.retry_reserve(), SpaceState::Ok);
    let (persisted, ids) = turn(&mut core, &mut recorder);
    assert_eq!((persisted, ids), (Persisted::Published, vec![held_order.clone()]));
    assert_eq!(recorder.held(), None);
    confirmed.push(held_order);

    // Every confirmed order survives a power cut.
    drop(recorder);
    sim.power_cut();
    let journal = open(&sim);
    let mut recovered = Vec::new();
    journal
        .replay(|seq, _, body| {
            if let Event::Accepted { key, .. } = decode_event(seq, body).expect("decodes") {
                recovered.push(key.id);
            }
            Ok::<(), ()>(())
        })
        .expect("replays");
    assert_eq!(recovered, confirmed);
}

/// A batch of whole orders (`orders`) is one record: every order's payload
/// is read back from it by key, and a replay holds every order again.
#[test]
fn a_batch_is_one_record_read_back_by_key_and_replayed() {
    use orderly_common::protocol::{Orders, WholeOrder};
    let sim = SimStorage::new(7);
    let journal = open(&sim);
    let mut core = Core::new(CoreConfig::with_incarnation(1));
    let mut recorder = Recorder::new(journal, Anchors::default());
    let ids = ["a", "b", "c"];
    let orders = ids
        .iter()
        .enumerate()
        .map(|(n, id)| WholeOrder { order: (*id).into(), data: vec![ByteBuf::from(vec![b'0' + n as u8; 10])] })
        .collect();
    core.handle_intake(IntakeMsg::Orders(Orders { producer: "p".into(), orders }), 1);
    let (persisted, confirmed) = turn(&mut core, &mut recorder);
    assert_eq!((persisted, confirmed), (Persisted::Published, vec!["a".into(), "b".into(), "c".into()]));
    let mut located = Vec::new();
    recorder
        .log
        .replay_located(|at, _| {
            located.push(at);
            Ok::<(), ()>(())
        })
        .expect("replays");
    let [at] = located.as_slice() else { panic!("one record for the batch: {located:?}") };
    // Out of arrival order, and one order twice (a redelivery after a
    // spill): the same items each time.
    for n in [0, 1, 2, 1, 0] {
        let key = orderly_common::OrderKey::new("p", ids[n]);
        let items = recorder.read_items(*at, &key).expect("read back by key");
        assert_eq!(items.to_vec(), [ByteBuf::from(vec![b'0' + n as u8; 10])]);
    }
    // The batch is read from disk and decoded once for all its orders.
    assert_eq!(recorder.payload_reads, 1);
    let stranger = orderly_common::OrderKey::new("p", "z");
    let error = recorder.read_items(*at, &stranger).unwrap_err().to_string();
    assert!(error.contains("expected an order's payload"), "{error}");
    drop(recorder);
    let journal = open(&sim);
    let (replayed, _) =
        crate::io::recover::replay(&journal, CoreConfig::with_incarnation(2), 5, |_, _, _| {}).expect("replays");
    assert_eq!(replayed.status().pending_orders, 3);
}

/// Every kind of event recorded through the journal (encoded straight
/// into its batch buffer) reads back as the bytes 0.5 wrote for it
/// (`rmp_serde::to_vec`, then copied), where `append` said it would be.
#[test]
fn every_kind_of_event_is_recorded_as_the_bytes_of_0_5() {
    let sim = SimStorage::new(21);
    let mut recorder = Recorder::new(open(&sim), Anchors::default());
    let events = crate::core::codec::one_event_of_each_kind();
    let mut placed = Vec::new();
    for event in &events {
        placed.push(recorder.append(event).expect("append").expect("room on the disk"));
    }
    assert!(recorder.commit().expect("commit"));
    let mut bodies = Vec::new();
    recorder
        .log
        .replay(|_, _, body| {
            bodies.push(body.to_vec());
            Ok::<(), std::convert::Infallible>(())
        })
        .expect("replay");
    assert_eq!(bodies.len(), events.len());
    for ((event, body), at) in events.iter().zip(&bodies).zip(placed) {
        assert_eq!(body, &rmp_serde::to_vec(event).unwrap(), "{event:?}");
        assert_eq!(&recorder.log.read_at(at).expect("read back"), body, "{event:?}");
    }
}
