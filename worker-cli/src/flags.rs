//! The flags of `orderly-worker` (clap) and their one conversion into a
//! validated [`io::Config`]: flags > environment > config file > defaults.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand};
use orderly_cli::{merge_config_path, parse_log_level, ConfigError, DurationArg, LogFormat};
use orderly_common::ids::validate_peer_id;
use orderly_common::limits::{self, DISPATCHES_PER_MESSAGE_MAX, WORKER_CONCURRENCY_MAX, WORKER_DISPATCHES_MAX_DEFAULT};
use orderly_common::members::Members;
use orderly_common::Endpoint;
use std::sync::Arc;

use orderly_worker::handler::{timeout_from_ms, Exec, Handler, Noop, Sink, HANDLER_TIMEOUT_MS_DEFAULT};
use orderly_worker::io;
use orderly_worker::serve::{Serve, SERVE_PROCESSES_DEFAULT, SERVE_PROCESSES_MAX};

/// The examples closing both help pages (a macro: `concat!` takes literals).
macro_rules! examples {
    () => {
        "Examples:
  # Run a script per order (the order arrives as JSON on stdin; exit 0 acknowledges):
  orderly-worker run --id w1 --fanout tcp://broker:5571 --control tcp://broker:5572 \\
      --concurrency 4 --exec './handle-order.sh'

  # Keep 2 Python processes running, fed orders as JSON lines (docs/PROTOCOL.md):
  orderly-worker run --id w1 --concurrency 16 --serve 'python3 handler.py' --serve-processes 2

  # Write every order to a directory:
  orderly-worker run --id w2 --sink /var/lib/orderly/out

  # Prometheus metrics and /healthz on loopback (see docs/DEPLOY.md, Monitoring):
  orderly-worker run --id w4 --sink /var/lib/orderly/out --metrics 127.0.0.1:9571

  # Follow the leader of a group of brokers (docs/REPLICATION.md):
  orderly-worker run --id w3 --group /etc/orderly/group.toml --sink /var/lib/orderly/out

Every flag can also come from the environment (ORDERLY_WORKER_<FLAG>) or a
TOML file given with --config (keys are the flag names with '_' for '-').
Precedence: flag > environment > config file > default.
Durations (--*-ms, --*-secs) take a number in the flag's unit or a value
with its own: 30s, 1m30s, 500ms.
SIGTERM or SIGINT drains: no new orders, running ones finish, then exit 0;
a second signal exits at once."
    };
}

const EXAMPLES: &str = examples!();

