//! `orderly-producer`: thin binary over the `orderly_producer` library.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use orderly_cli::{exit, merge_config_file};
use orderly_common::ids::validate_peer_id;
use orderly_common::limits::{ITEM_BYTES_MAX, ORDER_ITEMS_MAX};
use orderly_common::Endpoint;
use orderly_producer::limits::RESEND_BACKOFF_MAX_DEFAULT;
use orderly_producer::orders::{self, Order};
use orderly_producer::{Outcome, Producer, ProducerConfig, ProducerError};

/// mimalloc: the hot paths allocate many small buffers (frames, keys); glibc's
/// malloc spent a fifth of the broker's time consolidating them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Orders the CLI hands to the library in one batch (one outbox commit):
/// enough to amortise an fsync, small enough to keep the pipe moving.
const CLI_BATCH_ORDERS_MAX: usize = 256;
/// A batch is cut once its items reach this many bytes.
const CLI_BATCH_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Orders parsed ahead of sending by the input thread.
const READ_AHEAD_ORDERS: usize = 1024;
/// Longest wait for input or answers before the loop looks around again
/// (signals, resends, progress).
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Plain progress lines (stderr not a terminal) come this often.
const PROGRESS_LINE_INTERVAL: Duration = Duration::from_secs(2);
/// Bounds of a duration flag, in seconds (a NaN or infinity is refused too).
const SECONDS_MIN: f64 = 0.001;
const SECONDS_MAX: f64 = 1e9;
/// Bounds of `bench --rate`, in orders per second (0 is allowed too: no pacing).
const RATE_MIN: f64 = 0.001;
const RATE_MAX: f64 = 1e9;
/// Unanswered order ids listed at the end, at most.
const UNANSWERED_LISTED_MAX: usize = 20;

/// The orderly producer: sends orders (a Begin, numbered items, a Finish)
/// to the broker and waits until the broker confirms or rejects each one,
/// resending any order that stays unanswered.
#[derive(Parser, Debug)]
#[command(name = "orderly-producer", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Examples:
  echo '{\"id\": \"order-1\", \"items\": [{\"sku\": \"A1\", \"qty\": 2}]}' | orderly-producer send --id shop-1
  orderly-producer send --id shop-1 --file orders.jsonl --confirmed-log confirmed.txt
  orderly-producer send --id shop-1 --file orders.jsonl --outbox /var/lib/shop-1/outbox
  orderly-producer bench --id bench-1 --orders 10000 --items 10 --item-bytes 100

Exit codes: 0 every order confirmed; 1 runtime failure; 2 bad usage;
3 some orders rejected or invalid; 4 timed out waiting for the broker.
Every flag can also come from an ORDERLY_PRODUCER_* environment variable or
a TOML file given with --config (flags > environment > file > defaults).";

