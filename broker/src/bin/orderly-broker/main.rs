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
/// malloc spent a fifth of the broker's time consolidating them. The
/// `system-allocator` feature leaves it out, for heap profilers that hook malloc.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `arena_eager_commit` option (its index in `mi_option_t`,
/// the same in mimalloc 2 and 3; libmimalloc-sys names no constant for it).
#[cfg(all(target_os = "linux", not(feature = "system-allocator")))]
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Arenas committed on demand, not up front. mimalloc commits its arenas
/// eagerly where the OS overcommits (Linux) and advises them for
/// transparent huge pages, so a 2 MiB page stays resident while any byte
/// of it is: a broker holding 1,000,000 pending orders kept ~20 MB more
/// RSS than its live heap (155 against 137 MB, issue 20), with no CPU
/// gained (interleaved runs). On demand, memory is paged in 4 KiB at a
/// time, as under glibc. `MIMALLOC_ARENA_EAGER_COMMIT` in the environment
/// still decides.
///
/// The first allocation reserves the first arena, so this must run before
/// any: a constructor (`.init_array`, run before `main` and before Rust's
/// runtime allocates), allocating nothing itself.
#[cfg(all(target_os = "linux", not(feature = "system-allocator")))]
extern "C" fn commit_mimalloc_arenas_on_demand() {
    // SAFETY: getenv reads the environment, which nothing writes this
    // early; mi_option_set only stores the option's value.
    unsafe {
        if libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

#[cfg(all(target_os = "linux", not(feature = "system-allocator")))]
#[used]
#[link_section = ".init_array"]
static COMMIT_MIMALLOC_ARENAS_ON_DEMAND: extern "C" fn() = commit_mimalloc_arenas_on_demand;

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
    init_logging(&args.log_level, args.log_format)?;
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&shutdown)).context("cannot install signal handlers")?;
    }
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .context("cannot install the SIGHUP handler")?;
    let config = args.into_config()?;
    let summary = io::run_with(config, shutdown, reload, systemd::hooks())?;
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
