//! [`Member`]: the part of a group member's turn that does no IO — the
//! Raft node, the member's role, the leader's held messages — over the
//! core and the recorder the io loop (or the simulation) hands it. The io
//! loop (`group.rs`) moves bytes: peer messages in and out, client input,
//! publishing what a turn released. The simulation (`orderly-sim`) drives
//! the same `Member` on a simulated disk and network.
//!
//! - The **leader** runs the core as a single broker does; each turn's
//!   events become one Raft entry (a batch, split when large) and the
//!   turn's outbound messages are held until that entry is applied. Then
//!   the events go to its own journal and the messages out.
//! - A **follower** applies each committed batch to its core
//!   (`Core::apply`) and its journal.
//! - Every member appends, after each committed batch's events, a marker
//!   record with the Raft index, in the same commit (see
//!   `recover::applied_marker`): a restart replays the journal and tells
//!   raft how far it got.
//! - A committed membership change (`orderly_replication::membership`)
//!   carries no events: its marker alone; it is handed to the io in
//!   [`Ready::membership`] (connect to an added member, drop a removed
//!   one, stop when this member is the one removed). The serving leader
//!   promotes a learner once it has caught up.
//! - Leadership lost: held messages are dropped and the core is rebuilt
//!   from the journal (committed events only). Leadership won: the member
//!   first applies every entry its log held when it was elected, then ends
//!   recovery (`finish_recovery`: in-flight orders pending, no worker
//!   known) and serves.

mod compaction;
mod install;

use std::collections::VecDeque;

use orderly_replication::node::PROPOSAL_BYTES_MAX;
use orderly_replication::{Applied, Change, ChangeError, ChangeRequest, Message, Node, ProposeError};
use protobuf::Message as _;
use tracing::{info, warn};

use super::error::BrokerError;
use super::recorder::{Recorder, SegmentedLog};
use super::recover::{applied_marker, replay_applied};
use crate::admin::schema::{GroupReport, MemberProgress};
use crate::core::codec::{decode_event, encode_event, encode_event_into};
use crate::core::{ConfirmTiming, Core, CoreConfig, Event, GroupView, Millis, Outbound};

/// One Raft tick: heartbeats every `HEARTBEAT_TICKS` (200 ms), elections
/// after `ELECTION_TICKS_MIN` or more (2 s and up).
pub const RAFT_TICK_MS: u64 = 100;
/// What a batch adds around its event bodies (array and bin headers),
/// generously per event.
const BATCH_OVERHEAD_PER_EVENT: usize = 8;
/// The leader's buffer for encoding a turn's events is kept for the next
/// turn up to this size (a fresh one grows by doubling, on fresh pages,
/// every turn); one larger, after a huge turn, is let go.
const ENCODING_RETAINED_BYTES_MAX: usize = PROPOSAL_BYTES_MAX;
const _: () = assert!(orderly_replication::node::ELECTION_TICKS_MIN as u64 * RAFT_TICK_MS >= 2000);
// A whole order's record fits one entry with its items' framing.
const _: () = assert!(
    orderly_common::limits::GROUP_ORDER_BYTES_MAX + orderly_common::limits::ORDER_ITEMS_MAX as usize * 5 + 4096
        <= PROPOSAL_BYTES_MAX
);

/// What this member does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// Elected; applying the entries its log held at election (up to
    /// `to`) before it serves.
    CatchingUp {
        to: u64,
    },
    Leader,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::CatchingUp { .. } => "catching_up",
            Role::Follower => "follower",
        }
    }
}

/// A leader turn's messages, published once entry `index` is applied.
/// `A`: the io's answers to admin requests that changed state.
struct Held<A> {
    index: u64,
    outbound: Vec<Outbound>,
    answers: Vec<A>,
    /// The confirms among `outbound` (confirm latency, `/metrics`).
    confirms: Option<ConfirmTiming>,
}

