//! `orderly-producer send`: orders read as JSON lines (a file or stdin) on
//! a reader thread, handed to the library in batches, answers tallied and
//! reported.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};

use anyhow::Context;
use orderly_cli::exit;
use orderly_common::text::Escaped;
use orderly_producer::orders::{self, Order};

use crate::flags::SendSettings;
use crate::session::{Session, IDLE_POLL};

/// A batch is cut once its items reach this many bytes.
const BATCH_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Orders parsed ahead of sending by the input thread.
const READ_AHEAD_ORDERS: usize = 1024;
/// Unanswered order ids listed at the end, at most.
const UNANSWERED_LISTED_MAX: usize = 20;

/// One line of input, parsed on the reader thread.
enum Input {
    Order(Order),
    Invalid(String),
    Failed(std::io::Error),
}

/// Reads and parses orders ahead of the sender, so waiting for input never
/// stops answers from being taken and resends from going out. The channel
/// closes at the end of the input.
fn read_input(input: Box<dyn BufRead + Send>, sender: SyncSender<Input>) {
    for (index, line) in input.lines().enumerate() {
        let message = match line {
            Err(error) => Input::Failed(error),
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => match orders::parse_line(&line, index + 1) {
                Ok(order) => Input::Order(order),
                Err(error) => Input::Invalid(error.to_string()),
            },
        };
        let failed = matches!(message, Input::Failed(_));
        if sender.send(message).is_err() || failed {
            return;
        }
    }
}

/// The next batch of orders: waits for the first (or until there is none
/// for `IDLE_POLL`), then takes whatever else is ready.
enum Next {
    Batch(Vec<Order>),
    Idle,
    End,
}

fn next_batch(receiver: &Receiver<Input>, session: &Session, invalid: &mut u64) -> anyhow::Result<Next> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    let mut input = match receiver.recv_timeout(IDLE_POLL) {
        Ok(input) => input,
        Err(RecvTimeoutError::Timeout) => return Ok(Next::Idle),
        Err(RecvTimeoutError::Disconnected) => return Ok(Next::End),
    };
    loop {
        match input {
            Input::Order(order) => {
                bytes += order.items.iter().map(|item| item.len() as u64).sum::<u64>();
                batch.push(order);
            }
            Input::Invalid(message) => {
                *invalid += 1;
                session.progress.println(&format!("skipped invalid order: {}", Escaped(&message)));
            }
            Input::Failed(error) => return Err(error).context("cannot read the order input"),
        }
        if batch.len() >= session.batch_orders_max || bytes >= BATCH_BYTES_MAX {
            break;
        }
        input = match receiver.try_recv() {
            Ok(input) => input,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
        };
    }
    Ok(if batch.is_empty() { Next::Idle } else { Next::Batch(batch) })
}

/// `orderly-producer send`: the exit code says how every order fared.
pub(crate) fn run(settings: SendSettings, stop: &AtomicBool) -> anyhow::Result<ExitCode> {
    let input: Box<dyn BufRead + Send> = match &settings.file {
        Some(path) => {
            Box::new(BufReader::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?))
        }
        None => Box::new(BufReader::new(std::io::stdin())),
    };
    let confirmed_log = match &settings.confirmed_log {
        Some(path) => Some(
            File::options()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the confirmed log {}", path.display()))?,
        ),
        None => None,
    };
    let mut session = Session::start(settings.session, confirmed_log, stop)?;
    let (sender, receiver) = mpsc::sync_channel(READ_AHEAD_ORDERS);
    // Not joined: at an interrupt it may be blocked reading stdin, and the
    // process ends with `main` anyway.
    std::thread::Builder::new()
        .name("input".into())
        .spawn(move || read_input(input, sender))
        .context("cannot start the input thread")?;
    let mut invalid = 0u64;
    let mut complete = true;
    loop {
        if session.stop.load(Ordering::Relaxed) {
            session.progress.println("interrupted: sending no more orders, waiting for answers to those sent");
            break;
        }
        match next_batch(&receiver, &session, &mut invalid)? {
            Next::Batch(batch) => {
                if !session.send(batch)? {
                    complete = false;
                    break;
                }
            }
            Next::Idle => session.idle()?,
            Next::End => break,
        }
    }
    complete &= session.finish()?;
    report(&session, invalid, complete)
}

fn report(session: &Session, invalid: u64, complete: bool) -> anyhow::Result<ExitCode> {
    session.progress.finish();
    let tally = &session.tally;
    let elapsed = session.started.elapsed().as_secs_f64();
    for (id, reason) in &tally.rejected {
        // The reason's detail is the broker's text, which may quote what a
        // peer sent: escaped (the id is quoted by `{:?}`).
        orderly_cli::eprintln_lossy!("rejected order {id:?}: {}", Escaped(reason));
    }
    if tally.already_pending > 0 {
        orderly_cli::eprintln_lossy!(
            "{} input orders were not sent again: they were already awaiting an answer (recovered from the outbox, \
             or repeated in the input)",
            tally.already_pending
        );
    }
    let unanswered = session.producer.pending_ids();
    for id in unanswered.iter().take(UNANSWERED_LISTED_MAX) {
        orderly_cli::eprintln_lossy!("no answer for order {id:?}");
    }
    orderly_cli::println_lossy!(
        "sent {} orders: {} confirmed, {} rejected, {} invalid, {} unanswered in {:.2} s ({:.0} orders/s)",
        tally.sent,
        tally.confirmed,
        tally.rejected.len(),
        invalid,
        unanswered.len(),
        elapsed,
        tally.confirmed as f64 / elapsed.max(1e-9)
    );
    if !complete || !unanswered.is_empty() {
        let kept = match session.producer.outbox_dir() {
            Some(dir) => format!("they stay in the outbox {} and the next run with it resends them", dir.display()),
            None => "unanswered orders were not confirmed, send them again later".to_string(),
        };
        match session.producer.broker_backpressure() {
            Some(said) => orderly_cli::eprintln_lossy!(
                "timed out: no answer from the broker for {:?} with {} orders unanswered — the broker is up but not \
                 taking orders (backpressure: {}: {}); it resumes by itself when that clears; {kept}",
                session.timeout,
                unanswered.len(),
                Escaped(&said.reason),
                Escaped(&said.detail)
            ),
            None => orderly_cli::eprintln_lossy!(
                "timed out: no answer from the broker for {:?} with {} orders unanswered — backpressure (the broker \
                 is at one of its limits and not reading intake) or the broker is down; {kept}",
                session.timeout,
                unanswered.len()
            ),
        }
        return Ok(ExitCode::from(exit::TIMEOUT));
    }
    if !tally.rejected.is_empty() || invalid > 0 {
        return Ok(ExitCode::from(exit::REJECTED));
    }
    Ok(ExitCode::from(exit::OK))
}
