//! The producer's connection to a broker: the only module with sockets and
//! a clock. It feeds the sans-IO [`Outbox`] and [`Handshake`] and does what
//! they say is due.
//!
//! Sockets: PUSH to intake (`ZMQ_IMMEDIATE`, so nothing queues for a broker
//! that is not connected) and SUB to fanout on `p/<id>/`. Every send is
//! non-blocking: an order the socket will not take stays in the outbox and
//! is tried again shortly, so backpressure shows up as a full outbox
//! ([`ProducerError::Backpressure`] after the send timeout), never as a
//! call that blocks for ever.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use orderly_common::ids::{producer_topic, validate_order_id};
use orderly_common::limits::{
    FANOUT_FRAME_BYTES_MAX, ITEM_BYTES_MAX, ORDER_BYTES_MAX, ORDER_ITEMS_MAX, PACKED_FRAME_BYTES_MAX,
    SOCKET_HWM_DEFAULT, SOCKET_LINGER_MS,
};
use orderly_common::protocol::{
    encode_items, pack_runs, split_frames, Begin, FanoutMsg, Finish, IntakeMsg, Item, RejectReason,
};
use serde_bytes::ByteBuf;

use crate::config::ProducerConfig;
use crate::core::{items_bytes, micros, Handshake, Micros, Outbox};
use crate::disk::DiskOutbox;
use crate::error::{zmq_error, ProducerError, RejectError};
use crate::limits::{
    HELLO_INTERVAL, OUTBOX_SEGMENT_BYTES_TARGET, POLL_SLICE, RECEIVE_BATCH_LEN_MAX, SEND_BATCH_ORDERS_MAX,
    TRANSMIT_RETRY_DELAY,
};
use crate::orders::Order;
use crate::receipt::{Answer, FlushReport, Outcome, Receipt, ReceiptState};

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
    _context: zmq::Context,
    config: ProducerConfig,
    topic: Vec<u8>,
    handshake: Handshake,
    outbox: Outbox,
    disk: Option<DiskOutbox>,
    /// Answers not yet collected, oldest first.
    answers: VecDeque<Answer>,
    /// The intake socket refused a message: transmit nothing before this
    /// (unless it reports it is writable again).
    intake_blocked_until: Option<Micros>,
    started: Instant,
    stats: Stats,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("producer", &self.config.producer)
            .field("pending", &self.outbox.len())
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
        let mut producer = Producer {
            handshake: Handshake::new(config.producer.clone(), rand::random()),
            outbox: Outbox::new(config.outbox_config()),
            topic: producer_topic(&config.producer),
            push,
            sub,
            _context: context,
            config,
            disk,
            answers: VecDeque::new(),
            intake_blocked_until: None,
            started: Instant::now(),
            stats: Stats::default(),
        };
        // Recovered orders were accepted before: they go in whatever the
        // bounds, due at once (oldest first), and only delay new sends.
        for order in recovered {
            producer.outbox.insert(order.id, order.items, 0);
            producer.stats.recovered += 1;
        }
        if producer.stats.recovered > 0 {
            tracing::info!(orders = producer.stats.recovered, "outbox: resending orders recovered from disk");
        }
        producer.handshake()?;
        producer.transmit_due()?;
        Ok(producer)
    }

    fn handshake(&mut self) -> Result<(), ProducerError> {
        let started = Instant::now();
        while !self.handshake.welcomed() {
            if started.elapsed() >= self.config.handshake_timeout {
                // Only hellos and our subscription are queued: nothing worth
                // lingering for when the sockets close.
                for socket in [&self.push, &self.sub] {
                    socket.set_linger(0).map_err(zmq_error("setting LINGER"))?;
                }
                return Err(ProducerError::NoBroker {
                    intake: self.config.intake.to_string(),
                    fanout: self.config.fanout.to_string(),
                    waited: self.config.handshake_timeout,
                });
            }
            // Repeated: a hello sent before our subscription reached the
            // broker gets a welcome we never see.
            let hello = self.handshake.hello();
            send_message(&self.push, &self.topic, &hello)?;
            let until = Instant::now() + HELLO_INTERVAL;
            while !self.handshake.welcomed() && Instant::now() < until {
                self.receive(until.saturating_duration_since(Instant::now()))?;
            }
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
            self.outbox.insert(order.id, order.items, now);
        }
        self.stats.orders_sent += receipts.len() as u64;
        self.transmit_due()?;
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
        let mut ids = HashSet::with_capacity(orders.len());
        let mut bytes = 0;
        for order in orders {
            bytes += self.check_order(order)?;
            if !ids.insert(order.id.as_str()) {
                return Err(ProducerError::DuplicateOrder { id: order.id.clone() });
            }
        }
        if !self.outbox.could_fit(orders.len(), bytes) {
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
        if self.outbox.contains(&order.id) {
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
        if self.outbox.contains(&id) {
            return Err(ProducerError::DuplicateOrder { id });
        }
        self.wait_for_room(1, 0)?;
        self.outbox.begin_stream(id.clone());
        // From here on, dropping the stream (also on error) abandons it.
        let mut stream = OrderStream { producer: self, id, live: true, bytes: 0, finished: false };
        let begin =
            IntakeMsg::Begin(Begin { producer: stream.producer.config.producer.clone(), order: stream.id.clone() });
        stream.live = stream.producer.send_live(&begin)?;
        Ok(stream)
    }

    /// Sends a message of a stream at once if the intake socket takes it;
    /// false if not (the stream is then sent whole at its Finish).
    fn send_live(&mut self, msg: &IntakeMsg) -> Result<bool, ProducerError> {
        if self.intake_blocked() {
            return Ok(false);
        }
        let sent = send_message(&self.push, &self.topic, msg)?;
        if !sent {
            self.block_intake();
        }
        Ok(sent)
    }

    /// Waits up to `timeout` for answers from the broker, takes every one
    /// that arrived (collect them with [`Producer::poll_receipts`]), and
    /// (re)transmits the orders that are due. Returns early when answers
    /// arrive or an order falls due; returns the number of answers taken.
    pub fn poll(&mut self, timeout: Duration) -> Result<usize, ProducerError> {
        self.transmit_due()?;
        let wait = self.until_next_transmit().map_or(timeout, |due| due.min(timeout));
        let answered = self.receive(wait)?;
        self.transmit_due()?;
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
        while !self.outbox.is_empty() {
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                return Err(ProducerError::Unanswered { unanswered: self.outbox.len(), waited: timeout });
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
        self.outbox.len()
    }

    /// Item bytes held by the outbox.
    pub fn pending_bytes(&self) -> u64 {
        self.outbox.bytes()
    }

    /// Ids of the orders awaiting an answer, sorted.
    pub fn pending_ids(&self) -> Vec<String> {
        self.outbox.ids()
    }

    /// True if order `id` awaits an answer.
    pub fn is_pending(&self, id: &str) -> bool {
        self.outbox.contains(id)
    }

    /// Orders recovered from the on-disk outbox at `connect` (and resent).
    pub fn recovered(&self) -> u64 {
        self.stats.recovered
    }

    /// Counters since `connect`.
    pub fn stats(&self) -> Stats {
        Stats { unexpected_answers: self.outbox.unexpected_answers(), ..self.stats }
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
        if let Some(attempts) = self.outbox.attempts(id) {
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

    fn now(&self) -> Micros {
        micros(self.started.elapsed())
    }

    /// Waits until `orders` more orders and `bytes` more bytes fit, taking
    /// answers meanwhile, up to the send timeout.
    fn wait_for_room(&mut self, orders: usize, bytes: u64) -> Result<(), ProducerError> {
        let started = Instant::now();
        while !self.outbox.has_room(orders, bytes) {
            let elapsed = started.elapsed();
            if elapsed >= self.config.send_timeout {
                return Err(ProducerError::Backpressure {
                    waited: self.config.send_timeout,
                    orders: self.outbox.len(),
                    bytes: self.outbox.bytes(),
                    orders_max: self.config.outbox_orders_max,
                    bytes_max: self.config.outbox_bytes_max,
                });
            }
            self.poll((self.config.send_timeout - elapsed).min(POLL_SLICE))?;
        }
        Ok(())
    }

    fn intake_blocked(&self) -> bool {
        self.intake_blocked_until.is_some_and(|until| self.now() < until)
    }

    fn block_intake(&mut self) {
        self.intake_blocked_until = Some(self.now() + micros(TRANSMIT_RETRY_DELAY));
    }

    /// How long until the next order is due for (re)transmission.
    fn until_next_transmit(&self) -> Option<Duration> {
        let due = self.outbox.next_deadline()?;
        let at = due.max(self.intake_blocked_until.unwrap_or(0));
        Some(Duration::from_micros(at.saturating_sub(self.now())))
    }

    /// Transmits every order that is due, earliest first, until the intake
    /// socket refuses one (it is retried shortly; the rest wait with it).
    fn transmit_due(&mut self) -> Result<(), ProducerError> {
        if self.intake_blocked() {
            return Ok(());
        }
        let now = self.now();
        while let Some(id) = self.outbox.next_due(now).map(str::to_owned) {
            let items = self.outbox.items(&id).expect("a due order is in the outbox");
            let first = self.outbox.attempts(&id) == Some(0);
            let pack = self.config.pack_items;
            if transmit_order(&self.push, &self.topic, &self.config.producer, &id, items, pack)? {
                self.outbox.transmitted(&id, now);
                self.stats.transmissions += 1;
                self.stats.resends += u64::from(!first);
                if !first {
                    tracing::debug!(order = %id, "resent an unanswered order");
                }
            } else {
                self.outbox.transmit_blocked(&id, now);
                self.block_intake();
                break;
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for fanout messages (or, while the intake is
    /// blocked, for it to become writable) and handles every one that
    /// arrived, up to a batch; then commits their Answered records.
    fn receive(&mut self, timeout: Duration) -> Result<usize, ProducerError> {
        let blocked = self.intake_blocked();
        let mut items = [self.sub.as_poll_item(zmq::POLLIN), self.push.as_poll_item(zmq::POLLOUT)];
        let polled = if blocked { &mut items[..] } else { &mut items[..1] };
        match zmq::poll(polled, poll_millis(timeout)) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(source) => return Err(ProducerError::Zmq { during: "polling", source }),
        }
        if blocked && polled[1].is_writable() {
            self.intake_blocked_until = None;
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
            disk.compact(&self.outbox)?;
        }
        Ok(answered)
    }

    /// Handles one fanout message; returns how many of our orders it answered.
    fn handle_fanout(&mut self, msg: FanoutMsg) -> Result<usize, ProducerError> {
        match msg {
            FanoutMsg::Welcome(welcome) => {
                self.handshake.handle_welcome(welcome.nonce);
                Ok(0)
            }
            FanoutMsg::Confirm(confirm) => Ok(usize::from(self.answer(&confirm.order, Ok(()))?)),
            FanoutMsg::Confirms(confirms) => {
                let mut answered = 0;
                for order in &confirms.orders {
                    answered += usize::from(self.answer(order, Ok(()))?);
                }
                Ok(answered)
            }
            FanoutMsg::Reject(reject) => Ok(usize::from(self.answer(&reject.order, Err(reject.reason))?)),
            // Dispatches and heartbeats are for workers.
            FanoutMsg::Dispatch(_) | FanoutMsg::Heartbeat(_) => Ok(0),
        }
    }

    fn answer(&mut self, id: &str, verdict: Result<(), RejectReason>) -> Result<bool, ProducerError> {
        let now = self.now();
        let Some(answered) = self.outbox.answer(id, verdict, now) else { return Ok(false) };
        let confirmed = answered.verdict.is_ok();
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
        self.keep_answer(Answer {
            order_id: answered.id,
            outcome,
            latency: Duration::from_micros(answered.latency_us),
            attempts: answered.attempts,
        });
        // After the answer is kept, so a disk error cannot lose it. If the
        // record is lost, the order is resent after a restart and the
        // broker confirms it again.
        if let Some(disk) = &mut self.disk {
            disk.record_answered(id, confirmed)?;
        }
        Ok(true)
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
    /// Every message so far went out; once one did not, the rest of the
    /// stream is only kept, and the whole order is sent at its Finish.
    live: bool,
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
        let producer = &mut *self.producer;
        let msg_data = if self.live { Some(ByteBuf::from(data.clone())) } else { None };
        let len = data.len() as u64;
        let Some(seq) = producer.outbox.push_item(&self.id, data) else {
            return Err(self.rejected());
        };
        self.bytes += len;
        if let Some(data) = msg_data {
            let item = Item { producer: producer.config.producer.clone(), order: self.id.clone(), seq, data };
            self.live = producer.send_live(&IntakeMsg::Item(item))?;
        }
        if (seq + 1) % STREAM_POLL_EVERY_ITEMS == 0 {
            self.producer.poll(Duration::ZERO)?;
        }
        Ok(seq)
    }

    fn check_item(&self, data: &[u8]) -> Result<(), ProducerError> {
        let invalid = |reason: String| Err(ProducerError::InvalidOrder { id: self.id.clone(), reason });
        let items = self.producer.outbox.items(&self.id).map_or(0, <[Vec<u8>]>::len);
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
        let Some(items) = producer.outbox.items(&self.id) else {
            return Err(self.rejected());
        };
        let count = u32::try_from(items.len()).expect("items per order are bounded far below u32::MAX");
        if let Some(disk) = &mut producer.disk {
            disk.record_sent([(self.id.as_str(), items)])?;
        }
        // Complete (and on disk): from here on the order is resent like any
        // other until answered, never abandoned.
        let now = producer.now();
        producer.outbox.finish_stream(&self.id, false, now);
        self.finished = true;
        producer.stats.orders_sent += 1;
        if self.live {
            let finish = Finish { producer: producer.config.producer.clone(), order: self.id.clone(), count };
            if producer.send_live(&IntakeMsg::Finish(finish))? {
                producer.outbox.transmitted(&self.id, now);
                producer.stats.transmissions += 1;
            }
        }
        // If some message of the stream did not go out, the whole order is
        // due now.
        producer.transmit_due()?;
        Ok(Receipt::new(self.id.clone()))
    }
}

impl Drop for OrderStream<'_> {
    fn drop(&mut self) {
        if !self.finished && self.producer.outbox.abandon(&self.id) {
            tracing::debug!(order = %self.id, "abandoned an unfinished stream");
        }
    }
}

fn open_sockets(context: &zmq::Context, config: &ProducerConfig) -> Result<(zmq::Socket, zmq::Socket), ProducerError> {
    let push = context.socket(zmq::PUSH).map_err(zmq_error("creating the intake socket"))?;
    push.set_sndhwm(SOCKET_HWM_DEFAULT).map_err(zmq_error("setting SNDHWM"))?;
    // Queue only to completed connections: with no broker connected a send
    // is refused at once, and the order waits in the outbox instead.
    push.set_immediate(true).map_err(zmq_error("setting IMMEDIATE"))?;
    let sub = context.socket(zmq::SUB).map_err(zmq_error("creating the fanout socket"))?;
    sub.set_rcvhwm(SOCKET_HWM_DEFAULT).map_err(zmq_error("setting RCVHWM"))?;
    let frame_max = i64::try_from(FANOUT_FRAME_BYTES_MAX).expect("frame limits fit in i64");
    sub.set_maxmsgsize(frame_max).map_err(zmq_error("setting MAXMSGSIZE"))?;
    sub.set_subscribe(&producer_topic(&config.producer)).map_err(zmq_error("subscribing"))?;
    for socket in [&push, &sub] {
        // LINGER bounds how long dropping the producer may wait for
        // messages still queued (the default is for ever).
        socket.set_linger(SOCKET_LINGER_MS).map_err(zmq_error("setting LINGER"))?;
        socket.set_reconnect_ivl(RECONNECT_INTERVAL_MS).map_err(zmq_error("setting RECONNECT_IVL"))?;
        socket.set_reconnect_ivl_max(RECONNECT_INTERVAL_MAX_MS).map_err(zmq_error("setting RECONNECT_IVL_MAX"))?;
    }
    if let Some(curve) = &config.curve {
        for socket in [&push, &sub] {
            curve.apply(socket).map_err(zmq_error("setting the CURVE keys"))?;
        }
    }
    push.connect(config.intake.as_str()).map_err(zmq_error("connecting to intake"))?;
    sub.connect(config.fanout.as_str()).map_err(zmq_error("connecting to fanout"))?;
    Ok((push, sub))
}

/// Sends one message without blocking; false if the socket would not take
/// it (at its high-water mark, or no broker connected).
fn send_message(push: &zmq::Socket, topic: &[u8], msg: &IntakeMsg) -> Result<bool, ProducerError> {
    send_body(push, topic, &msg.encode())
}

/// [`send_message`] for a body already encoded.
fn send_body(push: &zmq::Socket, topic: &[u8], body: &[u8]) -> Result<bool, ProducerError> {
    match push.send_multipart([topic, body], zmq::DONTWAIT) {
        Ok(()) => Ok(true),
        Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => Ok(false),
        Err(source) => Err(ProducerError::Zmq { during: "sending to intake", source }),
    }
}

/// Sends a whole order (Begin, items from seq 0, Finish — packed into
/// `items` frames with `pack`); false if the socket refused a message
/// part-way (the broker ignores the repeats when it is sent again).
fn transmit_order(
    push: &zmq::Socket,
    topic: &[u8],
    producer: &str,
    id: &str,
    items: &[Vec<u8>],
    pack: bool,
) -> Result<bool, ProducerError> {
    if pack {
        let count = u32::try_from(items.len()).expect("items per order are bounded far below u32::MAX");
        let ends = pack_runs(items, PACKED_FRAME_BYTES_MAX);
        let mut start = 0;
        for (n, &end) in ends.iter().enumerate() {
            let finish = (n + 1 == ends.len()).then_some(count);
            let body = encode_items(producer, id, n == 0, start as u32, &items[start..end], finish);
            if !send_body(push, topic, &body)? {
                return Ok(false);
            }
            start = end;
        }
        return Ok(true);
    }
    let begin = IntakeMsg::Begin(Begin { producer: producer.to_owned(), order: id.to_owned() });
    if !send_message(push, topic, &begin)? {
        return Ok(false);
    }
    for (seq, data) in items.iter().enumerate() {
        let seq = u32::try_from(seq).expect("items per order are bounded far below u32::MAX");
        let data = ByteBuf::from(data.clone());
        let item = IntakeMsg::Item(Item { producer: producer.to_owned(), order: id.to_owned(), seq, data });
        if !send_message(push, topic, &item)? {
            return Ok(false);
        }
    }
    let count = u32::try_from(items.len()).expect("items per order are bounded far below u32::MAX");
    let finish = IntakeMsg::Finish(Finish { producer: producer.to_owned(), order: id.to_owned(), count });
    send_message(push, topic, &finish)
}

/// A `zmq::poll` timeout in whole milliseconds, rounded up, so a wait of
/// 0.4 ms does not become a busy loop of zero-timeout polls.
fn poll_millis(timeout: Duration) -> i64 {
    i64::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i64::MAX)
}
