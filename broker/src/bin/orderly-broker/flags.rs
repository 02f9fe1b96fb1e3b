//! The command line: clap's definitions, and the one conversion of
//! `run`'s flags into a validated [`BrokerConfig`] (after the config file
//! is merged under the flags and the environment).

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use orderly_broker::admin::{self, AdminClient, AdminConfig, AdminToken};
use orderly_broker::core::CoreConfig;
use orderly_broker::io::{BrokerConfig, CurveConfig};
use orderly_cli::{merge_config_path, parse_log_level, DurationArg, LogFormat, SizeArg};
use orderly_common::limits;
use orderly_common::Endpoint;

/// The orderly broker: collects the items of each order from producers,
/// seals complete orders, and hands each one to exactly one live worker
/// until that worker acknowledges it.
#[derive(Parser, Debug)]
#[command(name = "orderly-broker", version, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "\
Example (all on one machine):
  orderly-broker run --data-dir ./orderly-data \\
      --intake tcp://127.0.0.1:5570 --fanout tcp://127.0.0.1:5571 --control tcp://127.0.0.1:5572

Every flag can also come from an ORDERLY_BROKER_* environment variable or a
TOML file given with --config (keys are flag names with '_' for '-');
flags win over the environment, which wins over the file.

Durations (--*-ms, --*-secs) take a number in the flag's unit or a value
with its own: 30s, 1m30s, 500ms. Sizes (--*-bytes*) take bytes or 8GiB,
512MiB (binary: KiB MiB GiB TiB) or 64KB (decimal: KB MB GB TB).";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the broker until SIGTERM or SIGINT.
    Run(Box<RunArgs>),
    /// Check, repair or summarize the journal of a data directory.
    #[command(subcommand)]
    Journal(JournalCommand),
    /// Show a running broker's workers (alive, credits, in flight) and its
    /// pending and partial orders, through its admin endpoint.
    Status(AdminArgs),
    /// List, show, retry or delete a running broker's dead letters.
    #[command(subcommand, after_help = ORDER_IDS)]
    Dlq(DlqCommand),
    /// Look at one order of a running broker, pending, in flight or dead.
    #[command(subcommand, after_help = ORDER_IDS)]
    Orders(OrdersCommand),
    /// Write a new CURVE key pair: PREFIX.key (secret, mode 0600) and
    /// PREFIX.pub (public, to give to clients).
    Keygen(KeygenArgs),
    /// Look at or change a group of brokers (`run --group`; see
    /// docs/REPLICATION.md).
    #[command(subcommand)]
    Group(GroupCommand),
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// One line per member, asked through its admin endpoint: its role
    /// (leader, catching_up, follower, or unreachable), the leader it
    /// knows, its Raft term, commit and applied indexes. Exits 0 when one
    /// member leads and a majority answers, 1 otherwise.
    Status(GroupStatusArgs),
    /// Add member ID to the running group. FILE must already list it (its
    /// [[member]] table); start it first with `run --join`. Asks the
    /// leader (found through the members' admin endpoints) to add it as a
    /// learner, then waits until the leader promotes it to voter once it
    /// has caught up. Exit codes: 0 added; 1 no leader reachable or the
    /// request failed; 2 usage (ID not in FILE); 3 the group refused (a
    /// change in progress, already a member, too many members); 4 it did
    /// not become a voter within --timeout-secs (it stays a learner and is
    /// promoted when it catches up: see `group status`).
    Add(GroupChangeArgs),
    /// Remove member ID from the running group (it may be down). The
    /// leader refuses when the members left would not have a live
    /// majority, or ID is the last one; when ID leads, it hands leadership
    /// over first and the command asks the new leader. Exit codes: 0
    /// removed; 1 no leader reachable or the request failed; 3 the group
    /// refused (unknown member, in progress, no majority left); 4 no
    /// answer within --timeout-secs.
    Remove(GroupChangeArgs),
}

#[derive(clap::Args, Debug)]
pub struct GroupChangeArgs {
    /// The group file (for `add`, listing the new member too).
    #[arg(long, env = "ORDERLY_BROKER_GROUP", value_name = "FILE")]
    pub group: PathBuf,
    /// The member to add or remove.
    #[arg(long, value_name = "ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub node_id: u64,
    /// File holding the admin token: changing the members always needs it.
    #[arg(long, env = "ORDERLY_BROKER_ADMIN_TOKEN", value_name = "FILE")]
    pub admin_token: Option<PathBuf>,
    /// How long to wait for a leader and for the change to complete.
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = DurationArg::secs())]
    pub timeout_secs: u64,
}

