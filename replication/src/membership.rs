//! Changing the members of a group through Raft (issue 16): one change at
//! a time, each a single-step raft-rs `ConfChange` (one voter more or
//! less), which is safe without joint consensus as long as no second change
//! starts before the first is applied — raft-rs refuses (and [`Node`]
//! refuses first, with a reason) a proposal while one is pending.
//!
//! - **Add** = `AddLearnerNode` carrying the new member's endpoints in the
//!   entry's context. A learner receives the log but does not vote, so a
//!   new, empty member never weakens the quorum while it catches up. Once
//!   its log matches the leader's commit index the leader promotes it
//!   (`AddNode`, [`Node::promote_caught_up_learner`]).
//! - **Remove** = `RemoveNode`; refused when it would leave no voter, or
//!   fewer live voters than a majority of those left. The leader does not
//!   remove itself: it hands leadership to the most caught-up voter and
//!   asks the caller to retry with the new leader.
//!
//! Every conf-change context also carries the group's initial voters (the
//! configuration the log started from, never itself an entry): a member
//! that joins with an empty configuration replays the whole log, and
//! starts from those voters when it reaches the first conf change, so it
//! ends with the configuration every other member has.
//!
//! The configuration and the addresses learned from the log (the
//! [`Roster`]) are persisted by the storage when an entry is applied.

use raft::eraftpb::{ConfChange, ConfChangeType, ConfState, Entry};
use serde::{Deserialize, Serialize};

use crate::group::{GroupErrorKind, Member};
use crate::node::{Node, NodeError};
use protobuf::Message as _;

/// Members (voters and learners) a group holds at most while it changes:
/// a group of 5 plus the replacement being added, and the peer transport's
/// own limit (7) is not below it.
pub const MEMBERS_MAX: usize = 6;

/// A member as the log carries it: the group file's keys, as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub id: u64,
    pub intake: String,
    pub fanout: String,
    pub control: String,
    pub peer: String,
    pub admin: String,
    /// The member's CURVE public key for clients (`public_key` in the
    /// group file); absent in records written before it existed.
    #[serde(default)]
    pub public_key: Option<String>,
}

impl MemberRecord {
    pub fn of(member: &Member) -> MemberRecord {
        MemberRecord {
            id: member.id,
            intake: member.intake.to_string(),
            fanout: member.fanout.to_string(),
            control: member.control.to_string(),
            peer: member.peer.to_string(),
            admin: member.admin.clone(),
            public_key: member.public_key.clone(),
        }
    }

    /// The validated member (the log's text passed the same checks when
    /// the leader took it from a group file).
    pub fn member(&self) -> Result<Member, GroupErrorKind> {
        Member::from_record(self)
    }
}

/// What a member knows of the group beyond raft's configuration: the
/// voters the log started from and the addresses of members added by
/// conf changes (the others are in the group file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    pub initial_voters: Vec<u64>,
    pub added: Vec<MemberRecord>,
}

impl Roster {
    pub fn address(&self, id: u64) -> Option<&MemberRecord> {
        self.added.iter().find(|m| m.id == id)
    }
}

/// A conf-change entry's context (JSON).
#[derive(Debug, Serialize, Deserialize)]
struct ChangeContext {
    initial_voters: Vec<u64>,
    member: Option<MemberRecord>,
}

/// A change asked of the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeRequest {
    /// Add this member (as a learner; promoted once caught up).
    Add(MemberRecord),
    Remove(u64),
}

/// A change applied (committed) in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    AddLearner(MemberRecord),
    Promote(u64),
    Remove(u64),
}

impl Change {
    pub fn id(&self) -> u64 {
        match self {
            Change::AddLearner(member) => member.id,
            Change::Promote(id) | Change::Remove(id) => *id,
        }
    }
}

/// Why the leader does not propose a change; each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("this member is not the leader (leader: {leader_hint:?}); ask the leader")]
    NotLeader { leader_hint: Option<u64> },
    #[error("a membership change is in progress (or the new leader has not applied its log yet); wait until `group status` shows it done, then retry")]
    InProgress,
    #[error("member {0} is already in the group")]
    AlreadyMember(u64),
    #[error("member {0} is not in the group")]
    Unknown(u64),
    #[error("member {0} is the last voter: a group cannot remove its last member")]
    LastMember(u64),
    #[error(
        "removing member {id} would leave {live} live voters of {remaining}, not a majority: bring members back first"
    )]
    NoMajority { id: u64, live: usize, remaining: usize },
    #[error("member {id} leads; leadership is being handed to member {to}: ask it (retry)")]
    LeaderHandedOver { id: u64, to: u64 },
    #[error("a group holds at most {MEMBERS_MAX} members while it changes; remove one first")]
    TooMany,
    #[error("the leader dropped the proposal; retry")]
    Dropped,
}

impl Node {
    /// The current configuration (voters, learners).
    pub fn conf_state(&self) -> ConfState {
        self.raw.raft.prs().conf().to_conf_state()
    }

    /// What this member knows of the group beyond the configuration.
    pub fn roster(&self) -> Roster {
        self.storage().roster()
    }

    fn is_member(&self, id: u64) -> bool {
        let conf = self.conf_state();
        conf.voters.contains(&id) || conf.learners.contains(&id)
    }

