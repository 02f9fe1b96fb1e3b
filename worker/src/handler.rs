//! What a worker does with one order: the [`Handler`] trait and its
//! implementations [`Exec`], [`Sink`], [`Noop`] and [`Serve`](crate::serve::Serve).
//!
//! Every handler process (exec, serve) and the sink see the order as one
//! JSON object (`orderly_common::order_json`):
//!
//! ```json
//! {"producer": "p1", "id": "order-7", "attempt": 1, "redelivered": false, "items": [ ... ]}
//! ```
//!
//! Each element of `items` that is JSON text is the producer's text for
//! that item, embedded byte for byte (whitespace included), so a handler
//! sees exactly what was sent. An item that is not JSON (any bytes) is
//! written as `{"base64":"…"}` in its place and the object ends with
//! `"base64_items":[i,…]` listing such positions; the field is absent when
//! every item is JSON.
//!
//! Handlers run on pool threads, many at once: they must be `Send + Sync`.
//! A closure is a handler:
//!
//! ```
//! use orderly_worker::core::Failure;
//! use orderly_worker::handler::Handler;
//! use orderly_common::protocol::Dispatch;
//!
//! let handler = |order: &Dispatch| -> Result<(), Failure> {
//!     match order.items.len() {
//!         0 => Err(Failure::permanent("an order without items")),
//!         _ => Ok(()),
//!     }
//! };
//! let boxed: std::sync::Arc<dyn Handler> = std::sync::Arc::new(handler);
//! # let _ = boxed;
//! ```
//!
//! An exec handler's exit code says what happened (see [`exec_outcome`]):
//! 0 acknowledges; [`EXIT_RETRY_LATER`] (75, `EX_TEMPFAIL`) asks for a
//! retry later, after `delay_ms=N` if that is the last non-empty line of
//! its stdout; [`EXIT_NOT_EXECUTABLE`] and [`EXIT_NOT_FOUND`] (126, 127:
//! the shell could not run the command) and spawn errors mean the handler
//! cannot run at all ([`Failure::cannot_run`]); anything else is an
//! ordinary retryable failure. Exec and serve handlers have a time limit:
//! sink, noop and closures run in-process and cannot be interrupted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use orderly_common::ids::file_safe;
use orderly_common::limits::{FANOUT_FRAME_BYTES_MAX, PEER_ID_BYTES_MAX, RETRY_DELAY_MS_MAX};
use orderly_common::protocol::Dispatch;
use orderly_common::OrderKey;
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

use crate::core::Failure;

/// Bytes of a failed command's stderr kept for the Nack reason.
pub const STDERR_TAIL_BYTES_MAX: usize = 200;
/// Bytes of a command's stdout kept: enough for its last line
/// (`delay_ms=N`), and a chatty handler cannot use memory.
pub const STDOUT_TAIL_BYTES_MAX: usize = 256;
/// Default time limit of one exec handler run (30 minutes).
pub const HANDLER_TIMEOUT_MS_DEFAULT: u64 = 30 * 60 * 1000;
/// After SIGTERM, how long a timed-out handler's process group has to
/// exit before SIGKILL; also how long a finished command's output pipes
/// may stay open (held by processes it left behind) before we stop reading.
pub const KILL_GRACE_MS: u64 = 2000;
/// Exit code by which a handler asks to be retried later (`EX_TEMPFAIL`
/// in sysexits.h).
pub const EXIT_RETRY_LATER: i32 = 75;
/// The shell's exit code for a command found but not executable.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// The shell's exit code for a command not found.
pub const EXIT_NOT_FOUND: i32 = 127;
/// Start of the last stdout line by which a handler that exits
/// [`EXIT_RETRY_LATER`] gives its delay: `delay_ms=30000`.
pub const DELAY_LINE_PREFIX: &str = "delay_ms=";
/// Longest file name the sink writes (Linux `NAME_MAX`).
pub const FILE_NAME_BYTES_MAX: usize = 255;
/// Extension of the sink's order files.
pub const SINK_FILE_EXTENSION: &str = ".json";
/// Marks a hashed sink file name; `file_safe` escapes `~`, so a plain
/// name never holds one and the two kinds cannot collide.
pub const HASHED_NAME_MARK: char = '~';
/// Hex digits of the SHA-256 in a hashed sink file name.
const SHA256_HEX_LEN: usize = 64;
/// Bytes of the escaped id kept in front of a hashed sink file name.
pub const HASHED_NAME_PREFIX_BYTES_MAX: usize =
    FILE_NAME_BYTES_MAX - SINK_FILE_EXTENSION.len() - HASHED_NAME_MARK.len_utf8() - SHA256_HEX_LEN;
