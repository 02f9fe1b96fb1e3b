//! The producer's sans-IO state machine, in the shape of the broker's and
//! the worker's cores.
//!
//! [`Core`] holds the hello/welcome handshake and the [`Outbox`] of orders
//! awaiting the broker's answer, and encodes orders into intake messages
//! (one frame per item, packed `items` frames, or several whole orders in
//! one `orders` message when the broker's Welcome says it takes them). It touches no socket,
//! file or clock: callers feed it inputs with the current time
//! ([`Core::handle_fanout`], [`Core::handle_timeout`], [`Core::submit`] and
//! the stream calls) and drain what it wants done:
//! - [`Core::poll_transmit`]: the next intake message to send. The caller
//!   reports each with [`Core::handle_sent`] or, when the socket refused
//!   it, [`Core::handle_send_refused`] (the order is sent again, whole,
//!   shortly; nothing else goes out before the retry delay or
//!   [`Core::handle_writable`]).
//! - [`Core::poll_transmitted`]: orders whose whole transmission just went
//!   out (for counters and latency).
//! - [`Core::poll_answer`]: orders the broker confirmed or rejected; they
//!   have left the outbox.
//! - [`Core::poll_timeout`]: when to call [`Core::handle_timeout`].
//! - [`Core::poll_leader`]: in a group ([`Core::in_group`]), the member
//!   whose intake to send to from now on.
//!
//! In a group of brokers only the leader takes intake. The core follows the
//! members' heartbeats ([`Leadership`]) and sends nothing before a leader
//! is announced. On a new leader it restarts the handshake with a new
//! nonce (a Welcome then proves our subscription to *that* member's
//! fanout, and a late Welcome of the old leader is not taken for it) and
//! makes every unconfirmed order due at once: the old leader may have lost
//! what it had not committed, and waiting for the confirm timeout would
//! make failover as slow as that timer. Confirms are taken from any
//! member: a member confirms only what a majority stored.
//!
//! Durability stays with the caller and needs no output of its own: a
//! `Sent` record is committed *before* an order is handed to the core
//! (nothing of it can go out earlier), and an `Answered` record is written
//! after the answer is taken from [`Core::poll_answer`].
//!
//! Time is [`Millis`] on the caller's monotonic clock. Every delay here is
//! milliseconds or more (resends after seconds, the retry of a refused send
//! after 50 ms); only confirm *latency*, a measurement rather than a
//! decision, needs finer resolution, so the io layer measures it itself.

mod outbox;

use std::collections::VecDeque;

use orderly_common::limits::{ORDERS_PER_MESSAGE_MAX, PACKED_FRAME_BYTES_MAX};
use orderly_common::members::{Leadership, Members};
use orderly_common::protocol::{
    encode_items, encode_orders, pack_runs, Backpressure, Begin, FanoutMsg, Finish, IntakeMsg, Item, ProducerHello,
    RejectReason,
};
pub use orderly_common::time::Millis;

use crate::limits::BACKPRESSURE_FRESH_INTERVALS;
use crate::HashSet;
use serde_bytes::ByteBuf;

pub use outbox::{items_bytes, millis, Answered, Outbox, OutboxConfig, CLOCK_TICK_MS};

/// Settings of the core, already validated by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreConfig {
    /// This producer's id (a valid peer id).
    pub producer: String,
    /// Random per connection, so a Welcome meant for an earlier connection
    /// is not taken for ours.
    pub nonce: u64,
    /// Whole orders go as packed `items` frames instead of one message per
    /// item.
    pub pack_items: bool,
    /// With `pack_items`, whole orders due together go in `orders`
    /// messages of at most this many bytes (0: never), if the broker takes
    /// them.
    pub batch_bytes_max: usize,
    /// While orders keep coming, a batch that is not full waits this long
    /// for more (0: never waits).
    pub linger_ms: Millis,
    /// The Hello is repeated this often until the Welcome arrives.
    pub hello_interval_ms: Millis,
    /// Resends and bounds of the outbox.
    pub outbox: OutboxConfig,
}

