//! The members of a broker group, as clients see them, and which of them
//! leads.
//!
//! Pure data: the group file is parsed elsewhere; this module only holds
//! and checks what it lists. [`Leadership`] is the one rule both client
//! cores (producer and worker) follow to pick the leader from the members'
//! heartbeats, so they cannot disagree about it.

use std::collections::HashSet;

use crate::protocol::BrokerHeartbeat;
use crate::Endpoint;

/// Members in a group at most (Raft groups are 3 or 5; 7 leaves room for
/// replacing a member while two are down).
pub const MEMBERS_MAX: usize = 7;
const _: () = assert!(MEMBERS_MAX >= 3 && MEMBERS_MAX % 2 == 1);

/// One broker of a group: its id and the endpoints clients connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's id in the group, at least 1 (Raft reserves 0).
    pub id: u64,
    /// Producers PUSH orders here while this member leads.
    pub intake: Endpoint,
    /// Every client SUBscribes here, whoever leads: heartbeats announce
    /// the leader.
    pub fanout: Endpoint,
    /// Workers PUSH heartbeats and acks here while this member leads.
    pub control: Endpoint,
    /// The member's own CURVE public key (40 Z85 characters, or a file
    /// holding them) for clients with CURVE; `None`: the client's one
    /// broker key. Checked when a client connects.
    pub public_key: Option<String>,
}

/// Why a list of members was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembersError {
    #[error("a group has 1 to {MEMBERS_MAX} members, not {0}")]
    Count(usize),
    #[error("member id 0 is reserved; ids start at 1")]
    ZeroId,
    #[error("member id {0} is listed twice")]
    DuplicateId(u64),
}

/// The members of a group: 1 to [`MEMBERS_MAX`], ids unique and at least 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    members: Vec<Member>,
}

impl Members {
    /// Checks the list; the order is kept.
    pub fn new(members: Vec<Member>) -> Result<Members, MembersError> {
        if members.is_empty() || members.len() > MEMBERS_MAX {
            return Err(MembersError::Count(members.len()));
        }
        let mut ids = HashSet::with_capacity(members.len());
        for member in &members {
            if member.id == 0 {
                return Err(MembersError::ZeroId);
            }
            if !ids.insert(member.id) {
                return Err(MembersError::DuplicateId(member.id));
            }
        }
        Ok(Members { members })
    }

    /// The member with this id.
    pub fn get(&self, id: u64) -> Option<&Member> {
        self.members.iter().find(|member| member.id == id)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.get(id).is_some()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Member> {
        self.members.iter()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Never true (a group has a member); for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The ids, in the order listed.
    pub fn ids(&self) -> Vec<u64> {
        self.members.iter().map(|member| member.id).collect()
    }
}

/// Which member leads, as the members' heartbeats announce it.
///
/// An announcement is a heartbeat from a member naming a leader (itself or
/// another member: a follower knows the leader too, so one lost heartbeat
/// of the leader does not delay us). The announcement with the highest
/// term wins; older terms are ignored (a deposed leader may still be
/// heard for a while), and Raft elects at most one leader per term, so
/// within a term the first announcement stands. Heartbeats naming no
/// leader (an election is under way), from a single broker, or naming an
/// id outside the group change nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    ids: Vec<u64>,
    /// The leader and the term it was announced for.
    current: Option<(u64, u64)>,
}

impl Leadership {
    /// No leader known yet.
    pub fn new(members: &Members) -> Leadership {
        Leadership { ids: members.ids(), current: None }
    }

    /// The leader, if one was announced.
    pub fn leader(&self) -> Option<u64> {
        self.current.map(|(leader, _)| leader)
    }

    /// The term of the leader announced.
    pub fn term(&self) -> Option<u64> {
        self.current.map(|(_, term)| term)
    }

    /// Takes in one heartbeat; returns the new `(leader, term)` when it
    /// announces a leader of a newer term than the one known (the same
    /// member again in a newer term counts: it may have lost orders it
    /// had not committed when it was deposed).
    pub fn observe(&mut self, heartbeat: &BrokerHeartbeat) -> Option<(u64, u64)> {
        let member = heartbeat.member?;
        let leader = heartbeat.leader?;
        if !self.ids.contains(&member) || !self.ids.contains(&leader) {
            return None;
        }
        if self.current.is_some_and(|(_, term)| heartbeat.term <= term) {
            return None;
        }
        self.current = Some((leader, heartbeat.term));
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64) -> Member {
        let endpoint = |port: u16| format!("tcp://127.0.0.1:{port}").parse().unwrap();
        Member { id, intake: endpoint(5000), fanout: endpoint(5001), control: endpoint(5002), public_key: None }
    }

    fn three() -> Members {
        Members::new(vec![member(1), member(2), member(3)]).unwrap()
    }

    fn heartbeat(member: Option<u64>, leader: Option<u64>, term: u64) -> BrokerHeartbeat {
        BrokerHeartbeat { incarnation: 1, interval_ms: 100, member, leader, term }
    }

    #[test]
    fn members_are_checked() {
        assert_eq!(Members::new(vec![]), Err(MembersError::Count(0)));
        assert_eq!(Members::new((1..=8).map(member).collect()), Err(MembersError::Count(8)));
        assert!(Members::new((1..=7).map(member).collect()).is_ok());
        assert_eq!(Members::new(vec![member(0)]), Err(MembersError::ZeroId));
        assert_eq!(Members::new(vec![member(2), member(2)]), Err(MembersError::DuplicateId(2)));
        let members = three();
        assert_eq!(members.ids(), [1, 2, 3]);
        assert_eq!(members.get(2).map(|m| m.id), Some(2));
        assert!(!members.contains(4));
    }

    #[test]
    fn the_highest_term_wins_and_older_terms_are_ignored() {
        let mut leadership = Leadership::new(&three());
        assert_eq!(leadership.observe(&heartbeat(Some(1), Some(1), 3)), Some((1, 3)));
        assert_eq!(leadership.observe(&heartbeat(Some(1), Some(1), 3)), None, "the same announcement again");
        assert_eq!(leadership.observe(&heartbeat(Some(2), Some(2), 4)), Some((2, 4)));
        // The deposed leader still says it leads, in its old term.
        assert_eq!(leadership.observe(&heartbeat(Some(1), Some(1), 3)), None);
        assert_eq!((leadership.leader(), leadership.term()), (Some(2), Some(4)));
        // Re-elected in a newer term: a change, though the same member.
        assert_eq!(leadership.observe(&heartbeat(Some(2), Some(2), 5)), Some((2, 5)));
    }

    #[test]
    fn a_follower_announces_the_leader_too() {
        let mut leadership = Leadership::new(&three());
        assert_eq!(leadership.observe(&heartbeat(Some(3), Some(2), 6)), Some((2, 6)));
        assert_eq!(leadership.leader(), Some(2));
    }

    #[test]
    fn heartbeats_that_announce_nothing_change_nothing() {
        let mut leadership = Leadership::new(&three());
        assert_eq!(leadership.observe(&heartbeat(None, None, 0)), None, "a single broker");
        assert_eq!(leadership.observe(&heartbeat(Some(1), None, 9)), None, "an election");
        assert_eq!(leadership.observe(&heartbeat(Some(4), Some(4), 9)), None, "not a member");
        assert_eq!(leadership.observe(&heartbeat(Some(1), Some(4), 9)), None, "a leader not listed");
        assert_eq!(leadership.leader(), None);
    }
}
