//! A group member's io (`--group`, see docs/REPLICATION.md): the same
//! loop as a single broker's, with "record, commit, publish" replaced by
//! "propose, wait for the group to commit, record, publish". What a turn
//! decides is [`Member`]'s (sans-IO, shared with the simulation); this file
//! moves the bytes: peer messages, client input (drained and dropped when
//! not serving), publishing what a turn released, follower heartbeats.

use std::sync::Arc;

use orderly_common::limits::BATCH_LEN_MAX;
use orderly_common::protocol::{BrokerHeartbeat, FanoutMsg};
use orderly_peer::envelope::{Kind, Payload};
use orderly_peer::{MemberId, PeerAddress, PeerConfig, Peers};
use orderly_replication::node::ELECTION_TICKS_MIN;
use orderly_replication::MessageType;
use orderly_replication::{JournalStorage, Node, NodeConfig};
use protobuf::Message as _;
use tracing::{info, warn};

use super::config::{raft_dir, BrokerConfig, GroupSettings};
use super::error::{zmq_err, BrokerError};
use super::event_loop::Loop;
use super::member::{Member, RAFT_TICK_MS};
use super::snapshot::{Snapshots, View};
use crate::admin::schema::GroupReport;
use crate::admin::Answer;
use crate::core::Millis;

/// An admin answer released with the turn that made it.
type HeldAnswer = (tokio::sync::oneshot::Sender<Answer>, Answer);

/// A group member's state beside the core.
pub(super) struct GroupState {
    pub(super) member: Member<HeldAnswer>,
    peers: Peers,
    heartbeat_due_ms: Millis,
    snapshots: Snapshots,
}

