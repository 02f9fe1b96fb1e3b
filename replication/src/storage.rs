//! raft-rs's `Storage` on the journal: the Raft log, the hard state and
//! the configuration of one member, durable in an `orderly_journal::Journal`
//! and served from memory (raft-rs's own `MemStorage`).
//!
//! # Records
//! Each journal record is one tag byte and a protobuf message of raft-rs:
//! an entry (index, term, data), a hard state (term, vote, commit) or a
//! conf state (the voters). The journal is append-only, but Raft overwrites
//! a log suffix when a new leader disagrees with it: an entry record at
//! index `i` therefore cuts the log at `i` before it is added, in memory as
//! on replay, so replay rebuilds exactly the log raft-rs last saw. The
//! last hard state and conf state records win.
//!
//! # The durability rule
//! **Every entry append and every hard-state change is committed to the
//! journal with fsync before raft-rs is told it is persisted** (before the
//! Ready is advanced, before any message that depends on it is sent — the
//! leader's appends, raft-rs's `Ready::messages`, may go before its own
//! fsync, since the leader counts itself only once persisted): a member
//! that acknowledged an entry, or voted in a term, still has it after a
//! power cut. This holds whatever fsync policy the single broker uses: the
//! journal is opened here with `FsyncPolicy::Always` whatever the options
//! passed say, and [`JournalStorage::persist`] checks that its commit
//! fsynced. The in-memory state raft-rs reads is changed only after the
//! fsync, so raft-rs never reads what a power cut could take back.
//! One exception, as in etcd (`MustSync`): a hard state that moves only
//! the commit index is written and fsynced with the next commit, not on
//! its own. A commit index is knowledge, not a promise: lost, it is
//! learned again from the leader, and at start the member's applied index
//! raises it ([`JournalStorage::commit_at_least`]).
//!
//! # Compaction and snapshots
//! Two more records carry raft-rs's `SnapshotMetadata` (index, term, conf
//! state): *compacted* ([`JournalStorage::compact`]: the log before
//! `index` is applied by the member and no longer needed; entries after it
//! stay) and *installed* ([`JournalStorage::apply_snapshot`]: the member
//! took a snapshot from the leader; every entry before the record is gone,
//! whatever its index). Compaction writes the metadata and a copy of the
//! hard state (the conf state is in the metadata) with one fsync, *then*
//! removes the oldest segments that hold no entry above `index`, oldest
//! first, each removal fsyncing the directory. A power cut before the
//! fsync leaves the old journal; after it, any prefix of the removals: the
//! records that matter are in a newer segment either way.
//!
//! Replay therefore runs twice over the records: the first pass finds the
//! last snapshot record (its index is the highest: indexes of these
//! records only grow), the second starts the log there, skips entries at
//! or below it (their segment may or may not have been removed), and at an
//! installed record drops what came before. The last hard state and conf
//! state in the journal win, the metadata's conf state counting as one.

use std::path::Path;
use std::sync::Arc;

use orderly_journal::{FsyncPolicy, Journal, JournalError, Options, Recovery, ReplayError};
use protobuf::Message as _;
use std::collections::BTreeMap;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};

use crate::membership::Roster;
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState};

const TAG_ENTRY: u8 = 1;
const TAG_HARD_STATE: u8 = 2;
const TAG_CONF_STATE: u8 = 3;
/// The [`Roster`] (JSON), written with each conf state since membership
/// changes exist (see `membership`), and again at every compaction.
const TAG_ROSTER: u8 = 4;
/// `SnapshotMetadata`: the log is compacted up to its index.
const TAG_COMPACTED: u8 = 5;
/// `SnapshotMetadata`: a snapshot from the leader replaced the log.
const TAG_INSTALLED: u8 = 6;

/// Why the Raft storage failed; after any of these the member stops.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("raft journal: {0}")]
    Journal(#[from] JournalError),
    #[error("raft journal {dir}: record {seq} is not a raft record: {reason} (the journal is not a raft journal, or is damaged: restore the member from its peers)")]
    Record { dir: String, seq: u64, reason: String },
    #[error("raft journal {dir}: record {seq} holds entry {index} but the log ends at {last}: a gap (the journal is damaged: restore the member from its peers)")]
    Gap { dir: String, seq: u64, index: u64, last: u64 },
    #[error("raft snapshot refused: {0}")]
    Snapshot(String),
}

