//! The producer's connection to a broker: the only module with sockets and
//! a clock. It feeds the sans-IO [`Core`] and sends what it says is due.
//!
//! Sockets: PUSH to intake (`ZMQ_IMMEDIATE`, so nothing queues for a broker
//! that is not connected) and SUB to fanout on `p/<id>/` and `b/` (for the
//! broker's `backpressure` announcements). Every send is
//! non-blocking: an order the socket will not take stays in the outbox and
//! is tried again shortly, so backpressure shows up as a full outbox
//! ([`ProducerError::Backpressure`] after the send timeout), never as a
//! call that blocks for ever.
//!
//! With a group of brokers ([`ProducerConfig::members`]) the SUB connects
//! to every member's fanout (answers may come from any of them; heartbeats
//! say who leads) and the PUSH to the leader's intake alone: a PUSH
//! connected to several endpoints would spread orders round-robin over
//! them. When the core reports a new leader, a new PUSH connects to its
//! intake and the old one is closed, dropping what it still held (the
//! core sends all of it again): a PUSH merely disconnected may still hand
//! a message to the old connection while it is torn down.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use orderly_common::ids::{producer_topic, validate_order_id, BROADCAST_TOPIC};
use orderly_common::limits::{
    FANOUT_FRAME_BYTES_MAX, ITEM_BYTES_MAX, ORDER_BYTES_MAX, ORDER_ITEMS_MAX, SOCKET_HWM_DEFAULT, SOCKET_LINGER_MS,
};
use orderly_common::protocol::{split_frames, Backpressure, FanoutMsg};

use crate::config::ProducerConfig;
use crate::core::{items_bytes, millis, Answered, Core, CoreConfig, Millis};
use crate::disk::DiskOutbox;
use crate::error::{zmq_error, ProducerError, RejectError};
use crate::limits::{
    HELLO_INTERVAL, OUTBOX_SEGMENT_BYTES_TARGET, POLL_SLICE, RECEIVE_BATCH_LEN_MAX, SEND_BATCH_ORDERS_MAX,
};
use crate::orders::Order;
use crate::receipt::{Answer, FlushReport, Outcome, Receipt, ReceiptState};
use crate::{HashMap, HashSet};

/// ZeroMQ reconnect interval: first retry soon after a broker restart...
const RECONNECT_INTERVAL_MS: i32 = 100;
/// ...backing off to this, so a long outage costs little.
const RECONNECT_INTERVAL_MAX_MS: i32 = 5000;
/// A stream polls for answers (and resends what is due) every this many
/// items, so a long stream does not starve the rest of the outbox.
const STREAM_POLL_EVERY_ITEMS: u32 = 64;

/// Counters of one producer since `connect`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Orders recovered from the on-disk outbox at `connect`.
    pub recovered: u64,
    /// Orders accepted by `send`, `send_batch` and `OrderStream::finish`.
    pub orders_sent: u64,
    /// Complete transmissions (Begin, items, Finish) of orders.
    pub transmissions: u64,
    /// Transmissions after an order's first: resends.
    pub resends: u64,
    /// Orders confirmed.
    pub confirmed: u64,
    /// Orders rejected.
    pub rejected: u64,
    /// Answers for orders not awaiting one (repeats after a resend).
    pub unexpected_answers: u64,
    /// Fanout messages that did not decode (dropped).
    pub decode_errors: u64,
    /// Uncollected answers dropped at `answers_kept_max`.
    pub answers_dropped: u64,
}

