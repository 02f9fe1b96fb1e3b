//! `orderly-broker`: thin binary over the `orderly_broker` library.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use orderly_broker::admin;
use orderly_broker::core::CoreConfig;
use orderly_broker::io::{self, BrokerConfig};
use orderly_broker::ops;
use orderly_cli::{exit, merge_config_file};
use orderly_common::limits;
use orderly_common::Endpoint;

/// mimalloc: the hot paths allocate many small buffers (frames, keys); glibc's
/// malloc spent a fifth of the broker's time consolidating them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The orderly broker: collects the items of each order from producers,
/// seals complete orders, and hands each one to exactly one live worker
/// until that worker acknowledges it.
#[derive(Parser, Debug)]
#[command(name = "orderly-broker", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Example (all on one machine):
  orderly-broker run --data-dir ./orderly-data \\
      --intake tcp://127.0.0.1:5570 --fanout tcp://127.0.0.1:5571 --control tcp://127.0.0.1:5572

Every flag can also come from an ORDERLY_BROKER_* environment variable or a
TOML file given with --config (keys are flag names with '_' for '-');
flags win over the environment, which wins over the file.";

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker until SIGTERM or SIGINT.
    Run(Box<RunArgs>),
    /// Check, repair or summarize the journal of a data directory.
    #[command(subcommand)]
    Journal(JournalCommand),
    /// Show a running broker's workers (alive, credits, in flight) and its
    /// pending and partial orders, through its admin endpoint.
    Status(AdminArgs),
    /// List dead-lettered orders of a running broker, or send them back to
    /// the queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Write a new CURVE key pair: PREFIX.key (secret, mode 0600) and
    /// PREFIX.pub (public, to give to clients).
    Keygen(KeygenArgs),
}

#[derive(clap::Args, Debug)]
struct KeygenArgs {
    /// Path prefix of the two files, e.g. /etc/orderly/broker.
    #[arg(long, value_name = "PREFIX")]
    out: PathBuf,
}