/// One member's Raft state: durable in the journal, read from memory.
pub struct JournalStorage {
    journal: Journal,
    memory: MemStorage,
    /// The highest entry index each segment holds a record of (segments
    /// holding none are absent): a segment goes when this is compacted.
    segment_max_index: BTreeMap<u64, u64>,
    roster: Roster,
}

impl std::fmt::Debug for JournalStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let first = raft::Storage::first_index(&self.memory).expect("memory storage answers");
        let last = self.last_index();
        f.debug_struct("JournalStorage").field("dir", &self.journal.dir()).field("log", &(first..=last)).finish()
    }
}

impl JournalStorage {
    /// Opens (or creates) the journal in `dir` on `disk`, replays it into
    /// memory, and on a new journal records `voters` as the configuration
    /// (every member of a new group starts from the same one; a member
    /// joining an existing group starts from none, see `membership`). The
    /// fsync policy of `options` is replaced by `always` (see the module
    /// docs).
    pub fn open(
        disk: Arc<dyn orderly_journal::Storage>,
        dir: &Path,
        options: Options,
        voters: &[u64],
    ) -> Result<(JournalStorage, Recovery), StorageError> {
        let options = Options { fsync: FsyncPolicy::Always, ..options };
        let (journal, recovery) = Journal::open_on(disk, dir, options)?;
        let memory = MemStorage::new();
        let replayed = replay(&journal, &memory)?;
        let roster = replayed.roster.clone().unwrap_or_else(|| Roster {
            initial_voters: replayed.first_voters.clone().unwrap_or_default(),
            added: Vec::new(),
        });
        let mut storage = JournalStorage { journal, memory, segment_max_index: replayed.segment_max_index, roster };
        if replayed.first_voters.is_none() {
            let conf_state = ConfState { voters: voters.to_vec(), ..ConfState::default() };
            let roster = Roster { initial_voters: voters.to_vec(), added: Vec::new() };
            storage.set_membership(conf_state, &roster)?;
        }
        Ok((storage, recovery))
    }

    /// Makes `entries` (which may overwrite a suffix of the log) and
    /// `hard_state` durable with one fsync, then shows them to raft-rs.
    /// A hard state that only moves the commit index is written but not
    /// fsynced (it goes with the next fsync), as etcd's `MustSync` has it:
    /// a commit index lost in a crash is learned again from the leader,
    /// and the caller's applied index raises it at start (`commit_at_least`).
    pub fn persist(&mut self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<(), StorageError> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        for entry in entries {
            let segment = self.append_with(|buffer| encode_into(TAG_ENTRY, entry, buffer))?;
            let max = self.segment_max_index.entry(segment).or_default();
            *max = (*max).max(entry.index);
        }
        let current = self.hard_state();
        let must_sync = !entries.is_empty()
            || hard_state.is_some_and(|next| next.term != current.term || next.vote != current.vote);
        if let Some(hard_state) = hard_state {
            self.append_with(|buffer| encode_into(TAG_HARD_STATE, hard_state, buffer))?;
        }
        if must_sync {
            self.commit_durably()?;
        }
        let mut memory = self.memory.wl();
        if !entries.is_empty() {
            // raft-rs hands over entries that continue or overwrite the log.
            memory.append(entries).expect("raft-rs appends within the log");
        }
        if let Some(hard_state) = hard_state {
            memory.set_hardstate(hard_state.clone());
        }
        Ok(())
    }

    /// Buffers one record; a batch the journal cannot take whole (it
    /// would pass the end of the segment's preallocated space) is committed
    /// in parts. A crash between parts keeps a prefix of the entries: none
    /// was acknowledged yet, and any old suffix it replaced was not
    /// committed (it conflicts with the leader's log).
    /// Returns the segment the record goes to.
    fn append(&mut self, body: &[u8]) -> Result<u64, StorageError> {
        self.append_with(|buffer| buffer.extend_from_slice(body))
    }

    /// [`JournalStorage::append`] of a body `encode` appends to the
    /// journal's batch itself (`Journal::append_located_with`): an entry of
    /// up to `PROPOSAL_BYTES_MAX`, built in a `Vec` of its own, was grown
    /// by doubling (fresh pages, copies) and then copied into the batch.
    fn append_with(&mut self, encode: impl Fn(&mut Vec<u8>)) -> Result<u64, StorageError> {
        let at = match self.journal.append_located_with(&encode) {
            Err(JournalError::BatchFull { .. }) if self.journal.pending_records() > 0 => {
                self.commit_durably()?;
                self.journal.append_located_with(&encode)?
            }
            result => result?,
        };
        Ok(at.segment)
    }

