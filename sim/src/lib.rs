//! The deterministic simulation of orderly: the real sans-IO cores of the
//! broker, the workers and the producers, a faulty network between them,
//! and a virtual clock, all driven from one seed. [`Sim`] is one run; the
//! test entry (`tests/simulation.rs`) runs many seeds and documents what is
//! modelled and which invariants are checked.

pub mod model;
pub mod peers;
pub mod rng;

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use orderly_broker::core::{Core, CoreConfig, Event, Millis, Outbound};
use orderly_broker::io::Recorder;
use orderly_common::protocol::{ControlMsg, Dispatch, FanoutMsg, IntakeMsg, Items, Orders, RejectReason};
use orderly_common::OrderKey;
use orderly_journal::{FlipReport, SimCounters, SimStorage};
use serde_bytes::ByteBuf;

use model::{item_data, Kind, Model, OrderModel};
use peers::{Life, RunEnd, SimProducer, SimWorker, Submit, HEARTBEAT_INTERVAL_MS, HEARTBEAT_LIVENESS};
use rng::Rng;

/// Virtual time the calm phase may take to settle everything.
const SETTLE_MS_MAX: Millis = 10 * 60 * 1000;
/// Steps in one run: a runaway guard, 10 times the longest run of 20,000
/// passing seeds (19,772 steps).
const STEPS_MAX: u64 = 200_000;
/// Steps at one instant before the run counts as a livelock.
const SAME_INSTANT_STEPS_MAX: u64 = 100_000;
/// Trace lines kept for a failure report.
const TRACE_LINES: usize = 30;
/// Steps between checks of every order (touched orders are checked always);
/// a power of two.
const FULL_CHECK_EVERY: u64 = 256;

/// Probabilities and delays of one direction of traffic.
#[derive(Debug, Clone, Copy)]
pub struct NetFaults {
    pub drop: f64,
    pub duplicate: f64,
    pub delay_ms_max: u64,
    /// Chance of a long delay (up to `long_delay_ms_max`), past the
    /// broker's two-interval reconcile grace at the top.
    pub long_delay: f64,
    pub long_delay_ms_max: u64,
}

const CALM: NetFaults = NetFaults { drop: 0.0, duplicate: 0.0, delay_ms_max: 5, long_delay: 0.0, long_delay_ms_max: 0 };

/// Faults the chaos schedule picks from.
#[derive(Debug, Clone, Copy)]
enum Chaos {
    /// The broker process dies; on some seeds the power fails with it, or
    /// a bit of durable data flips.
    CrashBroker,
    /// The journal rolls to a new segment, so compaction has one to remove.
    Compact,
    KillWorker,
    FreezeWorker,
    StickWorker,
    DrainWorker,
    /// An operator sends dead letters back to the queue.
    Revive,
    /// The disk fills up (ENOSPC) for a while.
    DiskFull,
    /// The next fsync fails (EIO).
    SyncFailure,
    /// A worker's handler cannot run for a while (a broken deployment):
    /// it returns its orders and reports itself broken.
    BreakWorker,
}

const CHAOS: [Chaos; 10] = [
    Chaos::CrashBroker,
    Chaos::Compact,
    Chaos::KillWorker,
    Chaos::FreezeWorker,
    Chaos::StickWorker,
    Chaos::DrainWorker,
    Chaos::Revive,
    Chaos::DiskFull,
    Chaos::SyncFailure,
    Chaos::BreakWorker,
];

/// The simulated disk's faults for one seed.
#[derive(Debug, Clone, Copy)]
pub struct DiskFaults {
    /// The journal's segment size: small, so rolls, reserves and
    /// compaction happen in every run.
    pub segment_bytes: u64,
    /// Share of broker crashes that are power cuts.
    pub power_cut: f64,
    /// Share of broker crashes that flip a bit of durable data.
    pub bit_flip: f64,
    /// The journal's `zero_ahead_bytes` (0: none; a sector; a few; the
    /// default, larger than the simulation's smallest segments).
    pub zero_ahead_bytes: u64,
}

/// The `zero_ahead_bytes` a seed draws from.
pub const ZERO_AHEAD_CHOICES: [u64; 4] = [0, 512, 4 * 1024, orderly_journal::ZERO_AHEAD_BYTES_DEFAULT];

/// Everything a seed decides up front.
#[derive(Debug)]
pub struct Params {
    pub max_attempts: u32,
    pub workers: usize,
    pub producers: usize,
    pub orders: usize,
    pub fault_phase_ms: u64,
    pub control: NetFaults,
    pub fanout: NetFaults,
    pub intake_delay_ms_max: u64,
    /// Intake messages of one producer in transit at most (its socket's
    /// high-water mark, scaled to the simulation's few orders): past it
    /// sends are refused, as while the broker's intake is closed ZeroMQ's
    /// queues fill and push back.
    pub intake_hwm: usize,
    /// Chance that a packet in transit is lost when the broker crashes.
    pub crash_loss: f64,
    pub processing_ms_max: u64,
    /// Chance a worker nacks (retry) a normal order.
    pub nack: f64,
    pub chaos_gap_ms: (u64, u64),
    pub chaos_weights: [u64; 10],
    /// Chance that a retryable nack asks for a delay (`delay_ms`).
    pub nack_delay: f64,
    pub disk: DiskFaults,
    pub pending_orders_max: Option<usize>,
    /// Short on some seeds, which then also send abandoned orders (with the
    /// default of 10 minutes they would outlast the settle phase). Never
    /// with a pending bound: an order held up by closed intake may expire.
    pub partial_age_max_ms: Option<u64>,
    /// Short on some seeds (then it expires now and then between two
    /// heartbeats that would have extended it).
    pub ack_timeout_ms: Option<u64>,
    /// The cap on one attempt (`attempt_timeout_ms`), past the ack
    /// timeout: stuck workers heartbeat their orders into it.
    pub attempt_timeout_ms: Option<u64>,
    /// Small on some seeds: keys of acked orders are then forgotten within
    /// the run, and a resend after that is a new order.
    pub dedup: Option<(u64, usize)>,
    /// A producer sends an unanswered order again after this long (its
    /// confirm timeout), the wait doubling up to four times that.
    pub resend_after_ms: u64,
    /// Chance that an order is streamed item by item instead of submitted
    /// whole.
    pub stream: f64,
}

