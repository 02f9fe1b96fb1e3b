//! A group member's turn (`--group`, see docs/REPLICATION.md): the same
//! loop as a single broker's, with "record, commit, publish" replaced by
//! "propose, wait for the group to commit, record, publish".
//!
//! - The **leader** runs the core as a single broker does; each turn's
//!   events become one Raft entry (a batch, split when large) and the
//!   turn's outbound messages are held until that entry is applied. Then
//!   the events go to its own journal and the messages out.
//! - A **follower** reads no intake or control (drained, dropped and
//!   counted), runs no core timeouts, and applies each committed batch to
//!   its core (`Core::apply`) and its journal.
//! - Every member appends, after each committed batch's events, a marker
//!   record with the Raft index, in the same commit (see
//!   `recover::applied_marker`): a restart replays the journal and tells
//!   raft how far it got.
//! - Leadership lost: held messages are dropped and the core is rebuilt
//!   from the journal (committed events only). Leadership won: the member
//!   first applies every entry its log held when it was elected, then ends
//!   recovery (`finish_recovery`: in-flight orders pending, no worker
//!   known) and serves.

use std::collections::VecDeque;
use std::sync::Arc;

use orderly_common::limits::BATCH_LEN_MAX;
use orderly_common::protocol::{encode_dispatch, BrokerHeartbeat, FanoutMsg};
use orderly_peer::{MemberId, PeerAddress, PeerConfig, Peers};
use orderly_replication::node::{ELECTION_TICKS_MIN, PROPOSAL_BYTES_MAX};
use orderly_replication::{Applied, JournalStorage, Message, Node, NodeConfig, ProposeError};
use protobuf::Message as _;
use serde_bytes::ByteBuf;
use tracing::{info, warn};

use super::config::{raft_dir, BrokerConfig, GroupSettings};
use super::error::{journal_err, zmq_err, BrokerError};
use super::event_loop::Loop;
use super::recover::{applied_marker, replay_applied};
use crate::admin::schema::GroupReport;
use crate::admin::Answer;
use crate::core::codec::{decode_event, encode_event};
use crate::core::{CoreConfig, GroupView, Millis, Outbound};

/// One Raft tick: heartbeats every `HEARTBEAT_TICKS` (200 ms), elections
/// after `ELECTION_TICKS_MIN` or more (2 s and up).
pub const RAFT_TICK_MS: u64 = 100;
/// What a batch adds around its event bodies (array and bin headers),
/// generously per event.
const BATCH_OVERHEAD_PER_EVENT: usize = 8;
const _: () = assert!(ELECTION_TICKS_MIN as u64 * RAFT_TICK_MS >= 2000);
// A whole order's record fits one entry with its items' framing.
const _: () = assert!(
    orderly_common::limits::GROUP_ORDER_BYTES_MAX + orderly_common::limits::ORDER_ITEMS_MAX as usize * 5 + 4096
        <= PROPOSAL_BYTES_MAX
);

/// What this member does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Follower,
    /// Elected; applying the entries its log held at election (up to
    /// `to`) before it serves.
    CatchingUp {
        to: u64,
    },
    Leader,
}

/// A leader turn's messages, published once entry `index` is applied.
struct Held {
    index: u64,
    outbound: Vec<Outbound>,
    answers: Vec<(tokio::sync::oneshot::Sender<Answer>, Answer)>,
}

/// A group member's state beside the core.
pub(super) struct GroupState {
    node: Node,
    peers: Peers,
    pub(super) role: Role,
    /// The last index applied to the core and the journal.
    applied: u64,
    next_tick_ms: Millis,
    held: VecDeque<Held>,
    core_config: CoreConfig,
    heartbeat_due_ms: Millis,
    dropped_messages: u64,
    peer_refused: u64,
}

