//! Serve mode: persistent handler processes fed orders as JSON lines
//! (`orderly-worker run --serve CMD --serve-processes N`; the contract is
//! in docs/PROTOCOL.md, "Handler processes").
//!
//! The worker starts `sh -c CMD` N times, each in a process group of its
//! own, and writes one order per line to a process's stdin (the order
//! object of [`crate::handler`]); the process answers one line per order
//! on stdout, in any order, naming the order:
//! `{"producer":"p1","id":"o-7","result":"ack"}` or
//! `{"producer":"p1","id":"o-7","result":"nack","retry":true,"delay_ms":5000,"reason":"db down"}`.
//!
//! The hot path stays on the io loop's thread: after a burst of orders it
//! writes each process's queued lines with one non-blocking `write`
//! ([`Runner::flush`]), and it polls the processes' stdouts with its
//! sockets and reads their answers itself ([`Runner::poll_fds`]), so an
//! order makes no thread hop on its way out or back. Per process, a writer
//! thread only finishes what a full pipe refused, and a supervisor thread
//! starts, times (per-order limit), reaps and restarts the process.
//!
//! Line parsing ([`parse_answer`], [`split_lines`]) is pure and tested on
//! its own; the rest is the process plumbing around it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orderly_common::limits::RETRY_DELAY_MS_MAX;
use orderly_common::order_json::write_order_json;
use orderly_common::protocol::Dispatch;
use orderly_common::text::Escaped;
use orderly_common::OrderKey;
use serde::Deserialize;
use tracing::{info, warn};

use crate::core::Failure;
use crate::handler::{
    signal_group, Completion, Done, Handler, Runner, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, KILL_GRACE_MS,
};

/// Handler processes started when `--serve-processes` is not given.
pub const SERVE_PROCESSES_DEFAULT: u32 = 1;
/// Most handler processes one worker starts: each costs two threads, a
/// process and a polled pipe; more concurrency comes from each process
/// holding many orders.
pub const SERVE_PROCESSES_MAX: u32 = 64;
/// Longest answer line a handler may write; past it the process is
/// presumed broken and restarted (its orders nacked, retry).
pub const SERVE_LINE_BYTES_MAX: usize = 1 << 20;
/// First delay before restarting a process that died; it doubles while the
/// process keeps dying within [`QUICK_EXIT_MS`] of its start without
/// answering, up to [`RESTART_DELAY_MS_MAX`].
pub const RESTART_DELAY_MS_INITIAL: u64 = 100;
/// Longest delay between restarts of a process that keeps dying.
pub const RESTART_DELAY_MS_MAX: u64 = 10_000;
/// A process that dies sooner than this after its start, without having
/// answered an order, doubles the restart delay.
pub const QUICK_EXIT_MS: u64 = 1000;
/// At most one warning about bad answer lines per process per this.
pub const BAD_LINE_WARN_INTERVAL_MS: u64 = 1000;
/// The reason of a nack that gives none.
pub const NACK_REASON_DEFAULT: &str = "the handler nacked the order";
/// Bytes read from a process's stdout at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// How often a supervisor with nothing to time looks at its process anyway.
const SUPERVISE_INTERVAL_MS: u64 = 1000;
/// How long a process that closed its stdout has to exit by itself before
/// it is signalled (it normally exits at the same time).
const EXIT_WAIT_MS: u64 = 200;
/// Polling interval while waiting for a process to exit.
const EXIT_POLL_MS: u64 = 10;

const _: () = assert!(SERVE_PROCESSES_DEFAULT >= 1 && SERVE_PROCESSES_DEFAULT <= SERVE_PROCESSES_MAX);
const _: () = assert!(RESTART_DELAY_MS_INITIAL > 0 && RESTART_DELAY_MS_INITIAL <= RESTART_DELAY_MS_MAX);
const _: () = assert!(READ_CHUNK_BYTES <= SERVE_LINE_BYTES_MAX);