impl Params {
    fn generate(rng: &mut Rng) -> Self {
        let faults = |rng: &mut Rng| {
            let clean = rng.chance(0.2);
            NetFaults {
                drop: if clean { 0.0 } else { rng.unit() * 0.05 },
                duplicate: if clean { 0.0 } else { rng.unit() * 0.05 },
                delay_ms_max: [1, 20, 100, 400][rng.below(4) as usize],
                long_delay: if rng.chance(0.3) { 0.01 } else { 0.0 },
                long_delay_ms_max: 2_500,
            }
        };
        let control = faults(rng);
        let fanout = faults(rng);
        let chaos_mean_ms = [1_000, 3_000, 10_000][rng.below(3) as usize];
        let pending_orders_max = if rng.chance(0.2) { Some(rng.range(2, 8) as usize) } else { None };
        let mut chaos_weights = [0; 10];
        for w in &mut chaos_weights[..7] {
            *w = rng.below(4);
        }
        let mut params = Params {
            max_attempts: if rng.chance(0.5) { 3 } else { 5 },
            workers: rng.range(2, 4) as usize,
            producers: rng.range(1, 3) as usize,
            orders: rng.range(20, 150) as usize,
            fault_phase_ms: rng.range(30_000, 150_000),
            control,
            fanout,
            intake_delay_ms_max: rng.range(0, 50),
            intake_hwm: rng.range(8, 64) as usize,
            crash_loss: [0.0, 0.5, 1.0][rng.below(3) as usize],
            processing_ms_max: [10, 200, 1_500, 4_000][rng.below(4) as usize],
            nack: [0.0, 0.05, 0.2][rng.below(3) as usize],
            chaos_gap_ms: (chaos_mean_ms / 4, chaos_mean_ms * 2),
            chaos_weights,
            pending_orders_max,
            dedup: if rng.chance(0.3) { Some((rng.range(2_000, 20_000), rng.range(3, 30) as usize)) } else { None },
            resend_after_ms: rng.range(2_000, 15_000),
            stream: [0.0, 0.3, 0.7][rng.below(3) as usize],
            ack_timeout_ms: if rng.chance(0.5) { Some(rng.range(1_200, 6_000)) } else { None },
            partial_age_max_ms: if pending_orders_max.is_none() && rng.chance(0.4) {
                Some(rng.range(8_000, 30_000))
            } else {
                None
            },
            disk: DiskFaults { segment_bytes: 0, power_cut: 0.0, bit_flip: 0.0, zero_ahead_bytes: 0 },
            nack_delay: 0.0,
            attempt_timeout_ms: None,
        };
        // Drawn last, so the other parameters of a seed stay as they were
        // before the disk was simulated.
        params.disk = DiskFaults {
            segment_bytes: [4 * 1024, 16 * 1024, 64 * 1024][rng.below(3) as usize],
            power_cut: [0.0, 0.3, 0.7, 1.0][rng.below(4) as usize],
            bit_flip: if rng.chance(0.05) { 0.3 } else { 0.0 },
            zero_ahead_bytes: 0,
        };
        let disk_weight = |rng: &mut Rng| if rng.chance(0.3) { rng.range(1, 2) } else { 0 };
        params.chaos_weights[7] = disk_weight(rng);
        params.chaos_weights[8] = disk_weight(rng);
        // Drawn after the disk, for the same reason.
        params.chaos_weights[9] = if rng.chance(0.5) { rng.range(1, 3) } else { 0 };
        params.nack_delay = [0.0, 0.3, 1.0][rng.below(3) as usize];
        if let (Some(ack_ms), true) = (params.ack_timeout_ms, rng.chance(0.5)) {
            params.attempt_timeout_ms = Some(ack_ms + rng.range(500, 8_000));
        }
        // Drawn last, so every earlier parameter of a seed stays as it was.
        params.disk.zero_ahead_bytes = ZERO_AHEAD_CHOICES[rng.below(ZERO_AHEAD_CHOICES.len() as u64) as usize];
        params
    }
}

/// One entry of what the running brokers recorded, in seq order: the model
/// is folded again from what survives a power cut.
#[derive(Debug)]
enum History {
    /// A record the model folded.
    Event(broker::Appended),
    /// A compaction copy: moves proofs only.
    Copy(broker::Appended),
    /// The broker restarted here.
    Recovery,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Running,
    /// Every order settled and every invariant held.
    Settled,
    /// A flipped bit made the journal refuse to open (as it must): the run
    /// ends there.
    CorruptionReported(String),
}

#[derive(Debug, Clone)]
enum Packet {
    /// An encoded control message from a worker.
    Control {
        from: usize,
        body: Vec<u8>,
    },
    /// Fanout for one process of a worker.
    ToWorker {
        worker: usize,
        generation: u64,
        msg: FanoutMsg,
    },
    ToProducer {
        producer: usize,
        msg: FanoutMsg,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    // Declared in priority order for actions due at the same instant.
    CoreTimeout,
    /// The io loop's timer for the fsync of lazy commits.
    JournalSync,
    BrokerRestart,
    /// The disk has room again.
    DiskSpace,
    Network,
    Intake,
    Worker(usize),
    Producer(usize),
    Chaos,
    EndFaults,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Faults,
    Settle { deadline: Millis },
}

/// Counts for the report of one run.
#[derive(Debug, Default)]
pub struct Stats {
    pub steps: u64,
    pub longest_run_steps: u64,
    pub end_ms: Millis,
    pub broker_crashes: u32,
    pub compactions: u32,
    pub worker_kills: u32,
    pub worker_freezes: u32,
    pub worker_sticks: u32,
    pub worker_breaks: u32,
    pub worker_drains: u32,
    pub packets_dropped: u64,
    pub packets_duplicated: u64,
    pub packets_lost_in_crash: u64,
    pub acked: u32,
    pub dead_normal: u32,
    pub dead_other: u32,
    pub rejected: u32,
    pub max_dispatches: u32,
    pub recoveries_with_partials: u32,
    pub recoveries_with_in_flight: u32,
    pub requeues_nack: u32,
    pub requeues_not_held: u32,
    pub requeues_silent_worker: u32,
    pub requeues_restarted_worker: u32,
    pub requeues_bye: u32,
    pub requeues_ack_timeout: u32,
    pub revivals: u32,
    pub keys_forgotten: u32,
    pub resends: u32,
    pub second_lives: u32,
    pub dispatches_refused_by_workers: u64,
    /// Late acks and nacks the broker refused: from a worker whose
    /// dispatch was taken back and sent to another since (all workers
    /// here are honest, so no other kind occurs).
    pub acks_refused: u64,
    /// Dispatches whose items were read back from the journal.
    pub dispatches_from_journal: u64,
    /// Copies written so that a payload could leave RAM.
    pub spills: u64,
    /// `AcceptedBatch` records: batches of whole orders (`orders`
    /// messages) taken in one record.
    pub order_batches: u64,
    /// `dispatches` messages of two or more orders published (issue 20):
    /// half the workers take batches.
    pub dispatch_batches: u64,
    pub segments_removed: u64,
    /// Broker crashes that were power cuts.
    pub power_cuts: u32,
    /// Records (seqs) a power cut took: written, never fsynced.
    pub records_lost: u64,
    /// Reopens that cut a torn tail.
    pub torn_tails_cut: u32,
    pub bit_flips: u32,
    /// Runs that ended with the journal refusing to open after a flip.
    pub corruption_reported: u32,
    /// Flips the reopened journal never read or found harmless.
    pub flips_survived: u32,
    pub disk_full_episodes: u32,
    /// Steps that ended with a commit held back by a full disk.
    pub commits_held: u64,
    pub fsync_failures_injected: u32,
    /// Journal failures that stopped the broker process.
    pub journal_failures: u32,
    /// Opens that failed (an fsync error during open); retried.
    pub open_failures: u32,
    /// Orders whose Begun, items or Dropped a crash took before they were
    /// durable (see `OrderModel::stream_cut`).
    pub streams_cut: u32,
    /// The simulated disk's own counters.
    pub disk: SimCounters,
}

impl Stats {
    /// Adds another run's counts (maxima for `end_ms`, `max_dispatches`).
    pub fn absorb(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.longest_run_steps = self.longest_run_steps.max(o.longest_run_steps);
        self.end_ms = self.end_ms.max(o.end_ms);
        self.broker_crashes += o.broker_crashes;
        self.compactions += o.compactions;
        self.worker_kills += o.worker_kills;
        self.worker_freezes += o.worker_freezes;
        self.worker_sticks += o.worker_sticks;
        self.worker_breaks += o.worker_breaks;
        self.worker_drains += o.worker_drains;
        self.packets_dropped += o.packets_dropped;
        self.packets_duplicated += o.packets_duplicated;
        self.packets_lost_in_crash += o.packets_lost_in_crash;
        self.acked += o.acked;
        self.acks_refused += o.acks_refused;
        self.dead_normal += o.dead_normal;
        self.dead_other += o.dead_other;
        self.rejected += o.rejected;
        self.max_dispatches = self.max_dispatches.max(o.max_dispatches);
        self.recoveries_with_partials += o.recoveries_with_partials;
        self.recoveries_with_in_flight += o.recoveries_with_in_flight;
        self.requeues_nack += o.requeues_nack;
        self.requeues_not_held += o.requeues_not_held;
        self.requeues_silent_worker += o.requeues_silent_worker;
        self.requeues_restarted_worker += o.requeues_restarted_worker;
        self.requeues_bye += o.requeues_bye;
        self.requeues_ack_timeout += o.requeues_ack_timeout;
        self.revivals += o.revivals;
        self.keys_forgotten += o.keys_forgotten;
        self.resends += o.resends;
        self.second_lives += o.second_lives;
        self.dispatches_refused_by_workers += o.dispatches_refused_by_workers;
        self.dispatches_from_journal += o.dispatches_from_journal;
        self.spills += o.spills;
        self.order_batches += o.order_batches;
        self.dispatch_batches += o.dispatch_batches;
        self.segments_removed += o.segments_removed;
        self.power_cuts += o.power_cuts;
        self.records_lost += o.records_lost;
        self.torn_tails_cut += o.torn_tails_cut;
        self.bit_flips += o.bit_flips;
        self.corruption_reported += o.corruption_reported;
        self.flips_survived += o.flips_survived;
        self.disk_full_episodes += o.disk_full_episodes;
        self.commits_held += o.commits_held;
        self.fsync_failures_injected += o.fsync_failures_injected;
        self.journal_failures += o.journal_failures;
        self.open_failures += o.open_failures;
        self.streams_cut += o.streams_cut;
        let (d, e) = (&mut self.disk, &o.disk);
        d.power_cuts += e.power_cuts;
        d.writes_lost += e.writes_lost;
        d.writes_torn += e.writes_torn;
        d.sectors_lost += e.sectors_lost;
        d.dir_ops_lost += e.dir_ops_lost;
        d.bit_flips += e.bit_flips;
        d.no_space += e.no_space;
        d.sync_failures += e.sync_failures;
    }