/// Name of the sink's delivery log, directly in the sink directory.
pub const DELIVERIES_LOG: &str = "deliveries.log";

// Frames are far below 4 GiB, so an item length always fits the u32 that
// `items_sha256` frames it with.
const _: () = assert!(FANOUT_FRAME_BYTES_MAX <= u32::MAX as usize);
// A hashed name keeps a readable prefix; the producer directory's name
// (`file_safe` of a valid producer id, which needs no escape) always fits.
const _: () = assert!(HASHED_NAME_PREFIX_BYTES_MAX >= 128);
const _: () = assert!(PEER_ID_BYTES_MAX <= FILE_NAME_BYTES_MAX);
// The delay line fits in the kept stdout, with room for a trailing newline.
const _: () = assert!(DELAY_LINE_PREFIX.len() + 20 + 2 <= STDOUT_TAIL_BYTES_MAX);
const _: () = assert!(KILL_GRACE_MS > 0);

/// How a worker processes an order.
///
/// The io loop calls [`Handler::handle`] on one of `concurrency` pool
/// threads, so a slow handler holds only its own order; a panic is caught
/// and nacks the order (retry).
pub trait Handler: Send + Sync {
    /// Processes one order. `Ok` acknowledges it; a [`Failure`] nacks it
    /// (retry, retry later, permanent) or says the handler cannot run.
    fn handle(&self, order: &Dispatch) -> Result<(), Failure>;

    /// Checks what can be checked before the first order, so a
    /// misconfigured worker fails at startup instead of failing every order.
    fn prepare(&self) -> io::Result<()> {
        Ok(())
    }

    /// Short description for logs.
    fn describe(&self) -> String {
        "a custom handler".to_owned()
    }

    /// True for a handler that returns at once and never blocks (noop): the
    /// loop then calls it on its own thread, which saves two thread hops
    /// and a wake-up per order. A handler that may block must say false, or
    /// it stalls heartbeats and intake.
    fn inline(&self) -> bool {
        false
    }

    /// For a handler that runs orders asynchronously on workers of its own
    /// (serve: handler processes fed over pipes): starts them and returns
    /// the [`Runner`] the loop then hands every order to, in place of the
    /// pool threads and [`Handler::handle`]. `None` (the default): the pool.
    fn start_runner(&self, _completion: Completion) -> Option<io::Result<Box<dyn Runner>>> {
        None
    }
}

/// Any `Fn(&Dispatch) -> Result<(), Failure>` is a handler.
impl<F> Handler for F
where
    F: Fn(&Dispatch) -> Result<(), Failure> + Send + Sync,
{
    fn handle(&self, order: &Dispatch) -> Result<(), Failure> {
        self(order)
    }
}

/// The end of one order, reported to the io loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub order: OrderKey,
    pub attempt: u32,
    pub outcome: Result<(), Failure>,
}

/// Where the ends of orders go: the io loop's results channel, plus a
/// wake-up of its poll. Cheap to clone; any thread may report.
#[derive(Debug, Clone)]
pub struct Completion {
    results: Sender<Done>,
    wake: Arc<Wake>,
}