    /// Records a new configuration and roster (a conf change applied),
    /// fsynced before raft-rs reads it.
    pub fn set_membership(&mut self, conf_state: ConfState, roster: &Roster) -> Result<(), StorageError> {
        self.append(&encode(TAG_CONF_STATE, &conf_state))?;
        self.append(&encode_roster(roster))?;
        self.commit_durably()?;
        self.memory.wl().set_conf_state(conf_state);
        self.roster = roster.clone();
        Ok(())
    }

    /// The initial voters and the addresses learned from the log.
    pub fn roster(&self) -> Roster {
        self.roster.clone()
    }

    /// Index of the last entry compacted away or replaced by a snapshot (0:
    /// none); the log starts after it.
    pub fn snapshot_index(&self) -> u64 {
        raft::Storage::first_index(&self.memory).expect("memory storage answers") - 1
    }

    /// The term of the entry at `index`, while the log still knows it (the
    /// entries and the snapshot index).
    pub fn term_of(&self, index: u64) -> Option<u64> {
        raft::Storage::term(&self.memory, index).ok()
    }

    /// Bytes of the journal's segments on disk (for status and tests).
    pub fn journal_bytes(&self) -> u64 {
        self.journal.segments().iter().map(|segment| segment.bytes).sum()
    }

    /// Drops the log up to `to` (which the member has applied durably, so
    /// no more than the commit index): records the compaction point and the
    /// hard state with one fsync, then removes the segments wholly below
    /// it (see the module docs). Nothing happens when `to` is not past the
    /// current start. Returns the segments removed.
    pub fn compact(&mut self, to: u64) -> Result<u32, StorageError> {
        if !self.record_compaction(to)? {
            return Ok(0);
        }
        self.remove_compacted_segments()
    }

    /// The first step of [`JournalStorage::compact`]: false when there is
    /// nothing to compact.
    fn record_compaction(&mut self, to: u64) -> Result<bool, StorageError> {
        if to <= self.snapshot_index() || to > self.last_index() {
            return Ok(false);
        }
        let hard_state = self.hard_state();
        assert!(to <= hard_state.commit, "compacting to {to} past the commit index {}", hard_state.commit);
        let term = self.term_of(to).expect("within the log");
        let meta =
            SnapshotMetadata { index: to, term, conf_state: Some(self.conf_state()).into(), ..Default::default() };
        // Written at the end of the journal, so in a segment newer than
        // every segment a removal can take.
        self.append(&encode(TAG_COMPACTED, &meta))?;
        self.append(&encode(TAG_HARD_STATE, &hard_state))?;
        // The roster's records may be in a segment about to go.
        self.append(&encode_roster(&self.roster))?;
        self.commit_durably()?;
        restart_log_at(&self.memory, meta);
        self.memory.wl().set_hardstate(hard_state);
        Ok(true)
    }

    /// The second step: the oldest segments with no entry after the
    /// snapshot index go, oldest first (never the active one, which holds
    /// the compaction record or is newer).
    fn remove_compacted_segments(&mut self) -> Result<u32, StorageError> {
        let below = self.snapshot_index();
        let mut removed = 0;
        while self.journal.segments().len() >= 2 {
            let oldest = self.journal.segments()[0].id;
            if self.segment_max_index.get(&oldest).is_some_and(|&max| max > below) {
                break;
            }
            self.journal.remove_oldest_segment(oldest)?;
            self.segment_max_index.remove(&oldest);
            removed += 1;
        }
        Ok(removed)
    }

