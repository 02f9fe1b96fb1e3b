//! The loop itself: one thread, one turn at a time. Each turn polls
//! (intake only while the core has room), drains a bounded batch, feeds
//! the core, answers admin queries, records and only then publishes, then
//! compacts the journal.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::Receiver;
use orderly_common::limits::{BATCH_LEN_MAX, INTAKE_BATCH_BYTES_MAX};
use orderly_common::protocol::{split_frames, ControlMsg, DecodeError, IntakeRef};
use orderly_common::text::Escaped;
use orderly_journal::Journal;
use orderly_security::zap::ZapHandler;
use orderly_security::Role;
use tracing::{info, warn};

use super::backpressure::{Announcer, Closed, DiskMode};
use super::error::{journal_err, zmq_err, BrokerError};
use super::metrics::{readiness, status_report, Metrics, Scrape, Stats};
use super::recorder::{persist_then_publish, Persisted, Recorder};
use super::sockets::{recv, recv_subscription, Sockets, Subscription};
use super::wall_clock_ms;
use crate::admin::schema::{DeleteReport, OrderView, RetryReport};
use crate::admin::{order_ref, percent_encode, AdminRequest, Answer, Query, NEXT_AFTER_HEADER, TOTAL_HEADER};
use crate::core::{ConfirmTiming, Core, Counters, Histogram, Millis, Notice, OrderItems, OrderPlace};
use orderly_common::OrderKey;

/// Decode errors of one socket are logged at most this often.
const DECODE_ERROR_LOG_INTERVAL_MS: u64 = 1000;
/// Refused identities are logged at most this often.
const IDENTITY_LOG_INTERVAL_MS: u64 = 1000;
/// Refused subscriptions are logged at most this often.
const SUBSCRIPTION_LOG_INTERVAL_MS: u64 = 1000;
/// Dead-letter lines logged per `DEAD_LETTER_LOG_WINDOW_MS` at most; the
/// rest are counted in one line (a broken deployment can dead-letter
/// thousands of orders a second).
const DEAD_LETTER_LINES_PER_WINDOW: u64 = 10;
const DEAD_LETTER_LOG_WINDOW_MS: u64 = 1000;
/// A turn waits at most this long, so a shutdown signal or an admin query
/// is noticed within it.
const TURN_WAIT_MS_MAX: u64 = 100;

/// What the broker did, reported at shutdown.
#[derive(Debug, Clone)]
pub struct Summary {
    pub counters: Counters,
    pub decode_errors_intake: u64,
    pub decode_errors_control: u64,
    /// Bytes the journal wrote (records and framing), compaction included.
    pub journal_bytes_written: u64,
    /// Bytes of the journal's segments at shutdown.
    pub journal_bytes_on_disk: u64,
}

/// Counts decode errors of one socket and logs them at most once a second,
/// so a flood of garbage cannot flood the log too.
pub(super) struct DecodeErrors {
    socket: &'static str,
    total: u64,
    unlogged: u64,
    last_log_ms: Option<Millis>,
}

impl DecodeErrors {
    pub(super) fn new(socket: &'static str) -> Self {
        DecodeErrors { socket, total: 0, unlogged: 0, last_log_ms: None }
    }

    fn record(&mut self, error: &DecodeError, now_ms: Millis) {
        self.total += 1;
        self.unlogged += 1;
        if self.last_log_ms.is_none_or(|t| now_ms >= t + DECODE_ERROR_LOG_INTERVAL_MS) {
            // A decode error may quote the message it refused: escaped.
            let error = error.to_string();
            warn!(socket = self.socket, count = self.unlogged, total = self.total, error = %orderly_common::text::Escaped(&error),
                "dropped undecodable messages");
            self.unlogged = 0;
            self.last_log_ms = Some(now_ms);
        }
    }
}