#[derive(clap::Args, Debug)]
pub struct GroupStatusArgs {
    /// The group file the members run with (`run --group`).
    #[arg(long, env = "ORDERLY_BROKER_GROUP", value_name = "FILE")]
    pub group: PathBuf,
    /// File holding the admin token, if the members' admin endpoints need
    /// one (beyond loopback).
    #[arg(long, env = "ORDERLY_BROKER_ADMIN_TOKEN", value_name = "FILE")]
    pub admin_token: Option<PathBuf>,
    /// Print JSON (one object per member) instead of a table.
    #[arg(long)]
    pub json: bool,
}

const ORDER_IDS: &str = "\
An order is written PRODUCER/ID, as `dlq list` prints it: the producer's id,
a slash, the order's id. An order id may itself contain '/': the text is
split at the first '/' (shop-1/2024/06/o-42 is order \"2024/06/o-42\" of
producer \"shop-1\"). Quote ids with spaces or shell characters.";

#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// Path prefix of the two files, e.g. /etc/orderly/broker.
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// The broker's admin endpoint (`orderly-broker run --admin`).
    #[arg(long, env = "ORDERLY_BROKER_ADMIN", value_name = "ADDR", default_value = "127.0.0.1:5573")]
    pub admin: String,
    /// File holding the admin token (as given to `run --admin-token`;
    /// mode 0600). Needed for `dlq show`, `dlq retry`, `dlq delete` and
    /// `orders show`, and for every command when the broker's admin
    /// endpoint is beyond loopback.
    #[arg(long, env = "ORDERLY_BROKER_ADMIN_TOKEN", value_name = "FILE")]
    pub admin_token: Option<PathBuf>,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl AdminArgs {
    /// The endpoint and, with `--admin-token`, its token (refused when
    /// group or others can read the file).
    pub fn client(&self) -> anyhow::Result<AdminClient> {
        let token = self.admin_token.as_deref().map(AdminToken::load).transpose()?;
        Ok(AdminClient { addr: self.admin.clone(), token })
    }
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// List dead letters, a page at a time, with the total.
    ///
    /// In order of their key: one tab-separated line each (order, attempts, first seen and dead since
    /// in UTC, last worker, last reason cut to fit: `--json` has it whole),
    /// then how many there are and the command for the next page.
    #[command(after_help = ORDER_IDS)]
    List(DlqListArgs),
    /// Print a dead letter as its handler receives it.
    ///
    /// The one JSON line an exec handler reads on stdin, byte for byte (`--info` adds the
    /// attempts, reason, worker and timestamps first). Items that are not
    /// JSON are in it as `{"base64":"…"}`, listed in `base64_items`.
    #[command(after_help = ORDER_IDS)]
    Show {
        #[command(flatten)]
        admin: AdminArgs,
        /// The dead letter, as PRODUCER/ID.
        id: String,
        /// Print its details too: attempts, last reason, last worker and
        /// timestamps.
        #[arg(long)]
        info: bool,
    },
    /// Send dead letters back to the queue with fresh attempts.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])), after_help = ORDER_IDS)]
    Retry {
        #[command(flatten)]
        admin: AdminArgs,
        /// The order, as PRODUCER/ORDER-ID (as `dlq list` prints it).
        id: Option<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters for good and print how many.
    ///
    /// Journaled: they stay deleted across restarts. Exits 1 when the id given is not a
    /// dead letter; `--all` with none exits 0.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])), after_help = ORDER_IDS)]
    Delete {
        #[command(flatten)]
        admin: AdminArgs,
        /// The dead letter, as PRODUCER/ID.
        id: Option<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct DlqListArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Start after this order (PRODUCER/ID): the last one of the previous
    /// page, as the `next page:` line gives it.
    #[arg(long, value_name = "PRODUCER/ID")]
    pub after: Option<String>,
    /// Dead letters on this page at most (the broker caps it at 10000).
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub limit: Option<usize>,
}

#[derive(Subcommand, Debug)]
pub enum OrdersCommand {
    /// Print one order's details and its handler's view.
    ///
    /// What the broker knows of one sealed order (where it is:
    /// pending, delayed, in flight or dead; attempts, worker, last reason,
    /// timestamps, when it is retried) and, last, the JSON line its
    /// handler receives (on its next attempt, for a pending order).
    #[command(after_help = ORDER_IDS)]
    Show {
        #[command(flatten)]
        admin: AdminArgs,
        /// The order, as PRODUCER/ID.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum JournalCommand {
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
pub struct JournalArgs {
    /// The broker's data directory (the journal is in DIR/journal).
    #[arg(long, env = "ORDERLY_BROKER_DATA_DIR", value_name = "DIR", default_value = "orderly-data")]
    pub data_dir: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// TOML file with settings (keys are the flag names, e.g. `intake = "tcp://*:5570"`).
    #[arg(long, env = "ORDERLY_BROKER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory for the broker's state: its journal, in DIR/journal.
    #[arg(long, env = "ORDERLY_BROKER_DATA_DIR", value_name = "DIR", default_value = "orderly-data")]
    pub data_dir: PathBuf,

    /// When the journal fsyncs: `always` (before anything is confirmed; no
    /// confirmed order is lost even if the machine loses power),
    /// `interval:MS` (at most every MS ms; a power loss may lose orders
    /// confirmed in the last MS ms, a process crash loses nothing), or
    /// `never` (the OS decides; a power loss may lose any recent order).
    #[arg(long, env = "ORDERLY_BROKER_FSYNC", value_name = "POLICY", default_value = "always")]
    pub fsync: orderly_journal::FsyncPolicy,

    /// Bytes after which the journal starts a new segment. Compaction
    /// removes whole segments, so smaller segments free disk sooner.
    #[arg(long, env = "ORDERLY_BROKER_JOURNAL_SEGMENT_BYTES", value_name = "BYTES",
          default_value_t = orderly_journal::SEGMENT_BYTES_TARGET_DEFAULT,
          value_parser = SizeArg::bytes().range(4096..=orderly_journal::SEGMENT_BYTES_TARGET_MAX))]
    pub journal_segment_bytes: u64,

    /// Where producers PUSH items (broker binds PULL). Use tcp://*:5570 to
    /// listen on every interface.
    #[arg(long, env = "ORDERLY_BROKER_INTAKE", value_name = "EP", default_value = "tcp://127.0.0.1:5570")]
    pub intake: Endpoint,

    /// Where the broker PUBlishes dispatches, confirms and heartbeats
    /// (workers and producers SUBscribe).
    #[arg(long, env = "ORDERLY_BROKER_FANOUT", value_name = "EP", default_value = "tcp://127.0.0.1:5571")]
    pub fanout: Endpoint,

    /// Where workers PUSH heartbeats, acks and nacks (broker binds PULL).
    #[arg(long, env = "ORDERLY_BROKER_CONTROL", value_name = "EP", default_value = "tcp://127.0.0.1:5572")]
    pub control: Endpoint,

    /// Milliseconds between heartbeats, both directions.
    #[arg(long, env = "ORDERLY_BROKER_HEARTBEAT_INTERVAL_MS", value_name = "MS",
          default_value_t = limits::HEARTBEAT_INTERVAL_MS_DEFAULT, value_parser = DurationArg::ms().range(10..=60_000))]
    pub heartbeat_interval_ms: u64,

    /// Heartbeats a worker may miss before it is declared dead and its
    /// orders go to other workers.
    #[arg(long, env = "ORDERLY_BROKER_HEARTBEAT_LIVENESS", value_name = "N",
          default_value_t = limits::HEARTBEAT_LIVENESS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub heartbeat_liveness: u32,

    /// Deliveries of one order before it is dead-lettered.
    #[arg(long, env = "ORDERLY_BROKER_MAX_ATTEMPTS", value_name = "N",
          default_value_t = limits::MAX_ATTEMPTS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_attempts: u32,

    /// Open partial orders at which the broker stops reading intake.
    #[arg(long, env = "ORDERLY_BROKER_PARTIAL_ORDERS_MAX", value_name = "N",
          default_value_t = limits::PARTIAL_ORDERS_MAX_DEFAULT)]
    pub partial_orders_max: usize,

    /// Open partial orders one producer may have; a Begin past it is
    /// rejected (limit_reached), so one producer cannot starve the others.
    #[arg(long, env = "ORDERLY_BROKER_PARTIAL_ORDERS_PER_PRODUCER_MAX", value_name = "N",
          default_value_t = limits::PARTIAL_ORDERS_PER_PRODUCER_MAX_DEFAULT, value_parser = parse_positive)]
    pub partial_orders_per_producer_max: usize,

    /// Item bytes one order may carry; a larger order is rejected
    /// (too_large). At most 16 MiB.
    #[arg(long, env = "ORDERLY_BROKER_ORDER_BYTES_MAX", value_name = "BYTES",
          default_value_t = limits::ORDER_BYTES_MAX as u64,
          value_parser = SizeArg::bytes().range(1..=limits::ORDER_BYTES_MAX as u64))]
    pub order_bytes_max: u64,

    /// Items one order may carry; more is rejected (too_large). At most 100,000.
    #[arg(long, env = "ORDERLY_BROKER_ORDER_ITEMS_MAX", value_name = "N",
          default_value_t = limits::ORDER_ITEMS_MAX,
          value_parser = clap::value_parser!(u32).range(1..=limits::ORDER_ITEMS_MAX as i64))]
    pub order_items_max: u32,

    /// Sealed, unacknowledged orders at which the broker stops reading
    /// intake. Checked as each intake message is read, so one batch of
    /// whole orders (up to 1024) may pass it.
    #[arg(long, env = "ORDERLY_BROKER_PENDING_ORDERS_MAX", value_name = "N",
          default_value_t = limits::PENDING_ORDERS_MAX_DEFAULT)]
    pub pending_orders_max: usize,

    /// Sealed, unacknowledged orders one producer may have; its new orders
    /// past it are rejected (limit_reached), so one producer cannot fill
    /// --pending-orders-max and starve the others. Off by default (the
    /// same as --pending-orders-max): the producer library reports
    /// limit_reached as a rejection, so a lone producer would be refused
    /// while the queue has room. Set it (e.g. to half of
    /// --pending-orders-max) when several producers share one broker.
    #[arg(long, env = "ORDERLY_BROKER_PENDING_ORDERS_PER_PRODUCER_MAX", value_name = "N",
          value_parser = parse_positive)]
    pub pending_orders_per_producer_max: Option<usize>,

    /// Item bytes of partial and pending orders at which the broker stops
    /// reading intake (the journal holds them; RAM only the cache below).
    #[arg(long, env = "ORDERLY_BROKER_PENDING_BYTES_MAX", value_name = "BYTES",
          default_value_t = limits::PENDING_BYTES_MAX_DEFAULT,
          value_parser = SizeArg::bytes())]
    pub pending_bytes_max: u64,

    /// Item bytes of partial orders (held in RAM until their Finish) at
    /// which the broker stops reading intake.
    #[arg(long, env = "ORDERLY_BROKER_PARTIAL_BYTES_MAX", value_name = "BYTES",
          default_value_t = limits::PARTIAL_BYTES_MAX_DEFAULT,
          value_parser = SizeArg::bytes())]
    pub partial_bytes_max: u64,

    /// Item bytes of sealed orders kept in RAM for dispatch. Beyond it the
    /// newest orders' items are dropped from RAM and read back from the
    /// journal when they are dispatched, so a large backlog costs disk, not
    /// memory. A full-throughput run uses ~2 MiB of it.
    #[arg(long, env = "ORDERLY_BROKER_PAYLOAD_CACHE_BYTES", value_name = "BYTES",
          default_value_t = limits::PAYLOAD_CACHE_BYTES_DEFAULT,
          value_parser = SizeArg::bytes())]
    pub payload_cache_bytes: u64,

    /// Milliseconds a partial order may wait for its Finish before it is
    /// rejected as expired.
    #[arg(long, env = "ORDERLY_BROKER_PARTIAL_AGE_MAX_MS", value_name = "MS",
          default_value_t = limits::PARTIAL_AGE_MAX_MS_DEFAULT,
          value_parser = DurationArg::ms())]
    pub partial_age_max_ms: u64,

    /// Milliseconds an order may stay with a worker without an ack before it
    /// is redelivered. A worker extends it by listing the order in its
    /// heartbeats (so long-running handlers are fine while it is alive).
    #[arg(long, env = "ORDERLY_BROKER_ACK_TIMEOUT_MS", value_name = "MS",
          default_value_t = limits::ACK_TIMEOUT_MS_DEFAULT, value_parser = DurationArg::ms().range(100..=u64::MAX))]
    pub ack_timeout_ms: u64,

    /// Milliseconds an order waits before its second attempt after a failed
    /// first one (a retryable nack, an ack timeout, the attempt time cap);
    /// doubled after each further failure, with jitter, up to
    /// --retry-delay-max-ms. A nack's own delay_ms wins. 0: no backoff.
    #[arg(long, env = "ORDERLY_BROKER_RETRY_DELAY_INITIAL_MS", value_name = "MS",
          default_value_t = limits::RETRY_DELAY_INITIAL_MS_DEFAULT,
          value_parser = DurationArg::ms())]
    pub retry_delay_initial_ms: u64,

    /// Longest wait between two attempts of one order (at most 86400000,
    /// one day).
    #[arg(long, env = "ORDERLY_BROKER_RETRY_DELAY_MAX_MS", value_name = "MS",
          default_value_t = limits::RETRY_DELAY_MAX_MS_DEFAULT,
          value_parser = DurationArg::ms())]
    pub retry_delay_max_ms: u64,

    /// Milliseconds one attempt may be held by a worker, even while its
    /// heartbeats list the order: past it the order is taken back as a
    /// failed attempt (a hung handler). Must exceed --ack-timeout-ms.
    #[arg(long, env = "ORDERLY_BROKER_ATTEMPT_TIMEOUT_MS", value_name = "MS",
          default_value_t = limits::ATTEMPT_TIMEOUT_MS_DEFAULT,
          value_parser = DurationArg::ms())]
    pub attempt_timeout_ms: u64,

    /// Dead letters at which the broker stops reading intake (backpressure
    /// `dead_letters`) until an operator retries or deletes some
    /// (`orderly-broker dlq`). Nothing is dropped.
    #[arg(long, env = "ORDERLY_BROKER_DEAD_LETTERS_MAX", value_name = "N",
          default_value_t = limits::DEAD_LETTERS_MAX_DEFAULT, value_parser = parse_positive)]
    pub dead_letters_max: usize,

    /// Milliseconds the key (producer id, order id) of an acknowledged order
    /// is remembered: a resend within the window is confirmed again and not
    /// processed twice. Kept in the journal, so it survives restarts (and
    /// restarts in full after one).
    #[arg(long, env = "ORDERLY_BROKER_DEDUP_WINDOW_MS", value_name = "MS",
          default_value_t = limits::DEDUP_WINDOW_MS_DEFAULT,
          value_parser = DurationArg::ms())]
    pub dedup_window_ms: u64,

    /// Keys remembered at most (about 100 bytes of memory each); past it the
    /// oldest leave the window early.
    #[arg(long, env = "ORDERLY_BROKER_DEDUP_KEYS_MAX", value_name = "N",
          default_value_t = limits::DEDUP_KEYS_MAX_DEFAULT)]
    pub dedup_keys_max: usize,

    /// This broker's CURVE key pair (from `orderly-broker keygen`). With
    /// --authorized-keys it turns on CURVE on all three sockets: traffic is
    /// encrypted and only authorized keys may connect.
    #[arg(long, env = "ORDERLY_BROKER_CURVE_SECRET_KEY", value_name = "FILE", requires = "authorized_keys")]
    pub curve_secret_key: Option<PathBuf>,

    /// Clients admitted under CURVE: lines of `PUBLIC-KEY ROLE ID` (role
    /// producer or worker). Re-read on SIGHUP.
    #[arg(long, env = "ORDERLY_BROKER_AUTHORIZED_KEYS", value_name = "FILE", requires = "curve_secret_key")]
    pub authorized_keys: Option<PathBuf>,

    /// Allow plaintext (no CURVE) on endpoints other machines can reach.
    #[arg(long, env = "ORDERLY_BROKER_ALLOW_INSECURE")]
    pub allow_insecure: bool,

    /// Admin HTTP endpoint (GET /status, /dlq, /dlq/page, /metrics,
    /// /healthz, /readyz; with the token: GET /dlq/show, /orders/show,
    /// POST /dlq/retry, /dlq/delete). `off` disables it. Beyond loopback it
    /// needs --admin-token.
    #[arg(long, env = "ORDERLY_BROKER_ADMIN", value_name = "ADDR", default_value = "127.0.0.1:5573",
          value_parser = parse_admin)]
    pub admin: AdminAddr,

    /// File holding the admin bearer token (one line of 16 or more visible
    /// characters, mode 0600; e.g. `head -c 32 /dev/urandom | base64`).
    /// POST /dlq/retry always needs it; beyond loopback every route but
    /// /healthz and /readyz does.
    #[arg(long, env = "ORDERLY_BROKER_ADMIN_TOKEN", value_name = "FILE")]
    pub admin_token: Option<PathBuf>,

    /// A host name clients may reach the admin endpoint by, besides IP
    /// addresses and `localhost` (other names in `Host` are refused, which
    /// stops DNS rebinding). Repeat or separate with commas.
    #[arg(long, env = "ORDERLY_BROKER_ADMIN_HOST", value_name = "NAME", value_delimiter = ',')]
    pub admin_host: Vec<String>,

    /// Seconds between status lines in the log.
    #[arg(long, env = "ORDERLY_BROKER_STATUS_INTERVAL_SECS", value_name = "SECS", default_value_t = 10,
          value_parser = DurationArg::secs())]
    pub status_interval_secs: u64,

    /// Run as one member of a replicated group of brokers: the TOML group
    /// file lists every member ([[member]] with id, intake, fanout,
    /// control, peer, admin). This member's endpoints come from the file
    /// (--intake, --fanout, --control and --admin are ignored). Needs
    /// --node-id and --fsync always. With CURVE, the member's own key
    /// pair, and `public_key` in its table for clients. A confirm means a
    /// majority fsynced the order; a full disk stops the member (the
    /// others go on). See docs/REPLICATION.md.
    #[arg(long, env = "ORDERLY_BROKER_GROUP", value_name = "FILE", requires = "node_id")]
    pub group: Option<PathBuf>,

    /// This member's id in the --group file.
    #[arg(long, env = "ORDERLY_BROKER_NODE_ID", value_name = "ID", requires = "group",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub node_id: Option<u64>,

    /// Join a running group as a new member: on an empty data directory
    /// this member starts with no voters (it never stands for election)
    /// and waits for the leader to send it the log, once `orderly-broker
    /// group add --node-id ID` has asked the leader to add it. Harmless on
    /// later restarts (the configuration is then in its data directory).
    #[arg(long, env = "ORDERLY_BROKER_JOIN", requires = "group")]
    pub join: bool,

    /// Log filter: error, warn, info, debug, trace or off, or directives
    /// such as `info,orderly_broker=debug`. RUST_LOG, when set, wins.
    #[arg(long, env = "ORDERLY_BROKER_LOG_LEVEL", value_name = "LEVEL", default_value = "info",
          value_parser = parse_log_level)]
    pub log_level: String,

    /// Log lines as `text` or `json` (one object per line: timestamp,
    /// level, target, fields).
    #[arg(long, env = "ORDERLY_BROKER_LOG_FORMAT", value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Parses the command line; for `run --config FILE`, the file's settings
