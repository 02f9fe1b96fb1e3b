//! What a run has seen so far ([`Tally`]) and how it shows on stderr
//! ([`Progress`]).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Plain progress lines (stderr not a terminal) come this often.
const PROGRESS_LINE_INTERVAL: Duration = Duration::from_secs(2);

/// What happened to the orders of one run.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) sent: u64,
    pub(crate) confirmed: u64,
    pub(crate) rejected: Vec<(String, String)>,
    pub(crate) latencies_us: Vec<u64>,
    /// Input orders skipped because the outbox still awaits their answer.
    pub(crate) already_pending: u64,
}

/// Progress on stderr: a live bar on a terminal, otherwise a plain
/// `progress:` line every few seconds (logs and tests read those).
pub(crate) enum Progress {
    Bar(ProgressBar),
    Lines { last: Instant },
}

impl Progress {
    pub(crate) fn new() -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress::Lines { last: Instant::now() };
        }
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{wide_bar}] {pos}/{len} confirmed ({per_sec}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = ProgressBar::new(0).with_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress::Bar(bar)
    }

    pub(crate) fn update(&mut self, tally: &Tally, pending: usize, started: Instant) {
        match self {
            Progress::Bar(bar) => {
                bar.set_length(tally.sent);
                bar.set_position(tally.confirmed);
                bar.set_message(format!("{} rejected, {pending} awaiting answers", tally.rejected.len()));
            }
            Progress::Lines { last } => {
                if last.elapsed() < PROGRESS_LINE_INTERVAL {
                    return;
                }
                *last = Instant::now();
                // Lossy: a closed stderr must not panic a run mid-way.
                orderly_cli::eprintln_lossy!(
                    "progress: {} sent, {} confirmed, {} rejected, {:.0} orders/s",
                    tally.sent,
                    tally.confirmed,
                    tally.rejected.len(),
                    tally.confirmed as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
    }

    /// Prints a line on stderr without tearing the bar.
    pub(crate) fn println(&self, line: &str) {
        match self {
            Progress::Bar(bar) => bar.suspend(|| orderly_cli::eprintln_lossy!("{line}")),
            Progress::Lines { .. } => orderly_cli::eprintln_lossy!("{line}"),
        }
    }

    pub(crate) fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