/// A serving leader's entry and the events it encodes, kept until it is
/// applied: the leader's core made (and applied) them, so they need not be
/// decoded from the entry again. Only while this member leads: stepping
/// down drops them all (another leader's entry may commit at `index`).
/// Bounded by what raft lets a leader hold uncommitted
/// (`orderly_replication::node::UNCOMMITTED_BYTES_MAX`).
struct Proposed {
    index: u64,
    term: u64,
    events: Vec<Event>,
}

/// What [`Member::release`] lets go: messages, answers, confirm timings.
type Released<A> = (Vec<Outbound>, Vec<A>, Vec<ConfirmTiming>);

/// What [`Member::handle_ready`] hands the io to do, in this order.
pub struct Ready<A> {
    /// Raft messages, each to `message.to`; any may be lost.
    pub messages: Vec<Message>,
    /// The leader's messages released this turn (their entry is applied),
    /// dispatch payloads filled in: publish them in order.
    pub publish: Vec<Outbound>,
    /// Admin answers released with them.
    pub answers: Vec<A>,
    /// The confirms among `publish`: how many orders, read when.
    pub confirms: Vec<ConfirmTiming>,
    /// Membership changes applied this turn, in order: the io connects to
    /// added members and drops removed ones (see `membership`).
    pub membership: Vec<Change>,
}

/// Why a peer message was not stepped into the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerRefused {
    #[error("a raft message from member {sender} claims to be from member {claimed}")]
    OtherSender { sender: u64, claimed: u64 },
    #[error("an undecodable raft message from member {sender}: {reason}")]
    Undecodable { sender: u64, reason: String },
}

/// One group member's state beside the core (see the module docs).
pub struct Member<A> {
    node: Node,
    role: Role,
    /// The last index applied to the core and the journal.
    applied: u64,
    /// The last applied index whose marker is fsynced in the event journal
    /// (entries are applied with lazy commits: the Raft log holds them
    /// durably already). The Raft log is compacted only below it.
    durable_applied: u64,
    next_tick_ms: Millis,
    held: VecDeque<Held<A>>,
    /// The leader's entries not yet applied, oldest first.
    proposed: VecDeque<Proposed>,
    /// Where the leader encodes a turn's events (see
    /// `ENCODING_RETAINED_BYTES_MAX`).
    encoding: Vec<u8>,
    core_config: CoreConfig,
    dropped_messages: u64,
    peer_refused: u64,
    /// Membership changes applied since the last `Ready`.
    changes: Vec<Change>,
    /// Applied entries the Raft log holds, with their sizes.
    retained: compaction::Retained,
    barrier: compaction::Barrier,
    /// A snapshot raft installed; the io swaps the journal next.
    install: Option<install::Pending>,
}

pub use compaction::{
    COMPACTION_BARRIER_MS_MAX, RAFT_LOG_COMPACT_STEP, RAFT_LOG_RETAIN_BYTES, RAFT_LOG_RETAIN_ENTRIES,
};

