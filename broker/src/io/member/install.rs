//! A follower installing a snapshot from the leader: raft-rs has recorded
//! it (its log now starts after the snapshot's index); the io swaps the
//! event journal for the staged one (see `io::snapshot`), then
//! [`Member::snapshot_installed`] rebuilds the core from it and applies
//! what raft committed after it.

use super::Member;
use crate::core::{Core, Millis};
use crate::io::error::BrokerError;
use crate::io::recorder::{Recorder, SegmentedLog};
use crate::io::recover::replay_applied;
use orderly_replication::Applied;

/// A snapshot raft installed, waiting for the io to swap the journal.
pub(super) struct Pending {
    pub(super) index: u64,
    pub(super) term: u64,
    /// Entries committed after it in the same ready, applied after the swap.
    pub(super) applied: Vec<Applied>,
}

impl<A> Member<A> {
    /// The snapshot (index, term) raft installed in the last
    /// [`Member::handle_ready`]: the io must now put the staged event
    /// journal of that index in place and call
    /// [`Member::snapshot_installed`].
    pub fn installing(&self) -> Option<(u64, u64)> {
        self.install.as_ref().map(|pending| (pending.index, pending.term))
    }

    /// After the io swapped in the snapshot's event journal (in
    /// `recorder.log`): the core is rebuilt from it (its last marker must be
    /// the snapshot's index), and the entries committed after it applied.
    pub fn snapshot_installed<L: SegmentedLog>(
        &mut self,
        core: &mut Core,
        recorder: &mut Recorder<L>,
        now: Millis,
    ) -> Result<(), BrokerError> {
        let pending = self.install.take().expect("a snapshot being installed");
        let view = core.group_view();
        let (rebuilt, anchors, applied) =
            replay_applied(recorder.log.journal(), self.core_config.clone(), now, |_, _, _| {})?;
        if applied != pending.index {
            return Err(BrokerError::Group(format!(
                "the installed snapshot's journal holds entries up to {applied}, not {} as raft recorded",
                pending.index
            )));
        }
        *core = rebuilt;
        core.set_group_view(view);
        recorder.anchors = anchors;
        self.applied = applied;
        self.retained.clear();
        tracing::info!(index = pending.index, term = pending.term, "snapshot installed: core rebuilt from it");
        if !pending.applied.is_empty() {
            self.apply_committed(core, recorder, pending.applied)?;
        }
        Ok(())
    }

    /// Steps a raft message that arrived outside a raft payload (the end
    /// of a snapshot stream; the transport authenticated its sender).
    pub fn step_message(&mut self, message: orderly_replication::Message) {
        self.node.step(message);
    }

    /// The leader's word on a snapshot stream to member `to` (see
    /// `Node::report_snapshot`).
    pub fn report_snapshot(&mut self, to: u64, delivered: bool) {
        self.node.report_snapshot(to, delivered);
    }

    /// Where a snapshot of this member's event journal stands: the last
    /// applied index and its term (the Raft log keeps it: it is compacted
    /// only well below). `None` before anything is applied.
    pub fn snapshot_point(&self) -> Option<(u64, u64)> {
        let term = self.node.storage().term_of(self.applied)?;
        Some((self.applied, term)).filter(|&(index, _)| index > 0)
    }
}
