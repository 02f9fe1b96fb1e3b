//! A member whose disk is lost (a replaced host, a wiped data directory)
//! comes back empty under the leader that knew it. raft-rs assumes a
//! member never loses what it acknowledged: unguarded, the member panics
//! on the leader's first heartbeat (it commits past its empty log), and
//! the leader treats its rejections as stale, so it would never catch up.
//! `Node` guards both (see `Node::step`); this drives three nodes on a
//! lossless network to show the member catches up and the group goes on.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use orderly_journal::{FsyncPolicy, Options, SimStorage};
use orderly_replication::node::ELECTION_TICKS_MIN;
use orderly_replication::{JournalStorage, Message, Node, NodeConfig};

const VOTERS: [u64; 3] = [1, 2, 3];
/// Generous: an election is a few dozen ticks.
const TICKS_MAX: usize = 2000;

fn start(id: u64, disk: &SimStorage) -> Node {
    let options = Options { fsync: FsyncPolicy::Always, ..Options::default() };
    let disk: Arc<dyn orderly_journal::Storage> = Arc::new(disk.clone());
    let (storage, _) = JournalStorage::open(disk, Path::new("/raft"), options, &VOTERS).expect("the journal opens");
    let config = NodeConfig { id, election_ticks: ELECTION_TICKS_MIN + 2 * id as usize, applied: 0 };
    Node::new(config, storage).expect("the node starts")
}

struct Group {
    nodes: BTreeMap<u64, Node>,
    applied: BTreeMap<u64, u64>,
    network: VecDeque<Message>,
}

impl Group {
    /// Handles every node's ready and delivers every message, until quiet.
    fn settle(&mut self) {
        loop {
            for (id, node) in self.nodes.iter_mut() {
                let output = node.handle_ready().expect("storage works");
                if let Some(last) = output.applied.last() {
                    self.applied.insert(*id, last.index);
                }
                self.network.extend(output.messages);
            }
            if self.network.is_empty() {
                return;
            }
            while let Some(message) = self.network.pop_front() {
                if let Some(node) = self.nodes.get_mut(&message.to) {
                    node.step(message);
                }
            }
        }
    }

    fn tick(&mut self) {
        self.nodes.values_mut().for_each(Node::tick);
        self.settle();
    }

    fn leader(&self) -> Option<u64> {
        self.nodes.values().find(|node| node.is_leader()).map(Node::id)
    }

    fn until(&mut self, what: &str, done: impl Fn(&Group) -> bool) {
        for _ in 0..TICKS_MAX {
            if done(self) {
                return;
            }
            self.tick();
        }
        panic!("{what} did not happen within {TICKS_MAX} ticks");
    }
}

#[test]
fn a_member_back_with_an_empty_disk_catches_up_under_the_leader_that_knew_it() {
    let disks: BTreeMap<u64, SimStorage> = VOTERS.iter().map(|&id| (id, SimStorage::new(id))).collect();
    let nodes = VOTERS.iter().map(|&id| (id, start(id, &disks[&id]))).collect();
    let mut group = Group { nodes, applied: BTreeMap::new(), network: VecDeque::new() };
    group.until("an election", |g| g.leader().is_some());
    let leader = group.leader().expect("checked");
    for n in 0..50u32 {
        group.nodes.get_mut(&leader).expect("leader").propose(n.to_be_bytes().to_vec()).expect("the leader takes it");
        group.settle();
    }
    let committed = group.nodes[&leader].commit_index();
    group.until("every member applying everything", |g| VOTERS.iter().all(|id| g.applied.get(id) == Some(&committed)));

    // A follower's host is replaced: same id, a new empty disk.
    let wiped = VOTERS.into_iter().find(|&id| id != leader).expect("a follower");
    group.nodes.remove(&wiped);
    group.applied.remove(&wiped);
    for n in 50..60u32 {
        group.nodes.get_mut(&leader).expect("leader").propose(n.to_be_bytes().to_vec()).expect("a majority remains");
        group.settle();
    }
    group.nodes.insert(wiped, start(wiped, &SimStorage::new(99)));
    let committed = group.nodes[&leader].commit_index();
    group.until("the wiped member catching up", |g| g.applied.get(&wiped) == Some(&committed));
    assert_eq!(group.leader(), Some(leader), "the returning member did not disturb the leader");

    // The wiped member's log now counts: with the other follower gone,
    // the leader and it still commit.
    let other = VOTERS.into_iter().find(|&id| id != leader && id != wiped).expect("the third member");
    group.nodes.remove(&other);
    group.nodes.get_mut(&leader).expect("leader").propose(b"after".to_vec()).expect("leader");
    group.until("a commit with the wiped member", |g| g.nodes[&leader].commit_index() > committed);
}