/// A connected producer: sends orders, keeps each in its outbox until the
/// broker answers, resends after the confirm timeout, and hands out the
/// answers.
///
/// Single-threaded: the sockets live in the `Producer`, and nothing happens
/// between calls. Every call that waits ([`Producer::poll`],
/// [`Producer::flush`], [`Receipt::wait`], a send into a full outbox) also
/// receives answers and resends what is due, so a caller that sends
/// continuously needs no extra polling.
///
/// ```no_run
/// use std::time::Duration;
/// use orderly_producer::{Order, Producer, ProducerConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = ProducerConfig::new("shop-1", "tcp://127.0.0.1:5570".parse()?, "tcp://127.0.0.1:5571".parse()?);
/// let mut producer = Producer::connect(config)?;
/// let receipt = producer.send(Order::new("order-1", vec![br#"{"sku": "A1"}"#.to_vec()]))?;
/// let outcome = receipt.wait(&mut producer, Duration::from_secs(10))?;
/// println!("{}: {outcome:?}", receipt.order_id());
/// producer.close(Duration::from_secs(10))?;
/// # Ok(())
/// # }
/// ```
pub struct Producer {
    // Field order matters: sockets drop (and linger) before the context.
    push: zmq::Socket,
    sub: zmq::Socket,
    context: zmq::Context,
    config: ProducerConfig,
    topic: Vec<u8>,
    /// The intake endpoint the PUSH is connected to (in a group: the
    /// leader's, `None` before one is announced).
    intake: Option<String>,
    core: Core,
    disk: Option<DiskOutbox>,
    /// Answers not yet collected, oldest first.
    answers: VecDeque<Answer>,
    /// When each order held first went out whole: confirm latency is
    /// measured here, finer than the core's milliseconds.
    first_sent: HashMap<String, Instant>,
    started: Instant,
    stats: Stats,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("producer", &self.config.producer)
            .field("pending", &self.core.outbox().len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// Opens the on-disk outbox (if configured: replaying it, and failing
    /// at once with [`ProducerError::OutboxLocked`] if another producer
    /// holds it), connects, and waits up to `handshake_timeout` until the
    /// broker has proved that our subscription for answers works
    /// ([`ProducerError::NoBroker`] otherwise). Orders recovered from the
    /// outbox are then resent at once ([`Producer::recovered`] says how many).
    pub fn connect(config: ProducerConfig) -> Result<Producer, ProducerError> {
        config.validate()?;
        // The disk first: a locked or damaged outbox fails before any wait.
        let (disk, recovered) = match &config.outbox_dir {
            Some(dir) => {
                let (disk, live) =
                    DiskOutbox::open(dir, OUTBOX_SEGMENT_BYTES_TARGET, config.outbox_disk_budget_bytes())?;
                (Some(disk), live)
            }
            None => (None, Vec::new()),
        };
        let context = zmq::Context::new();
        let (push, sub) = open_sockets(&context, &config)?;
        let core_config = CoreConfig {
            producer: config.producer.clone(),
            nonce: rand::random(),
            pack_items: config.pack_items,
            batch_bytes_max: config.batch_bytes_max,
            linger_ms: millis(config.linger),
            hello_interval_ms: millis(HELLO_INTERVAL),
            outbox: config.outbox_config(),
        };
        let (core, intake) = match &config.members {
            Some(members) => (Core::in_group(core_config, members), None),
            None => (Core::new(core_config), Some(config.intake.to_string())),
        };
        let mut producer = Producer {
            core,
            intake,
            topic: producer_topic(&config.producer),
            push,
            sub,
            context,
            config,
            disk,
            answers: VecDeque::new(),
            first_sent: HashMap::default(),
            started: Instant::now(),
            stats: Stats::default(),
        };
        // Recovered orders were accepted before: they go in whatever the
        // bounds, due at once (oldest first), and only delay new sends.
        for order in recovered {
            producer.core.submit(order.id, order.items, 0);
            producer.stats.recovered += 1;
        }
        if producer.stats.recovered > 0 {
            tracing::info!(orders = producer.stats.recovered, "outbox: resending orders recovered from disk");
        }
        producer.handshake()?;
        producer.transmit()?;
        Ok(producer)
    }

    fn handshake(&mut self) -> Result<(), ProducerError> {
        let started = Instant::now();
        while !self.core.welcomed() {
            if started.elapsed() >= self.config.handshake_timeout {
                // Only hellos and our subscription are queued: nothing worth
                // lingering for when the sockets close.
                for socket in [&self.push, &self.sub] {
                    socket.set_linger(0).map_err(zmq_error("setting LINGER"))?;
                }
                let no_broker = ProducerError::NoBroker {
                    intake: self.intake.clone().unwrap_or_else(|| "none: no member announced a leader".into()),
                    fanout: match &self.config.members {
                        Some(members) => members.iter().map(|m| m.fanout.as_str()).collect::<Vec<_>>().join(", "),
                        None => self.config.fanout.to_string(),
                    },
                    waited: self.config.handshake_timeout,
                };
                return Err(self.explained(no_broker, "for its welcome"));
            }
            // The core repeats the Hello: one sent before our subscription
            // reached the broker gets a welcome we never see.
            self.transmit()?;
            let wait = self.until_next_transmit().unwrap_or(HELLO_INTERVAL).min(HELLO_INTERVAL);
            self.receive(wait)?;
        }
        Ok(())
    }

    /// Sends one whole order: Begin, its items numbered from 0, Finish.
    ///
    /// The order enters the outbox (and, with an on-disk outbox, is
    /// committed to disk *before* its first message goes out) and stays
    /// there until the broker answers, resent after the confirm timeout. If
    /// the outbox is full, waits up to the send timeout for answers to make
    /// room, then fails with [`ProducerError::Backpressure`]. An invalid or
    /// duplicate order, or backpressure, sends nothing.
    pub fn send(&mut self, order: Order) -> Result<Receipt, ProducerError> {
        let mut receipts = self.send_batch(vec![order])?;
        Ok(receipts.pop().expect("one receipt per order sent"))
    }

    /// Sends several whole orders at once: like [`Producer::send`] for each,
    /// but all or nothing, with one disk commit (one fsync) for the batch.
    /// At most [`SEND_BATCH_ORDERS_MAX`] orders, and no more than the outbox
    /// bounds hold ([`ProducerError::InvalidOrder`] otherwise).
    pub fn send_batch(&mut self, orders: Vec<Order>) -> Result<Vec<Receipt>, ProducerError> {
        let bytes = self.check_batch(&orders)?;
        self.wait_for_room(orders.len(), bytes)?;
        if let Some(disk) = &mut self.disk {
            disk.record_sent(orders.iter().map(|order| (order.id.as_str(), order.items.as_slice())))?;
        }
        let now = self.now();
        let mut receipts = Vec::with_capacity(orders.len());
        for order in orders {
            receipts.push(Receipt::new(order.id.clone()));
            self.core.submit(order.id, order.items, now);
        }
        self.stats.orders_sent += receipts.len() as u64;
        self.transmit()?;
        // Take answers that arrived meanwhile, so the fanout queue never
        // fills while the caller only sends.
        self.receive(Duration::ZERO)?;
        Ok(receipts)
    }

    /// Checks a batch before anything is sent; returns its item bytes.
    fn check_batch(&self, orders: &[Order]) -> Result<u64, ProducerError> {
        let Some(first) = orders.first() else { return Ok(0) };
        let orders_max = SEND_BATCH_ORDERS_MAX.min(self.config.outbox_orders_max);
        if orders.len() > orders_max {
            let reason = format!(
                "a batch of {} orders is above the limit of {orders_max} (SEND_BATCH_ORDERS_MAX and outbox_orders_max)",
                orders.len()
            );
            return Err(ProducerError::InvalidOrder { id: first.id.clone(), reason });
        }
        let mut ids = HashSet::with_capacity_and_hasher(orders.len(), Default::default());
        let mut bytes = 0;
        for order in orders {
            bytes += self.check_order(order)?;
            if !ids.insert(order.id.as_str()) {
                return Err(ProducerError::DuplicateOrder { id: order.id.clone() });
            }
        }
        if !self.core.outbox().could_fit(orders.len(), bytes) {
            let max = self.config.outbox_bytes_max;
            let reason = format!("the batch's {bytes} item bytes are more than the outbox holds ({max})");
            return Err(ProducerError::InvalidOrder { id: first.id.clone(), reason });
        }
        Ok(bytes)
    }

    fn check_order(&self, order: &Order) -> Result<u64, ProducerError> {
        let invalid = |reason: String| Err(ProducerError::InvalidOrder { id: order.id.clone(), reason });
        if let Err(error) = validate_order_id(&order.id) {
            return invalid(error.to_string());
        }
        if self.core.outbox().contains(&order.id) {
            return Err(ProducerError::DuplicateOrder { id: order.id.clone() });
        }
        if order.items.len() > ORDER_ITEMS_MAX as usize {
            return invalid(format!("{} items; the limit is {ORDER_ITEMS_MAX}", order.items.len()));
        }
        if let Some((index, item)) = order.items.iter().enumerate().find(|(_, item)| item.len() > ITEM_BYTES_MAX) {
            return invalid(format!("item {index} is {} bytes; the limit is {ITEM_BYTES_MAX}", item.len()));
        }
        let bytes = items_bytes(&order.items);
        if bytes > ORDER_BYTES_MAX as u64 {
            return invalid(format!("{bytes} bytes of items; the limit is {ORDER_BYTES_MAX}"));
        }
        Ok(bytes)
    }

    /// Starts a streamed order: sends its Begin now; items follow with
    /// [`OrderStream::item`] (numbered from 0, each sent at once and kept in
    /// the outbox), then [`OrderStream::finish`].
    ///
    /// A stream is not resent before its Finish, and with an on-disk outbox
    /// it is committed to disk at its Finish (before the Finish goes out):
    /// a crash before that loses the unfinished order, which the broker
    /// then expires — it was never confirmed, nor was a receipt handed out.
    /// Dropping the stream without `finish` abandons the order the same way.
    pub fn begin(&mut self, id: impl Into<String>) -> Result<OrderStream<'_>, ProducerError> {
        let id = id.into();
        validate_order_id(&id).map_err(|e| ProducerError::InvalidOrder { id: id.clone(), reason: e.to_string() })?;
        if self.core.outbox().contains(&id) {
            return Err(ProducerError::DuplicateOrder { id });
        }
        self.wait_for_room(1, 0)?;
        let now = self.now();
        self.core.begin_stream(id.clone(), now);
        // From here on, dropping the stream (also on error) abandons it.
        let stream = OrderStream { producer: self, id, bytes: 0, finished: false };
        stream.producer.transmit()?;
        Ok(stream)
    }