    /// Replaces the log with `snapshot` (from the leader: its metadata;
    /// the data travels outside raft), durably, before raft-rs hears of it.
    /// Entries after it, if this member has any, are dropped too: raft-rs
    /// installs a snapshot only when its log does not match it.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let meta = snapshot.get_metadata().clone();
        let mut hard_state = self.hard_state();
        hard_state.term = hard_state.term.max(meta.term);
        hard_state.commit = meta.index;
        self.append(&encode(TAG_INSTALLED, &meta))?;
        self.append(&encode(TAG_HARD_STATE, &hard_state))?;
        // The addresses of members added through the log are not in raft's
        // metadata: this member keeps what it knew (the group file gives
        // the rest, see docs/REPLICATION.md).
        self.append(&encode_roster(&self.roster))?;
        self.commit_durably()?;
        self.memory.wl().apply_snapshot(snapshot.clone()).map_err(|e| StorageError::Snapshot(e.to_string()))?;
        self.memory.wl().set_hardstate(hard_state);
        self.remove_compacted_segments()?;
        Ok(())
    }

    fn commit_durably(&mut self) -> Result<(), StorageError> {
        let info = self.journal.commit()?;
        assert!(info.records == 0 || info.fsynced, "a raft journal commit must fsync: {info:?}");
        Ok(())
    }

    /// At start: raises the commit index to `applied`, the index the
    /// caller applied durably (only committed entries are applied, so they
    /// are committed), when a crash lost the commit-only hard state that
    /// `persist` does not fsync; never past the log's end. raft-rs refuses
    /// to start with `applied` above the commit index.
    pub fn commit_at_least(&mut self, applied: u64) {
        let mut hard_state = self.hard_state();
        let commit = applied.min(self.last_index());
        if commit > hard_state.commit {
            hard_state.commit = commit;
            self.memory.wl().set_hardstate(hard_state);
        }
    }

    pub fn hard_state(&self) -> HardState {
        self.memory.rl().hard_state().clone()
    }

    pub fn conf_state(&self) -> ConfState {
        raft::Storage::initial_state(&self.memory).expect("memory storage answers").conf_state
    }

    /// Index of the last entry (0: the log is empty).
    pub fn last_index(&self) -> u64 {
        raft::Storage::last_index(&self.memory).expect("memory storage answers")
    }

    /// The entry at `index`, if the log has it.
    pub fn entry(&self, index: u64) -> Option<Entry> {
        if index == 0 || index > self.last_index() {
            return None;
        }
        let entries = raft::Storage::entries(&self.memory, index, index + 1, None, GetEntriesContext::empty(false));
        entries.ok().and_then(|mut entries| entries.pop())
    }

    /// The whole log, in order (for tests and inspection).
    pub fn entries(&self) -> Vec<Entry> {
        (1..=self.last_index()).filter_map(|index| self.entry(index)).collect()
    }
}

fn encode_roster(roster: &Roster) -> Vec<u8> {
    let mut body = vec![TAG_ROSTER];
    serde_json::to_writer(&mut body, roster).expect("rosters encode");
    body
}

fn encode(tag: u8, message: &impl protobuf::Message) -> Vec<u8> {
    let mut body = Vec::new();
    encode_into(tag, message, &mut body);
    body
}

/// A record body, `tag` then `message`, appended to `out` (room made
/// once: protobuf's writer would grow `out` step by step).
fn encode_into(tag: u8, message: &impl protobuf::Message, out: &mut Vec<u8>) {
    out.reserve(1 + message.compute_size() as usize);
    out.push(tag);
    message.write_to_vec(out).expect("raft-rs messages encode");
}

/// Starts the in-memory log after `meta` (its index and term), keeping
/// the entries after it and the hard state.
fn restart_log_at(memory: &MemStorage, meta: SnapshotMetadata) {
    let hard_state = memory.rl().hard_state().clone();
    let first = raft::Storage::first_index(memory).ok();
    let last = raft::Storage::last_index(memory).expect("memory storage answers");
    let kept: Vec<Entry> = if first.is_some_and(|first| meta.index + 1 >= first) && meta.index < last {
        raft::Storage::entries(memory, meta.index + 1, last + 1, None, GetEntriesContext::empty(false))
            .expect("within the log")
    } else {
        Vec::new()
    };
    let mut core = memory.wl();
    let snapshot = Snapshot { metadata: Some(meta).into(), ..Snapshot::default() };
    core.apply_snapshot(snapshot).expect("the log only moves forward");
    core.append(&kept).expect("continues the snapshot");
    core.set_hardstate(hard_state);
}

/// What replay found besides what it put in memory.
struct Replayed {
    /// The highest entry index of each segment.
    segment_max_index: BTreeMap<u64, u64>,
    /// The voters of the first configuration recorded (a conf state
    /// record, or a snapshot record's); `None`: a new journal.
    first_voters: Option<Vec<u64>>,
    /// The last roster record (journals from before membership changes
    /// have none).
    roster: Option<Roster>,
}

