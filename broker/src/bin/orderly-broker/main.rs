//! `orderly-broker`: thin binary over the `orderly_broker` library. Flags
//! become a validated config in `flags`; the other subcommands print in
//! `commands`; this file runs the broker and turns errors into exit codes.

mod commands;
mod flags;
mod membership;

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use orderly_broker::io;
use orderly_cli::{exit, init_logging, systemd, LogFormat};

use crate::flags::{Command, RunArgs};

/// mimalloc: the hot paths allocate many small buffers (frames, keys); glibc's
/// malloc spent a fifth of the broker's time consolidating them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            orderly_cli::eprintln_lossy!("orderly-broker: error: {error:#}");
            ExitCode::from(exit::of_error(error.as_ref()))
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    match flags::parse_cli()?.command {
        Command::Run(args) => run_broker(*args),
        Command::Journal(command) => {
            init_logging("warn", LogFormat::Text)?;
            commands::journal(command)
        }
        Command::Status(args) => commands::status(&args),
        Command::Keygen(args) => commands::keygen(&args.out),
        Command::Dlq(command) => commands::dlq(command),
        Command::Orders(command) => commands::orders(command),
        Command::Group(command) => commands::group(command),
    }
}

/// `run`: until SIGTERM or SIGINT; SIGHUP re-reads the authorized keys.
fn run_broker(args: RunArgs) -> anyhow::Result<ExitCode> {
    let notifier = systemd::Notifier::layer(&["orderly_broker"], READY_MESSAGES, STATUS_MESSAGES);
    orderly_cli::init_logging_with(&args.log_level, args.log_format, Some(notifier))?;
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&shutdown)).context("cannot install signal handlers")?;
    }
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .context("cannot install the SIGHUP handler")?;
    let config = args.into_config()?;
    start_watchdog(config.admin.as_ref().map(|admin| admin.addr))?;
    let summary = io::run(config, shutdown, reload)?;
    systemd::stopping();
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

/// The log messages (`orderly_broker::io`) that mean the broker is ready:
/// logged once the journal is recovered, the admin endpoint is up and the
/// sockets are bound. systemd gets READY=1 on the first one.
const READY_MESSAGES: &[&str] = &["broker listening"];

/// Later state changes worth a STATUS= line in `systemctl status`.
const STATUS_MESSAGES: &[&str] = &["intake closed", "intake open again"];

/// WATCHDOG=1 at half of systemd's WatchdogSec, while the broker's loop
/// answers `/healthz` (which the loop itself answers: a hung loop stops
/// the pings and systemd restarts the broker). With `--admin off` or an
/// ephemeral admin port there is nothing to ask: the pings then only say
/// the process is alive, and a warning says so.
fn start_watchdog(admin: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    if systemd::watchdog_interval().is_none() {
        return Ok(());
    }
    let probe = admin.filter(|addr| addr.port() != 0).map(|mut addr| {
        // A wildcard bind is reached on loopback.
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        addr.to_string()
    });
    if probe.is_none() {
        tracing::warn!("systemd watchdog on but no admin endpoint to ask: the pings only say the process is alive");
    }
    systemd::spawn_watchdog(move || match &probe {
        Some(addr) => orderly_broker::admin::request(addr, "GET", "/healthz").is_ok(),
        None => true,
    })
    .context("cannot start the watchdog thread")
}