    /// Waits up to `timeout` for answers from the broker, takes every one
    /// that arrived (collect them with [`Producer::poll_receipts`]), and
    /// (re)transmits the orders that are due. Returns early when answers
    /// arrive or an order falls due; returns the number of answers taken.
    pub fn poll(&mut self, timeout: Duration) -> Result<usize, ProducerError> {
        self.transmit()?;
        let wait = self.until_next_transmit().map_or(timeout, |due| due.min(timeout));
        let answered = self.receive(wait)?;
        self.transmit()?;
        Ok(answered)
    }

    /// Takes every answer received and not yet collected, oldest first.
    pub fn poll_receipts(&mut self) -> Vec<Answer> {
        self.answers.drain(..).collect()
    }

    /// Waits until every order in the outbox is answered (resending as
    /// needed), at most `timeout`. The answers stay available to
    /// [`Producer::poll_receipts`] and [`Receipt::wait`]. A timeout is
    /// [`ProducerError::Unanswered`]: the orders stay in the outbox.
    pub fn flush(&mut self, timeout: Duration) -> Result<FlushReport, ProducerError> {
        let started = Instant::now();
        let before = self.stats;
        self.poll(Duration::ZERO)?;
        while !self.core.outbox().is_empty() {
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                let unanswered = ProducerError::Unanswered { unanswered: self.core.outbox().len(), waited: timeout };
                return Err(self.explained(unanswered, "for answers"));
            }
            self.poll((timeout - elapsed).min(POLL_SLICE))?;
        }
        Ok(FlushReport {
            answered: (self.stats.confirmed + self.stats.rejected) - (before.confirmed + before.rejected),
            resent: self.stats.resends - before.resends,
            waited: started.elapsed(),
        })
    }

    /// Flushes (up to `timeout`), then closes the sockets, which linger at
    /// most `SOCKET_LINGER_MS` for messages still queued. Orders still
    /// unanswered stay in the on-disk outbox, if there is one, and are
    /// resent by the next `connect`; the flush's error says how many.
    pub fn close(mut self, timeout: Duration) -> Result<FlushReport, ProducerError> {
        let result = self.flush(timeout);
        if let Some(disk) = &mut self.disk {
            disk.commit()?;
        }
        drop(self);
        result
    }

    /// Orders awaiting an answer (including one being streamed).
    pub fn pending(&self) -> usize {
        self.core.outbox().len()
    }

    /// Item bytes held by the outbox.
    pub fn pending_bytes(&self) -> u64 {
        self.core.outbox().bytes()
    }

    /// Ids of the orders awaiting an answer, sorted.
    pub fn pending_ids(&self) -> Vec<String> {
        self.core.outbox().ids()
    }

    /// True if order `id` awaits an answer.
    pub fn is_pending(&self, id: &str) -> bool {
        self.core.outbox().contains(id)
    }

    /// Orders recovered from the on-disk outbox at `connect` (and resent).
    pub fn recovered(&self) -> u64 {
        self.stats.recovered
    }

    /// Counters since `connect`.
    pub fn stats(&self) -> Stats {
        Stats { unexpected_answers: self.core.unexpected_answers(), ..self.stats }
    }

    /// The configuration this producer was connected with.
    pub fn config(&self) -> &ProducerConfig {
        &self.config
    }

    /// The on-disk outbox's directory, if there is one.
    pub fn outbox_dir(&self) -> Option<&Path> {
        self.disk.as_ref().map(DiskOutbox::dir)
    }

    /// Segment files of the on-disk outbox and their total bytes, if there
    /// is one (compaction keeps them near what is live).
    pub fn outbox_disk_usage(&self) -> Option<(usize, u64)> {
        self.disk.as_ref().map(DiskOutbox::footprint)
    }

    pub(crate) fn receipt_state(&self, id: &str) -> ReceiptState {
        if let Some(attempts) = self.core.outbox().attempts(id) {
            return ReceiptState::Pending { attempts };
        }
        match self.answers.iter().rev().find(|answer| answer.order_id == id) {
            Some(answer) => ReceiptState::Answered(answer.outcome.clone()),
            None => ReceiptState::Unknown,
        }
    }

    pub(crate) fn take_answer(&mut self, id: &str) -> Option<Answer> {
        let index = self.answers.iter().rposition(|answer| answer.order_id == id)?;
        self.answers.remove(index)
    }

    fn now(&self) -> Millis {
        millis(self.started.elapsed())
    }

    /// Waits until `orders` more orders and `bytes` more bytes fit, taking
    /// answers meanwhile, up to the send timeout.
    fn wait_for_room(&mut self, orders: usize, bytes: u64) -> Result<(), ProducerError> {
        let started = Instant::now();
        while !self.core.outbox().has_room(orders, bytes) {
            let elapsed = started.elapsed();
            if elapsed >= self.config.send_timeout {
                let full = ProducerError::Backpressure {
                    waited: self.config.send_timeout,
                    orders: self.core.outbox().len(),
                    bytes: self.core.outbox().bytes(),
                    orders_max: self.config.outbox_orders_max,
                    bytes_max: self.config.outbox_bytes_max,
                };
                return Err(self.explained(full, "for room in the outbox"));
            }
            self.poll((self.config.send_timeout - elapsed).min(POLL_SLICE))?;
        }
        Ok(())
    }

    /// In a group of brokers: the member we send orders to (the leader
    /// last announced); `None` for a single broker or before any
    /// announcement.
    pub fn leader(&self) -> Option<u64> {
        self.core.leader()
    }

    /// The broker's latest `backpressure` announcement, if it made one
    /// lately: why it is not reading intake (and so not answering).
    pub fn broker_backpressure(&self) -> Option<&Backpressure> {
        self.core.backpressure()
    }

    /// A wait that timed out, as [`ProducerError::BrokerBusy`] when the
    /// broker said lately why it is not reading intake.
    fn explained(&mut self, timed_out: ProducerError, waiting_for: &'static str) -> ProducerError {
        self.core.handle_timeout(self.now());
        let waited = match &timed_out {
            ProducerError::NoBroker { waited, .. }
            | ProducerError::Backpressure { waited, .. }
            | ProducerError::Unanswered { waited, .. } => *waited,
            _ => return timed_out,
        };
        match self.core.backpressure() {
            Some(said) => ProducerError::BrokerBusy {
                reason: said.reason.clone(),
                detail: said.detail.clone(),
                waited,
                waiting_for,
                unanswered: self.core.outbox().len(),
            },
            None => timed_out,
        }
    }

    /// How long until the core next has something to send.
    fn until_next_transmit(&self) -> Option<Duration> {
        let at = self.core.poll_timeout();
        (at != Millis::MAX).then(|| Duration::from_millis(at.saturating_sub(self.now())))
    }

    /// Sends what the core says is due (live stream messages, the Hello,
    /// due orders, earliest first) until the intake socket refuses one (the
    /// core retries it shortly; the rest wait with it).
    fn transmit(&mut self) -> Result<(), ProducerError> {
        self.core.handle_timeout(self.now());
        while let Some(body) = self.core.poll_transmit() {
            if send_body(&self.push, &self.topic, body)? {
                self.core.handle_sent();
            } else {
                self.core.handle_send_refused();
                break;
            }
        }
        while let Some(transmitted) = self.core.poll_transmitted() {
            self.stats.transmissions += 1;
            if transmitted.attempt <= 1 {
                self.first_sent.insert(transmitted.id, Instant::now());
            } else {
                self.stats.resends += 1;
                tracing::debug!(order = %transmitted.id, "resent an unanswered order");
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for fanout messages (or, while the intake is
    /// blocked, for it to become writable) and handles every one that
    /// arrived, up to a batch; then commits their Answered records.
    fn receive(&mut self, timeout: Duration) -> Result<usize, ProducerError> {
        self.core.handle_timeout(self.now());
        let blocked = self.core.is_blocked();
        let mut items = [self.sub.as_poll_item(zmq::POLLIN), self.push.as_poll_item(zmq::POLLOUT)];
        let polled = if blocked { &mut items[..] } else { &mut items[..1] };
        match zmq::poll(polled, poll_millis(timeout)) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(source) => return Err(ProducerError::Zmq { during: "polling", source }),
        }
        if blocked && polled[1].is_writable() {
            self.core.handle_writable();
        }
        let mut answered = 0;
        for _ in 0..RECEIVE_BATCH_LEN_MAX {
            let frames = match self.sub.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => break,
                Err(source) => return Err(ProducerError::Zmq { during: "receiving from fanout", source }),
            };
            match split_frames(&frames).and_then(|(_, body)| FanoutMsg::decode(body)) {
                Ok(msg) => answered += self.handle_fanout(msg)?,
                Err(error) => {
                    self.stats.decode_errors += 1;
                    tracing::debug!(%error, "dropped a fanout message that does not decode");
                }
            }
        }
        if let Some(disk) = &mut self.disk {
            disk.commit()?;
            disk.compact(self.core.outbox())?;
        }
        Ok(answered)
    }

    /// Handles one fanout message; returns how many of our orders it answered.
    fn handle_fanout(&mut self, msg: FanoutMsg) -> Result<usize, ProducerError> {
        self.core.handle_fanout(msg, self.now());
        if let Some(leader) = self.core.poll_leader() {
            self.follow(leader)?;
        }
        let mut answered = 0;
        while let Some(answer) = self.core.poll_answer() {
            self.answer(answer)?;
            answered += 1;
        }
        Ok(answered)
    }

    /// Points the PUSH at the new leader's intake alone.
    fn follow(&mut self, leader: u64) -> Result<(), ProducerError> {
        let members = self.config.members.as_ref().expect("only a group core announces leaders");
        let member = members.get(leader).expect("the core follows members only");
        let endpoint = member.intake.as_str();
        if self.intake.as_deref() == Some(endpoint) {
            return Ok(());
        }
        let push = open_push(&self.context, &self.config)?;
        if let Some(curve) = &self.config.curve {
            member_curve(curve, member)?.apply(&push).map_err(zmq_error("setting the leader's CURVE key"))?;
        }
        push.connect(endpoint).map_err(zmq_error("connecting to the leader's intake"))?;
        let old = std::mem::replace(&mut self.push, push);
        old.set_linger(0).map_err(zmq_error("setting LINGER"))?;
        drop(old);
        tracing::info!(leader, intake = endpoint, "following the group's new leader");
        self.intake = Some(endpoint.to_owned());
        Ok(())
    }

    fn answer(&mut self, answered: Answered) -> Result<(), ProducerError> {
        let latency = self.first_sent.remove(&answered.id).map_or(Duration::ZERO, |sent| sent.elapsed());
        let confirmed = answered.verdict.is_ok();
        let id = answered.id.clone();
        let outcome = match answered.verdict {
            Ok(()) => {
                self.stats.confirmed += 1;
                Outcome::Confirmed
            }
            Err(reason) => {
                self.stats.rejected += 1;
                Outcome::Rejected(RejectError { order_id: answered.id.clone(), reason })
            }
        };
        self.keep_answer(Answer { order_id: answered.id, outcome, latency, attempts: answered.attempts });
        // After the answer is kept, so a disk error cannot lose it. If the
        // record is lost, the order is resent after a restart and the
        // broker confirms it again.
        if let Some(disk) = &mut self.disk {
            disk.record_answered(&id, confirmed)?;
        }
        Ok(())
    }

    fn keep_answer(&mut self, answer: Answer) {
        if self.answers.len() >= self.config.answers_kept_max {
            self.answers.pop_front();
            self.stats.answers_dropped += 1;
            if self.stats.answers_dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = self.stats.answers_dropped,
                    kept = self.config.answers_kept_max,
                    "dropped the oldest uncollected answer: collect answers with poll_receipts"
                );
            }
        }
        self.answers.push_back(answer);
    }

    /// The answer that removed `id` from the outbox, if it was a reject
    /// (for a stream the broker dropped while it was being sent).
    fn rejection(&self, id: &str) -> Option<RejectError> {
        self.answers.iter().rev().find(|answer| answer.order_id == id).and_then(|answer| match &answer.outcome {
            Outcome::Rejected(error) => Some(error.clone()),
            Outcome::Confirmed => None,
        })
    }
}