/// Everything one turn touches; owned by the loop's thread.
pub(super) struct Loop {
    pub core: Core,
    pub recorder: Recorder<Journal>,
    pub admin: Option<Receiver<AdminRequest>>,
    /// With CURVE: the keys admitted, shared with the ZAP handler.
    pub authorized: Option<orderly_security::zap::SharedKeys>,
    pub zap: Option<ZapHandler>,
    /// Set by SIGHUP: reload the authorized keys.
    pub reload: Arc<AtomicBool>,
    pub authorized_path: Option<PathBuf>,
    /// Messages whose claimed id is not the sender's key's id.
    pub identity_refused: u64,
    pub identity_log_ms: Option<Millis>,
    /// Fanout subscriptions refused (CURVE: not the key's own topic).
    pub subscriptions_refused: u64,
    pub subscription_log_ms: Option<Millis>,
    pub sockets: Sockets,
    pub intake_errors: DecodeErrors,
    pub control_errors: DecodeErrors,
    pub status_due_ms: Millis,
    pub status_interval_ms: u64,
    /// The full-disk mode (see `backpressure`).
    pub disk: DiskMode,
    /// Tells producers why intake is closed.
    pub announcer: Announcer,
    /// Answers to admin requests that changed state (`dlq retry`,
    /// `delete`): sent only once their records are fsynced, so an
    /// operator is never told of a change a crash could undo.
    pub admin_after_sync: Vec<(tokio::sync::oneshot::Sender<Answer>, Answer)>,
    /// What the notice lines have said (see `NoticeLog::log`).
    pub notice_log: NoticeLog,
    /// A group member's Raft node, peers and role; `None`: a single broker.
    pub group: Option<super::group::GroupState>,
    /// Finish (or `items`) read until its confirm published (`/metrics`).
    pub confirm_latency: Histogram,
    /// What `/metrics` renders with (see `metrics`).
    pub metrics: Metrics,
}

/// The state of the operator's event lines: the dead-letter rate limit and
/// the intake state last logged.
#[derive(Debug, Default)]
pub(super) struct NoticeLog {
    window_start_ms: Millis,
    dead_lines: u64,
    dead_unlogged: u64,
    /// The backpressure reason last logged; `None`: intake open.
    intake_reason: Option<&'static str>,
}

impl NoticeLog {
    /// Logs the core's notices at info, and intake closing or opening.
    /// Keys and reasons come from peers: escaped.
    pub(super) fn log(&mut self, core: &mut Core, closed: Option<super::backpressure::Closed>, now: Millis) {
        use orderly_common::text::Escaped;
        if now >= self.window_start_ms + DEAD_LETTER_LOG_WINDOW_MS {
            if self.dead_unlogged > 0 {
                info!(count = self.dead_unlogged, "and {} more dead letters", self.dead_unlogged);
            }
            (self.window_start_ms, self.dead_lines, self.dead_unlogged) = (now, 0, 0);
        }
        while let Some(notice) = core.poll_notice() {
            match notice {
                Notice::WorkerJoined { worker, capacity } => {
                    info!(worker = %Escaped(&worker), capacity, "worker joined")
                }
                Notice::WorkerLost { worker, why, requeued } => {
                    info!(worker = %Escaped(&worker), why = why.as_str(), requeued, "worker lost; its orders were requeued")
                }
                Notice::WorkerBroken { worker, reason } => {
                    info!(worker = %Escaped(&worker), reason = %Escaped(&reason), "worker broken: it is sent nothing until it recovers")
                }
                Notice::WorkerRecovered { worker } => info!(worker = %Escaped(&worker), "worker recovered"),
                Notice::DeadLettered { key, attempts, reason } if self.dead_lines < DEAD_LETTER_LINES_PER_WINDOW => {
                    self.dead_lines += 1;
                    info!(order = %Escaped(&key.to_string()), attempts, reason = %Escaped(&reason), "order dead-lettered");
                }
                Notice::DeadLettered { .. } => self.dead_unlogged += 1,
                Notice::Omitted { count } => info!(count, "notices omitted (too many at once)"),
            }
        }
        let reason = closed.as_ref().map(|c| c.reason);
        if reason != self.intake_reason {
            match &closed {
                Some(c) => info!(reason = c.reason, detail = %Escaped(&c.detail), "intake closed"),
                None => info!("intake open again"),
            }
            self.intake_reason = reason;
        }
    }
}

