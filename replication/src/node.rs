//! [`Node`]: one member's Raft state machine, sans-IO. The caller feeds it
//! ticks ([`Node::tick`]), messages from the other members
//! ([`Node::step`]) and proposals ([`Node::propose`]), then calls
//! [`Node::handle_ready`], which persists what raft-rs wants persisted
//! (fsynced, see `storage`) and returns what the caller must do: messages
//! to send, committed entries to apply, a change of leader. It reads no
//! clock (time is the caller's ticks) and draws no randomness that matters
//! (see [`NodeConfig::election_ticks`]).

use raft::eraftpb::{EntryType, Message, MessageType};
use raft::{Config, RawNode, StateRole};

use crate::storage::{JournalStorage, StorageError};

/// Ticks between a leader's heartbeats.
pub const HEARTBEAT_TICKS: usize = 2;
/// Fewest ticks a follower waits for a leader before standing (raft's
/// election timeout); ten heartbeats, so a few lost ones do not depose a
/// leader.
pub const ELECTION_TICKS_MIN: usize = 10 * HEARTBEAT_TICKS;
/// Largest payload of one proposal (one batch of broker journal events):
/// it must fit one journal record with the entry's framing.
pub const PROPOSAL_BYTES_MAX: usize = 4 * 1024 * 1024;
/// What an entry record adds to its payload (tag, index, term, type,
/// protobuf framing), generously.
const ENTRY_OVERHEAD_BYTES_MAX: usize = 64;
/// Largest total of entries in one append message to a follower.
pub const MESSAGE_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Append messages in flight to one follower before the leader waits for
/// acknowledgements.
pub const INFLIGHT_MESSAGES_MAX: usize = 256;
/// Proposed but uncommitted payload bytes a leader holds before it drops
/// new proposals (backpressure while a majority is unreachable).
pub const UNCOMMITTED_BYTES_MAX: u64 = 256 * 1024 * 1024;

const _: () = assert!(ELECTION_TICKS_MIN > 2 * HEARTBEAT_TICKS);
const _: () = assert!(PROPOSAL_BYTES_MAX + ENTRY_OVERHEAD_BYTES_MAX <= orderly_journal::RECORD_BYTES_MAX as usize);
const _: () = assert!(PROPOSAL_BYTES_MAX as u64 <= MESSAGE_BYTES_MAX);
const _: () = assert!(MESSAGE_BYTES_MAX <= UNCOMMITTED_BYTES_MAX);

/// How one member runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeConfig {
    /// This member's id (from the group file), at least 1.
    pub id: u64,
    /// This member's election timeout in ticks, at least
    /// [`ELECTION_TICKS_MIN`]. raft-rs draws each timeout with `rand` from
    /// `[min_election_tick, max_election_tick)`; the node makes that range
    /// one value wide (`election_ticks..election_ticks + 1`), so the draw
    /// is always `election_ticks` and a run is reproducible. The caller
    /// gives each member a different value (e.g. `ELECTION_TICKS_MIN` plus
    /// a seed- or id-derived offset) so that members rarely stand at once.
    pub election_ticks: usize,
    /// The last index the caller has applied (0: apply from the start);
    /// committed entries above it are handed out again after a restart.
    pub applied: u64,
}

/// An entry committed by the group, to apply in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub term: u64,
    /// The proposal; empty for the entry a new leader appends to commit its
    /// term and for a membership change (nothing to apply, but the index
    /// advances). raft-rs's own buffer, shared: not copied per entry.
    pub data: bytes::Bytes,
    /// A membership change, already applied to raft and the storage.
    pub change: Option<crate::membership::Change>,
}

/// Who leads, as this member last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// `None`: no leader known (an election is on).
    pub leader_id: Option<u64>,
    pub term: u64,
}

/// What the caller must do after [`Node::handle_ready`].
#[derive(Debug, Default)]
pub struct Output {
    /// Messages to send, each to `message.to` (a member id); order matters
    /// per destination only, and any may be lost.
    pub messages: Vec<Message>,
    /// Entries committed by the group, in index order.
    pub applied: Vec<Applied>,
    /// Set when the leader or the term changed since the last output.
    pub leadership: Option<Leadership>,
    /// A snapshot from the leader this member installed (its log now
    /// starts after `index`, durably): the caller replaces its state with
    /// the one the snapshot's data (sent outside raft) describes *before*
    /// applying `applied`, which follow it.
    pub snapshot: Option<raft::eraftpb::SnapshotMetadata>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("raft configuration refused: {0}")]
    Config(#[source] raft::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the membership change at index {index} cannot be applied: {reason}")]
    Membership { index: u64, reason: String },
}

/// Why a proposal was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("this member is not the leader (leader: {leader_hint:?}); propose to the leader")]
    NotLeader { leader_hint: Option<u64> },
    #[error("a proposal of {bytes} bytes is over the limit of {max} bytes; split the batch")]
    TooLarge { bytes: usize, max: usize },
    #[error("the leader dropped the proposal (too much uncommitted, or handing over leadership); retry later")]
    Dropped,
}