/// The loop's wake-up: one byte on a socket pair, written only when no
/// wake-up is pending, so a burst of results costs one syscall.
#[derive(Debug)]
struct Wake {
    write: UnixStream,
    pending: AtomicBool,
}

/// The loop's end of a [`Completion`].
#[derive(Debug)]
pub struct Completions {
    results: Receiver<Done>,
    wake: Arc<Wake>,
    wake_read: UnixStream,
}

/// A channel of [`Done`]s with a wake-up socket the loop can poll.
pub fn completion_channel() -> io::Result<(Completion, Completions)> {
    let (wake_read, write) = UnixStream::pair()?;
    for end in [&wake_read, &write] {
        end.set_nonblocking(true)?;
    }
    let wake = Arc::new(Wake { write, pending: AtomicBool::new(false) });
    let (results, receiver) = crossbeam_channel::unbounded();
    Ok((Completion { results, wake: Arc::clone(&wake) }, Completions { results: receiver, wake, wake_read }))
}

impl Completion {
    /// Reports the end of one order.
    pub fn finish(&self, done: Done) {
        self.finish_all(std::iter::once(done));
    }

    /// Reports the ends of several orders with one wake-up.
    pub fn finish_all(&self, dones: impl IntoIterator<Item = Done>) {
        let mut any = false;
        for done in dones {
            if self.results.send(done).is_err() {
                return; // the loop is gone
            }
            any = true;
        }
        // Results are sent before the flag is read, and the loop clears the
        // flag before taking results (see `Completions::take`), so a result
        // is either taken or followed by a byte.
        if any && !self.wake.pending.swap(true, Ordering::SeqCst) {
            // WouldBlock means wake-ups are already pending: nothing lost.
            let _ = (&self.wake.write).write(&[1]);
        }
    }
}

impl Completions {
    /// The socket to poll for readability.
    pub fn wake_fd(&self) -> std::os::fd::RawFd {
        self.wake_read.as_raw_fd()
    }

    /// Takes every result reported so far.
    ///
    /// Order matters: drain the socket, then clear the flag, then take. A
    /// reporter that sets the flag after it was cleared writes a byte after
    /// the drain, so a set flag always means a byte waits in the socket
    /// (or its result was taken here): no result waits without a wake-up.
    pub fn take(&self) -> Vec<Done> {
        let mut buf = [0u8; 256];
        while matches!((&self.wake_read).read(&mut buf), Ok(n) if n > 0) {}
        self.wake.pending.store(false, Ordering::SeqCst);
        self.results.try_iter().collect()
    }
}

/// Runs orders for a handler that has workers of its own (see
/// [`Handler::start_runner`]). Called from the loop thread only.
pub trait Runner: Send {
    /// Starts an order; its end is reported through the [`Completion`].
    /// Must not block for long: the loop thread calls it.
    fn submit(&mut self, order: Dispatch);

    /// Called after a burst of [`Runner::submit`]s: a chance to pass them
    /// on in one go (serve writes each process's lines with one `write`).
    fn flush(&mut self) {}

    /// File descriptors the loop should poll for readability on the
    /// runner's behalf (serve: its processes' stdouts), appended to `fds`.
    fn poll_fds(&mut self, _fds: &mut Vec<std::os::fd::RawFd>) {}

    /// After each poll: `ready[i]` says whether the i-th descriptor of the
    /// last [`Runner::poll_fds`] is readable. Returns the orders finished.
    /// Must not block: the loop thread calls it.
    fn on_readable(&mut self, _ready: &[bool]) -> Vec<Done> {
        Vec::new()
    }

    /// Stops the runner's workers, in bounded time (the worker is exiting;
    /// orders not reported yet are left to the broker to redeliver).
    fn stop(self: Box<Self>);
}

/// The time limit of exec and serve handlers: `None` is no limit.
pub fn timeout_from_ms(timeout_ms: u64) -> Option<u64> {
    (timeout_ms > 0).then_some(timeout_ms)
}

