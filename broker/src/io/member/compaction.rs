//! Compaction of a group member's two journals (see docs/REPLICATION.md,
//! "Compaction and catch-up"):
//!
//! - its **event journal**, locally, with the single broker's copy-forward
//!   [`compact`], but only while its core describes *committed* state;
//! - its **Raft log**, up to what the event journal holds durably (its
//!   last fsynced applied marker: entries are applied with lazy commits),
//!   less [`RAFT_LOG_RETAIN_ENTRIES`].

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
/// ... and at most this many bytes of them: the log is held in memory
/// (raft-rs's `MemStorage`), and under full load a turn's entry is
/// hundreds of KiB (measured: a group leader at 277 MiB RSS with 512
/// entries retained, a single broker at 72 MiB). Past it the log is
/// compacted down to half of it at once (one fsync, not one per turn).
pub const RAFT_LOG_RETAIN_BYTES: u64 = 32 * 1024 * 1024;
const _: () = assert!(RAFT_LOG_RETAIN_BYTES >= 2 * orderly_replication::node::PROPOSAL_BYTES_MAX as u64);
/// The Raft log is compacted in steps of this many entries: each step
/// costs an fsync of the Raft journal, so not every turn.
pub const RAFT_LOG_COMPACT_STEP: u64 = 128;
/// Longest a leader stops reading intake and control to let its
/// proposals commit so it can compact (the compaction barrier); then it
/// serves again for as long before it tries again. A barrier normally
/// lasts one commit round trip; it is only this long while a majority is
/// unreachable (then nothing could be confirmed anyway).
pub const COMPACTION_BARRIER_MS_MAX: Millis = 500;

/// The applied entries the Raft log still holds, oldest first, with their
/// sizes (those applied since this process started: a restart's log is
/// bounded by count until then).
#[derive(Debug, Default)]
pub(super) struct Retained {
    entries: std::collections::VecDeque<(u64, u64)>,
    bytes: u64,
}

impl Retained {
    pub(super) fn push(&mut self, index: u64, bytes: u64) {
        self.entries.push_back((index, bytes));
        self.bytes += bytes;
    }