/// What a leader knows of one member's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerProgress {
    pub id: u64,
    /// The highest index known to be in that member's log.
    pub matched: u64,
    /// How the leader sends to it: `probe` (finding where the logs
    /// agree), `replicate` (streaming entries) or `snapshot`.
    pub state: &'static str,
    /// Heard from within the last election timeout (always true for the
    /// leader itself).
    pub active: bool,
}

/// One member's Raft node (see the module docs).
pub struct Node {
    pub(crate) raw: RawNode<JournalStorage>,
    reported: Leadership,
}

impl Node {
    /// A node on its (opened, replayed) storage.
    pub fn new(config: NodeConfig, mut storage: JournalStorage) -> Result<Node, NodeError> {
        storage.commit_at_least(config.applied);
        let raft_config = Config {
            id: config.id,
            // The same for every member: raft-rs also uses it as the lease
            // in which a follower that heard from a leader ignores vote
            // requests (check_quorum). Were it each member's own timeout,
            // the member standing first would be refused by one whose
            // lease outlasts it, and the election would wait for a second
            // round (measured: failover 5 s instead of 2.6 s).
            election_tick: ELECTION_TICKS_MIN,
            heartbeat_tick: HEARTBEAT_TICKS,
            // A range of one value: see `NodeConfig::election_ticks`.
            min_election_tick: config.election_ticks,
            max_election_tick: config.election_ticks + 1,
            applied: config.applied,
            max_size_per_msg: MESSAGE_BYTES_MAX,
            max_inflight_msgs: INFLIGHT_MESSAGES_MAX,
            max_uncommitted_size: UNCOMMITTED_BYTES_MAX,
            // A leader that cannot hear a majority steps down; a member
            // that was cut off asks before it stands, so on rejoining it
            // does not depose a working leader with a higher term.
            check_quorum: true,
            pre_vote: true,
            ..Config::default()
        };
        raft_config.validate().map_err(NodeError::Config)?;
        let raw = RawNode::new(&raft_config, storage, &logger()).map_err(NodeError::Config)?;
        let reported = Leadership { leader_id: None, term: 0 };
        Ok(Node { raw, reported })
    }

    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    /// One unit of the caller's clock.
    pub fn tick(&mut self) {
        self.raw.tick();
    }

    /// A message from another member. Stale or misaddressed messages are
    /// ignored (the network may deliver anything late or twice).
    pub fn step(&mut self, mut message: Message) {
        // A leader's heartbeat commits up to what it believes this member
        // holds; a member back with an empty or older disk (a replaced
        // host) holds less, and raft-rs would panic committing past its
        // log. Committing only what it holds is always safe; the leader's
        // next append is rejected, and its probe finds where the member's
        // log ends (then sends entries, or a snapshot).
        if message.get_msg_type() == MessageType::MsgHeartbeat {
            message.commit = message.commit.min(self.last_index());
        }
        if let Err(error) = self.raw.step(message) {
            tracing::debug!(id = self.id(), %error, "raft: message ignored");
        }
    }