/// Run `sh -c <command>` with the order's JSON on stdin, in a process group
/// of its own; exit 0 acks (see the module docs for the others). Past
/// `timeout_ms` (`None`: no limit) the whole group is killed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub command: String,
    pub timeout_ms: Option<u64>,
}

impl Handler for Exec {
    fn handle(&self, order: &Dispatch) -> Result<(), Failure> {
        exec(&self.command, self.timeout_ms, order, order_json(order))
    }

    fn describe(&self) -> String {
        match self.timeout_ms {
            Some(ms) => format!("exec {:?} (time limit {ms} ms)", self.command),
            None => format!("exec {:?} (no time limit)", self.command),
        }
    }
}

/// Write the order's JSON to a file under `dir` and log the delivery (see
/// [`sink_path`]; ids too long for a file name get a hashed one,
/// [`sink_file_name`], never a failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sink {
    pub dir: PathBuf,
}

impl Handler for Sink {
    fn handle(&self, order: &Dispatch) -> Result<(), Failure> {
        sink(&self.dir, order, &order_json(order))
    }

    /// Creates the sink directory.
    fn prepare(&self) -> io::Result<()> {
        fs::create_dir_all(&self.dir)
    }

    fn describe(&self) -> String {
        format!("sink {}", self.dir.display())
    }
}

/// Acknowledge without doing anything (benchmarks, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Noop;

impl Handler for Noop {
    fn handle(&self, _order: &Dispatch) -> Result<(), Failure> {
        Ok(())
    }

    fn describe(&self) -> String {
        "noop".to_owned()
    }

    /// Returns at once: no thread needed.
    fn inline(&self) -> bool {
        true
    }
}

/// Renders the order as the JSON object handlers receive (see the module
/// docs; the rendering is `orderly_common::order_json`, shared with the
/// broker's `dlq show`).
pub fn order_json(order: &Dispatch) -> Vec<u8> {
    orderly_common::order_json::order_json(&order.order, order.attempt, order.redelivered, &order.items)
}

/// The checksum of an order's items written to `deliveries.log`.
///
/// Definition: SHA-256 over the concatenation, for each item in order, of
/// the item's length in bytes as a 4-byte big-endian unsigned integer
/// followed by the item's bytes exactly as the producer sent them; written
/// as 64 lowercase hex digits. The length prefix makes `["ab"]` and
/// `["a","b"]` differ. An order with no items hashes the empty input.
pub fn items_sha256(items: &[ByteBuf]) -> String {
    let mut hasher = Sha256::new();
    for item in items {
        // Cannot saturate: see the assertion on FANOUT_FRAME_BYTES_MAX.
        let len = u32::try_from(item.len()).unwrap_or(u32::MAX);
        hasher.update(len.to_be_bytes());
        hasher.update(item.as_slice());
    }
    hex::encode(hasher.finalize())
}

// ---------------------------------------------------------------- exec

fn exec(command: &str, timeout_ms: Option<u64>, order: &Dispatch, json: Vec<u8>) -> Result<(), Failure> {
    if order.order.id.contains('\0') {
        // An environment variable cannot hold NUL, and no retry changes that.
        return Err(Failure::permanent("order id contains a NUL byte; it cannot be passed in ORDERLY_ORDER_ID"));
    }
    let child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("ORDERLY_ORDER_ID", &order.order.id)
        .env("ORDERLY_PRODUCER", &order.order.producer)
        .env("ORDERLY_ATTEMPT", order.attempt.to_string())
        .env("ORDERLY_REDELIVERED", order.redelivered.to_string())
        // Its own group: a time limit kills whatever the command started.
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::cannot_run(format!("cannot start sh -c {command:?}: {e}")))?;
    let finished = supervise(child, json, timeout_ms)?;
    exec_outcome(command, &finished, timeout_ms)
}