/// `run --help`: the exit codes of an --exec handler, then the examples.
const RUN_AFTER_HELP: &str = concat!(
    "\
Exit codes of an --exec handler:
  0        done: the order is acknowledged.
  75       retry later (EX_TEMPFAIL): a failure, retried no sooner than N ms
           if the last non-empty line of its stdout is `delay_ms=N`, else
           after the broker's own backoff.
  126, 127 the handler cannot run (not executable, not found), as is a
           failure to start it: the order is returned unrun, the worker
           turns broken (the broker sends it nothing; one error line in the
           log), and tries again after 1 s, doubling up to 60 s.
  other    failure: retried (on any worker), dead-lettered after the
           broker's --max-attempts.
A run past --handler-timeout-ms is killed and counts as a failure.

A --serve handler (docs/PROTOCOL.md, \"Handler processes\") keeps running and
talks JSON lines: the worker writes one order per line to its stdin (the
same object --exec reads; non-JSON items as {\"base64\": ...}, listed in
\"base64_items\"), up to --concurrency at once over all processes; the
handler answers one line per order, in any order:
  {\"producer\":\"p1\",\"id\":\"o-7\",\"result\":\"ack\"}
  {\"producer\":\"p1\",\"id\":\"o-7\",\"result\":\"nack\",\"retry\":true,\"delay_ms\":5000,\"reason\":\"db down\"}
Other stdout lines are ignored (with a warning); logs go to stderr. A
process that exits has its orders retried and is restarted (backoff 100 ms
doubling to 10 s); exit 126/127 before any answer means it cannot run (as
above). An order past --handler-timeout-ms is retried and its process
restarted. On shutdown stdin is closed: exit on EOF (SIGTERM after 2 s).

",
    examples!()
);

/// Receives complete orders from the orderly broker and processes them.
#[derive(Parser, Debug)]
#[command(name = "orderly-worker", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Connect to the broker and process orders until stopped.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(Box<RunArgs>),
    /// Write a new CURVE key pair: PREFIX.key (secret, mode 0600) and
    /// PREFIX.pub (public: add it to the broker's authorized keys as
    /// `PUBLIC-KEY worker ID`).
    Keygen {
        /// Path prefix of the two files, e.g. /etc/orderly/w1.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("handler").required(true).multiple(false).args(["exec", "sink", "noop", "serve"])))]
pub(crate) struct RunArgs {
    /// This worker's id: 1 to 64 of letters, digits, '.', '_' and '-'. Unique
    /// among the broker's workers; the broker routes orders to it by id.
    /// Example: --id w1
    #[arg(long, env = "ORDERLY_WORKER_ID", value_name = "ID", value_parser = parse_worker_id)]
    id: String,

    /// A group of brokers instead of one broker: the TOML group file the
    /// brokers run with (`orderly-broker run --group FILE`), one
    /// [[member]] table per broker with id, intake, fanout, control, peer
    /// and admin. Every member's fanout is subscribed; heartbeats and acks
    /// go to the leader the members announce, and a new leader is greeted
    /// at once. In place of --fanout and --control. With CURVE, each
    /// member's `public_key` from the file is used (see
    /// docs/REPLICATION.md). Example: --group /etc/orderly/group.toml
    #[arg(long, env = "ORDERLY_WORKER_GROUP", value_name = "FILE", conflicts_with_all = ["fanout", "control"])]
    group: Option<PathBuf>,

    /// The broker's fanout endpoint (its PUB socket), where orders arrive.
    /// Example: --fanout tcp://broker.example:5571
    #[arg(long, env = "ORDERLY_WORKER_FANOUT", value_name = "EP", default_value = "tcp://127.0.0.1:5571")]
    fanout: Endpoint,

    /// The broker's control endpoint (its PULL socket), where heartbeats and
    /// acknowledgements go. Example: --control tcp://broker.example:5572
    #[arg(long, env = "ORDERLY_WORKER_CONTROL", value_name = "EP", default_value = "tcp://127.0.0.1:5572")]
    control: Endpoint,

    /// Orders processed at once (1 to 1024); the broker never sends more.
    /// Example: --concurrency 8
    #[arg(long, env = "ORDERLY_WORKER_CONCURRENCY", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(WORKER_CONCURRENCY_MAX)))]
    concurrency: u32,

    /// Orders the broker may send in one message (0 to 256): with the
    /// credits free, several orders arrive together, which saves the broker
    /// and this worker CPU per order; each is still run, acknowledged and
    /// retried on its own. 0 keeps one order per message (as before 0.5;
    /// brokers before 0.5 send one order per message anyway).
    /// Example: --dispatches-max 0
    #[arg(long, env = "ORDERLY_WORKER_DISPATCHES_MAX", value_name = "N",
          default_value_t = WORKER_DISPATCHES_MAX_DEFAULT,
          value_parser = clap::value_parser!(u32).range(0..=DISPATCHES_PER_MESSAGE_MAX as i64))]
    dispatches_max: u32,

    /// Handler: run `sh -c CMD` per order, the order as one JSON object on
    /// stdin and ORDERLY_ORDER_ID, ORDERLY_PRODUCER, ORDERLY_ATTEMPT and
    /// ORDERLY_REDELIVERED in the environment. Exit 0 acknowledges; 75
    /// retries later; 126/127 mean it cannot run (see "Exit codes" below).
    /// Example: --exec 'jq . > /tmp/last.json'
    #[arg(long, env = "ORDERLY_WORKER_EXEC", value_name = "CMD")]
    exec: Option<String>,

    /// Handler: write each order to DIR/<producer>/<order id>.json (written
    /// atomically; the id %XX-escaped) and append `producer TAB order-id TAB
    /// attempt TAB sha256` to DIR/deliveries.log. An escaped id too long for
    /// a file name (over 250 bytes) is named `<first 185 bytes or
    /// fewer>~<sha256 of the id>.json` instead. Example: --sink /var/lib/orderly/out
    #[arg(long, env = "ORDERLY_WORKER_SINK", value_name = "DIR")]
    sink: Option<PathBuf>,

    /// Handler: acknowledge every order without doing anything (benchmarks).
    #[arg(long, env = "ORDERLY_WORKER_NOOP")]
    noop: bool,

    /// Handler: keep `sh -c CMD` running (--serve-processes copies) and feed
    /// it orders as JSON lines on stdin; it answers one JSON line per order
    /// on stdout (see "A --serve handler" below, and docs/PROTOCOL.md). Its environment
    /// has ORDERLY_SERVE=1, ORDERLY_WORKER and ORDERLY_SERVE_PROCESS (0..N-1).
    /// Example: --serve 'python3 handler.py'
    #[arg(long, env = "ORDERLY_WORKER_SERVE", value_name = "CMD")]
    serve: Option<String>,

    /// How many --serve processes to run (1 to 64; default 1); each order
    /// goes to the one holding the fewest. Example: --serve-processes 4
    #[arg(long, env = "ORDERLY_WORKER_SERVE_PROCESSES", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(SERVE_PROCESSES_MAX)))]
    serve_processes: Option<u32>,

    /// Time limit of one order under --exec or --serve, in milliseconds; 0
    /// is no limit. Past it the command's whole process group gets SIGTERM,
    /// then SIGKILL 2 s later, and the order is failed (retried, in time
    /// dead-lettered); a --serve process is then restarted, its other
    /// orders retried. --sink and --noop cannot be interrupted.
    /// Example: --handler-timeout-ms 60000
    #[arg(long, env = "ORDERLY_WORKER_HANDLER_TIMEOUT_MS", value_name = "MS",
          default_value_t = HANDLER_TIMEOUT_MS_DEFAULT,
          value_parser = DurationArg::ms())]
    handler_timeout_ms: u64,

    /// Milliseconds between heartbeats to the broker; also how often the
    /// broker is expected to send its own.
    #[arg(long, env = "ORDERLY_WORKER_HEARTBEAT_INTERVAL_MS", value_name = "MS",
          default_value_t = limits::HEARTBEAT_INTERVAL_MS_DEFAULT,
          value_parser = DurationArg::ms().range(1..=3_600_000))]
    heartbeat_interval_ms: u64,

    /// Broker heartbeats missed before the broker is presumed lost and this
    /// worker asks to be welcomed again. Example: --heartbeat-liveness 5
    #[arg(long, env = "ORDERLY_WORKER_HEARTBEAT_LIVENESS", value_name = "N",
          default_value_t = limits::HEARTBEAT_LIVENESS_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    heartbeat_liveness: u32,

    /// Seconds a shutdown waits for running orders before leaving them to
    /// the broker to redeliver (exit code 4). 0 leaves at once.
    #[arg(long, env = "ORDERLY_WORKER_DRAIN_TIMEOUT_SECS", value_name = "SECS", default_value_t = 30,
          value_parser = DurationArg::secs().range(0..=86_400))]
    drain_timeout_secs: u64,

    /// Log filter: error, warn, info, debug, trace or off, or directives
    /// such as `info,orderly_worker=debug`. RUST_LOG, when set, wins.
    #[arg(long, env = "ORDERLY_WORKER_LOG_LEVEL", value_name = "FILTER", default_value = "info",
          value_parser = parse_log_level)]
    pub(crate) log_level: String,

    /// Log lines as `text` or `json` (one object per line: timestamp,
    /// level, target, fields).
    #[arg(long, env = "ORDERLY_WORKER_LOG_FORMAT", value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,

    /// Serve Prometheus metrics (`GET /metrics`, text format 0.0.4) and
    /// `GET /healthz` on HOST:PORT; off unless given. Keep it on loopback
    /// or a monitoring network: it has no authentication.
    /// Example: --metrics 127.0.0.1:9571
    #[arg(long, env = "ORDERLY_WORKER_METRICS", value_name = "HOST:PORT")]
    pub(crate) metrics: Option<std::net::SocketAddr>,

    /// TOML file with settings, one key per flag (`concurrency = 4`,
    /// `sink = "/data/out"`). Flags and environment variables win over it.
    /// Example: --config /etc/orderly/worker.toml
    #[arg(long, env = "ORDERLY_WORKER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// This worker's CURVE key pair (from `orderly-worker keygen`); turns
    /// on CURVE towards a broker that requires it.
    #[arg(long, env = "ORDERLY_WORKER_CURVE_SECRET_KEY", value_name = "FILE")]
    curve_secret_key: Option<PathBuf>,

    /// The broker's CURVE public key: 40 Z85 characters, or a file holding
    /// them (the broker's PREFIX.pub). With --group, each member's
    /// `public_key` in the group file wins; this key is for members
    /// without one (not needed when every member has one).
    #[arg(long, env = "ORDERLY_WORKER_BROKER_PUBLIC_KEY", value_name = "KEY|FILE", requires = "curve_secret_key")]
    broker_public_key: Option<String>,
}