    /// Proposes `data` for the log; it is committed when it comes back from
    /// [`Node::handle_ready`] in `applied` (it may never be, if leadership
    /// is lost first).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), ProposeError> {
        if data.len() > PROPOSAL_BYTES_MAX {
            return Err(ProposeError::TooLarge { bytes: data.len(), max: PROPOSAL_BYTES_MAX });
        }
        if !self.is_leader() {
            return Err(ProposeError::NotLeader { leader_hint: self.leader_id() });
        }
        self.raw.propose(Vec::new(), data).map_err(|_| ProposeError::Dropped)
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn leader_id(&self) -> Option<u64> {
        Some(self.raw.raft.leader_id).filter(|&id| id != raft::INVALID_ID)
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The index of the last entry in this member's log (persisted or
    /// not): after a leader's [`Node::propose`], the proposal's index.
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// On the leader, what it knows of every member's log (raft-rs's
    /// progress tracker), by id; empty on a follower, which tracks none.
    pub fn progress(&self) -> Vec<PeerProgress> {
        if !self.is_leader() {
            return Vec::new();
        }
        let mut peers: Vec<PeerProgress> = self
            .raw
            .raft
            .prs()
            .iter()
            .map(|(&id, progress)| PeerProgress {
                id,
                matched: progress.matched,
                state: match progress.state {
                    raft::ProgressState::Probe => "probe",
                    raft::ProgressState::Replicate => "replicate",
                    raft::ProgressState::Snapshot => "snapshot",
                },
                active: id == self.id() || progress.recent_active,
            })
            .collect();
        peers.sort_unstable_by_key(|peer| peer.id);
        peers
    }

    /// Drops the log up to `to`, which the caller has applied durably (see
    /// `JournalStorage::compact`); returns the raft-journal segments removed.
    pub fn compact(&mut self, to: u64) -> Result<u32, NodeError> {
        Ok(self.raw.mut_store().compact(to)?)
    }

    /// The leader's word on a snapshot it sent to member `to` (the data
    /// goes outside raft): `delivered` resumes replication after it, false
    /// makes raft send another later.
    pub fn report_snapshot(&mut self, to: u64, delivered: bool) {
        let status = if delivered { raft::SnapshotStatus::Finish } else { raft::SnapshotStatus::Failure };
        self.raw.report_snapshot(to, status);
    }

    pub fn storage(&self) -> &JournalStorage {
        self.raw.store()
    }

    /// Gives the storage back (a member shutting down or crashing).
    pub fn into_storage(self) -> JournalStorage {
        let Node { raw, .. } = self;
        raw.raft.r.raft_log.store
    }

    /// Persists what raft-rs produced (entries and hard state, one fsync)
    /// and only then returns it: messages, committed entries, leadership.
    /// After an error the node must not be used again.
    pub fn handle_ready(&mut self) -> Result<Output, NodeError> {
        let mut messages = Vec::new();
        let mut output = self.handle_ready_sending(|message| messages.push(message))?;
        output.messages = messages;
        Ok(output)
    }

    /// [`Node::handle_ready`] handing each message to `send` as soon as it
    /// may go, so that no peer waits for this member's own disk: the
    /// leader's appends before its log's fsync (raft-rs allows it: the
    /// leader counts itself only once persisted, thesis §10.2.1), every
    /// other message right after it, all before the caller applies the
    /// committed entries. `output.messages` stays empty.
    pub fn handle_ready_sending(&mut self, mut send: impl FnMut(Message)) -> Result<Output, NodeError> {
        let mut output = Output::default();
        if self.raw.has_ready() {
            let mut ready = self.raw.ready();
            if !ready.snapshot().is_empty() {
                // Durable before the entries that follow it, before any
                // message: see `JournalStorage::apply_snapshot`.
                self.raw.mut_store().apply_snapshot(ready.snapshot())?;
                output.snapshot = Some(ready.snapshot().get_metadata().clone());
            }
            ready.take_messages().into_iter().for_each(&mut send);
            self.raw.mut_store().persist(ready.entries(), ready.hs())?;
            ready.take_persisted_messages().into_iter().for_each(&mut send);
            let committed = ready.take_committed_entries();
            let mut light = self.raw.advance(ready);
            if let Some(commit) = light.commit_index() {
                let hard_state = raft::eraftpb::HardState { commit, ..self.raw.store().hard_state() };
                self.raw.mut_store().persist(&[], Some(&hard_state))?;
            }
            light.take_messages().into_iter().for_each(&mut send);
            for entry in committed.into_iter().chain(light.take_committed_entries()) {
                let (data, change) = match entry.get_entry_type() {
                    EntryType::EntryNormal => (entry.data.clone(), None),
                    EntryType::EntryConfChange => (bytes::Bytes::new(), Some(self.apply_conf_entry(&entry)?)),
                    EntryType::EntryConfChangeV2 => {
                        return Err(NodeError::Membership {
                            index: entry.index,
                            reason: "ConfChangeV2 is never proposed".into(),
                        })
                    }
                };
                output.applied.push(Applied { index: entry.index, term: entry.term, data, change });
            }
            self.raw.advance_apply();
        }
        let now = Leadership { leader_id: self.leader_id(), term: self.term() };
        if now != self.reported {
            self.reported = now;
            output.leadership = Some(now);
        }
        Ok(output)
    }
}

/// raft-rs logs through slog: its records go to `tracing` (debug and
/// below stay cheap when not enabled).
fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}

struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let enabled = match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::enabled!(tracing::Level::ERROR),
            slog::Level::Warning => tracing::enabled!(tracing::Level::WARN),
            slog::Level::Info => tracing::enabled!(tracing::Level::INFO),
            slog::Level::Debug | slog::Level::Trace => tracing::enabled!(tracing::Level::DEBUG),
        };
        if !enabled {
            return Ok(());
        }
        let mut text = record.msg().to_string();
        let mut serializer = KeyValues(&mut text);
        let _ = slog::KV::serialize(&record.kv(), record, &mut serializer);
        let _ = slog::KV::serialize(values, record, &mut serializer);
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!("raft: {text}"),
            slog::Level::Warning => tracing::warn!("raft: {text}"),
            slog::Level::Info => tracing::info!("raft: {text}"),
            slog::Level::Debug | slog::Level::Trace => tracing::debug!("raft: {text}"),
        }
        Ok(())
    }
}

/// Appends ` key=value` for each slog key-value.
struct KeyValues<'a>(&'a mut String);

impl slog::Serializer for KeyValues<'_> {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}
