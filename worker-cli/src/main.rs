//! `orderly-worker`: the command line around [`orderly_worker::io::run`].
//! The flags and their conversion into an [`orderly_worker::io::Config`]
//! live in `flags`; this file only runs what they describe.

mod flags;

use std::process::ExitCode;

use anyhow::Context;
use orderly_cli::{exit, systemd};
use orderly_worker::io::{self, Exit};
use orderly_worker::metrics::{Metrics, MetricsServer};
use std::sync::Arc;

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
    orderly_cli::init_logging(&args.log_level, args.log_format)?;
    let members = args.group_members()?;
    let metrics_addr = args.metrics;
    let config = args.into_config(members.as_ref())?;
    config.handler.prepare().with_context(|| format!("cannot prepare the handler ({})", config.handler.describe()))?;
    let shutdown = register_signals()?;
    let (hooks, _metrics_server) = hooks(&config.worker, metrics_addr)?;
    let exit = match members {
        Some(members) => io::run_group_with(config, members, &shutdown, hooks)?,
        None => io::run_with(config, &shutdown, hooks)?,
    };
    systemd::stopping();
    Ok(ExitCode::from(match exit {
        Exit::Drained => exit::OK,
        Exit::DrainTimedOut { .. } => exit::TIMEOUT,
    }))
}

/// The loop's hooks: systemd's READY=1, STATUS= and WATCHDOG=1 (the
/// watchdog pings only while the loop turns), and `/metrics` when
/// `--metrics` is given (its server lives as long as the returned handle).
fn hooks(
    worker: &str,
    metrics_addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<(io::Hooks, Option<MetricsServer>)> {
    let (metrics, server) = match metrics_addr {
        Some(addr) => {
            let metrics = Arc::new(Metrics::new(worker));
            let server = MetricsServer::start(addr, Arc::clone(&metrics))?;
            (Some(metrics), Some(server))
        }
        None => (None, None),
    };
    let hooks = io::Hooks { service: systemd::hooks(), metrics };
    Ok((hooks, server))
}

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
