//! The broker's IO loop: the only code that touches sockets and the clock.
//!
//! One thread owns the three sockets. Each turn it polls (intake only while
//! the core has room), drains a bounded batch, feeds the core, takes the
//! core's events (the journal's records, once the journal exists) and only
//! then publishes what the core asked for, so nothing is ever promised
//! before it is recorded.
//!
//! Rooms: `config` (what `run` is told), `error`, `recover`
//! (start-up replay), `recorder` (the journal side of a turn),
//! `sockets`, `event_loop` (the turn), `metrics` (`/status`,
//! `/metrics`) and `backpressure` (the full-disk mode, and telling
//! producers why intake is closed).

mod backpressure;
mod config;
mod error;
mod event_loop;
mod group;
#[cfg(test)]
mod index_bytes;
mod member;
mod metrics;
mod recorder;
mod recover;
mod snapshot;
mod sockets;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;
use orderly_security::zap::{SharedKeys, ZapHandler};
use tracing::{info, warn};

pub use self::config::{journal_dir, raft_dir, BrokerConfig, CurveConfig, GroupSettings};
pub use self::error::BrokerError;
pub use self::event_loop::Summary;
pub use self::member::{
    decode_batch, encode_batches, Member, PeerRefused, Ready, Role, COMPACTION_BARRIER_MS_MAX, RAFT_LOG_COMPACT_STEP,
    RAFT_LOG_RETAIN_BYTES, RAFT_LOG_RETAIN_ENTRIES, RAFT_TICK_MS,
};
pub use self::recorder::{compact, persist_then_publish, EventLog, Persisted, Recorder, SegmentedLog};
pub use self::recover::{
    applied_marker, decode_applied_marker, fence, fence_marker, is_marker, recover, recover_member, replay,
    replay_applied, replay_member, ReplayedMember,
};
pub use self::snapshot::{SNAPSHOT_CHUNKS_PER_TURN, SNAPSHOT_CHUNK_BYTES, SNAPSHOT_STALL_MS};
/// The journal's record codec, here too for the loop's outside users.
pub use crate::core::codec::{decode_event, encode_event, EventDecodeError};

use self::error::{journal_err, zmq_err};
use self::event_loop::{DecodeErrors, Loop};
use crate::admin::{bound_to_loopback, AdminRequest, AdminServer};
use crate::core::Millis;

/// Compaction copies the oldest segment's live orders forward once at most
/// this share of the orders first written there is still live.
pub const COMPACTION_LIVE_PERCENT_MAX: u64 = 50;

/// Milliseconds since the Unix epoch: the core's clock. Wall-clock time, so
/// that times in the journal (partial orders' ages, the dedup window) mean
/// the same after a restart. A clock stepped backwards only delays
/// timeouts; one stepped forwards can expire workers early (their orders
/// are redelivered: duplicates, never loss).
pub fn wall_clock_ms() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

/// [`Hooks::on_turn`] is called at most this often: a watchdog needs a
/// sign of life, not every turn (a turn waits at most 100 ms).
pub const TURN_HOOK_INTERVAL_MS: u64 = 100;

/// The loop's hooks (shared with the worker's loop): see [`run_with`] for
/// what each means here.
pub use orderly_common::hooks::{Hooks, ReadyHook, StatusHook, TurnHook};

/// Runs the broker until `shutdown` is set (by SIGTERM or SIGINT).
pub fn run(config: BrokerConfig, shutdown: Arc<AtomicBool>, reload: Arc<AtomicBool>) -> Result<Summary, BrokerError> {
    run_with(config, shutdown, reload, Hooks::default())
}