/// An order whose whole transmission (Begin, items, Finish) went out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmitted {
    /// The order id.
    pub id: String,
    /// 1 for the first transmission; more for resends.
    pub attempt: u32,
}

/// What the message offered by [`Core::poll_transmit`] belongs to.
#[derive(Debug)]
enum Source {
    Hello,
    /// Part of a whole order; the last frame completes a transmission.
    Order(String),
    /// Several whole orders in one `orders` message.
    Batch(Vec<String>),
    /// A message of a stream sent as it comes; `finish` ends the stream.
    Live {
        id: String,
        finish: bool,
    },
}

/// The producer's state machine. See the module docs.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    outbox: Outbox,
    welcomed: bool,
    hello_due_ms: Millis,
    /// The latest time any input carried.
    now_ms: Millis,
    /// The socket refused a message: nothing goes out before this.
    blocked_until_ms: Option<Millis>,
    /// Frames of the message being sent, the first offered now.
    sending: VecDeque<Vec<u8>>,
    sending_source: Option<Source>,
    /// Stream messages to send as they come, with their stream.
    live: VecDeque<(Source, Vec<u8>)>,
    /// Streams whose every message so far went out.
    live_streams: HashSet<String>,
    transmitted: VecDeque<Transmitted>,
    answers: VecDeque<Answered>,
    /// The broker's latest `backpressure` announcement and when it came.
    backpressure: Option<(Backpressure, Millis)>,
    /// In a group: who leads. `None` for a single broker.
    leadership: Option<Leadership>,
    /// A new leader the io layer has not been told of yet.
    leader_changed: Option<u64>,
    /// The nonce of the current handshake: the config's, plus one per
    /// leader change.
    nonce: u64,
    /// Orders per `orders` message the broker of this handshake takes (its
    /// Welcome's `orders_max`); 0: it takes none (older than 0.4).
    orders_max: usize,
    /// When the last transmission of orders went out (for the linger).
    orders_sent_ms: Option<Millis>,
}

impl Core {
    /// A core with an empty outbox, not yet welcomed: its first message
    /// is the Hello.
    pub fn new(config: CoreConfig) -> Self {
        assert!(config.hello_interval_ms > 0);
        let nonce = config.nonce;
        Core {
            outbox: Outbox::new(config.outbox),
            config,
            welcomed: false,
            hello_due_ms: 0,
            now_ms: 0,
            blocked_until_ms: None,
            sending: VecDeque::new(),
            sending_source: None,
            live: VecDeque::new(),
            live_streams: HashSet::default(),
            transmitted: VecDeque::new(),
            answers: VecDeque::new(),
            backpressure: None,
            leadership: None,
            leader_changed: None,
            nonce,
            orders_max: 0,
            orders_sent_ms: None,
        }
    }

    /// A core for a group of brokers: it waits for a leader to be
    /// announced and follows it (see the module docs).
    pub fn in_group(config: CoreConfig, members: &Members) -> Self {
        Core { leadership: Some(Leadership::new(members)), ..Core::new(config) }
    }

    /// In a group, the leader we send to, once one is announced.
    pub fn leader(&self) -> Option<u64> {
        self.leadership.as_ref().and_then(Leadership::leader)
    }

    /// False only in a group with no leader announced yet: nothing goes out.
    fn has_broker(&self) -> bool {
        self.leadership.as_ref().is_none_or(|leadership| leadership.leader().is_some())
    }

    /// The settings it was made with.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The orders held, for reading (bounds, ids, items).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// True once the broker's Welcome reached us: confirms will too. No
    /// order goes out before.
    pub fn welcomed(&self) -> bool {
        self.welcomed
    }

    fn advance(&mut self, now_ms: Millis) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    fn blocked(&self) -> bool {
        self.blocked_until_ms.is_some_and(|until| self.now_ms < until)
    }

    // ------------------------------------------------------------ inputs

    /// Advances time: the Hello and resends fall due.
    pub fn handle_timeout(&mut self, now_ms: Millis) {
        self.advance(now_ms);
    }