/// What a supervised command left: its status (none if it could not be
/// waited for), the tails of its output, and whether it ran out of time.
#[derive(Debug, Default)]
pub struct Finished {
    pub status: Option<io::Result<ExitStatus>>,
    pub stdout: Option<Vec<u8>>,
    pub stderr: Option<Vec<u8>>,
    pub timed_out: bool,
}

/// What a helper thread of [`supervise`] reports.
enum Report {
    Status(io::Result<ExitStatus>),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// Feeds stdin, reads the output tails and waits for `child`, killing its
/// process group past `timeout_ms`. The helper threads are detached, not
/// scoped: a process that left the group (setsid) may hold a pipe open
/// for ever, and its reader is then abandoned rather than waited for.
fn supervise(mut child: Child, json: Vec<u8>, timeout_ms: Option<u64>) -> Result<Finished, Failure> {
    // process_group(0): the group's id is the child's pid.
    let group = i32::try_from(child.id()).expect("pids fit in pid_t");
    let (tx, reports) = crossbeam_channel::bounded(3);
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let started = helper("handler-stdin", move || {
        if let Some(mut stdin) = stdin {
            // A child that exits without reading all of stdin closes the
            // pipe (EPIPE): its exit status tells the outcome, not this.
            let _ = stdin.write_all(&json);
        }
    })
    .and_then(|()| helper_tail("handler-stdout", stdout, STDOUT_TAIL_BYTES_MAX, Report::Stdout, tx.clone()))
    .and_then(|()| helper_tail("handler-stderr", stderr, STDERR_TAIL_BYTES_MAX, Report::Stderr, tx.clone()))
    .and_then(|()| {
        helper("handler-wait", move || {
            let _ = tx.send(Report::Status(child.wait()));
        })
    });
    if let Err(e) = started {
        signal_group(group, libc::SIGKILL);
        return Err(Failure::retry(format!("cannot start a thread to supervise the command: {e}")));
    }
    Ok(collect(&reports, group, timeout_ms))
}

fn helper(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new().name(name.to_owned()).spawn(f).map(drop)
}

fn helper_tail<R: Read + Send + 'static>(
    name: &str,
    pipe: Option<R>,
    max: usize,
    report: fn(Vec<u8>) -> Report,
    tx: Sender<Report>,
) -> io::Result<()> {
    helper(name, move || {
        let tail = pipe.map(|pipe| read_tail(pipe, max)).unwrap_or_default();
        let _ = tx.send(report(tail));
    })
}

/// Gathers the reports of [`supervise`]'s threads. Past the time limit:
/// SIGTERM to the group, SIGKILL [`KILL_GRACE_MS`] later, and another grace
/// for the reports before going on without them.
fn collect(reports: &Receiver<Report>, group: i32, timeout_ms: Option<u64>) -> Finished {
    let mut finished = Finished::default();
    let mut signals = [libc::SIGTERM, libc::SIGKILL].into_iter();
    let grace = Duration::from_millis(KILL_GRACE_MS);
    // A limit too far to represent is no limit.
    let mut deadline = timeout_ms.and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms)));
    while finished.status.is_none() || finished.stdout.is_none() || finished.stderr.is_none() {
        let report = match deadline {
            Some(deadline) => reports.recv_deadline(deadline),
            None => reports.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match report {
            Ok(Report::Status(status)) => {
                finished.status = Some(status);
                // Its output is what it wrote by its exit; a process it left
                // behind holding the pipes does not hold up the order.
                let soon = Instant::now() + grace;
                deadline = Some(deadline.map_or(soon, |d| d.min(soon)));
            }
            Ok(Report::Stdout(tail)) => finished.stdout = Some(tail),
            Ok(Report::Stderr(tail)) => finished.stderr = Some(tail),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) if finished.status.is_some() => break,
            Err(RecvTimeoutError::Timeout) => {
                let Some(signal) = signals.next() else { break }; // unkillable: the waiter reaps it
                finished.timed_out = true;
                signal_group(group, signal);
                deadline = Some(Instant::now() + grace);
            }
        }
    }
    finished
}