    /// Sorts a requeue by its reason (only for the report: the invariants
    /// never read reason texts).
    fn count_requeue(&mut self, reason: &str) {
        let counter = if reason.contains("failed it") {
            &mut self.requeues_nack
        } else if reason.contains("does not hold") {
            &mut self.requeues_not_held
        } else if reason.contains("missed its heartbeats") {
            &mut self.requeues_silent_worker
        } else if reason.contains("restarted") {
            &mut self.requeues_restarted_worker
        } else if reason.contains("bye") {
            &mut self.requeues_bye
        } else if reason.contains("no ack") {
            &mut self.requeues_ack_timeout
        } else {
            return;
        };
        *counter += 1;
    }
}

pub struct Sim {
    pub params: Params,
    rng: Rng,
    now: Millis,
    steps: u64,
    same_instant_steps: u64,
    phase: Phase,
    chaos_at: Millis,
    core: Option<Core>,
    /// The io loop's journal side (the real `Recorder` over the real
    /// journal on the simulated disk); `Some` while the broker is up.
    recorder: Option<Recorder<broker::SimLog>>,
    /// A commit failed with NoSpace: its records wait in the journal's
    /// batch, what the core wants published waits in the core.
    held: bool,
    /// Orders requeued with a retry delay, and when it ends (invariant 7);
    /// only for records appended in the turn that made them (a held turn's
    /// records are appended later than the core applied them).
    not_before: BTreeMap<OrderKey, Millis>,
    broker_incarnation: u64,
    restart_at: Millis,
    disk: SimStorage,
    /// The virtual clock's origin as an `Instant` (for the journal).
    clock_base: Instant,
    history: Vec<History>,
    /// Every record up to this seq was fsynced: no power cut may take it.
    durable_seq: u64,
    /// The highest seq of a durable record a published Confirm relied on.
    confirmed_seq_max: u64,
    /// Since when lazy commits wait for their fsync.
    unsynced_since: Option<Millis>,
    /// The disk is full until then.
    disk_full_until: Option<Millis>,
    /// The power fails (after this downtime) as soon as written records
    /// wait for their fsync.
    power_cut_armed: Option<u64>,
    /// A bit flipped since the journal was last opened.
    flipped: Option<FlipReport>,
    pub outcome: Outcome,
    model: Model,
    workers: Vec<SimWorker>,
    producers: Vec<SimProducer>,
    /// In transit, by (arrival, sequence): control and fanout traffic.
    network: BTreeMap<(Millis, u64), Packet>,
    /// In transit, by (arrival, sequence): intake, in order per producer.
    intake: BTreeMap<(Millis, u64), (usize, IntakeMsg)>,
    intake_last_ms: Vec<Millis>,
    /// Intake messages in transit per producer.
    intake_len: Vec<usize>,
    packet_seq: u64,
    control_faults: NetFaults,
    fanout_faults: NetFaults,
    touched: Vec<usize>,
    check_all: bool,
    trace: VecDeque<String>,
    pub verbose: bool,
    pub stats: Stats,
}

type Check = Result<(), String>;

/// Formats first (the arguments may borrow the simulation), then logs.
macro_rules! log {
    ($sim:expr, $($fmt:tt)+) => {{
        let line = format!($($fmt)+);
        $sim.log(line);
    }};
}

pub mod broker;
pub mod crash_point;
pub mod group;

impl Sim {
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let params = Params::generate(&mut rng);
        let partial_age_max_ms =
            params.partial_age_max_ms.unwrap_or(CoreConfig::with_incarnation(0).partial_age_max_ms);
        let mut model = Model::new(params.max_attempts, partial_age_max_ms);
        let mut producers: Vec<SimProducer> = (0..params.producers)
            .map(|p| {
                let (nonce, pack_items, start_at) = (rng.next_u64(), rng.chance(0.5), rng.range(0, 2_000));
                SimProducer::new(format!("p{p}"), nonce, pack_items, start_at, params.resend_after_ms)
            })
            .collect();
        for n in 0..params.orders {
            let producer = rng.below(params.producers as u64) as usize;
            let key = OrderKey::new(producers[producer].id.clone(), format!("o{n}"));
            let kind = match rng.below(100) {
                0..=4 => Kind::Gap,
                5..=7 => Kind::Poison,
                8..=9 => Kind::Refuse,
                10..=12 if params.partial_age_max_ms.is_some() => Kind::Abandoned,
                _ => Kind::Normal,
            };
            let (count, skip) = if kind == Kind::Gap {
                let count = rng.range(1, 5) as u32;
                (count, Some(rng.below(u64::from(count)) as u32))
            } else {
                (rng.range(0, 5) as u32, None)
            };
            let idx = model.add(OrderModel::new(key, kind, count, skip));
            producers[producer].orders.push(idx);
        }
        let workers = (0..params.workers).map(|w| SimWorker::new(format!("w{w}"), rng.range(0, 1_500))).collect();
        let chaos_at = rng.range(params.chaos_gap_ms.0, params.chaos_gap_ms.1);
        let (control_faults, fanout_faults) = (params.control, params.fanout);
        let disk = SimStorage::new(rng.next_u64());
        let mut sim = Sim {
            rng,
            now: 0,
            steps: 0,
            same_instant_steps: 0,
            phase: Phase::Faults,
            chaos_at,
            core: None,
            recorder: None,
            held: false,
            not_before: BTreeMap::new(),
            broker_incarnation: 0,
            restart_at: 0,
            disk,
            clock_base: broker::virtual_base(),
            history: Vec::new(),
            durable_seq: 0,
            confirmed_seq_max: 0,
            unsynced_since: None,
            disk_full_until: None,
            flipped: None,
            power_cut_armed: None,
            outcome: Outcome::Running,
            model,
            workers,
            intake_last_ms: vec![0; producers.len()],
            intake_len: vec![0; producers.len()],
            producers,
            network: BTreeMap::new(),
            intake: BTreeMap::new(),
            packet_seq: 0,
            control_faults,
            fanout_faults,
            touched: Vec::new(),
            check_all: false,
            trace: VecDeque::new(),
            verbose: false,
            stats: Stats::default(),
            params,
        };
        sim.start_broker().expect("a fresh journal opens");
        sim
    }