#[derive(Subcommand, Debug)]
enum Command {
    /// Send orders read as JSON lines: {"id": "...", "items": [<any JSON>, ...]}.
    Send(SendArgs),
    /// Generate N orders of K items of S bytes and report throughput and
    /// confirm latency.
    Bench(BenchArgs),
    /// Write a new CURVE key pair: PREFIX.key (secret, mode 0600) and
    /// PREFIX.pub (public: add it to the broker's authorized keys as
    /// `PUBLIC-KEY producer ID`).
    Keygen {
        /// Path prefix of the two files, e.g. /etc/orderly/shop-1.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct Common {
    /// TOML file with settings (keys are the flag names).
    #[arg(long, env = "ORDERLY_PRODUCER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// This producer's CURVE key pair (from `orderly-producer keygen`);
    /// turns on CURVE towards a broker that requires it.
    #[arg(long, env = "ORDERLY_PRODUCER_CURVE_SECRET_KEY", value_name = "FILE", requires = "broker_public_key")]
    curve_secret_key: Option<PathBuf>,

    /// The broker's CURVE public key: 40 Z85 characters, or a file holding
    /// them (the broker's PREFIX.pub).
    #[arg(long, env = "ORDERLY_PRODUCER_BROKER_PUBLIC_KEY", value_name = "KEY|FILE", requires = "curve_secret_key")]
    broker_public_key: Option<String>,

    /// This producer's id ([A-Za-z0-9._-], up to 64 bytes). Order ids are
    /// unique per producer id; keep the id across restarts so the broker
    /// recognises resent orders.
    #[arg(long, env = "ORDERLY_PRODUCER_ID", value_name = "ID", default_value = "producer",
          value_parser = parse_peer_id)]
    id: String,

    /// The broker's intake endpoint (we PUSH items there).
    #[arg(long, env = "ORDERLY_PRODUCER_INTAKE", value_name = "EP", default_value = "tcp://127.0.0.1:5570")]
    intake: Endpoint,

    /// The broker's fanout endpoint (we SUBscribe for confirms there).
    #[arg(long, env = "ORDERLY_PRODUCER_FANOUT", value_name = "EP", default_value = "tcp://127.0.0.1:5571")]
    fanout: Endpoint,

    /// Seconds to wait for the broker: to answer the handshake, to make
    /// room in a full window (backpressure), and for the next answer.
    #[arg(long, env = "ORDERLY_PRODUCER_TIMEOUT", value_name = "SECONDS", default_value_t = 30.0,
          value_parser = parse_seconds)]
    timeout: f64,

    /// Seconds an order may wait for its answer before it is sent again
    /// (safe: the broker never processes an order twice); the wait doubles
    /// with each resend, up to 60 s.
    #[arg(long, env = "ORDERLY_PRODUCER_CONFIRM_TIMEOUT", value_name = "SECONDS", default_value_t = 5.0,
          value_parser = parse_seconds)]
    confirm_timeout: f64,

    /// Orders sent but not yet answered, at most (the outbox bound).
    #[arg(long, env = "ORDERLY_PRODUCER_WINDOW", value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    window: u32,

    /// Keep unanswered orders on disk in DIR, so they survive a crash: each
    /// order is written (fsynced) before it is sent, and a later run with
    /// the same DIR (and --id) resends first every order still unanswered.
    /// Input orders that are still awaiting an answer in DIR are not sent
    /// twice. Input orders already answered are sent again: within the
    /// broker's dedup window (default 10 minutes after processing) it
    /// confirms them again without processing them twice; to skip them,
    /// leave the ids in --confirmed-log out of the input. One producer per
    /// DIR.
    #[arg(long, env = "ORDERLY_PRODUCER_OUTBOX", value_name = "DIR")]
    outbox: Option<PathBuf>,

    /// Send Begin, one Item message per item, and Finish, instead of
    /// packing an order's items into as few `items` frames as fit (one for
    /// orders up to 256 KiB). Packing is much faster; this is for brokers
    /// older than 0.2 and for measuring the per-item path.
    #[arg(long, env = "ORDERLY_PRODUCER_ONE_FRAME_PER_ITEM")]
    one_frame_per_item: bool,

    /// Log filter: error, warn, info, debug or trace (RUST_LOG wins).
    #[arg(long, env = "ORDERLY_PRODUCER_LOG_LEVEL", value_name = "LEVEL", default_value = "warn")]
    log_level: String,
}

#[derive(clap::Args, Debug)]
struct SendArgs {
    #[command(flatten)]
    common: Common,

    /// JSON-lines file of orders; standard input when absent.
    #[arg(long, env = "ORDERLY_PRODUCER_FILE", value_name = "FILE")]
    file: Option<PathBuf>,

    /// Append the id of every confirmed order to this file, one per line.
    #[arg(long, env = "ORDERLY_PRODUCER_CONFIRMED_LOG", value_name = "FILE")]
    confirmed_log: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    #[command(flatten)]
    common: Common,

    /// Orders to send.
    #[arg(long, env = "ORDERLY_PRODUCER_ORDERS", value_name = "N", default_value_t = 10_000)]
    orders: u64,

    /// Items per order.
    #[arg(long, env = "ORDERLY_PRODUCER_ITEMS", value_name = "K", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(0..=ORDER_ITEMS_MAX as i64))]
    items: u32,