impl Loop {
    pub(super) fn now_ms(&self) -> Millis {
        wall_clock_ms()
    }

    /// One turn: wait for input or the next deadline, drain a batch, feed
    /// the core, record, publish. While a commit waits for disk space the
    /// core takes no input (see `backpressure`): only admin queries and,
    /// every retry interval, the held commit again.
    pub(super) fn turn(&mut self) -> Result<(), BrokerError> {
        if self.group.is_some() {
            return self.group_turn();
        }
        self.wait()?;
        let now = self.now_ms();
        let held = self.recorder.held().is_some();
        // Subscriptions touch no state of the core: read them even while a
        // commit is held, so libzmq's unbounded queue of them stays short.
        self.drain_subscriptions(now)?;
        if !held {
            self.drain_control(now)?;
            self.drain_intake(now)?;
            if now >= self.core.poll_timeout() {
                self.core.handle_timeout(now);
            }
        }
        self.answer_admin(now);
        if self.reload.swap(false, Ordering::Relaxed) {
            if let Some(path) = self.authorized_path.clone() {
                self.reload_keys(&path);
            }
        }
        let retry = self.disk.retry_due(now);
        if retry {
            self.recorder.log.retry_reserve();
        }
        if !held || retry {
            let fanout = &self.sockets.fanout;
            let persisted = persist_then_publish(&mut self.core, &mut self.recorder, |out| {
                // XPUB, like PUB, never blocks; at the high-water mark it drops, which the
                // protocol tolerates (welcomes repeat, orders are redelivered).
                super::sockets::publish(fanout, out)
            })?;
            if persisted == Persisted::Published {
                if let Some(confirms) = self.core.take_confirm_timing() {
                    self.observe_confirms(confirms);
                }
            }
        }
        self.recorder.log.sync_lazy_due().map_err(journal_err("fsync"))?;
        if self.recorder.held().is_none() {
            self.answer_after_sync()?;
            self.compact()?;
        }
        self.disk.update(&self.recorder.log.space(), self.recorder.held(), now);
        self.core.set_disk_paused(self.disk.full().is_some(), now);
        let closed = self.intake_closed();
        self.notice_log.log(&mut self.core, closed, now);
        self.announce(now)?;
        if now >= self.status_due_ms {
            self.status_due_ms = now + self.status_interval_ms;
            self.log_status();
        }
        Ok(())
    }

    /// Confirms just published: their latency since their input was read,
    /// in µs against the core's whole milliseconds (so at most 1 ms over,
    /// never under). The clock is read once a turn that confirmed anything.
    pub(super) fn observe_confirms(&mut self, confirms: ConfirmTiming) {
        let now_us =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let latency_us = now_us.saturating_sub(confirms.read_ms.saturating_mul(1000));
        self.confirm_latency.observe_us_times(latency_us, confirms.orders);
    }

    /// Intake is read only while the core has room and the disk has space.
    pub(super) fn intake_open(&self) -> bool {
        self.disk.full().is_none() && self.core.intake_open()
    }

    /// Why intake is closed, if it is: the disk first, then the core's bounds.
    pub(super) fn intake_closed(&self) -> Option<Closed> {
        intake_closed(&self.core, &self.disk)
    }

    /// Tells producers (on `b/`) why intake is closed, once per heartbeat
    /// interval. Straight to the socket: it promises nothing, so it need not
    /// wait for a commit (it goes out even while one is held).
    pub(super) fn announce(&mut self, now: Millis) -> Result<(), BrokerError> {
        let (core, disk) = (&self.core, &self.disk);
        let Some(body) = self.announcer.poll(now, || intake_closed(core, disk)) else { return Ok(()) };
        let topic = orderly_common::ids::BROADCAST_TOPIC;
        self.sockets.fanout.send_multipart([topic, body.as_slice()], 0).map_err(zmq_err("publishing"))
    }

