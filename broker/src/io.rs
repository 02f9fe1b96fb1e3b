//! The broker's IO loop: the only code that touches sockets and the clock.
//!
//! One thread owns the three sockets. Each turn it polls (intake only while
//! the core has room), drains a bounded batch, feeds the core, takes the
//! core's events (the journal's records, once the journal exists) and only
//! then publishes what the core asked for, so nothing is ever promised
//! before it is recorded.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orderly_common::limits::{
    BATCH_LEN_MAX, CONTROL_FRAME_BYTES_MAX, INTAKE_FRAME_BYTES_MAX, SOCKET_HWM_DEFAULT, SOCKET_LINGER_MS,
};
use orderly_common::protocol::{split_frames, ControlMsg, DecodeError, IntakeMsg};
use orderly_common::Endpoint;
use tracing::{info, warn};

use orderly_journal::{Journal, JournalError};

use crossbeam_channel::Receiver;
use serde::Serialize;

use orderly_security::zap::{ZapHandler, DOMAIN_CONTROL, DOMAIN_FANOUT, DOMAIN_INTAKE};
use orderly_security::Role;

use crate::admin::{AdminError, AdminRequest, AdminServer, Query, DLQ_LIST_MAX};
use crate::compaction::{Anchors, Plan};
use crate::core::{Core, CoreConfig, Counters, Event, Millis};
use orderly_common::protocol::encode_dispatch;
use orderly_journal::RecordAt;
use serde_bytes::ByteBuf;

/// Compaction copies the oldest segment's live orders forward once at most
/// this share of the orders first written there is still live.
pub const COMPACTION_LIVE_PERCENT_MAX: u64 = 50;

/// Orders the tables are sized for before a replay, at most (beyond it
/// they grow as needed).
const REPLAY_RESERVE_MAX: usize = 4_000_000;

/// The journal's directory inside the broker's data directory.
pub fn journal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("journal")
}

/// Everything the broker needs to run, validated.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub intake: Endpoint,
    pub fanout: Endpoint,
    pub control: Endpoint,
    pub data_dir: PathBuf,
    pub journal: orderly_journal::Options,
    pub core: CoreConfig,
    /// How often a status line is logged.
    pub status_interval_ms: u64,
    /// Where the admin HTTP endpoint listens; `None` turns it off.
    pub admin: Option<std::net::SocketAddr>,
    /// CURVE on all three sockets, with a ZAP handler; `None` is plaintext.
    pub curve: Option<CurveConfig>,
    /// Allow plaintext on endpoints reachable from other machines.
    pub allow_insecure: bool,
}

/// The broker's CURVE server key and the clients it admits.
#[derive(Debug, Clone)]
pub struct CurveConfig {
    pub keys: orderly_security::KeyPair,
    pub authorized_keys: PathBuf,
}

/// Failures of the IO loop.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot bind the {socket} socket to {endpoint}: {source} (is another broker running, or the port taken?)")]
    Bind { socket: &'static str, endpoint: String, source: zmq::Error },
    #[error("ZeroMQ {during} failed: {source}")]
    Zmq { during: &'static str, source: zmq::Error },
    #[error(
        "another broker is using the data directory {0} (its journal is locked); stop it or choose another --data-dir"
    )]
    Locked(PathBuf),
    #[error("{cause}\nThe journal is damaged where recovery may not cut it off. See the damage with\n  orderly-broker journal verify --data-dir {data_dir}\nthen cut it off (nothing is deleted; later data is moved to a quarantine directory) with\n  orderly-broker journal repair --data-dir {data_dir}", data_dir = data_dir.display())]
    Corrupt { data_dir: PathBuf, cause: JournalError },
    #[error("journal {during} failed: {source}")]
    Journal { during: &'static str, source: JournalError },
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("refusing to bind {endpoint} without CURVE: anyone who can reach it could read and inject orders. Configure --curve-secret-key and --authorized-keys (see docs/SECURITY.md), bind a loopback address, or pass --allow-insecure")]
    Insecure { endpoint: String },
    #[error(transparent)]
    Authorized(#[from] orderly_security::authorized::AuthorizedError),
    #[error("journal record {seq} is not a broker event this build understands: {detail}")]
    BadRecord { seq: u64, detail: String },
}