/// The serve handler: `processes` copies of `sh -c <command>` fed orders
/// as JSON lines. `timeout_ms` is the time limit of one order (`None`: no
/// limit); `worker` is passed to the processes as `ORDERLY_WORKER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serve {
    pub command: String,
    pub processes: u32,
    pub timeout_ms: Option<u64>,
    pub worker: String,
}

impl Handler for Serve {
    /// Serve runs orders through its runner ([`Handler::start_runner`]),
    /// which the worker's io loop starts; there is no one-off call.
    fn handle(&self, _order: &Dispatch) -> Result<(), Failure> {
        Err(Failure::cannot_run("a serve handler runs under the worker's io loop (Handler::start_runner) only"))
    }

    fn describe(&self) -> String {
        let limit = match self.timeout_ms {
            Some(ms) => format!("time limit {ms} ms per order"),
            None => "no time limit".to_owned(),
        };
        let processes = match self.processes {
            1 => "1 process".to_owned(),
            n => format!("{n} processes"),
        };
        format!("serve {:?} ({processes}, {limit})", self.command)
    }

    fn start_runner(&self, completion: Completion) -> Option<io::Result<Box<dyn Runner>>> {
        Some(ServeRunner::start(self.clone(), completion).map(|runner| Box::new(runner) as Box<dyn Runner>))
    }
}

// ---------------------------------------------------------------- lines

/// A handler's answer: which order, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub order: OrderKey,
    pub outcome: Result<(), Failure>,
}

/// Why an answer line was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadLine {
    #[error("not a JSON answer object: {0}")]
    Invalid(String),
    #[error("\"result\" is {0:?}; expected \"ack\" or \"nack\"")]
    UnknownResult(String),
}

/// The fields of an answer line; others are ignored.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    producer: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    result: Cow<'a, str>,
    #[serde(default)]
    retry: Option<bool>,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    reason: Option<String>,
}

/// Parses one answer line (without its `\n`; a trailing `\r` is allowed).
pub fn parse_answer(line: &[u8]) -> Result<Answer, BadLine> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parsed: Line<'_> = serde_json::from_slice(line).map_err(|e| BadLine::Invalid(e.to_string()))?;
    let order = OrderKey::new(parsed.producer.into_owned(), parsed.id.into_owned());
    let outcome = match &*parsed.result {
        "ack" => Ok(()),
        "nack" => {
            // The core cuts the reason to REASON_BYTES_MAX.
            let reason = parsed.reason.unwrap_or_else(|| NACK_REASON_DEFAULT.to_owned());
            Err(match parsed.retry {
                Some(false) => Failure::permanent(reason),
                Some(true) | None => Failure::retry_later(reason, parsed.delay_ms.map(|ms| ms.min(RETRY_DELAY_MS_MAX))),
            })
        }
        other => return Err(BadLine::UnknownResult(other.to_owned())),
    };
    Ok(Answer { order, outcome })
}

/// The complete lines at the start of `buf` (without their `\n`), and how
/// many bytes they span. Fails if a line, complete or not, is longer than
/// `max` bytes.
pub fn split_lines(buf: &[u8], max: usize) -> Result<(Vec<&[u8]>, usize), usize> {
    let mut lines = Vec::new();
    let mut start = 0;
    while let Some(len) = buf[start..].iter().position(|&b| b == b'\n') {
        if len > max {
            return Err(len);
        }
        lines.push(&buf[start..start + len]);
        start += len + 1;
    }
    match buf.len() - start {
        rest if rest > max => Err(rest),
        _ => Ok((lines, start)),
    }
}

/// Appends the order's line: its JSON object with every raw CR and LF made
/// a space, then `\n`. Inside valid JSON a raw CR or LF can only be
/// whitespace between tokens (strings escape them), so the meaning is kept
/// and the line stays one line.
pub fn write_order_line(out: &mut Vec<u8>, order: &Dispatch) {
    let start = out.len();
    write_order_json(out, &order.order, order.attempt, order.redelivered, &order.items);
    for byte in &mut out[start..] {
        if matches!(*byte, b'\n' | b'\r') {
            *byte = b' ';
        }
    }
    out.push(b'\n');
}