    /// Bytes per item (a JSON string, quotes included; at least 2).
    #[arg(long, env = "ORDERLY_PRODUCER_ITEM_BYTES", value_name = "S", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(2..=ITEM_BYTES_MAX as i64))]
    item_bytes: u32,

    /// Offered load in orders per second (fractions allowed): order i is
    /// due i/N seconds after the start and is never sent before then; an
    /// order the producer is late for goes out as soon as it can, with the
    /// others due by then (open loop, so a slow broker does not lower the
    /// load). Answers are taken while waiting. 0: as fast as the window
    /// allows.
    #[arg(long, env = "ORDERLY_PRODUCER_RATE", value_name = "N", default_value_t = 0.0,
          value_parser = parse_rate)]
    rate: f64,
}

fn parse_peer_id(text: &str) -> Result<String, String> {
    validate_peer_id("producer id", text).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if (SECONDS_MIN..=SECONDS_MAX).contains(&seconds) => Ok(seconds),
        _ => Err(format!("{text:?} is not a number of seconds from 0.001 up")),
    }
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate == 0.0 || (RATE_MIN..=RATE_MAX).contains(&rate) => Ok(rate),
        _ => Err(format!("{text:?} is not 0 or a number of orders per second from {RATE_MIN} to {RATE_MAX:e}")),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("orderly-producer: error: {error:#}");
            let code = match error.downcast_ref::<ProducerError>() {
                Some(error) if error.is_timeout() => exit::TIMEOUT,
                Some(ProducerError::Config(_)) => exit::USAGE,
                _ if error.chain().any(|cause| cause.is::<orderly_cli::ConfigError>()) => exit::USAGE,
                _ => exit::FAILURE,
            };
            ExitCode::from(code)
        }
    }
}