#[derive(clap::Args, Debug)]
struct AdminArgs {
    /// The broker's admin endpoint (`orderly-broker run --admin`).
    #[arg(long, env = "ORDERLY_BROKER_ADMIN", value_name = "ADDR", default_value = "127.0.0.1:5573")]
    admin: String,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum DlqCommand {
    /// List dead letters: order, attempts, last failure reason.
    List(AdminArgs),
    /// Send dead letters back to the queue with fresh attempts.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
    Retry {
        #[command(flatten)]
        admin: AdminArgs,
        /// The order, as PRODUCER/ORDER-ID (as `dlq list` prints it).
        id: Option<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
enum JournalCommand {
    /// Check every record (headers, lengths, CRCs, sequence numbers). Exit 0
    /// when the journal is sound (a torn tail, which start-up cuts off, is
    /// reported but sound); 1 when it is corrupt.
    Verify(JournalArgs),
    /// Cut the journal at its first bad record. Nothing is deleted: the cut
    /// bytes and every later segment are moved to a quarantine directory,
    /// which is printed. Run only with the broker stopped.
    Repair(JournalArgs),
    /// Count partial, pending, in-flight, acknowledged and dead-lettered
    /// orders and list the segments. Works while the broker runs.
    Inspect(JournalArgs),
}

#[derive(clap::Args, Debug)]
struct JournalArgs {
    /// The broker's data directory (the journal is in DIR/journal).
    #[arg(long, env = "ORDERLY_BROKER_DATA_DIR", value_name = "DIR", default_value = "orderly-data")]
    data_dir: PathBuf,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// TOML file with settings (keys are the flag names, e.g. `intake = "tcp://*:5570"`).
    #[arg(long, env = "ORDERLY_BROKER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Directory for the broker's state: its journal, in DIR/journal.
    #[arg(long, env = "ORDERLY_BROKER_DATA_DIR", value_name = "DIR", default_value = "orderly-data")]
    data_dir: PathBuf,

    /// When the journal fsyncs: `always` (before anything is confirmed; no
    /// confirmed order is lost even if the machine loses power),
    /// `interval:MS` (at most every MS ms; a power loss may lose orders
    /// confirmed in the last MS ms, a process crash loses nothing), or
    /// `never` (the OS decides; a power loss may lose any recent order).
    #[arg(long, env = "ORDERLY_BROKER_FSYNC", value_name = "POLICY", default_value = "always")]
    fsync: orderly_journal::FsyncPolicy,

    /// Bytes after which the journal starts a new segment. Compaction
    /// removes whole segments, so smaller segments free disk sooner.
    #[arg(long, env = "ORDERLY_BROKER_JOURNAL_SEGMENT_BYTES", value_name = "BYTES",
          default_value_t = orderly_journal::SEGMENT_BYTES_TARGET_DEFAULT,
          value_parser = clap::value_parser!(u64).range(4096..))]
    journal_segment_bytes: u64,

    /// Where producers PUSH items (broker binds PULL). Use tcp://*:5570 to
    /// listen on every interface.
    #[arg(long, env = "ORDERLY_BROKER_INTAKE", value_name = "EP", default_value = "tcp://127.0.0.1:5570")]
    intake: Endpoint,

    /// Where the broker PUBlishes dispatches, confirms and heartbeats
    /// (workers and producers SUBscribe).
    #[arg(long, env = "ORDERLY_BROKER_FANOUT", value_name = "EP", default_value = "tcp://127.0.0.1:5571")]
    fanout: Endpoint,

    /// Where workers PUSH heartbeats, acks and nacks (broker binds PULL).
    #[arg(long, env = "ORDERLY_BROKER_CONTROL", value_name = "EP", default_value = "tcp://127.0.0.1:5572")]
    control: Endpoint,

    /// Milliseconds between heartbeats, both directions.
    #[arg(long, env = "ORDERLY_BROKER_HEARTBEAT_INTERVAL_MS", value_name = "MS",
          default_value_t = limits::HEARTBEAT_INTERVAL_MS_DEFAULT, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    heartbeat_interval_ms: u64,

    /// Heartbeats a worker may miss before it is declared dead and its
    /// orders go to other workers.
    #[arg(long, env = "ORDERLY_BROKER_HEARTBEAT_LIVENESS", value_name = "N",
          default_value_t = limits::HEARTBEAT_LIVENESS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=100))]
    heartbeat_liveness: u32,

    /// Deliveries of one order before it is dead-lettered.
    #[arg(long, env = "ORDERLY_BROKER_MAX_ATTEMPTS", value_name = "N",
          default_value_t = limits::MAX_ATTEMPTS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_attempts: u32,

    /// Open partial orders at which the broker stops reading intake.
    #[arg(long, env = "ORDERLY_BROKER_PARTIAL_ORDERS_MAX", value_name = "N",
          default_value_t = limits::PARTIAL_ORDERS_MAX_DEFAULT)]
    partial_orders_max: usize,

    /// Open partial orders one producer may have; a Begin past it is
    /// rejected (limit_reached), so one producer cannot starve the others.
    #[arg(long, env = "ORDERLY_BROKER_PARTIAL_ORDERS_PER_PRODUCER_MAX", value_name = "N",
          default_value_t = limits::PARTIAL_ORDERS_PER_PRODUCER_MAX_DEFAULT, value_parser = parse_positive)]
    partial_orders_per_producer_max: usize,

    /// Item bytes one order may carry; a larger order is rejected
    /// (too_large). At most 16 MiB.
    #[arg(long, env = "ORDERLY_BROKER_ORDER_BYTES_MAX", value_name = "BYTES",
          default_value_t = limits::ORDER_BYTES_MAX as u64,
          value_parser = clap::value_parser!(u64).range(1..=limits::ORDER_BYTES_MAX as u64))]
    order_bytes_max: u64,

    /// Items one order may carry; more is rejected (too_large). At most 100,000.
    #[arg(long, env = "ORDERLY_BROKER_ORDER_ITEMS_MAX", value_name = "N",
          default_value_t = limits::ORDER_ITEMS_MAX,
          value_parser = clap::value_parser!(u32).range(1..=limits::ORDER_ITEMS_MAX as i64))]
    order_items_max: u32,

    /// Sealed, unacknowledged orders at which the broker stops reading intake.
    #[arg(long, env = "ORDERLY_BROKER_PENDING_ORDERS_MAX", value_name = "N",
          default_value_t = limits::PENDING_ORDERS_MAX_DEFAULT)]
    pending_orders_max: usize,

    /// Item bytes of partial and pending orders at which the broker stops
    /// reading intake (the journal holds them; RAM only the cache below).
    #[arg(long, env = "ORDERLY_BROKER_PENDING_BYTES_MAX", value_name = "BYTES",
          default_value_t = limits::PENDING_BYTES_MAX_DEFAULT)]
    pending_bytes_max: u64,

    /// Item bytes of partial orders (held in RAM until their Finish) at
    /// which the broker stops reading intake.
    #[arg(long, env = "ORDERLY_BROKER_PARTIAL_BYTES_MAX", value_name = "BYTES",
          default_value_t = limits::PARTIAL_BYTES_MAX_DEFAULT)]
    partial_bytes_max: u64,

    /// Item bytes of sealed orders kept in RAM for dispatch. Beyond it the
    /// newest orders' items are dropped from RAM and read back from the
    /// journal when they are dispatched, so a large backlog costs disk, not
    /// memory.
    #[arg(long, env = "ORDERLY_BROKER_PAYLOAD_CACHE_BYTES", value_name = "BYTES",
          default_value_t = limits::PAYLOAD_CACHE_BYTES_DEFAULT)]
    payload_cache_bytes: u64,

    /// Milliseconds a partial order may wait for its Finish before it is
    /// rejected as expired.
    #[arg(long, env = "ORDERLY_BROKER_PARTIAL_AGE_MAX_MS", value_name = "MS",
          default_value_t = limits::PARTIAL_AGE_MAX_MS_DEFAULT)]
    partial_age_max_ms: u64,

    /// Milliseconds an order may stay with a worker without an ack before it
    /// is redelivered. A worker extends it by listing the order in its
    /// heartbeats (so long-running handlers are fine while it is alive).
    #[arg(long, env = "ORDERLY_BROKER_ACK_TIMEOUT_MS", value_name = "MS",
          default_value_t = limits::ACK_TIMEOUT_MS_DEFAULT, value_parser = clap::value_parser!(u64).range(100..))]
    ack_timeout_ms: u64,

    /// Milliseconds the key (producer id, order id) of an acknowledged order
    /// is remembered: a resend within the window is confirmed again and not
    /// processed twice. Kept in the journal, so it survives restarts (and
    /// restarts in full after one).
    #[arg(long, env = "ORDERLY_BROKER_DEDUP_WINDOW_MS", value_name = "MS",
          default_value_t = limits::DEDUP_WINDOW_MS_DEFAULT)]
    dedup_window_ms: u64,

    /// Keys remembered at most (about 100 bytes of memory each); past it the
    /// oldest leave the window early.
    #[arg(long, env = "ORDERLY_BROKER_DEDUP_KEYS_MAX", value_name = "N",
          default_value_t = limits::DEDUP_KEYS_MAX_DEFAULT)]
    dedup_keys_max: usize,

    /// This broker's CURVE key pair (from `orderly-broker keygen`). With
    /// --authorized-keys it turns on CURVE on all three sockets: traffic is
    /// encrypted and only authorized keys may connect.
    #[arg(long, env = "ORDERLY_BROKER_CURVE_SECRET_KEY", value_name = "FILE", requires = "authorized_keys")]
    curve_secret_key: Option<PathBuf>,

    /// Clients admitted under CURVE: lines of `PUBLIC-KEY ROLE ID` (role
    /// producer or worker). Re-read on SIGHUP.
    #[arg(long, env = "ORDERLY_BROKER_AUTHORIZED_KEYS", value_name = "FILE", requires = "curve_secret_key")]
    authorized_keys: Option<PathBuf>,

    /// Allow plaintext (no CURVE) on endpoints other machines can reach.
    #[arg(long, env = "ORDERLY_BROKER_ALLOW_INSECURE")]
    allow_insecure: bool,

    /// Admin HTTP endpoint (GET /status, /dlq, /metrics; POST /dlq/retry).
    /// Keep it on loopback: it has no authentication. `off` disables it.
    #[arg(long, env = "ORDERLY_BROKER_ADMIN", value_name = "ADDR", default_value = "127.0.0.1:5573",
          value_parser = parse_admin)]
    admin: AdminAddr,

    /// Seconds between status lines in the log.
    #[arg(long, env = "ORDERLY_BROKER_STATUS_INTERVAL_SECS", value_name = "SECS", default_value_t = 10)]
    status_interval_secs: u64,

    /// Log filter: error, warn, info, debug or trace (RUST_LOG wins).
    #[arg(long, env = "ORDERLY_BROKER_LOG_LEVEL", value_name = "LEVEL", default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("orderly-broker: error: {error:#}");
            // A bad config file is bad usage, like a bad flag.
            let usage = error.chain().any(|cause| cause.is::<orderly_cli::ConfigError>());
            ExitCode::from(if usage { exit::USAGE } else { exit::FAILURE })
        }
    }
}