// ---------------------------------------------------------------- runner

/// An order a process holds.
struct Held {
    attempt: u32,
    deadline: Option<Instant>,
}

/// What one process slot shares between the loop thread and its threads.
struct Slot {
    index: u32,
    state: Mutex<SlotState>,
    /// Wakes the writer: lines to write, a new generation, or closing.
    write_cv: Condvar,
    /// Wakes the supervisor: the process ended, a first order, stopping.
    supervise_cv: Condvar,
}

#[derive(Default)]
struct SlotState {
    held: HashMap<OrderKey, Held>,
    /// Lines for the process of `generation`, not yet written.
    pending: Vec<u8>,
    /// The running process's stdin (non-blocking), while it runs: the loop
    /// thread writes to it directly ([`Runner::flush`]); the writer thread
    /// only finishes what a full pipe refused.
    stdin: Option<Arc<ChildStdin>>,
    /// The writer thread is writing (the loop must not interleave).
    writing: bool,
    /// The stdout of the process just started, for the loop thread to take
    /// ([`Runner::poll_fds`]), with its generation.
    new_stdout: Option<(u64, ChildStdout)>,
    /// Numbers the processes of this slot: the one running, or the next to
    /// run. Raised when a process is given up, so its threads stand down.
    generation: u64,
    /// The reader of `generation` saw the process go: why.
    ended: Option<String>,
    /// The process of `generation` answered an order.
    answered: bool,
    /// The worker is exiting: close stdin and stop.
    stopping: bool,
    last_warn: Option<Instant>,
    warnings_suppressed: u64,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A poisoned lock means a thread of ours panicked mid-update; the
        // state is maps and buffers that stay consistent, so go on.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The runner the io loop hands orders to.
struct ServeRunner {
    slots: Vec<Arc<Slot>>,
    supervisors: Vec<JoinHandle<()>>,
    timeout: Option<Duration>,
    /// The loop thread's render buffer, reused.
    scratch: Vec<u8>,
    /// Per slot, the reader of its running process's stdout (loop thread).
    readers: Vec<Option<Reader>>,
    /// Which reader each descriptor of the last `poll_fds` belongs to.
    polled: Vec<usize>,
    /// The loop thread's read buffer, reused.
    chunk: Vec<u8>,
}

/// The loop thread's end of one process's stdout (non-blocking).
struct Reader {
    generation: u64,
    stdout: ChildStdout,
    /// Bytes of an unfinished line.
    buf: Vec<u8>,
}

impl ServeRunner {
    fn start(serve: Serve, completion: Completion) -> io::Result<ServeRunner> {
        let serve = Arc::new(serve);
        let mut slots = Vec::new();
        let mut supervisors = Vec::new();
        for index in 0..serve.processes.clamp(1, SERVE_PROCESSES_MAX) {
            let slot = Arc::new(Slot {
                index,
                state: Mutex::new(SlotState::default()),
                write_cv: Condvar::new(),
                supervise_cv: Condvar::new(),
            });
            let supervisor = Supervisor {
                serve: Arc::clone(&serve),
                slot: Arc::clone(&slot),
                completion: completion.clone(),
                process: None,
                restart_delay_ms: RESTART_DELAY_MS_INITIAL,
                restart_at: Some(Instant::now()),
                waiting_for_order: false,
            };
            let thread = std::thread::Builder::new().name(format!("serve-{index}")).spawn(move || supervisor.run())?;
            slots.push(slot);
            supervisors.push(thread);
        }
        info!(command = %Escaped(&serve.command), processes = slots.len(), "serve: starting handler processes");
        let readers = slots.iter().map(|_| None).collect();
        Ok(ServeRunner {
            slots,
            supervisors,
            timeout: serve.timeout_ms.map(Duration::from_millis),
            scratch: Vec::new(),
            readers,
            polled: Vec::new(),
            chunk: vec![0u8; READ_CHUNK_BYTES],
        })
    }
}

impl Runner for ServeRunner {
    fn submit(&mut self, order: Dispatch) {
        self.scratch.clear();
        write_order_line(&mut self.scratch, &order);
        // The slot holding the fewest orders; ties: the lowest number.
        let slot = self.slots.iter().min_by_key(|slot| slot.lock().held.len()).expect("at least one slot");
        let deadline = self.timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        let mut state = slot.lock();
        let first = state.held.is_empty();
        state.held.insert(order.order, Held { attempt: order.attempt, deadline });
        state.pending.extend_from_slice(&self.scratch);
        drop(state);
        // The supervisor times the earliest deadline; orders after the
        // first come later. It also restarts a broken process on an order.
        if first {
            slot.supervise_cv.notify_one();
        }
    }