fn parse_cli() -> anyhow::Result<Cli> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = Cli::parse_from(&args);
    let (name, common) = match &cli.command {
        Command::Send(a) => ("send", &a.common),
        Command::Bench(a) => ("bench", &a.common),
        Command::Keygen { .. } => return Ok(cli),
    };
    let Some(path) = &common.config else { return Ok(cli) };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    let merged = merge_config_file(Cli::command(), args, name, &text)
        .with_context(|| format!("config file {}", path.display()))?;
    Ok(Cli::parse_from(merged))
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = parse_cli()?;
    let common = match &cli.command {
        Command::Send(a) => &a.common,
        Command::Bench(a) => &a.common,
        Command::Keygen { out } => {
            print!("{}", orderly_security::keys::keygen(out)?);
            return Ok(ExitCode::from(exit::OK));
        }
    };
    init_logging(&common.log_level);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("cannot install signal handlers")?;
    }
    match cli.command {
        Command::Send(args) => send(args, &stop),
        Command::Bench(args) => bench(args, &stop),
        Command::Keygen { .. } => unreachable!("handled above"),
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

/// The library configuration the flags describe.
fn producer_config(common: &Common) -> anyhow::Result<ProducerConfig> {
    let timeout = Duration::from_secs_f64(common.timeout);
    let confirm_timeout = Duration::from_secs_f64(common.confirm_timeout);
    let mut config = ProducerConfig::new(common.id.clone(), common.intake.clone(), common.fanout.clone());
    config.handshake_timeout = timeout;
    config.send_timeout = timeout;
    config.confirm_timeout = confirm_timeout;
    config.resend_backoff_max = RESEND_BACKOFF_MAX_DEFAULT.max(confirm_timeout);
    config.outbox_orders_max = common.window as usize;
    config.outbox_dir = common.outbox.clone();
    config.pack_items = !common.one_frame_per_item;
    if let (Some(secret), Some(public)) = (&common.curve_secret_key, &common.broker_public_key) {
        config.curve = Some(orderly_security::keys::CurveClient::load(secret, public)?);
    }
    Ok(config)
}

/// What happened to the orders of one run.
#[derive(Default)]
struct Tally {
    sent: u64,
    confirmed: u64,
    rejected: Vec<(String, String)>,
    latencies_us: Vec<u64>,
    /// Input orders skipped because the outbox still awaits their answer.
    already_pending: u64,
}

/// Progress on stderr: a live bar on a terminal, otherwise a plain
/// `progress:` line every few seconds (logs and tests read those).
enum Progress {
    Bar(ProgressBar),
    Lines { last: Instant },
}

impl Progress {
    fn new() -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress::Lines { last: Instant::now() };
        }
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{wide_bar}] {pos}/{len} confirmed ({per_sec}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = ProgressBar::new(0).with_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress::Bar(bar)
    }

    fn update(&mut self, tally: &Tally, pending: usize, started: Instant) {
        match self {
            Progress::Bar(bar) => {
                bar.set_length(tally.sent);
                bar.set_position(tally.confirmed);
                bar.set_message(format!("{} rejected, {pending} awaiting answers", tally.rejected.len()));
            }
            Progress::Lines { last } => {
                if last.elapsed() < PROGRESS_LINE_INTERVAL {
                    return;
                }
                *last = Instant::now();
                eprintln!(
                    "progress: {} sent, {} confirmed, {} rejected, {:.0} orders/s",
                    tally.sent,
                    tally.confirmed,
                    tally.rejected.len(),
                    tally.confirmed as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
    }

    /// Prints a line on stderr without tearing the bar.
    fn println(&self, line: &str) {
        match self {
            Progress::Bar(bar) => bar.suspend(|| eprintln!("{line}")),
            Progress::Lines { .. } => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Sends orders through the producer and collects the answers. Gives up
/// when no answer arrives for `timeout`.
struct Run<'a> {
    producer: Producer,
    timeout: Duration,
    tally: Tally,
    confirmed_log: Option<File>,
    progress: Progress,
    stop: &'a AtomicBool,
    last_answer: Instant,
    started: Instant,
}

impl<'a> Run<'a> {
    fn start(common: &Common, confirmed_log: Option<File>, stop: &'a AtomicBool) -> anyhow::Result<Run<'a>> {
        let producer = Producer::connect(producer_config(common)?)?;
        let progress = Progress::new();
        if producer.recovered() > 0 {
            let dir = producer.outbox_dir().map(|dir| dir.display().to_string()).unwrap_or_default();
            progress.println(&format!("resending {} orders recovered from the outbox {dir}", producer.recovered()));
        }
        // Recovered orders are this run's to see answered.
        let tally = Tally { sent: producer.recovered(), ..Tally::default() };
        Ok(Run {
            producer,
            timeout: Duration::from_secs_f64(common.timeout),
            tally,
            confirmed_log,
            progress,
            stop,
            last_answer: Instant::now(),
            started: Instant::now(),
        })
    }

    fn take_answers(&mut self) -> anyhow::Result<()> {
        for answer in self.producer.poll_receipts() {
            self.last_answer = Instant::now();
            match answer.outcome {
                Outcome::Confirmed => {
                    self.tally.confirmed += 1;
                    self.tally.latencies_us.push(u64::try_from(answer.latency.as_micros()).unwrap_or(u64::MAX));
                    if let Some(log) = &mut self.confirmed_log {
                        writeln!(log, "{}", answer.order_id).context("cannot write the confirmed log")?;
                    }
                }
                Outcome::Rejected(error) => self.tally.rejected.push((answer.order_id, error.reason.to_string())),
            }
        }
        self.progress.update(&self.tally, self.producer.pending(), self.started);
        Ok(())
    }

    /// Sends a batch; false if the window stayed full for the timeout.
    fn send(&mut self, batch: Vec<Order>) -> anyhow::Result<bool> {
        let mut fresh = Vec::with_capacity(batch.len());
        for order in batch {
            // Recovered from the outbox (or repeated in the input) and still
            // awaiting its answer: it is already being sent.
            if self.producer.is_pending(&order.id) || fresh.iter().any(|o: &Order| o.id == order.id) {
                self.tally.already_pending += 1;
                continue;
            }
            fresh.push(order);
        }
        if fresh.is_empty() {
            return Ok(true);
        }
        let count = fresh.len() as u64;
        match self.producer.send_batch(fresh) {
            Ok(_) => {}
            Err(ProducerError::Backpressure { .. }) => return Ok(false),
            Err(error) => return Err(error.into()),
        }
        self.tally.sent += count;
        self.take_answers()?;
        Ok(true)
    }

    /// Takes answers and does what is due while there is nothing to send.
    fn idle(&mut self) -> anyhow::Result<()> {
        self.producer.poll(Duration::ZERO)?;
        self.take_answers()
    }

    /// Takes answers (and resends what is due) until `deadline`, so a paced
    /// sender sees each answer when it arrives, not when it next sends. The
    /// wait wakes up to about a millisecond late (poll granularity). False
    /// if interrupted.
    fn wait_until(&mut self, deadline: Instant) -> anyhow::Result<bool> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(true);
            }
            self.producer.poll((deadline - now).min(IDLE_POLL))?;
            self.take_answers()?;
        }
    }

    /// Waits for every answer; false if none came for the timeout.
    fn finish(&mut self) -> anyhow::Result<bool> {
        self.last_answer = Instant::now();
        while self.producer.pending() > 0 {
            if self.last_answer.elapsed() >= self.timeout {
                return Ok(false);
            }
            self.producer.poll(IDLE_POLL)?;
            self.take_answers()?;
        }
        Ok(true)
    }
}

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

fn next_batch(receiver: &Receiver<Input>, orders_max: usize, run: &Run, invalid: &mut u64) -> anyhow::Result<Next> {
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
                run.progress.println(&format!("skipped invalid order: {message}"));
            }
            Input::Failed(error) => return Err(error).context("cannot read the order input"),
        }
        if batch.len() >= orders_max || bytes >= CLI_BATCH_BYTES_MAX {
            break;
        }
        input = match receiver.try_recv() {
            Ok(input) => input,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
        };
    }
    Ok(if batch.is_empty() { Next::Idle } else { Next::Batch(batch) })
}