/// Rebuilds the log, the hard state and the conf state from the records
/// (two passes: see the module docs).
fn replay(journal: &Journal, memory: &MemStorage) -> Result<Replayed, StorageError> {
    let dir = journal.dir().display().to_string();
    let record_error = |seq: u64, reason: String| StorageError::Record { dir: dir.clone(), seq, reason };
    let parse = |seq: u64, body: &[u8]| -> Result<(u8, Vec<u8>), StorageError> {
        let (&tag, message) = body.split_first().ok_or_else(|| record_error(seq, "empty".to_string()))?;
        Ok((tag, message.to_vec()))
    };
    // Pass one: the last snapshot record, where the log starts.
    let mut base: Option<SnapshotMetadata> = None;
    let result = journal.replay(|seq, _segment, body| {
        if let Some((&tag, message)) = body.split_first() {
            if tag == TAG_COMPACTED || tag == TAG_INSTALLED {
                let meta = SnapshotMetadata::parse_from_bytes(message).map_err(|e| record_error(seq, e.to_string()))?;
                base = Some(meta);
            }
        }
        Ok(())
    });
    result.map_err(replay_error)?;
    let base_index = base.as_ref().map_or(0, |meta| meta.index);
    // The entries after the base, `log[i]` at index `base_index + 1 + i`.
    let mut log: Vec<Entry> = Vec::new();
    let mut hard_state = None;
    let mut conf_state: Option<ConfState> = None;
    let mut first_voters = None;
    let mut roster = None;
    let mut segment_max_index = BTreeMap::new();
    let result = journal.replay(|seq, segment, body| {
        let (tag, message) = parse(seq, body)?;
        let decode_error = |error: protobuf::ProtobufError| record_error(seq, error.to_string());
        match tag {
            TAG_ENTRY => {
                let entry = Entry::parse_from_bytes(&message).map_err(decode_error)?;
                let max: &mut u64 = segment_max_index.entry(segment).or_default();
                *max = (*max).max(entry.index);
                if entry.index <= base_index {
                    return Ok(());
                }
                let last = base_index + log.len() as u64;
                if entry.index > last + 1 {
                    return Err(StorageError::Gap { dir: dir.clone(), seq, index: entry.index, last });
                }
                // An entry at an index already present cuts the log there.
                log.truncate((entry.index - base_index - 1) as usize);
                log.push(entry);
            }
            TAG_HARD_STATE => hard_state = Some(HardState::parse_from_bytes(&message).map_err(decode_error)?),
            TAG_CONF_STATE => {
                let conf = ConfState::parse_from_bytes(&message).map_err(decode_error)?;
                first_voters.get_or_insert_with(|| conf.voters.clone());
                conf_state = Some(conf);
            }
            TAG_ROSTER => {
                roster = Some(serde_json::from_slice(&message).map_err(|e| record_error(seq, e.to_string()))?);
            }
            TAG_COMPACTED | TAG_INSTALLED => {
                let mut meta = SnapshotMetadata::parse_from_bytes(&message).map_err(decode_error)?;
                let conf = meta.take_conf_state();
                first_voters.get_or_insert_with(|| conf.voters.clone());
                conf_state = Some(conf);
                if tag == TAG_INSTALLED {
                    // Whatever came before is gone (the entries up to the
                    // base are skipped anyway).
                    log.clear();
                }
            }
            _ => return Err(record_error(seq, format!("unknown tag {tag}"))),
        }
        Ok(())
    });
    result.map_err(replay_error)?;
    let mut core = memory.wl();
    if let Some(meta) = base {
        core.apply_snapshot(Snapshot { metadata: Some(meta).into(), ..Snapshot::default() })
            .expect("a fresh log takes any snapshot");
    }
    core.append(&log).expect("continues the base");
    if let Some(hard_state) = hard_state {
        core.set_hardstate(hard_state);
    }
    if let Some(conf_state) = conf_state {
        core.set_conf_state(conf_state);
    }
    Ok(Replayed { segment_max_index, first_voters, roster })
}

fn replay_error(error: ReplayError<StorageError>) -> StorageError {
    match error {
        ReplayError::Journal(error) => StorageError::Journal(error),
        ReplayError::Callback { error, .. } => error,
    }
}