/// fill in what neither a flag nor the environment gave.
pub fn parse_cli() -> anyhow::Result<Cli> {
    let args: Vec<OsString> = std::env::args_os().collect();
    // Where the file is, from a parse that does not yet check what the
    // file may complete (a `requires` met by a file key: the member unit
    // sets the secret key, the file the authorized keys).
    let config = Cli::command().ignore_errors(true).try_get_matches_from(&args).ok().and_then(|matches| {
        matches.subcommand_matches("run").and_then(|run| run.get_one::<PathBuf>("config").cloned())
    });
    let Some(path) = config else {
        let cli = Cli::parse_from(&args);
        if let Command::Run(run) = &cli.command {
            refuse_bad_usage(run);
        }
        return Ok(cli);
    };
    // A missing or bad file is a ConfigError: exit 2, naming the file.
    let merged = merge_config_path(Cli::command(), args, "run", &path)?;
    let cli = Cli::parse_from(merged);
    if let Command::Run(run) = &cli.command {
        refuse_bad_usage(run);
    }
    Ok(cli)
}

/// An admin endpoint beyond loopback without a token, or retry settings
/// that contradict each other, are bad usage: said as clap says it, exit 2,
/// before anything starts.
fn refuse_bad_usage(run: &RunArgs) {
    if let Err(message) = run.check_retry_settings() {
        Cli::command().error(clap::error::ErrorKind::ValueValidation, message).exit();
    }
    if run.group.is_some() && run.fsync != orderly_journal::FsyncPolicy::Always {
        let message = format!(
            "--fsync {} with --group: a group member fsyncs every entry before it acknowledges it, so only --fsync always is allowed",
            run.fsync
        );
        Cli::command().error(clap::error::ErrorKind::ArgumentConflict, message).exit();
    }
    let Some(addr) = run.admin.0 else { return };
    if run.admin_token.is_none() && !admin::bound_to_loopback(addr) {
        let message = admin::AdminError::OpenBeyondLoopback { addr }.to_string();
        Cli::command().error(clap::error::ErrorKind::MissingRequiredArgument, message).exit();
    }
}

