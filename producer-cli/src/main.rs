//! `orderly-producer`: the command line over the `orderly_producer`
//! library — `send`, `bench`, `relay`, `keygen`.
//!
//! This binary has a package of its own (`orderly-producer-cli`) rather
//! than a cargo feature of the library: features are unified across a
//! build, so one crate enabling a "cli" feature would pull clap, indicatif
//! and the rest into every user's tree; a separate package keeps the
//! library's dependency tree clean by construction.
//!
//! `flags` turns the command line into settings, `send` and `bench` run
//! them over a `session`, `progress` shows how far they got.

mod bench;
mod flags;
mod progress;
mod relay;
mod send;
mod session;

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use flags::Command;
use orderly_cli::exit;
use orderly_producer::ProducerError;

/// mimalloc: the hot paths allocate many small buffers (frames, keys); glibc's
/// malloc spent a fifth of the broker's time consolidating them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            orderly_cli::eprintln_lossy!("orderly-producer: error: {error:#}");
            let code = match error.downcast_ref::<ProducerError>() {
                Some(error) if error.is_timeout() => exit::TIMEOUT,
                Some(ProducerError::Config(_)) => exit::USAGE,
                _ if is_group_error(&error) => exit::USAGE,
                _ => exit::of_error(error.as_ref()),
            };
            ExitCode::from(code)
        }
    }
}

/// A --group file that cannot be used is bad usage, as a bad flag is.
fn is_group_error(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<orderly_replication::group::GroupError>())
}

fn run() -> anyhow::Result<ExitCode> {
    match flags::parse()? {
        Command::Send(args) => {
            let stop = start(args.log())?;
            send::run(args.into_settings()?, &stop)
        }
        Command::Bench(args) => {
            let stop = start(args.log())?;
            bench::run(args.into_settings()?, &stop)
        }
        Command::Relay(args) => {
            let (level, format) = args.log();
            let level = level.to_owned();
            match args.into_command()? {
                // Prints and exits: no logging, no signals.
                flags::RelayCommand::PrintSchema { database, table, archive } => {
                    Ok(relay::print_schema(&database, &table, archive.as_deref()))
                }
                flags::RelayCommand::Run(settings) => {
                    let stop = start((&level, format))?;
                    relay::run(*settings, &stop)
                }
            }
        }
        Command::Keygen { out } => {
            print!("{}", orderly_security::keys::keygen(&out)?);
            Ok(ExitCode::from(exit::OK))
        }
    }
}

/// Logging, and the flag SIGTERM and SIGINT raise: a run sends no more
/// orders and waits for the answers to those sent.
fn start((log_level, log_format): (&str, orderly_cli::LogFormat)) -> anyhow::Result<Arc<AtomicBool>> {
    orderly_cli::init_logging(log_level, log_format)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("cannot install signal handlers")?;
    }
    Ok(stop)
}
