//! The replication core of a broker group (issue 16): the group file, the
//! Raft log of one member on the journal, and a sans-IO Raft node on tikv's
//! raft-rs (the broker's `io::member` drives it).
//!
//! - [`group`]: the group file (`[[member]]` tables), validated.
//! - [`storage`]: raft-rs's `Storage` on an `orderly_journal::Journal`;
//!   every append and change of term or vote is fsynced before raft-rs
//!   hears it is persisted (a commit-only hard state rides the next
//!   fsync); the log is compacted and snapshots installed as records.
//! - [`membership`]: adding and removing members through Raft, one change
//!   at a time.
//! - [`node`]: [`Node`], the sans-IO wrapper of raft-rs's `RawNode`: feed it
//!   ticks and messages, drain what to send and what to apply.

pub mod group;
pub mod membership;
pub mod node;
pub mod storage;

pub use group::{Group, GroupError, GroupErrorKind, Member};
pub use membership::{Change, ChangeError, ChangeRequest, MemberRecord, Roster};
pub use node::{Applied, Node, NodeConfig, NodeError, Output, PeerProgress, ProposeError};
pub use raft::eraftpb::{Message, MessageType, SnapshotMetadata};
pub use storage::{JournalStorage, StorageError};
