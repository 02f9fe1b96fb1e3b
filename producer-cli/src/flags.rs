//! The flags of `orderly-producer` (clap) and their one conversion into
//! the library's [`ProducerConfig`] plus the settings of `send` and `bench`:
//! flags > environment > config file > defaults.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use orderly_cli::{merge_config_path, parse_log_level, DurationArg, LogFormat};
use orderly_common::ids::validate_peer_id;
use orderly_common::limits::{ITEM_BYTES_MAX, ORDER_ITEMS_MAX};
use orderly_common::members::Members;
use orderly_common::Endpoint;
use orderly_producer::limits::RESEND_BACKOFF_MAX_DEFAULT;
use orderly_producer::ProducerConfig;

use crate::relay::store::{validate_table, Database};
use crate::relay::RelaySettings;

/// Bounds of a duration flag, in seconds (a NaN or infinity is refused too).
const SECONDS_MIN: f64 = 0.001;
pub(crate) const SECONDS_MAX: f64 = 1e9;
/// Longest `relay --retention`: ten years, far past any need, and well
/// inside what the databases' interval arithmetic takes.
const RETENTION_SECS_MAX: u64 = 10 * 365 * 24 * 3600;
/// Bounds of `bench --rate`, in orders per second (0 is allowed too: no pacing).
const RATE_MIN: f64 = 0.001;
const RATE_MAX: f64 = 1e9;

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
  orderly-producer send --id shop-1 --group /etc/orderly/group.toml --file orders.jsonl

Exit codes: 0 every order confirmed; 1 runtime failure; 2 bad usage;
3 some orders rejected or invalid; 4 timed out waiting for the broker.
Every flag can also come from an ORDERLY_PRODUCER_* environment variable or
a TOML file given with --config (flags > environment > file > defaults).";

/// What `relay --help` teaches after the flags.
const RELAY_GUIDE: &str = "\
The application writes one row per order, in the same transaction as its own change:

  INSERT INTO orderly_outbox (order_id, items) VALUES ('order-1', '[{\"sku\": \"A1\", \"qty\": 2}]');

  order_id  unique per --id (the broker deduplicates by it; up to 256 bytes)
  items     a JSON array, one element per item

Create the table with --print-schema. The relay claims committed rows (FOR UPDATE SKIP LOCKED on
PostgreSQL: several relays may share a table, with one --id), sends each as an order and marks it
confirmed only once the broker confirms. A relay killed at any point sends its unconfirmed rows
again after --claim-lease, and the broker's dedup window makes that harmless. Rows in flight have
their claims renewed, so a slow broker does not cause resends.

