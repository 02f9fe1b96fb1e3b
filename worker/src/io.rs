//! The socket loop: the only code that touches ZeroMQ or reads the clock.
//!
//! One thread owns both sockets (ZeroMQ sockets are not thread-safe): a SUB
//! on the broker's fanout (our topic and the broadcast topic) and a PUSH to
//! its control socket. It polls the SUB and a wake-up socket, feeds
//! [`Core`], hands jobs to a pool of `concurrency` threads over a channel
//! (or runs them inline for [`Handler::inline`] handlers, or gives them to
//! the handler's own [`Runner`]: serve) and sends what the core queues.
//! Results come back on a channel ([`Completion`]) with one byte on the
//! wake-up socket per burst, so the poll returns.
//!
//! Control messages wait in a bounded outbox while the PUSH cannot take them
//! (no broker connected: `ZMQ_IMMEDIATE` refuses to queue for connections
//! that do not exist), so the loop never blocks on a send.
//!
//! With a group of brokers ([`run_group`]) the SUB connects to every
//! member's fanout and the PUSH to the leader's control socket alone (a
//! PUSH connected to several would spread heartbeats and acks over them).
//! When the core reports a new leader, a new PUSH connects to it and the
//! old one is closed: a PUSH merely disconnected may still hand a message
//! to the old connection while it is torn down.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use orderly_common::ids::{worker_topic, BROADCAST_TOPIC};
use orderly_common::limits::{self, WORKER_CONCURRENCY_MAX};
use orderly_common::members::Members;
use orderly_common::protocol::{split_frames, ControlMsg, DecodeError, Dispatch, FanoutMsg};
use orderly_common::text::Escaped;
use orderly_common::Endpoint;
use tracing::{debug, error, info, warn};

use crate::core::{pack_ack, Core, CoreConfig, Event, Failure, Millis, Refusal};
use crate::handler::{completion_channel, Completion, Completions, Done, Handler, Runner};
use crate::metrics::{advance, Metrics};
use orderly_common::OrderKey;

/// Longest wait in one poll, so signals and stats are never late by more.
const POLL_TIMEOUT_MS_MAX: u64 = 1000;
/// Fanout messages read in one loop iteration before timers get a turn.
const FANOUT_BATCH_LEN_MAX: usize = 1024;
/// Control messages held while the broker is unreachable. Past it the
/// oldest is dropped; a lost Ack only means a redelivery.
const OUTBOX_LEN_MAX: usize = 4 * WORKER_CONCURRENCY_MAX as usize;
/// First reconnect delay and its cap (ZeroMQ doubles the delay up to it).
const RECONNECT_IVL_MS: i32 = 100;
const RECONNECT_IVL_MS_MAX: i32 = 5000;
/// How often the counters are logged.
const STATS_INTERVAL_MS: u64 = 10_000;
/// At most one decode warning per this interval.
const DECODE_WARN_INTERVAL_MS: u64 = 1000;
/// How long the final Bye (and acks before it) may wait for the socket.
const BYE_WAIT_MS: u64 = limits::SOCKET_LINGER_MS as u64;
/// [`Hooks::service`]'s `on_turn` is called at most this often (and the metrics are
/// refreshed as often): a watchdog needs a sign of life, not every turn.
pub const TURN_HOOK_INTERVAL_MS: u64 = 250;

const _: () = assert!(TURN_HOOK_INTERVAL_MS <= POLL_TIMEOUT_MS_MAX);

pub use orderly_common::hooks::{ReadyHook, StatusHook, TurnHook};

/// What the loop tells the program around it, for a service manager and
/// for monitoring; all optional ([`Hooks::default`] is none). The
/// callbacks run on the loop's thread: keep them short.
#[derive(Debug, Default)]
pub struct Hooks {
    /// The hooks the broker's loop has too (one definition, in
    /// `orderly_common::hooks`). `on_ready`: once the worker has found its
    /// broker (its first message) or, in a group, learnt the leader, with a
    /// short line saying which. `on_turn`: at most once per
    /// [`TURN_HOOK_INTERVAL_MS`] while the loop turns (it turns at least
    /// once a second). `on_status`: broker lost, back, restarted; handler
    /// broken or running again; draining.
    pub service: orderly_common::hooks::Hooks,
    /// Numbers for `/metrics` (see [`crate::metrics`]), kept up to date by
    /// the loop.
    pub metrics: Option<Arc<Metrics>>,
}