    /// Handles one decoded message from the fanout socket: our Welcome, or
    /// answers (queued for [`Core::poll_answer`]).
    pub fn handle_fanout(&mut self, msg: FanoutMsg, now_ms: Millis) {
        self.advance(now_ms);
        match msg {
            FanoutMsg::Welcome(welcome) => {
                if welcome.nonce == self.nonce {
                    self.welcomed = true;
                    self.orders_max = (welcome.orders_max as usize).min(ORDERS_PER_MESSAGE_MAX);
                }
            }
            FanoutMsg::Confirm(confirm) => self.answer(&confirm.order, Ok(())),
            FanoutMsg::Confirms(confirms) => {
                for order in &confirms.orders {
                    self.answer(order, Ok(()));
                }
            }
            FanoutMsg::Reject(reject) => self.answer(&reject.order, Err(reject.reason)),
            FanoutMsg::Backpressure(message) => self.backpressure = Some((message, self.now_ms)),
            FanoutMsg::Heartbeat(heartbeat) => {
                let changed = self.leadership.as_mut().and_then(|leadership| leadership.observe(&heartbeat));
                if let Some((leader, _term)) = changed {
                    self.follow(leader);
                }
            }
            // Dispatches are for workers.
            FanoutMsg::Dispatch(_) | FanoutMsg::Dispatches(_) => {}
        }
    }

    /// A new leader: handshake again, and everything unconfirmed is due at
    /// once (see the module docs).
    fn follow(&mut self, leader: u64) {
        self.leader_changed = Some(leader);
        self.welcomed = false;
        // The new leader's Welcome says whether it takes batches.
        self.orders_max = 0;
        self.nonce = self.nonce.wrapping_add(1);
        self.hello_due_ms = self.now_ms;
        // The io layer connects a new socket: an old refusal says nothing.
        self.blocked_until_ms = None;
        // The rest of a message half sent would reach the new leader
        // without its start; the whole order goes again instead.
        self.sending.clear();
        self.sending_source = None;
        // Streams stop going out live: their earlier messages went to the
        // old leader, so each goes whole at its Finish.
        self.live.clear();
        self.live_streams.clear();
        self.outbox.all_due(self.now_ms);
    }

    fn answer(&mut self, id: &str, verdict: Result<(), RejectReason>) {
        if let Some(answered) = self.outbox.answer(id, verdict) {
            // A rejected stream sends nothing more.
            self.stop_live(id);
            self.answers.push_back(answered);
        }
    }

    /// Adds a complete order, due at once. The caller checked that `id` is
    /// not held and, for new orders, that there is room; orders recovered
    /// from disk go in whatever the bounds.
    pub fn submit(&mut self, id: String, items: Vec<Vec<u8>>, now_ms: Millis) {
        self.advance(now_ms);
        self.outbox.insert(id, items, self.now_ms);
    }

    /// Starts a streamed order: its Begin goes out at once unless the
    /// socket is refusing or we are not welcomed yet (then the whole order
    /// goes at its Finish).
    pub fn begin_stream(&mut self, id: String, now_ms: Millis) {
        self.advance(now_ms);
        self.outbox.begin_stream(id.clone());
        if self.welcomed && !self.blocked() && self.has_broker() {
            let begin = IntakeMsg::Begin(Begin { producer: self.config.producer.clone(), order: id.clone() });
            self.live.push_back((Source::Live { id: id.clone(), finish: false }, begin.encode()));
            self.live_streams.insert(id);
        }
    }

    /// Appends an item to a stream (sent at once while the stream is live)
    /// and returns its seq; `None` if the order is no longer held (the
    /// broker rejected it meanwhile).
    pub fn push_item(&mut self, id: &str, data: Vec<u8>, now_ms: Millis) -> Option<u32> {
        self.advance(now_ms);
        if self.blocked() {
            // As with a refused message: the rest goes whole at the Finish.
            self.stop_live(id);
        }
        let live = self.live_streams.contains(id);
        let copy = live.then(|| ByteBuf::from(data.clone()));
        let seq = self.outbox.push_item(id, data)?;
        if let Some(data) = copy {
            let item =
                IntakeMsg::Item(Item { producer: self.config.producer.clone(), order: id.to_owned(), seq, data });
            self.live.push_back((Source::Live { id: id.to_owned(), finish: false }, item.encode()));
        }
        Some(seq)
    }