    /// The last trace lines, oldest first.
    pub fn trace(&self) -> impl Iterator<Item = &String> {
        self.trace.iter()
    }

    pub fn step_count(&self) -> u64 {
        self.steps
    }

    fn log(&mut self, line: String) {
        let line = format!("{:>7}ms #{:<6} {line}", self.now, self.steps);
        if self.verbose {
            println!("{line}");
        }
        if self.trace.len() == TRACE_LINES {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    /// Runs to the end: `Ok` when every invariant held and the run settled.
    pub fn run(&mut self) -> Check {
        while !self.step()? {}
        self.stats.acks_refused += self.core.as_ref().map_or(0, |core| core.counters().acks_refused);
        self.stats.disk = self.disk.counters();
        self.stats.steps = self.steps;
        self.stats.longest_run_steps = self.steps;
        self.stats.end_ms = self.now;
        Ok(())
    }

    // ------------------------------------------------------------ scheduling

    fn next_action(&self) -> (Millis, Action) {
        let mut candidates: Vec<(Millis, Action)> = Vec::with_capacity(8 + self.workers.len());
        match &self.core {
            Some(core) => {
                candidates.push((core.poll_timeout(), Action::CoreTimeout));
                if core.intake_open() && self.journal_takes_intake() {
                    candidates.extend(self.intake.keys().next().map(|&(at, _)| (at, Action::Intake)));
                }
                let lazy_sync_ms = orderly_journal::LAZY_SYNC_MAX.as_millis() as Millis;
                candidates.extend(self.unsynced_since.map(|since| (since + lazy_sync_ms, Action::JournalSync)));
            }
            None => candidates.push((self.restart_at, Action::BrokerRestart)),
        }
        candidates.extend(self.disk_full_until.map(|at| (at, Action::DiskSpace)));
        candidates.extend(self.network.keys().next().map(|&(at, _)| (at, Action::Network)));
        for (i, w) in self.workers.iter().enumerate() {
            candidates.extend(w.next_time().map(|at| (at, Action::Worker(i))));
        }
        for (i, p) in self.producers.iter().enumerate() {
            candidates.extend(p.next_time().map(|at| (at, Action::Producer(i))));
        }
        if self.phase == Phase::Faults {
            if self.params.chaos_weights.iter().any(|&w| w > 0) {
                candidates.push((self.chaos_at, Action::Chaos));
            }
            candidates.push((self.params.fault_phase_ms, Action::EndFaults));
        }
        candidates.into_iter().min().expect("the core always has a timeout, a down broker a restart")
    }

    /// One action, then every invariant. `Ok(true)` once settled.
    fn step(&mut self) -> Result<bool, String> {
        self.steps += 1;
        if self.steps > STEPS_MAX {
            return Err(format!("runaway: {STEPS_MAX} steps"));
        }
        let (at, action) = self.next_action();
        if let Phase::Settle { deadline } = self.phase {
            if at > deadline {
                return Err(self.not_settled());
            }
        }
        if at > self.now {
            self.now = at;
            self.same_instant_steps = 0;
        } else {
            self.same_instant_steps += 1;
            if self.same_instant_steps > SAME_INSTANT_STEPS_MAX {
                return Err(format!("livelock: {SAME_INSTANT_STEPS_MAX} steps without time advancing ({action:?})"));
            }
        }
        self.touched.clear();
        match action {
            Action::CoreTimeout => {
                log!(self, "broker: timeout");
                let now = self.now;
                self.core.as_mut().expect("up").handle_timeout(now);
            }
            Action::JournalSync => log!(self, "broker: lazy fsync timer"),
            Action::BrokerRestart => {
                self.start_broker()?;
                if self.outcome != Outcome::Running {
                    return Ok(true);
                }
            }
            Action::DiskSpace => {
                self.disk.set_capacity(None);
                self.disk_full_until = None;
                log!(self, "DISK space freed");
            }
            Action::Network => {
                let (_, packet) = self.network.pop_first().expect("scheduled");
                self.deliver(packet)?;
            }
            Action::Intake => {
                let (_, (producer, msg)) = self.intake.pop_first().expect("scheduled");
                self.intake_len[producer] -= 1;
                log!(self, "intake -> broker: {}", short_intake(&msg));
                let now = self.now;
                self.core.as_mut().expect("intake waits while down").handle_intake(msg, now);
            }
            Action::Worker(i) => self.worker_acts(i)?,
            Action::Producer(i) => self.producer_acts(i)?,
            Action::Chaos => self.chaos()?,
            Action::EndFaults => self.end_faults(),
        }
        self.after_step()?;
        self.check_step()?;
        if matches!(self.phase, Phase::Settle { .. }) && self.settled() {
            self.finish()?;
            self.outcome = Outcome::Settled;
            return Ok(true);
        }
        Ok(false)
    }

    // ------------------------------------------------------------ broker

    fn config(&self, incarnation: u64) -> CoreConfig {
        let mut config = CoreConfig {
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
            heartbeat_liveness: HEARTBEAT_LIVENESS,
            max_attempts: self.params.max_attempts,
            ..CoreConfig::with_incarnation(incarnation)
        };
        // Every third broker process keeps almost no payload in RAM, so
        // spilling, read-back and copying from the journal meet the faults.
        if incarnation % 3 < 1 {
            config.payload_cache_bytes = incarnation % 64;
        }
        if let Some(max) = self.params.pending_orders_max {
            config.pending_orders_max = max;
        }
        if let Some(max) = self.params.partial_age_max_ms {
            config.partial_age_max_ms = max;
        }
        if let Some(timeout) = self.params.ack_timeout_ms {
            config.ack_timeout_ms = timeout;
        }
        if let Some(cap) = self.params.attempt_timeout_ms {
            config.attempt_timeout_ms = cap;
        }
        if let Some((window_ms, keys_max)) = self.params.dedup {
            config.dedup_window_ms = window_ms;
            config.dedup_keys_max = keys_max;
        }
        config
    }

    /// The invariants after every step: the core's status and the orders
    /// the step touched (every order now and then) against the model. Any
    /// further per-step check of the broker core goes here.
    fn check_step(&mut self) -> Check {
        let Some(core) = self.core.as_ref() else { return Ok(()) };
        // The core's own bookkeeping: every step in release; every 8th in a
        // debug build, where one check costs about as much as 30 steps.
        if !cfg!(debug_assertions) || self.steps.is_multiple_of(8) {
            core.check_invariants();
        }
        if self.held {
            // A turn held by a full disk: the core has applied events the
            // journal does not hold yet (the recorder's stash and the
            // core's queue), so the model, folded from the journal, lags
            // until the retried commit appends them. Compare everything
            // then (or after the restart that drops them).
            self.check_all = true;
            return Ok(());
        }
        self.model.check_status(&core.status())?;
        let all = self.check_all || self.steps & (FULL_CHECK_EVERY - 1) == 0;
        if all {
            self.check_all = false;
            self.model.check_dead_letters(&core.dead_letters(usize::MAX))?;
        }
        let orders: Vec<usize> = if all { (0..self.model.orders.len()).collect() } else { self.touched.clone() };
        for i in orders {
            let snapshot = self.snapshot_filled(&self.model.orders[i].key.clone())?;
            self.model.check_order(i, snapshot)?;
        }
        Ok(())
    }

    fn publish(&mut self, out: Outbound) -> Check {
        let msg = FanoutMsg::decode(&out.body).map_err(|e| format!("broker published an undecodable body: {e}"))?;
        let topic = String::from_utf8(out.topic.to_vec()).map_err(|_| "topic is not UTF-8".to_string())?;
        log!(self, "broker -> {topic}: {}", short_fanout(&msg));
        let entries: &[Dispatch] = match &msg {
            FanoutMsg::Dispatch(d) => std::slice::from_ref(d),
            FanoutMsg::Dispatches(batch) => {
                self.stats.dispatch_batches += u64::from(batch.dispatches.len() >= 2);
                &batch.dispatches
            }
            _ => &[],
        };
        for d in entries {
            let i = self.model.find(&d.order).ok_or_else(|| format!("dispatch of unknown order {}", d.order))?;
            let o = &self.model.orders[i];
            let items: Vec<_> = (0..o.count).map(|s| item_data(&o.key, s)).collect();
            if d.items != items || d.redelivered != (d.attempt > 1) || d.attempt > self.params.max_attempts {
                return Err(format!(
                    "bad dispatch of {}: attempt {}, redelivered {}",
                    d.order, d.attempt, d.redelivered
                ));
            }
        }
        if topic == "b/" {
            if !matches!(msg, FanoutMsg::Heartbeat(_)) {
                return Err(format!("{} on the broadcast topic", msg.kind()));
            }
            // One SUB connection per worker: each copy has its own fate.
            for worker in 0..self.workers.len() {
                let w = &self.workers[worker];
                if !matches!(w.life, Life::Dead { .. }) {
                    let packet = Packet::ToWorker { worker, generation: w.generation, msg: msg.clone() };
                    self.send(packet);
                }
            }
        } else if let Some(id) = topic.strip_prefix("w/").and_then(|t| t.strip_suffix('/')) {
            let worker =
                self.workers.iter().position(|w| w.id == id).ok_or_else(|| format!("unknown topic {topic}"))?;
            if !matches!(msg, FanoutMsg::Welcome(_) | FanoutMsg::Dispatch(_) | FanoutMsg::Dispatches(_)) {
                return Err(format!("{} on a worker topic", msg.kind()));
            }
            let generation = self.workers[worker].generation;
            self.send(Packet::ToWorker { worker, generation, msg });
        } else if let Some(id) = topic.strip_prefix("p/").and_then(|t| t.strip_suffix('/')) {
            let producer =
                self.producers.iter().position(|p| p.id == id).ok_or_else(|| format!("unknown topic {topic}"))?;
            let answer = matches!(msg, FanoutMsg::Confirm(_) | FanoutMsg::Confirms(_) | FanoutMsg::Reject(_));
            if !answer && !matches!(msg, FanoutMsg::Welcome(_)) {
                return Err(format!("{} on a producer topic", msg.kind()));
            }
            self.check_confirm_durable(&msg, producer)?;
            self.send(Packet::ToProducer { producer, msg });
        } else {
            return Err(format!("unknown topic {topic:?}"));
        }
        Ok(())
    }

    // ------------------------------------------------------------ network

    fn faults_for(&self, packet: &Packet) -> NetFaults {
        match packet {
            Packet::Control { .. } => self.control_faults,
            Packet::ToWorker { .. } | Packet::ToProducer { .. } => self.fanout_faults,
        }
    }

    /// Puts a packet on the wire: maybe dropped, maybe twice, each copy
    /// after its own delay (so packets overtake each other).
    fn send(&mut self, packet: Packet) {
        let faults = self.faults_for(&packet);
        if self.rng.chance(faults.drop) {
            self.stats.packets_dropped += 1;
            log!(self, "NET dropped the packet above");
            self.lost(&packet);
            return;
        }
        let copies = if self.rng.chance(faults.duplicate) {
            self.stats.packets_duplicated += 1;
            log!(self, "NET duplicated the packet above");
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.rng.chance(faults.long_delay) {
                self.rng.range(0, faults.long_delay_ms_max)
            } else {
                self.rng.range(0, faults.delay_ms_max)
            };
            self.packet_seq += 1;
            self.network.insert((self.now + delay, self.packet_seq), packet.clone());
        }
    }

    /// A reply that never reaches its producer excuses its absence.
    fn lost(&mut self, packet: &Packet) {
        if let Packet::ToProducer { producer, msg: FanoutMsg::Confirm(c) } = packet {
            self.reply_lost(*producer, &c.order);
        }
        if let Packet::ToProducer { producer, msg: FanoutMsg::Reject(r) } = packet {
            self.reply_lost(*producer, &r.order);
        }
        if let Packet::ToProducer { producer, msg: FanoutMsg::Confirms(c) } = packet {
            for order in &c.orders {
                self.reply_lost(*producer, order);
            }
        }
    }

    fn reply_lost(&mut self, producer: usize, order: &str) {
        let key = OrderKey::new(self.producers[producer].id.clone(), order);
        if let Some(i) = self.model.find(&key) {
            self.model.orders[i].reply_lost = true;
        }
    }

    fn send_control(&mut self, from: usize, msgs: Vec<ControlMsg>) {
        for msg in msgs {
            log!(self, "{} -> broker: {}", self.workers[from].id, short_control(&msg));
            self.send(Packet::Control { from, body: msg.encode() });
        }
    }

    fn deliver(&mut self, packet: Packet) -> Check {
        match packet {
            Packet::Control { from, body } => {
                let msg = ControlMsg::decode(&body).map_err(|e| format!("control from w{from} undecodable: {e}"))?;
                let now = self.now;
                if self.core.is_some() {
                    log!(self, "broker <- {}: {}", msg.worker(), short_control(&msg));
                    self.core.as_mut().expect("up").handle_control(msg, now);
                } else {
                    log!(self, "lost (broker down): {}", short_control(&msg));
                }
            }
            Packet::ToWorker { worker, generation, msg } => {
                let w = &mut self.workers[worker];
                if w.generation != generation || matches!(w.life, Life::Dead { .. }) {
                    log!(self, "lost (process gone): w{worker} <- {}", short_fanout(&msg));
                    return Ok(());
                }
                if matches!(w.life, Life::Frozen { .. }) {
                    w.backlog.push(msg);
                    return Ok(());
                }
                self.worker_receives(worker, msg);
            }
            Packet::ToProducer { producer, msg } => self.producer_receives(producer, msg)?,
        }
        Ok(())
    }

    // ------------------------------------------------------------ peers

    fn worker_receives(&mut self, worker: usize, msg: FanoutMsg) {
        log!(self, "{} <- broker: {}", self.workers[worker].id, short_fanout(&msg));
        let (now, processing_ms_max) = (self.now, self.params.processing_ms_max);
        self.workers[worker].on_fanout(msg, now, &mut self.rng, processing_ms_max);
        let out = self.workers[worker].take_control();
        self.send_control(worker, out);
    }

    fn worker_acts(&mut self, i: usize) -> Check {
        let now = self.now;
        match self.workers[i].life {
            Life::Dead { restart_at } => {
                debug_assert!(restart_at.is_some_and(|at| at <= now));
                self.workers[i].start(&mut self.rng, now);
                let w = &self.workers[i];
                let (incarnation, capacity) = (w.incarnation(), w.capacity());
                log!(self, "w{i}: process starts, incarnation {incarnation:#x}, capacity {capacity}");
                let out = self.workers[i].take_control();
                self.send_control(i, out);
                return Ok(());
            }
            Life::Frozen { .. } => {
                self.workers[i].life = Life::Alive;
                let backlog = std::mem::take(&mut self.workers[i].backlog);
                let n = backlog.len();
                log!(self, "w{i}: thaws, {n} fanout messages waiting");
                for msg in backlog {
                    self.worker_receives(i, msg);
                }
            }
            Life::Alive => {}
        }
        for (key, attempt) in self.workers[i].on_timer(now) {
            let outcome = self.outcome(&key);
            if outcome == RunEnd::Refuse {
                if let Some(o) = self.model.find(&key) {
                    self.model.orders[o].refusal_sent = true;
                }
            }
            self.workers[i].finish(key, attempt, outcome, now);
        }
        let drained = self.workers[i].is_drained();
        let mut out = self.workers[i].take_control();
        if drained {
            out.push(self.workers[i].bye());
        }
        self.send_control(i, out);
        if drained {
            let restart_at = now + self.rng.range(200, 3_000);
            self.workers[i].kill(Some(restart_at));
            log!(self, "w{i}: drained, said bye, exits");
        }
        Ok(())
    }

    /// How a worker's run of `key` ends, as the application decides (a
    /// broken worker overrides it: see `SimWorker::finish`).
    fn outcome(&mut self, key: &OrderKey) -> RunEnd {
        let kind = self.model.find(key).map(|i| self.model.orders[i].kind);
        let retry = match kind {
            Some(Kind::Refuse) => return RunEnd::Refuse,
            Some(Kind::Poison) => true,
            _ => self.rng.chance(self.params.nack),
        };
        if !retry {
            return RunEnd::Ack;
        }
        let delay_ms = self.rng.chance(self.params.nack_delay).then(|| self.rng.range(0, 5_000));
        RunEnd::Retry { delay_ms }
    }

    /// The producer's timers, and the application's next order if due.
    fn producer_acts(&mut self, i: usize) -> Check {
        let now = self.now;
        self.producers[i].core.handle_timeout(now);
        if let Some(o) = self.producers[i].due_order(now) {
            if self.submit(i, o)? {
                // Spread the orders over most of the fault phase.
                let per_producer = (self.params.orders / self.params.producers).max(1) as u64;
                let gap = self.rng.range(0, self.params.fault_phase_ms * 7 / 10 / per_producer);
                self.producers[i].submitted(now, gap);
            } else {
                self.producers[i].next_at = now + 100;
            }
        }
        self.producer_transmit(i)
    }

    /// Hands order `o` to producer `i`'s core: whole, streamed, or streamed
    /// and abandoned. False if it must wait: an abandoned order is begun
    /// only when its Begin can go out at once, so the broker learns of it.
    fn submit(&mut self, i: usize, o: usize) -> Result<bool, String> {
        let (now, up) = (self.now, self.core.is_some());
        let room = self.intake_len[i] < self.params.intake_hwm;
        let order = &self.model.orders[o];
        let (id, kind) = (order.key.id.clone(), order.kind);
        let items: Vec<Vec<u8>> = (0..order.count).map(|s| item_data(&order.key, s).into_vec()).collect();
        let how = match kind {
            Kind::Abandoned => Submit::Abandon,
            _ if self.rng.chance(self.params.stream) => Submit::Stream,
            _ => Submit::Whole,
        };
        let core = &mut self.producers[i].core;
        if how == Submit::Abandon && !(up && room && core.welcomed() && !core.is_blocked()) {
            return Ok(false);
        }
        log!(self, "p{i} submits {id} ({kind:?}, {} items, {how:?})", items.len());
        if how == Submit::Whole {
            self.producers[i].core.submit(id, items, now);
            return Ok(true);
        }
        self.producers[i].core.begin_stream(id.clone(), now);
        self.producer_transmit(i)?;
        for item in items {
            self.producers[i].core.push_item(&id, item, now);
            self.producer_transmit(i)?;
        }
        let core = &mut self.producers[i].core;
        if how == Submit::Abandon {
            core.abandon_stream(&id);
        } else {
            core.finish_stream(&id, now);
        }
        Ok(true)
    }

    /// Sends what producer `i`'s core offers onto its intake connection;
    /// while the broker is down the socket refuses (`ZMQ_IMMEDIATE`).
    fn producer_transmit(&mut self, i: usize) -> Check {
        loop {
            let up = self.core.is_some();
            let p = &mut self.producers[i];
            let Some(body) = p.core.poll_transmit() else { break };
            let msg = IntakeMsg::decode(body).map_err(|e| format!("p{i} sent an undecodable message: {e}"))?;
            // The high-water mark is checked only where a transmission
            // starts: a resend cut short after its Begin could outlive the
            // dedup window as a partial order that expires, which the model
            // (rightly) counts as a lost order.
            let starts = matches!(&msg, IntakeMsg::Hello(_) | IntakeMsg::Begin(_) | IntakeMsg::Orders(_))
                || matches!(&msg, IntakeMsg::Items(items) if items.begin);
            let full = starts && self.intake_len[i] >= self.params.intake_hwm;
            if !up || full {
                p.core.handle_send_refused();
                log!(self, "p{i}: send refused ({})", if up { "high-water mark" } else { "broker down" });
                break;
            }
            p.core.handle_sent();
            for msg in self.gap_fault(i, msg) {
                log!(self, "p{i} sends {}", short_intake(&msg));
                // One connection, in order: never before the previous message.
                let at = (self.now + self.rng.range(0, self.params.intake_delay_ms_max)).max(self.intake_last_ms[i]);
                self.intake_last_ms[i] = at;
                self.packet_seq += 1;
                self.intake.insert((at, self.packet_seq), (i, msg));
                self.intake_len[i] += 1;
            }
        }
        while let Some(transmitted) = self.producers[i].core.poll_transmitted() {
            self.producers[i].resends += u32::from(transmitted.attempt > 1);
        }
        Ok(())
    }

    /// The network loses the skipped item of a gap order, every time it is
    /// sent: out of a packed frame, the frame is cut around it.
    fn gap_fault(&mut self, i: usize, msg: IntakeMsg) -> Vec<IntakeMsg> {
        if let IntakeMsg::Orders(batch) = msg {
            return self.gap_fault_batch(i, batch);
        }
        let order = match &msg {
            IntakeMsg::Item(item) => &item.order,
            IntakeMsg::Items(items) => &items.order,
            _ => return vec![msg],
        };
        let key = OrderKey::new(self.producers[i].id.clone(), order.as_str());
        let Some(skip) = self.model.find(&key).and_then(|o| self.model.orders[o].skip) else { return vec![msg] };
        match msg {
            IntakeMsg::Item(item) if item.seq == skip => {
                log!(self, "NET p{i} loses item {skip} of gap order {order}", order = item.order);
                Vec::new()
            }
            IntakeMsg::Items(items) if (items.first..items.first + items.data.len() as u32).contains(&skip) => {
                log!(self, "NET p{i} loses item {skip} of gap order {}, out of a packed frame", items.order);
                cut_frame(items, skip)
            }
            msg => vec![msg],
        }
    }

    /// A batch holding gap orders: each loses its skipped item, so it
    /// leaves the batch as the packed frames `cut_frame` leaves of it (in
    /// the batch's place: sent after the rest of the batch).
    fn gap_fault_batch(&mut self, i: usize, batch: Orders) -> Vec<IntakeMsg> {
        let Orders { producer, orders } = batch;
        let mut kept = Vec::with_capacity(orders.len());
        let mut cut = Vec::new();
        for whole in orders {
            let key = OrderKey::new(producer.clone(), whole.order.as_str());
            let skip = self.model.find(&key).and_then(|o| self.model.orders[o].skip);
            match skip.filter(|&s| (s as usize) < whole.data.len()) {
                Some(skip) => {
                    log!(self, "NET p{i} loses item {skip} of gap order {}, out of a batch", whole.order);
                    let count = whole.data.len() as u32;
                    let (order, data) = (whole.order, whole.data);
                    let items =
                        Items { producer: producer.clone(), order, begin: true, first: 0, data, finish: Some(count) };
                    cut.extend(cut_frame(items, skip));
                }
                None => kept.push(whole),
            }
        }
        let mut msgs = Vec::new();
        if !kept.is_empty() {
            msgs.push(IntakeMsg::Orders(Orders { producer, orders: kept }));
        }
        msgs.extend(cut);
        msgs
    }

    fn producer_receives(&mut self, producer: usize, msg: FanoutMsg) -> Check {
        log!(self, "p{producer} <- broker: {}", short_fanout(&msg));
        let answers: Vec<(String, Option<RejectReason>)> = match &msg {
            FanoutMsg::Confirm(c) => vec![(c.order.clone(), None)],
            FanoutMsg::Confirms(c) => c.orders.iter().map(|order| (order.clone(), None)).collect(),
            FanoutMsg::Reject(r) => vec![(r.order.clone(), Some(r.reason.clone()))],
            _ => Vec::new(),
        };
        for (order, reject) in answers {
            self.check_answer(producer, order, reject)?;
        }
        let now = self.now;
        self.producers[producer].core.handle_fanout(msg, now);
        while let Some(answered) = self.producers[producer].core.poll_answer() {
            log!(self, "p{producer}: {} answered after {} transmissions", answered.id, answered.attempts);
        }
        Ok(())
    }

    /// Invariants 3 and 5 on every answer the network delivers (repeats
    /// included, before the producer's core filters them).
    fn check_answer(&mut self, producer: usize, order: String, reject: Option<RejectReason>) -> Check {
        let key = OrderKey::new(self.producers[producer].id.clone(), order);
        let i = self.model.find(&key).ok_or_else(|| format!("reply for unknown order {key}"))?;
        let o = &self.model.orders[i];
        if let Some(reason) = &reject {
            // The dedup window's documented limit: a resend whose Finish
            // arrives after the key of the acknowledged order was forgotten
            // (its messages straddled a whole window) is not recognised.
            let window_passed = o.acked && o.forgotten && *reason == RejectReason::UnknownOrder;
            if !window_passed && ((o.sealed && !o.stream_cut) || !self.model.rightly_refused(i, reason)) {
                return Err(format!("invariant 3: {key} ({:?}, sealed {}) rejected: {reason:?}", o.kind, o.sealed));
            }
        }
        let o = &mut self.model.orders[i];
        if reject.is_none() {
            // Invariant 5: a confirmed order was sealed (and the Sealed
            // event recorded before the Confirm went out).
            if !o.sealed_once {
                return Err(format!("{key} ({:?}) confirmed but never sealed", o.kind));
            }
            o.confirmed = true;
        } else {
            o.rejected = true;
        }
        Ok(())
    }

    // ------------------------------------------------------------ faults

    fn chaos(&mut self) -> Check {
        let (lo, hi) = self.params.chaos_gap_ms;
        self.chaos_at = self.now + self.rng.range(lo, hi);
        let chaos = CHAOS[self.rng.weighted(&self.params.chaos_weights)];
        let now = self.now;
        match chaos {
            Chaos::CrashBroker => {
                if self.core.is_some() {
                    let downtime = if self.rng.chance(0.3) { 0 } else { self.rng.range(100, 5_000) };
                    let crash = if self.rng.chance(self.params.disk.bit_flip) {
                        broker::Crash::BitFlip
                    } else if self.rng.chance(self.params.disk.power_cut) {
                        broker::Crash::PowerCut
                    } else {
                        broker::Crash::Process
                    };
                    if crash == broker::Crash::PowerCut && self.rng.chance(0.5) {
                        // The power fails in the next window between a
                        // write and its fsync.
                        self.power_cut_armed = Some(downtime);
                        log!(self, "CHAOS the power will fail before the next fsync");
                    } else {
                        self.crash_broker(downtime, crash);
                    }
                }
            }
            Chaos::Compact => {
                if let Some(recorder) = self.recorder.as_mut() {
                    // The next commit starts a segment: the old ones become
                    // candidates for the compaction after every turn.
                    recorder.log.journal.roll();
                    self.stats.compactions += 1;
                    log!(self, "CHAOS the journal rolls to a new segment");
                }
            }
            Chaos::DiskFull => self.fill_disk(),
            Chaos::SyncFailure => {
                self.disk.fail_next_syncs(1);
                self.stats.fsync_failures_injected += 1;
                log!(self, "CHAOS the next fsync fails (EIO)");
            }
            Chaos::Revive => self.revive()?,
            Chaos::KillWorker | Chaos::FreezeWorker | Chaos::StickWorker | Chaos::DrainWorker | Chaos::BreakWorker => {
                let alive: Vec<usize> =
                    (0..self.workers.len()).filter(|&i| self.workers[i].life == Life::Alive).collect();
                if alive.is_empty() {
                    return Ok(());
                }
                let i = alive[self.rng.below(alive.len() as u64) as usize];
                match chaos {
                    Chaos::KillWorker => {
                        let restart_at = self.rng.chance(0.7).then(|| now + self.rng.range(200, 10_000));
                        self.workers[i].kill(restart_at);
                        self.stats.worker_kills += 1;
                        log!(self, "CHAOS w{i} killed, restarts at {restart_at:?}");
                    }
                    Chaos::FreezeWorker => {
                        let until = now + self.rng.range(500, 8_000);
                        self.workers[i].life = Life::Frozen { until };
                        self.stats.worker_freezes += 1;
                        log!(self, "CHAOS w{i} frozen (no heartbeats) until {until}");
                    }
                    Chaos::StickWorker => {
                        let until = now + self.rng.range(500, 15_000);
                        self.workers[i].stuck_until = Some(until);
                        self.stats.worker_sticks += 1;
                        log!(self, "CHAOS w{i} stuck (still heartbeating) until {until}");
                    }
                    Chaos::BreakWorker => {
                        let until = now + self.rng.range(500, 10_000);
                        self.workers[i].broken_until = Some(until);
                        self.stats.worker_breaks += 1;
                        log!(self, "CHAOS w{i}'s handler cannot run until {until}");
                    }
                    _ => {
                        // The core says so in its next heartbeat, as the
                        // worker's io loop does on a shutdown signal.
                        if self.workers[i].start_drain() {
                            self.stats.worker_drains += 1;
                            log!(self, "CHAOS w{i} starts draining");
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// An operator revives one order (dead or not: only dead ones revive)
    /// or every dead letter, as `POST /dlq/retry` does.
    fn revive(&mut self) -> Check {
        let Some(core) = self.core.as_mut() else { return Ok(()) };
        let dead = self.model.dead_keys();
        let now = self.now;
        let (which, expected) = match self.rng.below(3) {
            0 => (None, dead.len()),
            1 if !dead.is_empty() => (Some(dead[self.rng.below(dead.len() as u64) as usize].clone()), 1),
            _ => {
                let o = &self.model.orders[self.rng.below(self.model.orders.len() as u64) as usize];
                (Some(o.key.clone()), usize::from(o.dead))
            }
        };
        let revived = core.retry_dead(which.as_ref(), now);
        log!(self, "CHAOS operator revives {which:?}: {revived} revived");
        if revived != expected {
            return Err(format!("retry_dead({which:?}) revived {revived}, {expected} were dead"));
        }
        Ok(())
    }

    /// The fault phase ends: calm network, every worker back soon.
    fn end_faults(&mut self) {
        self.phase = Phase::Settle { deadline: self.now + SETTLE_MS_MAX };
        self.disk.set_capacity(None);
        self.disk_full_until = None;
        self.power_cut_armed = None;
        self.control_faults = CALM;
        self.fanout_faults = CALM;
        let now = self.now;
        for w in &mut self.workers {
            let soon = now + self.rng.range(0, 1_000);
            match &mut w.life {
                Life::Dead { restart_at } => *restart_at = Some(restart_at.unwrap_or(soon).min(soon)),
                Life::Frozen { until } => *until = (*until).min(soon),
                Life::Alive => {}
            }
            if let Some(until) = &mut w.stuck_until {
                *until = (*until).min(soon);
            }
            if let Some(until) = &mut w.broken_until {
                *until = (*until).min(soon);
            }
        }
        log!(self, "faults end: calm network, dead workers restart, frozen and stuck ones recover");
    }

    // ------------------------------------------------------------ the end

    fn settled(&self) -> bool {
        let Some(core) = &self.core else { return false };
        if !(self.intake.is_empty() && self.producers.iter().all(SimProducer::done)) {
            return false;
        }
        if self.network.values().any(|p| matches!(p, Packet::ToProducer { .. })) {
            return false;
        }
        if !self.workers.iter().all(|w| w.life == Life::Alive && w.jobs.is_empty()) {
            return false;
        }
        if self.held || self.unsynced_since.is_some() {
            return false;
        }
        let status = core.status();
        status.partial_orders == self.model.stale_partials()
            && status.pending_orders == 0
            && status.in_flight_orders == 0
    }

    fn finish(&mut self) -> Check {
        self.core.as_ref().expect("settled");
        for i in 0..self.model.orders.len() {
            let snapshot = self.snapshot_filled(&self.model.orders[i].key.clone())?;
            self.model.check_order(i, snapshot)?;
        }
        self.model.check_final()?;
        for o in &self.model.orders {
            self.stats.max_dispatches = self.stats.max_dispatches.max(o.dispatches);
            match (o.kind, o.acked, o.dead) {
                (_, true, _) => self.stats.acked += 1,
                (Kind::Normal, _, true) => self.stats.dead_normal += 1,
                (_, _, true) => self.stats.dead_other += 1,
                _ => self.stats.rejected += 1,
            }
        }
        self.stats.dispatches_refused_by_workers = self.workers.iter().map(SimWorker::refused_dispatches).sum();
        self.stats.resends = self.producers.iter().map(|p| p.resends).sum();
        self.stats.second_lives = self.model.orders.iter().map(|o| o.lives.saturating_sub(1)).sum();
        let acked = self.stats.acked;
        log!(self, "settled: {acked} orders acked");
        Ok(())
    }

    fn not_settled(&self) -> String {
        let mut report = format!("invariant 5 (liveness): not settled {} ms after the faults ended; ", SETTLE_MS_MAX);
        if let Some(core) = &self.core {
            report += &format!("status {:?}; ", core.status());
        }
        let unsettled: Vec<String> = self
            .model
            .orders
            .iter()
            .filter(|o| o.partial || (o.sealed && !o.acked && !o.dead))
            .map(|o| format!("{} ({:?}, {} dispatches, on {:?})", o.key, o.kind, o.dispatches, o.in_flight_on))
            .collect();
        report += &format!("unsettled orders: {unsettled:?}; workers: ");
        for w in &self.workers {
            report += &format!("[{} {:?} jobs {:?}] ", w.id, w.life, w.jobs.keys().collect::<Vec<_>>());
        }
        report
    }
}

/// Items `first..` of one packed frame without item `skip`: the part
/// before it (which keeps the Begin) and the part after it (which keeps the
/// Finish); one empty frame if nothing else is left.
fn cut_frame(items: Items, skip: u32) -> Vec<IntakeMsg> {
    let at = (skip - items.first) as usize;
    let (before, after) = (&items.data[..at], &items.data[at + 1..]);
    let frame = |begin: bool, first: u32, data: &[ByteBuf], finish: Option<u32>| {
        let (producer, order) = (items.producer.clone(), items.order.clone());
        IntakeMsg::Items(Items { producer, order, begin, first, data: data.to_vec(), finish })
    };
    let mut frames = Vec::new();
    if !before.is_empty() {
        frames.push(frame(items.begin, items.first, before, None));
    }
    if !after.is_empty() || items.finish.is_some() || frames.is_empty() {
        let begin = items.begin && frames.is_empty();
        frames.push(frame(begin, skip + 1, after, items.finish));
    }
    frames
}

// ---------------------------------------------------------------- trace text

fn short_event(event: &Event) -> String {
    match event {
        Event::ItemStored { key, seq, .. } => format!("ItemStored {key} #{seq}"),
        Event::Restored { key, .. } => format!("Restored {key}"),
        Event::Accepted { key, items, .. } => format!("Accepted {key} ({} items)", items.len()),
        Event::AcceptedBatch { orders, .. } => {
            let keys: Vec<String> = orders.iter().map(|o| o.key.to_string()).collect();
            format!("AcceptedBatch of {} orders ({})", orders.len(), keys.join(", "))
        }
        other => format!("{other:?}"),
    }
}

fn short_intake(msg: &IntakeMsg) -> String {
    match msg {
        IntakeMsg::Hello(h) => format!("hello {}", h.producer),
        IntakeMsg::Begin(b) => format!("begin {}/{}", b.producer, b.order),
        IntakeMsg::Item(i) => format!("item {}/{} #{}", i.producer, i.order, i.seq),
        IntakeMsg::Items(i) => format!(
            "items {}/{} begin {} #{}..{} finish {:?}",
            i.producer,
            i.order,
            i.begin,
            i.first,
            i.first as usize + i.data.len(),
            i.finish
        ),
        IntakeMsg::Orders(b) => {
            let ids: Vec<String> = b.orders.iter().map(|o| format!("{} ({} items)", o.order, o.data.len())).collect();
            format!("orders {}: {}", b.producer, ids.join(", "))
        }
        IntakeMsg::Finish(f) => format!("finish {}/{} count {}", f.producer, f.order, f.count),
    }
}

fn short_control(msg: &ControlMsg) -> String {
    match msg {
        ControlMsg::Heartbeat(h) => format!(
            "heartbeat inc {:#x} cap {} in_flight {:?} welcome {:?}{}",
            h.incarnation,
            h.capacity,
            h.in_flight.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            h.welcome,
            if h.draining { " draining" } else { "" }
        ),
        ControlMsg::Ack(a) => format!("ack {} attempt {} (inc {:#x})", a.order, a.attempt, a.incarnation),
        ControlMsg::Acks(a) => format!(
            "acks {:?} (inc {:#x})",
            a.acks.iter().map(|a| format!("{} attempt {}", a.order, a.attempt)).collect::<Vec<_>>(),
            a.incarnation
        ),
        ControlMsg::Nack(n) => {
            format!(
                "nack {} attempt {} retry {} delay {:?} returned {} (inc {:#x})",
                n.order, n.attempt, n.retry, n.delay_ms, n.returned, n.incarnation
            )
        }
        ControlMsg::Bye(b) => format!("bye (inc {:#x})", b.incarnation),
    }
}

fn short_fanout(msg: &FanoutMsg) -> String {
    match msg {
        FanoutMsg::Welcome(w) => format!("welcome {:#x}", w.nonce),
        FanoutMsg::Dispatch(d) => format!("dispatch {} attempt {}", d.order, d.attempt),
        FanoutMsg::Dispatches(b) => {
            let entries: Vec<_> = b.dispatches.iter().map(|d| format!("{} attempt {}", d.order, d.attempt)).collect();
            format!("dispatches [{}]", entries.join(", "))
        }
        FanoutMsg::Confirm(c) => format!("confirm {}", c.order),
        FanoutMsg::Confirms(c) => format!("confirms {:?}", c.orders),
        FanoutMsg::Reject(r) => format!("reject {}: {:?}", r.order, r.reason),
        FanoutMsg::Heartbeat(h) => format!("heartbeat inc {:#x}", h.incarnation),
        FanoutMsg::Backpressure(b) => format!("backpressure {}", b.reason),
    }
}