impl BrokerError {
    fn from_open(data_dir: &Path, error: JournalError) -> BrokerError {
        match error {
            JournalError::Locked { .. } => BrokerError::Locked(data_dir.to_path_buf()),
            e @ (JournalError::Corrupt { .. } | JournalError::UnsupportedVersion { .. }) => {
                BrokerError::Corrupt { data_dir: data_dir.to_path_buf(), cause: e }
            }
            source => BrokerError::Journal { during: "open", source },
        }
    }
}

fn journal_err(during: &'static str) -> impl FnOnce(JournalError) -> BrokerError {
    move |source| BrokerError::Journal { during, source }
}

/// `GET /status`.
#[derive(Serialize)]
struct StatusReport {
    #[serde(flatten)]
    status: crate::core::Status,
    journal_segments: usize,
    journal_bytes: u64,
    journal_bytes_written: u64,
    /// Group commits (one write each; one fsync each under `always`).
    journal_commits: u64,
    /// Time spent in them, writes and fsyncs included.
    journal_commit_seconds: f64,
    /// Payloads read back from the journal (dispatch, compaction copies).
    journal_payload_reads: u64,
    decode_errors_intake: u64,
    decode_errors_control: u64,
    identity_refused: u64,
    zap_refused: u64,
    zap_admitted: u64,
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("admin responses serialize") + "\n"
}

/// Encodes one event as a journal record body: structs as arrays (no field
/// names: a third of the bytes of an item record). The decoder reads both
/// forms, so journals written with named fields still replay.
pub fn encode_event(event: &Event) -> Vec<u8> {
    rmp_serde::to_vec(event).expect("encoding an event into memory cannot fail")
}

/// An event's variant name, for messages.
fn event_name(event: &Event) -> String {
    format!("{event:?}").split([' ', '{', '(']).next().unwrap_or_default().to_owned()
}

/// Decodes one journal record body.
pub fn decode_event(seq: u64, body: &[u8]) -> Result<Event, BrokerError> {
    rmp_serde::from_slice(body).map_err(|e| BrokerError::BadRecord { seq, detail: e.to_string() })
}

/// Opens the journal and replays it into a fresh core.
pub fn recover(
    data_dir: &Path,
    options: orderly_journal::Options,
    core_config: CoreConfig,
    now_ms: Millis,
) -> Result<(Journal, Core, Anchors), BrokerError> {
    let (journal, recovery) =
        Journal::open(&journal_dir(data_dir), options).map_err(|e| BrokerError::from_open(data_dir, e))?;
    let mut core = Core::new(core_config);
    core.start_replay(now_ms);
    let mut anchors = Anchors::default();
    // At most one order per record: sized once rather than rehashed as
    // they come (a replay of a million orders otherwise rehashes ~20 times).
    let records = journal.segments().iter().map(|s| s.records).sum::<u64>();
    let records = usize::try_from(records).unwrap_or(usize::MAX).min(REPLAY_RESERVE_MAX);
    core.reserve(records);
    anchors.reserve(records);
    journal
        .replay_located(|at, body| {
            let event = decode_event(at.seq, body)?;
            core.apply(&event);
            if let Some(key) = event.payload_key() {
                core.payload_stored(key, at);
            }
            anchors.observe(&event, at.segment);
            Ok::<(), BrokerError>(())
        })
        .map_err(|e| match e {
            orderly_journal::ReplayError::Journal(source) => BrokerError::Journal { during: "replay", source },
            orderly_journal::ReplayError::Callback { error, .. } => error,
        })?;
    if let Some(torn) = &recovery.truncated {
        warn!(file = %torn.file.display(), offset = torn.offset, dropped_bytes = torn.dropped_bytes,
              reason = %torn.reason, "journal: cut off a torn tail (a write the crash interrupted; it was never confirmed)");
    }
    Ok((journal, core, anchors))
}