fn parse_worker_id(text: &str) -> Result<String, String> {
    validate_peer_id("worker id", text).map(|()| text.to_owned()).map_err(|e| e.to_string())
}

/// The handler the flags describe, before it is built (comparable, for
/// the flag tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HandlerSpec {
    Exec(Exec),
    Sink(Sink),
    Noop,
    Serve(Serve),
}

impl HandlerSpec {
    pub(crate) fn build(self) -> Arc<dyn Handler> {
        match self {
            HandlerSpec::Exec(exec) => Arc::new(exec),
            HandlerSpec::Sink(sink) => Arc::new(sink),
            HandlerSpec::Noop => Arc::new(Noop),
            HandlerSpec::Serve(serve) => Arc::new(serve),
        }
    }
}

impl RunArgs {
    fn handler(&self) -> HandlerSpec {
        let timeout_ms = timeout_from_ms(self.handler_timeout_ms);
        match (&self.exec, &self.sink, &self.serve) {
            (Some(command), _, _) => HandlerSpec::Exec(Exec { command: command.clone(), timeout_ms }),
            (None, Some(dir), _) => HandlerSpec::Sink(Sink { dir: dir.clone() }),
            (None, None, Some(command)) => HandlerSpec::Serve(Serve {
                command: command.clone(),
                processes: self.serve_processes.unwrap_or(SERVE_PROCESSES_DEFAULT),
                timeout_ms,
                worker: self.id.clone(),
            }),
            // clap's required group guarantees noop here.
            (None, None, None) => HandlerSpec::Noop,
        }
    }