/// [`run`] with [`Hooks`]: `on_ready` once the journal is recovered, the
/// admin endpoint is up and the sockets are bound ("broker listening");
/// `on_turn` between turns, at most once per [`TURN_HOOK_INTERVAL_MS`];
/// `on_status` when intake closes (and why) or opens again.
pub fn run_with(
    config: BrokerConfig,
    shutdown: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    mut hooks: Hooks,
) -> Result<Summary, BrokerError> {
    if config.curve.is_none() && !config.allow_insecure {
        if let Some(open) = [&config.intake, &config.fanout, &config.control].into_iter().find(|e| !e.is_local()) {
            return Err(BrokerError::Insecure { endpoint: open.to_string() });
        }
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| BrokerError::DataDir { path: config.data_dir.clone(), source })?;
    let started = Instant::now();
    if let Some(settings) = &config.group {
        group::recover_snapshot(&config, settings)?;
    }
    let (journal, core, anchors, applied) = match &config.group {
        // A group member ends recovery when it is elected (see `member`).
        Some(_) => recover_member(&config.data_dir, config.journal.clone(), config.core.clone(), wall_clock_ms())?,
        None => {
            let (journal, mut core, anchors) =
                recover(&config.data_dir, config.journal.clone(), config.core.clone(), wall_clock_ms())?;
            core.finish_recovery(wall_clock_ms());
            (journal, core, anchors, 0)
        }
    };
    let status = core.status();
    info!(
        records = journal.next_seq() - 1, segments = journal.segments().len(),
        partial = status.partial_orders, pending = status.pending_orders, dead = status.dead_letters,
        fsync = %config.journal.fsync, elapsed_ms = started.elapsed().as_millis() as u64,
        "journal recovered"
    );
    let (admin_server, admin) = start_admin(&config)?;
    let context = zmq::Context::new();
    // The ZAP handler must be bound before a CURVE socket accepts anyone.
    let (authorized, zap) = start_curve(&context, &config)?;
    let sockets = sockets::bind_sockets(&context, &config)?;
    let group = match &config.group {
        Some(settings) => Some(group::start(&context, &config, settings, applied, zap.as_ref())?),
        None => None,
    };
    info!(
        intake = %config.intake, fanout = %config.fanout, control = %config.control,
        data_dir = %config.data_dir.display(), incarnation = config.core.incarnation,
        "broker listening"
    );
    if let Some(on_ready) = hooks.on_ready.take() {
        on_ready("broker listening");
    }
    let mut broker = Loop {
        core,
        recorder: Recorder::new(journal, anchors),
        admin,
        authorized,
        zap,
        reload,
        authorized_path: config.curve.as_ref().map(|c| c.authorized_keys.clone()),
        identity_refused: 0,
        identity_log_ms: None,
        subscriptions_refused: 0,
        subscription_log_ms: None,
        sockets,
        intake_errors: DecodeErrors::new("intake"),
        control_errors: DecodeErrors::new("control"),
        status_due_ms: config.status_interval_ms,
        status_interval_ms: config.status_interval_ms,
        disk: backpressure::DiskMode::default(),
        announcer: backpressure::Announcer::new(config.core.heartbeat_interval_ms),
        admin_after_sync: Vec::new(),
        notice_log: event_loop::NoticeLog::default(),
        group,
        confirm_latency: crate::core::Histogram::default(),
        metrics: metrics::Metrics::new(config.group.is_some()),
    };
    let mut turn_hook_due = Instant::now();
    let mut intake_reason = None;
    while !shutdown.load(Ordering::Relaxed) && !broker.removed_from_group() {
        broker.turn()?;
        if Instant::now() >= turn_hook_due {
            turn_hook_due = Instant::now() + std::time::Duration::from_millis(TURN_HOOK_INTERVAL_MS);
            turn_hooks(&broker, &mut hooks, &mut intake_reason);
        }
    }
    seal(&mut broker.recorder.log)?;
    drop(admin_server);
    // The current batch is finished (turn() returned); publish nothing new.
    let summary = broker.summary();
    info!(status = ?broker.core.status(), "broker stopped");
    Ok(summary)
}

/// The turn hook, and a status line when intake closes or opens again
/// (`reason`: why it was closed at the last call).
fn turn_hooks(broker: &Loop, hooks: &mut Hooks, reason: &mut Option<&'static str>) {
    if let Some(on_turn) = &mut hooks.on_turn {
        on_turn();
    }
    let Some(on_status) = &mut hooks.on_status else { return };
    let closed = broker.intake_closed();
    if closed.as_ref().map(|c| c.reason) != *reason {
        *reason = closed.as_ref().map(|c| c.reason);
        match closed {
            Some(closed) => on_status(&format!("intake closed ({}): {}", closed.reason, closed.detail)),
            None => on_status("intake open again"),
        }
    }
}

/// At a clean stop: everything written is fsynced and a marker says so
/// (see `Journal::seal`). A commit still held for space is dropped: nothing
/// of it was published. A disk too full for the marker only costs the
/// marker (the records before it are fsynced first).
fn seal(journal: &mut orderly_journal::Journal) -> Result<(), BrokerError> {
    match journal.seal() {
        Ok(_) => Ok(()),
        Err(error @ orderly_journal::JournalError::NoSpace { .. }) => {
            warn!(%error, "journal: no room for the clean-stop marker; everything recorded is fsynced");
            Ok(())
        }
        Err(error) => Err(journal_err("final fsync and seal")(error)),
    }
}

type Admin = (Option<AdminServer>, Option<Receiver<AdminRequest>>);

/// The admin endpoint's thread, when one is configured.
fn start_admin(config: &BrokerConfig) -> Result<Admin, BrokerError> {
    let Some(admin) = config.admin.clone() else { return Ok((None, None)) };
    let token = admin.token.is_some();
    let (server, requests) = AdminServer::start(admin)?;
    // Say plainly who can reach it: beyond loopback every route but the
    // probes needs the token (start refuses to go on without one).
    let reach = if bound_to_loopback(server.addr) { "loopback only" } else { "reachable from other hosts" };
    info!(addr = %server.addr, reach, token,
          "admin endpoint listening (GET /status, /dlq, /metrics, /healthz, /readyz; POST /dlq/retry)");
    Ok((Some(server), Some(requests)))
}

/// The authorized keys and the ZAP handler that checks them, under CURVE.
fn start_curve(
    context: &zmq::Context,
    config: &BrokerConfig,
) -> Result<(Option<SharedKeys>, Option<ZapHandler>), BrokerError> {
    let Some(curve) = &config.curve else {
        warn!("CURVE off: traffic is plaintext and unauthenticated (fine on loopback)");
        return Ok((None, None));
    };
    let keys = orderly_security::AuthorizedKeys::load(&curve.authorized_keys)?;
    info!(keys = keys.len(), file = %curve.authorized_keys.display(), public_key = %curve.keys.public_z85(),
          "CURVE on; admitting the authorized keys");
    let shared = Arc::new(std::sync::RwLock::new(keys));
    let zap = ZapHandler::start(context, Arc::clone(&shared)).map_err(zmq_err("starting the ZAP handler"))?;
    Ok((Some(shared), Some(zap)))
}
