//! Which journal segments still hold live orders (sans-IO).
//!
//! Each live order is *anchored* in the segment that holds its first record
//! (`Begun`) or its latest copy (`Restored`). Segments are removed oldest
//! first only, so a later record of a resolved order (an `Acked` in segment
//! 5 for a `Begun` in segment 3) can never outlive the records it resolves
//! — replay would otherwise resurrect the order. The oldest segment goes
//! when none of its orders is live; when most are dead, the live ones are
//! copied forward (`Restored`) and then it goes. A live order's records in
//! later segments that replay before its copy are ignored by `apply`
//! (unknown order) and the copy supersedes them.
//!
//! The anchor of each order lives in the core's own entry for its key
//! (`Core::anchor`: the partial order, the sealed order, then the dedup
//! window's entry, which an order's anchor moves to when it is retired),
//! so the keys are not stored twice (issue 20: ≤ 128 bytes an order).
//! What leaves the core releases its anchor (`Core::drain_released_anchors`);
//! here are only the counts per segment.

use std::collections::BTreeMap;
use std::num::NonZeroU64;

use orderly_common::OrderKey;
use orderly_journal::RecordAt;

use crate::core::{Core, Event};

/// Live orders per segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentLive {
    /// Orders anchored here that are still live.
    pub live: u64,
    /// Orders ever anchored here.
    pub anchored: u64,
}

/// What compaction should do with the oldest segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Keep it: too much of it is live.
    Keep,
    /// Nothing in it is live: remove it.
    Remove,
    /// Most of it is dead: copy these live orders forward, then remove it.
    CopyForward(Vec<OrderKey>),
}

/// The anchor counts. See the module docs.
#[derive(Debug, Default)]
pub struct Anchors {
    segments: BTreeMap<u64, SegmentLive>,
}

impl Anchors {
    /// Notes `event`, recorded at `at`, after `core` applied it (the core
    /// holds the anchors). A record holding an order's whole payload also
    /// tells the core where (`Core::payload_stored`, same probe).
    pub fn observe(&mut self, core: &mut Core, event: &Event, at: RecordAt) {
        let segment = at.segment;
        self.segments.entry(segment).or_default();
        let mut payload = false;
        event.for_each_payload_key(|key| {
            payload = true;
            let old = core.payload_stored(key, at);
            self.count(segment, old);
        });
        if !payload {
            let at = NonZeroU64::new(segment).expect("journal segment ids start at 1");
            match event {
                Event::Begun { key, .. } | Event::Restored { key, .. } => {
                    let old = core.anchor(key, at);
                    self.count(segment, old);
                }
                // An acknowledged order stays live where its Acked record is,
                // until its key leaves the dedup window (Forgotten).
                Event::Acked { key } | Event::Discarded { key } => {
                    let old = core.anchor_remembered(key, at);
                    self.count(segment, old);
                }
                // Dropped, Forgotten: the core released the anchor (below).
                _ => {}
            }
        }
        let segments = &mut self.segments;
        core.drain_released_anchors(|released| resolve(segments, released));
    }

    /// Counts a key anchored in `segment` by a record; `old`: what the
    /// core returned (`None`: the key left in the turn that wrote the
    /// record, so nothing is live to anchor; `Some(old)`: the anchor it
    /// had, which is live no more).
    fn count(&mut self, segment: u64, old: Option<Option<NonZeroU64>>) {
        let entry = self.segments.entry(segment).or_default();
        entry.anchored += 1;
        let Some(old) = old else { return };
        entry.live += 1;
        if let Some(old) = old {
            resolve(&mut self.segments, old);
        }
    }

    pub fn segment(&self, segment: u64) -> SegmentLive {
        self.segments.get(&segment).copied().unwrap_or_default()
    }