    /// Ends a stream: the order is complete, and from now on resent like
    /// any other until answered. Its Finish goes out at once if every
    /// message of the stream did; otherwise the whole order is due now.
    /// False if the order is no longer held.
    pub fn finish_stream(&mut self, id: &str, now_ms: Millis) -> bool {
        self.advance(now_ms);
        let Some(count) = self.outbox.items(id).map(<[Vec<u8>]>::len) else { return false };
        let count = u32::try_from(count).expect("items per order are bounded far below u32::MAX");
        self.outbox.finish_stream(id, false, self.now_ms);
        if self.blocked() {
            self.stop_live(id);
        }
        if self.live_streams.contains(id) {
            let finish =
                IntakeMsg::Finish(Finish { producer: self.config.producer.clone(), order: id.to_owned(), count });
            self.live.push_back((Source::Live { id: id.to_owned(), finish: true }, finish.encode()));
        }
        true
    }

    /// Drops a stream without an answer (abandoned before its Finish).
    /// True if it was held.
    pub fn abandon_stream(&mut self, id: &str) -> bool {
        self.stop_live(id);
        self.outbox.abandon(id)
    }

    /// A stream stops going out as it comes; its queued messages are
    /// dropped (the whole order goes at its Finish).
    fn stop_live(&mut self, id: &str) {
        if self.live_streams.remove(id) {
            self.live.retain(|(source, _)| !matches!(source, Source::Live { id: live, .. } if live == id));
        }
    }

    // ------------------------------------------------------------ transmit