--database URL forms:
  sqlite:PATH  (or sqlite://PATH)                      a SQLite file on this host
  postgres://USER[:PASSWORD]@HOST[:PORT]/DBNAME          (or postgresql://)
  postgresql:///DBNAME?user=USER&host=/run/postgresql    through the local socket
  postgres://USER@HOST/DBNAME?sslmode=verify-full&sslrootcert=/etc/orderly/db-ca.pem

PostgreSQL TLS, as libpq: sslmode= in the URL's query (add &sslrootcert=PATH for a private CA, a
PEM file; without it, or with sslrootcert=system, the system's CAs are trusted):
  disable      never TLS
  prefer       (the default) TLS when the server offers it, plain when not or when TLS fails;
               the certificate is not checked
  require      TLS, but the server's certificate is NOT checked (unless sslrootcert is given):
               it protects against eavesdropping, not against a server that impersonates yours
  verify-ca    TLS, and the certificate must lead to sslrootcert's CA (a system CA without it)
  verify-full  as verify-ca, and the certificate must name HOST: use this across a network
The relay logs (info) whether it connected over TLS.

Examples:
  orderly-producer relay --print-schema --database sqlite:/var/lib/shop/app.db | sqlite3 /var/lib/shop/app.db
  orderly-producer relay --print-schema --archive-table orderly_outbox_archive | psql postgres://shop@db/shop
  orderly-producer relay --id shop-1 --intake tcp://broker:5570 --fanout tcp://broker:5571 \\
      --database postgres://shop@db/shop --metrics 127.0.0.1:9464
  orderly-producer relay --id shop-1 --group /etc/orderly/group.toml --database sqlite:/var/lib/shop/app.db \\
      --retention 7days --archive-table orderly_outbox_archive

Runs until SIGTERM or SIGINT (exit 0, after waiting up to --timeout for answers); 1 on a runtime
failure (database or broker lost); 2 on bad usage.";

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Send orders read as JSON lines: {"id": "...", "items": [<any JSON>, ...]}.
    Send(SendArgs),
    /// Generate N orders of K items of S bytes and report throughput and
    /// confirm latency.
    Bench(BenchArgs),
    /// Relay a transactional outbox table to the broker: rows the
    /// application INSERTed as (order_id, items) in its own transactions
    /// are sent as orders and marked confirmed once the broker confirms.
    #[command(after_long_help = RELAY_GUIDE, after_help = "Run `orderly-producer relay --help` for the INSERT to write, the URL forms and examples.")]
    Relay(RelayArgs),
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
    #[arg(long, env = "ORDERLY_PRODUCER_CURVE_SECRET_KEY", value_name = "FILE")]
    curve_secret_key: Option<PathBuf>,

    /// The broker's CURVE public key: 40 Z85 characters, or a file holding
    /// them (the broker's PREFIX.pub). With --group, each member's
    /// `public_key` in the group file wins; this key is for members
    /// without one (not needed when every member has one).
    #[arg(long, env = "ORDERLY_PRODUCER_BROKER_PUBLIC_KEY", value_name = "KEY|FILE", requires = "curve_secret_key")]
    broker_public_key: Option<String>,

    /// This producer's id ([A-Za-z0-9._-], up to 64 bytes). Order ids are
    /// unique per producer id; keep the id across restarts so the broker
    /// recognises resent orders.
    #[arg(long, env = "ORDERLY_PRODUCER_ID", value_name = "ID", default_value = "producer",
          value_parser = parse_peer_id)]
    id: String,

    /// A group of brokers instead of one broker: the TOML group file the
    /// brokers run with (`orderly-broker run --group FILE`), one
    /// [[member]] table per broker with id, intake, fanout, control, peer
    /// and admin. Every member's fanout is subscribed; orders go to the
    /// leader its heartbeats announce, and unconfirmed ones are resent to
    /// a new leader at once. In place of --intake and --fanout. With
    /// CURVE, each member's `public_key` from the file is used (see
    /// docs/REPLICATION.md).
    #[arg(long, env = "ORDERLY_PRODUCER_GROUP", value_name = "FILE", conflicts_with_all = ["intake", "fanout"])]
    group: Option<PathBuf>,

    /// The broker's intake endpoint (we PUSH items there).
    #[arg(long, env = "ORDERLY_PRODUCER_INTAKE", value_name = "EP", default_value = "tcp://127.0.0.1:5570")]
    intake: Endpoint,

    /// The broker's fanout endpoint (we SUBscribe for confirms there).
    #[arg(long, env = "ORDERLY_PRODUCER_FANOUT", value_name = "EP", default_value = "tcp://127.0.0.1:5571")]
    fanout: Endpoint,

    /// Seconds to wait for the broker: to answer the handshake, to make
    /// room in a full window (backpressure), and for the next answer.
    /// A bare number is seconds (fractions allowed); `1m`, `500ms` work too.
    #[arg(long, env = "ORDERLY_PRODUCER_TIMEOUT", value_name = "SECONDS", default_value_t = 30.0,
          value_parser = parse_seconds)]
    timeout: f64,

    /// Seconds an order may wait for its answer before it is sent again
    /// (safe: the broker never processes an order twice); the wait doubles
    /// with each resend, up to 60 s. A bare number is seconds; `1m`,
    /// `500ms` work too.
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

    /// Bytes of one batch of whole orders (an `orders` message: items, ids
    /// and framing), sent when the broker takes batches (0.4 and later);
    /// an order larger goes alone. 0 sends every order on its own. At most
    /// 262144 (the default).
    #[arg(long, env = "ORDERLY_PRODUCER_BATCH_BYTES", value_name = "BYTES",
          default_value_t = orderly_producer::limits::BATCH_BYTES_MAX)]
    batch_bytes: usize,

    /// Milliseconds a batch that is not full may wait for more orders
    /// while orders keep coming (Kafka's linger.ms); a lone order after a
    /// quiet spell goes at once. 0 (the default): batch what is at hand.
    /// At most 100.
    #[arg(long, env = "ORDERLY_PRODUCER_LINGER_MS", value_name = "MS", default_value_t = 0)]
    linger_ms: u64,

    /// Log filter: error, warn, info, debug, trace or off, or directives
    /// such as `warn,orderly_producer=debug`. RUST_LOG, when set, wins.
    #[arg(long, env = "ORDERLY_PRODUCER_LOG_LEVEL", value_name = "LEVEL", default_value = "warn",
          value_parser = parse_log_level)]
    log_level: String,

    /// Log lines as `text` or `json` (one object per line: timestamp,
    /// level, target, fields).
    #[arg(long, env = "ORDERLY_PRODUCER_LOG_FORMAT", value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(clap::Args, Debug)]