/// Sends `signal` to every process of `group`. Errors are ignored: ESRCH
/// means the group is already gone, which is the goal.
pub(crate) fn signal_group(group: i32, signal: i32) {
    // SAFETY: killpg has no memory-safety preconditions.
    let _ = unsafe { libc::killpg(group, signal) };
}

/// The outcome of an exec run, from how it finished (see the module docs).
pub fn exec_outcome(command: &str, finished: &Finished, timeout_ms: Option<u64>) -> Result<(), Failure> {
    let stderr = String::from_utf8_lossy(finished.stderr.as_deref().unwrap_or_default());
    let with_stderr = |how: String| match stderr.trim() {
        "" => how,
        tail => format!("{how}: {tail}"),
    };
    if finished.timed_out {
        let limit_ms = timeout_ms.unwrap_or_default();
        return Err(Failure::retry(format!("handler timed out after {limit_ms} ms (process group killed)")));
    }
    let status = match &finished.status {
        Some(Ok(status)) => status,
        Some(Err(e)) => return Err(Failure::retry(format!("cannot wait for the command: {e}"))),
        None => return Err(Failure::retry("the command's exit status was lost")),
    };
    match status.code() {
        Some(0) => Ok(()),
        Some(code @ (EXIT_NOT_EXECUTABLE | EXIT_NOT_FOUND)) => {
            let what = if code == EXIT_NOT_FOUND { "not found" } else { "not executable" };
            Err(Failure::cannot_run(with_stderr(format!("exit code {code} (command {what}) from sh -c {command:?}"))))
        }
        Some(EXIT_RETRY_LATER) => {
            let delay_ms = delay_from_stdout(finished.stdout.as_deref().unwrap_or_default());
            Err(Failure::retry_later(with_stderr(format!("exit code {EXIT_RETRY_LATER} (retry later)")), delay_ms))
        }
        Some(code) => Err(Failure::retry(with_stderr(format!("exit code {code}")))),
        None => Err(Failure::retry(with_stderr(format!("killed by {status}")))),
    }
}

/// The delay a handler asked for: `delay_ms=N` as the last non-empty line
/// of its stdout (N a u64), clamped to `RETRY_DELAY_MS_MAX`.
pub fn delay_from_stdout(stdout_tail: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(stdout_tail);
    let line = text.lines().map(str::trim).rfind(|line| !line.is_empty())?;
    let delay_ms: u64 = line.strip_prefix(DELAY_LINE_PREFIX)?.parse().ok()?;
    Some(delay_ms.min(RETRY_DELAY_MS_MAX))
}

