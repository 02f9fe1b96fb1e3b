//! `orderly-producer`: thin binary over the `orderly_producer` library.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use orderly_common::cli::{exit, merge_config_file};
use orderly_common::ids::validate_peer_id;
use orderly_common::limits::{ITEM_BYTES_MAX, ORDER_ITEMS_MAX};
use orderly_common::Endpoint;
use orderly_producer::client::{Client, ClientConfig, ClientError};
use orderly_producer::core::Receipt;
use orderly_producer::orders::{self, Order};

/// The orderly producer: sends orders (a Begin, numbered items, a Finish)
/// to the broker and waits until the broker confirms or rejects each one.
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
}

#[derive(clap::Args, Debug)]
struct Common {
    /// TOML file with settings (keys are the flag names).
    #[arg(long, env = "ORDERLY_PRODUCER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// This producer's id ([A-Za-z0-9._-], up to 64 bytes). Order ids are
    /// unique per producer id.
    #[arg(long, env = "ORDERLY_PRODUCER_ID", value_name = "ID", default_value = "producer",
          value_parser = parse_peer_id)]
    id: String,

    /// The broker's intake endpoint (we PUSH items there).
    #[arg(long, env = "ORDERLY_PRODUCER_INTAKE", value_name = "EP", default_value = "tcp://127.0.0.1:5570")]
    intake: Endpoint,

    /// The broker's fanout endpoint (we SUBscribe for confirms there).
    #[arg(long, env = "ORDERLY_PRODUCER_FANOUT", value_name = "EP", default_value = "tcp://127.0.0.1:5571")]
    fanout: Endpoint,

    /// Seconds to wait for the broker: to answer the handshake, to accept a
    /// message (backpressure), and for the next confirm.
    #[arg(long, env = "ORDERLY_PRODUCER_TIMEOUT", value_name = "SECONDS", default_value_t = 30.0)]
    timeout: f64,

    /// Orders sent but not yet confirmed, at most.
    #[arg(long, env = "ORDERLY_PRODUCER_WINDOW", value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    window: u32,

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
}

fn parse_peer_id(text: &str) -> Result<String, String> {
    validate_peer_id("producer id", text).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("orderly-producer: error: {error:#}");
            let code = match error.downcast_ref::<ClientError>() {
                Some(ClientError::Backpressure(_) | ClientError::NoBroker { .. }) => exit::TIMEOUT,
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
    };
    init_logging(&common.log_level);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("cannot install signal handlers")?;
    }
    match cli.command {
        Command::Send(args) => send(args, &stop),
        Command::Bench(args) => bench(args, &stop),
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

fn connect(common: &Common) -> anyhow::Result<(Client, Duration)> {
    let timeout = Duration::from_secs_f64(common.timeout.max(0.001));
    let config = ClientConfig {
        producer: common.id.clone(),
        intake: common.intake.clone(),
        fanout: common.fanout.clone(),
        send_timeout: timeout,
    };
    let client = Client::connect(config, timeout)?;
    Ok((client, timeout))
}

/// What happened to the orders of one run.
#[derive(Default)]
struct Tally {
    sent: u64,
    confirmed: u64,
    rejected: Vec<(String, String)>,
    latencies_us: Vec<u64>,
}

/// Sends orders with at most `window` unanswered, feeding answers to
/// `on_receipt`, then waits for the rest. Gives up when no answer arrives
/// for `timeout`.
struct Pump<'a> {
    client: Client,
    window: usize,
    timeout: Duration,
    tally: Tally,
    confirmed_log: Option<File>,
    stop: &'a AtomicBool,
    last_answer: Instant,
    last_progress: Instant,
    started: Instant,
}

