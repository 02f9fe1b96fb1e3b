//! Membership changes on real nodes and journals (simulated disks, a
//! lossless in-memory network): a group of 3 adds a 4th member that joins
//! with an empty configuration (learner, then voter once caught up),
//! removes one of the original members, and every member's configuration
//! survives a power cut and a restart; the refusals say why.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use orderly_journal::{Options, SimStorage};
use orderly_replication::node::ELECTION_TICKS_MIN;
use orderly_replication::{
    Change, ChangeError, ChangeRequest, JournalStorage, MemberRecord, Message, Node, NodeConfig,
};

/// Rounds (one tick each) for anything to happen: elections take a few
/// election timeouts, catching up a few rounds.
const ROUNDS_MAX: usize = 40 * ELECTION_TICKS_MIN;

struct Cluster {
    disks: BTreeMap<u64, SimStorage>,
    nodes: BTreeMap<u64, Node>,
    /// Changes each node applied (this incarnation).
    changes: BTreeMap<u64, Vec<Change>>,
    /// Every node's applied payloads by index (state machine safety).
    applied: BTreeMap<u64, bytes::Bytes>,
    mail: Vec<Message>,
}

fn record(id: u64) -> MemberRecord {
    let port = |n: u64| format!("tcp://127.0.0.1:{}", 6000 + id * 10 + n);
    MemberRecord {
        id,
        intake: port(0),
        fanout: port(1),
        control: port(2),
        peer: port(3),
        admin: format!("127.0.0.1:{}", 6000 + id * 10 + 4),
        public_key: None,
    }
}

fn open(disk: &SimStorage, voters: &[u64]) -> JournalStorage {
    let disk: Arc<dyn orderly_journal::Storage> = Arc::new(disk.clone());
    JournalStorage::open(disk, Path::new("/raft"), Options::default(), voters).expect("opens").0
}

impl Cluster {
    fn new(voters: &[u64]) -> Cluster {
        let mut cluster = Cluster {
            disks: BTreeMap::new(),
            nodes: BTreeMap::new(),
            changes: BTreeMap::new(),
            applied: BTreeMap::new(),
            mail: Vec::new(),
        };
        for &id in voters {
            cluster.start(id, voters);
        }
        cluster
    }

    /// Starts (or restarts) node `id` on its disk; `voters` only counts
    /// on a new journal (`[]`: it joins).
    fn start(&mut self, id: u64, voters: &[u64]) {
        let disk = self.disks.entry(id).or_insert_with(|| SimStorage::new(id)).clone();
        let config = NodeConfig { id, election_ticks: ELECTION_TICKS_MIN + 3 * id as usize, applied: 0 };
        self.nodes.insert(id, Node::new(config, open(&disk, voters)).expect("starts"));
        self.changes.insert(id, Vec::new());
    }

    /// Crashes node `id` with a power cut: only what was fsynced stays.
    fn power_cut(&mut self, id: u64) {
        self.nodes.remove(&id);
        self.disks[&id].power_cut();
        self.mail.retain(|m| m.to != id);
    }

    fn round(&mut self) {
        for node in self.nodes.values_mut() {
            node.tick();
        }
        for _ in 0..4 {
            for message in std::mem::take(&mut self.mail) {
                if let Some(node) = self.nodes.get_mut(&message.to) {
                    node.step(message);
                }
            }
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            for id in ids {
                let node = self.nodes.get_mut(&id).expect("listed");
                let output = node.handle_ready().expect("handle_ready");
                for applied in output.applied {
                    let seen = self.applied.entry(applied.index).or_insert_with(|| applied.data.clone());
                    assert_eq!(seen, &applied.data, "node {id} applied another entry at {}", applied.index);
                    if let Some(change) = applied.change {
                        self.changes.get_mut(&id).expect("listed").push(change);
                    }
                }
                self.mail.extend(output.messages);
                let node = self.nodes.get_mut(&id).expect("listed");
                node.promote_caught_up_learner();
            }
        }
    }

    fn leader(&self) -> Option<u64> {
        self.nodes.values().find(|n| n.is_leader()).map(|n| n.id())
    }

    fn until(&mut self, what: &str, mut done: impl FnMut(&mut Cluster) -> bool) {
        for _ in 0..ROUNDS_MAX {
            if done(self) {
                return;
            }
            self.round();
        }
        panic!("not within {ROUNDS_MAX} rounds: {what}");
    }

    fn wait_leader(&mut self) -> u64 {
        self.until("a leader", |c| c.leader().is_some());
        self.leader().expect("checked")
    }

    fn node(&mut self, id: u64) -> &mut Node {
        self.nodes.get_mut(&id).expect("node is up")
    }

    fn voters(&self, id: u64) -> Vec<u64> {
        let mut voters = self.nodes[&id].conf_state().voters;
        voters.sort_unstable();
        voters
    }