    /// The next intake message to send (encoded), if any is due: live
    /// stream messages first, then the Hello until welcomed, then due
    /// orders, earliest deadline first. The same message is offered until
    /// the caller reports it with [`Core::handle_sent`] or
    /// [`Core::handle_send_refused`].
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        if self.sending.is_empty() && !self.blocked() {
            self.prepare_next();
        }
        self.sending.front().map(Vec::as_slice)
    }

    fn prepare_next(&mut self) {
        if !self.has_broker() {
            return;
        }
        if let Some((source, body)) = self.live.pop_front() {
            self.sending.push_back(body);
            self.sending_source = Some(source);
        } else if !self.welcomed {
            if self.now_ms >= self.hello_due_ms {
                let hello =
                    IntakeMsg::Hello(ProducerHello { producer: self.config.producer.clone(), nonce: self.nonce });
                self.sending.push_back(hello.encode());
                self.sending_source = Some(Source::Hello);
            }
        } else if let Some(id) = self.outbox.next_due(self.now_ms).map(str::to_owned) {
            if self.lingering() {
                return;
            }
            if let Some(batch) = self.due_batch() {
                let orders: Vec<(&str, &[Vec<u8>])> = batch
                    .iter()
                    .map(|id| (id.as_str(), self.outbox.items(id).expect("a due order is in the outbox")))
                    .collect();
                self.sending.push_back(encode_orders(&self.config.producer, &orders));
                self.sending_source = Some(Source::Batch(batch));
                return;
            }
            let items = self.outbox.items(&id).expect("a due order is in the outbox");
            self.sending = encode_order(&self.config.producer, &id, items, self.config.pack_items);
            self.sending_source = Some(Source::Order(id));
        }
    }

    /// Whether batches may go to this broker.
    fn batching(&self) -> bool {
        self.config.pack_items && self.config.batch_bytes_max > 0 && self.orders_max >= 2
    }

    /// The due orders that go together in one `orders` message: from the
    /// earliest due, as many as fit the byte and count bounds. `None` when
    /// fewer than two do (a lone order goes as `items`, as to any broker),
    /// or the earliest is too large for a batch.
    fn due_batch(&self) -> Option<Vec<String>> {
        if !self.batching() {
            return None;
        }
        let budget = self.config.batch_bytes_max;
        let mut batch = Vec::new();
        let mut used = 0;
        for id in self.outbox.due(self.now_ms).take(self.orders_max) {
            let cost = self.batch_cost(id);
            if used + cost > budget {
                break;
            }
            used += cost;
            batch.push(id.to_owned());
        }
        (batch.len() >= 2).then_some(batch)
    }

    /// Bytes an order takes in a batch: its items, each item's framing, its
    /// id and the entry's own framing.
    fn batch_cost(&self, id: &str) -> usize {
        let items = self.outbox.items(id).unwrap_or_default();
        items.iter().map(|item| item.len() + ITEM_FRAMING_BYTES).sum::<usize>() + id.len() + ORDER_FRAMING_BYTES
    }

    /// When a batch that is not full waits for more orders: while orders
    /// keep coming (the last went out within a linger) and the earliest due
    /// has not waited a linger yet.
    fn linger_until(&self) -> Option<Millis> {
        let linger = self.config.linger_ms;
        if linger == 0 || !self.batching() || !self.welcomed || !self.sending.is_empty() {
            return None;
        }
        let sent = self.orders_sent_ms?;
        let first_due = self.outbox.next_deadline()?;
        if self.now_ms >= sent.saturating_add(linger) && first_due > sent {
            return None; // a quiet spell: the first order goes at once
        }
        let until = first_due.max(sent).saturating_add(linger);
        if self.now_ms >= until || self.batch_is_full() {
            return None;
        }
        Some(until)
    }

    fn lingering(&self) -> bool {
        self.linger_until().is_some()
    }

    /// Whether the orders due fill a batch (by count or by bytes).
    fn batch_is_full(&self) -> bool {
        let budget = self.config.batch_bytes_max;
        let mut used = 0;
        for (n, id) in self.outbox.due(self.now_ms).enumerate() {
            used += self.batch_cost(id);
            if n + 1 >= self.orders_max || used > budget {
                return true;
            }
        }
        false
    }

    /// The message offered by [`Core::poll_transmit`] went out.
    pub fn handle_sent(&mut self) {
        assert!(self.sending.pop_front().is_some(), "handle_sent without a message offered");
        if !self.sending.is_empty() {
            return;
        }
        let now = self.now_ms;
        match self.sending_source.take().expect("a message offered has a source") {
            Source::Hello => self.hello_due_ms = now.saturating_add(self.config.hello_interval_ms),
            Source::Order(id) => {
                self.orders_sent_ms = Some(now);
                self.transmission_done(id, now);
            }
            Source::Batch(ids) => {
                self.orders_sent_ms = Some(now);
                for id in ids {
                    self.transmission_done(id, now);
                }
            }
            Source::Live { id, finish } => {
                if finish && self.live_streams.remove(&id) {
                    self.transmission_done(id, now);
                }
            }
        }
    }

    fn transmission_done(&mut self, id: String, now: Millis) {
        self.outbox.transmitted(&id, now);
        if let Some(attempt) = self.outbox.attempts(&id) {
            self.transmitted.push_back(Transmitted { id, attempt });
        }
    }

    /// The socket would not take the message offered (high-water mark, or
    /// no broker connected): nothing goes out for a while. An order is
    /// sent again, whole, after the retry delay (not an attempt: a part
    /// that went out is harmless, the broker ignores repeats); a stream
    /// stops going out live and is sent whole at its Finish.
    pub fn handle_send_refused(&mut self) {
        let now = self.now_ms;
        self.sending.clear();
        match self.sending_source.take() {
            None => return,
            // Lost hellos are repeated anyway; they block nothing.
            Some(Source::Hello) => {
                self.hello_due_ms = now.saturating_add(self.config.hello_interval_ms);
                return;
            }
            Some(Source::Order(id)) => self.outbox.transmit_blocked(&id, now),
            Some(Source::Batch(ids)) => ids.iter().for_each(|id| self.outbox.transmit_blocked(id, now)),
            Some(Source::Live { id, .. }) => self.stop_live(&id),
        }
        self.blocked_until_ms = Some(now.saturating_add(self.config.outbox.transmit_retry_ms));
    }

    /// The socket reports it takes messages again: the retry delay ends.
    pub fn handle_writable(&mut self) {
        self.blocked_until_ms = None;
    }

    /// True while a refused send holds everything back.
    pub fn is_blocked(&self) -> bool {
        self.blocked()
    }

    // ------------------------------------------------------------ outputs

    /// In a group: the member that leads now, once per change. The caller
    /// sends intake to it alone from now on (a PUSH connected to several
    /// members would spread orders over them).
    pub fn poll_leader(&mut self) -> Option<u64> {
        self.leader_changed.take()
    }

    /// Next order whose whole transmission went out.
    pub fn poll_transmitted(&mut self) -> Option<Transmitted> {
        self.transmitted.pop_front()
    }

    /// Next order the broker answered (it has left the outbox).
    pub fn poll_answer(&mut self) -> Option<Answered> {
        self.answers.pop_front()
    }

    /// When something next falls due ([`Millis::MAX`]: nothing is
    /// scheduled). It may be in the past: [`Core::poll_transmit`] has work.
    pub fn poll_timeout(&self) -> Millis {
        if !self.sending.is_empty() || !self.live.is_empty() {
            return self.now_ms.max(self.blocked_until_ms.unwrap_or(0));
        }
        if !self.has_broker() {
            // Nothing to do until a heartbeat announces a leader.
            return Millis::MAX;
        }
        let due = if self.welcomed {
            self.linger_until().or_else(|| self.outbox.next_deadline())
        } else {
            Some(self.hello_due_ms)
        };
        due.map_or(Millis::MAX, |at| at.max(self.blocked_until_ms.unwrap_or(0)))
    }

    /// Why the broker is not reading intake, if it said so lately (within
    /// [`BACKPRESSURE_FRESH_INTERVALS`] of its announcement interval): the
    /// reason to report when the handshake or orders go unanswered.
    pub fn backpressure(&self) -> Option<&Backpressure> {
        let (message, at_ms) = self.backpressure.as_ref()?;
        let fresh_ms = message.interval_ms.saturating_mul(BACKPRESSURE_FRESH_INTERVALS);
        (self.now_ms <= at_ms.saturating_add(fresh_ms)).then_some(message)
    }

    /// Answers that matched no order in the outbox: repeated confirms of a
    /// resent order, or answers meant for an earlier run.
    pub fn unexpected_answers(&self) -> u64 {
        self.outbox.unexpected_answers()
    }
}