    /// Polls until input arrives or the core's next deadline. While a
    /// commit is held nothing is read, so nothing is polled but the clock.
    fn wait(&mut self) -> Result<(), BrokerError> {
        let now = self.now_ms();
        let held = self.recorder.held().is_some();
        let mut wait_ms = if held {
            TURN_WAIT_MS_MAX as i64
        } else {
            self.core.poll_timeout().saturating_sub(now).min(TURN_WAIT_MS_MAX) as i64
        };
        if self.recorder.log.has_unsynced() {
            // A lazy commit's records are fsynced within LAZY_SYNC_MAX even
            // when nothing else happens.
            wait_ms = wait_ms.min(orderly_journal::LAZY_SYNC_MAX.as_millis() as i64);
        }
        let events = |open: bool| if open { zmq::POLLIN } else { zmq::PollEvents::empty() };
        let mut items = [
            self.sockets.fanout.as_poll_item(zmq::POLLIN),
            self.sockets.control.as_poll_item(events(!held)),
            self.sockets.intake.as_poll_item(events(!held && self.intake_open())),
        ];
        match zmq::poll(&mut items, wait_ms) {
            Ok(_) | Err(zmq::Error::EINTR) => Ok(()),
            Err(source) => Err(BrokerError::Zmq { during: "poll", source }),
        }
    }

    pub(super) fn log_status(&self) {
        let status = self.core.status();
        info!(
            partial = status.partial_orders,
            pending = status.pending_orders,
            in_flight = status.in_flight_orders,
            dead = status.dead_letters,
            workers = status.workers.len(),
            sealed = status.counters.orders_sealed,
            acked = status.counters.orders_acked,
            journal_segments = self.recorder.log.segments().len(),
            journal_bytes_written = self.recorder.bytes_written,
            cached_bytes = status.cached_bytes,
            payload_reads = self.recorder.payload_reads,
            "status"
        );
    }

    /// The loop's own counters, for `/status` and `/metrics`.
    fn stats(&self) -> Stats {
        let zap = |count: fn(&ZapHandler) -> u64| self.zap.as_ref().map_or(0, count);
        Stats {
            journal_segments: self.recorder.log.segments().len(),
            journal_bytes: self.recorder.log.segments().iter().map(|s| s.bytes).sum(),
            journal_bytes_written: self.recorder.bytes_written,
            journal_commits: self.recorder.commits,
            journal_commit_time: self.recorder.commit_time,
            journal_payload_reads: self.recorder.payload_reads,
            decode_errors_intake: self.intake_errors.total,
            decode_errors_control: self.control_errors.total,
            identity_refused: self.identity_refused,
            subscriptions_refused: self.subscriptions_refused,
            zap_refused: zap(|z| z.stats.refused.load(Ordering::Relaxed)),
            zap_admitted: zap(|z| z.stats.admitted.load(Ordering::Relaxed)),
            disk_full: self.disk.full().is_some(),
            intake_closed: self.intake_closed(),
            group: self.group_report(),
        }
    }

    /// Answers admin queries. A retry's or a delete's events are journaled
    /// in this same turn, before anything is dispatched.
    pub(super) fn answer_admin(&mut self, now: Millis) {
        // A clone of the receiver (a handle), so answering may borrow self.
        let Some(requests) = self.admin.clone() else { return };
        while let Ok(request) = requests.try_recv() {
            let changes = request.query.changes();
            if changes && self.group.as_ref().is_some_and(|g| !g.member.serves()) {
                let answer = Answer::text(503, "this member is not the group's leader: ask the leader".to_owned());
                let _ = request.reply.send(answer);
                continue;
            }
            let answer = self.answer(request.query, now);
            if changes {
                self.admin_after_sync.push((request.reply, answer));
            } else {
                let _ = request.reply.send(answer);
            }
        }
    }