fn send(args: SendArgs, stop: &AtomicBool) -> anyhow::Result<ExitCode> {
    let input: Box<dyn BufRead + Send> = match &args.file {
        Some(path) => {
            Box::new(BufReader::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?))
        }
        None => Box::new(BufReader::new(std::io::stdin())),
    };
    let confirmed_log = match &args.confirmed_log {
        Some(path) => Some(
            File::options()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the confirmed log {}", path.display()))?,
        ),
        None => None,
    };
    let mut run = Run::start(&args.common, confirmed_log, stop)?;
    let (sender, receiver) = mpsc::sync_channel(READ_AHEAD_ORDERS);
    // Not joined: at an interrupt it may be blocked reading stdin, and the
    // process ends with `main` anyway.
    std::thread::Builder::new()
        .name("input".into())
        .spawn(move || read_input(input, sender))
        .context("cannot start the input thread")?;
    let batch_max = CLI_BATCH_ORDERS_MAX.min(args.common.window as usize);
    let mut invalid = 0u64;
    let mut complete = true;
    loop {
        if run.stop.load(Ordering::Relaxed) {
            run.progress.println("interrupted: sending no more orders, waiting for answers to those sent");
            break;
        }
        match next_batch(&receiver, batch_max, &run, &mut invalid)? {
            Next::Batch(batch) => {
                if !run.send(batch)? {
                    complete = false;
                    break;
                }
            }
            Next::Idle => run.idle()?,
            Next::End => break,
        }
    }
    complete &= run.finish()?;
    report(&run, invalid, complete)
}