    /// Writes each slot's queued lines with one non-blocking `write` from
    /// the loop thread: no thread hop between an order and its process.
    /// What a full pipe refuses is left to the slot's writer thread.
    fn flush(&mut self) {
        for slot in &self.slots {
            let mut state = slot.lock();
            if state.pending.is_empty() || state.writing {
                continue; // a busy writer takes the rest when it is done
            }
            let Some(stdin) = state.stdin.clone() else { continue }; // written when it starts
            let written = match (&*stdin).write(&state.pending) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => 0,
                // The process is gone: its reader reports that.
                Err(_) => continue,
            };
            state.pending.drain(..written);
            if !state.pending.is_empty() {
                drop(state);
                // All: the writer of a process just given up may still be
                // waiting beside the new one, and must not take the wake-up.
                slot.write_cv.notify_all();
            }
        }
    }

    fn poll_fds(&mut self, fds: &mut Vec<std::os::fd::RawFd>) {
        use std::os::fd::AsRawFd;
        self.polled.clear();
        for (index, slot) in self.slots.iter().enumerate() {
            let mut state = slot.lock();
            if let Some((generation, stdout)) = state.new_stdout.take() {
                self.readers[index] = Some(Reader { generation, stdout, buf: Vec::new() });
            }
            // A process given up: its stdout is no longer read.
            if self.readers[index].as_ref().is_some_and(|reader| reader.generation != state.generation) {
                self.readers[index] = None;
            }
            drop(state);
            if let Some(reader) = &self.readers[index] {
                fds.push(reader.stdout.as_raw_fd());
                self.polled.push(index);
            }
        }
    }

    fn on_readable(&mut self, ready: &[bool]) -> Vec<Done> {
        let mut dones = Vec::new();
        for (&index, _) in self.polled.iter().zip(ready).filter(|(_, ready)| **ready) {
            let slot = &self.slots[index];
            let Some(reader) = &mut self.readers[index] else { continue };
            if let Err(why) = read_answers(slot, reader, &mut self.chunk, &mut dones) {
                let generation = reader.generation;
                self.readers[index] = None;
                let mut state = slot.lock();
                if state.generation == generation && state.ended.is_none() {
                    state.ended = Some(why);
                    drop(state);
                    slot.supervise_cv.notify_all();
                }
            }
        }
        dones
    }

    fn stop(self: Box<Self>) {
        for slot in &self.slots {
            slot.lock().stopping = true;
            slot.write_cv.notify_all();
            slot.supervise_cv.notify_all();
        }
        for supervisor in self.supervisors {
            let _ = supervisor.join(); // a panic was logged by the panic hook
        }
    }
}

/// One running process of a slot.
struct Process {
    child: Child,
    group: i32,
    started: Instant,
}

/// The thread that starts, times, reaps and restarts one slot's process.
struct Supervisor {
    serve: Arc<Serve>,
    slot: Arc<Slot>,
    completion: Completion,
    process: Option<Process>,
    restart_delay_ms: u64,
    /// When to start the next process (none running).
    restart_at: Option<Instant>,
    /// The process cannot run: start again only for an order (the core's
    /// probe), not on a timer.
    waiting_for_order: bool,
}