    /// Sends the answers that wait for their records (see
    /// `admin_after_sync`), with an fsync of their own if the turn's
    /// commit was a lazy one.
    fn answer_after_sync(&mut self) -> Result<(), BrokerError> {
        if self.admin_after_sync.is_empty() {
            return Ok(());
        }
        self.recorder.log.sync().map_err(journal_err("fsync"))?;
        for (reply, answer) in self.admin_after_sync.drain(..) {
            let _ = reply.send(answer);
        }
        Ok(())
    }

    fn answer(&mut self, query: Query, now: Millis) -> Answer {
        match query {
            Query::Status => Answer::json(&status_report(self.core.status(), &self.stats())),
            Query::DeadLetters { after, limit, page } => self.dead_letters(after.as_ref(), limit, page),
            Query::Retry(which) => {
                let revived = self.core.retry_dead(which.as_ref(), now) as u64;
                let which = which.as_ref().map_or_else(|| "all".to_owned(), |key| Escaped(&order_ref(key)).to_string());
                info!(which = %which, revived, "dlq retry: dead letters back in the queue with fresh attempts");
                Answer::json(&RetryReport { revived })
            }
            Query::Show { key, dead_only } => self.show(&key, dead_only),
            Query::Delete(which) => {
                let deleted = self.core.discard_dead(which.as_ref(), now) as u64;
                let which = which.as_ref().map_or_else(|| "all".to_owned(), |key| Escaped(&order_ref(key)).to_string());
                info!(which = %which, deleted, "dlq delete: dead letters deleted");
                Answer::json(&DeleteReport { deleted })
            }
            Query::GroupAdd(_) | Query::GroupRemove(_) => self.answer_membership(query),
            Query::Metrics => Answer {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: self.prometheus_text(),
                headers: Vec::new(),
            },
            Query::Ready => self.readiness(),
        }
    }

    /// `GET /metrics` (see `metrics`).
    fn prometheus_text(&self) -> String {
        let (status, stats) = (self.core.status(), self.stats());
        let workers = self.core.worker_metrics();
        self.metrics.render(&Scrape {
            status: &status,
            stats: &stats,
            workers: &workers,
            timings: self.core.timings(),
            confirm_latency: &self.confirm_latency,
            journal_commit: &self.recorder.commit_seconds,
            oldest_live_sealed_unix_ms: self.core.oldest_live_sealed_unix_ms(),
            now_ms: self.now_ms(),
        })
    }

    /// `GET /readyz`: 200 `ok` (as `/healthz`: what probes and scripts
    /// already read), or 503 with JSON naming the check that failed.
    fn readiness(&self) -> Answer {
        let Some((check, detail)) = readiness(self.recorder.held(), &self.stats()) else {
            return Answer::text(200, "ok");
        };
        let body = serde_json::json!({ "ready": false, "check": check, "detail": detail }).to_string() + "\n";
        Answer { status: 503, content_type: "application/json", body, headers: Vec::new() }
    }

    /// `/dlq` (an array, as before paging; the paging in headers) or
    /// `/dlq/page` (the page object).
    fn dead_letters(&self, after: Option<&OrderKey>, limit: usize, page: bool) -> Answer {
        let found = self.core.dead_letters_page(after, limit);
        if page {
            return Answer::json(&found);
        }
        let answer = Answer::json(&found.dead_letters).with_header(TOTAL_HEADER, found.total.to_string());
        match &found.next_after {
            Some(next) => answer.with_header(NEXT_AFTER_HEADER, percent_encode(&order_ref(next))),
            None => answer,
        }
    }

