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

use std::collections::BTreeMap;

use orderly_common::OrderKey;

use crate::core::table::Table;

use crate::core::Event;

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

/// The anchor index. See the module docs.
#[derive(Debug, Default)]
pub struct Anchors {
    /// Each anchored order's segment. One per live order, so in the
    /// core's compact table (each key stored once, no per-entry node).
    by_key: Table<u64>,
    segments: BTreeMap<u64, SegmentLive>,
}

impl Anchors {
    /// Notes `event`, recorded in `segment`.
    pub fn observe(&mut self, event: &Event, segment: u64) {
        match event {
            Event::Begun { key, .. } | Event::Restored { key, .. } | Event::Accepted { key, .. } => {
                self.anchor(key, segment);
            }
            // An acknowledged order stays live where its Acked record is,
            // until its key leaves the dedup window (Forgotten).
            Event::Acked { key } | Event::Discarded { key } => {
                self.anchor(key, segment);
            }
            Event::AcceptedBatch { orders, .. } => {
                for order in orders {
                    self.anchor(&order.key, segment);
                }
            }
            Event::Dropped { key, .. } | Event::Forgotten { key } => self.resolve(key),
            _ => {
                self.segments.entry(segment).or_default();
            }
        }
    }

    fn anchor(&mut self, key: &OrderKey, segment: u64) {
        self.resolve(key);
        self.by_key.insert(key, segment);
        let entry = self.segments.entry(segment).or_default();
        entry.live += 1;
        entry.anchored += 1;
    }

    fn resolve(&mut self, key: &OrderKey) {
        if let Some(segment) = self.by_key.remove(key) {
            if let Some(entry) = self.segments.get_mut(&segment) {
                entry.live -= 1;
            }
        }
    }

    pub fn segment(&self, segment: u64) -> SegmentLive {
        self.segments.get(&segment).copied().unwrap_or_default()
    }

    /// Decides about `segment` (the oldest, not the active one). Copying
    /// forward waits until at most `live_ratio_max_percent` of its orders
    /// are live, so a backlog is not rewritten over and over.
    pub fn plan(&self, segment: u64, live_ratio_max_percent: u64) -> Plan {
        let s = self.segment(segment);
        if s.live == 0 {
            Plan::Remove
        } else if s.live * 100 <= s.anchored * live_ratio_max_percent {
            let mut keys: Vec<OrderKey> =
                self.by_key.iter().filter(|(_, &seg)| seg == segment).map(|(k, _)| k.to_key()).collect();
            keys.sort();
            Plan::CopyForward(keys)
        } else {
            Plan::Keep
        }
    }

    /// Makes room for `orders` anchored orders at once.
    pub fn reserve(&mut self, orders: usize) {
        self.by_key.reserve(orders);
    }

    /// The segment was removed.
    pub fn forget_segment(&mut self, segment: u64) {
        self.segments.remove(&segment);
    }

    pub fn live_orders(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> OrderKey {
        OrderKey::new("p", id)
    }

    #[test]
    fn segments_empty_out_as_orders_resolve() {
        let mut a = Anchors::default();
        a.observe(&Event::Begun { key: key("a"), at_ms: 0 }, 1);
        a.observe(&Event::Begun { key: key("b"), at_ms: 0 }, 1);
        a.observe(&Event::Begun { key: key("c"), at_ms: 0 }, 1);
        a.observe(&Event::Acked { key: key("a") }, 2);
        assert_eq!(a.plan(1, 50), Plan::Keep);
        a.observe(&Event::Acked { key: key("b") }, 2);
        assert_eq!(a.plan(1, 50), Plan::CopyForward(vec![key("c")]));
        a.observe(&Event::Acked { key: key("c") }, 2);
        assert_eq!(a.plan(1, 50), Plan::Remove);
        // Acknowledged keys stay live (dedup window) where their Acked is.
        assert_eq!(a.segment(2).live, 3);
        for k in ["a", "b", "c"] {
            a.observe(&Event::Forgotten { key: key(k) }, 3);
        }
        assert_eq!(a.plan(2, 50), Plan::Remove);
    }

    #[test]
    fn a_copy_moves_the_anchor() {
        let mut a = Anchors::default();
        a.observe(&Event::Begun { key: key("a"), at_ms: 0 }, 1);
        let snapshot = crate::core::Snapshot::Sealed {
            items: vec![],
            attempts: 0,
            dead: None,
            retry_in_ms: 0,
            first_seen_unix_ms: 0,
            dead_since_unix_ms: 0,
            last_reason: None,
        };
        a.observe(&Event::Restored { key: key("a"), snapshot }, 3);
        assert_eq!(a.plan(1, 50), Plan::Remove);
        assert_eq!(a.segment(3).live, 1);
        assert_eq!(a.live_orders(), 1);
    }
}