impl Pump<'_> {
    fn take_receipts(&mut self) -> anyhow::Result<()> {
        while let Some(receipt) = self.client.next_receipt() {
            self.last_answer = Instant::now();
            match receipt {
                Receipt::Confirmed { id, latency_us } => {
                    self.tally.confirmed += 1;
                    self.tally.latencies_us.push(latency_us);
                    if let Some(log) = &mut self.confirmed_log {
                        writeln!(log, "{id}").context("cannot write the confirmed log")?;
                    }
                }
                Receipt::Rejected { id, reason } => self.tally.rejected.push((id, reason.to_string())),
            }
        }
        if self.last_progress.elapsed() >= Duration::from_secs(2) {
            self.last_progress = Instant::now();
            eprintln!(
                "progress: {} sent, {} confirmed, {} rejected, {:.0} orders/s",
                self.tally.sent,
                self.tally.confirmed,
                self.tally.rejected.len(),
                self.tally.confirmed as f64 / self.started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    /// Waits until fewer than `limit` orders are unanswered; false on timeout.
    fn wait_below(&mut self, limit: usize) -> anyhow::Result<bool> {
        self.last_answer = Instant::now();
        while self.client.outstanding() >= limit.max(1) {
            if self.last_answer.elapsed() >= self.timeout {
                return Ok(false);
            }
            self.client.poll(Duration::from_millis(50))?;
            self.take_receipts()?;
        }
        Ok(true)
    }

    fn send(&mut self, order: &Order) -> anyhow::Result<bool> {
        if !self.wait_below(self.window)? {
            return Ok(false);
        }
        self.client.send(order)?;
        self.tally.sent += 1;
        self.client.poll(Duration::ZERO)?;
        self.take_receipts()?;
        Ok(true)
    }

    /// Waits for every answer; false if some never came.
    fn finish(&mut self) -> anyhow::Result<bool> {
        self.wait_below(1)
    }
}

fn pump<'a>(common: &Common, confirmed_log: Option<File>, stop: &'a AtomicBool) -> anyhow::Result<Pump<'a>> {
    let (client, timeout) = connect(common)?;
    Ok(Pump {
        client,
        window: common.window as usize,
        timeout,
        tally: Tally::default(),
        confirmed_log,
        stop,
        last_answer: Instant::now(),
        last_progress: Instant::now(),
        started: Instant::now(),
    })
}

fn send(args: SendArgs, stop: &AtomicBool) -> anyhow::Result<ExitCode> {
    let input: Box<dyn BufRead> = match &args.file {
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
    let mut pump = pump(&args.common, confirmed_log, stop)?;
    let mut invalid = 0u64;
    let mut complete = true;
    for (index, line) in input.lines().enumerate() {
        if pump.stop.load(Ordering::Relaxed) {
            eprintln!("interrupted: sending no more orders, waiting for answers to those sent");
            break;
        }
        let line = line.context("cannot read the order input")?;
        if line.trim().is_empty() {
            continue;
        }
        match orders::parse_line(&line, index + 1) {
            Ok(order) => {
                if !pump.send(&order)? {
                    complete = false;
                    break;
                }
            }
            Err(error) => {
                invalid += 1;
                eprintln!("skipped invalid order: {error}");
            }
        }
    }
    complete &= pump.finish()?;
    report(&pump, invalid, complete)
}

fn report(pump: &Pump, invalid: u64, complete: bool) -> anyhow::Result<ExitCode> {
    let tally = &pump.tally;
    let elapsed = pump.started.elapsed().as_secs_f64();
    for (id, reason) in &tally.rejected {
        eprintln!("rejected order {id:?}: {reason}");
    }
    let unanswered = pump.client.outstanding_ids();
    for id in unanswered.iter().take(20) {
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
        eprintln!(
            "timed out: no answer from the broker for {:?} with {} orders unanswered — backpressure (the broker is at \
             one of its limits and not reading intake) or the broker is down; unanswered orders were not confirmed, \
             send them again later",
            pump.timeout,
            unanswered.len()
        );
        return Ok(ExitCode::from(exit::TIMEOUT));
    }
    if !tally.rejected.is_empty() || invalid > 0 {
        return Ok(ExitCode::from(exit::REJECTED));
    }
    Ok(ExitCode::from(exit::OK))
}

fn bench(args: BenchArgs, stop: &AtomicBool) -> anyhow::Result<ExitCode> {
    let mut pump = pump(&args.common, None, stop)?;
    let started = Instant::now();
    let mut complete = true;
    for index in 0..args.orders {
        if pump.stop.load(Ordering::Relaxed) {
            break;
        }
        let order = orders::generate(index, args.items, args.item_bytes as usize);
        if !pump.send(&order)? {
            complete = false;
            break;
        }
    }
    complete &= pump.finish()?;
    let elapsed = started.elapsed().as_secs_f64();
    let tally = &mut pump.tally;
    tally.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        let lat = &tally.latencies_us;
        if lat.is_empty() {
            return f64::NAN;
        }
        lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
    };
    println!(
        "orders {} confirmed {} rejected {} in {:.3} s: {:.0} orders/s, {:.0} items/s; confirm latency ms p50 {:.3} p99 {:.3} p999 {:.3}",
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