fn zmq_err(during: &'static str) -> impl FnOnce(zmq::Error) -> BrokerError {
    move |source| BrokerError::Zmq { during, source }
}

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
struct DecodeErrors {
    socket: &'static str,
    total: u64,
    unlogged: u64,
    last_log_ms: Option<Millis>,
}

impl DecodeErrors {
    fn new(socket: &'static str) -> Self {
        DecodeErrors { socket, total: 0, unlogged: 0, last_log_ms: None }
    }

    fn record(&mut self, error: &DecodeError, now_ms: Millis) {
        self.total += 1;
        self.unlogged += 1;
        if self.last_log_ms.is_none_or(|t| now_ms >= t + 1000) {
            warn!(socket = self.socket, count = self.unlogged, total = self.total, %error, "dropped undecodable messages");
            self.unlogged = 0;
            self.last_log_ms = Some(now_ms);
        }
    }
}

struct Sockets {
    intake: zmq::Socket,
    fanout: zmq::Socket,
    control: zmq::Socket,
}

fn bind_sockets(context: &zmq::Context, config: &BrokerConfig) -> Result<Sockets, BrokerError> {
    let intake = context.socket(zmq::PULL).map_err(zmq_err("creating the intake socket"))?;
    intake.set_rcvhwm(SOCKET_HWM_DEFAULT).map_err(zmq_err("setting RCVHWM"))?;
    intake.set_maxmsgsize(INTAKE_FRAME_BYTES_MAX as i64).map_err(zmq_err("setting MAXMSGSIZE"))?;
    let fanout = context.socket(zmq::PUB).map_err(zmq_err("creating the fanout socket"))?;
    // Credits bound dispatches per worker, so the queue to a subscriber stays
    // far below this; a drop at the mark is repaired by redelivery.
    fanout.set_sndhwm(SOCKET_HWM_DEFAULT * 10).map_err(zmq_err("setting SNDHWM"))?;
    let control = context.socket(zmq::PULL).map_err(zmq_err("creating the control socket"))?;
    control.set_rcvhwm(SOCKET_HWM_DEFAULT).map_err(zmq_err("setting RCVHWM"))?;
    control.set_maxmsgsize(CONTROL_FRAME_BYTES_MAX as i64).map_err(zmq_err("setting MAXMSGSIZE"))?;
    for socket in [&intake, &fanout, &control] {
        socket.set_linger(SOCKET_LINGER_MS).map_err(zmq_err("setting LINGER"))?;
    }
    if let Some(curve) = &config.curve {
        for (socket, domain) in [(&intake, DOMAIN_INTAKE), (&fanout, DOMAIN_FANOUT), (&control, DOMAIN_CONTROL)] {
            socket.set_curve_server(true).map_err(zmq_err("setting CURVE_SERVER"))?;
            socket.set_curve_secretkey(&curve.keys.secret).map_err(zmq_err("setting CURVE_SECRETKEY"))?;
            // The domain tells the ZAP handler which role may connect here.
            socket.set_zap_domain(domain).map_err(zmq_err("setting ZAP_DOMAIN"))?;
        }
    }
    let bind = |socket: &zmq::Socket, name: &'static str, endpoint: &Endpoint| {
        socket.bind(endpoint.as_str()).map_err(|source| BrokerError::Bind {
            socket: name,
            endpoint: endpoint.to_string(),
            source,
        })
    };
    bind(&intake, "intake", &config.intake)?;
    bind(&fanout, "fanout", &config.fanout)?;
    bind(&control, "control", &config.control)?;
    Ok(Sockets { intake, fanout, control })
}