impl RunArgs {
    /// The one conversion from flags to the broker's settings: loads the
    /// CURVE secret key and draws this start's incarnation.
    pub fn into_config(self) -> anyhow::Result<BrokerConfig> {
        self.check_retry_settings().map_err(anyhow::Error::msg)?;
        let curve = match (&self.curve_secret_key, &self.authorized_keys) {
            (Some(secret), Some(authorized)) => Some(CurveConfig {
                keys: orderly_security::keys::load_secret(secret)?,
                authorized_keys: authorized.clone(),
            }),
            _ => None,
        };
        let admin = match self.admin.0 {
            Some(addr) => Some(AdminConfig {
                addr,
                token: self.admin_token.as_deref().map(AdminToken::load).transpose()?,
                host_names: self.admin_host,
            }),
            None => None,
        };
        let (mut intake, mut fanout, mut control, mut admin, mut order_bytes_max) =
            (self.intake, self.fanout, self.control, admin, self.order_bytes_max);
        let group = match (&self.group, self.node_id) {
            (Some(path), Some(node_id)) => {
                let group = orderly_replication::Group::load(path)?;
                let me = group.member(node_id).with_context(|| {
                    format!("--node-id {node_id} is not a member of the group file {}", path.display())
                })?;
                (intake, fanout, control) = (me.intake.clone(), me.fanout.clone(), me.control.clone());
                if let (Some(curve), Some(listed)) = (&curve, &me.public_key) {
                    // Clients connect to this member with the file's key: a
                    // member started with another key would admit nobody.
                    let listed = orderly_security::keys::load_public(listed)
                        .with_context(|| format!("member {node_id}'s public_key in {}", path.display()))?;
                    if listed != curve.keys.public {
                        return Err(orderly_cli::ConfigError::Usage(format!(
                            "member {node_id}'s public_key in {} is not the public key of --curve-secret-key ({}): clients could not connect; give the member its own key, or fix the file",
                            path.display(),
                            orderly_security::keys::encode(&curve.keys.public)
                        ))
                        .into());
                    }
                }
                let addr = me.admin.parse().with_context(|| format!("member {node_id}'s admin {:?}", me.admin))?;
                admin = Some(AdminConfig { addr, token: admin.and_then(|a| a.token), host_names: Vec::new() });
                // A whole order must fit one Raft entry.
                order_bytes_max = order_bytes_max.min(limits::GROUP_ORDER_BYTES_MAX as u64);
                Some(orderly_broker::io::GroupSettings { group, node_id, join: self.join })
            }
            _ => None,
        };
        Ok(BrokerConfig {
            group,
            intake,
            fanout,
            control,
            data_dir: self.data_dir,
            journal: orderly_journal::Options {
                fsync: self.fsync,
                segment_bytes_target: self.journal_segment_bytes,
                ..orderly_journal::Options::default()
            },
            core: CoreConfig {
                incarnation: rand::random(),
                heartbeat_interval_ms: self.heartbeat_interval_ms,
                heartbeat_liveness: self.heartbeat_liveness,
                max_attempts: self.max_attempts,
                partial_orders_max: self.partial_orders_max,
                pending_orders_max: self.pending_orders_max,
                pending_bytes_max: self.pending_bytes_max,
                payload_cache_bytes: self.payload_cache_bytes,
                partial_bytes_max: self.partial_bytes_max,
                partial_age_max_ms: self.partial_age_max_ms,
                ack_timeout_ms: self.ack_timeout_ms,
                dedup_window_ms: self.dedup_window_ms,
                dedup_keys_max: self.dedup_keys_max,
                order_bytes_max,
                order_items_max: self.order_items_max,
                partial_orders_per_producer_max: self.partial_orders_per_producer_max,
                pending_orders_per_producer_max: self
                    .pending_orders_per_producer_max
                    .unwrap_or(self.pending_orders_max),
                retry_delay_initial_ms: self.retry_delay_initial_ms,
                retry_delay_max_ms: self.retry_delay_max_ms,
                attempt_timeout_ms: self.attempt_timeout_ms,
                dead_letters_max: self.dead_letters_max,
                rand_seed: rand::random(),
                // The loop's clock is already Unix ms (`io::wall_clock_ms`).
                epoch_unix_ms: 0,
            },
            admin,
            curve,
            allow_insecure: self.allow_insecure,
            status_interval_ms: self.status_interval_secs.max(1) * 1000,
        })
    }
}