fn parse_cli() -> anyhow::Result<Cli> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = Cli::parse_from(&args);
    let Command::Run(run) = &cli.command else { return Ok(cli) };
    let Some(path) = &run.config else { return Ok(cli) };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    let merged = merge_config_file(Cli::command(), args, "run", &text)
        .with_context(|| format!("config file {}", path.display()))?;
    Ok(Cli::parse_from(merged))
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = parse_cli()?;
    let args = match cli.command {
        Command::Run(args) => *args,
        Command::Journal(command) => {
            init_logging("warn");
            return journal_command(command);
        }
        Command::Status(args) => return status_command(&args),
        Command::Keygen(args) => return keygen(&args.out),
        Command::Dlq(command) => return dlq_command(command),
    };
    init_logging(&args.log_level);
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&shutdown)).context("cannot install signal handlers")?;
    }
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .context("cannot install the SIGHUP handler")?;
    let curve = match (&args.curve_secret_key, &args.authorized_keys) {
        (Some(secret), Some(authorized)) => Some(io::CurveConfig {
            keys: orderly_security::keys::load_secret(secret)?,
            authorized_keys: authorized.clone(),
        }),
        _ => None,
    };
    let config = BrokerConfig {
        intake: args.intake,
        fanout: args.fanout,
        control: args.control,
        data_dir: args.data_dir,
        journal: orderly_journal::Options {
            fsync: args.fsync,
            segment_bytes_target: args.journal_segment_bytes,
            ..orderly_journal::Options::default()
        },
        core: CoreConfig {
            incarnation: rand::random(),
            heartbeat_interval_ms: args.heartbeat_interval_ms,
            heartbeat_liveness: args.heartbeat_liveness,
            max_attempts: args.max_attempts,
            partial_orders_max: args.partial_orders_max,
            pending_orders_max: args.pending_orders_max,
            pending_bytes_max: args.pending_bytes_max,
            payload_cache_bytes: args.payload_cache_bytes,
            partial_bytes_max: args.partial_bytes_max,
            partial_age_max_ms: args.partial_age_max_ms,
            ack_timeout_ms: args.ack_timeout_ms,
            dedup_window_ms: args.dedup_window_ms,
            dedup_keys_max: args.dedup_keys_max,
            order_bytes_max: args.order_bytes_max,
            order_items_max: args.order_items_max,
            partial_orders_per_producer_max: args.partial_orders_per_producer_max,
        },
        admin: args.admin.0,
        curve,
        allow_insecure: args.allow_insecure,
        status_interval_ms: args.status_interval_secs.max(1) * 1000,
    };
    let summary = io::run(config, shutdown, reload)?;
    tracing::info!(
        sealed = summary.counters.orders_sealed,
        acked = summary.counters.orders_acked,
        rejected = summary.counters.orders_rejected,
        decode_errors = summary.decode_errors_intake + summary.decode_errors_control,
        journal_bytes_written = summary.journal_bytes_written,
        journal_bytes_on_disk = summary.journal_bytes_on_disk,
        "shut down cleanly"
    );
    Ok(ExitCode::from(exit::OK))
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