    /// One order and its handler view; its items are read back from the
    /// journal when only the journal holds them.
    fn show(&mut self, key: &OrderKey, dead_only: bool) -> Answer {
        let Some(info) = self.core.order_info(key) else {
            return Answer::text(404, format!("no order {key}: not sealed yet, acknowledged, or deleted"));
        };
        if dead_only && info.place != OrderPlace::Dead {
            let place = serde_json::to_value(info.place).unwrap_or_default();
            let place = place.as_str().unwrap_or("live");
            return Answer::text(404, format!("{key} is not a dead letter (it is {place}): see `orders show`"));
        }
        let items = match self.core.order_items(key) {
            Some(OrderItems::InMemory(items)) => items,
            Some(OrderItems::Journal(at)) => match self.recorder.read_items(at, key) {
                Ok(items) => items.to_vec(),
                Err(error) => return Answer::text(500, format!("cannot read {key} from the journal: {error}")),
            },
            None => return Answer::text(500, format!("the items of {key} are neither in memory nor in the journal")),
        };
        Answer::json(&OrderView::new(info, &items))
    }

    /// With CURVE, a message is taken only when the id it claims is the id
    /// bound to the sender's key (the ZAP User-Id) and that binding is still
    /// in the authorized keys (a reload revokes open connections too).
    fn identity_ok(&mut self, role: Role, claimed: &str, user: Option<&str>, now: Millis) -> bool {
        let Some(authorized) = &self.authorized else { return true };
        let keys = authorized.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        if user == Some(claimed) && keys.admits(role, claimed) {
            return true;
        }
        self.identity_refused += 1;
        if self.identity_log_ms.is_none_or(|t| now >= t + IDENTITY_LOG_INTERVAL_MS) {
            self.identity_log_ms = Some(now);
            warn!(
                role = role.name(),
                claimed,
                key_id = user.unwrap_or("-"),
                total = self.identity_refused,
                "refused a message: the id it claims is not its key's (or the key was revoked)"
            );
        }
        false
    }

    /// Reads what subscribers sent to the fanout. Under CURVE (manual
    /// XPUB) a subscription takes effect only if it is the sending key's
    /// own topic or the broadcast, exactly; others are counted and logged.
    /// Without CURVE libzmq has applied them already: they are only read.
    pub(super) fn drain_subscriptions(&mut self, now: Millis) -> Result<(), BrokerError> {
        let curve = self.authorized.is_some();
        for _ in 0..BATCH_LEN_MAX {
            let Some((subscription, user)) = recv_subscription(&self.sockets.fanout, curve)? else { break };
            if !curve {
                continue;
            }
            let allowed = |topic: &[u8]| self.subscription_allowed(topic, user.as_deref());
            // Manual mode: an option set now applies to the peer whose
            // message was just read.
            match subscription {
                Subscription::Subscribe(topic) if allowed(&topic) => {
                    self.sockets.fanout.set_subscribe(&topic).map_err(zmq_err("subscribing a peer"))?
                }
                Subscription::Subscribe(topic) => self.refuse_subscription(&topic, user.as_deref(), now),
                // libzmq's own unsubscriptions for a peer that left carry no
                // User-Id: it has dropped that peer's subscriptions itself.
                Subscription::Unsubscribe(topic) if user.is_some() && allowed(&topic) => {
                    self.sockets.fanout.set_unsubscribe(&topic).map_err(zmq_err("unsubscribing a peer"))?
                }
                Subscription::Unsubscribe(_) | Subscription::Other => {}
            }
        }
        Ok(())
    }

    /// True when the key behind `user` (a fanout User-Id: role and id) is
    /// still authorized and may subscribe to `topic`.
    fn subscription_allowed(&self, topic: &[u8], user: Option<&str>) -> bool {
        let Some(authorized) = &self.authorized else { return true };
        let Some((role, id)) = user.and_then(orderly_security::zap::parse_fanout_user_id) else { return false };
        let keys = authorized.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.admits(role, id) && orderly_security::may_subscribe(role, id, topic)
    }