fn report(run: &Run, invalid: u64, complete: bool) -> anyhow::Result<ExitCode> {
    run.progress.finish();
    let tally = &run.tally;
    let elapsed = run.started.elapsed().as_secs_f64();
    for (id, reason) in &tally.rejected {
        eprintln!("rejected order {id:?}: {reason}");
    }
    if tally.already_pending > 0 {
        eprintln!(
            "{} input orders were not sent again: they were already awaiting an answer (recovered from the outbox, \
             or repeated in the input)",
            tally.already_pending
        );
    }
    let unanswered = run.producer.pending_ids();
    for id in unanswered.iter().take(UNANSWERED_LISTED_MAX) {
        eprintln!("no answer for order {id:?}");
    }
    println!(
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
        let kept = match run.producer.outbox_dir() {
            Some(dir) => format!("they stay in the outbox {} and the next run with it resends them", dir.display()),
            None => "unanswered orders were not confirmed, send them again later".to_string(),
        };
        eprintln!(
            "timed out: no answer from the broker for {:?} with {} orders unanswered — backpressure (the broker is at \
             one of its limits and not reading intake) or the broker is down; {kept}",
            run.timeout,
            unanswered.len()
        );
        return Ok(ExitCode::from(exit::TIMEOUT));
    }
    if !tally.rejected.is_empty() || invalid > 0 {
        return Ok(ExitCode::from(exit::REJECTED));
    }
    Ok(ExitCode::from(exit::OK))
}

/// The fixed schedule of `bench --rate`: order i is due `i / rate` seconds
/// after the start.
struct Schedule {
    start: Instant,
    rate: f64,
}

impl Schedule {
    fn due(&self, index: u64) -> Instant {
        self.start + Duration::from_secs_f64((index as f64 / self.rate).min(SECONDS_MAX))
    }

    /// How many orders are due by `now` (those with a lower index).
    fn due_by(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_secs_f64() * self.rate).floor() as u64 + 1
    }
}

fn bench(args: BenchArgs, stop: &AtomicBool) -> anyhow::Result<ExitCode> {
    let mut run = Run::start(&args.common, None, stop)?;
    let started = Instant::now();
    let batch_max = CLI_BATCH_ORDERS_MAX.min(args.common.window as usize) as u64;
    let schedule = (args.rate > 0.0).then_some(Schedule { start: started, rate: args.rate });
    let mut send_lag_max = Duration::ZERO;
    let mut complete = true;
    let mut next = 0;
    while next < args.orders && !run.stop.load(Ordering::Relaxed) {
        let due_end = match &schedule {
            None => args.orders,
            Some(schedule) => {
                let due = schedule.due(next);
                if !run.wait_until(due)? {
                    break;
                }
                let now = Instant::now();
                send_lag_max = send_lag_max.max(now - due);
                // Order `next` is due (whatever the rounding), and so is
                // every later one whose time has come: no more.
                schedule.due_by(now).max(next + 1)
            }
        };
        let end = (next + batch_max).min(due_end).min(args.orders);
        let batch = (next..end).map(|index| orders::generate(index, args.items, args.item_bytes as usize)).collect();
        next = end;
        if !run.send(batch)? {
            complete = false;
            break;
        }
    }
    complete &= run.finish()?;
    run.progress.finish();
    let elapsed = started.elapsed().as_secs_f64();
    let tally = &mut run.tally;
    tally.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        let lat = &tally.latencies_us;
        if lat.is_empty() {
            return f64::NAN;
        }
        lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
    };
    // At a fixed rate, how far behind its schedule the sender fell (an
    // order sent late has its latency measured from when it was sent).
    let offered = match schedule {
        Some(schedule) => {
            format!("; offered {} orders/s, send lag max {:.3} ms", schedule.rate, send_lag_max.as_secs_f64() * 1000.0)
        }
        None => String::new(),
    };
    println!(
        "orders {} confirmed {} rejected {} in {:.3} s: {:.0} orders/s, {:.0} items/s; \
         confirm latency ms p50 {:.3} p99 {:.3} p999 {:.3}{offered}",
        tally.sent,
        tally.confirmed,
        tally.rejected.len(),
        elapsed,
        tally.confirmed as f64 / elapsed,
        (tally.confirmed * u64::from(args.items)) as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(0.999)
    );
    let code = if !complete {
        exit::TIMEOUT
    } else if !tally.rejected.is_empty() {
        exit::REJECTED
    } else {
        exit::OK
    };
    Ok(ExitCode::from(code))
}
