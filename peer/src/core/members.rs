//! Member ids and the member table: which peers a member sends to, and who
//! a received frame is from.
//!
//! With CURVE the sender is the member id that the ZAP handler bound to
//! the connection's key (libzmq's User-Id on every message); the id a
//! frame claims must agree, or the frame is dropped. Without CURVE (only
//! on loopback, or with `allow_insecure`) the claim is all there is.

use std::fmt;

use orderly_security::authorized::broker_member_id;

use crate::core::frame::{self, FrameError};
use crate::limits::GROUP_MEMBERS_MAX;

/// A member of a broker group, as raft numbers them: from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(u64);

impl MemberId {
    /// `None` for 0, which raft reserves for "no member".
    pub const fn new(id: u64) -> Option<MemberId> {
        if id == 0 {
            None
        } else {
            Some(MemberId(id))
        }
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The member id of a ZAP User-Id on the peer socket (the id of a
    /// `broker` line in authorized_keys).
    pub fn from_user_id(user: &str) -> Option<MemberId> {
        broker_member_id(user).and_then(MemberId::new)
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A group that cannot be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("a group has at most {GROUP_MEMBERS_MAX} members, not {0}")]
    TooMany(usize),
    #[error("member {0} is listed twice")]
    Duplicate(MemberId),
    #[error("member {0} lists itself among its peers")]
    SelfAsPeer(MemberId),
}

/// Why a received frame was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("malformed frame: {0}")]
    Malformed(#[from] FrameError),
    /// CURVE is on but the message has no User-Id that is a member id:
    /// cannot happen with the ZAP handler running; never trust the claim.
    #[error("no authenticated member id (User-Id {0:?})")]
    Unauthenticated(Option<String>),
    #[error("frame claims member {claimed} but came with member {authenticated}'s key")]
    SenderMismatch { claimed: MemberId, authenticated: MemberId },
    #[error("member {0} is not a peer of this member")]
    UnknownSender(MemberId),
}

/// This member and its peers (every other member of the group).
#[derive(Debug, Clone)]
pub struct MemberTable {
    me: MemberId,
    peers: Vec<MemberId>,
    authenticated: bool,
}

impl MemberTable {
    /// `authenticated`: senders are known by their CURVE keys (ZAP User-Id).
    pub fn new(me: MemberId, peers: &[MemberId], authenticated: bool) -> Result<MemberTable, TableError> {
        if peers.len() + 1 > GROUP_MEMBERS_MAX {
            return Err(TableError::TooMany(peers.len() + 1));
        }
        for (index, peer) in peers.iter().enumerate() {
            if *peer == me {
                return Err(TableError::SelfAsPeer(me));
            }
            if peers[..index].contains(peer) {
                return Err(TableError::Duplicate(*peer));
            }
        }
        Ok(MemberTable { me, peers: peers.to_vec(), authenticated })
    }

    pub fn me(&self) -> MemberId {
        self.me
    }

    /// Adds peer `id` at the end (a member added to the group); its index
    /// is the new last one.
    pub fn add(&mut self, id: MemberId) -> Result<usize, TableError> {
        if id == self.me {
            return Err(TableError::SelfAsPeer(id));
        }
        if self.peers.contains(&id) {
            return Err(TableError::Duplicate(id));
        }
        if self.peers.len() + 2 > GROUP_MEMBERS_MAX {
            return Err(TableError::TooMany(self.peers.len() + 2));
        }
        self.peers.push(id);
        Ok(self.peers.len() - 1)
    }

    /// Removes peer `id` (a member removed from the group): its frames are
    /// refused from now on. The index it had, if it was a peer; the peers
    /// after it move down by one.
    pub fn remove(&mut self, id: MemberId) -> Option<usize> {
        let index = self.index_of(id)?;
        self.peers.remove(index);
        Some(index)
    }

    pub fn peers(&self) -> &[MemberId] {
        &self.peers
    }

    /// The index of peer `id` (its socket), `None` for this member or a
    /// stranger.
    pub fn index_of(&self, id: MemberId) -> Option<usize> {
        self.peers.iter().position(|peer| *peer == id)
    }

    /// Who sent `frame` and its payload, given the ZAP User-Id libzmq
    /// attached to it (`None` without CURVE).
    pub fn accept<'f>(&self, frame: &'f [u8], user_id: Option<&str>) -> Result<(MemberId, &'f [u8]), Refused> {
        let (claimed, payload) = frame::decode(frame)?;
        let from = if self.authenticated {
            let authenticated = user_id
                .and_then(MemberId::from_user_id)
                .ok_or_else(|| Refused::Unauthenticated(user_id.map(str::to_owned)))?;
            if claimed != authenticated {
                return Err(Refused::SenderMismatch { claimed, authenticated });
            }
            authenticated
        } else {
            claimed
        };
        if self.index_of(from).is_none() {
            return Err(Refused::UnknownSender(from));
        }
        Ok((from, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> MemberId {
        MemberId::new(n).unwrap()
    }

    #[test]
    fn tables_refuse_impossible_groups() {
        assert!(MemberTable::new(id(1), &[id(2), id(3)], true).is_ok());
        assert_eq!(MemberTable::new(id(1), &[id(2), id(1)], true).unwrap_err(), TableError::SelfAsPeer(id(1)));
        assert_eq!(MemberTable::new(id(1), &[id(2), id(2)], true).unwrap_err(), TableError::Duplicate(id(2)));
        let many: Vec<MemberId> = (2..=GROUP_MEMBERS_MAX as u64 + 1).map(id).collect();
        assert_eq!(MemberTable::new(id(1), &many, true).unwrap_err(), TableError::TooMany(GROUP_MEMBERS_MAX + 1));
        assert_eq!(MemberId::new(0), None);
        assert_eq!(MemberId::from_user_id("2"), Some(id(2)));
        assert_eq!(MemberId::from_user_id("w1"), None);
        assert_eq!(MemberId::from_user_id("0"), None);
    }

    #[test]
    fn with_curve_the_sender_is_the_keys_member_never_the_claim() {
        let table = MemberTable::new(id(1), &[id(2), id(3)], true).unwrap();
        let from_3 = frame::encode(id(3), b"I am 3").unwrap();
        assert_eq!(table.accept(&from_3, Some("3")), Ok((id(3), &b"I am 3"[..])));
        assert_eq!(
            table.accept(&from_3, Some("2")),
            Err(Refused::SenderMismatch { claimed: id(3), authenticated: id(2) })
        );
        assert_eq!(table.accept(&from_3, None), Err(Refused::Unauthenticated(None)));
        assert_eq!(table.accept(&from_3, Some("worker:3")), Err(Refused::Unauthenticated(Some("worker:3".into()))));
        let from_4 = frame::encode(id(4), b"").unwrap();
        assert_eq!(table.accept(&from_4, Some("4")), Err(Refused::UnknownSender(id(4))));
        let from_me = frame::encode(id(1), b"").unwrap();
        assert_eq!(table.accept(&from_me, Some("1")), Err(Refused::UnknownSender(id(1))));
        assert_eq!(table.accept(b"\x09garbage!", Some("2")), Err(Refused::Malformed(FrameError::Version(9))));
    }

    #[test]
    fn peers_added_and_removed_at_run_time_are_accepted_then_refused() {
        let mut table = MemberTable::new(id(1), &[id(2), id(3)], false).unwrap();
        let from_4 = frame::encode(id(4), b"x").unwrap();
        assert_eq!(table.accept(&from_4, None), Err(Refused::UnknownSender(id(4))));
        assert_eq!(table.add(id(4)), Ok(2));
        assert_eq!(table.accept(&from_4, None), Ok((id(4), &b"x"[..])));
        assert_eq!(table.add(id(4)), Err(TableError::Duplicate(id(4))));
        assert_eq!(table.add(id(1)), Err(TableError::SelfAsPeer(id(1))));
        assert_eq!(table.remove(id(2)), Some(0));
        assert_eq!(table.remove(id(2)), None);
        assert_eq!(table.peers(), &[id(3), id(4)]);
        let from_2 = frame::encode(id(2), b"x").unwrap();
        assert_eq!(table.accept(&from_2, None), Err(Refused::UnknownSender(id(2))));
        for n in 5..=GROUP_MEMBERS_MAX as u64 + 1 {
            table.add(id(n)).unwrap();
        }
        assert_eq!(table.add(id(99)), Err(TableError::TooMany(GROUP_MEMBERS_MAX + 1)));
    }

    #[test]
    fn without_curve_the_claim_is_the_sender_if_it_is_a_peer() {
        let table = MemberTable::new(id(1), &[id(2), id(3)], false).unwrap();
        let from_2 = frame::encode(id(2), b"x").unwrap();
        assert_eq!(table.accept(&from_2, None), Ok((id(2), &b"x"[..])));
        let from_9 = frame::encode(id(9), b"x").unwrap();
        assert_eq!(table.accept(&from_9, None), Err(Refused::UnknownSender(id(9))));
        assert_eq!(table.index_of(id(1)), None);
        assert_eq!(table.index_of(id(3)), Some(1));
    }
}