impl<A> Member<A> {
    /// A member around `node`, whose event journal holds entries up to
    /// `applied` (its last marker); it starts as a follower.
    pub fn new(node: Node, applied: u64, core_config: CoreConfig) -> Self {
        Member {
            node,
            role: Role::Follower,
            applied,
            // Opening the journal fsyncs what it found.
            durable_applied: applied,
            next_tick_ms: 0,
            held: VecDeque::new(),
            proposed: VecDeque::new(),
            encoding: Vec::new(),
            core_config,
            dropped_messages: 0,
            peer_refused: 0,
            changes: Vec::new(),
            barrier: compaction::Barrier::default(),
            retained: compaction::Retained::default(),
            install: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Serving: the leader, caught up; the only role that reads intake and
    /// control and runs the core's timeouts.
    pub fn serves(&self) -> bool {
        self.role == Role::Leader
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Gives the node back (a member shutting down or crashing).
    pub fn into_node(self) -> Node {
        self.node
    }

    /// When the next Raft tick is due.
    pub fn next_tick_ms(&self) -> Millis {
        self.next_tick_ms
    }

    /// Ticks the node if a tick is due at `now`.
    pub fn tick(&mut self, now: Millis) {
        if now >= self.next_tick_ms {
            self.next_tick_ms = now + RAFT_TICK_MS;
            self.node.tick();
        }
    }

    /// Client messages a non-serving member read and dropped.
    pub fn count_dropped(&mut self, messages: u64) {
        self.dropped_messages += messages;
    }

    /// Steps a peer message into the node; `sender` is the member the
    /// transport authenticated, and a message claiming another is refused.
    pub fn step(&mut self, sender: u64, payload: &[u8]) -> Result<(), PeerRefused> {
        self.step_parsed(sender, Message::parse_from_bytes(payload))
    }

    /// [`Member::step`] of a payload in a shared buffer: the entries an
    /// append carries stay in it (raft-rs's `Entry.data` are `Bytes`)
    /// instead of each being copied out, on fresh pages, before the log
    /// copies it once more to disk.
    pub fn step_shared(&mut self, sender: u64, payload: &bytes::Bytes) -> Result<(), PeerRefused> {
        self.step_parsed(sender, Message::parse_from_carllerche_bytes(payload))
    }

    fn step_parsed(&mut self, sender: u64, parsed: protobuf::ProtobufResult<Message>) -> Result<(), PeerRefused> {
        let refused = match parsed {
            Ok(message) if message.from == sender => {
                self.node.step(message);
                return Ok(());
            }
            Ok(message) => PeerRefused::OtherSender { sender, claimed: message.from },
            Err(error) => PeerRefused::Undecodable { sender, reason: error.to_string() },
        };
        self.peer_refused += 1;
        Err(refused)
    }

    /// The leader's end of a turn: the turn's events become entries; its
    /// messages (and `answers`) wait for the last entry of the log to be
    /// applied. A refused proposal rebuilds the core (it applied what the
    /// log will not hold).
    pub fn propose_turn<L: SegmentedLog>(
        &mut self,
        core: &mut Core,
        recorder: &mut Recorder<L>,
        answers: Vec<A>,
        now: Millis,
    ) -> Result<(), BrokerError> {
        let mut events = Vec::new();
        while let Some(event) = core.poll_event() {
            events.push(event);
        }
        let batches = encode_batches_in(&events, &mut self.encoding);
        if self.encoding.capacity() > ENCODING_RETAINED_BYTES_MAX {
            self.encoding = Vec::new();
        }
        let term = self.node.term();
        let mut events = events.into_iter();
        for (count, batch) in batches {
            match self.node.propose(batch) {
                Ok(()) => {
                    let events = events.by_ref().take(count).collect();
                    self.proposed.push_back(Proposed { index: self.node.last_index(), term, events });
                }
                Err(error @ ProposeError::TooLarge { .. }) => return Err(BrokerError::Group(error.to_string())),
                Err(error) => {
                    warn!(%error, "proposal refused; rebuilding the core from the journal");
                    return self.step_down(core, recorder, now);
                }
            }
        }
        let index = self.node.last_index();
        let mut outbound = Vec::new();
        while let Some(out) = core.poll_outbound() {
            outbound.push(out);
        }
        let confirms = core.take_confirm_timing();
        if !outbound.is_empty() || !answers.is_empty() {
            self.held.push_back(Held { index, outbound, answers, confirms });
        }
        Ok(())
    }

    /// Persists what raft produced, applies what it committed, releases
    /// what that allows, and follows a change of role.
    pub fn handle_ready<L: SegmentedLog>(
        &mut self,
        core: &mut Core,
        recorder: &mut Recorder<L>,
        now: Millis,
    ) -> Result<Ready<A>, BrokerError> {
        let mut messages = Vec::new();
        let mut ready = self.handle_ready_sending(core, recorder, now, |message| messages.push(message))?;
        ready.messages = messages;
        Ok(ready)
    }

    /// [`Member::handle_ready`] handing raft's messages to `send` as soon
    /// as they may go (`Node::handle_ready_sending`): before this member
    /// applies the committed entries to its journal, which no peer needs
    /// to wait for. `Ready::messages` stays empty.
    pub fn handle_ready_sending<L: SegmentedLog>(
        &mut self,
        core: &mut Core,
        recorder: &mut Recorder<L>,
        now: Millis,
        send: impl FnMut(Message),
    ) -> Result<Ready<A>, BrokerError> {
        let output = self.node.handle_ready_sending(send)?;
        if self.role != Role::Follower && !self.node.is_leader() {
            // Deposed by what this ready brought: step down *before*
            // applying it. The committed entries (or a snapshot) may be
            // another leader's at the indexes this member's held messages
            // wait for: released, they would confirm what was never
            // committed; and its core must apply them as a follower does.
            let view = self.view();
            info!(term = view.term, leader = ?view.leader, "no longer the leader");
            self.step_down(core, recorder, now)?;
        }
        if let Some(meta) = output.snapshot {
            // Only a follower is sent a snapshot: nothing held, nothing to
            // publish; the rest waits for the io's journal swap.
            self.install = Some(install::Pending { index: meta.index, term: meta.term, applied: output.applied });
            return Ok(Ready {
                messages: output.messages,
                publish: Vec::new(),
                answers: Vec::new(),
                confirms: Vec::new(),
                membership: Vec::new(),
            });
        }
        if !output.applied.is_empty() {
            self.apply_committed(core, recorder, output.applied)?;
        }
        // Every turn: a turn that proposed nothing (heartbeats, a repeated
        // confirm) holds its messages at an index that may be applied already.
        let (publish, answers, confirms) = self.release(recorder)?;
        self.sync_role(core, recorder, now)?;
        let membership = std::mem::take(&mut self.changes);
        Ok(Ready { messages: output.messages, publish, answers, confirms, membership })
    }

    /// Appends each committed batch's events (and its marker) to the
    /// journal, applying them to the core first unless this member made
    /// them as the leader; the entry's bytes go to the journal as they
    /// are (an event's record is its body in the batch), and a leader's
    /// own events are not decoded again. One lazy commit for all: the entries are
    /// durable in a majority's Raft logs (that is what a confirm waits
    /// for), so the event journal needs no fsync of its own on the way to
    /// a confirm — a power cut takes its tail back to a durable marker and
    /// raft applies the entries after it again, the Raft log being
    /// compacted only below `durable_applied`.
    fn apply_committed<L: SegmentedLog>(
        &mut self,
        core: &mut Core,
        recorder: &mut Recorder<L>,
        applied: Vec<Applied>,
    ) -> Result<(), BrokerError> {
        let own = self.role == Role::Leader;
        let mut last = None;
        for entry in applied {
            let bodies = decode_batch(&entry.data)?;
            match self.take_proposed(entry.index, entry.term) {
                Some(events) => record_own(core, recorder, entry.index, &events, &bodies)?,
                None => {
                    for (n, body) in bodies.iter().enumerate() {
                        let event = decode_event(n as u64, body)?;
                        if !own {
                            core.apply(&event);
                        }
                        record_body(core, recorder, &event, body)?;
                    }
                }
            }
            // A membership change has no events: its marker alone.
            append_marker(recorder, entry.index)?;
            last = Some(entry.index);
            self.retained.push(entry.index, entry.data.len() as u64);
            self.changes.extend(entry.change);
        }
        if !own {
            // A follower's core is in replay mode: it makes no events, but
            // drop any to be sure nothing accumulates.
            while core.poll_event().is_some() {}
        }
        if let Some(index) = last {
            if !recorder.commit_lazily()? {
                return Err(BrokerError::Group("the journal's disk is full".into()));
            }
            self.applied = index;
        }
        Ok(())
    }

    /// The events this member proposed as entry `index` of `term`, if it
    /// did (older ones are gone: they were applied, or never will be).
    fn take_proposed(&mut self, index: u64, term: u64) -> Option<Vec<Event>> {
        while self.proposed.front().is_some_and(|proposed| proposed.index < index) {
            self.proposed.pop_front();
        }
        // Same index and term: the same entry (Raft's log matching).
        let front = self.proposed.front()?;
        if (front.index, front.term) != (index, term) {
            return None;
        }
        debug_assert_eq!(self.role, Role::Leader, "only a serving leader proposes");
        self.proposed.pop_front().map(|proposed| proposed.events)
    }

    /// The held messages whose entry is applied (committed by a majority
    /// and in this member's journal), payloads read back.
    fn release<L: SegmentedLog>(&mut self, recorder: &mut Recorder<L>) -> Result<Released<A>, BrokerError> {
        let mut publish = Vec::new();
        let mut answers = Vec::new();
        let mut confirms = Vec::new();
        while self.held.front().is_some_and(|held| held.index <= self.applied) {
            let held = self.held.pop_front().expect("checked above");
            for mut out in held.outbound {
                out.fill_with(|fill| recorder.read_items(fill.from, &fill.key))?;
                publish.push(out);
            }
            answers.extend(held.answers);
            confirms.extend(held.confirms);
        }
        Ok((publish, answers, confirms))
    }

    /// Follows raft's role: a new leader catches up, then serves; a lost
    /// leadership drops what it held and rebuilds the core.
    fn sync_role<L: SegmentedLog>(
        &mut self,
        core: &mut Core,
        recorder: &mut Recorder<L>,
        now: Millis,
    ) -> Result<(), BrokerError> {
        let leads = self.node.is_leader();
        let view = self.view();
        match self.role {
            Role::Leader | Role::CatchingUp { .. } if !leads => {
                info!(term = view.term, leader = ?view.leader, "no longer the leader");
                self.step_down(core, recorder, now)?;
            }
            Role::Follower if leads => {
                let to = self.node.last_index();
                info!(term = view.term, catch_up_to = to, "elected leader; applying the log before serving");
                self.role = Role::CatchingUp { to };
            }
            _ => {}
        }
        if let Role::CatchingUp { to } = self.role {
            if self.applied >= to {
                self.role = Role::Leader;
                core.finish_recovery(now);
                let status = core.status();
                info!(term = view.term, applied = to, pending = status.pending_orders, "leading: serving intake");
            }
        }
        if core.group_view() != view {
            core.set_group_view(view);
        }
        Ok(())
    }

    /// Back to follower: what the core made since the last commit is
    /// forgotten (it is not in the journal) and nothing held goes out.
    fn step_down<L: SegmentedLog>(
        &mut self,
        core: &mut Core,
        recorder: &mut Recorder<L>,
        now: Millis,
    ) -> Result<(), BrokerError> {
        self.role = Role::Follower;
        let dropped: usize = self.held.drain(..).map(|held| held.outbound.len()).sum();
        // Its core is rebuilt from the journal: what it made and proposed
        // is decoded from the entries, should they commit.
        self.proposed.clear();
        let view = core.group_view();
        let (rebuilt, anchors, applied) =
            replay_applied(recorder.log.journal(), self.core_config.clone(), now, |_, _, _| {})?;
        debug_assert_eq!(applied, self.applied);
        *core = rebuilt;
        core.set_group_view(view);
        recorder.anchors = anchors;
        info!(dropped_messages = dropped, applied, "rebuilt the core from the journal");
        Ok(())
    }

    /// Asks the group to change its members (the serving leader only; see
    /// `orderly_replication::membership`): the index of the change's entry.
    pub fn propose_change(&mut self, request: ChangeRequest) -> Result<u64, ChangeError> {
        if !self.serves() {
            return Err(ChangeError::NotLeader { leader_hint: self.node.leader_id() });
        }
        self.node.propose_change(request)
    }

    /// The serving leader promotes a learner that has caught up.
    pub fn promote_caught_up_learner(&mut self) -> Option<u64> {
        if !self.serves() {
            return None;
        }
        self.node.promote_caught_up_learner()
    }

    /// Who this member is and who it thinks leads, for heartbeats.
    pub fn view(&self) -> GroupView {
        GroupView { member: Some(self.node.id()), leader: self.node.leader_id(), term: self.node.term() }
    }

    /// The group's part of `/status`; `transport_refused`: peer messages
    /// the transport refused on its own.
    pub fn report(&self, transport_refused: u64) -> GroupReport {
        let conf = self.node.conf_state();
        let leader = self.node.leader_id();
        let members = self
            .node
            .progress()
            .into_iter()
            .map(|peer| MemberProgress {
                id: peer.id,
                role: if Some(peer.id) == leader {
                    "leader"
                } else if conf.learners.contains(&peer.id) {
                    "learner"
                } else {
                    "voter"
                }
                .to_owned(),
                matched: peer.matched,
                state: peer.state.to_owned(),
                active: peer.active,
            })
            .collect();
        GroupReport {
            member: self.node.id(),
            leader: self.node.leader_id(),
            term: self.node.term(),
            role: self.role.name().to_owned(),
            applied: self.applied,
            commit: self.node.commit_index(),
            dropped_messages: self.dropped_messages,
            peer_refused: self.peer_refused + transport_refused,
            voters: sorted(conf.voters),
            learners: sorted(conf.learners),
            members,
        }
    }
}

fn sorted(mut ids: Vec<u64>) -> Vec<u64> {
    ids.sort_unstable();
    ids
}

/// Appends an applied-index marker (a batch the journal cannot take whole
/// is committed first, see `Recorder::append_marker`).
fn append_marker<L: SegmentedLog>(recorder: &mut Recorder<L>, index: u64) -> Result<(), BrokerError> {
    if !recorder.append_marker(&applied_marker(index))? {
        return Err(BrokerError::Group("the journal's disk is full".into()));
    }
    Ok(())
}

/// Records a leader's own events of entry `index`, whose bodies the
/// entry holds in the same order.
fn record_own<L: SegmentedLog>(
    core: &mut Core,
    recorder: &mut Recorder<L>,
    index: u64,
    events: &[Event],
    bodies: &[Body<'_>],
) -> Result<(), BrokerError> {
    if events.len() != bodies.len() {
        return Err(BrokerError::Group(format!(
            "entry {index} holds {} events, but this leader proposed {} there",
            bodies.len(),
            events.len()
        )));
    }
    for (event, body) in events.iter().zip(bodies) {
        record_body(core, recorder, event, body)?;
    }
    Ok(())
}

/// Appends `event`'s record, `body` (its encoding in a committed entry).
fn record_body<L: SegmentedLog>(
    core: &mut Core,
    recorder: &mut Recorder<L>,
    event: &Event,
    body: &[u8],
) -> Result<(), BrokerError> {
    // The journal holds what encoding the event gives, as it did when
    // the recorder encoded it again (checked where it costs nothing).
    debug_assert!(encode_event(event) == body, "an entry's body is not its event's encoding: {event:?}");
    if !recorder.record_encoded(core, event, body)? {
        return Err(BrokerError::Group("the journal's disk is full".into()));
    }
    Ok(())
}

/// One event's body in a batch, borrowed from the entry (copied only if
/// it was not sent as `bin`, which no member does): bytes borrowed as an
/// intake item's are.
pub type Body<'a> = orderly_common::protocol::ItemData<'a>;

/// The events of one leader turn as batches of at most
/// `PROPOSAL_BYTES_MAX` bytes (a MessagePack array of event bodies), each
/// with how many events it holds. The events are encoded once, into one
/// buffer, then framed into their batch.
pub fn encode_batches(events: &[Event]) -> Vec<(usize, Vec<u8>)> {
    encode_batches_in(events, &mut Vec::new())
}

/// [`encode_batches`] encoding the events in `bodies` (cleared first).
fn encode_batches_in(events: &[Event], bodies: &mut Vec<u8>) -> Vec<(usize, Vec<u8>)> {
    bodies.clear();
    let mut ends = Vec::with_capacity(events.len());
    for event in events {
        encode_event_into(event, bodies);
        ends.push(bodies.len());
    }
    let mut batches = Vec::new();
    let mut current: Vec<&serde_bytes::Bytes> = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for end in ends {
        let body = &bodies[start..end];
        start = end;
        let size = body.len() + BATCH_OVERHEAD_PER_EVENT;
        if !current.is_empty() && bytes + size > PROPOSAL_BYTES_MAX {
            batches.push((current.len(), encode_batch(&current, bytes)));
            current.clear();
            bytes = 0;
        }
        bytes += size;
        current.push(serde_bytes::Bytes::new(body));
    }
    if !current.is_empty() {
        batches.push((current.len(), encode_batch(&current, bytes)));
    }
    batches
}

/// A MessagePack array of `bin`s (the bytes `rmp_serde` gives a
/// `Vec<ByteBuf>`); `bytes`: about its size.
fn encode_batch(bodies: &[&serde_bytes::Bytes], bytes: usize) -> Vec<u8> {
    let mut batch = Vec::with_capacity(bytes + BATCH_OVERHEAD_PER_EVENT);
    rmp_serde::encode::write(&mut batch, bodies).expect("encoding into memory cannot fail");
    batch
}

/// The event bodies of a committed entry (none for a leader's empty one),
/// borrowed from it.
pub fn decode_batch(data: &[u8]) -> Result<Vec<Body<'_>>, BrokerError> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    rmp_serde::from_slice(data).map_err(|e| BrokerError::Group(format!("a committed entry is not an event batch: {e}")))
}

#[cfg(test)]
mod tests {
    use super::super::recover::{decode_applied_marker, replay_applied};
    use super::*;
    use serde_bytes::ByteBuf;
    use std::borrow::Cow;

    #[test]
    fn a_huge_turn_is_split_into_bounded_batches_that_decode_in_order() {
        let events: Vec<Event> = (0..10u8)
            .map(|n| Event::ItemStored {
                key: orderly_common::OrderKey::new("p", "o").into(),
                seq: n.into(),
                data: ByteBuf::from(vec![n; PROPOSAL_BYTES_MAX / 4]),
            })
            .collect();
        let batches = encode_batches(&events);
        assert!(batches.len() >= 3, "{} batches", batches.len());
        assert!(batches.iter().all(|(_, b)| b.len() <= PROPOSAL_BYTES_MAX));
        assert_eq!(batches.iter().map(|(count, _)| count).sum::<usize>(), events.len());
        let decoded: Vec<Vec<u8>> =
            batches.iter().flat_map(|(_, b)| decode_batch(b).unwrap()).map(|b| b.to_vec()).collect();
        assert_eq!(decoded, events.iter().map(encode_event).collect::<Vec<_>>());
        assert!(decode_batch(&[]).unwrap().is_empty());
    }

    /// The entry bytes are 0.5.2's (`rmp_serde` over the bodies as
    /// `ByteBuf`s): a group of old and new members replicates, and
    /// 0.5.2's decoding reads the batches back (and vice versa).
    #[test]
    fn batches_are_the_bytes_of_0_5_2_both_ways() {
        let events = crate::core::codec::one_event_of_each_kind();
        let bodies: Vec<ByteBuf> = events.iter().map(|e| ByteBuf::from(encode_event(e))).collect();
        let old = rmp_serde::to_vec(&bodies).unwrap();
        let batches = encode_batches(&events);
        assert_eq!(batches, vec![(events.len(), old.clone())]);
        let decoded = decode_batch(&old).unwrap();
        assert!(decoded.iter().map(|b| &**b).eq(bodies.iter().map(|b| b.as_slice())));
        assert!(decoded.iter().all(|b| matches!(b.0, Cow::Borrowed(_))), "bodies are borrowed, not copied");
        let back: Vec<ByteBuf> = rmp_serde::from_slice(&batches[0].1).unwrap();
        assert_eq!(back, bodies);
    }

    /// A committed entry's bodies go to the journal as they are
    /// (`Recorder::record_encoded`): the journal holds the bytes it held
    /// when each event was recorded (encoded again), for every kind.
    #[test]
    fn recording_an_encoded_body_writes_the_journal_recording_the_event_does() {
        use orderly_journal::{Journal, Options};
        let journal_bytes = |encoded: bool| {
            let dir = tempfile::tempdir().unwrap();
            let (journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
            let (mut core, anchors, _) =
                replay_applied(&journal, CoreConfig::with_incarnation(1), 0, |_, _, _| {}).expect("replays");
            let mut recorder = Recorder::new(journal, anchors);
            for event in crate::core::codec::one_event_of_each_kind() {
                let recorded = if encoded {
                    recorder.record_encoded(&mut core, &event, &encode_event(&event))
                } else {
                    recorder.record(&mut core, &event)
                };
                assert!(recorded.unwrap());
            }
            assert!(recorder.commit().unwrap());
            let mut records = Vec::new();
            recorder
                .log
                .replay_located(|at, body| {
                    records.push((at, body.to_vec()));
                    Ok::<_, std::convert::Infallible>(())
                })
                .unwrap();
            records
        };
        let recorded = journal_bytes(false);
        assert_eq!(recorded.len(), crate::core::codec::one_event_of_each_kind().len());
        assert_eq!(journal_bytes(true), recorded);
    }

    /// An entry's events apply at its marker; leftovers of an apply a crash
    /// interrupted (no marker after them) are fenced off at start, so the
    /// entry raft hands out again applies once.
    #[test]
    fn leftovers_after_the_last_marker_are_fenced_off_not_applied_twice() {
        use super::super::recover::{fence, replay_member};
        use orderly_journal::{Journal, Options};
        let dir = tempfile::tempdir().unwrap();
        let event = |id: &str| encode_event(&crate::core::Event::Acked { key: orderly_common::OrderKey::new("p", id) });
        let (mut journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
        for body in [event("a"), applied_marker(1), event("b")] {
            journal.append(&body).unwrap();
        }
        journal.commit().unwrap();
        drop(journal);
        let count = |journal: &Journal| {
            let mut seen = Vec::new();
            let replayed = replay_member(journal, CoreConfig::with_incarnation(1), 0, |_, _, e| seen.push(e.clone()))
                .expect("replays");
            (seen.len(), replayed.applied, replayed.leftovers)
        };
        let (mut journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
        assert_eq!(count(&journal), (1, 1, 1), "b waits for a marker that never came");
        fence(&mut journal).unwrap();
        // Raft hands entry 2 out again: b, then its marker.
        for body in [event("b"), applied_marker(2)] {
            journal.append(&body).unwrap();
        }
        journal.commit().unwrap();
        drop(journal);
        let (journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
        assert_eq!(count(&journal), (2, 2, 0), "a and b, each once");
    }

    #[test]
    fn markers_are_never_events() {
        let marker = applied_marker(42);
        assert_eq!(decode_applied_marker(&marker), Some(42));
        assert!(decode_event(1, &marker).is_err());
        let event = crate::core::Event::Acked { key: orderly_common::OrderKey::new("p", "o") };
        assert_eq!(decode_applied_marker(&encode_event(&event)), None);
        let fence = super::super::recover::fence_marker();
        assert!(super::super::recover::is_marker(&fence) && decode_applied_marker(&fence).is_none());
        assert!(decode_event(1, &fence).is_err());
    }
}