    /// Decides about `segment` (the oldest, not the active one). Copying
    /// forward waits until at most `live_ratio_max_percent` of its orders
    /// are live, so a backlog is not rewritten over and over.
    pub fn plan(&self, core: &Core, segment: u64, live_ratio_max_percent: u64) -> Plan {
        let s = self.segment(segment);
        if s.live == 0 {
            Plan::Remove
        } else if s.live * 100 <= s.anchored * live_ratio_max_percent {
            let at = NonZeroU64::new(segment).expect("a segment with live orders is a journal segment");
            Plan::CopyForward(core.anchored_in(at))
        } else {
            Plan::Keep
        }
    }

    /// The segment was removed.
    pub fn forget_segment(&mut self, segment: u64) {
        self.segments.remove(&segment);
    }

    /// Live orders anchored in all segments.
    pub fn live_orders(&self) -> u64 {
        self.segments.values().map(|s| s.live).sum()
    }
}

/// An order anchored in `segment` is no longer live there.
fn resolve(segments: &mut BTreeMap<u64, SegmentLive>, segment: NonZeroU64) {
    if let Some(entry) = segments.get_mut(&segment.get()) {
        entry.live -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::CoreConfig;

    fn key(id: &str) -> OrderKey {
        OrderKey::new("p", id)
    }

    /// Applies `event` to `core`, then notes it as recorded in `segment`.
    fn record(core: &mut Core, anchors: &mut Anchors, event: Event, segment: u64) {
        core.apply(&event);
        anchors.observe(core, &event, at(segment));
    }

    /// A record in `segment` (where in it does not matter here).
    fn at(segment: u64) -> RecordAt {
        RecordAt { seq: segment, segment, offset: 0 }
    }

    fn accepted(id: &str) -> Event {
        Event::Accepted { key: key(id), items: Default::default(), at_unix_ms: 0 }
    }

    #[test]
    fn segments_empty_out_as_orders_resolve() {
        let (mut core, mut a) = (Core::new(CoreConfig::with_incarnation(1)), Anchors::default());
        for id in ["a", "b", "c"] {
            record(&mut core, &mut a, accepted(id), 1);
        }
        record(&mut core, &mut a, Event::Acked { key: key("a") }, 2);
        assert_eq!(a.plan(&core, 1, 50), Plan::Keep);
        record(&mut core, &mut a, Event::Acked { key: key("b") }, 2);
        assert_eq!(a.plan(&core, 1, 50), Plan::CopyForward(vec![key("c")]));
        record(&mut core, &mut a, Event::Acked { key: key("c") }, 2);
        assert_eq!(a.plan(&core, 1, 50), Plan::Remove);
        // Acknowledged keys stay live (dedup window) where their Acked is.
        assert_eq!(a.segment(2).live, 3);
        assert_eq!(core.anchored_in(NonZeroU64::new(2).unwrap()), vec![key("a"), key("b"), key("c")]);
        for k in ["a", "b", "c"] {
            record(&mut core, &mut a, Event::Forgotten { key: key(k) }, 3);
        }
        assert_eq!(a.plan(&core, 2, 50), Plan::Remove);
        assert_eq!(a.live_orders(), 0);
    }

    #[test]
    fn a_partial_order_stays_anchored_where_it_began_until_dropped() {
        let (mut core, mut a) = (Core::new(CoreConfig::with_incarnation(1)), Anchors::default());
        record(&mut core, &mut a, Event::Begun { key: key("a"), at_ms: 0 }, 1);
        record(&mut core, &mut a, Event::Sealed { key: key("a"), count: 0, at_unix_ms: 0 }, 2);
        assert_eq!((a.segment(1).live, a.segment(2).live), (1, 0));
        record(&mut core, &mut a, Event::Acked { key: key("a") }, 3);
        assert_eq!((a.segment(1).live, a.segment(3).live), (0, 1));
        record(&mut core, &mut a, Event::Begun { key: key("b"), at_ms: 0 }, 3);
        record(
            &mut core,
            &mut a,
            Event::Dropped { key: key("b"), reason: orderly_common::protocol::RejectReason::Expired { age_ms: 1 } },
            4,
        );
        assert_eq!((a.segment(3).live, a.live_orders()), (1, 1));
    }

    #[test]
    fn a_copy_moves_the_anchor() {
        let (mut core, mut a) = (Core::new(CoreConfig::with_incarnation(1)), Anchors::default());
        record(&mut core, &mut a, accepted("a"), 1);
        let snapshot = sealed_copy();
        // Compaction records the copy without applying it (the core holds
        // that state already); a replay applies it.
        a.observe(&mut core, &Event::Restored { key: key("a"), snapshot: snapshot.clone() }, at(3));
        assert_eq!(a.plan(&core, 1, 50), Plan::Remove);
        assert_eq!((a.segment(3).live, a.live_orders()), (1, 1));
        record(&mut core, &mut a, Event::Restored { key: key("a"), snapshot }, 4);
        assert_eq!((a.segment(3).live, a.segment(4).live, a.live_orders()), (0, 1, 1));
    }

    fn sealed_copy() -> crate::core::Snapshot {
        crate::core::Snapshot::Sealed {
            items: Default::default(),
            attempts: 0,
            dead: None,
            retry_in_ms: 0,
            first_seen_unix_ms: 0,
            dead_since_unix_ms: 0,
            last_reason: None,
        }
    }

    /// A sealed order's anchor is its payload record's segment, except for
    /// one sealed from a partial: anchored where it began until a copy
    /// holds its payload (a wrong anchor here loses it to compaction).
    #[test]
    fn a_sealed_partial_stays_anchored_where_it_began_until_a_copy_holds_it() {
        let (mut core, mut a) = (Core::new(CoreConfig::with_incarnation(1)), Anchors::default());
        let one = |s: u64| NonZeroU64::new(s).unwrap();
        // One turn: begun and sealed before either record is written.
        let events =
            [Event::Begun { key: key("a"), at_ms: 0 }, Event::Sealed { key: key("a"), count: 0, at_unix_ms: 0 }];
        for event in &events {
            core.apply(event);
        }
        a.observe(&mut core, &events[0], at(1));
        a.observe(&mut core, &events[1], at(2));
        assert_eq!((a.segment(1).live, a.segment(2).live, core.anchored_in(one(1))), (1, 0, vec![key("a")]));
        // Accepted in the same segments: anchored where its payload is.
        record(&mut core, &mut a, accepted("b"), 2);
        assert_eq!((a.segment(2).live, core.anchored_in(one(2))), (1, vec![key("b")]));
        // The copy (a spill's, or compaction's) holds a's payload now.
        a.observe(&mut core, &Event::Restored { key: key("a"), snapshot: sealed_copy() }, at(3));
        assert_eq!((a.segment(1).live, a.segment(3).live, core.anchored_in(one(3))), (0, 1, vec![key("a")]));
        assert_eq!(a.plan(&core, 1, 50), Plan::Remove);
        // Acknowledged: the anchor goes with it to the dedup window, then
        // to its Acked record.
        core.apply(&Event::Acked { key: key("a") });
        assert_eq!(core.anchored_in(one(3)), vec![key("a")]);
        a.observe(&mut core, &Event::Acked { key: key("a") }, at(4));
        assert_eq!((a.segment(3).live, a.segment(4).live, a.live_orders()), (0, 1, 2));
    }

    #[test]
    fn a_key_that_left_in_the_same_turn_is_not_live() {
        let (mut core, mut a) = (Core::new(CoreConfig::with_incarnation(1)), Anchors::default());
        let events = [accepted("a"), Event::Acked { key: key("a") }, Event::Forgotten { key: key("a") }];
        // Live: the core applies a whole turn before its records are written.
        for event in &events {
            core.apply(event);
        }
        for event in &events {
            a.observe(&mut core, event, at(1));
        }
        assert_eq!((a.segment(1).live, a.segment(1).anchored), (0, 2));
        assert_eq!(a.plan(&core, 1, 50), Plan::Remove);
    }
}