/// Runs the broker until `shutdown` is set (by SIGTERM or SIGINT).
pub fn run(config: BrokerConfig, shutdown: Arc<AtomicBool>, reload: Arc<AtomicBool>) -> Result<Summary, BrokerError> {
    if config.curve.is_none() && !config.allow_insecure {
        if let Some(open) = [&config.intake, &config.fanout, &config.control].into_iter().find(|e| !e.is_local()) {
            return Err(BrokerError::Insecure { endpoint: open.to_string() });
        }
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| BrokerError::DataDir { path: config.data_dir.clone(), source })?;
    let started = Instant::now();
    let (journal, mut core, anchors) =
        recover(&config.data_dir, config.journal.clone(), config.core.clone(), wall_clock_ms())?;
    core.finish_recovery(wall_clock_ms());
    let status = core.status();
    info!(
        records = journal.next_seq() - 1, segments = journal.segments().len(),
        partial = status.partial_orders, pending = status.pending_orders, dead = status.dead_letters,
        fsync = %config.journal.fsync, elapsed_ms = started.elapsed().as_millis() as u64,
        "journal recovered"
    );
    let (admin_server, admin) = match config.admin {
        Some(addr) => {
            let (server, requests) = AdminServer::start(addr)?;
            info!(addr = %server.addr, "admin endpoint listening (GET /status, /dlq, /metrics; POST /dlq/retry)");
            (Some(server), Some(requests))
        }
        None => (None, None),
    };
    let context = zmq::Context::new();
    // The ZAP handler must be bound before a CURVE socket accepts anyone.
    let (authorized, zap) = match &config.curve {
        Some(curve) => {
            let keys = orderly_security::AuthorizedKeys::load(&curve.authorized_keys)?;
            info!(keys = keys.len(), file = %curve.authorized_keys.display(), public_key = %curve.keys.public_z85(),
                  "CURVE on; admitting the authorized keys");
            let shared = Arc::new(std::sync::RwLock::new(keys));
            let zap = ZapHandler::start(&context, Arc::clone(&shared)).map_err(zmq_err("starting the ZAP handler"))?;
            (Some(shared), Some(zap))
        }
        None => {
            warn!("CURVE off: traffic is plaintext and unauthenticated (fine on loopback)");
            (None, None)
        }
    };
    let sockets = bind_sockets(&context, &config)?;
    info!(
        intake = %config.intake, fanout = %config.fanout, control = %config.control,
        data_dir = %config.data_dir.display(), incarnation = config.core.incarnation,
        "broker listening"
    );
    let mut broker = Loop {
        core,
        recorder: Recorder {
            log: journal,
            anchors,
            bytes_written: 0,
            commits: 0,
            commit_time: Duration::ZERO,
            payload_reads: 0,
        },
        admin,
        authorized,
        zap,
        reload,
        authorized_path: config.curve.as_ref().map(|c| c.authorized_keys.clone()),
        identity_refused: 0,
        identity_log_ms: None,
        sockets,
        intake_errors: DecodeErrors::new("intake"),
        control_errors: DecodeErrors::new("control"),
        status_due_ms: config.status_interval_ms,
        status_interval_ms: config.status_interval_ms,
    };
    while !shutdown.load(Ordering::Relaxed) {
        broker.turn()?;
    }
    broker.recorder.log.sync().map_err(journal_err("final fsync"))?;
    drop(admin_server);
    // The current batch is finished (turn() returned); publish nothing new.
    let summary = broker.summary();
    info!(status = ?broker.core.status(), "broker stopped");
    Ok(summary)
}

struct Loop {
    core: Core,
    recorder: Recorder<Journal>,
    admin: Option<Receiver<AdminRequest>>,
    /// With CURVE: the keys admitted, shared with the ZAP handler.
    authorized: Option<orderly_security::zap::SharedKeys>,
    zap: Option<ZapHandler>,
    /// Set by SIGHUP: reload the authorized keys.
    reload: Arc<AtomicBool>,
    authorized_path: Option<PathBuf>,
    /// Messages whose claimed id is not the sender's key's id.
    identity_refused: u64,
    identity_log_ms: Option<Millis>,
    sockets: Sockets,
    intake_errors: DecodeErrors,
    control_errors: DecodeErrors,
    status_due_ms: Millis,
    status_interval_ms: u64,
}

impl Loop {
    fn now_ms(&self) -> Millis {
        wall_clock_ms()
    }