    pub(super) fn clear(&mut self) {
        *self = Retained::default();
    }
}

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
            // A replay applies events only at a marker and takes the last
            // marker's index as applied: a marker must be in the journal
            // after every record a removal keeps relying on. One now (the
            // segment to go may hold the last one), and one after the
            // copies, in their commit (`Recorder::copies_marker`), both
            // durable before any segment goes.
            super::append_marker(recorder, self.applied)?;
            if !recorder.commit()? {
                return Err(BrokerError::Group("the journal's disk is full".into()));
            }
            recorder.copies_marker = Some(super::applied_marker(self.applied));
            let result = compact(core, recorder, disk_full);
            recorder.copies_marker = None;
            removed = result?;
        }
        // Entries are applied with lazy commits: the applied index is
        // durable once nothing written awaits an fsync. Only below it may
        // the Raft log go — a power cut takes the event journal back to its
        // last fsynced marker, and raft must still hold every entry after.
        if !recorder.log.has_unsynced() {
            self.durable_applied = self.applied;
        }
        let mut to = self.durable_applied.saturating_sub(RAFT_LOG_RETAIN_ENTRIES);
        let over_bytes = self.retained.bytes > RAFT_LOG_RETAIN_BYTES;
        while let Some(&(index, bytes)) = self.retained.entries.front() {
            let bytes_bound = over_bytes && self.retained.bytes > RAFT_LOG_RETAIN_BYTES / 2;
            let keep = index > self.durable_applied || (index > to && !bytes_bound);
            if keep {
                break;
            }
            to = to.max(index);
            self.retained.bytes -= bytes;
            self.retained.entries.pop_front();
        }
        let to = to.min(self.node.storage().hard_state().commit);
        let snapshot_index = self.node.storage().snapshot_index();
        if to >= snapshot_index + RAFT_LOG_COMPACT_STEP || (over_bytes && to > snapshot_index) {
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use orderly_common::protocol::{IntakeMsg, Items};
    use orderly_journal::{Journal, Options, SimStorage};
    use orderly_replication::node::ELECTION_TICKS_MIN;
    use orderly_replication::{JournalStorage, Node, NodeConfig};
    use serde_bytes::ByteBuf;

    use super::*;
    use crate::core::CoreConfig;
    use crate::io::recover::replay_applied;

    fn options() -> Options {
        Options { segment_bytes_target: 16 * 1024, ..Options::default() }
    }

    /// An order with a gap: its `Begun` is anchored, its `Dropped`
    /// resolves it, so the segments it fills become removable.
    fn gapped_order(core: &mut Core, id: &str) {
        let item = |first, data: Vec<ByteBuf>, begin, finish| {
            IntakeMsg::Items(Items { producer: "p".into(), order: id.into(), begin, first, data, finish })
        };
        core.handle_intake(item(0, vec![ByteBuf::from(vec![b'x'; 1000])], true, None), 1);
        core.handle_intake(item(2, vec![ByteBuf::from(vec![b'y'; 10])], false, Some(3)), 1);
    }

    /// A leader deposed between proposing an entry and applying it drops
    /// the events it kept for it: its core is rebuilt from the journal,
    /// so the entry, committed after all, must be decoded and applied to
    /// the rebuilt core as another leader's would be (were the kept events
    /// recorded instead, the rebuilt core would never apply them).
    #[test]
    fn a_deposed_leader_applies_its_own_committed_entry_from_the_entry() {
        let One { mut core, mut recorder, mut member, mut now, .. } =
            group_of_one(23, options(), options(), |journal| journal);
        let key = orderly_common::OrderKey::new("p", "kept");
        let whole = IntakeMsg::Items(Items {
            producer: "p".into(),
            order: "kept".into(),
            begin: true,
            first: 0,
            data: vec![ByteBuf::from(vec![b'k'; 100])],
            finish: Some(1),
        });
        core.handle_intake(whole, 1);
        member.propose_turn(&mut core, &mut recorder, Vec::new(), now).unwrap();
        assert!(core.snapshot(&key).is_some(), "the leader's core holds the order");
        // A group of one is not outvoted: step down as a deposed leader does.
        member.step_down(&mut core, &mut recorder, now).unwrap();
        assert!(core.snapshot(&key).is_none(), "rebuilt from the journal, which lacks it yet");
        while !member.serves() {
            now += RAFT_TICK_MS_FOR_TESTS;
            assert!(now < 60_000, "re-elected");
            member.tick(now);
            member.handle_ready(&mut core, &mut recorder, now).unwrap();
        }
        assert!(core.snapshot(&key).is_some(), "the committed entry applied to the rebuilt core");
        let (replayed, _, _) =
            replay_applied(recorder.log.journal(), CoreConfig::with_incarnation(1), now, |_, _, _| {})
                .expect("replays");
        assert!(replayed.snapshot(&key).is_some(), "and recorded in the journal");
    }

    /// A group of one on a simulated disk, elected: the leader's proposals
    /// commit within its own `handle_ready`, so between `propose_turn` and
    /// it the core is ahead of the group, exactly as a leader of three
    /// between commits.
    struct One<L> {
        sim: SimStorage,
        disk: Arc<dyn orderly_journal::Storage>,
        config: CoreConfig,
        core: Core,
        recorder: Recorder<L>,
        member: Member<()>,
        now: Millis,
    }

    /// [`One`] with its Raft log in `/raft` (`raft` options) and its event
    /// journal in `/journal` (`journal` options), that journal as `log`
    /// makes it.
    fn group_of_one<L: SegmentedLog>(
        seed: u64,
        raft: Options,
        journal: Options,
        log: impl FnOnce(Journal) -> L,
    ) -> One<L> {
        let sim = SimStorage::new(seed);
        let disk: Arc<dyn orderly_journal::Storage> = Arc::new(sim.clone());
        let (storage, _) = JournalStorage::open(disk.clone(), Path::new("/raft"), raft, &[1]).unwrap();
        let node = Node::new(NodeConfig { id: 1, election_ticks: ELECTION_TICKS_MIN, applied: 0 }, storage).unwrap();
        let (journal, _) = Journal::open_on(disk.clone(), Path::new("/journal"), journal).unwrap();
        let config = CoreConfig::with_incarnation(1);
        let (mut core, anchors, _) = replay_applied(&journal, config.clone(), 0, |_, _, _| {}).unwrap();
        let mut recorder = Recorder::new(log(journal), anchors);
        let mut member: Member<()> = Member::new(node, 0, config.clone());
        let mut now = 0;
        while !member.serves() {
            now += RAFT_TICK_MS_FOR_TESTS;
            assert!(now < 60_000, "a group of one elects itself");
            member.tick(now);
            member.handle_ready(&mut core, &mut recorder, now).unwrap();
        }
        One { sim, disk, config, core, recorder, member, now }
    }

    #[test]
    fn a_leader_compacts_only_when_nothing_is_in_flight_and_its_marker_survives() {
        let One { config, mut core, mut recorder, mut member, now, .. } =
            group_of_one(16, options(), options(), |journal| journal);
        let (mut barriers, mut removed) = (0, 0);
        for n in 0..300 {
            gapped_order(&mut core, &format!("o{n}"));
            member.propose_turn(&mut core, &mut recorder, Vec::new(), now).unwrap();
            // In flight: the leader must neither compact nor go on reading.
            let segments = recorder.log.segments().len();
            let needed = needs_compaction(&recorder, false);
            assert_eq!(member.compaction_barrier(&recorder, false, now), needed, "order {n}");
            assert_eq!(member.compact(&mut core, &mut recorder, false).unwrap(), 0, "order {n}");
            assert_eq!(recorder.log.segments().len(), segments, "order {n}: nothing removed in flight");
            member.handle_ready(&mut core, &mut recorder, now).unwrap();
            if needed {
                // Committed (the barrier's point): now it compacts.
                barriers += 1;
                assert!(!member.compaction_barrier(&recorder, false, now), "order {n}: committed, no barrier");
                removed += member.compact(&mut core, &mut recorder, false).unwrap();
                assert!(!needs_compaction(&recorder, false), "order {n}: compacted as far as it goes");
                assert!(!member.holds_barrier());
            }
        }
        assert!(barriers > 0 && removed > 0, "barriers {barriers}, removed {removed}");
        assert!(recorder.log.segments().len() <= 3, "{} segments left", recorder.log.segments().len());
        // A rebuild (a step-down, a restart) finds how far the journal got.
        let (_, _, applied) = replay_applied(recorder.log.journal(), config, now, |_, _, _| {}).unwrap();
        assert_eq!(applied, member.applied());
        assert!(applied >= 300);
    }

    /// Large turns: the Raft log is held to `RAFT_LOG_RETAIN_BYTES`, far
    /// fewer than `RAFT_LOG_RETAIN_ENTRIES` entries.
    #[test]
    fn the_raft_log_is_bounded_in_bytes_as_well_as_entries() {
        let options = Options { segment_bytes_target: 8 * 1024 * 1024, ..Options::default() };
        let One { mut core, mut recorder, mut member, now, .. } =
            group_of_one(17, options.clone(), options, |journal| journal);
        let turns = 100u64; // 100 turns of about 1 MiB: far under 512 entries, far over 32 MiB
        for n in 0..turns {
            let data = vec![ByteBuf::from(vec![b'x'; 1024 * 1024])];
            let order = format!("o{n}");
            let msg = IntakeMsg::Items(Items {
                producer: "p".into(),
                order: order.clone(),
                begin: true,
                first: 0,
                data,
                finish: Some(1),
            });
            core.handle_intake(msg, now);
            member.propose_turn(&mut core, &mut recorder, Vec::new(), now).unwrap();
            member.handle_ready(&mut core, &mut recorder, now).unwrap();
            member.compact(&mut core, &mut recorder, false).unwrap();
            let storage = member.node().storage();
            let held = storage.last_index() - storage.snapshot_index();
            assert!(held <= 40, "turn {n}: {held} entries of ~1 MiB held in the Raft log");
        }
        assert!(member.node().storage().snapshot_index() > 0, "compacted by bytes");
        assert!(member.applied() >= turns);
    }

    /// The journal with its lazy-fsync clock stopped: a lazy commit is
    /// never due, so applied entries stay unsynced as long as a test likes
    /// (the real clock makes that a matter of milliseconds).
    struct StoppedClock(Journal, std::time::Instant);

    impl crate::io::recorder::EventLog for StoppedClock {
        fn append(&mut self, body: &[u8]) -> Result<orderly_journal::RecordAt, orderly_journal::JournalError> {
            self.0.append_located(body)
        }
        fn commit(&mut self) -> Result<orderly_journal::CommitInfo, orderly_journal::JournalError> {
            self.0.commit_at(self.1)
        }
        fn commit_lazily(&mut self) -> Result<orderly_journal::CommitInfo, orderly_journal::JournalError> {
            self.0.commit_lazily_at(self.1)
        }
        fn read_at(&mut self, at: orderly_journal::RecordAt) -> Result<Vec<u8>, orderly_journal::JournalError> {
            self.0.read_at(at)
        }
    }

    impl SegmentedLog for StoppedClock {
        fn segments(&self) -> &[orderly_journal::SegmentInfo] {
            self.0.segments()
        }
        fn sync(&mut self) -> Result<bool, orderly_journal::JournalError> {
            self.0.sync()
        }
        fn has_unsynced(&self) -> bool {
            self.0.has_unsynced()
        }
        fn pending_bytes(&self) -> u64 {
            self.0.pending_bytes()
        }
        fn remove_oldest_segment(
            &mut self,
            segment_id: u64,
        ) -> Result<orderly_journal::SegmentInfo, orderly_journal::JournalError> {
            self.0.remove_oldest_segment(segment_id)
        }
        fn journal(&self) -> &Journal {
            &self.0
        }
    }

    /// Entries are applied to the event journal with lazy commits; a power
    /// cut takes it back to its last fsynced marker, and raft must still
    /// hold every entry after that marker to apply again: the Raft log is
    /// compacted only below the *durably* applied index. (Compacting below
    /// the applied index instead fails here: the log starts past the
    /// journal's marker.)
    #[test]
    fn the_raft_log_keeps_every_entry_the_event_journal_may_lose_to_a_power_cut() {
        let stopped = |journal| StoppedClock(journal, std::time::Instant::now());
        let One { sim, disk, config, mut core, mut recorder, mut member, now } =
            group_of_one(18, options(), Options::default(), stopped);
        recorder.log.sync().unwrap();
        let durable = member.applied();
        // Far more turns than the log retains, none of them fsynced in the
        // event journal (small pending orders: no journal compaction).
        let turns = RAFT_LOG_RETAIN_ENTRIES + 3 * RAFT_LOG_COMPACT_STEP;
        for n in 0..turns {
            let msg = IntakeMsg::Items(Items {
                producer: "p".into(),
                order: format!("o{n}"),
                begin: true,
                first: 0,
                data: vec![ByteBuf::from(vec![b'x'; 10])],
                finish: Some(1),
            });
            core.handle_intake(msg, now);
            member.propose_turn(&mut core, &mut recorder, Vec::new(), now).unwrap();
            member.handle_ready(&mut core, &mut recorder, now).unwrap();
            member.compact(&mut core, &mut recorder, false).unwrap();
        }
        assert!(member.applied() >= durable + turns);
        assert!(recorder.log.has_unsynced(), "the applies stayed lazy");
        drop((member, recorder));
        sim.power_cut();
        let (journal, _) = Journal::open_on(disk.clone(), Path::new("/journal"), Options::default()).unwrap();
        let (_, _, applied) = replay_applied(&journal, config, now, |_, _, _| {}).unwrap();
        let (storage, _) = JournalStorage::open(disk, Path::new("/raft"), options(), &[1]).unwrap();
        assert!(
            storage.snapshot_index() <= applied,
            "the Raft log starts after {} but the event journal holds entries only up to {applied}",
            storage.snapshot_index()
        );
        assert!(storage.last_index() >= durable + turns, "every committed entry is in the Raft log");
    }

    const RAFT_TICK_MS_FOR_TESTS: Millis = crate::io::member::RAFT_TICK_MS;
}