    /// --serve-processes means nothing without --serve: say so rather than
    /// ignore it (checked here: it may come from the config file or the
    /// environment, where clap's `requires` does not look).
    fn check_serve(&self) -> Result<(), ConfigError> {
        match (self.serve_processes, &self.serve) {
            (Some(_), None) => Err(ConfigError::Usage(
                "--serve-processes (or ORDERLY_WORKER_SERVE_PROCESSES, or serve_processes in the config file) \
                 is given without --serve: add --serve CMD or drop it"
                    .to_owned(),
            )),
            _ => Ok(()),
        }
    }

    /// The brokers of the --group file, if given, as the library sees them
    /// (peer and admin are the members' own business). A bad file is a
    /// [`orderly_replication::GroupError`], which `main` reports as bad usage.
    pub(crate) fn group_members(&self) -> anyhow::Result<Option<Members>> {
        let Some(path) = &self.group else { return Ok(None) };
        let group = orderly_replication::Group::load(path)?;
        let members = group.client_members().with_context(|| format!("group file {}", path.display()))?;
        Ok(Some(members))
    }

    /// The validated configuration of [`io::run`]; loads the CURVE keys.
    /// `members`: the --group file's ([`RunArgs::group_members`]), whose
    /// members' own keys may stand in for --broker-public-key.
    pub(crate) fn into_config(self, members: Option<&Members>) -> anyhow::Result<io::Config> {
        self.check_serve()?;
        let curve = match &self.curve_secret_key {
            Some(secret) => {
                let members: Vec<(u64, Option<&str>)> =
                    members.iter().flat_map(|m| m.iter()).map(|m| (m.id, m.public_key.as_deref())).collect();
                let broker_key = self.broker_public_key.as_deref();
                Some(orderly_security::keys::CurveClient::load_for(secret, broker_key, &members).map_err(|error| {
                    match error {
                        // Bad usage (exit 2), as clap's own checks are.
                        orderly_security::keys::KeyError::NoBrokerKey { .. } => {
                            anyhow::Error::new(orderly_cli::ConfigError::Usage(error.to_string()))
                        }
                        error => error.into(),
                    }
                })?)
            }
            None => None,
        };
        Ok(io::Config {
            curve,
            handler: self.handler().build(),
            worker: self.id,
            incarnation: rand::random(),
            fanout: self.fanout,
            control: self.control,
            concurrency: self.concurrency,
            dispatches_max: self.dispatches_max,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            heartbeat_liveness: self.heartbeat_liveness,
            drain_timeout_ms: self.drain_timeout_secs.saturating_mul(1000),
        })
    }
}

