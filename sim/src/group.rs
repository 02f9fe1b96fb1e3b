//! The broker group in the simulation: three members, each the real broker
//! core, the real recorder and event journal (`broker::SimLog`), the real
//! Raft node on its real raft journal, driven by the real sans-IO turn
//! ([`Member`]) exactly as the io loop (`broker/src/io/group.rs`) drives
//! it; each member on its own simulated disk. Around them the simulated
//! producers and workers (`peers`: the real client cores, in group mode)
//! follow the leader the members' heartbeats announce. One seed decides
//! everything; the virtual clock jumps to the next wake-up. The test entry
//! (`tests/group_simulation.rs`) documents the faults and the invariants.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use orderly_broker::core::{Core, CoreConfig, Event, Millis, Outbound, Snapshot};
use orderly_broker::io::{
    decode_applied_marker, decode_event, fence, is_marker, replay_member, BrokerError, Member, Recorder, ReplayedMember,
};
use orderly_common::members::{Member as ClientMember, Members};
use orderly_common::protocol::{BrokerHeartbeat, ControlMsg, FanoutMsg, IntakeMsg};
use orderly_common::OrderKey;
use orderly_journal::{Journal, SimCounters, SimStorage, Storage};
use orderly_producer::core as producer;
use orderly_replication::node::ELECTION_TICKS_MIN;
use orderly_replication::{JournalStorage, Node, NodeConfig};
use protobuf::Message as _;
use serde_bytes::ByteBuf;

use crate::broker::{journal_options, virtual_base, virtual_instant, SimLog, JOURNAL_DIR};
use crate::crash_point::{CrashPoint, CrashPointDisk};
use crate::model::item_data;
use crate::peers::{Life, RunEnd, SimProducer, SimWorker, HEARTBEAT_INTERVAL_MS, HEARTBEAT_LIVENESS};
use crate::rng::Rng;
use crate::{NetFaults, CALM};

thread_local! {
    /// Event-journal segments compaction removed on this thread (a run
    /// stays on its thread, so a run's own count is the difference).
    pub static COMPACTIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Members of the simulated group (ids 1..=3).
pub const GROUP_SIZE: usize = 3;
/// Where a member keeps its raft journal on its disk (beside `JOURNAL_DIR`,
/// as `io::raft_dir` puts it beside `io::journal_dir`).
pub const RAFT_DIR: &str = "/data/raft";
/// Virtual time the calm phase may take to settle everything: elections,
/// catching up, resends and every order's attempts.
const SETTLE_MS_MAX: Millis = 10 * 60 * 1000;
/// Steps in one run: a runaway guard (passing runs take well under 100k).
const STEPS_MAX: u64 = 1_000_000;
/// Steps at one instant before the run counts as a livelock.
const SAME_INSTANT_STEPS_MAX: u64 = 50_000;
/// Trace lines kept for a failure report.
const TRACE_LINES: usize = 60;
/// Steps between `Core::check_invariants` of every member in a debug build
/// (one check costs about as much as tens of steps); every step in release.
const CORE_CHECK_EVERY_DEBUG: u64 = 16;
/// Steps between reading back every member's event journal (invariants
/// 2 and 4 during the run; also at every restart and at the end).
const JOURNAL_CHECK_EVERY: u64 = 1024;
/// Fsyncs ahead a power cut inside a call is armed at most: a few turns of
/// a member (each applied batch fsyncs the raft journal and the event
/// journal).
const CRASH_POINT_SYNCS_MAX: u64 = 12;

/// Faults the chaos schedule picks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chaos {
    /// kill -9 of one member: the page cache survives.
    Crash,
    /// The power of one member fails between two of its turns.
    PowerCut,
    /// The power of one member fails at one of its next fsyncs, after the
    /// write it was to make durable (see `crash_point`).
    PowerCutInCall,
    /// One member is cut off (both ways, or only one way) for a while.
    Partition,
    KillWorker,
}

const CHAOS: [Chaos; 5] = [Chaos::Crash, Chaos::PowerCut, Chaos::PowerCutInCall, Chaos::Partition, Chaos::KillWorker];

/// Which way a partition cuts its member off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    Both,
    /// Nobody hears the member; it hears everyone.
    Outbound,
    /// The member hears nobody; everyone hears it.
    Inbound,
}

#[derive(Debug, Clone, Copy)]
struct Partition {
    member: u64,
    cut: Cut,
    until: Millis,
}

/// Everything a seed decides up front.
#[derive(Debug)]
pub struct GroupParams {
    pub producers: usize,
    pub workers: usize,
    pub orders: usize,
    pub fault_phase_ms: u64,
    /// Between members (raft messages).
    pub peer: NetFaults,
    /// Control and fanout, between clients and members.
    pub client: NetFaults,
    /// Chance an intake message is lost (a connection reset); intake stays
    /// in order per connection.
    pub intake_drop: f64,
    pub intake_delay_ms_max: u64,
    pub chaos_gap_ms: (u64, u64),
    pub chaos_weights: [u64; CHAOS.len()],
    pub processing_ms_max: u64,
    pub nack: f64,
    pub max_attempts: u32,
    pub resend_after_ms: u64,
    pub stream: f64,
    pub segment_bytes: u64,
    /// The journals' `zero_ahead_bytes` (see `DiskFaults`).
    pub zero_ahead_bytes: u64,
}

impl GroupParams {
    fn generate(rng: &mut Rng) -> Self {
        let faults = |rng: &mut Rng| {
            let clean = rng.chance(0.2);
            NetFaults {
                drop: if clean { 0.0 } else { rng.unit() * 0.1 },
                duplicate: if clean { 0.0 } else { rng.unit() * 0.05 },
                delay_ms_max: [1, 20, 100, 300][rng.below(4) as usize],
                long_delay: if rng.chance(0.3) { 0.01 } else { 0.0 },
                long_delay_ms_max: 3_000,
            }
        };
        let peer = faults(rng);
        let client = faults(rng);
        let chaos_mean_ms = [2_000, 5_000, 10_000][rng.below(3) as usize];
        let mut chaos_weights = [0; CHAOS.len()];
        for w in &mut chaos_weights {
            *w = rng.below(4);
        }
        if chaos_weights.iter().all(|&w| w == 0) {
            chaos_weights[0] = 1;
        }
        GroupParams {
            producers: rng.range(1, 2) as usize,
            workers: rng.range(2, 3) as usize,
            orders: rng.range(10, 60) as usize,
            fault_phase_ms: rng.range(20_000, 60_000),
            peer,
            client,
            intake_drop: [0.0, 0.0, 0.002, 0.01][rng.below(4) as usize],
            intake_delay_ms_max: rng.range(0, 50),
            chaos_gap_ms: (chaos_mean_ms / 4, chaos_mean_ms * 2),
            chaos_weights,
            processing_ms_max: [10, 200, 1_500][rng.below(3) as usize],
            nack: [0.0, 0.05, 0.2][rng.below(3) as usize],
            max_attempts: if rng.chance(0.5) { 3 } else { 5 },
            resend_after_ms: rng.range(2_000, 10_000),
            stream: [0.0, 0.3][rng.below(2) as usize],
            segment_bytes: [4 * 1024, 64 * 1024][rng.below(2) as usize],
            // Drawn last, so every earlier parameter of a seed stays as it was.
            zero_ahead_bytes: crate::ZERO_AHEAD_CHOICES[rng.below(crate::ZERO_AHEAD_CHOICES.len() as u64) as usize],
        }
    }
}

