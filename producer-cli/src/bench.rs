//! `orderly-producer bench`: generated orders, optionally paced by a fixed
//! [`Schedule`], and one line of throughput and confirm latency.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use orderly_cli::exit;
use orderly_producer::orders;

use crate::flags::{BenchSettings, SECONDS_MAX};
use crate::progress::Tally;
use crate::session::Session;

/// The fixed schedule of `bench --rate`: order i is due `i / rate` seconds
/// after the start.
struct Schedule {
    start: Instant,
    rate: f64,
}

impl Schedule {
    fn due(&self, index: u64) -> Instant {
        self.start + Duration::from_secs_f64((index as f64 / self.rate).min(SECONDS_MAX))
    }

    /// How many orders are due by `now` (those with a lower index).
    fn due_by(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_secs_f64() * self.rate).floor() as u64 + 1
    }
}

/// `orderly-producer bench`: sends generated orders, on a schedule with
/// `--rate`, and prints throughput and confirm latency.
pub(crate) fn run(settings: BenchSettings, stop: &AtomicBool) -> anyhow::Result<ExitCode> {
    let mut session = Session::start(settings.session, None, stop)?;
    let started = Instant::now();
    let batch_max = session.batch_orders_max as u64;
    let schedule = settings.rate.map(|rate| Schedule { start: started, rate });
    let mut send_lag_max = Duration::ZERO;
    let mut complete = true;
    let mut next = 0;
    while next < settings.orders && !session.stop.load(Ordering::Relaxed) {
        let due_end = match &schedule {
            None => settings.orders,
            Some(schedule) => {
                let due = schedule.due(next);
                if !session.wait_until(due)? {
                    break;
                }
                let now = Instant::now();
                send_lag_max = send_lag_max.max(now - due);
                // Order `next` is due (whatever the rounding), and so is
                // every later one whose time has come: no more.
                schedule.due_by(now).max(next + 1)
            }
        };
        let end = (next + batch_max).min(due_end).min(settings.orders);
        let batch = (next..end).map(|index| orders::generate(index, settings.items, settings.item_bytes)).collect();
        next = end;
        if !session.send(batch)? {
            complete = false;
            break;
        }
    }
    complete &= session.finish()?;
    session.progress.finish();
    // At a fixed rate, how far behind its schedule the sender fell (an
    // order sent late has its latency measured from when it was sent).
    let offered = match schedule {
        Some(schedule) => {
            format!("; offered {} orders/s, send lag max {:.3} ms", schedule.rate, send_lag_max.as_secs_f64() * 1000.0)
        }
        None => String::new(),
    };
    Ok(report(&mut session.tally, settings.items, started, &offered, complete))
}

/// Prints the one result line; the exit code says how the orders fared.
fn report(tally: &mut Tally, items: u32, started: Instant, offered: &str, complete: bool) -> ExitCode {
    let elapsed = started.elapsed().as_secs_f64();
    tally.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        let lat = &tally.latencies_us;
        if lat.is_empty() {
            return f64::NAN;
        }
        lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
    };
    orderly_cli::println_lossy!(
        "orders {} confirmed {} rejected {} in {:.3} s: {:.0} orders/s, {:.0} items/s; \
         confirm latency ms p50 {:.3} p99 {:.3} p999 {:.3}{offered}",
        tally.sent,
        tally.confirmed,
        tally.rejected.len(),
        elapsed,
        tally.confirmed as f64 / elapsed,
        (tally.confirmed * u64::from(items)) as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(0.999)
    );
    let code = if !complete {
        exit::TIMEOUT
    } else if !tally.rejected.is_empty() {
        exit::REJECTED
    } else {
        exit::OK
    };
    ExitCode::from(code)
}