fn journal_command(command: JournalCommand) -> anyhow::Result<ExitCode> {
    match command {
        JournalCommand::Verify(args) => ops::verify(&args.data_dir),
        JournalCommand::Repair(args) => ops::repair(&args.data_dir),
        JournalCommand::Inspect(args) => ops::inspect(&args.data_dir),
    }
}

/// `--admin ADDR`, or `off`.
#[derive(Debug, Clone)]
struct AdminAddr(Option<std::net::SocketAddr>);

fn parse_admin(text: &str) -> Result<AdminAddr, String> {
    if text == "off" {
        return Ok(AdminAddr(None));
    }
    text.parse()
        .map(|addr| AdminAddr(Some(addr)))
        .map_err(|_| format!("{text:?} is not an address like 127.0.0.1:5573 (or `off`)"))
}

fn status_command(args: &AdminArgs) -> anyhow::Result<ExitCode> {
    let body = admin::request(&args.admin, "GET", "/status")?;
    if args.json {
        print!("{body}");
        return Ok(ExitCode::from(exit::OK));
    }
    let v: serde_json::Value = serde_json::from_str(&body).context("the admin endpoint sent invalid JSON")?;
    println!("workers:");
    let workers = v["workers"].as_array().cloned().unwrap_or_default();
    if workers.is_empty() {
        println!("  (none connected)");
    }
    for w in workers {
        let ready = if w["ready"].as_bool() == Some(true) { "alive" } else { "joining" };
        let (capacity, in_flight) = (w["capacity"].as_u64().unwrap_or(0), w["in_flight"].as_u64().unwrap_or(0));
        println!(
            "  {:<24} {ready:<8} credits {:>4} free of {:>4}  in flight {in_flight}",
            w["id"].as_str().unwrap_or("?"),
            capacity.saturating_sub(in_flight),
            capacity
        );
    }
    for (label, key) in [
        ("partial orders", "partial_orders"),
        ("pending orders", "pending_orders"),
        ("in-flight orders", "in_flight_orders"),
        ("dead letters", "dead_letters"),
        ("held bytes", "held_bytes"),
        ("journal segments", "journal_segments"),
        ("journal bytes", "journal_bytes"),
    ] {
        println!("{label:<17} {}", v[key]);
    }
    Ok(ExitCode::from(exit::OK))
}

