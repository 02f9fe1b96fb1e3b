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
use orderly_replication::{Change, ChangeError, ChangeRequest, JournalStorage, Node, NodeConfig};
use protobuf::Message as _;
use tracing::{info, warn};

use super::config::{raft_dir, BrokerConfig, GroupSettings};
use super::error::{zmq_err, BrokerError};
use super::event_loop::Loop;
use super::member::{Member, RAFT_TICK_MS};
use super::snapshot::{Snapshots, View};
use crate::admin::schema::{GroupReport, MembershipReport};
use crate::admin::{Answer, Query};
use crate::core::Millis;

/// An admin answer released with the turn that made it.
type HeldAnswer = (tokio::sync::oneshot::Sender<Answer>, Answer);

/// A group member's state beside the core.
pub(super) struct GroupState {
    pub(super) member: Member<HeldAnswer>,
    peers: Peers,
    heartbeat_due_ms: Millis,
    /// Set when this member applied its own removal: the loop stops.
    removed_at: Option<Millis>,
    snapshots: Snapshots,
}

/// Before the event journal is opened: finishes or drops what a crash left
/// of a snapshot being installed (see `snapshot`), which needs the index
/// raft's journal recorded.
pub(super) fn recover_snapshot(config: &BrokerConfig, settings: &GroupSettings) -> Result<(), BrokerError> {
    super::snapshot::recover_staged(&config.data_dir, &config.journal, || {
        let disk: Arc<dyn orderly_journal::Storage> = Arc::new(orderly_journal::OsStorage);
        let (storage, _) =
            JournalStorage::open(disk, &raft_dir(&config.data_dir), config.journal.clone(), &voters(settings))?;
        Ok(storage.snapshot_index())
    })
}

/// The configuration a new raft journal starts from: the group file's
/// members, or none for a member joining an existing group (`--join`).
fn voters(settings: &GroupSettings) -> Vec<u64> {
    if settings.join {
        Vec::new()
    } else {
        settings.group.ids()
    }
}

/// Opens the Raft log, starts the node and the peer transport. `applied`:
/// the index the event journal holds up to. A member started with
/// `--join` on a new data directory starts with no voters (it never
/// stands) and learns the group from the log the leader sends it.
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
        JournalStorage::open(disk, &raft_dir(&config.data_dir), config.journal.clone(), &voters(settings))?;
    // Members stand at different times (ids differ), so they rarely split
    // a vote; the node's draw is deterministic (see `NodeConfig`).
    let election_ticks = ELECTION_TICKS_MIN + 2 * id as usize;
    let node = Node::new(NodeConfig { id, election_ticks, applied }, storage)?;
    let conf = node.conf_state();
    let configured = !(conf.voters.is_empty() && conf.learners.is_empty());
    if configured && !conf.voters.contains(&id) && !conf.learners.contains(&id) {
        return Err(BrokerError::Group(format!(
            "member {id} was removed from the group (its members are now {:?}): it does not start. To add it \
             again, empty its data directory and run it with --join, then `orderly-broker group add`",
            conf.voters
        )));
    }
    let me = settings.group.member(id).ok_or_else(|| BrokerError::Group(format!("no member {id} in the group")))?;
    // Peers: the configuration's members and the file's (a member behind
    // on the log must hear a leader added after the point it has reached;
    // a joiner has no configuration yet), each at the address the log gave
    // it or the file's.
    let mut ids: Vec<u64> = conf.voters.iter().chain(&conf.learners).copied().collect();
    ids.extend(settings.group.ids());
    ids.sort_unstable();
    ids.dedup();
    let roster = node.roster();
    let mut peers = Vec::new();
    for peer_id in ids.into_iter().filter(|&p| p != id) {
        let endpoint = match (roster.address(peer_id), settings.group.member(peer_id)) {
            (Some(record), _) => record.peer.parse().map_err(|e| BrokerError::Group(format!("member {peer_id}'s peer endpoint from the log: {e}")))?,
            (None, Some(member)) => member.peer.clone(),
            (None, None) => {
                return Err(BrokerError::Group(format!(
                    "member {peer_id} is in the group's configuration but neither in the log's additions nor in the group file: add its [[member]] table to the file"
                )))
            }
        };
        let authorized_keys = config.curve.as_ref().map(|c| c.authorized_keys.as_path());
        peers.push(peer_address(authorized_keys, peer_id, endpoint)?);
    }
    let peer_config = PeerConfig {
        me: MemberId::new(id).expect("group ids are at least 1"),
        bind: me.peer.clone(),
        peers,
        curve: config.curve.as_ref().map(|c| c.keys.clone()),
        allow_insecure: config.allow_insecure,
    };
    let peers = Peers::start(context, peer_config, zap)?;
    info!(member = id, peer = %me.peer, applied, election_ms = election_ticks as u64 * RAFT_TICK_MS,
          voters = ?conf.voters, learners = ?conf.learners, join = settings.join, "group member started");
    if !configured {
        info!(member = id, "joining: no configuration yet; waiting for the leader to send the log (`orderly-broker group add --node-id {id}`)");
    }
    Ok(GroupState {
        member: Member::new(node, applied, config.core.clone()),
        peers,
        heartbeat_due_ms: 0,
        removed_at: None,
        snapshots: Snapshots::new(&config.data_dir, id),
    })
}