pub(crate) struct SendArgs {
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
pub(crate) struct BenchArgs {
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

#[derive(clap::Args, Debug)]
pub(crate) struct RelayArgs {
    /// The database holding the outbox table: sqlite:PATH or
    /// postgres://USER@HOST:PORT/DBNAME[?sslmode=MODE&sslrootcert=PATH]
    /// (TLS modes below; with --print-schema: picks the dialect,
    /// PostgreSQL when absent).
    #[arg(long, env = "ORDERLY_PRODUCER_DATABASE", value_name = "URL")]
    database: Option<String>,

    /// The outbox table ([a-z_][a-z0-9_]*).
    #[arg(long, env = "ORDERLY_PRODUCER_TABLE", value_name = "NAME", default_value = "orderly_outbox")]
    table: String,

    /// Print the SQL that creates the outbox table (in the dialect of
    /// --database) and exit; needs no other flag.
    #[arg(long)]
    print_schema: bool,

    /// Seconds between looks at the table when nothing is in flight
    /// (PostgreSQL also wakes on each commit through LISTEN/NOTIFY).
    #[arg(long, env = "ORDERLY_PRODUCER_POLL_INTERVAL", value_name = "SECONDS", default_value_t = 1.0,
          value_parser = parse_seconds)]
    poll_interval: f64,

    /// Seconds a claimed row is kept from other relays; a row still
    /// unconfirmed after that (its relay died) is claimed and sent again.
    #[arg(long, env = "ORDERLY_PRODUCER_CLAIM_LEASE", value_name = "SECONDS", default_value_t = 60.0,
          value_parser = parse_seconds)]
    claim_lease: f64,

    /// How long confirmed rows stay in the table: older ones are deleted
    /// (or moved to --archive-table) in batches, looked for every 10 s (or
    /// every half retention, when shorter). The default
    /// keeps a day to answer "was order X sent, and when?" while the
    /// table stays small. `0` removes rows as soon as they are confirmed.
    /// Rejected rows are never removed: they wait for the operator (see
    /// their `error` column; set `state = 'pending'` to send one again).
    /// A bare number is seconds; `24h`, `7days`, `30m` work too.
    #[arg(long, env = "ORDERLY_PRODUCER_RETENTION", value_name = "DURATION", default_value = "24h",
          value_parser = DurationArg::secs().range(0..=RETENTION_SECS_MAX))]
    retention: u64,

    /// Move confirmed rows past --retention into this table (same columns;
    /// --print-schema prints it too) instead of deleting them: copy and
    /// delete in one transaction.
    #[arg(long, env = "ORDERLY_PRODUCER_ARCHIVE_TABLE", value_name = "NAME")]
    archive_table: Option<String>,

    /// Serve Prometheus metrics on HOST:PORT (GET /metrics): lag, rows
    /// claimed, resent, confirmed, rejected, in flight, retired.
    #[arg(long, env = "ORDERLY_PRODUCER_METRICS", value_name = "HOST:PORT")]
    metrics: Option<std::net::SocketAddr>,

    /// Last, so `relay --help` shows the relay's own flags first.
    #[command(flatten)]
    common: Common,
}

/// What `relay` was asked to do.
pub(crate) enum RelayCommand {
    PrintSchema {
        database: Database,
        table: String,
        archive: Option<String>,
    },
    /// Boxed: the settings are large, the other variant small.
    Run(Box<RelaySettings>),
}

impl RelayArgs {
    pub(crate) fn log(&self) -> (&str, LogFormat) {
        (&self.common.log_level, self.common.log_format)
    }