/// Counts for the report of one run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GroupStats {
    pub steps: u64,
    pub end_ms: Millis,
    /// Terms that had a leader.
    pub elections: u32,
    /// Terms whose leader differs from the previous led term's.
    pub leader_changes: u32,
    pub crashes: u32,
    pub power_cuts: u32,
    /// Power cuts at an fsync, inside a member's call.
    pub power_cuts_in_call: u32,
    pub partitions: u32,
    pub restarts: u32,
    pub torn_tails_cut: u32,
    pub raft_messages: u64,
    pub packets_dropped: u64,
    pub packets_duplicated: u64,
    pub packets_cut_by_partition: u64,
    pub intake_dropped: u64,
    /// Client messages a member that did not serve read and dropped.
    pub client_input_dropped: u64,
    pub worker_kills: u32,
    pub orders_confirmed: u32,
    pub orders_rejected: u32,
    /// Orders acked (in the final leader's committed history).
    pub orders_acked: u32,
    pub dead_letters: u32,
    pub dispatches_checked: u64,
    pub resends: u32,
    /// The last committed raft index.
    pub committed_index: u64,
    /// Restarts that fenced off an interrupted apply's events
    /// (`io::fence_marker`): a crash between an entry's events and its
    /// marker.
    pub fences: u32,
    /// Event-journal segments removed by compaction.
    pub segments_compacted: u64,
    pub disk: SimCounters,
}