    /// One turn: wait for input or the next deadline, drain a batch, feed
    /// the core, record, publish.
    fn turn(&mut self) -> Result<(), BrokerError> {
        let now = self.now_ms();
        // Bounded so a shutdown signal or an admin query is noticed within
        // 100 ms.
        let mut wait_ms = self.core.poll_timeout().saturating_sub(now).min(100) as i64;
        if self.recorder.log.has_unsynced() {
            // A lazy commit's records are fsynced within LAZY_SYNC_MAX even
            // when nothing else happens.
            wait_ms = wait_ms.min(orderly_journal::LAZY_SYNC_MAX.as_millis() as i64);
        }
        let intake_open = self.core.intake_open();
        let mut items = [
            self.sockets.control.as_poll_item(zmq::POLLIN),
            self.sockets.intake.as_poll_item(if intake_open { zmq::POLLIN } else { zmq::PollEvents::empty() }),
        ];
        match zmq::poll(&mut items, wait_ms) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(source) => return Err(BrokerError::Zmq { during: "poll", source }),
        }
        let now = self.now_ms();
        self.drain_control(now)?;
        self.drain_intake(now)?;
        self.answer_admin(now);
        if now >= self.core.poll_timeout() {
            self.core.handle_timeout(now);
        }
        if self.reload.swap(false, Ordering::Relaxed) {
            if let Some(path) = self.authorized_path.clone() {
                self.reload_keys(&path);
            }
        }
        let fanout = &self.sockets.fanout;
        persist_then_publish(&mut self.core, &mut self.recorder, |out| {
            // PUB never blocks; at the high-water mark it drops, which the
            // protocol tolerates (welcomes repeat, orders are redelivered).
            fanout.send_multipart([out.topic.as_slice(), out.body.as_slice()], 0).map_err(zmq_err("publishing"))
        })?;
        self.recorder.log.sync_lazy_due().map_err(journal_err("fsync"))?;
        self.compact()?;
        if now >= self.status_due_ms {
            self.status_due_ms = now + self.status_interval_ms;
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
        Ok(())
    }

    /// Answers admin queries. A retry's events are journaled in this same
    /// turn, before anything is dispatched.
    fn answer_admin(&mut self, now: Millis) {
        let Some(requests) = &self.admin else { return };
        while let Ok(request) = requests.try_recv() {
            let answer = match request.query {
                Query::Status => {
                    let body = StatusReport {
                        status: self.core.status(),
                        journal_segments: self.recorder.log.segments().len(),
                        journal_bytes: self.recorder.log.segments().iter().map(|s| s.bytes).sum(),
                        journal_bytes_written: self.recorder.bytes_written,
                        journal_commits: self.recorder.commits,
                        journal_commit_seconds: self.recorder.commit_time.as_secs_f64(),
                        journal_payload_reads: self.recorder.payload_reads,
                        decode_errors_intake: self.intake_errors.total,
                        decode_errors_control: self.control_errors.total,
                        identity_refused: self.identity_refused,
                        zap_refused: self.zap.as_ref().map_or(0, |z| z.stats.refused.load(Ordering::Relaxed)),
                        zap_admitted: self.zap.as_ref().map_or(0, |z| z.stats.admitted.load(Ordering::Relaxed)),
                    };
                    (200, "application/json", json(&body))
                }
                Query::DeadLetters => (200, "application/json", json(&self.core.dead_letters(DLQ_LIST_MAX))),
                Query::Retry(which) => {
                    let revived = self.core.retry_dead(which.as_ref(), now);
                    (200, "application/json", json(&serde_json::json!({ "revived": revived })))
                }
                Query::Metrics => (200, "text/plain; version=0.0.4", self.metrics()),
            };
            let _ = request.reply.send(answer);
        }
    }

