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
//! Ready is advanced, before any message it produced is sent): a member
//! that acknowledged an entry, or voted in a term, still has it after a
//! power cut. This holds whatever fsync policy the single broker uses: the
//! journal is opened here with `FsyncPolicy::Always` whatever the options
//! passed say, and [`JournalStorage::persist`] checks that its commit
//! fsynced. The in-memory state raft-rs reads is changed only after the
//! fsync, so raft-rs never reads what a power cut could take back.
//!
//! Compaction (snapshots, dropping a log prefix) is not done yet: the log
//! grows with the journal.

use std::path::Path;
use std::sync::Arc;

use orderly_journal::{FsyncPolicy, Journal, JournalError, Options, Recovery, ReplayError};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState};

use crate::membership::Roster;

const TAG_ENTRY: u8 = 1;
const TAG_HARD_STATE: u8 = 2;
const TAG_CONF_STATE: u8 = 3;
/// The [`Roster`] (JSON), written with each conf state since membership
/// changes exist (see `membership`).
const TAG_ROSTER: u8 = 4;

/// Why the Raft storage failed; after any of these the member stops.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("raft journal: {0}")]
    Journal(#[from] JournalError),
    #[error("raft journal {dir}: record {seq} is not a raft record: {reason} (the journal is not a raft journal, or is damaged: restore the member from its peers)")]
    Record { dir: String, seq: u64, reason: String },
    #[error("raft journal {dir}: record {seq} holds entry {index} but the log ends at {last}: a gap (the journal is damaged: restore the member from its peers)")]
    Gap { dir: String, seq: u64, index: u64, last: u64 },
}

/// One member's Raft state: durable in the journal, read from memory.
pub struct JournalStorage {
    journal: Journal,
    memory: MemStorage,
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
        let mut storage = JournalStorage { journal, memory, roster };
        if replayed.first_voters.is_none() {
            let conf_state = ConfState { voters: voters.to_vec(), ..ConfState::default() };
            let roster = Roster { initial_voters: voters.to_vec(), added: Vec::new() };
            storage.set_membership(conf_state, &roster)?;
        }
        Ok((storage, recovery))
    }

    /// Makes `entries` (which may overwrite a suffix of the log) and
    /// `hard_state` durable with one fsync, then shows them to raft-rs.
    pub fn persist(&mut self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<(), StorageError> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        for entry in entries {
            self.append(&encode(TAG_ENTRY, entry))?;
        }
        if let Some(hard_state) = hard_state {
            self.append(&encode(TAG_HARD_STATE, hard_state))?;
        }
        self.commit_durably()?;
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
    fn append(&mut self, body: &[u8]) -> Result<(), StorageError> {
        match self.journal.append(body) {
            Err(JournalError::BatchFull { .. }) if self.journal.pending_records() > 0 => {
                self.commit_durably()?;
                self.journal.append(body)?;
            }
            result => {
                result?;
            }
        }
        Ok(())
    }

    fn commit_durably(&mut self) -> Result<(), StorageError> {
        let info = self.journal.commit()?;
        assert!(info.records == 0 || info.fsynced, "a raft journal commit must fsync: {info:?}");
        Ok(())
    }

    /// Records a new configuration and roster (a conf change applied),
    /// fsynced before raft-rs reads it.
    pub fn set_membership(&mut self, conf_state: ConfState, roster: &Roster) -> Result<(), StorageError> {
        self.append(&encode(TAG_CONF_STATE, &conf_state))?;
        let mut body = vec![TAG_ROSTER];
        serde_json::to_writer(&mut body, roster).expect("rosters encode");
        self.append(&body)?;
        self.commit_durably()?;
        self.memory.wl().set_conf_state(conf_state);
        self.roster = roster.clone();
        Ok(())
    }

    /// The initial voters and the addresses learned from the log.
    pub fn roster(&self) -> Roster {
        self.roster.clone()
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

fn encode(tag: u8, message: &impl protobuf::Message) -> Vec<u8> {
    let mut body = vec![tag];
    message.write_to_vec(&mut body).expect("raft-rs messages encode");
    body
}

/// What replay found besides what it put in memory.
#[derive(Default)]
struct Replayed {
    /// The voters of the first conf state record (`None`: a new journal).
    first_voters: Option<Vec<u64>>,
    /// The last roster record (journals from before membership changes
    /// have none).
    roster: Option<Roster>,
}

/// Rebuilds the log, the hard state and the conf state from the records.
fn replay(journal: &Journal, memory: &MemStorage) -> Result<Replayed, StorageError> {
    let dir = journal.dir().display().to_string();
    let mut replayed = Replayed::default();
    let result = journal.replay(|seq, _segment, body| {
        let record_error = |reason: String| StorageError::Record { dir: dir.clone(), seq, reason };
        let (&tag, message) = body.split_first().ok_or_else(|| record_error("empty".to_string()))?;
        let decode_error = |error: protobuf::ProtobufError| record_error(error.to_string());
        match tag {
            TAG_ENTRY => {
                let entry = Entry::parse_from_bytes(message).map_err(decode_error)?;
                let last = raft::Storage::last_index(memory).expect("memory storage answers");
                if entry.index == 0 || entry.index > last + 1 {
                    return Err(StorageError::Gap { dir: dir.clone(), seq, index: entry.index, last });
                }
                memory.wl().append(&[entry]).expect("checked: within the log");
            }
            TAG_HARD_STATE => memory.wl().set_hardstate(HardState::parse_from_bytes(message).map_err(decode_error)?),
            TAG_CONF_STATE => {
                let conf_state = ConfState::parse_from_bytes(message).map_err(decode_error)?;
                replayed.first_voters.get_or_insert_with(|| conf_state.voters.clone());
                memory.wl().set_conf_state(conf_state);
            }
            TAG_ROSTER => {
                let roster = serde_json::from_slice(message).map_err(|e| record_error(e.to_string()))?;
                replayed.roster = Some(roster);
            }
            _ => return Err(record_error(format!("unknown tag {tag}"))),
        }
        Ok(())
    });
    result.map_err(|error| match error {
        ReplayError::Journal(error) => StorageError::Journal(error),
        ReplayError::Callback { error, .. } => error,
    })?;
    Ok(replayed)
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

    /// Whatever fsync policy the options say (`never` here), what `persist`
    /// returned from survives a power cut: the journal fsyncs every commit.
    #[test]
    fn persisted_state_survives_a_power_cut_whatever_the_fsync_option() {
        let never = Options { fsync: FsyncPolicy::Never, segment_bytes_target: 64 * 1024, ..Options::default() };
        for seed in 0..32 {
            let sim = SimStorage::new(seed);
            let disk: Arc<dyn orderly_journal::Storage> = Arc::new(sim.clone());
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

    /// A membership change's configuration and roster replay (the last
    /// wins); a journal opened to join keeps its empty configuration when
    /// reopened with voters, and one from before rosters existed takes its
    /// first configuration as the initial voters.
    #[test]
    fn membership_records_replay_and_a_joiner_never_takes_the_file_s_voters() {
        let sim = SimStorage::new(3);
        let disk: Arc<dyn orderly_journal::Storage> = Arc::new(sim.clone());
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
        let sim = SimStorage::new(7);
        let disk: Arc<dyn orderly_journal::Storage> = Arc::new(sim.clone());
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
}