impl RunArgs {
    /// The backoff and time-cap settings agree with each other.
    fn check_retry_settings(&self) -> Result<(), String> {
        let (initial, max) = (self.retry_delay_initial_ms, self.retry_delay_max_ms);
        if max > limits::RETRY_DELAY_MS_MAX {
            return Err(format!(
                "--retry-delay-max-ms {max} is more than the longest retry delay, {} ms (one day)",
                limits::RETRY_DELAY_MS_MAX
            ));
        }
        if initial > max {
            return Err(format!("--retry-delay-initial-ms {initial} is more than --retry-delay-max-ms {max}"));
        }
        if self.attempt_timeout_ms <= self.ack_timeout_ms {
            return Err(format!(
                "--attempt-timeout-ms {} must be more than --ack-timeout-ms {}",
                self.attempt_timeout_ms, self.ack_timeout_ms
            ));
        }
        Ok(())
    }
}

/// `--admin ADDR`, or `off`.
#[derive(Debug, Clone)]
pub struct AdminAddr(Option<std::net::SocketAddr>);

fn parse_admin(text: &str) -> Result<AdminAddr, String> {
    if text == "off" {
        return Ok(AdminAddr(None));
    }
    text.parse()
        .map(|addr| AdminAddr(Some(addr)))
        .map_err(|_| format!("{text:?} is not an address like 127.0.0.1:5573 (or `off`)"))
}