    fn metrics(&self) -> String {
        let status = self.core.status();
        let c = &status.counters;
        let gauges = [
            ("orderly_partial_orders", status.partial_orders as u64),
            ("orderly_pending_orders", status.pending_orders as u64),
            ("orderly_in_flight_orders", status.in_flight_orders as u64),
            ("orderly_dead_letters", status.dead_letters as u64),
            ("orderly_held_bytes", status.held_bytes),
            ("orderly_workers", status.workers.len() as u64),
            ("orderly_journal_segments", self.recorder.log.segments().len() as u64),
        ];
        let counters = [
            ("orderly_orders_sealed_total", c.orders_sealed),
            ("orderly_orders_acked_total", c.orders_acked),
            ("orderly_orders_rejected_total", c.orders_rejected),
            ("orderly_orders_dead_lettered_total", c.orders_dead_lettered),
            ("orderly_dispatches_total", c.dispatches),
            ("orderly_redeliveries_total", c.redeliveries),
            ("orderly_ack_timeouts_total", c.ack_timeouts),
            ("orderly_workers_expired_total", c.workers_expired),
            ("orderly_journal_bytes_written_total", self.recorder.bytes_written),
            ("orderly_journal_commits_total", self.recorder.commits),
            ("orderly_journal_payload_reads_total", self.recorder.payload_reads),
            ("orderly_journal_commit_microseconds_total", self.recorder.commit_time.as_micros() as u64),
            ("orderly_decode_errors_intake_total", self.intake_errors.total),
            ("orderly_decode_errors_control_total", self.control_errors.total),
            ("orderly_identity_refused_total", self.identity_refused),
            ("orderly_zap_refused_total", self.zap.as_ref().map_or(0, |z| z.stats.refused.load(Ordering::Relaxed))),
        ];
        let mut out = String::new();
        for (name, value) in gauges {
            out.push_str(&format!("# TYPE {name} gauge\n{name} {value}\n"));
        }
        for (name, value) in counters {
            out.push_str(&format!("# TYPE {name} counter\n{name} {value}\n"));
        }
        out
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
        if self.identity_log_ms.is_none_or(|t| now >= t + 1000) {
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

    fn drain_control(&mut self, now: Millis) -> Result<(), BrokerError> {
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

    fn drain_intake(&mut self, now: Millis) -> Result<(), BrokerError> {
        for _ in 0..BATCH_LEN_MAX {
            // Re-checked per message: a bound reached mid-batch stops reading,
            // leaving the rest queued in ZeroMQ (backpressure, not loss).
            if !self.core.intake_open() {
                break;
            }
            let Some((frames, user)) = recv(&self.sockets.intake, self.authorized.is_some())? else { break };
            match split_frames(&frames).and_then(|(_, body)| IntakeMsg::decode(body)) {
                Ok(msg) if self.identity_ok(Role::Producer, msg.producer(), user.as_deref(), now) => {
                    self.core.handle_intake(msg, now)
                }
                Ok(_) => {}
                Err(error) => self.intake_errors.record(&error, now),
            }
        }
        Ok(())
    }

    /// Removes the oldest segments whose orders are all resolved, first
    /// copying forward the few live ones of a mostly dead segment. Oldest
    /// first only: see `compaction`.
    fn compact(&mut self) -> Result<(), BrokerError> {
        while self.recorder.log.segments().len() >= 2 {
            let oldest = self.recorder.log.segments()[0].id;
            match self.recorder.anchors.plan(oldest, COMPACTION_LIVE_PERCENT_MAX) {
                Plan::Keep => break,
                Plan::Remove => {}
                Plan::CopyForward(keys) => {
                    let copied = keys.len();
                    for key in keys {
                        let Some(mut event) = self.core.snapshot(&key) else { continue };
                        if let (Some(from), Some(items)) = (self.core.payload_ref(&key), event.payload_mut()) {
                            // Only the journal holds the items: copy them from there.
                            *items = self.recorder.read_items(from)?;
                        }
                        self.recorder.record(&mut self.core, &event)?;
                    }
                    self.recorder.commit()?;
                    // The copies must be durable before the originals go,
                    // whatever the fsync policy.
                    self.recorder.log.sync().map_err(journal_err("fsync"))?;
                    info!(segment = oldest, orders = copied, "journal: copied live orders forward");
                }
            }
            let removed = self.recorder.log.remove_oldest_segment(oldest).map_err(journal_err("segment removal"))?;
            self.recorder.anchors.forget_segment(oldest);
            info!(segment = oldest, bytes = removed.bytes, "journal: removed a resolved segment");
        }
        Ok(())
    }

    fn summary(&self) -> Summary {
        Summary {
            counters: self.core.counters().clone(),
            decode_errors_intake: self.intake_errors.total,
            decode_errors_control: self.control_errors.total,
            journal_bytes_written: self.recorder.bytes_written,
            journal_bytes_on_disk: self.recorder.log.segments().iter().map(|s| s.bytes).sum(),
        }
    }
}

/// Milliseconds since the Unix epoch: the core's clock. Wall-clock time, so
/// that times in the journal (partial orders' ages, the dedup window) mean
/// the same after a restart. A clock stepped backwards only delays
/// timeouts; one stepped forwards can expire workers early (their orders
/// are redelivered: duplicates, never loss).
pub fn wall_clock_ms() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

/// Where events go: the journal, or a double in tests.
pub trait EventLog {
    /// Buffers one record; returns where it will be.
    fn append(&mut self, body: &[u8]) -> Result<RecordAt, JournalError>;
    /// Writes (and per policy fsyncs) everything buffered.
    fn commit(&mut self) -> Result<orderly_journal::CommitInfo, JournalError>;
    /// Writes everything buffered; fsyncs it later unless it is due (see
    /// [`Journal::commit_lazily`]): for a turn that promises nothing.
    fn commit_lazily(&mut self) -> Result<orderly_journal::CommitInfo, JournalError>;
    /// Reads back a committed record.
    fn read_at(&mut self, at: RecordAt) -> Result<Vec<u8>, JournalError>;
}

impl EventLog for Journal {
    fn append(&mut self, body: &[u8]) -> Result<RecordAt, JournalError> {
        Journal::append_located(self, body)
    }

    fn commit(&mut self) -> Result<orderly_journal::CommitInfo, JournalError> {
        Journal::commit(self)
    }

    fn commit_lazily(&mut self) -> Result<orderly_journal::CommitInfo, JournalError> {
        Journal::commit_lazily(self)
    }

    fn read_at(&mut self, at: RecordAt) -> Result<Vec<u8>, JournalError> {
        Journal::read_at(self, at)
    }
}

/// The journal side of the loop: the log, the compaction anchors, and how
/// much was written.
pub struct Recorder<L> {
    pub log: L,
    pub anchors: Anchors,
    pub bytes_written: u64,
    pub commits: u64,
    pub commit_time: Duration,
    pub payload_reads: u64,
}

impl<L: EventLog> Recorder<L> {
    fn append(&mut self, event: &Event) -> Result<RecordAt, BrokerError> {
        let body = encode_event(event);
        let at = match self.log.append(&body) {
            Err(JournalError::BatchFull { .. }) => {
                // A huge turn: commit what is buffered and go on.
                self.commit()?;
                self.log.append(&body).map_err(journal_err("append"))?
            }
            other => other.map_err(journal_err("append"))?,
        };
        self.anchors.observe(event, at.segment);
        Ok(at)
    }

    /// Appends `event` and, when its record holds an order's whole payload,
    /// tells the core where: every append of the loop goes through here, so
    /// no payload record goes unreported.
    fn record(&mut self, core: &mut Core, event: &Event) -> Result<(), BrokerError> {
        let at = self.append(event)?;
        if let Some(key) = event.payload_key() {
            core.payload_stored(key, at);
        }
        Ok(())
    }

    /// The items of the order whose whole payload the record at `at` holds.
    fn read_items(&mut self, at: RecordAt) -> Result<Vec<ByteBuf>, BrokerError> {
        let body = self.log.read_at(at).map_err(journal_err("read-back"))?;
        self.payload_reads += 1;
        let mut event = decode_event(at.seq, &body)?;
        match event.payload_mut() {
            Some(items) => Ok(std::mem::take(items)),
            None => Err(BrokerError::BadRecord {
                seq: at.seq,
                detail: format!("expected an order's payload, found {}", event_name(&event)),
            }),
        }
    }

    fn commit(&mut self) -> Result<(), BrokerError> {
        self.commit_as(true)
    }

    /// A commit; `durable`: fsynced (per policy) before it returns.
    fn commit_as(&mut self, durable: bool) -> Result<(), BrokerError> {
        let started = Instant::now();
        let info = if durable { self.log.commit() } else { self.log.commit_lazily() };
        let info = info.map_err(journal_err("commit"))?;
        self.bytes_written += info.bytes;
        self.commits += 1;
        self.commit_time += started.elapsed();
        Ok(())
    }
}

/// The end of every turn. Group commit: every event of the turn is
/// appended, then written with one write and — when the turn confirms an
/// order — (policy `always`) one fsync, and only then is anything the core
/// promised published: a confirm never precedes the fsync of its records
/// (nor of any record before them: the journal is sequential). A failed commit stops the
/// broker: the journal's state is unknown, and a restart recovers what is
/// durable (nothing unrecorded was promised).
pub fn persist_then_publish<L: EventLog>(
    core: &mut Core,
    recorder: &mut Recorder<L>,
    mut publish: impl FnMut(&crate::core::Outbound) -> Result<(), BrokerError>,
) -> Result<(), BrokerError> {
    let mut appended = false;
    while let Some(event) = core.poll_event() {
        recorder.record(core, &event)?;
        appended = true;
    }
    if appended {
        // Only a confirm promises durability; a turn without one (acks,
        // dispatches, heartbeats) is written now and fsynced with the next
        // confirm or within `LAZY_SYNC_MAX`, so acknowledgements do not
        // queue fsyncs in front of the next order's confirm.
        recorder.commit_as(core.confirms_waiting())?;
    }
    while let Some(mut out) = core.poll_outbound() {
        if let Some(fill) = out.fill.take() {
            // Committed above or in an earlier turn: readable now.
            let items = recorder.read_items(fill.from)?;
            out.body = encode_dispatch(&fill.key, fill.attempt, fill.attempt > 1, &items);
        }
        publish(&out)?;
    }
    Ok(())
}

/// Receives one whole message without blocking; `None` when none waits.
/// Receives one whole message without blocking, with the ZAP User-Id of
/// its sender (CURVE only); `None` when none waits. Frames past the third
/// are read and discarded, so a message of a million frames cannot make
/// the broker hold them (such a message then fails decoding).
/// One received message: its frames and the sender's ZAP User-Id.
type Received = (Vec<zmq::Message>, Option<String>);

fn recv(socket: &zmq::Socket, curve: bool) -> Result<Option<Received>, BrokerError> {
    let mut first = zmq::Message::new();
    match socket.recv(&mut first, zmq::DONTWAIT) {
        Ok(()) => {}
        Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => return Ok(None),
        Err(source) => return Err(BrokerError::Zmq { during: "receiving", source }),
    }
    // Without CURVE there is no User-Id: skip the lookup (a syscall-free
    // but not free property query per message).
    let user = if curve { first.gets("User-Id").map(str::to_owned) } else { None };
    let mut more = first.get_more();
    let mut frames = vec![first];
    while more {
        let part = socket.recv_msg(0).map_err(zmq_err("receiving"))?;
        more = part.get_more();
        if frames.len() < FRAMES_KEPT_MAX {
            frames.push(part);
        }
    }
    Ok(Some((frames, user)))
}

/// Frames of one received message kept (the protocol uses two).
const FRAMES_KEPT_MAX: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;
    use orderly_common::OrderKey;
    use serde_bytes::ByteBuf;

    #[test]
    fn events_round_trip_and_named_records_still_decode() {
        let key = OrderKey::new("p", "o");
        let events = [
            Event::Begun { key: key.clone(), at_ms: 5 },
            Event::ItemStored { key: key.clone(), seq: 1, data: ByteBuf::from(b"x".to_vec()) },
            Event::Accepted { key: key.clone(), items: vec![ByteBuf::from(b"y".to_vec())] },
            Event::Dispatched { key: key.clone(), worker: "w".into(), attempt: 2 },
            Event::Acked { key },
        ];
        for event in events {
            assert_eq!(decode_event(1, &encode_event(&event)).unwrap(), event);
            // Journals written before the compact encoding used field names.
            let named = rmp_serde::to_vec_named(&event).unwrap();
            assert_eq!(decode_event(1, &named).unwrap(), event);
            assert!(encode_event(&event).len() < named.len());
        }
    }
}