impl Supervisor {
    fn run(mut self) {
        let slot = Arc::clone(&self.slot);
        loop {
            let mut state = slot.lock();
            if state.stopping {
                drop(state);
                self.shut_down();
                return;
            }
            let now = Instant::now();
            let overdue = |held: &Held| held.deadline.is_some_and(|deadline| deadline <= now);
            if state.held.values().any(overdue) {
                self.time_out(state, now);
                continue;
            }
            if self.process.is_some() {
                if let Some(why) = state.ended.take() {
                    drop(state);
                    self.process_ended(&why);
                    continue;
                }
            } else if self.waiting_for_order && !state.held.is_empty() {
                self.waiting_for_order = false;
                self.restart_at = Some(now);
            }
            if self.restart_at.is_some_and(|at| at <= now) {
                drop(state);
                self.start_process();
                continue;
            }
            let wake = [
                Some(now + Duration::from_millis(SUPERVISE_INTERVAL_MS)),
                self.restart_at,
                state.held.values().filter_map(|held| held.deadline).min(),
            ];
            let wake = wake.into_iter().flatten().min().expect("one is always set");
            let wait = wake.saturating_duration_since(now);
            drop(slot.supervise_cv.wait_timeout(state, wait));
        }
    }

    /// Starts `sh -c CMD` for the slot's current generation, with its
    /// writer and reader.
    fn start_process(&mut self) {
        self.restart_at = None;
        let index = self.slot.index;
        let spawned = Command::new("sh")
            .arg("-c")
            .arg(&self.serve.command)
            .env("ORDERLY_SERVE", "1")
            .env("ORDERLY_WORKER", &self.serve.worker)
            .env("ORDERLY_SERVE_PROCESS", index.to_string())
            // Its own group: a time limit kills whatever the command started.
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let reason = format!("cannot start serve process {index} (sh -c {:?}): {e}", self.serve.command);
                self.cannot_run(&reason);
                return;
            }
        };
        let group = i32::try_from(child.id()).expect("pids fit in pid_t");
        let (stdin, stdout) = (child.stdin.take().expect("piped"), child.stdout.take().expect("piped"));
        let stdin = Arc::new(stdin);
        if let Err(e) = set_nonblocking(&*stdin) {
            warn!(process = index, error = %e, "serve: cannot make a handler's stdin non-blocking; restarting it");
        }
        let generation = {
            let mut state = self.slot.lock();
            state.ended = None;
            state.answered = false;
            state.stdin = Some(Arc::clone(&stdin));
            state.generation
        };
        // Lines queued while no process ran.
        self.slot.write_cv.notify_all();
        let started = self.spawn_io(generation, stdin, stdout);
        self.process = Some(Process { child, group, started: Instant::now() });
        if let Err(e) = started {
            warn!(process = index, error = %e, "serve: cannot start a thread for a handler process; restarting it");
            self.slot.lock().ended = Some(format!("could not be served (no thread: {e})"));
        }
    }

    fn spawn_io(&self, generation: u64, stdin: Arc<ChildStdin>, stdout: ChildStdout) -> io::Result<()> {
        let index = self.slot.index;
        let slot = Arc::clone(&self.slot);
        std::thread::Builder::new()
            .name(format!("serve-{index}-write"))
            .spawn(move || write_lines(&slot, generation, stdin))?;
        set_nonblocking(&stdout)?;
        self.slot.lock().new_stdout = Some((generation, stdout));
        Ok(())
    }

    /// Fails overdue orders; a process holding one is presumed hung and
    /// restarted, and its other orders are failed too (retry).
    fn time_out(&mut self, mut state: MutexGuard<'_, SlotState>, now: Instant) {
        let overdue = |held: &Held| held.deadline.is_some_and(|deadline| deadline <= now);
        let limit_ms = self.serve.timeout_ms.unwrap_or_default();
        if self.process.is_none() {
            // Not written to any process yet: nothing to kill.
            let expired: Vec<OrderKey> =
                state.held.iter().filter(|(_, held)| overdue(held)).map(|(key, _)| key.clone()).collect();
            let dones: Vec<Done> = expired
                .into_iter()
                .filter_map(|key| state.held.remove_entry(&key))
                .map(|(order, held)| Done {
                    order,
                    attempt: held.attempt,
                    outcome: Err(Failure::retry(format!(
                        "handler timed out after {limit_ms} ms (its process was not running)"
                    ))),
                })
                .collect();
            drop(state);
            self.completion.finish_all(dones);
            return;
        }
        let index = self.slot.index;
        let answered = state.answered;
        let held = give_up(&mut state);
        drop(state);
        self.slot.write_cv.notify_all();
        let dones = held.into_iter().map(|(order, held)| {
            let reason = if overdue(&held) {
                format!("handler timed out after {limit_ms} ms (process restarted)")
            } else {
                format!("serve process {index} was restarted: another order it held timed out")
            };
            Done { order, attempt: held.attempt, outcome: Err(Failure::retry(reason)) }
        });
        self.completion.finish_all(dones);
        warn!(process = index, limit_ms, "serve: an order ran past the time limit; restarting its process");
        let status = self.reap(true, answered);
        self.schedule_restart(&status);
    }

    /// The reader saw the process go: reap it, fail its orders, restart.
    fn process_ended(&mut self, why: &str) {
        let index = self.slot.index;
        let answered = self.slot.lock().answered;
        let status = self.reap(false, answered);
        let held = give_up(&mut self.slot.lock());
        self.slot.write_cv.notify_all();
        let code = status.as_ref().and_then(|(status, _, _)| status.code());
        if let (false, Some(code @ (EXIT_NOT_EXECUTABLE | EXIT_NOT_FOUND))) = (answered, code) {
            let what = if code == EXIT_NOT_FOUND { "not found" } else { "not executable" };
            let reason = format!(
                "serve process {index} exited with code {code} (command {what}) before answering: sh -c {:?}",
                self.serve.command
            );
            self.fail_held(held, &Failure::cannot_run(reason.clone()));
            self.cannot_run_logged(&reason);
            return;
        }
        let status_text = describe_status(status.as_ref());
        let reason = format!("serve process {index} {why} ({status_text}) while holding the order; restarted");
        if !held.is_empty() || !self.slot.lock().stopping {
            warn!(process = index, status = %status_text, orders = held.len(), "serve: handler process {why}; restarting it");
        }
        self.fail_held(held, &Failure::retry(reason));
        self.schedule_restart(&status);
    }

    /// The process cannot run: fail what the slot holds with `cannot_run`
    /// (the core turns broken and probes later) and wait for an order.
    fn cannot_run(&mut self, reason: &str) {
        let held = give_up(&mut self.slot.lock());
        self.slot.write_cv.notify_all();
        self.fail_held(held, &Failure::cannot_run(reason));
        self.cannot_run_logged(reason);
    }

    fn cannot_run_logged(&mut self, reason: &str) {
        warn!(process = self.slot.index, reason = %Escaped(reason), "serve: the handler cannot run; trying again with the next order");
        self.waiting_for_order = true;
        self.restart_at = None;
    }

    fn fail_held(&self, held: HashMap<OrderKey, Held>, failure: &Failure) {
        let dones =
            held.into_iter().map(|(order, held)| Done { order, attempt: held.attempt, outcome: Err(failure.clone()) });
        self.completion.finish_all(dones);
    }

    /// Backoff: 100 ms, doubling while the process keeps dying within
    /// [`QUICK_EXIT_MS`] of its start without answering.
    fn schedule_restart(&mut self, lived: &Option<(ExitStatus, Duration, bool)>) {
        let quick = lived
            .as_ref()
            .is_some_and(|(_, lived, answered)| !answered && *lived < Duration::from_millis(QUICK_EXIT_MS));
        if !quick {
            self.restart_delay_ms = RESTART_DELAY_MS_INITIAL;
        }
        self.restart_at = Some(Instant::now() + Duration::from_millis(self.restart_delay_ms));
        self.restart_delay_ms = (self.restart_delay_ms * 2).min(RESTART_DELAY_MS_MAX);
    }

    /// Waits for the process to exit, signalling its group if it does not
    /// (`kill`: at once), and returns its status, how long it lived, and
    /// whether it answered an order.
    fn reap(&mut self, kill: bool, answered: bool) -> Option<(ExitStatus, Duration, bool)> {
        let mut process = self.process.take()?;
        let first_wait = if kill { Duration::ZERO } else { Duration::from_millis(EXIT_WAIT_MS) };
        let status = wait_for_exit(&mut process, first_wait);
        Some((status?, process.started.elapsed(), answered))
    }

    /// Closes stdin (the writer does, after the queued lines), waits
    /// [`KILL_GRACE_MS`] for an exit, then SIGTERM, then SIGKILL.
    fn shut_down(&mut self) {
        let Some(mut process) = self.process.take() else { return };
        let _ = wait_for_exit(&mut process, Duration::from_millis(KILL_GRACE_MS));
    }
}