/// Sends one raft message to `message.to`; raft resends what is lost.
fn send_raft(peers: &mut Peers, message: orderly_replication::Message) {
    let Some(to) = MemberId::new(message.to) else { return };
    // Encoded straight into the peer frame (see `Peers::send_with`).
    let size = message.compute_size() as usize;
    match peers.send_with(to, size, |frame| message.write_to_vec(frame)) {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => warn!(to = message.to, %error, "raft message not sent"),
        Err(error) => warn!(to = message.to, %error, "raft message not encoded; not sent"),
    }
}

/// Where member `id`'s peer socket is and, with CURVE, its key.
fn peer_address(
    authorized_keys: Option<&std::path::Path>,
    id: u64,
    endpoint: orderly_common::Endpoint,
) -> Result<PeerAddress, BrokerError> {
    let public_key = match authorized_keys {
        Some(path) => Some(broker_key(path, id)?),
        None => None,
    };
    let id = MemberId::new(id).ok_or_else(|| BrokerError::Group("member id 0".into()))?;
    Ok(PeerAddress { id, endpoint, public_key })
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
            group.member.promote_caught_up_learner();
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
        let barrier = group.member.holds_barrier();
        let mut due = group.member.next_tick_ms();
        // During a compaction barrier the core's timeouts wait too: a due
        // one would not wake the loop, only spin it.
        if serves && !barrier {
            due = due.min(self.core.poll_timeout());
        }
        let wait_ms = due.saturating_sub(now).min(RAFT_TICK_MS) as i64;
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
            let Some((from, payload)) = group.peers.try_recv_frame()? else { break };
            // Shared, not copied: raft keeps the entries as parts of it.
            let payload = bytes::Bytes::from_owner(payload);
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
            if let Err(refused) = group.member.step_shared(from.get(), &payload.slice_ref(raft)) {
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
        let GroupState { member, peers, .. } = group;
        // A snapshot's message waits for the apply (it streams the journal).
        let mut snapshots = Vec::new();
        let ready = member.handle_ready_sending(&mut self.core, &mut self.recorder, now, |message| {
            if message.get_msg_type() == MessageType::MsgSnapshot {
                snapshots.push(message);
            } else {
                send_raft(peers, message);
            }
        })?;
        for message in snapshots {
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
        }
        for out in ready.publish {
            super::sockets::publish(&self.sockets.fanout, out)?;
        }
        for confirms in ready.confirms {
            self.observe_confirms(confirms);
        }
        for (reply, answer) in ready.answers {
            let _ = reply.send(answer);
        }
        for change in ready.membership {
            self.follow_membership(change, now)?;
        }
        Ok(())
    }

    /// Connects to a member the log added, disconnects from one it
    /// removed; this member's own removal stops it.
    fn follow_membership(&mut self, change: Change, now: Millis) -> Result<(), BrokerError> {
        let me = self.group().member.node().id();
        match change {
            Change::AddLearner(record) if record.id != me => {
                let endpoint = record.peer.parse().map_err(|e| {
                    BrokerError::Group(format!("member {}'s peer endpoint from the log: {e}", record.id))
                })?;
                let address = peer_address(self.authorized_path.as_deref(), record.id, endpoint)?;
                let group = self.group();
                if group.peers.peers().contains(&address.id) {
                    return Ok(()); // A joiner knew it from the file.
                }
                info!(member = record.id, peer = %record.peer, "member added: connecting to it");
                group.peers.add_peer(address)?;
            }
            Change::Remove(id) if id == me => {
                tracing::error!(member = me, applied = self.group().member.applied(),
                    "this member was removed from the group: it stops serving and exits; remove its [[member]] table from the group file");
                self.group().removed_at = Some(now);
            }
            Change::Remove(id) => {
                if let Some(peer) = MemberId::new(id) {
                    if self.group().peers.remove_peer(peer) {
                        info!(member = id, "member removed: disconnected from it");
                    }
                }
            }
            Change::AddLearner(_) | Change::Promote(_) => {}
        }
        Ok(())
    }

    /// Whether this member was removed from the group (the loop stops).
    pub(super) fn removed_from_group(&self) -> bool {
        self.group.as_ref().is_some_and(|g| g.removed_at.is_some())
    }

    /// `POST /group/add` and `/group/remove` on the leader: proposes the
    /// change; the answer is held until its entry is applied.
    pub(super) fn answer_membership(&mut self, query: Query) -> Answer {
        let Some(group) = self.group.as_mut() else {
            return Answer::text(404, "this broker is not a group member (run --group)");
        };
        let (request, change, member) = match query {
            Query::GroupAdd(record) => {
                let id = record.id;
                (ChangeRequest::Add(record), "add_learner", id)
            }
            Query::GroupRemove(id) => (ChangeRequest::Remove(id), "remove", id),
            _ => unreachable!("only membership queries come here"),
        };
        match group.member.propose_change(request) {
            Ok(index) => {
                info!(member, change, index, "membership change proposed");
                Answer::json(&MembershipReport { index, change: change.to_owned(), member })
            }
            Err(error) => {
                let status = match &error {
                    ChangeError::NotLeader { .. } | ChangeError::LeaderHandedOver { .. } | ChangeError::Dropped => 503,
                    ChangeError::InProgress | ChangeError::AlreadyMember(_) => 409,
                    ChangeError::Unknown(_) => 404,
                    ChangeError::LastMember(_) | ChangeError::NoMajority { .. } | ChangeError::TooMany => 422,
                };
                warn!(%error, "membership change refused");
                Answer::text(status, error.to_string())
            }
        }
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