/// An order being streamed: items are sent as they come and kept in the
/// outbox; [`OrderStream::finish`] sends the Finish and hands out the
/// receipt. Dropping it unfinished abandons the order (the broker expires
/// the partial order).
pub struct OrderStream<'a> {
    producer: &'a mut Producer,
    id: String,
    bytes: u64,
    finished: bool,
}

impl std::fmt::Debug for OrderStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderStream").field("id", &self.id).field("bytes", &self.bytes).finish_non_exhaustive()
    }
}

impl OrderStream<'_> {
    /// The order's id.
    pub fn order_id(&self) -> &str {
        &self.id
    }

    /// Adds the next item (its bytes are delivered as they are) and sends
    /// it; returns its seq (0 for the first). An item that breaks a limit is
    /// refused ([`ProducerError::InvalidOrder`]) and the stream goes on; if
    /// the outbox has no room for its bytes within the send timeout,
    /// [`ProducerError::Backpressure`]; if the broker already rejected the
    /// order, [`ProducerError::Rejected`].
    pub fn item(&mut self, data: impl Into<Vec<u8>>) -> Result<u32, ProducerError> {
        let data = data.into();
        self.check_item(&data)?;
        self.producer.wait_for_room(0, data.len() as u64)?;
        let len = data.len() as u64;
        let now = self.producer.now();
        let Some(seq) = self.producer.core.push_item(&self.id, data, now) else {
            return Err(self.rejected());
        };
        self.bytes += len;
        if (seq + 1) % STREAM_POLL_EVERY_ITEMS == 0 {
            self.producer.poll(Duration::ZERO)?;
        } else {
            // While the stream is live its item goes out now.
            self.producer.transmit()?;
        }
        Ok(seq)
    }

    fn check_item(&self, data: &[u8]) -> Result<(), ProducerError> {
        let invalid = |reason: String| Err(ProducerError::InvalidOrder { id: self.id.clone(), reason });
        let items = self.producer.core.outbox().items(&self.id).map_or(0, <[Vec<u8>]>::len);
        if items >= ORDER_ITEMS_MAX as usize {
            return invalid(format!("more than {ORDER_ITEMS_MAX} items"));
        }
        if data.len() > ITEM_BYTES_MAX {
            return invalid(format!("item {items} is {} bytes; the limit is {ITEM_BYTES_MAX}", data.len()));
        }
        let bytes = self.bytes + data.len() as u64;
        if bytes > (ORDER_BYTES_MAX as u64).min(self.producer.config.outbox_bytes_max) {
            return invalid(format!(
                "{bytes} bytes of items; the limit is {ORDER_BYTES_MAX} (and the outbox holds {})",
                self.producer.config.outbox_bytes_max
            ));
        }
        Ok(())
    }

    fn rejected(&self) -> ProducerError {
        match self.producer.rejection(&self.id) {
            Some(error) => ProducerError::Rejected(error),
            None => ProducerError::UnknownReceipt { id: self.id.clone() },
        }
    }

    /// Ends the order: commits it to the on-disk outbox (if any), sends the
    /// Finish with the item count, and returns its receipt. From now on it
    /// is resent like any other order until the broker answers.
    pub fn finish(mut self) -> Result<Receipt, ProducerError> {
        let producer = &mut *self.producer;
        let Some(items) = producer.core.outbox().items(&self.id) else {
            return Err(self.rejected());
        };
        if let Some(disk) = &mut producer.disk {
            disk.record_sent([(self.id.as_str(), items)])?;
        }
        // Complete (and on disk): from here on the order is resent like any
        // other until answered, never abandoned. The Finish goes out now if
        // the whole stream did; otherwise the whole order is due now.
        let now = producer.now();
        producer.core.finish_stream(&self.id, now);
        self.finished = true;
        producer.stats.orders_sent += 1;
        producer.transmit()?;
        Ok(Receipt::new(self.id.clone()))
    }
}