/// Reads `reader` to its end, keeping only the last `max` bytes: the child
/// never blocks on a full pipe, and memory stays bounded.
fn read_tail(mut reader: impl Read, max: usize) -> Vec<u8> {
    let mut tail = Vec::with_capacity(2 * max);
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > max {
                    tail.drain(..tail.len() - max);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    tail
}

// ---------------------------------------------------------------- sink

/// Serializes appends to `deliveries.log`. Process-wide rather than per
/// handler because it guards the file: two handler values may share a dir.
static DELIVERIES_LOG_LOCK: Mutex<()> = Mutex::new(());

/// Makes temp file names unique among the pool's threads.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Where the sink writes an order: `DIR/<file_safe(producer)>/<sink_file_name(id)>`.
pub fn sink_path(dir: &Path, producer: &str, order_id: &str) -> PathBuf {
    dir.join(file_safe(producer)).join(sink_file_name(order_id))
}

/// The name of an order's file in its producer's directory.
///
/// `<file_safe(id)>.json` when that fits in [`FILE_NAME_BYTES_MAX`] (255)
/// bytes. A longer one (an id of up to 256 bytes escapes to up to 768) is
/// hashed: the first [`HASHED_NAME_PREFIX_BYTES_MAX`] (185) bytes or fewer
/// of `file_safe(id)`, cut before a `%XX` escape rather than through it,
/// then `~`, then the SHA-256 of the id's UTF-8 bytes as 64 lowercase hex
/// digits, then `.json`. `~` never occurs in a plain name, so a reader
/// tells the two apart; `deliveries.log` always carries the whole
/// `file_safe(id)`, so every delivery still names its order exactly.
pub fn sink_file_name(order_id: &str) -> String {
    let safe = file_safe(order_id);
    if safe.len() + SINK_FILE_EXTENSION.len() <= FILE_NAME_BYTES_MAX {
        return format!("{safe}{SINK_FILE_EXTENSION}");
    }
    // `file_safe` output is ASCII, so every byte index is a char boundary;
    // an escape is `%` and two hex digits, so a `%` among the last two kept
    // bytes would be cut through.
    let mut cut = HASHED_NAME_PREFIX_BYTES_MAX;
    if let Some(at) = safe[cut - 2..cut].rfind('%') {
        cut = cut - 2 + at;
    }
    let digest = hex::encode(Sha256::digest(order_id.as_bytes()));
    format!("{}{HASHED_NAME_MARK}{digest}{SINK_FILE_EXTENSION}", &safe[..cut])
}

/// The line the sink appends to `deliveries.log` for one delivery:
/// `<producer>\t<file_safe(order id)>\t<attempt>\t<items_sha256>\n`. The
/// order id goes through `file_safe` because ids may hold tabs and newlines;
/// it is whole even when the file name is hashed (see [`sink_file_name`]).
pub fn delivery_line(order: &Dispatch) -> String {
    format!(
        "{}\t{}\t{}\t{}\n",
        order.order.producer,
        file_safe(&order.order.id),
        order.attempt,
        items_sha256(&order.items)
    )
}

fn sink(dir: &Path, order: &Dispatch, json: &[u8]) -> Result<(), Failure> {
    let path = sink_path(dir, &order.order.producer, &order.order.id);
    debug_assert!(path.file_name().is_some_and(|name| name.len() <= FILE_NAME_BYTES_MAX), "{path:?}");
    let io_failure = |what: &str, e: io::Error| Failure::retry(format!("sink {}: {what}: {e}", dir.display()));
    let producer_dir = path.parent().unwrap_or(dir);
    ensure_dir(dir, producer_dir).map_err(|e| io_failure("cannot create the producer directory", e))?;
    write_atomically(producer_dir, &path, json).map_err(|e| io_failure("cannot write the order", e))?;
    append_delivery(dir, &delivery_line(order)).map_err(|e| io_failure("cannot append to deliveries.log", e))
}

/// Creates `producer_dir` (one level below `root`) if needed, making the new
/// directory entry durable.
fn ensure_dir(root: &Path, producer_dir: &Path) -> io::Result<()> {
    match fs::create_dir(producer_dir) {
        Ok(()) => sync_dir(root),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or
/// the whole new one: temp file, fsync, rename, fsync the directory.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    // A leading '.' never starts a file_safe name, so temp files cannot
    // collide with outputs; the counter separates concurrent writers.
    let unique = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!(".tmp-{}-{unique}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp); // best effort: the error is what matters
    }
    result
}

fn append_delivery(dir: &Path, line: &str) -> io::Result<()> {
    let file = {
        // A poisoned lock only means another thread panicked mid-append;
        // O_APPEND keeps the file consistent, so go on.
        let _guard = DELIVERIES_LOG_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut file = OpenOptions::new().create(true).append(true).open(dir.join(DELIVERIES_LOG))?;
        file.write_all(line.as_bytes())?;
        file
    };
    // fsync outside the lock: it covers our write whoever else appends.
    file.sync_data()?;
    // The first append creates the file: make its directory entry durable.
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