/// Before the event journal is opened: finishes or drops what a crash left
/// of a snapshot being installed (see `snapshot`), which needs the index
/// raft's journal recorded.
pub(super) fn recover_snapshot(config: &BrokerConfig, settings: &GroupSettings) -> Result<(), BrokerError> {
    super::snapshot::recover_staged(&config.data_dir, &config.journal, || {
        let disk: Arc<dyn orderly_journal::Storage> = Arc::new(orderly_journal::OsStorage);
        let (storage, _) =
            JournalStorage::open(disk, &raft_dir(&config.data_dir), config.journal.clone(), &settings.group.ids())?;
        Ok(storage.snapshot_index())
    })
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
    let snapshots = Snapshots::new(&config.data_dir, id);
    Ok(GroupState { member: Member::new(node, applied, config.core.clone()), peers, heartbeat_due_ms: 0, snapshots })
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
        self.group().member.tick(now);
        let serves = self.group().member.serves();
        let group = self.group.as_mut().expect("a group member's loop");
        let disk_full = self.disk.full().is_some();
        let barrier = serves && group.member.compaction_barrier(&self.recorder, disk_full, now);
        if barrier {
            // Client input waits in its queues: see `compaction_barrier`.
        } else if serves {
            self.drain_control(now)?;
            self.drain_intake(now)?;
            if now >= self.core.poll_timeout() {
                self.core.handle_timeout(now);
            }
        } else {
            self.drop_client_input()?;
        }
        self.answer_admin(now);
        let group = self.group.as_mut().expect("a group member's loop");
        if serves {
            let answers = std::mem::take(&mut self.admin_after_sync);
            group.member.propose_turn(&mut self.core, &mut self.recorder, answers, now)?;
        }
        self.handle_ready(now)?;
        self.after_ready(now)?;
        self.recorder.log.sync_lazy_due().map_err(super::error::journal_err("fsync"))?;
        let closed = self.intake_closed();
        self.notice_log.log(&mut self.core, closed, now);
        if self.group().member.serves() {
            self.announce(now)?;
        } else {
            self.admin_after_sync.clear();
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
        let serves = group.member.serves();
        let mut due = group.member.next_tick_ms();
        if serves {
            due = due.min(self.core.poll_timeout());
        }
        let wait_ms = due.saturating_sub(now).min(RAFT_TICK_MS) as i64;
        let barrier = group.member.holds_barrier();
        let intake = if serves && self.intake_open() && !barrier { zmq::POLLIN } else { zmq::PollEvents::empty() };
        let mut items = [
            self.sockets.fanout.as_poll_item(zmq::POLLIN),
            // Followers read (and drop) what clients send too.
            self.sockets.control.as_poll_item(if serves && barrier { zmq::PollEvents::empty() } else { zmq::POLLIN }),
            self.sockets.intake.as_poll_item(if serves { intake } else { zmq::POLLIN }),
            group.peers.router().as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, wait_ms) {
            Ok(_) | Err(zmq::Error::EINTR) => Ok(()),
            Err(source) => Err(BrokerError::Zmq { during: "poll", source }),
        }
    }

    /// Steps every waiting peer message into the node (a message whose
    /// `from` is not the member the transport authenticated is dropped).
    fn recv_peers(&mut self) -> Result<(), BrokerError> {
        let now = self.now_ms();
        let group = self.group();
        for _ in 0..BATCH_LEN_MAX {
            let Some((from, payload)) = group.peers.try_recv()? else { break };
            let raft = match orderly_peer::envelope::unwrap(&payload) {
                Payload::Raft(raft) => raft,
                Payload::Frame(Kind::SnapshotChunk, body) => {
                    // The leader's last chunk carries its raft message.
                    let Some(message) = group.snapshots.receive(from.get(), body, now)? else { continue };
                    if message.from != from.get() {
                        warn!(from = from.get(), "a snapshot stream's message claims another sender; dropped");
                        continue;
                    }
                    group.member.step_message(message);
                    continue;
                }
                Payload::Unknown(kind) => {
                    warn!(from = from.get(), kind, "a peer frame of an unknown kind; dropped");
                    continue;
                }
            };
            if let Err(refused) = group.member.step(from.get(), raft) {
                warn!(%refused, "dropped a raft message");
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
        self.group().member.count_dropped(dropped);
        Ok(())
    }

    /// Sends what raft produced and publishes what the member released.
    fn handle_ready(&mut self, now: Millis) -> Result<(), BrokerError> {
        let group = self.group.as_mut().expect("a group member's loop");
        let ready = group.member.handle_ready(&mut self.core, &mut self.recorder, now)?;
        for message in ready.messages {
            let Some(to) = MemberId::new(message.to) else { continue };
            if message.get_msg_type() == MessageType::MsgSnapshot {
                // Streamed outside raft's message: see `snapshot`.
                let Some((index, term)) = group.member.snapshot_point() else {
                    group.member.report_snapshot(message.to, false);
                    continue;
                };
                let view = View { segments: self.recorder.log.segments(), index, term };
                let to = message.to;
                if let Err(error) = group.snapshots.start(message, view, now) {
                    // raft sends another later.
                    warn!(to, %error, "snapshot not started");
                    group.member.report_snapshot(to, false);
                }
                continue;
            }
            let bytes =
                message.write_to_bytes().map_err(|e| BrokerError::Group(format!("encoding a raft message: {e}")))?;
            if let Err(error) = group.peers.send(to, &bytes) {
                warn!(to = message.to, %error, "raft message not sent");
            }
        }
        for out in ready.publish {
            self.sockets
                .fanout
                .send_multipart([out.topic.as_slice(), out.body.as_slice()], 0)
                .map_err(zmq_err("publishing"))?;
        }
        for (reply, answer) in ready.answers {
            let _ = reply.send(answer);
        }
        Ok(())
    }

    /// After the turn's ready: a snapshot raft installed replaces the event
    /// journal; both journals are compacted; snapshot streams move on.
    fn after_ready(&mut self, now: Millis) -> Result<(), BrokerError> {
        let group = self.group.as_mut().expect("a group member's loop");
        if group.member.installing().is_some() {
            let options = self.recorder.log.options().clone();
            // The old journal stays open until the new one is: renaming and
            // removing its directory does not disturb open files.
            let journal_dir = group.snapshots.swap_in()?;
            let (journal, _) = orderly_journal::Journal::open(&journal_dir, options)
                .map_err(|source| BrokerError::Journal { during: "opening an installed snapshot", source })?;
            drop(std::mem::replace(&mut self.recorder.log, journal));
            let group = self.group.as_mut().expect("a group member's loop");
            group.member.snapshot_installed(&mut self.core, &mut self.recorder, now)?;
        }
        let disk_full = self.disk.full().is_some();
        let group = self.group.as_mut().expect("a group member's loop");
        group.member.compact(&mut self.core, &mut self.recorder, disk_full)?;
        let GroupState { member, peers, snapshots, .. } = group;
        snapshots.pump(peers, now, |to, delivered| member.report_snapshot(to, delivered));
        snapshots.expire(now)?;
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
        Some(group.member.report(group.peers.stats().sender_mismatch))
    }
}