    /// Counts a refused subscription; logs at most once a second.
    fn refuse_subscription(&mut self, topic: &[u8], user: Option<&str>, now: Millis) {
        self.subscriptions_refused += 1;
        if self.subscription_log_ms.is_none_or(|t| now >= t + SUBSCRIPTION_LOG_INTERVAL_MS) {
            self.subscription_log_ms = Some(now);
            warn!(
                key = user.unwrap_or("-"),
                topic = %String::from_utf8_lossy(topic).escape_debug(),
                total = self.subscriptions_refused,
                "refused a fanout subscription: a key may subscribe only to its own topic and b/"
            );
        }
    }

    /// SIGHUP: re-read the authorized keys; a bad file keeps the old set.
    fn reload_keys(&mut self, path: &Path) {
        let Some(authorized) = &self.authorized else { return };
        match orderly_security::AuthorizedKeys::load(path) {
            Ok(keys) => {
                info!(keys = keys.len(), file = %path.display(), "reloaded the authorized keys");
                *authorized.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = keys;
            }
            Err(error) => warn!(%error, "kept the old authorized keys: the file did not load"),
        }
    }

    pub(super) fn drain_control(&mut self, now: Millis) -> Result<(), BrokerError> {
        for _ in 0..BATCH_LEN_MAX {
            let Some((frames, user)) = recv(&self.sockets.control, self.authorized.is_some())? else { break };
            match split_frames(&frames).and_then(|(_, body)| ControlMsg::decode(body)) {
                Ok(msg) if self.identity_ok(Role::Worker, msg.worker(), user.as_deref(), now) => {
                    self.core.handle_control(msg, now)
                }
                Ok(_) => {}
                Err(error) => self.control_errors.record(&error, now),
            }
        }
        Ok(())
    }

    pub(super) fn drain_intake(&mut self, now: Millis) -> Result<(), BrokerError> {
        let mut batch_bytes = 0;
        for _ in 0..BATCH_LEN_MAX {
            // Re-checked per message: a bound reached mid-batch stops reading,
            // leaving the rest queued in ZeroMQ (backpressure, not loss).
            if !self.intake_open() || batch_bytes >= INTAKE_BATCH_BYTES_MAX {
                break;
            }
            let Some((frames, user)) = recv(&self.sockets.intake, self.authorized.is_some())? else { break };
            batch_bytes += frames.iter().map(|frame| frame.len()).sum::<usize>();
            // Borrowed from the frame: items are copied once, by the core.
            match split_frames(&frames).and_then(|(_, body)| IntakeRef::decode(body)) {
                Ok(msg) if self.identity_ok(Role::Producer, msg.producer(), user.as_deref(), now) => {
                    self.core.handle_intake_ref(msg, now)
                }
                Ok(_) => {}
                Err(error) => self.intake_errors.record(&error, now),
            }
        }
        Ok(())
    }

    /// Removes the oldest segments whose orders are all resolved, first
    /// copying forward the few live ones of a mostly dead segment. Oldest
    /// first only: see `compaction`. While the disk is full nothing is
    /// copied (the room left is for acks and dispatches; removals free
    /// space), and a copy that meets a full disk leaves the segment alone.
    fn compact(&mut self) -> Result<(), BrokerError> {
        super::recorder::compact(&mut self.core, &mut self.recorder, self.disk.full().is_some())?;
        Ok(())
    }

    pub(super) fn summary(&self) -> Summary {
        Summary {
            counters: self.core.counters().clone(),
            decode_errors_intake: self.intake_errors.total,
            decode_errors_control: self.control_errors.total,
            journal_bytes_written: self.recorder.bytes_written,
            journal_bytes_on_disk: self.recorder.log.segments().iter().map(|s| s.bytes).sum(),
        }
    }
}

/// Why intake is closed, if it is: the disk first, then the core's bounds.
fn intake_closed(core: &Core, disk: &DiskMode) -> Option<Closed> {
    disk.closed().or_else(|| if core.intake_open() { None } else { core.intake_closed() })
}