impl Drop for OrderStream<'_> {
    fn drop(&mut self) {
        if !self.finished && self.producer.core.abandon_stream(&self.id) {
            self.producer.first_sent.remove(&self.id);
            tracing::debug!(order = %self.id, "abandoned an unfinished stream");
        }
    }
}

/// The intake PUSH with its options, not connected yet.
fn open_push(context: &zmq::Context, config: &ProducerConfig) -> Result<zmq::Socket, ProducerError> {
    let push = context.socket(zmq::PUSH).map_err(zmq_error("creating the intake socket"))?;
    push.set_sndhwm(SOCKET_HWM_DEFAULT).map_err(zmq_error("setting SNDHWM"))?;
    // Queue only to completed connections: with no broker connected a send
    // is refused at once, and the order waits in the outbox instead.
    push.set_immediate(true).map_err(zmq_error("setting IMMEDIATE"))?;
    configure(&push, config)?;
    Ok(push)
}

/// The CURVE client towards one group member: its own key from the group
/// file, or the configured broker key.
fn member_curve(
    curve: &orderly_security::keys::CurveClient,
    member: &orderly_common::members::Member,
) -> Result<orderly_security::keys::CurveClient, ProducerError> {
    curve
        .for_member(member.public_key.as_deref())
        .map_err(|error| ProducerError::Config(format!("member {}'s public_key in the group file: {error}", member.id)))
}