fn parse_positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{text:?} is not a positive whole number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_are_consistent() {
        Cli::command().debug_assert();
    }

    fn run_args(extra: &[&str]) -> RunArgs {
        let args = ["orderly-broker", "run"].iter().chain(extra);
        match Cli::try_parse_from(args).unwrap().command {
            Command::Run(run) => *run,
            _ => unreachable!(),
        }
    }

    #[test]
    fn retry_settings_that_contradict_each_other_are_refused() {
        assert_eq!(run_args(&[]).check_retry_settings(), Ok(()));
        let error = run_args(&["--retry-delay-initial-ms", "5000", "--retry-delay-max-ms", "1000"])
            .check_retry_settings()
            .unwrap_err();
        assert!(error.contains("--retry-delay-initial-ms 5000 is more than --retry-delay-max-ms 1000"), "{error}");
        let error = run_args(&["--retry-delay-max-ms", "86400001"]).check_retry_settings().unwrap_err();
        assert!(error.contains("one day"), "{error}");
        let error =
            run_args(&["--ack-timeout-ms", "5000", "--attempt-timeout-ms", "5000"]).check_retry_settings().unwrap_err();
        assert!(error.contains("must be more than --ack-timeout-ms"), "{error}");
        assert_eq!(run_args(&["--retry-delay-initial-ms", "0"]).check_retry_settings(), Ok(()));
    }

    #[test]
    fn a_journal_segment_past_the_journals_maximum_is_refused() {
        // The order index packs a payload's place into u32s (issue 20).
        assert_eq!(run_args(&["--journal-segment-bytes", "1GiB"]).journal_segment_bytes, 1 << 30);
        let args = ["orderly-broker", "run", "--journal-segment-bytes", "5GiB"];
        let Err(error) = Cli::try_parse_from(args) else { panic!("5GiB accepted") };
        let error = error.to_string();
        assert!(error.contains("--journal-segment-bytes"), "{error}");
    }
}