    /// The validated settings; a bad --database or --table is bad usage.
    pub(crate) fn into_command(self) -> anyhow::Result<RelayCommand> {
        let usage = |text: String| anyhow::Error::new(orderly_cli::ConfigError::Usage(text));
        let table = validate_table(&self.table).map_err(|e| usage(format!("--table: {e}")))?;
        let database = match &self.database {
            Some(url) => Some(Database::parse(url).map_err(|e| usage(format!("--database: {e}")))?),
            None => None,
        };
        let archive = match &self.archive_table {
            Some(name) => {
                let name = validate_table(name).map_err(|e| usage(format!("--archive-table: {e}")))?;
                if name == table {
                    return Err(usage(format!(
                        "--archive-table {name} is the outbox table itself: name another table, e.g. {table}_archive"
                    )));
                }
                Some(name)
            }
            None => None,
        };
        if self.print_schema {
            let database = database.unwrap_or(Database::Postgres(String::new()));
            return Ok(RelayCommand::PrintSchema { database, table, archive });
        }
        let Some(database) = database else {
            return Err(usage(
                "relay needs --database URL (sqlite:PATH or postgres://...): the table the application writes".into(),
            ));
        };
        if self.common.outbox.is_some() {
            return Err(usage("relay takes no --outbox: the database table is its outbox".into()));
        }
        Ok(RelayCommand::Run(Box::new(RelaySettings {
            producer: self.common.producer_config()?,
            database,
            table,
            poll_interval: Duration::from_secs_f64(self.poll_interval),
            claim_lease: Duration::from_secs_f64(self.claim_lease),
            answer_timeout: Duration::from_secs_f64(self.common.timeout),
            retention: Duration::from_secs(self.retention),
            archive_table: archive,
            metrics: self.metrics,
        })))
    }
}

fn parse_peer_id(text: &str) -> Result<String, String> {
    validate_peer_id("producer id", text).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

/// Seconds: a bare number (fractions allowed, as before) or a duration
/// with its unit (`30s`, `1m30s`, `500ms`).
fn parse_seconds(text: &str) -> Result<f64, String> {
    let seconds = match text.trim().parse::<f64>() {
        Ok(seconds) => seconds,
        Err(_) => humantime::parse_duration(text.trim()).map(|d| d.as_secs_f64()).map_err(|error| {
            format!("{text:?} is not a duration ({error}): give a number of seconds (2.5) or a duration like \"30s\", \"1m30s\", \"500ms\"")
        })?,
    };
    if (SECONDS_MIN..=SECONDS_MAX).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!("{text:?} is not a number of seconds from 0.001 up to {SECONDS_MAX:e}"))
    }
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate == 0.0 || (RATE_MIN..=RATE_MAX).contains(&rate) => Ok(rate),
        _ => Err(format!("{text:?} is not 0 or a number of orders per second from {RATE_MIN} to {RATE_MAX:e}")),
    }
}

/// Parses the command line, then again with the `--config` file merged in
/// (flags and environment win over it). A bad flag exits with clap's usage
/// error (code 2).
pub(crate) fn parse() -> anyhow::Result<Command> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = parse_from(&args);
    let (name, common) = match &cli.command {
        Command::Send(a) => ("send", &a.common),
        Command::Bench(a) => ("bench", &a.common),
        Command::Relay(a) => ("relay", &a.common),
        Command::Keygen { .. } => return Ok(cli.command),
    };
    let Some(path) = &common.config else { return Ok(cli.command) };
    // A missing or bad file is a ConfigError: exit 2, naming the file.
    let merged = merge_config_path(command(), args, name, path)?;
    Ok(parse_from(&merged).command)
}

/// The command line, with `relay`'s help told for the relay: the shared
/// flags that mean something else there say so, and `--outbox` (refused:
/// the table is the relay's outbox) is hidden but still named in its error.
fn command() -> clap::Command {
    Cli::command().mut_subcommand("relay", |relay| {
        relay
            .mut_arg("outbox", |arg| arg.hide(true))
            .mut_arg("id", |arg| {
                arg.help(
                    "The relay's producer id ([A-Za-z0-9._-], up to 64 bytes): the broker deduplicates by id and \
                     order_id. Every relay on one table runs with the same --id, kept across restarts, so a row two \
                     of them (or a restarted one) sent is processed once",
                )
            })
            .mut_arg("window", |arg| {
                arg.help("Rows sent but not yet answered, at most (each claim takes up to 256 rows)")
            })
            .mut_arg("timeout", |arg| {
                arg.help(
                    "Seconds to wait for the broker's handshake and for room in a full window; at SIGTERM or \
                     SIGINT, how long to wait for answers to what was sent. A bare number is seconds; `1m`, \
                     `500ms` work too",
                )
            })
    })
}