/// Everything the loop needs, validated by the caller.
#[derive(Clone)]
pub struct Config {
    pub worker: String,
    /// Random per process start.
    pub incarnation: u64,
    pub fanout: Endpoint,
    pub control: Endpoint,
    pub concurrency: u32,
    /// What to do with each order (see [`Handler`]; a closure will do).
    pub handler: Arc<dyn Handler>,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_liveness: u32,
    /// Orders the broker may send in one `dispatches` message
    /// (`1..=DISPATCHES_PER_MESSAGE_MAX`, e.g.
    /// `limits::WORKER_DISPATCHES_MAX_DEFAULT`); 0: one order per message.
    /// Since 0.5.
    pub dispatches_max: u32,
    /// How long a shutdown waits for running orders.
    pub drain_timeout_ms: u64,
    /// CURVE client keys; `None` is plaintext.
    pub curve: Option<orderly_security::keys::CurveClient>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("worker", &self.worker)
            .field("incarnation", &self.incarnation)
            .field("fanout", &self.fanout)
            .field("control", &self.control)
            .field("concurrency", &self.concurrency)
            .field("handler", &self.handler.describe())
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .field("heartbeat_liveness", &self.heartbeat_liveness)
            .field("dispatches_max", &self.dispatches_max)
            .field("drain_timeout_ms", &self.drain_timeout_ms)
            .field("curve", &self.curve.is_some())
            .finish()
    }
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Shut down with nothing in flight.
    Drained,
    /// The drain timeout passed with orders still running; the broker
    /// requeues them on our Bye.
    DrainTimedOut { abandoned: usize },
}

/// A failure of the loop itself (not of an order).
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{what}")]
    Zmq {
        what: String,
        #[source]
        source: zmq::Error,
    },
    #[error("{what}")]
    Os {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("member {member}'s public_key in the group file")]
    MemberKey {
        member: u64,
        #[source]
        source: orderly_security::keys::KeyError,
    },
}

/// The CURVE client towards one group member: its own key from the group
/// file, or the configured broker key.
fn member_curve(
    curve: &orderly_security::keys::CurveClient,
    member: &orderly_common::members::Member,
) -> Result<orderly_security::keys::CurveClient, IoError> {
    curve.for_member(member.public_key.as_deref()).map_err(|source| IoError::MemberKey { member: member.id, source })
}

fn zmq_error(what: impl Into<String>) -> impl FnOnce(zmq::Error) -> IoError {
    let what = what.into();
    move |source| IoError::Zmq { what, source }
}

fn os_error(what: &'static str) -> impl FnOnce(std::io::Error) -> IoError {
    move |source| IoError::Os { what, source }
}

/// Runs the worker until `shutdown` is set and the drain ends.
pub fn run(config: Config, shutdown: &AtomicBool) -> Result<Exit, IoError> {
    run_with(config, shutdown, Hooks::default())
}

/// [`run`] with [`Hooks`] (readiness, liveness, status, metrics).
pub fn run_with(config: Config, shutdown: &AtomicBool, hooks: Hooks) -> Result<Exit, IoError> {
    info!(
        worker = %config.worker,
        incarnation = config.incarnation,
        fanout = %config.fanout,
        control = %config.control,
        handler = %config.handler.describe(),
        concurrency = config.concurrency,
        "worker starting"
    );
    let mut worker = Loop::new(config, None, hooks)?;
    let exit = worker.run_until_done(shutdown)?;
    worker.finish(exit)?;
    Ok(exit)
}

/// Like [`run`], against a group of brokers: `config.fanout` and
/// `config.control` are unused; every member's fanout is subscribed, and
/// control messages go to the member the heartbeats announce as leader.
pub fn run_group(config: Config, members: Members, shutdown: &AtomicBool) -> Result<Exit, IoError> {
    run_group_with(config, members, shutdown, Hooks::default())
}

/// [`run_group`] with [`Hooks`].
pub fn run_group_with(config: Config, members: Members, shutdown: &AtomicBool, hooks: Hooks) -> Result<Exit, IoError> {
    let fanouts: Vec<&str> = members.iter().map(|member| member.fanout.as_str()).collect();
    info!(
        worker = %config.worker,
        incarnation = config.incarnation,
        fanouts = %fanouts.join(", "),
        handler = %config.handler.describe(),
        concurrency = config.concurrency,
        "worker starting (group of brokers)"
    );
    let mut worker = Loop::new(config, Some(members), hooks)?;
    let exit = worker.run_until_done(shutdown)?;
    worker.finish(exit)?;
    Ok(exit)
}