/// Parses the command line with the config file merged in. A bad flag
/// exits with clap's usage error (code 2); a config file that cannot be
/// used is a [`ConfigError`], which `main` also reports as bad usage.
pub(crate) fn parse() -> Result<Command, ConfigError> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let Some(path) = config_path(&args) else { return Ok(Cli::parse_from(args).command) };
    let merged = merge_config_path(relaxed_command(), args, "run", &path)?;
    Ok(Cli::parse_from(merged).command)
}

/// The `--config` value, if any. Parsed with the id and the handler made
/// optional, because the config file may be what supplies them.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let matches = relaxed_command().try_get_matches_from(args).ok()?;
    matches.subcommand_matches("run")?.get_one::<PathBuf>("config").cloned()
}

fn relaxed_command() -> clap::Command {
    Cli::command().mut_subcommand("run", |run| {
        run.mut_group("handler", |group| group.required(false)).mut_arg("id", |id| id.required(false))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler_of(args: &[&str]) -> HandlerSpec {
        let cli = Cli::try_parse_from(["orderly-worker", "run", "--id", "w1"].iter().chain(args)).expect("valid flags");
        let Command::Run(run) = cli.command else { panic!("run") };
        run.handler()
    }

    #[test]
    fn handler_timeout_defaults_to_30_minutes_and_0_is_no_limit() {
        let exec = |timeout_ms| HandlerSpec::Exec(Exec { command: "x".into(), timeout_ms });
        assert_eq!(handler_of(&["--exec", "x"]), exec(Some(1_800_000)));
        assert_eq!(handler_of(&["--exec", "x", "--handler-timeout-ms", "5000"]), exec(Some(5000)));
        assert_eq!(handler_of(&["--exec", "x", "--handler-timeout-ms", "0"]), exec(None));
        assert_eq!(handler_of(&["--exec", "x", "--handler-timeout-ms", "1m30s"]), exec(Some(90_000)));
    }

    #[test]
    fn serve_takes_processes_and_the_time_limit() {
        let serve = |processes, timeout_ms| {
            HandlerSpec::Serve(Serve { command: "py".into(), processes, timeout_ms, worker: "w1".into() })
        };
        assert_eq!(handler_of(&["--serve", "py"]), serve(1, Some(1_800_000)));
        assert_eq!(
            handler_of(&["--serve", "py", "--serve-processes", "64", "--handler-timeout-ms", "5"]),
            serve(64, Some(5))
        );
        let parse = |args: &[&str]| Cli::try_parse_from(["orderly-worker", "run", "--id", "w1"].iter().chain(args));
        for bad in [["--serve", "py", "--serve-processes", "0"], ["--serve", "py", "--serve-processes", "65"]] {
            assert_eq!(parse(&bad).expect_err("out of range").kind(), clap::error::ErrorKind::ValueValidation);
        }
        let error = parse(&["--serve", "py", "--exec", "x"]).expect_err("two handlers");
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
        let Command::Run(run) = parse(&["--noop", "--serve-processes", "2"]).expect("parses").command else {
            panic!("run")
        };
        let error = run.into_config(None).expect_err("processes without serve");
        assert!(error.to_string().contains("without --serve"), "{error}");
    }

    #[test]
    fn serve_comes_from_the_config_file_too() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("worker.toml");
        std::fs::write(&path, "serve = \"python3 h.py\"\nserve_processes = 3\n").expect("write config");
        let args: Vec<OsString> = ["orderly-worker", "run", "--id", "w1"].iter().map(OsString::from).collect();
        let merged = merge_config_path(relaxed_command(), args, "run", &path).expect("valid config");
        let Command::Run(run) = Cli::parse_from(merged).command else { panic!("run") };
        let expected =
            Serve { command: "python3 h.py".into(), processes: 3, timeout_ms: Some(1_800_000), worker: "w1".into() };
        assert_eq!(run.handler(), HandlerSpec::Serve(expected));
    }
}

#[cfg(test)]
mod metrics_tests {
    use super::*;

    #[test]
    fn metrics_is_off_by_default_and_comes_from_flag_file_or_environment() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(["orderly-worker", "run", "--id", "w1", "--noop"].iter().chain(args));
            let Command::Run(run) = cli.expect("valid flags").command else { panic!("run") };
            run.metrics
        };
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&["--metrics", "127.0.0.1:9571"]), Some("127.0.0.1:9571".parse().unwrap()));
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("worker.toml");
        std::fs::write(&path, "metrics = \"127.0.0.1:9572\"\n").expect("write config");
        let args: Vec<OsString> =
            ["orderly-worker", "run", "--id", "w1", "--noop"].iter().map(OsString::from).collect();
        let merged = merge_config_path(relaxed_command(), args, "run", &path).expect("valid config");
        let Command::Run(run) = Cli::parse_from(merged).command else { panic!("run") };
        assert_eq!(run.metrics, Some("127.0.0.1:9572".parse().unwrap()));
        let error = Cli::try_parse_from(["orderly-worker", "run", "--id", "w1", "--noop", "--metrics", "localhost"])
            .expect_err("no port");
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
    }
}

