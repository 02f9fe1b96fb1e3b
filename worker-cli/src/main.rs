//! `orderly-worker`: the command line around [`orderly_worker::io::run`].
//! The flags and their conversion into an [`orderly_worker::io::Config`]
//! live in `flags`; this file only runs what they describe.

mod flags;

use std::process::ExitCode;

use anyhow::Context;
use orderly_cli::exit;
use orderly_worker::io::{self, Exit};

/// mimalloc: the hot paths allocate many small buffers (frames, keys); glibc's
/// malloc spent a fifth of the broker's time consolidating them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            orderly_cli::eprintln_lossy!("error: {error:#}");
            // A --group file that cannot be used is bad usage, as a bad flag is.
            let group_error = error.chain().any(|cause| cause.is::<orderly_replication::GroupError>());
            ExitCode::from(if group_error { exit::USAGE } else { exit::of_error(error.as_ref()) })
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = match flags::parse()? {
        flags::Command::Run(args) => args,
        flags::Command::Keygen { out } => {
            print!("{}", orderly_security::keys::keygen(&out)?);
            return Ok(ExitCode::from(exit::OK));
        }
    };
    let notifier = orderly_cli::systemd::Notifier::layer(&["orderly_worker"], READY_MESSAGES, STATUS_MESSAGES);
    orderly_cli::init_logging_with(&args.log_level, args.log_format, Some(notifier))?;
    let members = args.group_members()?;
    let config = args.into_config(members.as_ref())?;
    config.handler.prepare().with_context(|| format!("cannot prepare the handler ({})", config.handler.describe()))?;
    let shutdown = register_signals()?;
    // The worker library has no hook into its loop: the pings say the
    // process is alive (a hung handler is the library's attempt timeout's).
    orderly_cli::systemd::spawn_watchdog(|| true).context("cannot start the watchdog thread")?;
    let exit = match members {
        Some(members) => io::run_group(config, members, &shutdown)?,
        None => io::run(config, &shutdown)?,
    };
    orderly_cli::systemd::stopping();
    Ok(ExitCode::from(match exit {
        Exit::Drained => exit::OK,
        Exit::DrainTimedOut { .. } => exit::TIMEOUT,
    }))
}

/// The log messages (`orderly_worker::io`) that mean the worker is
/// connected: a broker answered, or a group's leader is known. systemd
/// gets READY=1 on the first one.
const READY_MESSAGES: &[&str] = &["broker found", "the group has a new leader; announcing this worker to it"];

/// Later state changes worth a STATUS= line in `systemctl status`.
const STATUS_MESSAGES: &[&str] = &[
    "broker silent; waiting for it to come back (ZeroMQ reconnects)",
    "broker is back",
    "broker restarted; announcing this worker again",
    "the handler runs again",
    "shutdown requested; finishing running orders",
];

/// Sets a flag on SIGTERM or SIGINT; a second signal exits at once (code 1)
/// for an operator who does not want to wait for the drain. (The process's
/// business, so here and not in the library.)
fn register_signals() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use std::sync::{atomic::AtomicBool, Arc};
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&flag))
            .context("cannot install a signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&flag)).context("cannot install a signal handler")?;
    }
    Ok(flag)
}