/// Opens the Raft log, starts the node and the peer transport. `applied`:
/// the index the event journal holds up to.
pub(super) fn start(
    context: &zmq::Context,
    config: &BrokerConfig,
    settings: &GroupSettings,
    applied: u64,
    zap: Option<&orderly_security::zap::ZapHandler>,
) -> Result<GroupState, BrokerError> {
    let id = settings.node_id;
    let disk: Arc<dyn orderly_journal::Storage> = Arc::new(orderly_journal::OsStorage);
    let (storage, _) =
        JournalStorage::open(disk, &raft_dir(&config.data_dir), config.journal.clone(), &settings.group.ids())?;
    // Members stand at different times (ids differ), so they rarely split
    // a vote; the node's draw is deterministic (see `NodeConfig`).
    let election_ticks = ELECTION_TICKS_MIN + 2 * id as usize;
    let node = Node::new(NodeConfig { id, election_ticks, applied }, storage)?;
    let me = settings.group.member(id).ok_or_else(|| BrokerError::Group(format!("no member {id} in the group")))?;
    let curve = config.curve.as_ref();
    let mut peers = Vec::new();
    for member in settings.group.members().iter().filter(|m| m.id != id) {
        let public_key = match curve {
            Some(curve) => Some(broker_key(&curve.authorized_keys, member.id)?),
            None => None,
        };
        let id = MemberId::new(member.id).expect("group ids are at least 1");
        peers.push(PeerAddress { id, endpoint: member.peer.clone(), public_key });
    }
    let peer_config = PeerConfig {
        me: MemberId::new(id).expect("group ids are at least 1"),
        bind: me.peer.clone(),
        peers,
        curve: curve.map(|c| c.keys.clone()),
        allow_insecure: config.allow_insecure,
    };
    let peers = Peers::start(context, peer_config, zap)?;
    info!(member = id, peer = %me.peer, applied, election_ms = election_ticks as u64 * RAFT_TICK_MS, "group member started");
    Ok(GroupState {
        node,
        peers,
        role: Role::Follower,
        applied,
        next_tick_ms: 0,
        held: VecDeque::new(),
        core_config: config.core.clone(),
        heartbeat_due_ms: 0,
        dropped_messages: 0,
        peer_refused: 0,
    })
}

/// The public key of member `id`'s `broker` line in authorized_keys.
fn broker_key(path: &std::path::Path, id: u64) -> Result<[u8; 32], BrokerError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BrokerError::Group(format!("cannot read {}: {e}", path.display())))?;
    text.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|words| {
            words.len() >= 3
                && words[1] == "broker"
                && orderly_security::authorized::broker_member_id(words[2]) == Some(id)
        })
        .and_then(|words| orderly_security::keys::decode(words[0]))
        .ok_or_else(|| BrokerError::Group(format!("{} has no `broker` key for member {id}", path.display())))
}

/// The events of one leader turn as batches of at most
/// `PROPOSAL_BYTES_MAX` bytes (a MessagePack array of event bodies).
pub fn encode_batches(bodies: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut batches = Vec::new();
    let mut current: Vec<ByteBuf> = Vec::new();
    let mut bytes = 0;
    for body in bodies {
        let size = body.len() + BATCH_OVERHEAD_PER_EVENT;
        if !current.is_empty() && bytes + size > PROPOSAL_BYTES_MAX {
            batches.push(encode_batch(&std::mem::take(&mut current)));
            bytes = 0;
        }
        bytes += size;
        current.push(ByteBuf::from(body));
    }
    if !current.is_empty() {
        batches.push(encode_batch(&current));
    }
    batches
}

fn encode_batch(bodies: &[ByteBuf]) -> Vec<u8> {
    rmp_serde::to_vec(bodies).expect("encoding into memory cannot fail")
}

/// The event bodies of a committed entry (none for a leader's empty one).
pub fn decode_batch(data: &[u8]) -> Result<Vec<ByteBuf>, BrokerError> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    rmp_serde::from_slice(data).map_err(|e| BrokerError::Group(format!("a committed entry is not an event batch: {e}")))
}

impl Loop {
    fn group(&mut self) -> &mut GroupState {
        self.group.as_mut().expect("a group member's loop")
    }