fn dlq_command(command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List(args) => {
            let body = admin::request(&args.admin, "GET", "/dlq")?;
            if args.json {
                print!("{body}");
                return Ok(ExitCode::from(exit::OK));
            }
            let letters: Vec<serde_json::Value> =
                serde_json::from_str(&body).context("the admin endpoint sent invalid JSON")?;
            for l in &letters {
                println!(
                    "{}/{}\tattempts {}\t{}",
                    l["producer"].as_str().unwrap_or("?"),
                    l["id"].as_str().unwrap_or("?"),
                    l["attempts"],
                    l["reason"].as_str().unwrap_or("")
                );
            }
            println!("{} dead letters", letters.len());
        }
        DlqCommand::Retry { admin: args, id, all } => {
            let path = match (&id, all) {
                (_, true) => "/dlq/retry?all=1".to_string(),
                (Some(id), false) => {
                    admin::parse_order_ref(id).map_err(|e| anyhow::anyhow!(e))?;
                    format!("/dlq/retry?id={}", admin::percent_encode(id))
                }
                (None, false) => unreachable!("clap requires an id or --all"),
            };
            let body = admin::request(&args.admin, "POST", &path)?;
            let v: serde_json::Value = serde_json::from_str(&body).context("the admin endpoint sent invalid JSON")?;
            let revived = v["revived"].as_u64().unwrap_or(0);
            println!("{revived} dead letters returned to the queue");
            if revived == 0 && id.is_some() {
                eprintln!("no dead letter {} (see `orderly-broker dlq list`)", id.unwrap_or_default());
                return Ok(ExitCode::from(exit::FAILURE));
            }
        }
    }
    Ok(ExitCode::from(exit::OK))
}

fn parse_positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{text:?} is not a positive whole number")),
    }
}

fn keygen(prefix: &std::path::Path) -> anyhow::Result<ExitCode> {
    print!("{}", orderly_security::keys::keygen(prefix)?);
    Ok(ExitCode::from(exit::OK))
}