// ---------------------------------------------------------------- sockets

struct Sockets {
    // Declared before the context so they close first.
    sub: zmq::Socket,
    push: zmq::Socket,
    context: zmq::Context,
}

fn open_sockets(config: &Config, members: Option<&Members>) -> Result<Sockets, IoError> {
    let context = zmq::Context::new();
    let sub = context.socket(zmq::SUB).map_err(zmq_error("cannot create the fanout SUB socket"))?;
    configure(&sub, "fanout")?;
    if let Some(curve) = &config.curve {
        curve.apply(&sub).map_err(zmq_error("cannot set the CURVE keys on the fanout socket"))?;
    }
    sub.set_maxmsgsize(limits::FANOUT_FRAME_BYTES_MAX as i64).map_err(zmq_error("cannot set MAXMSGSIZE"))?;
    for topic in [worker_topic(&config.worker), BROADCAST_TOPIC.to_vec()] {
        sub.set_subscribe(&topic).map_err(zmq_error("cannot subscribe"))?;
    }
    match members {
        Some(members) => {
            for member in members.iter() {
                if let Some(curve) = &config.curve {
                    member_curve(curve, member)?
                        .apply(&sub)
                        .map_err(zmq_error("cannot set a member's CURVE key on the fanout socket"))?;
                }
                let fanout = &member.fanout;
                sub.connect(fanout.as_str()).map_err(zmq_error(format!("cannot connect to fanout {fanout}")))?;
            }
        }
        None => {
            let fanout = &config.fanout;
            sub.connect(fanout.as_str()).map_err(zmq_error(format!("cannot connect to fanout {fanout}")))?;
        }
    }
    let push = open_push(&context, config.curve.as_ref())?;
    // In a group the PUSH waits for a leader's announcement (`Loop::follow`).
    if members.is_none() {
        push.connect(config.control.as_str())
            .map_err(zmq_error(format!("cannot connect to control {}", config.control)))?;
    }
    Ok(Sockets { sub, push, context })
}

/// The control PUSH with its options, not connected yet.
fn open_push(
    context: &zmq::Context,
    curve: Option<&orderly_security::keys::CurveClient>,
) -> Result<zmq::Socket, IoError> {
    let push = context.socket(zmq::PUSH).map_err(zmq_error("cannot create the control PUSH socket"))?;
    configure(&push, "control")?;
    if let Some(curve) = curve {
        curve.apply(&push).map_err(zmq_error("cannot set the CURVE keys on the control socket"))?;
    }
    // Without IMMEDIATE a PUSH queues messages for a broker not connected.
    push.set_immediate(true).map_err(zmq_error("cannot set IMMEDIATE"))?;
    Ok(push)
}

/// Options every socket gets, set explicitly rather than trusting defaults
/// (LINGER defaults to forever).
fn configure(socket: &zmq::Socket, name: &str) -> Result<(), IoError> {
    let error = |option: &str| zmq_error(format!("cannot set {option} on the {name} socket"));
    socket.set_linger(limits::SOCKET_LINGER_MS).map_err(error("LINGER"))?;
    socket.set_sndhwm(limits::SOCKET_HWM_DEFAULT).map_err(error("SNDHWM"))?;
    socket.set_rcvhwm(limits::SOCKET_HWM_DEFAULT).map_err(error("RCVHWM"))?;
    socket.set_reconnect_ivl(RECONNECT_IVL_MS).map_err(error("RECONNECT_IVL"))?;
    socket.set_reconnect_ivl_max(RECONNECT_IVL_MS_MAX).map_err(error("RECONNECT_IVL_MAX"))?;
    Ok(())
}

// ---------------------------------------------------------------- outbox

/// Control messages waiting for the PUSH socket to accept them.
#[derive(Default)]
struct Outbox {
    queue: VecDeque<ControlMsg>,
    dropped: u64,
}