    /// One turn of a group member (see the module docs).
    pub(super) fn group_turn(&mut self) -> Result<(), BrokerError> {
        self.group_wait()?;
        let now = self.now_ms();
        self.drain_subscriptions(now)?;
        self.recv_peers()?;
        let group = self.group();
        if now >= group.next_tick_ms {
            group.next_tick_ms = now + RAFT_TICK_MS;
            group.node.tick();
        }
        if group.role == Role::Leader {
            self.drain_control(now)?;
            self.drain_intake(now)?;
            if now >= self.core.poll_timeout() {
                self.core.handle_timeout(now);
            }
        } else {
            self.drop_client_input()?;
        }
        self.answer_admin(now);
        if self.group().role == Role::Leader {
            self.propose_turn(now)?;
        }
        self.handle_ready(now)?;
        self.recorder.log.sync_lazy_due().map_err(journal_err("fsync"))?;
        let closed = self.intake_closed();
        self.notice_log.log(&mut self.core, closed, now);
        if self.group().role == Role::Leader {
            self.announce(now)?;
        } else {
            self.follower_heartbeat(now)?;
        }
        if now >= self.status_due_ms {
            self.status_due_ms = now + self.status_interval_ms;
            self.log_status();
        }
        Ok(())
    }

    /// Polls the fanout, the peer socket and, on the serving leader,
    /// intake and control, until input or the next tick or deadline.
    fn group_wait(&mut self) -> Result<(), BrokerError> {
        let now = self.now_ms();
        let group = self.group.as_ref().expect("a group member's loop");
        let leader = group.role == Role::Leader;
        let mut due = group.next_tick_ms;
        if leader {
            due = due.min(self.core.poll_timeout());
        }
        let wait_ms = due.saturating_sub(now).min(RAFT_TICK_MS) as i64;
        let intake = if leader && self.intake_open() { zmq::POLLIN } else { zmq::PollEvents::empty() };
        let mut items = [
            self.sockets.fanout.as_poll_item(zmq::POLLIN),
            // Followers read (and drop) what clients send too.
            self.sockets.control.as_poll_item(zmq::POLLIN),
            self.sockets.intake.as_poll_item(if leader { intake } else { zmq::POLLIN }),
            group.peers.router().as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, wait_ms) {
            Ok(_) | Err(zmq::Error::EINTR) => Ok(()),
            Err(source) => Err(BrokerError::Zmq { during: "poll", source }),
        }
    }

    /// Steps every waiting peer message into the node; a message whose
    /// `from` is not the member the transport authenticated is dropped.
    fn recv_peers(&mut self) -> Result<(), BrokerError> {
        let group = self.group();
        for _ in 0..BATCH_LEN_MAX {
            let Some((from, payload)) = group.peers.try_recv()? else { break };
            match Message::parse_from_bytes(&payload) {
                Ok(message) if message.from == from.get() => group.node.step(message),
                Ok(message) => {
                    group.peer_refused += 1;
                    warn!(
                        sender = from.get(),
                        claimed = message.from,
                        "dropped a raft message claiming another sender"
                    );
                }
                Err(error) => {
                    group.peer_refused += 1;
                    warn!(sender = from.get(), %error, "dropped an undecodable raft message");
                }
            }
        }
        Ok(())
    }

    /// A member that does not serve reads what clients send and drops it
    /// (a client that has not heard of the new leader resends to it).
    fn drop_client_input(&mut self) -> Result<(), BrokerError> {
        let mut dropped = 0;
        for socket in [&self.sockets.intake, &self.sockets.control] {
            for _ in 0..BATCH_LEN_MAX {
                match socket.recv_multipart(zmq::DONTWAIT) {
                    Ok(_) => dropped += 1,
                    Err(zmq::Error::EAGAIN) => break,
                    Err(source) => return Err(BrokerError::Zmq { during: "draining as a follower", source }),
                }
            }
        }
        self.group().dropped_messages += dropped;
        Ok(())
    }

    /// The leader's end of a turn: the turn's events become entries; its
    /// messages (and admin answers that changed state) wait for the last
    /// entry of the log to be applied.
    fn propose_turn(&mut self, now: Millis) -> Result<(), BrokerError> {
        let mut bodies = Vec::new();
        while let Some(event) = self.core.poll_event() {
            bodies.push(encode_event(&event));
        }
        let group = self.group.as_mut().expect("a group member's loop");
        for batch in encode_batches(bodies) {
            match group.node.propose(batch) {
                Ok(()) => {}
                Err(error @ ProposeError::TooLarge { .. }) => return Err(BrokerError::Group(error.to_string())),
                Err(error) => {
                    // The core has applied what the log will not hold: it
                    // must be rebuilt from what is committed.
                    warn!(%error, "proposal refused; rebuilding the core from the journal");
                    return self.step_down(now);
                }
            }
        }
        let index = group.node.last_index();
        let mut outbound = Vec::new();
        while let Some(out) = self.core.poll_outbound() {
            outbound.push(out);
        }
        let answers = std::mem::take(&mut self.admin_after_sync);
        if !outbound.is_empty() || !answers.is_empty() {
            group.held.push_back(Held { index, outbound, answers });
        }
        Ok(())
    }