/// The slot gives up its process's orders: the next process starts clean,
/// and the old process's threads stand down (new generation; the caller
/// wakes the old writer with [`Slot::write_cv`] so it sees that).
fn give_up(state: &mut SlotState) -> HashMap<OrderKey, Held> {
    state.generation += 1;
    state.pending.clear();
    state.stdin = None;
    state.new_stdout = None;
    state.ended = None;
    state.answered = false;
    std::mem::take(&mut state.held)
}

/// Waits `grace` for the process to exit, then SIGTERM to its group,
/// [`KILL_GRACE_MS`], SIGKILL. None if its status cannot be had.
fn wait_for_exit(process: &mut Process, grace: Duration) -> Option<ExitStatus> {
    let signals = [None, Some(libc::SIGTERM), Some(libc::SIGKILL)];
    let graces = [grace, Duration::from_millis(KILL_GRACE_MS), Duration::from_millis(KILL_GRACE_MS)];
    for (signal, grace) in signals.into_iter().zip(graces) {
        if let Some(signal) = signal {
            signal_group(process.group, signal);
        }
        let deadline = Instant::now() + grace;
        loop {
            match process.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(EXIT_POLL_MS)),
                Ok(None) => break,
                Err(_) => return None,
            }
        }
    }
    // Not even SIGKILL: leave it (a process in uninterruptible sleep).
    None
}