    /// Proposes `data` on the leader and waits until every node up has
    /// applied it.
    fn commit(&mut self, data: &[u8]) {
        let leader = self.wait_leader();
        self.node(leader).propose(data.to_vec()).expect("leader proposes");
        let index = self.nodes[&leader].last_index();
        self.until("the proposal applied everywhere", |c| {
            c.applied.get(&index).is_some_and(|d| d == data) && c.nodes.values().all(|n| n.commit_index() >= index)
        });
    }
}

#[test]
fn add_a_joining_member_remove_an_original_and_restart_with_the_configuration() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    cluster.commit(b"before");
    let leader = cluster.wait_leader();

    // Member 4 joins with no configuration: it never stands.
    cluster.start(4, &[]);
    assert!(cluster.nodes[&4].conf_state().voters.is_empty());
    let index = cluster.node(leader).propose_change(ChangeRequest::Add(record(4))).expect("add proposed");
    assert_eq!(cluster.node(leader).propose_change(ChangeRequest::Add(record(5))), Err(ChangeError::InProgress));
    cluster.until("member 4 a voter everywhere", |c| c.nodes.keys().all(|&id| c.voters(id) == vec![1, 2, 3, 4]));
    assert!(index > 0);
    assert_eq!(cluster.changes[&4], vec![Change::AddLearner(record(4)), Change::Promote(4)], "4 replays the changes");
    assert_eq!(cluster.nodes[&4].roster().initial_voters, vec![1, 2, 3]);
    assert_eq!(cluster.nodes[&1].roster().address(4), Some(&record(4)));
    cluster.commit(b"with four");
    let leader = cluster.wait_leader();
    assert_eq!(cluster.node(leader).propose_change(ChangeRequest::Add(record(4))), Err(ChangeError::AlreadyMember(4)));
    assert_eq!(cluster.node(leader).propose_change(ChangeRequest::Remove(9)), Err(ChangeError::Unknown(9)));
    let follower = *cluster.nodes.keys().find(|&&id| id != leader && id != 4).expect("a follower");
    let not_leader = cluster.node(follower).propose_change(ChangeRequest::Remove(4));
    assert!(
        matches!(not_leader, Err(ChangeError::NotLeader { leader_hint: Some(l) }) if l == leader),
        "{not_leader:?}"
    );

    // One of the original members goes; it learns it was removed.
    let removed = [1, 2, 3].into_iter().find(|&id| id != leader).expect("an original follower");
    cluster.node(leader).propose_change(ChangeRequest::Remove(removed)).expect("remove proposed");
    let rest: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|&id| id != removed).collect();
    cluster.until("the removal applied", |c| rest.iter().all(|&id| c.voters(id) == rest));
    assert!(cluster.changes[&removed].contains(&Change::Remove(removed)), "{:?}", cluster.changes[&removed]);
    cluster.power_cut(removed);
    cluster.commit(b"without the removed");

    // Every member's configuration survives a power cut and a restart; the
    // joiner's too, though it is started again as if joining.
    for id in rest.clone() {
        cluster.power_cut(id);
        cluster.start(id, if id == 4 { &[] } else { &[1, 2, 3] });
        assert_eq!(cluster.voters(id), rest, "member {id} after a restart");
    }
    assert_eq!(cluster.nodes[&4].roster().initial_voters, vec![1, 2, 3]);
    cluster.commit(b"after the restarts");

    // The leader goes: the other two of three elect one and commit.
    let leader = cluster.wait_leader();
    cluster.power_cut(leader);
    cluster.commit(b"after the leader went");
    assert_ne!(cluster.wait_leader(), leader);
}

#[test]
fn removals_that_would_lose_the_group_are_refused_and_a_leader_hands_over() {
    let mut single = Cluster::new(&[1]);
    let leader = single.wait_leader();
    assert_eq!(single.node(leader).propose_change(ChangeRequest::Remove(1)), Err(ChangeError::LastMember(1)));

    let mut cluster = Cluster::new(&[1, 2, 3]);
    cluster.commit(b"x");
    let leader = cluster.wait_leader();
    // Removing the leader: it hands over instead.
    let handed = cluster.node(leader).propose_change(ChangeRequest::Remove(leader));
    let Err(ChangeError::LeaderHandedOver { id, to }) = handed else { panic!("{handed:?}") };
    assert_eq!(id, leader);
    cluster.until("the new leader", |c| c.leader() == Some(to));
    // One follower down: removing the other live one would leave 1 of 2.
    let down = *cluster.nodes.keys().find(|&&id| id != to).expect("another");
    cluster.power_cut(down);
    // Enough rounds for check-quorum to see the member gone.
    for _ in 0..3 * ELECTION_TICKS_MIN {
        cluster.round();
    }
    let live = *cluster.nodes.keys().find(|&&id| id != to).expect("the live follower");
    let refused = cluster.node(to).propose_change(ChangeRequest::Remove(live));
    assert_eq!(refused, Err(ChangeError::NoMajority { id: live, live: 1, remaining: 2 }));
    // Removing the member that is down leaves 2 of 2 live: allowed.
    cluster.node(to).propose_change(ChangeRequest::Remove(down)).expect("removing the dead member");
    cluster.until("the removal applied", |c| c.voters(to).len() == 2);
    cluster.commit(b"with two");
}