impl GroupStats {
    /// Adds another run's counts (maxima for `end_ms`, `committed_index`).
    pub fn absorb(&mut self, o: &GroupStats) {
        self.steps += o.steps;
        self.end_ms = self.end_ms.max(o.end_ms);
        self.elections += o.elections;
        self.leader_changes += o.leader_changes;
        self.crashes += o.crashes;
        self.power_cuts += o.power_cuts;
        self.power_cuts_in_call += o.power_cuts_in_call;
        self.partitions += o.partitions;
        self.restarts += o.restarts;
        self.torn_tails_cut += o.torn_tails_cut;
        self.raft_messages += o.raft_messages;
        self.packets_dropped += o.packets_dropped;
        self.packets_duplicated += o.packets_duplicated;
        self.packets_cut_by_partition += o.packets_cut_by_partition;
        self.intake_dropped += o.intake_dropped;
        self.client_input_dropped += o.client_input_dropped;
        self.worker_kills += o.worker_kills;
        self.orders_confirmed += o.orders_confirmed;
        self.orders_rejected += o.orders_rejected;
        self.orders_acked += o.orders_acked;
        self.dead_letters += o.dead_letters;
        self.dispatches_checked += o.dispatches_checked;
        self.resends += o.resends;
        self.committed_index = self.committed_index.max(o.committed_index);
        self.fences += o.fences;
        self.segments_compacted += o.segments_compacted;
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
}

/// A running member process.
struct Running {
    core: Core,
    recorder: Recorder<SimLog>,
    member: Member<()>,
    /// The io loop's follower heartbeat timer.
    heartbeat_due: Millis,
    /// Client input the serving member has not read yet: it waits in its
    /// sockets' queues while a compaction barrier holds (in order).
    input: VecDeque<ClientInput>,
}

/// A message from a client, as the intake or control socket queues it.
enum ClientInput {
    Intake(IntakeMsg),
    Control(ControlMsg),
}

/// One member's machine: its disk, and its process while it runs.
struct Slot {
    id: u64,
    disk: SimStorage,
    point: CrashPoint,
    running: Option<Running>,
    restart_at: Millis,
}

#[derive(Debug, Clone)]
enum Packet {
    Raft { from: u64, to: u64, bytes: Vec<u8> },
    Control { worker: usize, to: u64, body: Vec<u8> },
    ToWorker { from: u64, worker: usize, generation: u64, msg: FanoutMsg },
    ToProducer { from: u64, producer: usize, msg: FanoutMsg },
}

impl Packet {
    /// (sender, receiver) as members: 0 for a client.
    fn ends(&self) -> (u64, u64) {
        match self {
            Packet::Raft { from, to, .. } => (*from, *to),
            Packet::Control { to, .. } => (0, *to),
            Packet::ToWorker { from, .. } | Packet::ToProducer { from, .. } => (*from, 0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    // Declared in priority order for actions due at the same instant.
    Member(usize),
    Restart(usize),
    Heal,
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

/// One order as its producer made it.
#[derive(Debug)]
struct Order {
    key: OrderKey,
    count: u32,
    confirmed: bool,
    rejected: bool,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOutcome {
    Running,
    Settled,
}

type Check = Result<(), String>;

/// One run of a group of three brokers.
pub struct GroupSim {
    pub params: GroupParams,
    rng: Rng,
    now: Millis,
    steps: u64,
    same_instant_steps: u64,
    phase: Phase,
    chaos_at: Millis,
    clock_base: Instant,
    slots: Vec<Slot>,
    partition: Option<Partition>,
    producers: Vec<SimProducer>,
    workers: Vec<SimWorker>,
    orders: Vec<Order>,
    by_key: BTreeMap<OrderKey, usize>,
    network: BTreeMap<(Millis, u64), Packet>,
    /// In transit, by (arrival, sequence): intake, in order per
    /// (producer, member) connection.
    intake: BTreeMap<(Millis, u64), (usize, u64, IntakeMsg)>,
    intake_last_ms: BTreeMap<(usize, u64), Millis>,
    packet_seq: u64,
    peer_faults: NetFaults,
    client_faults: NetFaults,
    /// Invariant 3: the leader of every term any member saw.
    leaders: BTreeMap<u64, u64>,
    /// Invariant 4: the events (record bodies) of every applied raft index,
    /// as the first member journal read back holds them.
    committed: BTreeMap<u64, Vec<Vec<u8>>>,
    pub outcome: GroupOutcome,
    trace: VecDeque<String>,
    /// FNV-1a over every trace line: two runs of a seed must agree.
    trace_hash: u64,
    pub verbose: bool,
    pub stats: GroupStats,
    compactions_seen: u64,
}

/// Formats first (the arguments may borrow the simulation), then logs.
macro_rules! glog {
    ($sim:expr, $($fmt:tt)+) => {{
        let line = format!($($fmt)+);
        $sim.log(line);
    }};
}

impl GroupSim {
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x9E37_79B9_7F4A_7C15);
        let params = GroupParams::generate(&mut rng);
        let members = client_members();
        let mut producers: Vec<SimProducer> = (0..params.producers)
            .map(|p| {
                let (nonce, pack_items, start_at) = (rng.next_u64(), rng.chance(0.5), rng.range(0, 2_000));
                let mut sim = SimProducer::new(format!("p{p}"), nonce, pack_items, start_at, params.resend_after_ms);
                sim.core = producer::Core::in_group(sim.core.config().clone(), &members);
                sim
            })
            .collect();
        let mut orders = Vec::new();
        let mut by_key = BTreeMap::new();
        for n in 0..params.orders {
            let producer = rng.below(params.producers as u64) as usize;
            let key = OrderKey::new(producers[producer].id.clone(), format!("o{n}"));
            by_key.insert(key.clone(), orders.len());
            producers[producer].orders.push(orders.len());
            orders.push(Order { key, count: rng.range(0, 5) as u32, confirmed: false, rejected: false });
        }
        let workers = (0..params.workers)
            .map(|w| {
                let mut worker = SimWorker::new(format!("w{w}"), rng.range(0, 1_500));
                worker.members = Some(members.clone());
                worker
            })
            .collect();
        let slots = (1..=GROUP_SIZE as u64)
            .map(|id| Slot {
                id,
                disk: SimStorage::new(rng.next_u64()),
                point: CrashPoint::default(),
                running: None,
                restart_at: 0,
            })
            .collect();
        let chaos_at = rng.range(params.chaos_gap_ms.0, params.chaos_gap_ms.1);
        GroupSim {
            rng,
            now: 0,
            steps: 0,
            same_instant_steps: 0,
            phase: Phase::Faults,
            chaos_at,
            clock_base: virtual_base(),
            slots,
            partition: None,
            producers,
            workers,
            orders,
            by_key,
            network: BTreeMap::new(),
            intake: BTreeMap::new(),
            intake_last_ms: BTreeMap::new(),
            packet_seq: 0,
            peer_faults: params.peer,
            client_faults: params.client,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            outcome: GroupOutcome::Running,
            compactions_seen: COMPACTIONS.with(std::cell::Cell::get),
            trace: VecDeque::new(),
            trace_hash: 0xcbf2_9ce4_8422_2325,
            verbose: false,
            stats: GroupStats::default(),
            params,
        }
    }

    /// The last trace lines, oldest first.
    pub fn trace(&self) -> impl Iterator<Item = &String> {
        self.trace.iter()
    }

    pub fn step_count(&self) -> u64 {
        self.steps
    }

    /// A digest of the whole run (every trace line and the counts): the
    /// same seed must give the same one.
    pub fn fingerprint(&self) -> u64 {
        let mut hash = self.trace_hash;
        for byte in format!("{:?}", self.stats).bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
        hash
    }

    fn log(&mut self, line: String) {
        let line = format!("{:>7}ms #{:<6} {line}", self.now, self.steps);
        for byte in line.bytes() {
            self.trace_hash = (self.trace_hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
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
        self.stats.steps = self.steps;
        self.stats.end_ms = self.now;
        let mut disk = SimCounters::default();
        for slot in &self.slots {
            let c = slot.disk.counters();
            disk.power_cuts += c.power_cuts;
            disk.writes_lost += c.writes_lost;
            disk.writes_torn += c.writes_torn;
            disk.sectors_lost += c.sectors_lost;
            disk.dir_ops_lost += c.dir_ops_lost;
            disk.bit_flips += c.bit_flips;
            disk.no_space += c.no_space;
            disk.sync_failures += c.sync_failures;
        }
        self.stats.disk = disk;
        Ok(())
    }

    // ------------------------------------------------------------ scheduling

    fn next_action(&self) -> (Millis, Action) {
        let mut candidates: Vec<(Millis, Action)> = Vec::with_capacity(16);
        for (m, slot) in self.slots.iter().enumerate() {
            match &slot.running {
                Some(run) => {
                    let mut due = run.member.next_tick_ms();
                    // As `Loop::group_wait`: no timeouts while a compaction
                    // barrier holds (its turns would not run them).
                    if !run.member.serves() {
                        due = due.min(run.heartbeat_due);
                    } else if !run.member.holds_barrier() {
                        due = due.min(run.core.poll_timeout());
                    }
                    candidates.push((due, Action::Member(m)));
                }
                None => candidates.push((slot.restart_at, Action::Restart(m))),
            }
        }
        candidates.extend(self.partition.map(|p| (p.until, Action::Heal)));
        candidates.extend(self.network.keys().next().map(|&(at, _)| (at, Action::Network)));
        candidates.extend(self.intake.keys().next().map(|&(at, _)| (at, Action::Intake)));
        for (i, w) in self.workers.iter().enumerate() {
            candidates.extend(w.next_time().map(|at| (at, Action::Worker(i))));
        }
        for (i, p) in self.producers.iter().enumerate() {
            candidates.extend(p.next_time().map(|at| (at, Action::Producer(i))));
        }
        if self.phase == Phase::Faults {
            candidates.push((self.chaos_at, Action::Chaos));
            candidates.push((self.params.fault_phase_ms, Action::EndFaults));
        }
        candidates.into_iter().min().expect("every member has a tick or a restart")
    }

    /// One action, then the per-step invariants. `Ok(true)` once settled.
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
        match action {
            Action::Member(m) => self.turn(m)?,
            Action::Restart(m) => {
                self.start_member(m)?;
                if self.outcome != GroupOutcome::Running {
                    return Ok(true);
                }
            }
            Action::Heal => {
                let p = self.partition.take().expect("scheduled");
                glog!(self, "CHAOS partition of member {} ({:?}) heals", p.member, p.cut);
            }
            Action::Network => {
                let (_, packet) = self.network.pop_first().expect("scheduled");
                self.deliver(packet)?;
            }
            Action::Intake => {
                let (_, (_, to, msg)) = self.intake.pop_first().expect("scheduled");
                self.deliver_intake(to, msg)?;
            }
            Action::Worker(i) => self.worker_acts(i),
            Action::Producer(i) => self.producer_acts(i)?,
            Action::Chaos => self.chaos(),
            Action::EndFaults => self.end_faults(),
        }
        self.check_step()?;
        if matches!(self.phase, Phase::Settle { .. }) && self.settled() {
            self.finish()?;
            self.outcome = GroupOutcome::Settled;
            return Ok(true);
        }
        Ok(false)
    }

    // ------------------------------------------------------------ members

    fn core_config(&self, incarnation: u64) -> CoreConfig {
        let mut config = CoreConfig {
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
            heartbeat_liveness: HEARTBEAT_LIVENESS,
            max_attempts: self.params.max_attempts,
            ..CoreConfig::with_incarnation(incarnation)
        };
        // Every third member process keeps almost no payload in RAM, so
        // dispatches read items back from its journal.
        if incarnation % 3 < 1 {
            config.payload_cache_bytes = incarnation % 64;
        }
        config
    }

    /// Starts member `m` from its own disk, as `io::run` does: the event
    /// journal replayed (`replay_member`: the core, and the index its last
    /// marker names), the raft journal opened, the node told how far the
    /// event journal got. It starts as a follower; its core stays in
    /// recovery until it is elected.
    fn start_member(&mut self, m: usize) -> Check {
        let incarnation = self.rng.next_u64();
        let config = self.core_config(incarnation);
        let slot = &self.slots[m];
        let id = slot.id;
        slot.point.disarm();
        let disk: Arc<dyn Storage> = Arc::new(CrashPointDisk { disk: slot.disk.clone(), point: slot.point.clone() });
        let options = journal_options(self.params.segment_bytes, self.params.zero_ahead_bytes);
        let (journal, recovery) = Journal::open_on(Arc::clone(&disk), Path::new(JOURNAL_DIR), options.clone())
            .map_err(|e| format!("member {id}: the event journal refused to open: {e:#}"))?;
        let ReplayedMember { core, anchors, applied, leftovers } =
            replay_member(&journal, config.clone(), self.now, |_, _, _| {})
                .map_err(|e| format!("member {id}: the event journal does not replay: {e:#}"))?;
        let mut log = SimLog { journal, clock: virtual_instant(self.clock_base, self.now), appended: Vec::new() };
        if leftovers > 0 {
            // As `io::recover_member`: the leftovers of an apply a crash
            // interrupted are fenced off before anything else is written.
            fence(&mut log).map_err(|e| format!("member {id}: fencing off leftovers: {e:#}"))?;
            self.stats.fences += 1;
            glog!(self, "member {id}: fenced off {leftovers} events of an interrupted apply (applied {applied})");
        }
        let ids: Vec<u64> = (1..=GROUP_SIZE as u64).collect();
        let (storage, raft_recovery) = JournalStorage::open(disk, Path::new(RAFT_DIR), options, &ids)
            .map_err(|e| format!("member {id}: the raft journal refused to open: {e:#}"))?;
        let raft_last = storage.last_index();
        let raft_commit = storage.hard_state().commit;
        // What was applied was committed and is in the raft log: the log
        // holds it (its fsynced commit index may lag: a commit-only hard
        // state is not fsynced, and the node raises it to `applied`).
        if applied > raft_last {
            return Err(format!(
                "member {id}: the event journal holds entries up to {applied}, but the raft journal ends at \
                 {raft_last} (commit index {raft_commit})"
            ));
        }
        // As `group::start`: members stand at different times.
        let election_ticks = ELECTION_TICKS_MIN + 2 * id as usize;
        let node = Node::new(NodeConfig { id, election_ticks, applied }, storage)
            .map_err(|e| format!("member {id}: the node refused to start: {e:#}"))?;
        if node.commit_index() < applied {
            return Err(format!(
                "member {id}: the node starts at commit index {}, below the applied {applied}",
                node.commit_index()
            ));
        }
        let torn = usize::from(recovery.truncated.is_some()) + usize::from(raft_recovery.truncated.is_some());
        self.stats.torn_tails_cut += torn as u32;
        let mut recorder = Recorder::new(log, anchors);
        recorder.copy_chunk_bytes = super::broker::COPY_CHUNK_BYTES;
        let member = Member::new(node, applied, config);
        let pending = core.status().pending_orders;
        if self.now > 0 {
            self.stats.restarts += 1;
        }
        self.slots[m].running =
            Some(Running { core, recorder, member, heartbeat_due: self.now, input: VecDeque::new() });
        glog!(
            self,
            "member {id}: starts, incarnation {incarnation:#x}, applied {applied}, raft log to {raft_last} \
             (commit {raft_commit}), {pending} pending, torn tails cut {torn}"
        );
        self.check_journal(m)?;
        self.turn(m)
    }

    /// One turn of member `m` after its input (if any) was taken, as
    /// `Loop::group_turn` does it: tick; when serving, the core's timeouts
    /// and the turn's proposal; then `handle_ready`; then raft messages
    /// out, released messages published, the follower heartbeat.
    fn turn(&mut self, m: usize) -> Check {
        let now = self.now;
        let clock = virtual_instant(self.clock_base, now);
        let Some(run) = self.slots[m].running.as_mut() else { return Ok(()) };
        run.recorder.log.clock = clock;
        run.member.tick(now);
        let result = (|| -> Result<_, BrokerError> {
            let serves = run.member.serves();
            // `Loop::group_turn`: while a compaction barrier holds, client
            // input waits in its queues and the core's timeouts wait.
            let barrier = serves && run.member.compaction_barrier(&run.recorder, false, now);
            if serves && !barrier {
                while let Some(input) = run.input.pop_front() {
                    match input {
                        ClientInput::Intake(msg) => run.core.handle_intake(msg, now),
                        ClientInput::Control(msg) => run.core.handle_control(msg, now),
                    }
                }
                if now >= run.core.poll_timeout() {
                    run.core.handle_timeout(now);
                }
            } else if !serves {
                run.member.count_dropped(run.input.len() as u64);
                run.input.clear();
            }
            if serves {
                run.member.propose_turn(&mut run.core, &mut run.recorder, Vec::new(), now)?;
            }
            let ready = run.member.handle_ready(&mut run.core, &mut run.recorder, now)?;
            // `Loop::after_ready`: both journals compacted (the event
            // journal by a leader only when its core is the committed state).
            let removed = run.member.compact(&mut run.core, &mut run.recorder, false)?;
            COMPACTIONS.with(|count| count.set(count.get() + u64::from(removed)));
            run.recorder
                .log
                .journal
                .sync_lazy_due_at(clock)
                .map_err(|source| BrokerError::Journal { during: "fsync", source })?;
            Ok(ready)
        })();
        let compactions = COMPACTIONS.with(std::cell::Cell::get);
        self.stats.segments_compacted += compactions.wrapping_sub(self.compactions_seen);
        self.compactions_seen = compactions;
        let Some(run) = self.slots[m].running.as_mut() else { return Ok(()) };
        let ready = match result {
            Ok(ready) => ready,
            Err(error) => return self.member_failed(m, &chain(&error)),
        };
        run.recorder.log.appended.clear();
        let mut publish = ready.publish;
        if !run.member.serves() && now >= run.heartbeat_due {
            // `Loop::follower_heartbeat`: the leader it knows, on b/.
            run.heartbeat_due = now + HEARTBEAT_INTERVAL_MS;
            let view = run.core.group_view();
            let body = FanoutMsg::Heartbeat(BrokerHeartbeat {
                incarnation: run.core.config().incarnation,
                interval_ms: HEARTBEAT_INTERVAL_MS,
                member: view.member,
                leader: view.leader,
                term: view.term,
            })
            .encode();
            publish.push(Outbound::new(orderly_common::ids::BROADCAST_TOPIC.to_vec(), body));
        }
        let from = self.slots[m].id;
        self.observe_leadership(m)?;
        for message in ready.messages {
            let to = message.to;
            let bytes = message.write_to_bytes().map_err(|e| format!("encoding a raft message: {e}"))?;
            self.stats.raft_messages += 1;
            self.send(Packet::Raft { from, to, bytes });
        }
        for out in publish {
            self.publish(m, out)?;
        }
        Ok(())
    }

    /// A member's turn failed: the process stops. Only a power cut at an
    /// fsync (the crash point) may do that here: no other disk fault is
    /// injected, so anything else is a finding.
    fn member_failed(&mut self, m: usize, why: &str) -> Check {
        let id = self.slots[m].id;
        if !self.slots[m].point.fired() {
            return Err(format!("member {id} failed: {why}"));
        }
        self.stats.power_cuts_in_call += 1;
        glog!(self, "CHAOS member {id}: the power fails at an fsync ({why})");
        let downtime = self.rng.range(100, 5_000);
        self.take_down(m, downtime, false);
        Ok(())
    }

    /// The process of member `m` stops (its core, node and journal handles
    /// go); `power_cut`: only durable data and a seeded part of the rest
    /// stay on its disk.
    fn take_down(&mut self, m: usize, downtime: u64, power_cut: bool) {
        let slot = &mut self.slots[m];
        if let Some(run) = slot.running.take() {
            self.stats.client_input_dropped += run.member.report(0).dropped_messages;
        }
        if power_cut {
            slot.disk.power_cut();
        }
        slot.point.disarm();
        slot.restart_at = self.now + downtime;
    }

    /// Invariant 3, and the counts of elections: every (term, leader) a
    /// member's view names; a term never has two.
    fn observe_leadership(&mut self, m: usize) -> Check {
        let Some(run) = &self.slots[m].running else { return Ok(()) };
        let view = run.member.view();
        let id = self.slots[m].id;
        if run.member.node().is_leader() && view.leader != Some(id) {
            return Err(format!("member {id} leads term {} but its view names {:?}", view.term, view.leader));
        }
        let Some(leader) = view.leader else { return Ok(()) };
        match self.leaders.get(&view.term) {
            Some(&known) if known != leader => Err(format!(
                "invariant 3: term {} has two leaders: {known} and {leader} (seen by member {id})",
                view.term
            )),
            Some(_) => Ok(()),
            None => {
                let previous = self.leaders.range(..view.term).next_back().map(|(_, &l)| l);
                self.leaders.insert(view.term, leader);
                self.stats.elections += 1;
                // A term newer than some already seen: count only in order.
                let later = self.leaders.range(view.term + 1..).next().is_some();
                if !later && previous.is_some_and(|p| p != leader) {
                    self.stats.leader_changes += 1;
                }
                glog!(self, "member {id} sees member {leader} lead term {}", view.term);
                Ok(())
            }
        }
    }

    /// What member `m` publishes on its fanout: every client subscribes to
    /// every member (the topic picks who gets it).
    fn publish(&mut self, m: usize, out: Outbound) -> Check {
        let from = self.slots[m].id;
        debug_assert!(!out.needs_fill(), "released messages are filled");
        let msg = FanoutMsg::decode(&out.body).map_err(|e| format!("member {from} published garbage: {e}"))?;
        let topic = String::from_utf8_lossy(&out.topic).into_owned();
        if topic == "b/" {
            for producer in 0..self.producers.len() {
                self.send(Packet::ToProducer { from, producer, msg: msg.clone() });
            }
            for worker in 0..self.workers.len() {
                let w = &self.workers[worker];
                if !matches!(w.life, Life::Dead { .. }) {
                    let generation = w.generation;
                    self.send(Packet::ToWorker { from, worker, generation, msg: msg.clone() });
                }
            }
        } else if let Some(id) = topic.strip_prefix("w/").and_then(|t| t.strip_suffix('/')) {
            let worker =
                self.workers.iter().position(|w| w.id == id).ok_or_else(|| format!("unknown topic {topic}"))?;
            if !matches!(self.workers[worker].life, Life::Dead { .. }) {
                let generation = self.workers[worker].generation;
                self.send(Packet::ToWorker { from, worker, generation, msg });
            }
        } else if let Some(id) = topic.strip_prefix("p/").and_then(|t| t.strip_suffix('/')) {
            let producer =
                self.producers.iter().position(|p| p.id == id).ok_or_else(|| format!("unknown topic {topic}"))?;
            glog!(self, "member {from} -> p{producer}: {}", short(&msg));
            self.send(Packet::ToProducer { from, producer, msg });
        } else {
            return Err(format!("member {from} published on unknown topic {topic:?}"));
        }
        Ok(())
    }

    // ------------------------------------------------------------ network

    /// Puts a packet on the wire: maybe dropped, maybe twice, each copy
    /// after its own delay (so packets overtake each other).
    fn send(&mut self, packet: Packet) {
        let faults = match packet {
            Packet::Raft { .. } => self.peer_faults,
            _ => self.client_faults,
        };
        if self.rng.chance(faults.drop) {
            self.stats.packets_dropped += 1;
            return;
        }
        let copies = if self.rng.chance(faults.duplicate) {
            self.stats.packets_duplicated += 1;
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

    /// Whether the partition cuts traffic from `from` to `to` (member ids;
    /// 0 for a client).
    fn cut_off(&self, from: u64, to: u64) -> bool {
        let Some(p) = self.partition else { return false };
        match p.cut {
            Cut::Both => from == p.member || to == p.member,
            Cut::Outbound => from == p.member,
            Cut::Inbound => to == p.member,
        }
    }

    fn slot_of(&self, id: u64) -> usize {
        (id - 1) as usize
    }

    fn deliver(&mut self, packet: Packet) -> Check {
        let (from, to) = packet.ends();
        if self.cut_off(from, to) {
            self.stats.packets_cut_by_partition += 1;
            return Ok(());
        }
        match packet {
            Packet::Raft { from, to, bytes } => {
                let m = self.slot_of(to);
                let Some(run) = self.slots[m].running.as_mut() else { return Ok(()) };
                run.member.step(from, &bytes).map_err(|e| format!("member {to} refused a raft message: {e}"))?;
                self.turn(m)
            }
            Packet::Control { worker, to, body } => {
                let msg = ControlMsg::decode(&body).map_err(|e| format!("control from w{worker} undecodable: {e}"))?;
                self.client_input(to, ClientInput::Control(msg))
            }
            Packet::ToWorker { from, worker, generation, msg } => {
                let w = &self.workers[worker];
                if w.generation != generation || matches!(w.life, Life::Dead { .. }) {
                    return Ok(());
                }
                self.check_dispatch(from, &msg)?;
                let (now, processing_ms_max) = (self.now, self.params.processing_ms_max);
                self.workers[worker].on_fanout(msg, now, &mut self.rng, processing_ms_max);
                self.send_control(worker);
                Ok(())
            }
            Packet::ToProducer { from, producer, msg } => self.producer_receives(from, producer, msg),
        }
    }

    fn deliver_intake(&mut self, to: u64, msg: IntakeMsg) -> Check {
        if self.cut_off(0, to) {
            self.stats.packets_cut_by_partition += 1;
            return Ok(());
        }
        self.client_input(to, ClientInput::Intake(msg))
    }

    /// A client message reaching member `to`: queued for the serving
    /// member's next turn (its socket's queue), dropped and counted by one
    /// that does not serve, as `Loop::drop_client_input` does.
    fn client_input(&mut self, to: u64, input: ClientInput) -> Check {
        let m = self.slot_of(to);
        let Some(run) = self.slots[m].running.as_mut() else { return Ok(()) };
        if run.member.serves() {
            run.input.push_back(input);
        } else {
            run.member.count_dropped(1);
        }
        self.turn(m)
    }

    /// Invariant 1 on the way: a dispatch carries its order's items,
    /// byte-identical, whichever member sent it.
    fn check_dispatch(&mut self, from: u64, msg: &FanoutMsg) -> Check {
        let entries = match msg {
            FanoutMsg::Dispatch(d) => std::slice::from_ref(d),
            FanoutMsg::Dispatches(batch) => batch.dispatches.as_slice(),
            _ => return Ok(()),
        };
        for d in entries {
            let &i =
                self.by_key.get(&d.order).ok_or_else(|| format!("member {from} dispatched unknown {}", d.order))?;
            let o = &self.orders[i];
            let expected: Vec<ByteBuf> = (0..o.count).map(|s| item_data(&o.key, s)).collect();
            if d.items != expected {
                return Err(format!(
                    "member {from} dispatched {} with items {:?}, made {:?}",
                    d.order, d.items, expected
                ));
            }
            self.stats.dispatches_checked += 1;
        }
        Ok(())
    }

    // ------------------------------------------------------------ clients

    fn send_control(&mut self, worker: usize) {
        let msgs = self.workers[worker].take_control();
        let Some(to) = self.workers[worker].leader() else { return };
        for msg in msgs {
            self.send(Packet::Control { worker, to, body: msg.encode() });
        }
    }

    fn worker_acts(&mut self, i: usize) {
        let now = self.now;
        match self.workers[i].life {
            Life::Dead { .. } => {
                self.workers[i].start(&mut self.rng, now);
                glog!(self, "w{i}: process starts");
                self.send_control(i);
                return;
            }
            Life::Frozen { .. } => self.workers[i].life = Life::Alive,
            Life::Alive => {}
        }
        for (key, attempt) in self.workers[i].on_timer(now) {
            let end = if self.rng.chance(self.params.nack) {
                RunEnd::Retry { delay_ms: self.rng.chance(0.3).then(|| self.rng.range(0, 3_000)) }
            } else {
                RunEnd::Ack
            };
            self.workers[i].finish(key, attempt, end, now);
        }
        self.send_control(i);
    }

    fn producer_acts(&mut self, i: usize) -> Check {
        let now = self.now;
        self.producers[i].core.handle_timeout(now);
        if let Some(o) = self.producers[i].due_order(now) {
            let order = &self.orders[o];
            let (id, items) = (order.key.id.clone(), (0..order.count).map(|s| item_data(&order.key, s).into_vec()));
            let items: Vec<Vec<u8>> = items.collect();
            glog!(self, "p{i} submits {id} ({} items)", items.len());
            if self.rng.chance(self.params.stream) {
                self.producers[i].core.begin_stream(id.clone(), now);
                self.producer_transmit(i)?;
                for item in items {
                    self.producers[i].core.push_item(&id, item, now);
                    self.producer_transmit(i)?;
                }
                self.producers[i].core.finish_stream(&id, now);
            } else {
                self.producers[i].core.submit(id, items, now);
            }
            let per_producer = (self.params.orders / self.params.producers).max(1) as u64;
            let gap = self.rng.range(0, self.params.fault_phase_ms * 7 / 10 / per_producer);
            self.producers[i].submitted(now, gap);
        }
        self.producer_transmit(i)
    }

    /// Sends what producer `i`'s core offers to the member it believes
    /// leads; a member that is down refuses the send (`ZMQ_IMMEDIATE`).
    fn producer_transmit(&mut self, i: usize) -> Check {
        loop {
            let up = |sim: &Self, id: u64| sim.slots[sim.slot_of(id)].running.is_some();
            let leader = self.producers[i].core.leader();
            let p = &mut self.producers[i];
            while p.core.poll_leader().is_some() {}
            let Some(body) = p.core.poll_transmit() else { break };
            let msg = IntakeMsg::decode(body).map_err(|e| format!("p{i} sent an undecodable message: {e}"))?;
            let Some(to) = leader else { return Err(format!("p{i} transmits with no leader known")) };
            if !up(self, to) {
                self.producers[i].core.handle_send_refused();
                break;
            }
            self.producers[i].core.handle_sent();
            if self.rng.chance(self.params.intake_drop) {
                self.stats.intake_dropped += 1;
                continue;
            }
            let last = self.intake_last_ms.get(&(i, to)).copied().unwrap_or(0);
            let at = (self.now + self.rng.range(0, self.params.intake_delay_ms_max)).max(last);
            self.intake_last_ms.insert((i, to), at);
            self.packet_seq += 1;
            self.intake.insert((at, self.packet_seq), (i, to, msg));
        }
        while let Some(transmitted) = self.producers[i].core.poll_transmitted() {
            self.producers[i].resends += u32::from(transmitted.attempt > 1);
        }
        Ok(())
    }

    fn producer_receives(&mut self, from: u64, producer: usize, msg: FanoutMsg) -> Check {
        let answers: Vec<(String, bool)> = match &msg {
            FanoutMsg::Confirm(c) => vec![(c.order.clone(), true)],
            FanoutMsg::Confirms(c) => c.orders.iter().map(|order| (order.clone(), true)).collect(),
            FanoutMsg::Reject(r) => vec![(r.order.clone(), false)],
            _ => Vec::new(),
        };
        for (order, confirmed) in answers {
            let key = OrderKey::new(self.producers[producer].id.clone(), order);
            let &i = self.by_key.get(&key).ok_or_else(|| format!("member {from} answered unknown order {key}"))?;
            if confirmed {
                self.check_confirm(from, &key)?;
                self.orders[i].confirmed = true;
            } else {
                self.orders[i].rejected = true;
            }
            glog!(self, "p{producer} <- member {from}: {} {key}", if confirmed { "confirm" } else { "reject" });
        }
        let now = self.now;
        let p = &mut self.producers[producer];
        p.core.handle_fanout(msg, now);
        while p.core.poll_answer().is_some() {}
        if let Some(leader) = p.core.poll_leader() {
            glog!(self, "p{producer} follows member {leader}");
        }
        self.producer_transmit(producer)
    }

    /// Invariant 1 on the way: a member confirms only what it applied
    /// (committed by a majority, in its journal), so if it still runs its
    /// core knows the order as sealed or done, never as partial or unknown.
    fn check_confirm(&self, from: u64, key: &OrderKey) -> Check {
        let Some(run) = &self.slots[self.slot_of(from)].running else { return Ok(()) };
        match run.core.snapshot(key) {
            Some(Event::Restored { snapshot: Snapshot::Partial { .. }, .. }) | None => {
                Err(format!("invariant 1: member {from} confirmed {key}, which its core does not hold as sealed"))
            }
            Some(_) => Ok(()),
        }
    }

    // ------------------------------------------------------------ faults

    fn members_down(&self) -> usize {
        self.slots.iter().filter(|s| s.running.is_none() || s.point.armed()).count()
    }

    /// A member to hit: the leader half the time (when there is one).
    fn target(&mut self) -> Option<usize> {
        let up: Vec<usize> = (0..self.slots.len()).filter(|&m| self.slots[m].running.is_some()).collect();
        if up.is_empty() {
            return None;
        }
        let leader = up.iter().copied().find(|&m| self.slots[m].running.as_ref().is_some_and(|r| r.member.serves()));
        match leader {
            Some(leader) if self.rng.chance(0.5) => Some(leader),
            _ => Some(up[self.rng.below(up.len() as u64) as usize]),
        }
    }

    fn chaos(&mut self) {
        let (lo, hi) = self.params.chaos_gap_ms;
        self.chaos_at = self.now + self.rng.range(lo, hi);
        let chaos = CHAOS[self.rng.weighted(&self.params.chaos_weights)];
        match chaos {
            // At most one member down (or about to be) at a time.
            Chaos::Crash | Chaos::PowerCut | Chaos::PowerCutInCall if self.members_down() == 0 => {
                let Some(m) = self.target() else { return };
                let id = self.slots[m].id;
                let downtime = self.rng.range(100, 6_000);
                match chaos {
                    Chaos::Crash => {
                        self.stats.crashes += 1;
                        glog!(self, "CHAOS member {id} is killed (-9), down for {downtime} ms");
                        self.take_down(m, downtime, false);
                    }
                    Chaos::PowerCut => {
                        self.stats.power_cuts += 1;
                        glog!(self, "CHAOS member {id} loses power, down for {downtime} ms");
                        self.take_down(m, downtime, true);
                    }
                    _ => {
                        let syncs = self.rng.range(1, CRASH_POINT_SYNCS_MAX);
                        self.slots[m].point.arm(syncs);
                        glog!(self, "CHAOS member {id} will lose power at its {syncs}th fsync from now");
                    }
                }
            }
            Chaos::Partition if self.partition.is_none() => {
                let Some(m) = self.target() else { return };
                let cut = [Cut::Both, Cut::Outbound, Cut::Inbound][self.rng.below(3) as usize];
                let until = self.now + self.rng.range(1_000, 10_000);
                let member = self.slots[m].id;
                self.partition = Some(Partition { member, cut, until });
                self.stats.partitions += 1;
                glog!(self, "CHAOS member {member} is cut off ({cut:?}) until {until}");
            }
            Chaos::KillWorker => {
                let alive: Vec<usize> =
                    (0..self.workers.len()).filter(|&i| self.workers[i].life == Life::Alive).collect();
                if alive.is_empty() {
                    return;
                }
                let i = alive[self.rng.below(alive.len() as u64) as usize];
                let restart_at = self.now + self.rng.range(200, 5_000);
                self.workers[i].kill(Some(restart_at));
                self.stats.worker_kills += 1;
                glog!(self, "CHAOS w{i} killed, restarts at {restart_at}");
            }
            _ => {}
        }
    }

    /// The fault phase ends: calm network, partitions healed, every member
    /// and worker back soon.
    fn end_faults(&mut self) {
        self.phase = Phase::Settle { deadline: self.now + SETTLE_MS_MAX };
        self.peer_faults = CALM;
        self.client_faults = CALM;
        self.params.intake_drop = 0.0;
        self.partition = None;
        let now = self.now;
        for slot in &mut self.slots {
            slot.point.disarm();
            if slot.running.is_none() {
                slot.restart_at = slot.restart_at.min(now + 1_000);
            }
        }
        for w in &mut self.workers {
            let soon = now + self.rng.range(0, 1_000);
            if let Life::Dead { restart_at } = &mut w.life {
                *restart_at = Some(restart_at.unwrap_or(soon).min(soon));
            }
        }
        glog!(self, "faults end: calm network, partition healed, members and workers back soon");
    }

    // ------------------------------------------------------------ invariants

    /// After every step: invariant 3 is checked as views change; here the
    /// journals now and then, and the cores' own bookkeeping.
    fn check_step(&mut self) -> Check {
        if self.steps.is_multiple_of(JOURNAL_CHECK_EVERY) {
            for m in 0..self.slots.len() {
                self.check_journal(m)?;
            }
        }
        if cfg!(debug_assertions) && !self.steps.is_multiple_of(CORE_CHECK_EVERY_DEBUG) {
            return Ok(());
        }
        for slot in &self.slots {
            if let Some(run) = &slot.running {
                run.core.check_invariants();
            }
        }
        Ok(())
    }

    /// Invariants 2 and 4 on member `m`'s event journal, read back: its
    /// applied entries (the events between two markers) equal every other
    /// member's for the same index, each index once and in order, and no
    /// order is sealed twice in it.
    fn check_journal(&mut self, m: usize) -> Check {
        let id = self.slots[m].id;
        let Some(run) = &self.slots[m].running else { return Ok(()) };
        let mut entries: Vec<(u64, Vec<Vec<u8>>)> = Vec::new();
        // Records since the last marker: applied at the next marker,
        // dropped by a fence (as `io::replay_member` does).
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        let mut sealed: BTreeSet<OrderKey> = BTreeSet::new();
        let mut twice = None;
        run.recorder
            .log
            .journal
            .replay_located(|at, body| {
                if let Some(index) = decode_applied_marker(body) {
                    for body in &bodies {
                        match decode_event(at.seq, body).map_err(|e| format!("record before {}: {e}", at.seq))? {
                            Event::Sealed { key, .. } | Event::Accepted { key, .. }
                                if !sealed.insert(key.clone()) && twice.is_none() =>
                            {
                                twice = Some((key, at.seq));
                            }
                            // Past the dedup window a key may be sealed
                            // again: a new order (not within these runs'
                            // few minutes).
                            Event::AcceptedBatch { orders, .. } if twice.is_none() => {
                                for o in orders {
                                    if !sealed.insert(o.key.clone()) && twice.is_none() {
                                        twice = Some((o.key.clone(), at.seq));
                                    }
                                }
                            }
                            Event::Forgotten { key } => {
                                sealed.remove(&key);
                            }
                            _ => {}
                        }
                    }
                    entries.push((index, std::mem::take(&mut bodies)));
                    return Ok(());
                }
                if is_marker(body) {
                    bodies.clear(); // a fence
                    return Ok(());
                }
                bodies.push(body.to_vec());
                Ok::<(), String>(())
            })
            .map_err(|e| format!("member {id}: reading its event journal back: {e:?}"))?;
        if let Some((key, seq)) = twice {
            return Err(format!("invariant 2: member {id}'s journal seals {key} twice (marker at seq {seq})"));
        }
        if !bodies.is_empty() {
            let events: Vec<String> = bodies
                .iter()
                .map(|b| decode_event(0, b).map_or_else(|e| e.to_string(), |e| format!("{e:?}")))
                .collect();
            let last = entries.last().map(|(index, _)| *index);
            return Err(format!(
                "member {id}: its running journal holds {} event records after its last marker (index {last:?}), \
                 not fenced: {events:?}",
                bodies.len()
            ));
        }
        // Compaction removed the journal's first segments: the first group
        // of events may be the tail of an entry whose head went with them.
        let compacted = run.recorder.log.journal.segments().first().is_some_and(|s| s.id > 1);
        let mut last = 0;
        for (n, (index, bodies)) in entries.into_iter().enumerate() {
            if n == 0 && compacted {
                last = index;
                continue;
            }
            if index < last {
                return Err(format!("member {id}: its journal applies index {index} after {last}"));
            }
            if index == last {
                // A marker again at the same index: compaction's (before a
                // removal, and after its copies), which are this member's
                // own and hold nothing but copies of live orders.
                for body in &bodies {
                    let event = decode_event(0, body).map_err(|e| format!("member {id}: {e}"))?;
                    if !matches!(event, Event::Restored { .. }) {
                        return Err(format!("member {id}: index {index} applied twice, with {event:?}"));
                    }
                }
                continue;
            }
            last = index;
            match self.committed.get(&index) {
                Some(known) if *known != bodies => {
                    return Err(format!(
                        "invariant 4: member {id} applied index {index} as {} records, another member as {} \
                         (or with other bytes)",
                        bodies.len(),
                        known.len()
                    ));
                }
                Some(_) => {}
                None => {
                    self.committed.insert(index, bodies);
                }
            }
        }
        Ok(())
    }

    fn leader_slot(&self) -> Option<usize> {
        (0..self.slots.len()).find(|&m| self.slots[m].running.as_ref().is_some_and(|r| r.member.serves()))
    }

    fn settled(&self) -> bool {
        if self.slots.iter().any(|s| s.running.is_none()) {
            return false;
        }
        let Some(l) = self.leader_slot() else { return false };
        if !(self.intake.is_empty() && self.producers.iter().all(SimProducer::done)) {
            return false;
        }
        if self.network.values().any(|p| matches!(p, Packet::ToProducer { .. } | Packet::Control { .. })) {
            return false;
        }
        if !self.workers.iter().all(|w| w.life == Life::Alive && w.jobs.is_empty()) {
            return false;
        }
        let leader = self.slots[l].running.as_ref().expect("up");
        let commit = leader.member.node().commit_index();
        if leader.member.node().last_index() != commit
            || self.slots.iter().any(|s| s.running.as_ref().is_some_and(|r| r.member.applied() != commit))
        {
            return false;
        }
        let status = leader.core.status();
        status.pending_orders == 0 && status.in_flight_orders == 0
    }

    /// The end: invariants 1, 2 and 4 on every member, 3 throughout.
    fn finish(&mut self) -> Check {
        for m in 0..self.slots.len() {
            self.check_journal(m)?;
            self.slots[m].running.as_ref().expect("settled").core.check_invariants();
        }
        let l = self.leader_slot().expect("settled");
        let leader_id = self.slots[l].id;
        // The final leader's committed history: who was acked.
        let mut acked = BTreeSet::new();
        let run = self.slots[l].running.as_mut().expect("settled");
        for bodies in self.committed.values() {
            for body in bodies {
                if let Ok(Event::Acked { key }) = decode_event(0, body) {
                    acked.insert(key);
                }
            }
        }
        for o in &self.orders {
            self.stats.orders_confirmed += u32::from(o.confirmed);
            self.stats.orders_rejected += u32::from(o.rejected && !o.confirmed);
            if !o.confirmed {
                continue;
            }
            // Invariant 1: acked, or still held (pending or dead-lettered)
            // by the leader with the same items.
            let mut snapshot = run.core.snapshot(&o.key);
            if let (Some(from), Some(items)) =
                (run.core.payload_ref(&o.key), snapshot.as_mut().and_then(Event::payload_mut))
            {
                *items = run
                    .recorder
                    .read_items(from, &o.key)
                    .map_err(|e| format!("read-back of {}'s items: {e:#}", o.key))?;
            }
            match snapshot {
                // Acked, its key still in the dedup window: acked in the
                // committed history (the settled leader's core holds only
                // what was committed; its Acked record itself may have been
                // compacted away since the journals were last read).
                Some(Event::Restored { snapshot: Snapshot::Acked { .. }, .. }) => self.stats.orders_acked += 1,
                Some(event) => {
                    let expected: Vec<ByteBuf> = (0..o.count).map(|s| item_data(&o.key, s)).collect();
                    match event.payload() {
                        Some(items) if items == expected.as_slice() => self.stats.dead_letters += 1,
                        items => {
                            return Err(format!(
                                "invariant 1: confirmed {} is held by leader {leader_id} as {event:?} with items \
                                 {items:?}, made {expected:?}",
                                o.key
                            ))
                        }
                    }
                }
                None if acked.contains(&o.key) => self.stats.orders_acked += 1,
                None => {
                    return Err(format!(
                        "invariant 1: confirmed order {} is lost: neither acked in the committed history nor held \
                         by leader {leader_id}",
                        o.key
                    ))
                }
            }
        }
        self.stats.committed_index = run.member.node().commit_index();
        self.stats.resends = self.producers.iter().map(|p| p.resends).sum();
        for slot in &self.slots {
            if let Some(run) = &slot.running {
                self.stats.client_input_dropped += run.member.report(0).dropped_messages;
            }
        }
        glog!(self, "settled: leader {leader_id}, commit {}", self.stats.committed_index);
        Ok(())
    }

    fn not_settled(&self) -> String {
        let mut report = format!("liveness: not settled {SETTLE_MS_MAX} ms after the faults ended; ");
        for slot in &self.slots {
            match &slot.running {
                Some(run) => {
                    let r = run.member.report(0);
                    report += &format!(
                        "[member {} {} leader {:?} term {} commit {} applied {} last {} status {:?}] ",
                        slot.id,
                        r.role,
                        r.leader,
                        r.term,
                        r.commit,
                        r.applied,
                        run.member.node().last_index(),
                        (run.core.status().pending_orders, run.core.status().in_flight_orders)
                    );
                }
                None => report += &format!("[member {} down] ", slot.id),
            }
        }
        for p in &self.producers {
            report += &format!("[{} done {} leader {:?}] ", p.id, p.done(), p.core.leader());
        }
        for w in &self.workers {
            report += &format!("[{} {:?} leader {:?} jobs {}] ", w.id, w.life, w.leader(), w.jobs.len());
        }
        report
    }
}

/// An error and its causes on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

/// The members as clients see them: the endpoints are never dialled (the
/// simulation routes by member id).
fn client_members() -> Members {
    let endpoint = |port: u32| format!("tcp://127.0.0.1:{port}").parse().expect("a valid endpoint");
    let members = (1..=GROUP_SIZE as u64)
        .map(|id| {
            let base = 5000 + 10 * id as u32;
            ClientMember {
                id,
                intake: endpoint(base),
                fanout: endpoint(base + 1),
                control: endpoint(base + 2),
                public_key: None,
            }
        })
        .collect();
    Members::new(members).expect("three members")
}

fn short(msg: &FanoutMsg) -> String {
    match msg {
        FanoutMsg::Welcome(w) => format!("welcome {:#x}", w.nonce),
        FanoutMsg::Dispatch(d) => format!("dispatch {} attempt {}", d.order, d.attempt),
        FanoutMsg::Dispatches(b) => format!("dispatches of {}", b.dispatches.len()),
        FanoutMsg::Confirm(c) => format!("confirm {}", c.order),
        FanoutMsg::Confirms(c) => format!("confirms {:?}", c.orders),
        FanoutMsg::Reject(r) => format!("reject {}: {:?}", r.order, r.reason),
        FanoutMsg::Heartbeat(h) => format!("heartbeat {:?}/{:?}/{}", h.member, h.leader, h.term),
        FanoutMsg::Backpressure(b) => format!("backpressure {}", b.reason),
    }
}