impl Outbox {
    fn push(&mut self, msg: ControlMsg) {
        let Some(msg) = pack_ack(&mut self.queue, msg) else { return };
        if matches!(msg, ControlMsg::Heartbeat(_)) {
            // A newer heartbeat says everything an older one did.
            self.queue.retain(|m| !matches!(m, ControlMsg::Heartbeat(_)));
        }
        if self.queue.len() >= OUTBOX_LEN_MAX {
            if let Some(old) = self.queue.pop_front() {
                self.dropped += 1;
                warn!(kind = old.kind(), "control outbox full; dropped the oldest message (the broker redelivers)");
            }
        }
        self.queue.push_back(msg);
    }

    /// Sends until the socket would block.
    fn flush(&mut self, push: &zmq::Socket, topic: &[u8]) -> Result<(), IoError> {
        while let Some(msg) = self.queue.front() {
            let body = msg.encode();
            match push.send_multipart([topic, body.as_slice()], zmq::DONTWAIT) {
                Ok(()) => {
                    self.queue.pop_front();
                }
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => break,
                Err(e) => return Err(zmq_error("cannot send on the control socket")(e)),
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- pool

struct Pool {
    jobs: Sender<Dispatch>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(size: u32, handler: &Arc<dyn Handler>, completion: &Completion) -> Result<Pool, IoError> {
        // The core never holds more than `size` jobs, so sends never block.
        let (jobs, job_rx) = crossbeam_channel::bounded::<Dispatch>(size as usize);
        let mut threads = Vec::with_capacity(size as usize);
        for n in 0..size {
            let (handler, job_rx, completion) = (Arc::clone(handler), job_rx.clone(), completion.clone());
            let thread = std::thread::Builder::new()
                .name(format!("handler-{n}"))
                .spawn(move || pool_thread(&*handler, &job_rx, &completion))
                .map_err(os_error("cannot start a handler thread"))?;
            threads.push(thread);
        }
        Ok(Pool { jobs, threads })
    }

    /// Stops the threads; waits for them only if none is busy, so a stuck
    /// handler cannot hold up the exit.
    fn stop(self, join: bool) {
        drop(self.jobs);
        if join {
            for thread in self.threads {
                let _ = thread.join(); // a panic was already reported as a Nack
            }
        }
    }
}

fn pool_thread(handler: &dyn Handler, jobs: &Receiver<Dispatch>, completion: &Completion) {
    for job in jobs.iter() {
        let outcome = run_guarded(handler, &job);
        completion.finish(Done { order: job.order, attempt: job.attempt, outcome });
    }
}

/// Runs the handler; a panic becomes a retryable failure instead of a
/// thread lost with its order stuck in flight.
fn run_guarded(handler: &dyn Handler, job: &Dispatch) -> Result<(), Failure> {
    catch_unwind(AssertUnwindSafe(|| handler.handle(job)))
        .unwrap_or_else(|_| Err(Failure::retry("the handler panicked")))
}

/// Where the loop's orders run.
enum Execution {
    /// On the loop thread ([`Handler::inline`]: noop).
    Inline,
    /// On `concurrency` pool threads.
    Pool(Pool),
    /// On the handler's own runner ([`Handler::start_runner`]: serve).
    Runner(Box<dyn Runner>),
}

// ---------------------------------------------------------------- loop

/// Logs a warning at most once per interval, counting the rest.
#[derive(Default)]
struct RateLimit {
    last_ms: Option<Millis>,
    suppressed: u64,
}

impl RateLimit {
    /// Some(count suppressed since the last warning) when a warning may go out.
    fn allow(&mut self, now_ms: Millis) -> Option<u64> {
        if self.last_ms.is_some_and(|last| now_ms < last + DECODE_WARN_INTERVAL_MS) {
            self.suppressed += 1;
            return None;
        }
        self.last_ms = Some(now_ms);
        Some(std::mem::take(&mut self.suppressed))
    }
}

struct Loop {
    core: Core,
    sockets: Sockets,
    topic: Vec<u8>,
    outbox: Outbox,
    handler: Arc<dyn Handler>,
    execution: Execution,
    /// Results of the pool threads or the runner.
    completions: Completions,
    /// The runner's descriptors of the current poll.
    runner_fds: Vec<std::os::fd::RawFd>,
    start: Instant,
    drain_timeout_ms: u64,
    drain_deadline_ms: Option<Millis>,
    stats_due_ms: Millis,
    decode_errors: u64,
    decode_warn: RateLimit,
    /// In a group: the members, and the control endpoint the PUSH is
    /// connected to (the leader's).
    members: Option<Members>,
    control: Option<String>,
    /// For the control sockets opened when the leader changes.
    curve: Option<orderly_security::keys::CurveClient>,
    hooks: Hooks,
    turn_hook_due_ms: Millis,
    /// When the latest fanout message arrived (`/metrics`).
    broker_heard_ms: Option<Millis>,
    /// With metrics: when each running order started (for the handler
    /// duration histogram).
    started: HashMap<(OrderKey, u32), Instant, foldhash::fast::RandomState>,
}

impl Loop {
    fn new(config: Config, members: Option<Members>, hooks: Hooks) -> Result<Loop, IoError> {
        let sockets = open_sockets(&config, members.as_ref())?;
        let handler = config.handler;
        let (completion, completions) =
            completion_channel().map_err(os_error("cannot create the wake-up socket pair"))?;
        let execution = if handler.inline() {
            Execution::Inline
        } else if let Some(runner) = handler.start_runner(completion.clone()) {
            Execution::Runner(runner.map_err(os_error("cannot start the handler's runner"))?)
        } else {
            Execution::Pool(Pool::start(config.concurrency, &handler, &completion)?)
        };
        let core_config = CoreConfig {
            worker: config.worker.clone(),
            incarnation: config.incarnation,
            capacity: config.concurrency,
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            heartbeat_liveness: config.heartbeat_liveness,
            dispatches_max: config.dispatches_max,
        };
        let core = match &members {
            Some(members) => Core::in_group(core_config, members),
            None => Core::new(core_config),
        };
        Ok(Loop {
            core,
            sockets,
            topic: worker_topic(&config.worker),
            outbox: Outbox::default(),
            handler,
            execution,
            completions,
            runner_fds: Vec::new(),
            start: Instant::now(),
            drain_timeout_ms: config.drain_timeout_ms,
            drain_deadline_ms: None,
            stats_due_ms: STATS_INTERVAL_MS,
            decode_errors: 0,
            decode_warn: RateLimit::default(),
            members,
            control: None,
            curve: config.curve,
            hooks,
            turn_hook_due_ms: 0,
            broker_heard_ms: None,
            started: HashMap::default(),
        })
    }

    fn now_ms(&self) -> Millis {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn run_until_done(&mut self, shutdown: &AtomicBool) -> Result<Exit, IoError> {
        loop {
            let now_ms = self.now_ms();
            if shutdown.load(Ordering::Relaxed) && !self.core.is_draining() {
                info!(in_flight = self.core.in_flight_len(), "shutdown requested; finishing running orders");
                self.core.start_drain();
                self.status("shutdown requested; finishing running orders");
                self.drain_deadline_ms = Some(now_ms.saturating_add(self.drain_timeout_ms));
            }
            self.core.handle_timeout(now_ms);
            self.pump()?;
            if self.core.is_drained() {
                return Ok(Exit::Drained);
            }
            if self.drain_deadline_ms.is_some_and(|deadline| now_ms >= deadline) {
                return Ok(Exit::DrainTimedOut { abandoned: self.core.in_flight_len() });
            }
            self.log_stats(now_ms);
            self.turned(now_ms);
            self.wait_and_read(now_ms)?;
        }
    }

    /// Hands out jobs, logs events and sends what the core queued.
    fn pump(&mut self) -> Result<(), IoError> {
        while let Some(job) = self.core.poll_job() {
            debug!(order = %job.order, attempt = job.attempt, items = job.items.len(), "order started");
            // Bounded: the core runs at most `capacity` orders at once; an
            // entry a lost result left behind cannot make it grow past it.
            if self.hooks.metrics.is_some() && self.started.len() < WORKER_CONCURRENCY_MAX as usize {
                self.started.insert((job.order.clone(), job.attempt), Instant::now());
            }
            match &mut self.execution {
                // Cannot block: the channel holds `capacity` jobs and the
                // core never has more in flight.
                Execution::Pool(pool) => {
                    if pool.jobs.send(job).is_err() {
                        unreachable!("pool threads live as long as the loop");
                    }
                }
                Execution::Runner(runner) => runner.submit(job),
                Execution::Inline => {
                    let outcome = run_guarded(&*self.handler, &job);
                    self.finish_job(Done { order: job.order, attempt: job.attempt, outcome });
                }
            }
        }
        if let Execution::Runner(runner) = &mut self.execution {
            runner.flush();
        }
        while let Some(event) = self.core.poll_event() {
            log_event(&event, &*self.handler);
            self.tell_hooks(&event);
        }
        while let Some(msg) = self.core.poll_control() {
            self.outbox.push(msg);
        }
        self.outbox.flush(&self.sockets.push, &self.topic)
    }

    fn finish_job(&mut self, done: Done) {
        match &done.outcome {
            Ok(()) => debug!(order = %done.order, attempt = done.attempt, "order done"),
            // Reported once per break by the core's HandlerBroken event.
            Err(failure) if failure.cannot_run => debug!(order = %done.order, attempt = done.attempt,
                reason = %Escaped(&failure.reason), "handler cannot run; order returned"),
            // The reason holds the command's stderr: escaped like the id.
            Err(failure) => warn!(order = %done.order, attempt = done.attempt, retry = failure.retry,
                reason = %Escaped(&failure.reason), "order failed"),
        }
        if let Some(started) = self.started.remove(&(done.order.clone(), done.attempt)) {
            if let Some(metrics) = &self.hooks.metrics {
                metrics.handler_duration.observe(started.elapsed().as_secs_f64());
            }
        }
        let now_ms = self.now_ms();
        self.core.handle_done(done.order, done.attempt, done.outcome, now_ms);
    }

    /// Sleeps until a message, a result or the next deadline, then takes
    /// in whatever arrived.
    fn wait_and_read(&mut self, now_ms: Millis) -> Result<(), IoError> {
        let mut due_ms = self.core.poll_timeout().min(self.stats_due_ms);
        if let Some(deadline) = self.drain_deadline_ms {
            due_ms = due_ms.min(deadline);
        }
        let timeout_ms = due_ms.saturating_sub(now_ms).min(POLL_TIMEOUT_MS_MAX) as i64;
        let want_send = if self.outbox.queue.is_empty() { zmq::PollEvents::empty() } else { zmq::POLLOUT };
        let mut items = vec![self.sockets.sub.as_poll_item(zmq::POLLIN), self.sockets.push.as_poll_item(want_send)];
        if !matches!(self.execution, Execution::Inline) {
            items.push(zmq::PollItem::from_fd(self.completions.wake_fd(), zmq::POLLIN));
        }
        // A runner's own descriptors (serve: handler stdouts), read here so
        // an answer reaches the loop without a thread hop.
        self.runner_fds.clear();
        if let Execution::Runner(runner) = &mut self.execution {
            runner.poll_fds(&mut self.runner_fds);
        }
        let first_runner_item = items.len();
        items.extend(self.runner_fds.iter().map(|&fd| zmq::PollItem::from_fd(fd, zmq::POLLIN)));
        match zmq::poll(&mut items, timeout_ms) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => return Ok(()), // a signal: the loop checks the flag
            Err(e) => return Err(zmq_error("cannot poll the sockets")(e)),
        }
        let fanout_ready = items[0].is_readable();
        // Index 2 is the wake-up socket whenever results can come back.
        let results_ready = items.get(2).is_some_and(|item| first_runner_item > 2 && item.is_readable());
        let runner_ready: Vec<bool> =
            items[first_runner_item..].iter().map(|item| item.is_readable() || item.is_error()).collect();
        drop(items);
        if fanout_ready {
            self.read_fanout()?;
        }
        // No wake-up byte, no result: a result is sent before its byte
        // (see `Completion::finish_all`), so none is missed.
        if results_ready {
            self.collect_results();
        }
        if let Execution::Runner(runner) = &mut self.execution {
            if runner_ready.contains(&true) {
                for done in runner.on_readable(&runner_ready) {
                    self.finish_job(done);
                }
            }
        }
        Ok(())
    }

    fn read_fanout(&mut self) -> Result<(), IoError> {
        for _ in 0..FANOUT_BATCH_LEN_MAX {
            let frames = match self.sockets.sub.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => break,
                Err(e) => return Err(zmq_error("cannot receive on the fanout socket")(e)),
            };
            let now_ms = self.now_ms();
            match split_frames(&frames).and_then(|(_, body)| FanoutMsg::decode(body)) {
                Ok(msg) => {
                    self.broker_heard_ms = Some(now_ms);
                    self.core.handle_fanout(msg, now_ms);
                    if let Some(leader) = self.core.poll_leader() {
                        self.follow(leader)?;
                    }
                }
                Err(error) => self.decode_failed(&error, now_ms),
            }
        }
        Ok(())
    }

    /// Points control messages at the new leader alone, on a new PUSH.
    /// Messages the old one still held are dropped with it: the core
    /// queued a fresh heartbeat, and a lost ack is a redelivery.
    fn follow(&mut self, leader: u64) -> Result<(), IoError> {
        let members = self.members.as_ref().expect("only a group core announces leaders");
        let member = members.get(leader).expect("the core follows members only");
        let endpoint = member.control.as_str().to_owned();
        if self.control.as_deref() == Some(endpoint.as_str()) {
            return Ok(());
        }
        let curve = self.curve.as_ref().map(|curve| member_curve(curve, member)).transpose()?;
        let push = open_push(&self.sockets.context, curve.as_ref())?;
        push.connect(&endpoint).map_err(zmq_error(format!("cannot connect to control {endpoint}")))?;
        let old = std::mem::replace(&mut self.sockets.push, push);
        old.set_linger(0).map_err(zmq_error("cannot set LINGER on the old control socket"))?;
        drop(old);
        self.control = Some(endpoint);
        Ok(())
    }

    fn decode_failed(&mut self, error: &DecodeError, now_ms: Millis) {
        self.decode_errors += 1;
        if let Some(suppressed) = self.decode_warn.allow(now_ms) {
            // A decode error may quote the message it refused.
            let error = error.to_string();
            warn!(error = %Escaped(&error), suppressed, total = self.decode_errors, "dropped an undecodable fanout message");
        }
    }

    fn collect_results(&mut self) {
        if matches!(self.execution, Execution::Inline) {
            return;
        }
        for done in self.completions.take() {
            self.finish_job(done);
        }
    }

    /// Readiness and status for the hooks, from the core's events.
    fn tell_hooks(&mut self, event: &Event) {
        let ready = match event {
            Event::BrokerFound { .. } => Some("broker found"),
            Event::LeaderChanged { .. } => Some("the group's leader found"),
            _ => None,
        };
        if let Some(ready) = ready {
            if let Some(on_ready) = self.hooks.service.on_ready.take() {
                on_ready(ready);
                return;
            }
        }
        let status = match event {
            Event::BrokerLost { .. } => "broker silent; waiting for it to come back",
            Event::BrokerBack => "broker is back",
            Event::BrokerRestarted { .. } => "broker restarted; announcing this worker again",
            Event::LeaderChanged { .. } => "the group has a new leader",
            Event::HandlerBroken { probes_failed: 0, .. } => "the handler cannot run: see the log",
            Event::HandlerRecovered => "the handler runs again",
            _ => return,
        };
        self.status(status);
    }

    fn status(&mut self, status: &str) {
        if let Some(on_status) = &mut self.hooks.service.on_status {
            on_status(status);
        }
    }

    /// At most once per [`TURN_HOOK_INTERVAL_MS`]: the turn hook, and the
    /// metrics refreshed.
    fn turned(&mut self, now_ms: Millis) {
        if now_ms < self.turn_hook_due_ms {
            return;
        }
        self.turn_hook_due_ms = now_ms.saturating_add(TURN_HOOK_INTERVAL_MS);
        if let Some(on_turn) = &mut self.hooks.service.on_turn {
            on_turn();
        }
        self.refresh_metrics(now_ms);
    }

    fn refresh_metrics(&self, now_ms: Millis) {
        let Some(metrics) = &self.hooks.metrics else { return };
        let c = self.core.counters();
        advance(&metrics.orders_done, c.orders_acked);
        advance(&metrics.orders_failed, c.orders_nacked);
        advance(&metrics.orders_returned, c.orders_returned);
        advance(&metrics.orders_refused, c.refused_dispatches);
        advance(&metrics.decode_errors, self.decode_errors);
        metrics.running.set(self.core.in_flight_len() as i64);
        metrics.capacity.set(i64::from(self.core.config().capacity));
        metrics.broken.set(i64::from(self.core.broken().is_some()));
        metrics.welcomed.set(i64::from(self.core.welcome().is_some()));
        let silent_ms = now_ms.saturating_sub(self.broker_heard_ms.unwrap_or(0));
        metrics.broker_silence.set(silent_ms as f64 / 1000.0);
        metrics.turned();
    }

    fn log_stats(&mut self, now_ms: Millis) {
        if now_ms < self.stats_due_ms {
            return;
        }
        self.stats_due_ms = now_ms + STATS_INTERVAL_MS;
        let c = self.core.counters();
        info!(
            orders_done = c.orders_acked,
            orders_failed = c.orders_nacked,
            in_flight = self.core.in_flight_len(),
            refused = c.refused_dispatches,
            returned = c.orders_returned,
            broken = self.core.broken().is_some(),
            duplicates = c.duplicate_dispatches,
            decode_errors = self.decode_errors,
            outbox = self.outbox.queue.len(),
            outbox_dropped = self.outbox.dropped,
            welcomed = self.core.welcome().is_some(),
            "stats"
        );
    }

    /// Says Bye, waits a bounded time for it to leave, and stops the pool.
    fn finish(mut self, exit: Exit) -> Result<(), IoError> {
        if let Exit::DrainTimedOut { abandoned } = exit {
            warn!(abandoned, "drain timeout passed; leaving running orders to the broker to redeliver");
        }
        self.outbox.push(self.core.bye());
        let deadline_ms = self.now_ms() + BYE_WAIT_MS;
        self.outbox.flush(&self.sockets.push, &self.topic)?;
        while !self.outbox.queue.is_empty() && self.now_ms() < deadline_ms {
            let wait_ms = deadline_ms.saturating_sub(self.now_ms()) as i64;
            match self.sockets.push.poll(zmq::POLLOUT, wait_ms) {
                Ok(_) | Err(zmq::Error::EINTR) => self.outbox.flush(&self.sockets.push, &self.topic)?,
                Err(e) => return Err(zmq_error("cannot poll the control socket")(e)),
            }
        }
        if self.outbox.queue.is_empty() {
            info!("said bye to the broker");
        } else {
            warn!(unsent = self.outbox.queue.len(), "broker unreachable; left without saying bye");
            // Nothing we sent can reach it either: do not linger on close.
            for socket in [&self.sockets.sub, &self.sockets.push] {
                let _ = socket.set_linger(0); // best effort: exiting anyway
            }
        }
        match std::mem::replace(&mut self.execution, Execution::Inline) {
            Execution::Pool(pool) => pool.stop(exit == Exit::Drained),
            Execution::Runner(runner) => runner.stop(),
            Execution::Inline => {}
        }
        Ok(())
    }
}

fn log_event(event: &Event, handler: &dyn Handler) {
    match event {
        Event::DuplicateDispatch { order, attempt } => {
            debug!(%order, attempt, "ignored a dispatch of an order already running here");
        }
        Event::Refused { order, attempt, why: Refusal::NoCapacity } => {
            warn!(%order, attempt, "refused a dispatch: no free capacity (returned to the broker)");
        }
        Event::Refused { order, attempt, why: Refusal::Draining } => {
            info!(%order, attempt, "refused a dispatch: shutting down (returned to the broker)");
        }
        Event::Refused { order, attempt, why: Refusal::Broken } => {
            debug!(%order, attempt, "refused a dispatch: the handler cannot run (returned to the broker)");
        }
        Event::HandlerBroken { reason, probes_failed: 0, probe_in_ms } => {
            // The one loud line of a break: what is wrong and what to fix.
            error!(handler = %handler.describe(), reason = %Escaped(reason), probe_in_ms,
                "THE HANDLER CANNOT RUN: fix the command (is it installed, on PATH, executable?); \
                 this worker takes no orders and returns the ones it gets, and tries again with backoff");
        }
        Event::HandlerBroken { reason, probes_failed, probe_in_ms } => {
            warn!(reason = %Escaped(reason), probes_failed, probe_in_ms, "handler still cannot run");
        }
        Event::HandlerProbing => info!("trying the handler again with the next order"),
        Event::HandlerRecovered => info!(handler = %handler.describe(), "the handler runs again"),
        Event::BrokerFound { incarnation } => info!(incarnation, "broker found"),
        Event::BrokerRestarted { old, new } => warn!(old, new, "broker restarted; announcing this worker again"),
        Event::BrokerLost { silent_ms } => {
            warn!(silent_ms, "broker silent; waiting for it to come back (ZeroMQ reconnects)");
        }
        Event::BrokerBack => info!("broker is back"),
        Event::LeaderChanged { leader, term } => {
            info!(leader, term, "the group has a new leader; announcing this worker to it");
        }
    }
}