/// MessagePack framing of one item in an `orders` message, at most (a bin
/// header).
const ITEM_FRAMING_BYTES: usize = 5;
/// MessagePack framing of one order's entry in an `orders` message, at most
/// (its map, two keys, the id's and the array's headers).
const ORDER_FRAMING_BYTES: usize = 24;

/// The messages of one whole order: Begin, items from seq 0, Finish — or,
/// with `pack`, `items` frames of consecutive items, the first beginning
/// the order and the last finishing it.
pub fn encode_order(producer: &str, id: &str, items: &[Vec<u8>], pack: bool) -> VecDeque<Vec<u8>> {
    let count = u32::try_from(items.len()).expect("items per order are bounded far below u32::MAX");
    let mut frames = VecDeque::new();
    if pack {
        let ends = pack_runs(items, PACKED_FRAME_BYTES_MAX);
        let mut start = 0;
        for (n, &end) in ends.iter().enumerate() {
            let finish = (n + 1 == ends.len()).then_some(count);
            frames.push_back(encode_items(producer, id, n == 0, start as u32, &items[start..end], finish));
            start = end;
        }
        return frames;
    }
    frames.push_back(IntakeMsg::Begin(Begin { producer: producer.to_owned(), order: id.to_owned() }).encode());
    for (seq, data) in items.iter().enumerate() {
        let seq = u32::try_from(seq).expect("items per order are bounded far below u32::MAX");
        let (producer, order, data) = (producer.to_owned(), id.to_owned(), ByteBuf::from(data.clone()));
        frames.push_back(IntakeMsg::Item(Item { producer, order, seq, data }).encode());
    }
    frames.push_back(IntakeMsg::Finish(Finish { producer: producer.to_owned(), order: id.to_owned(), count }).encode());
    frames
}

#[cfg(test)]
mod tests;