impl raft::Storage for JournalStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.memory.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.memory.entries(low, high, max_size, context)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        self.memory.term(index)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.memory.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.memory.last_index()
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        self.memory.snapshot(request_index, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderly_journal::SimStorage;
    use raft::Storage as _;

    fn entry(index: u64, term: u64, data: &str) -> Entry {
        Entry { index, term, data: data.as_bytes().to_vec().into(), ..Entry::default() }
    }

    fn log(storage: &JournalStorage) -> Vec<(u64, u64, Vec<u8>)> {
        storage.entries().into_iter().map(|e| (e.index, e.term, e.data.to_vec())).collect()
    }

    /// A simulated disk (power cuts, seeded) and the same disk as the
    /// storage trait object `open` takes.
    fn sim_disk(seed: u64) -> (SimStorage, Arc<dyn orderly_journal::Storage>) {
        let sim = SimStorage::new(seed);
        let disk: Arc<dyn orderly_journal::Storage> = Arc::new(sim.clone());
        (sim, disk)
    }

    fn open(disk: &Arc<dyn orderly_journal::Storage>, dir: &Path, options: Options) -> JournalStorage {
        JournalStorage::open(disk.clone(), dir, options, &[1, 2, 3]).expect("opens").0
    }

    #[test]
    fn an_overwritten_suffix_is_gone_after_reopen_with_the_hard_state() {
        let temp = tempfile::tempdir().expect("temp dir");
        let disk: Arc<dyn orderly_journal::Storage> = Arc::new(orderly_journal::OsStorage);
        let mut storage = open(&disk, temp.path(), Options::default());
        assert_eq!(storage.conf_state().voters, vec![1, 2, 3]);
        storage.persist(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")], None).expect("persist");
        let hard_state = HardState { term: 2, vote: 3, commit: 1, ..HardState::default() };
        // A new leader of term 2 disagrees from index 2 on.
        storage.persist(&[entry(2, 2, "B")], Some(&hard_state)).expect("persist");
        let expected = vec![(1, 1, b"a".to_vec()), (2, 2, b"B".to_vec())];
        assert_eq!(log(&storage), expected);
        drop(storage);
        // Reopened with other voters: the recorded configuration wins.
        let reopened = JournalStorage::open(disk, temp.path(), Options::default(), &[7]).expect("reopens").0;
        assert_eq!(log(&reopened), expected);
        assert_eq!(reopened.hard_state(), hard_state);
        assert_eq!(reopened.conf_state().voters, vec![1, 2, 3]);
        assert_eq!(reopened.last_index(), 2);
        assert_eq!(reopened.term(2).expect("term"), 2);
        let state = reopened.initial_state().expect("state");
        assert_eq!((state.hard_state, state.conf_state.voters), (hard_state, vec![1, 2, 3]));
    }

    /// A commit-only hard state costs no fsync: a power cut may take it
    /// back (to the last fsynced one), and the applied index raises it.
    #[test]
    fn a_commit_only_hard_state_waits_for_the_next_fsync() {
        let (sim, disk) = sim_disk(7);
        let dir = Path::new("/raft");
        let mut storage = open(&disk, dir, Options::default());
        let voted = HardState { term: 2, vote: 1, commit: 0, ..HardState::default() };
        storage.persist(&[entry(1, 2, "a"), entry(2, 2, "b")], Some(&voted)).expect("persist");
        let committed = HardState { commit: 2, ..voted.clone() };
        storage.persist(&[], Some(&committed)).expect("persist");
        assert_eq!(storage.hard_state(), committed, "raft-rs reads it at once");
        drop(storage);
        sim.power_cut();
        let mut reopened = open(&disk, dir, Options::default());
        assert_eq!(reopened.hard_state(), voted, "the commit index was not fsynced");
        reopened.commit_at_least(1);
        assert_eq!(reopened.hard_state().commit, 1);
        reopened.commit_at_least(9);
        assert_eq!(reopened.hard_state().commit, 2, "never past the log's end");
        // A term or vote change is fsynced on its own.
        let next = HardState { term: 3, vote: 2, commit: 2, ..HardState::default() };
        reopened.persist(&[], Some(&next)).expect("persist");
        drop(reopened);
        sim.power_cut();
        assert_eq!(open(&disk, dir, Options::default()).hard_state(), next);
    }

    /// Whatever fsync policy the options say (`never` here), what `persist`
    /// returned from survives a power cut: the journal fsyncs every commit.
    #[test]
    fn persisted_state_survives_a_power_cut_whatever_the_fsync_option() {
        let never = Options { fsync: FsyncPolicy::Never, segment_bytes_target: 64 * 1024, ..Options::default() };
        for seed in 0..32 {
            let (sim, disk) = sim_disk(seed);
            let dir = Path::new("/raft");
            let mut storage = open(&disk, dir, never.clone());
            let mut expected = Vec::new();
            for index in 1..=40u64 {
                let term = 1 + index / 10;
                // Every fifth append overwrites the previous entry.
                let at = if index % 5 == 0 { index - 1 } else { index };
                let data = format!("{seed}-{index}");
                expected.truncate(at as usize - 1);
                expected.push((at, term, data.as_bytes().to_vec()));
                let hard_state =
                    HardState { term, vote: 1 + index % 3, commit: at.saturating_sub(2), ..HardState::default() };
                storage.persist(&[entry(at, term, &data)], Some(&hard_state)).expect("persist");
                if index % 5 == 0 {
                    // Keep indexes contiguous: the next append follows `at`.
                    storage.persist(&[entry(at + 1, term, &format!("{data}+"))], None).expect("persist");
                    expected.push((at + 1, term, format!("{data}+").into_bytes()));
                }
            }
            let hard_state = storage.hard_state();
            drop(storage);
            sim.power_cut();
            let reopened = open(&disk, dir, never.clone());
            assert_eq!(log(&reopened), expected, "seed {seed}");
            assert_eq!(reopened.hard_state(), hard_state, "seed {seed}");
        }
    }

    /// One persist larger than the room left in a segment's preallocated
    /// space is committed in parts and still replays whole.
    /// A membership change's configuration and roster replay (the last
    /// wins); a journal opened to join keeps its empty configuration when
    /// reopened with voters, and one from before rosters existed takes its
    /// first configuration as the initial voters.
    #[test]
    fn membership_records_replay_and_a_joiner_never_takes_the_file_s_voters() {
        let (sim, disk) = sim_disk(3);
        let mut storage = open(&disk, Path::new("/a"), Options::default());
        assert_eq!(storage.roster(), Roster { initial_voters: vec![1, 2, 3], added: vec![] });
        let four = crate::membership::MemberRecord {
            id: 4,
            intake: "tcp://127.0.0.1:1".into(),
            fanout: "tcp://127.0.0.1:2".into(),
            control: "tcp://127.0.0.1:3".into(),
            peer: "tcp://127.0.0.1:4".into(),
            admin: "127.0.0.1:5".into(),
            public_key: None,
        };
        let roster = Roster { initial_voters: vec![1, 2, 3], added: vec![four] };
        storage
            .set_membership(ConfState { voters: vec![1, 2, 3], learners: vec![4], ..ConfState::default() }, &roster)
            .unwrap();
        storage.set_membership(ConfState { voters: vec![1, 3, 4], ..ConfState::default() }, &roster).unwrap();
        drop(storage);
        sim.power_cut();
        let reopened = open(&disk, Path::new("/a"), Options::default());
        assert_eq!((reopened.conf_state().voters, reopened.roster()), (vec![1, 3, 4], roster));

        let joiner = JournalStorage::open(disk.clone(), Path::new("/b"), Options::default(), &[]).unwrap().0;
        assert!(joiner.conf_state().voters.is_empty());
        drop(joiner);
        let reopened = open(&disk, Path::new("/b"), Options::default());
        assert!(reopened.conf_state().voters.is_empty(), "a joiner never bootstraps from the file");
        assert!(reopened.roster().initial_voters.is_empty());

        // A journal from before rosters: a conf state record alone.
        let mut journal = Journal::open_on(disk.clone(), Path::new("/d"), Options::default()).unwrap().0;
        journal.append(&encode(TAG_CONF_STATE, &ConfState { voters: vec![5, 6, 7], ..ConfState::default() })).unwrap();
        journal.commit().unwrap();
        drop(journal);
        let legacy = open(&disk, Path::new("/d"), Options::default());
        assert_eq!(legacy.roster(), Roster { initial_voters: vec![5, 6, 7], added: vec![] });
        assert_eq!(legacy.conf_state().voters, vec![5, 6, 7]);
    }

    /// One persist larger than the room left in a segment's preallocated
    /// space is committed in parts and still replays whole.
    #[test]
    fn a_persist_larger_than_a_segment_replays_whole() {
        let (sim, disk) = sim_disk(7);
        let small = Options { segment_bytes_target: 16 * 1024, ..Options::default() };
        let mut storage = open(&disk, Path::new("/raft"), small.clone());
        let payload = "x".repeat(1000);
        let entries: Vec<Entry> = (1..=100).map(|index| entry(index, 1, &payload)).collect();
        storage.persist(&entries, None).expect("persist in parts");
        let expected = log(&storage);
        assert_eq!(expected.len(), 100);
        drop(storage);
        sim.power_cut();
        assert_eq!(log(&open(&disk, Path::new("/raft"), small)), expected);
    }

    /// Compaction with a power cut after each step (records fsynced, then
    /// some or all segments removed): every reopen serves the entries after
    /// the compaction point, its term and the hard state, and the journal
    /// stays small however long the log grows.
    #[test]
    fn compaction_survives_power_cuts_at_every_step_and_bounds_the_journal() {
        let small = Options { segment_bytes_target: 16 * 1024, ..Options::default() };
        let dir = Path::new("/raft");
        for seed in 0..16u64 {
            let (sim, disk) = sim_disk(seed);
            let mut storage = open(&disk, dir, small.clone());
            let payload = "p".repeat(300);
            let mut largest = 0;
            for index in 1..=600u64 {
                let term = 1 + index / 100;
                let hard_state = HardState { term, vote: 1, commit: index.saturating_sub(3), ..HardState::default() };
                storage
                    .persist(&[entry(index, term, &format!("{index}{payload}"))], Some(&hard_state))
                    .expect("persist");
                if index % 37 != 0 {
                    continue;
                }
                let to = hard_state.commit.saturating_sub(10);
                // Where the power goes: after the records, in the middle
                // of the removals, after all of them, or not at all.
                match (seed + index) % 4 {
                    0 => {
                        storage.record_compaction(to).expect("records");
                    }
                    1 => {
                        storage.record_compaction(to).expect("records");
                        if storage.journal.segments().len() > 2 {
                            let oldest = storage.journal.segments()[0].id;
                            if storage.segment_max_index.get(&oldest).is_none_or(|&max| max <= to) {
                                storage.journal.remove_oldest_segment(oldest).expect("removes");
                            }
                        }
                    }
                    _ => {
                        storage.compact(to).expect("compacts");
                    }
                }
                let expected = log(&storage);
                let first = storage.snapshot_index();
                let term_at = storage.term_of(first);
                let hard_state = storage.hard_state();
                if (seed + index) % 3 != 0 {
                    continue;
                }
                drop(storage);
                sim.power_cut();
                storage = open(&disk, dir, small.clone());
                assert_eq!(log(&storage), expected, "seed {seed} index {index}");
                assert_eq!(storage.hard_state(), hard_state, "seed {seed} index {index}");
                // A cut before the removals may leave the log starting
                // earlier than the compaction said, never later.
                assert_eq!(storage.snapshot_index(), first, "seed {seed} index {index}");
                assert_eq!(storage.term_of(first), term_at, "seed {seed} index {index}");
                assert_eq!(storage.conf_state().voters, vec![1, 2, 3]);
            }
            storage.compact(storage.hard_state().commit).expect("compacts");
            largest = largest.max(storage.journal_bytes());
            // 600 entries of ~300 bytes is ~190 KiB; what is left is the
            // few last entries and the active segment.
            assert!(largest <= 3 * 16 * 1024, "seed {seed}: {largest} bytes left");
            assert_eq!(storage.entry(storage.last_index()).map(|e| e.index), Some(600));
        }
    }

    /// `log` (entries after the snapshot index) and the first index.
    #[test]
    fn an_installed_snapshot_replaces_a_stale_log_across_a_power_cut() {
        let (sim, disk) = sim_disk(3);
        let dir = Path::new("/raft");
        let mut storage = open(&disk, dir, Options::default());
        // A stale log from an old term, longer than the snapshot.
        let stale: Vec<Entry> = (1..=50).map(|index| entry(index, 1, "old")).collect();
        storage
            .persist(&stale, Some(&HardState { term: 1, vote: 2, commit: 5, ..HardState::default() }))
            .expect("persist");
        let meta = SnapshotMetadata {
            index: 30,
            term: 3,
            conf_state: Some(ConfState { voters: vec![1, 2, 3], ..ConfState::default() }).into(),
            ..SnapshotMetadata::default()
        };
        storage.apply_snapshot(&Snapshot { metadata: Some(meta).into(), ..Snapshot::default() }).expect("installs");
        assert_eq!((storage.snapshot_index(), storage.last_index()), (30, 30));
        storage.persist(&[entry(31, 3, "new")], None).expect("persist");
        drop(storage);
        sim.power_cut();
        let storage = open(&disk, dir, Options::default());
        assert_eq!(storage.snapshot_index(), 30);
        assert_eq!(storage.term_of(30), Some(3));
        assert_eq!(log(&storage), vec![(31, 3, b"new".to_vec())]);
        assert_eq!((storage.hard_state().term, storage.hard_state().commit), (3, 30));
    }
}