/// LINGER, reconnect intervals and CURVE keys, as every socket gets them.
fn configure(socket: &zmq::Socket, config: &ProducerConfig) -> Result<(), ProducerError> {
    // LINGER bounds how long dropping the producer may wait for messages
    // still queued (the default is for ever).
    socket.set_linger(SOCKET_LINGER_MS).map_err(zmq_error("setting LINGER"))?;
    socket.set_reconnect_ivl(RECONNECT_INTERVAL_MS).map_err(zmq_error("setting RECONNECT_IVL"))?;
    socket.set_reconnect_ivl_max(RECONNECT_INTERVAL_MAX_MS).map_err(zmq_error("setting RECONNECT_IVL_MAX"))?;
    if let Some(curve) = &config.curve {
        curve.apply(socket).map_err(zmq_error("setting the CURVE keys"))?;
    }
    Ok(())
}

fn open_sockets(context: &zmq::Context, config: &ProducerConfig) -> Result<(zmq::Socket, zmq::Socket), ProducerError> {
    let push = open_push(context, config)?;
    let sub = context.socket(zmq::SUB).map_err(zmq_error("creating the fanout socket"))?;
    sub.set_rcvhwm(SOCKET_HWM_DEFAULT).map_err(zmq_error("setting RCVHWM"))?;
    let frame_max = i64::try_from(FANOUT_FRAME_BYTES_MAX).expect("frame limits fit in i64");
    sub.set_maxmsgsize(frame_max).map_err(zmq_error("setting MAXMSGSIZE"))?;
    sub.set_subscribe(&producer_topic(&config.producer)).map_err(zmq_error("subscribing"))?;
    // The broadcast topic too: `backpressure` says why intake goes
    // unanswered (its heartbeats come along, once per interval, ignored).
    sub.set_subscribe(BROADCAST_TOPIC).map_err(zmq_error("subscribing"))?;
    configure(&sub, config)?;
    match &config.members {
        // The intake waits for the leader's announcement (`Producer::follow`).
        Some(members) => {
            for member in members.iter() {
                if let Some(curve) = &config.curve {
                    member_curve(curve, member)?.apply(&sub).map_err(zmq_error("setting a member's CURVE key"))?;
                }
                sub.connect(member.fanout.as_str()).map_err(zmq_error("connecting to a member's fanout"))?;
            }
        }
        None => {
            push.connect(config.intake.as_str()).map_err(zmq_error("connecting to intake"))?;
            sub.connect(config.fanout.as_str()).map_err(zmq_error("connecting to fanout"))?;
        }
    }
    Ok((push, sub))
}

/// Sends one encoded intake message without blocking; false if the socket
/// would not take it (at its high-water mark, or no broker connected).
fn send_body(push: &zmq::Socket, topic: &[u8], body: &[u8]) -> Result<bool, ProducerError> {
    match push.send_multipart([topic, body], zmq::DONTWAIT) {
        Ok(()) => Ok(true),
        Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => Ok(false),
        Err(source) => Err(ProducerError::Zmq { during: "sending to intake", source }),
    }
}

/// A `zmq::poll` timeout in whole milliseconds, rounded up, so a wait of
/// 0.4 ms does not become a busy loop of zero-timeout polls.
fn poll_millis(timeout: Duration) -> i64 {
    i64::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i64::MAX)
}