fn describe_status(status: Option<&(ExitStatus, Duration, bool)>) -> String {
    match status.map(|(status, _, _)| status) {
        Some(status) => match status.code() {
            Some(code) => format!("exit code {code}"),
            None => format!("{status}"),
        },
        None => "exit status unknown".to_owned(),
    }
}

/// The writer thread of one process: writes what the loop's non-blocking
/// write left (a full pipe), waiting for the pipe with `poll`; closes stdin
/// when the worker stops.
fn write_lines(slot: &Slot, generation: u64, stdin: Arc<ChildStdin>) {
    let mut batch = Vec::new();
    loop {
        {
            let mut state = slot.lock();
            state.writing = false;
            loop {
                if state.generation != generation {
                    return;
                }
                if !state.pending.is_empty() {
                    std::mem::swap(&mut state.pending, &mut batch);
                    state.writing = true;
                    break;
                }
                if state.stopping {
                    // Dropping both handles closes stdin: EOF tells the
                    // process to exit.
                    state.stdin = None;
                    return;
                }
                state = slot.write_cv.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        }
        // A process gone closes the pipe (EPIPE): its reader reports that.
        if write_all_nonblocking(&stdin, &batch).is_err() {
            slot.lock().writing = false;
            return;
        }
        batch.clear();
    }
}

/// How long the writer waits for a full pipe before looking at its slot
/// again (a process given up meanwhile).
const WRITE_POLL_MS: i32 = 100;

/// Writes all of `bytes` to a non-blocking pipe, waiting with `poll` while
/// it is full.
fn write_all_nonblocking(stdin: &ChildStdin, mut bytes: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    while !bytes.is_empty() {
        match (&*stdin).write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut fd = libc::pollfd { fd: stdin.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
                // SAFETY: one valid pollfd, for the duration of the call.
                let _ = unsafe { libc::poll(&mut fd, 1, WRITE_POLL_MS) };
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sets O_NONBLOCK on our end of a pipe (the child's end is another open
/// file description and stays blocking).
fn set_nonblocking(pipe: &impl std::os::fd::AsRawFd) -> io::Result<()> {
    let fd = pipe.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Most bytes read from one process per poll, so one chatty handler does
/// not starve the loop.
const READ_BYTES_PER_POLL_MAX: usize = 4 * READ_CHUNK_BYTES;

/// Reads what one process wrote (non-blocking, on the loop thread) and
/// answers the orders its lines name, adding them to `dones`. `Err` says
/// why the process is finished: its stdout closed, or a line past
/// [`SERVE_LINE_BYTES_MAX`].
fn read_answers(slot: &Slot, reader: &mut Reader, chunk: &mut [u8], dones: &mut Vec<Done>) -> Result<(), String> {
    let mut read = 0;
    while read < READ_BYTES_PER_POLL_MAX {
        let n = match reader.stdout.read(chunk) {
            Ok(0) => return Err("closed its stdout".to_owned()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(format!("could not be read ({e})")),
        };
        read += n;
        reader.buf.extend_from_slice(&chunk[..n]);
        let (lines, consumed) = split_lines(&reader.buf, SERVE_LINE_BYTES_MAX)
            .map_err(|_| format!("wrote a line longer than {SERVE_LINE_BYTES_MAX} bytes (a protocol error)"))?;
        let answers: Vec<(usize, Result<Answer, BadLine>)> = lines
            .iter()
            .enumerate()
            .filter(|(_, line)| !line.is_empty())
            .map(|(n, line)| (n, parse_answer(line)))
            .collect();
        let mut state = slot.lock();
        if state.generation != reader.generation {
            return Ok(()); // given up: its orders were failed already
        }
        for (n, answer) in answers {
            match answer {
                Ok(answer) => match state.held.remove(&answer.order) {
                    Some(held) => {
                        state.answered = true;
                        dones.push(Done { order: answer.order, attempt: held.attempt, outcome: answer.outcome });
                    }
                    None => {
                        let text = format!("names order {} which this process does not hold", answer.order);
                        bad_line(slot.index, &mut state, lines[n], &text);
                    }
                },
                Err(error) => bad_line(slot.index, &mut state, lines[n], &error.to_string()),
            }
        }
        drop(state);
        reader.buf.drain(..consumed);
    }
    Ok(())
}

/// Bytes of a bad line quoted in its warning.
const BAD_LINE_QUOTE_BYTES_MAX: usize = 200;

/// Logs an ignored answer line, at most once per
/// [`BAD_LINE_WARN_INTERVAL_MS`] per process.
fn bad_line(index: u32, state: &mut SlotState, line: &[u8], error: &str) {
    let now = Instant::now();
    let interval = Duration::from_millis(BAD_LINE_WARN_INTERVAL_MS);
    if state.last_warn.is_some_and(|last| now < last + interval) {
        state.warnings_suppressed += 1;
        return;
    }
    state.last_warn = Some(now);
    let suppressed = std::mem::take(&mut state.warnings_suppressed);
    let quoted = String::from_utf8_lossy(&line[..line.len().min(BAD_LINE_QUOTE_BYTES_MAX)]);
    warn!(process = index, line = %Escaped(&quoted), error = %Escaped(error), suppressed,
        "serve: ignored a line from the handler (answers are JSON lines naming an order it holds)");
}

#[cfg(test)]
mod tests;