    /// Persists and sends what raft produced, applies what it committed,
    /// publishes what that released, and follows a change of role.
    fn handle_ready(&mut self, now: Millis) -> Result<(), BrokerError> {
        let group = self.group();
        let output = group.node.handle_ready()?;
        for message in output.messages {
            let Some(to) = MemberId::new(message.to) else { continue };
            let bytes =
                message.write_to_bytes().map_err(|e| BrokerError::Group(format!("encoding a raft message: {e}")))?;
            if let Err(error) = group.peers.send(to, &bytes) {
                warn!(to = message.to, %error, "raft message not sent");
            }
        }
        if !output.applied.is_empty() {
            self.apply_committed(output.applied)?;
        }
        // Every turn: a turn that proposed nothing (heartbeats, a repeated
        // confirm) holds its messages at an index that may be applied already.
        self.publish_released()?;
        self.sync_role(now)
    }

    /// Appends each committed batch's events (and its marker) to the
    /// journal, applying them to the core first unless this member made
    /// them as the leader; one durable commit for all.
    fn apply_committed(&mut self, applied: Vec<Applied>) -> Result<(), BrokerError> {
        let own = self.group().role == Role::Leader;
        let mut last = None;
        for entry in applied {
            for (n, body) in decode_batch(&entry.data)?.into_iter().enumerate() {
                let event = decode_event(n as u64, &body)?;
                if !own {
                    self.core.apply(&event);
                }
                if !self.recorder.record(&mut self.core, &event)? {
                    return Err(BrokerError::Group("the journal's disk is full".into()));
                }
            }
            self.recorder.log.append(&applied_marker(entry.index)).map_err(journal_err("append"))?;
            last = Some(entry.index);
        }
        if !own {
            // A follower's core is in replay mode: it makes no events, but
            // drop any to be sure nothing accumulates.
            while self.core.poll_event().is_some() {}
        }
        if let Some(index) = last {
            if !self.recorder.commit()? {
                return Err(BrokerError::Group("the journal's disk is full".into()));
            }
            self.group().applied = index;
        }
        Ok(())
    }

    /// Publishes the held messages whose entry is applied (committed by a
    /// majority and in this member's journal).
    fn publish_released(&mut self) -> Result<(), BrokerError> {
        let group = self.group.as_mut().expect("a group member's loop");
        while group.held.front().is_some_and(|held| held.index <= group.applied) {
            let held = group.held.pop_front().expect("checked above");
            for mut out in held.outbound {
                if let Some(fill) = out.fill.take() {
                    let items = self.recorder.read_items(fill.from)?;
                    out.body = encode_dispatch(&fill.key, fill.attempt, fill.attempt > 1, &items);
                }
                self.sockets
                    .fanout
                    .send_multipart([out.topic.as_slice(), out.body.as_slice()], 0)
                    .map_err(zmq_err("publishing"))?;
            }
            for (reply, answer) in held.answers {
                let _ = reply.send(answer);
            }
        }
        Ok(())
    }