    /// Proposes `request` (see the module docs); the index of its entry.
    pub fn propose_change(&mut self, request: ChangeRequest) -> Result<u64, ChangeError> {
        if !self.is_leader() {
            return Err(ChangeError::NotLeader { leader_hint: self.leader_id() });
        }
        if self.raw.raft.has_pending_conf() {
            return Err(ChangeError::InProgress);
        }
        let conf = self.conf_state();
        let (change_type, id, member) = match request {
            ChangeRequest::Add(member) => {
                if self.is_member(member.id) {
                    return Err(ChangeError::AlreadyMember(member.id));
                }
                if conf.voters.len() + conf.learners.len() >= MEMBERS_MAX {
                    return Err(ChangeError::TooMany);
                }
                (ConfChangeType::AddLearnerNode, member.id, Some(member))
            }
            ChangeRequest::Remove(id) => {
                if !self.is_member(id) {
                    return Err(ChangeError::Unknown(id));
                }
                if conf.voters.contains(&id) {
                    self.check_removal(&conf, id)?;
                }
                (ConfChangeType::RemoveNode, id, None)
            }
        };
        self.propose_conf_change(change_type, id, member)
    }

    /// A voter may go if a majority of the voters left are live, and it
    /// is not this leader (which hands over instead).
    fn check_removal(&mut self, conf: &ConfState, id: u64) -> Result<(), ChangeError> {
        let remaining: Vec<u64> = conf.voters.iter().copied().filter(|&v| v != id).collect();
        if remaining.is_empty() {
            return Err(ChangeError::LastMember(id));
        }
        let me = self.id();
        let prs = self.raw.raft.prs();
        let live = remaining.iter().filter(|&&v| v == me || prs.get(v).is_some_and(|p| p.recent_active)).count();
        if live * 2 <= remaining.len() {
            return Err(ChangeError::NoMajority { id, live, remaining: remaining.len() });
        }
        if id == me {
            let to = remaining
                .iter()
                .copied()
                .max_by_key(|&v| prs.get(v).map_or(0, |p| p.matched))
                .expect("checked: not empty");
            self.raw.transfer_leader(to);
            return Err(ChangeError::LeaderHandedOver { id, to });
        }
        Ok(())
    }

    /// The leader promotes a learner whose log has reached the commit
    /// index (one change at a time); the learner promoted, if any.
    pub fn promote_caught_up_learner(&mut self) -> Option<u64> {
        if !self.is_leader() || self.raw.raft.has_pending_conf() {
            return None;
        }
        let commit = self.commit_index();
        let prs = self.raw.raft.prs();
        let learner =
            self.conf_state().learners.into_iter().find(|&l| prs.get(l).is_some_and(|p| p.matched >= commit))?;
        self.propose_conf_change(ConfChangeType::AddNode, learner, None).ok()?;
        tracing::info!(member = learner, commit, "learner caught up: promoting it to voter");
        Some(learner)
    }

    fn propose_conf_change(
        &mut self,
        change_type: ConfChangeType,
        id: u64,
        member: Option<MemberRecord>,
    ) -> Result<u64, ChangeError> {
        let context = ChangeContext { initial_voters: self.storage().roster().initial_voters, member };
        let context = serde_json::to_vec(&context).expect("contexts encode");
        let change = ConfChange { change_type, node_id: id, ..ConfChange::default() };
        let before = self.last_index();
        self.raw.propose_conf_change(context, change).map_err(|_| ChangeError::Dropped)?;
        let index = self.last_index();
        if index == before {
            return Err(ChangeError::Dropped);
        }
        Ok(index)
    }

    /// Applies a committed conf-change entry: raft's configuration, then
    /// the storage (configuration and roster, fsynced).
    pub(crate) fn apply_conf_entry(&mut self, entry: &Entry) -> Result<Change, NodeError> {
        let bad = |reason: String| NodeError::Membership { index: entry.index, reason };
        let change = ConfChange::parse_from_bytes(&entry.data).map_err(|e| bad(e.to_string()))?;
        let context: ChangeContext = serde_json::from_slice(&entry.context).map_err(|e| bad(e.to_string()))?;
        let mut roster = self.storage().roster();
        let before = self.conf_state();
        if before.voters.is_empty() && before.learners.is_empty() {
            // A joining member at the log's first conf change: start from
            // the configuration the log started from.
            roster.initial_voters = context.initial_voters.clone();
            for &voter in &context.initial_voters {
                let add = ConfChange { change_type: ConfChangeType::AddNode, node_id: voter, ..ConfChange::default() };
                self.raw.apply_conf_change(&add).map_err(|e| bad(e.to_string()))?;
            }
        }
        let id = change.node_id;
        let applied = match change.get_change_type() {
            ConfChangeType::AddLearnerNode => {
                let member = context.member.ok_or_else(|| bad("an added member without endpoints".into()))?;
                if member.id != id {
                    return Err(bad(format!("conf change for {id} carries member {}", member.id)));
                }
                roster.added.retain(|m| m.id != id);
                roster.added.push(member.clone());
                Change::AddLearner(member)
            }
            ConfChangeType::AddNode => Change::Promote(id),
            ConfChangeType::RemoveNode => {
                roster.added.retain(|m| m.id != id);
                Change::Remove(id)
            }
        };
        let conf_state = self.raw.apply_conf_change(&change).map_err(|e| bad(e.to_string()))?;
        self.raw.mut_store().set_membership(conf_state.clone(), &roster)?;
        tracing::info!(index = entry.index, change = ?applied, voters = ?conf_state.voters, learners = ?conf_state.learners, "membership changed");
        Ok(applied)
    }
}
