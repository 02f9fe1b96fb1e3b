//! Compaction of a group member's two journals (see docs/REPLICATION.md,
//! "Compaction and catch-up"):
//!
//! - its **event journal**, locally, with the single broker's copy-forward
//!   [`compact`], but only while its core describes *committed* state;
//! - its **Raft log**, up to what the event journal holds durably, less
//!   [`RAFT_LOG_RETAIN_ENTRIES`].

use super::{Member, Role};
use crate::core::{Core, Millis};
use crate::io::error::BrokerError;
use crate::io::recorder::{compact, Recorder, SegmentedLog};
use crate::io::COMPACTION_LIVE_PERCENT_MAX;

/// Applied entries the Raft log keeps below the applied index: a follower
/// that lags by fewer (a restart, a short partition: a few hundred leader
/// turns, a second or more at full load) catches up from the log, entry by
/// entry, instead of being sent a whole snapshot. Each entry is one turn,
/// up to `PROPOSAL_BYTES_MAX`, usually a few KiB.
pub const RAFT_LOG_RETAIN_ENTRIES: u64 = 512;
/// The Raft log is compacted in steps of this many entries: each step
/// costs an fsync of the Raft journal, so not every turn.
pub const RAFT_LOG_COMPACT_STEP: u64 = 128;
/// Longest a leader stops reading intake and control to let its
/// proposals commit so it can compact (the compaction barrier); then it
/// serves again for as long before it tries again. A barrier normally
/// lasts one commit round trip; it is only this long while a majority is
/// unreachable (then nothing could be confirmed anyway).
pub const COMPACTION_BARRIER_MS_MAX: Millis = 500;

/// The compaction barrier of a leader (see [`Member::compaction_barrier`]).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Barrier {
    /// Since when the leader has not read intake, if it is holding.
    since: Option<Millis>,
    /// No new barrier before this (one lasted too long).
    not_before: Millis,
}

impl<A> Member<A> {
    /// Whether this member's core is the committed state: a follower's
    /// always is (it applies only committed batches); a leader's is when
    /// nothing it made is waiting for commit.
    fn core_is_committed(&self) -> bool {
        match self.role {
            Role::Follower | Role::CatchingUp { .. } => true,
            Role::Leader => self.applied == self.node.last_index() && self.held.is_empty(),
        }
    }

    /// True while the leader should not read intake and control this turn
    /// (the compaction barrier). Why: copy-forward writes the core's view
    /// of each live order into the event journal, and a leader's core is
    /// speculative, ahead of the group by the proposals not yet committed.
    /// If an uncommitted `Acked` made an order look resolved, compaction
    /// could remove the segment holding that live order's payload; after a
    /// step-down (the proposal never committed) the rebuilt core would not
    /// know the order: a confirmed order lost. So a leader compacts only
    /// when nothing is in flight; under steady load it never is, hence
    /// this brief pause (bounded by [`COMPACTION_BARRIER_MS_MAX`]).
    /// `disk_full`: only removals count then (nothing is copied).
    pub fn compaction_barrier<L: SegmentedLog>(
        &mut self,
        recorder: &Recorder<L>,
        disk_full: bool,
        now: Millis,
    ) -> bool {
        if self.role != Role::Leader || !needs_compaction(recorder, disk_full) || self.core_is_committed() {
            self.barrier.since = None;
            return false;
        }
        if now < self.barrier.not_before {
            return false;
        }
        let since = *self.barrier.since.get_or_insert(now);
        if now.saturating_sub(since) > COMPACTION_BARRIER_MS_MAX {
            tracing::warn!(held_ms = now - since, "compaction barrier: proposals do not commit; serving again");
            self.barrier = Barrier { since: None, not_before: now + COMPACTION_BARRIER_MS_MAX };
            return false;
        }
        true
    }

    /// Whether a compaction barrier is on (the io's poll leaves intake and
    /// control alone meanwhile).
    pub fn holds_barrier(&self) -> bool {
        self.barrier.since.is_some()
    }

    /// The end of a turn: compacts the event journal when the core is the
    /// committed state (then a fresh applied marker, so the newest marker
    /// is never in a removed segment), then the Raft log up to what the
    /// event journal holds durably. Returns the event-journal segments
    /// removed.
    pub fn compact<L: SegmentedLog>(
        &mut self,
        core: &mut Core,
        recorder: &mut Recorder<L>,
        disk_full: bool,
    ) -> Result<u32, BrokerError> {
        let mut removed = 0;
        if self.core_is_committed() && needs_compaction(recorder, disk_full) {
            self.barrier.since = None;
            removed = compact(core, recorder, disk_full)?;
            if removed > 0 {
                super::append_marker(recorder, self.applied)?;
                if !recorder.commit()? {
                    return Err(BrokerError::Group("the journal's disk is full".into()));
                }
            }
        }
        // Everything applied is committed (fsynced) in the event journal.
        let to = self.applied.saturating_sub(RAFT_LOG_RETAIN_ENTRIES).min(self.node.storage().hard_state().commit);
        if to >= self.node.storage().snapshot_index() + RAFT_LOG_COMPACT_STEP {
            let segments = self.node.compact(to)?;
            tracing::debug!(to, segments, "raft log compacted");
        }
        Ok(removed)
    }
}

/// Whether compaction would do something now: the oldest segment (not the
/// active one) is resolved or (unless the disk is full) sparse enough to
/// copy forward (see `Anchors::plan`, which this mirrors without listing
/// keys).
fn needs_compaction<L: SegmentedLog>(recorder: &Recorder<L>, disk_full: bool) -> bool {
    let segments = recorder.log.segments();
    if segments.len() < 2 {
        return false;
    }
    let oldest = recorder.anchors.segment(segments[0].id);
    oldest.live == 0 || (!disk_full && oldest.live * 100 <= oldest.anchored * COMPACTION_LIVE_PERCENT_MAX)
}
