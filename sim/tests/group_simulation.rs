//! Deterministic simulation of a broker group of three (docs/REPLICATION.md):
//! each member is the real broker core, recorder and event journal, the
//! real Raft node on its raft journal, driven through the real sans-IO
//! turn (`orderly_broker::io::Member`) as the group io loop drives it, on
//! its own simulated disk (`SimStorage`); the producers and workers are
//! the real client cores in group mode (`in_group`), following the leader
//! the members' heartbeats announce. Virtual clock, one seed: a seed
//! reproduces its run (checked by `a_seed_reproduces_its_run`).
//!
//! What one seed models (`GroupParams::generate`):
//! - **Members.** Each turn is `Loop::group_turn`: tick; when serving,
//!   intake and control into the core and its timeouts, then
//!   `propose_turn`; `handle_ready`; raft messages out; released messages
//!   published; followers heartbeat on `b/` with their group view. A
//!   member that does not serve drops client input. A restart opens the
//!   member's own disk as `io::run` does: the event journal replayed
//!   (`replay_member`: an entry's events apply at its marker; the
//!   leftovers of an apply a crash interrupted are fenced off, as
//!   `io::recover_member` does), the raft journal opened, the node started
//!   at the applied index the journal's last marker names.
//! - **Network.** Raft messages, control and fanout each arrive after a
//!   random delay (so they overtake each other), may be dropped or
//!   duplicated (0–10 % / 0–5 % per seed), rarely delayed long. Intake is
//!   in order per (producer, member) connection and may lose a message
//!   (a reset connection); a producer's send to a member that is down is
//!   refused (`ZMQ_IMMEDIATE`). Every client subscribes to every member's
//!   fanout; intake and control go to the member the client's core
//!   believes leads.
//! - **Faults** (one member at a time down or about to be): kill -9 (the
//!   page cache survives), a power cut between turns, a power cut at one
//!   of a member's next fsyncs after the write it was to make durable
//!   (`crash_point`: the only way to tear a commit, since every commit is
//!   fsynced before its call returns), a partition of one member (both
//!   ways, or one way), worker kills. Then a calm phase: partitions heal,
//!   every member and worker comes back, and everything must settle.
//!
//! Invariants:
//! 1. **No confirmed order lost**: at the end every order a producer saw
//!    confirmed is acked in the committed history or held (pending or
//!    dead-lettered) by the leader's core with the same items, byte for
//!    byte; on the way, every dispatch any member sends carries its
//!    order's items exactly, and a member that confirms an order (and
//!    still runs) holds it as sealed or done, never partial or unknown.
//! 2. **None sealed twice**: no member's event journal (the committed
//!    history it applied) seals an order key twice (Sealed or Accepted)
//!    without a Forgotten between them.
//! 3. **At most one leader per term**: every (term, leader) any member's
//!    view names, after every turn.
//! 4. **Journals agree**: the events between two applied-index markers are
//!    the same bytes on every member for the same index, each index
//!    applied once and in order, checked at every restart and at the end.
//! 5. Each member's `Core::check_invariants` (every step in release, every
//!    16th in debug), and the run settles within 10 virtual minutes of the
//!    faults ending (liveness).
//!
//! Running: `group_simulate_many_seeds` runs `SIM_GROUP_SEEDS` seeds
//! (default 1000 in release, about 40 s on 2 busy cores; 100 in a debug build, about 30 s) from `SIM_SEED_START`
//! (default 0) on all cores; `group_simulate_one_seed` runs `SIM_SEED`
//! alone (`SIM_VERBOSE=1` prints every trace line). A failure prints the
//! seed, the step, the last trace lines and the command that reproduces it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use orderly_sim::group::{GroupSim, GroupStats};

/// Failures listed by their first line after a many-seed run.
const FAILURES_LISTED: usize = 200;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}

fn reproduce(seed: u64) -> String {
    format!(
        "reproduce with: SIM_SEED={seed} SIM_VERBOSE=1 cargo test -p orderly-sim --release --test group_simulation \
         group_simulate_one_seed -- --nocapture"
    )
}

/// Runs one seed; on failure returns the whole report.
fn run_seed(seed: u64, verbose: bool) -> Result<GroupSim, String> {
    let mut sim = GroupSim::new(seed);
    sim.verbose = verbose;
    let outcome = catch_unwind(AssertUnwindSafe(|| sim.run()));
    let error = match outcome {
        Ok(Ok(())) => return Ok(sim),
        Ok(Err(error)) => error,
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(no message)".into());
            format!("panic: {text}")
        }
    };
    let mut report = format!("seed {seed} failed at step {}: {error}\n", sim.step_count());
    report += &format!("parameters: {:?}\nlast trace lines:\n", sim.params);
    for line in sim.trace() {
        report += &format!("  {line}\n");
    }
    report += &reproduce(seed);
    Err(report)
}

#[test]
fn group_simulate_many_seeds() {
    let default_seeds = if cfg!(debug_assertions) { 100 } else { 1000 };
    let seeds = env_u64("SIM_GROUP_SEEDS").unwrap_or(default_seeds);
    let start = env_u64("SIM_SEED_START").unwrap_or(0);
    let started = Instant::now();
    let next = AtomicU64::new(start);
    let failures: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let totals = Mutex::new(GroupStats::default());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= start + seeds {
                    break;
                }
                match run_seed(seed, false) {
                    Ok(sim) => totals.lock().unwrap().absorb(&sim.stats),
                    Err(report) => failures.lock().unwrap().push((seed, report)),
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|(seed, _)| *seed);
    eprintln!(
        "group: simulated seeds {start}..{} in {:.1?}, {} failed; passing runs together: {:?}",
        start + seeds,
        started.elapsed(),
        failures.len(),
        totals.into_inner().unwrap()
    );
    if let Some((seed, report)) = failures.first() {
        let seeds: Vec<u64> = failures.iter().map(|(s, _)| *s).collect();
        eprintln!("failing seeds ({}): {seeds:?}", seeds.len());
        for (_, report) in failures.iter().take(FAILURES_LISTED) {
            eprintln!("  {}", report.lines().next().unwrap_or_default());
        }
        eprintln!("first failure:\n{report}");
        panic!("group simulation failed for seed {seed}; {}", reproduce(*seed));
    }
}

#[test]
fn group_simulate_one_seed() {
    let Some(seed) = env_u64("SIM_SEED") else { return };
    let verbose = std::env::var_os("SIM_VERBOSE").is_some_and(|v| v != "0");
    match run_seed(seed, verbose) {
        Ok(sim) => println!("seed {seed} passed: {:?}\nparameters: {:?}", sim.stats, sim.params),
        Err(report) => {
            eprintln!("{report}");
            panic!("group simulation failed for seed {seed}; {}", reproduce(seed));
        }
    }
}

/// Determinism: the same seed twice gives the same run, trace line for
/// trace line (a digest of every line and the counts).
#[test]
fn a_seed_reproduces_its_run() {
    for seed in [3, 17] {
        let first = run_seed(seed, false).unwrap_or_else(|report| panic!("{report}"));
        let second = run_seed(seed, false).unwrap_or_else(|report| panic!("{report}"));
        assert_eq!(first.stats, second.stats, "seed {seed}: the counts differ between two runs");
        assert_eq!(first.fingerprint(), second.fingerprint(), "seed {seed}: the traces differ between two runs");
        assert!(first.stats.elections > 0 && first.stats.orders_confirmed > 0, "seed {seed}: {:?}", first.stats);
    }
}