/// [`Cli::parse_from`] over [`command`]: a bad flag exits with clap's
/// usage error (code 2).
fn parse_from(args: &[OsString]) -> Cli {
    let matches = command().get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

/// What `send` and `bench` share: the library's configuration and how long
/// to wait for the broker's next answer before giving up.
pub(crate) struct SessionSettings {
    pub(crate) producer: ProducerConfig,
    pub(crate) answer_timeout: Duration,
}

/// `send`: where the orders come from and where confirmed ids go.
pub(crate) struct SendSettings {
    pub(crate) session: SessionSettings,
    /// Standard input when `None`.
    pub(crate) file: Option<PathBuf>,
    pub(crate) confirmed_log: Option<PathBuf>,
}

/// `bench`: the generated orders and their pacing.
pub(crate) struct BenchSettings {
    pub(crate) session: SessionSettings,
    pub(crate) orders: u64,
    pub(crate) items: u32,
    pub(crate) item_bytes: usize,
    /// Orders per second; `None` sends as fast as the window allows.
    pub(crate) rate: Option<f64>,
}

impl SendArgs {
    pub(crate) fn log(&self) -> (&str, LogFormat) {
        (&self.common.log_level, self.common.log_format)
    }

    /// The validated settings; loads the CURVE keys.
    pub(crate) fn into_settings(self) -> anyhow::Result<SendSettings> {
        Ok(SendSettings { session: self.common.session()?, file: self.file, confirmed_log: self.confirmed_log })
    }
}

impl BenchArgs {
    pub(crate) fn log(&self) -> (&str, LogFormat) {
        (&self.common.log_level, self.common.log_format)
    }

    /// The validated settings; loads the CURVE keys.
    pub(crate) fn into_settings(self) -> anyhow::Result<BenchSettings> {
        Ok(BenchSettings {
            session: self.common.session()?,
            orders: self.orders,
            items: self.items,
            item_bytes: self.item_bytes as usize,
            rate: (self.rate > 0.0).then_some(self.rate),
        })
    }
}

impl Common {
    fn session(&self) -> anyhow::Result<SessionSettings> {
        Ok(SessionSettings { producer: self.producer_config()?, answer_timeout: Duration::from_secs_f64(self.timeout) })
    }

    /// The library configuration the flags describe.
    fn producer_config(&self) -> anyhow::Result<ProducerConfig> {
        let timeout = Duration::from_secs_f64(self.timeout);
        let confirm_timeout = Duration::from_secs_f64(self.confirm_timeout);
        let mut config = match &self.group {
            Some(path) => ProducerConfig::with_members(self.id.clone(), load_members(path)?),
            None => ProducerConfig::new(self.id.clone(), self.intake.clone(), self.fanout.clone()),
        };
        config.handshake_timeout = timeout;
        config.send_timeout = timeout;
        config.confirm_timeout = confirm_timeout;
        config.resend_backoff_max = RESEND_BACKOFF_MAX_DEFAULT.max(confirm_timeout);
        config.outbox_orders_max = self.window as usize;
        config.outbox_dir = self.outbox.clone();
        config.pack_items = !self.one_frame_per_item;
        config.batch_bytes_max = self.batch_bytes;
        config.linger = Duration::from_millis(self.linger_ms);
        // Checked here, so a bad flag is a usage error naming the flag.
        if self.batch_bytes > orderly_producer::limits::BATCH_BYTES_MAX {
            let max = orderly_producer::limits::BATCH_BYTES_MAX;
            let reason = format!(
                "--batch-bytes {} is above {max}; use at most {max}, or 0 to send orders one by one",
                self.batch_bytes
            );
            return Err(anyhow::Error::new(orderly_cli::ConfigError::Usage(reason)));
        }
        if config.linger > orderly_producer::limits::BATCH_LINGER_MAX {
            let reason =
                format!("--linger-ms {} is above 100; lingering adds to every confirm's latency", self.linger_ms);
            return Err(anyhow::Error::new(orderly_cli::ConfigError::Usage(reason)));
        }
        if let Some(secret) = &self.curve_secret_key {
            let members: Vec<(u64, Option<&str>)> =
                config.members.iter().flat_map(|m| m.iter()).map(|m| (m.id, m.public_key.as_deref())).collect();
            let broker_key = self.broker_public_key.as_deref();
            config.curve =
                Some(orderly_security::keys::CurveClient::load_for(secret, broker_key, &members).map_err(|error| {
                    match error {
                        // Bad usage (exit 2), as clap's own checks are.
                        orderly_security::keys::KeyError::NoBrokerKey { .. } => {
                            anyhow::Error::new(orderly_cli::ConfigError::Usage(error.to_string()))
                        }
                        error => error.into(),
                    }
                })?);
        }
        Ok(config)
    }
}

/// The brokers of a group file as the library sees them: the endpoints
/// clients use (peer and admin are the members' own business). A bad file
/// is a [`orderly_replication::group::GroupError`], which `main` reports as
/// bad usage.
fn load_members(path: &std::path::Path) -> anyhow::Result<Members> {
    let group = orderly_replication::Group::load(path)?;
    group.client_members().with_context(|| format!("group file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group of three on loopback (the ports are never bound here).
    const GROUP: &str = r#"
[[member]]
id = 1
intake = "tcp://127.0.0.1:41001"
fanout = "tcp://127.0.0.1:41002"
control = "tcp://127.0.0.1:41003"
peer = "tcp://127.0.0.1:41004"
admin = "127.0.0.1:41005"
[[member]]
id = 2
intake = "tcp://127.0.0.1:42001"
fanout = "tcp://127.0.0.1:42002"
control = "tcp://127.0.0.1:42003"
peer = "tcp://127.0.0.1:42004"
admin = "127.0.0.1:42005"
[[member]]
id = 3
intake = "tcp://127.0.0.1:43001"
fanout = "tcp://127.0.0.1:43002"
control = "tcp://127.0.0.1:43003"
peer = "tcp://127.0.0.1:43004"
admin = "127.0.0.1:43005"
"#;

    fn try_common(args: &[&str]) -> Result<Common, clap::Error> {
        let cli = Cli::try_parse_from(["orderly-producer", "send"].iter().chain(args))?;
        let Command::Send(send) = cli.command else { panic!("send") };
        Ok(send.common)
    }

    fn group_file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("group.toml");
        std::fs::write(&path, text).expect("write group file");
        (dir, path.to_str().expect("utf-8 path").to_owned())
    }

    #[test]
    fn group_conflicts_with_intake_and_fanout() {
        for other in [["--intake", "tcp://127.0.0.1:1"], ["--fanout", "tcp://127.0.0.1:1"]] {
            let args = ["--group", "g.toml", other[0], other[1]];
            let error = try_common(&args).expect_err("conflict");
            assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict, "{args:?}");
        }
        // The defaults of --intake and --fanout are no conflict.
        assert!(try_common(&["--group", "g.toml"]).is_ok());
    }

    #[test]
    fn group_file_gives_every_member_to_the_library() {
        let (_dir, path) = group_file(GROUP);
        let config = try_common(&["--group", &path]).expect("valid flags").producer_config().expect("valid group");
        let members = config.members.expect("group mode");
        let ids: Vec<u64> = members.iter().map(|member| member.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        let second = members.get(2).expect("member 2");
        assert_eq!(second.intake.as_str(), "tcp://127.0.0.1:42001");
        assert_eq!(second.fanout.as_str(), "tcp://127.0.0.1:42002");
        assert_eq!(second.control.as_str(), "tcp://127.0.0.1:42003");
        // Without --group: one broker, no members.
        assert!(try_common(&[]).expect("defaults").producer_config().expect("valid").members.is_none());
    }

    #[test]
    fn bad_group_file_is_a_group_error_naming_the_file() {
        let (_dir, path) = group_file(&GROUP.replace("id = 3", "id = 2"));
        let error = try_common(&["--group", &path]).expect("valid flags").producer_config().expect_err("bad group");
        assert!(error.chain().any(|cause| cause.is::<orderly_replication::GroupError>()), "{error:#}");
        let text = format!("{error:#}");
        assert!(text.contains(&path) && text.contains("both have id 2"), "{text}");
    }
}