    /// Follows raft's role: a new leader catches up, then serves; a lost
    /// leadership drops what it held and rebuilds the core.
    fn sync_role(&mut self, now: Millis) -> Result<(), BrokerError> {
        let group = self.group.as_mut().expect("a group member's loop");
        let leads = group.node.is_leader();
        let view = GroupView { member: Some(group.node.id()), leader: group.node.leader_id(), term: group.node.term() };
        match group.role {
            Role::Leader | Role::CatchingUp { .. } if !leads => {
                info!(term = view.term, leader = ?view.leader, "no longer the leader");
                self.step_down(now)?;
            }
            Role::Follower if leads => {
                let to = group.node.last_index();
                info!(term = view.term, catch_up_to = to, "elected leader; applying the log before serving");
                group.role = Role::CatchingUp { to };
            }
            _ => {}
        }
        let group = self.group.as_mut().expect("a group member's loop");
        if let Role::CatchingUp { to } = group.role {
            if group.applied >= to {
                group.role = Role::Leader;
                self.core.finish_recovery(now);
                let status = self.core.status();
                info!(term = view.term, applied = to, pending = status.pending_orders, "leading: serving intake");
            }
        }
        if self.core.group_view() != view {
            self.core.set_group_view(view);
        }
        Ok(())
    }

    /// Back to follower: what the core made since the last commit is
    /// forgotten (it is not in the journal) and nothing held goes out.
    fn step_down(&mut self, now: Millis) -> Result<(), BrokerError> {
        let group = self.group.as_mut().expect("a group member's loop");
        group.role = Role::Follower;
        let dropped: usize = group.held.drain(..).map(|held| held.outbound.len()).sum();
        let view = self.core.group_view();
        let (core, anchors, applied) =
            replay_applied(&self.recorder.log, group.core_config.clone(), now, |_, _, _| {})?;
        debug_assert_eq!(applied, group.applied);
        self.core = core;
        self.core.set_group_view(view);
        self.recorder.anchors = anchors;
        self.admin_after_sync.clear();
        info!(dropped_messages = dropped, applied, "rebuilt the core from the journal");
        Ok(())
    }

    /// Followers announce the leader they know on `b/` (the leader's core
    /// does it in its own heartbeats).
    fn follower_heartbeat(&mut self, now: Millis) -> Result<(), BrokerError> {
        let interval_ms = self.core.config().heartbeat_interval_ms;
        let group = self.group();
        if now < group.heartbeat_due_ms {
            return Ok(());
        }
        group.heartbeat_due_ms = now + interval_ms;
        let view = self.core.group_view();
        let body = FanoutMsg::Heartbeat(BrokerHeartbeat {
            incarnation: self.core.config().incarnation,
            interval_ms,
            member: view.member,
            leader: view.leader,
            term: view.term,
        })
        .encode();
        let topic = orderly_common::ids::BROADCAST_TOPIC;
        self.sockets.fanout.send_multipart([topic, body.as_slice()], 0).map_err(zmq_err("publishing"))
    }

    /// The group's part of `/status`.
    pub(super) fn group_report(&self) -> Option<GroupReport> {
        let group = self.group.as_ref()?;
        let role = match group.role {
            Role::Leader => "leader",
            Role::CatchingUp { .. } => "catching_up",
            Role::Follower => "follower",
        };
        Some(GroupReport {
            member: group.node.id(),
            leader: group.node.leader_id(),
            term: group.node.term(),
            role: role.to_owned(),
            applied: group.applied,
            commit: group.node.commit_index(),
            dropped_messages: group.dropped_messages,
            peer_refused: group.peer_refused + group.peers.stats().sender_mismatch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_turn_is_split_into_bounded_batches_that_decode_in_order() {
        let bodies: Vec<Vec<u8>> = (0..10u8).map(|n| vec![n; PROPOSAL_BYTES_MAX / 4]).collect();
        let batches = encode_batches(bodies.clone());
        assert!(batches.len() >= 3, "{} batches", batches.len());
        assert!(batches.iter().all(|b| b.len() <= PROPOSAL_BYTES_MAX));
        let decoded: Vec<Vec<u8>> =
            batches.iter().flat_map(|b| decode_batch(b).unwrap()).map(|b| b.into_vec()).collect();
        assert_eq!(decoded, bodies);
        assert!(decode_batch(&[]).unwrap().is_empty());
    }

    #[test]
    fn markers_are_never_events() {
        let marker = applied_marker(42);
        assert_eq!(super::super::recover::decode_applied_marker(&marker), Some(42));
        assert!(decode_event(1, &marker).is_err());
        let event = crate::core::Event::Acked { key: orderly_common::OrderKey::new("p", "o") };
        assert_eq!(super::super::recover::decode_applied_marker(&encode_event(&event)), None);
    }
}