#[cfg(test)]
mod group_tests {
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

    fn try_run(args: &[&str]) -> Result<Box<RunArgs>, clap::Error> {
        let cli = Cli::try_parse_from(["orderly-worker", "run", "--id", "w1", "--noop"].iter().chain(args))?;
        let Command::Run(run) = cli.command else { panic!("run") };
        Ok(run)
    }

    fn group_file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("group.toml");
        std::fs::write(&path, text).expect("write group file");
        (dir, path.to_str().expect("utf-8 path").to_owned())
    }

    #[test]
    fn group_conflicts_with_fanout_and_control() {
        for other in [["--fanout", "tcp://127.0.0.1:1"], ["--control", "tcp://127.0.0.1:1"]] {
            let args = ["--group", "g.toml", other[0], other[1]];
            let error = try_run(&args).expect_err("conflict");
            assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict, "{args:?}");
        }
        // The defaults of --fanout and --control are no conflict.
        assert!(try_run(&["--group", "g.toml"]).is_ok());
    }

    #[test]
    fn group_file_gives_every_member_to_the_library() {
        let (_dir, path) = group_file(GROUP);
        let members = try_run(&["--group", &path]).expect("valid flags").group_members().expect("valid group");
        let members = members.expect("group mode");
        let ids: Vec<u64> = members.iter().map(|member| member.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        let third = members.get(3).expect("member 3");
        assert_eq!(third.intake.as_str(), "tcp://127.0.0.1:43001");
        assert_eq!(third.fanout.as_str(), "tcp://127.0.0.1:43002");
        assert_eq!(third.control.as_str(), "tcp://127.0.0.1:43003");
        assert!(try_run(&[]).expect("defaults").group_members().expect("no file").is_none());
    }

    #[test]
    fn bad_group_file_is_a_group_error_naming_the_file() {
        let (_dir, path) = group_file(&GROUP.replace("[[member]]\nid = 3", "[[membr]]\nid = 3"));
        let error = try_run(&["--group", &path]).expect("valid flags").group_members().expect_err("bad group");
        assert!(error.chain().any(|cause| cause.is::<orderly_replication::GroupError>()), "{error:#}");
        assert!(format!("{error:#}").contains(&path), "{error:#}");
    }
}
