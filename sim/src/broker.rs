//! The broker process on the simulated disk: the real broker core, the real
//! journal on a [`SimStorage`], and the real recorder of the io loop
//! (`Recorder`, `persist_then_publish`), with the io loop's own start-up
//! replay (`io::replay`) and compaction (`io::compact`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use orderly_broker::core::codec::encode_event_into;
use orderly_broker::core::{Core, CoreConfig, Event, Millis, Outbound, Payload};
use orderly_broker::io::{
    compact, decode_event, persist_then_publish, replay, BrokerError, EventLog, Persisted, Recorder, SegmentedLog,
};
use orderly_common::protocol::FanoutMsg;
use orderly_journal::{
    CommitInfo, FsyncPolicy, Journal, JournalError, Options, RecordAt, Recovery, SimStorage, RECORD_HEADER_BYTES,
};

use super::{short_event, Check, History, Outcome, Sim};
use orderly_common::OrderKey;
use orderly_journal::SpaceState;

/// Compaction's copies per commit in the simulation: far below the
/// segments' 4–64 KiB, so copies go in several chunks and power cuts and
/// full disks fall between them.
pub const COPY_CHUNK_BYTES: u64 = 1024;

/// Where the simulated broker keeps its journal on the simulated disk.
pub const JOURNAL_DIR: &str = "/data/journal";

/// One record the broker appended, decoded again with the real codec.
#[derive(Debug, Clone)]
pub struct Appended {
    pub at: RecordAt,
    /// Framing included: the bytes that must be durable.
    pub frame_bytes: u64,
    pub event: Event,
}

impl Appended {
    pub fn path(&self) -> PathBuf {
        segment_path(self.at.segment)
    }

    /// The record as the model folds it: a batch of whole orders
    /// (`AcceptedBatch`) is one `Accepted` per order, all at this record
    /// (one proof each: the batch is durable when its record is); any
    /// other record is itself.
    pub fn per_order(&self) -> Vec<Appended> {
        match &self.event {
            Event::AcceptedBatch { orders, at_unix_ms } => orders
                .iter()
                .map(|o| Appended {
                    at: self.at,
                    frame_bytes: self.frame_bytes,
                    event: Event::Accepted { key: o.key.clone(), items: o.items.clone(), at_unix_ms: *at_unix_ms },
                })
                .collect(),
            _ => vec![self.clone()],
        }
    }
}

pub fn segment_path(segment: u64) -> PathBuf {
    Path::new(JOURNAL_DIR).join(format!("{segment:020}.seg"))
}

/// The journal as the recorder's [`EventLog`], on the virtual clock: the
/// journal's lazy-fsync decisions follow the seed, not the wall clock.
pub struct SimLog {
    pub journal: Journal,
    /// The virtual time as an `Instant` (see [`virtual_instant`]).
    pub clock: Instant,
    /// Every record appended since the simulation last looked.
    pub appended: Vec<Appended>,
}

impl SimLog {
    /// Notes a record appended at `at`, decoded again from its bytes.
    fn note(&mut self, at: RecordAt, body: &[u8]) {
        let event = decode_event(at.seq, body).expect("the broker's own records decode");
        let frame_bytes = (RECORD_HEADER_BYTES + body.len()) as u64;
        self.appended.push(Appended { at, frame_bytes, event });
    }
}

impl EventLog for SimLog {
    fn append(&mut self, body: &[u8]) -> Result<RecordAt, JournalError> {
        // A group member's applied-index marker is no event (the group
        // simulation reads markers back from the journal itself).
        if orderly_broker::io::is_marker(body) {
            return self.journal.append_located(body);
        }
        let at = self.journal.append_located(body)?;
        self.note(at, body);
        Ok(at)
    }

    /// The io loop's path: encoded in place in the journal's batch buffer
    /// (`Journal::append_located_with`), so the simulation exercises it;
    /// the model decodes the very bytes written there.
    fn append_event(&mut self, event: &Event) -> Result<RecordAt, JournalError> {
        let mut body = Vec::new();
        let at = self.journal.append_located_with(|buffer| {
            let start = buffer.len();
            encode_event_into(event, buffer);
            body.extend_from_slice(&buffer[start..]);
        })?;
        self.note(at, &body);
        Ok(at)
    }

    fn commit(&mut self) -> Result<CommitInfo, JournalError> {
        self.journal.commit_at(self.clock)
    }

    fn commit_lazily(&mut self) -> Result<CommitInfo, JournalError> {
        self.journal.commit_lazily_at(self.clock)
    }

    fn read_at(&mut self, at: RecordAt) -> Result<Vec<u8>, JournalError> {
        self.journal.read_at(at)
    }
}

impl SegmentedLog for SimLog {
    fn segments(&self) -> &[orderly_journal::SegmentInfo] {
        self.journal.segments()
    }

    fn sync(&mut self) -> Result<bool, JournalError> {
        self.journal.sync()
    }

    fn has_unsynced(&self) -> bool {
        self.journal.has_unsynced()
    }

    fn pending_bytes(&self) -> u64 {
        self.journal.pending_bytes()
    }

    fn remove_oldest_segment(&mut self, segment_id: u64) -> Result<orderly_journal::SegmentInfo, JournalError> {
        self.journal.remove_oldest_segment(segment_id)
    }

    fn journal(&self) -> &Journal {
        &self.journal
    }
}

/// The virtual time `now` as an `Instant`, far ahead of the wall clock:
/// the journal's own fsyncs (roll, marker, removal) stamp the wall clock,
/// so the lazy commit after one of them always fsyncs — deterministically.
pub fn virtual_instant(base: Instant, now: Millis) -> Instant {
    base + Duration::from_millis(now)
}

/// The base of [`virtual_instant`]: a year past the wall clock.
pub fn virtual_base() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

/// The journal's options in the simulation: fsync `always` (the only
/// policy under which a broker may confirm), small segments so rolls,
/// reserves and compaction happen in every run.
pub fn journal_options(segment_bytes: u64, zero_ahead_bytes: u64) -> Options {
    Options { fsync: FsyncPolicy::Always, segment_bytes_target: segment_bytes, zero_ahead_bytes, ..Options::default() }
}

/// What `open` found.
pub struct Opened {
    pub core: Core,
    pub recorder: Recorder<SimLog>,
    pub recovery: Recovery,
    /// Every record replayed, in order.
    pub replayed: Vec<Appended>,
}

/// Opens the journal on `disk` and replays it into a fresh core with the io
/// loop's own `replay`; the caller then calls `finish_recovery`.
pub fn open(
    disk: &SimStorage,
    options: Options,
    config: CoreConfig,
    now: Millis,
    clock: Instant,
) -> Result<Opened, JournalError> {
    let storage = std::sync::Arc::new(disk.clone());
    let (journal, recovery) = Journal::open_on(storage, Path::new(JOURNAL_DIR), options)?;
    let mut replayed = Vec::new();
    let observe = |at: RecordAt, body_len: usize, event: &Event| {
        let frame_bytes = (RECORD_HEADER_BYTES + body_len) as u64;
        replayed.push(Appended { at, frame_bytes, event: event.clone() });
    };
    let (core, anchors) = match replay(&journal, config, now, observe) {
        Ok(core_and_anchors) => core_and_anchors,
        Err(BrokerError::Journal { source, .. }) => return Err(source),
        Err(error) => panic!("a record written by the broker does not replay: {error:#}"),
    };
    let log = SimLog { journal, clock, appended: Vec::new() };
    let mut recorder = Recorder::new(log, anchors);
    recorder.copy_chunk_bytes = COPY_CHUNK_BYTES;
    Ok(Opened { core, recorder, recovery, replayed })
}

/// The journal error under a broker error, if it is one.
pub fn journal_error(error: &BrokerError) -> Option<&JournalError> {
    match error {
        BrokerError::Journal { source, .. } => Some(source),
        _ => None,
    }
}

/// Seq of the last committed record of `journal`, and whether everything
/// committed is durable (fsynced).
pub fn committed(journal: &Journal) -> (u64, bool) {
    (journal.next_seq() - 1 - journal.pending_records(), !journal.has_unsynced())
}

/// One turn's end, as the broker's io loop does it.
enum Turn {
    Published(Vec<Outbound>),
    /// The disk is full: the batch and the outbound messages wait.
    Held,
    /// The journal failed (an fsync error): the process stops.
    Died(String),
}

impl Sim {
    /// The end of a step, as the end of the broker's turn: a held batch is
    /// committed first; then `persist_then_publish` (the real one) records
    /// the core's events, commits and only then publishes; then the lazy
    /// fsync when due; then compaction. A full disk holds the turn (events
    /// still go into the journal's batch, nothing is published); any other
    /// journal failure stops the broker process.
    pub(crate) fn after_step(&mut self) -> Check {
        let (Some(core), Some(recorder)) = (self.core.as_mut(), self.recorder.as_mut()) else { return Ok(()) };
        recorder.log.clock = virtual_instant(self.clock_base, self.now);
        let reads_before = recorder.payload_reads;
        if recorder.log.journal.space() != SpaceState::Ok {
            // The loop's timer while the disk is full: try again.
            recorder.log.journal.retry_reserve();
        }
        let fresh = !self.held;
        let turn = turn(core, recorder, &mut self.held);
        // As the io loop does after its turn (`DiskMode::full`).
        let disk_full = self.held || recorder.log.journal.space() != SpaceState::Ok;
        core.set_disk_paused(disk_full, self.now);
        self.stats.dispatches_from_journal += recorder.payload_reads - reads_before;
        let appended = std::mem::take(&mut recorder.log.appended);
        for record in appended {
            self.fold_live(record, fresh)?;
        }
        match turn {
            // Nothing is published; the loop's timers still run.
            Turn::Held => self.stats.commits_held += 1,
            Turn::Died(why) => {
                self.journal_died(&why);
                return Ok(());
            }
            Turn::Published(outbound) => {
                self.note_durable();
                for out in outbound {
                    self.publish(out)?;
                }
            }
        }
        let recorder = self.recorder.as_mut().expect("up");
        let held = self.held;
        if let Some(downtime) = self.power_cut_armed.filter(|_| recorder.log.journal.has_unsynced()) {
            self.power_cut_armed = None;
            self.crash_broker(downtime, Crash::PowerCut);
            return Ok(());
        }
        // The loop's timer: what lazy commits wrote is fsynced within
        // LAZY_SYNC_MAX.
        let clock = recorder.log.clock;
        match recorder.log.journal.sync_lazy_due_at(clock) {
            Err(error) => {
                self.journal_died(&format!("{error:#}"));
                return Ok(());
            }
            // Not due yet by the journal's own clock (it synced after our
            // timer was armed, and more was written since): re-arm the
            // timer from now, as the loop's next turn would, instead of
            // firing it again at this same instant.
            Ok(false) if recorder.log.journal.has_unsynced() => {
                let lazy_sync_ms = orderly_journal::LAZY_SYNC_MAX.as_millis() as Millis;
                if self.unsynced_since.is_some_and(|since| since + lazy_sync_ms <= self.now) {
                    self.unsynced_since = Some(self.now);
                }
            }
            Ok(_) => {}
        }
        if held {
            self.note_durable();
            return Ok(());
        }
        self.compact_journal()
    }

    /// The io loop's compaction after each turn; its copies only move the
    /// proofs of the orders they copy.
    fn compact_journal(&mut self) -> Check {
        let (Some(core), Some(recorder)) = (self.core.as_mut(), self.recorder.as_mut()) else { return Ok(()) };
        // The io loop's own compaction, with its rule: no copies forward
        // while the journal has no reserve.
        let result = compact(core, recorder, recorder.log.journal.space() != SpaceState::Ok);
        let copies = std::mem::take(&mut recorder.log.appended);
        let copied = copies.len();
        for copy in copies {
            self.model.note_proof(&copy);
            self.history.push(History::Copy(copy));
        }
        match result {
            Ok(0) => {}
            Ok(removed) => {
                self.stats.segments_removed += u64::from(removed);
                log!(self, "journal: compaction removed {removed} segments, {copied} orders copied forward");
            }
            Err(error) => {
                self.journal_died(&format!("compaction: {error:#}"));
                return Ok(());
            }
        }
        self.note_durable();
        Ok(())
    }

    /// A journal failure (an fsync error) stops the broker process, as it
    /// stops the real one; a restart recovers.
    fn journal_died(&mut self, why: &str) {
        self.stats.journal_failures += 1;
        log!(self, "broker: the journal failed ({why}); the process stops");
        let downtime = self.rng.range(0, 2_000);
        self.crash_broker(downtime, Crash::Process);
    }

    /// One record the running broker appended: folded into the model (the
    /// per-step invariants compare it with the core) and kept in the history.
    fn fold_live(&mut self, record: Appended, fresh: bool) -> Check {
        log!(self, "event {} (seq {})", short_event(&record.event), record.at.seq);
        match &record.event {
            Event::Requeued { reason, .. } => self.stats.count_requeue(reason),
            Event::Revived { .. } => self.stats.revivals += 1,
            Event::Forgotten { .. } => self.stats.keys_forgotten += 1,
            Event::Restored { .. } => self.stats.spills += 1,
            Event::AcceptedBatch { .. } => self.stats.order_batches += 1,
            _ => {}
        }
        // The model folds a batch order by order; the history keeps the
        // record as written, to compare with what a replay reads.
        for order in record.per_order() {
            self.check_retry_delay(&order.event, fresh)?;
            let i = self.model.on_event(&order.event)?;
            self.model.note_proof(&order);
            self.touched.push(i);
        }
        self.history.push(History::Event(record));
        Ok(())
    }

    /// Invariant 7: an order requeued with a retry delay is not dispatched
    /// before the delay ends (a restart only makes it later: replay starts
    /// it again in full). `fresh`: the record was made in this turn.
    fn check_retry_delay(&mut self, event: &Event, fresh: bool) -> Check {
        match event {
            Event::Requeued { key, delay_ms, .. } if fresh && *delay_ms > 0 => {
                self.not_before.insert(key.clone(), self.now + delay_ms);
            }
            // A new requeue, or the end of this life of the order.
            Event::Requeued { key, .. }
            | Event::Revived { key }
            | Event::Sealed { key, .. }
            | Event::Accepted { key, .. }
            | Event::Acked { key }
            | Event::DeadLettered { key, .. }
            | Event::Discarded { key } => {
                self.not_before.remove(key);
            }
            Event::Dispatched { key, .. } => {
                if let Some(due) = self.not_before.remove(key) {
                    if self.now < due {
                        return Err(format!(
                            "invariant 7: {key} dispatched at {} ms, before its retry delay ended at {due} ms",
                            self.now
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Everything committed is durable when the journal says nothing waits
    /// for an fsync: remember how far (a power cut must keep at least that).
    fn note_durable(&mut self) {
        let Some(recorder) = &self.recorder else { return };
        let (committed, synced) = committed(&recorder.log.journal);
        if synced {
            self.durable_seq = self.durable_seq.max(committed);
        }
        self.unsynced_since = match (synced, self.unsynced_since) {
            (true, _) => None,
            (false, since) => Some(since.unwrap_or(self.now)),
        };
    }

    /// Invariant 6 at publication: a Confirm leaves only when a record that
    /// makes its order sealed (its Sealed or Accepted, a copy, or its Acked)
    /// is durable on the simulated disk.
    pub(crate) fn check_confirm_durable(&mut self, msg: &FanoutMsg, producer: usize) -> Check {
        let orders: Vec<&String> = match msg {
            FanoutMsg::Confirm(c) => vec![&c.order],
            FanoutMsg::Confirms(c) => c.orders.iter().collect(),
            _ => return Ok(()),
        };
        for order in orders {
            let key = orderly_common::OrderKey::new(self.producers[producer].id.clone(), order.as_str());
            let i = self.model.find(&key).ok_or_else(|| format!("confirm for unknown order {key}"))?;
            let o = &mut self.model.orders[i];
            o.confirm_published = true;
            let durable = o.proofs.iter().find(|p| self.disk.is_durable(&p.path(), p.at.offset, p.frame_bytes));
            let Some(proof) = durable else {
                let proofs: Vec<u64> = o.proofs.iter().map(|p| p.at.seq).collect();
                return Err(format!(
                    "invariant 6: confirm for {key} published, but none of its sealing records (seqs {proofs:?}) \
                     is durable"
                ));
            };
            self.confirmed_seq_max = self.confirmed_seq_max.max(proof.at.seq);
        }
        Ok(())
    }
}

/// What crashed the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// The process died; the disk (and its page cache) lives on.
    Process,
    /// The power failed: only durable data and a seeded part of the rest.
    PowerCut,
    /// The process died and a bit of durable data flipped.
    BitFlip,
}

/// One broker turn through the real `persist_then_publish`: a turn whose
/// commit met a full disk is held (its records buffered in the journal, its
/// messages in the core) and retried first on the next turn.
fn turn(core: &mut Core, recorder: &mut Recorder<SimLog>, held: &mut bool) -> Turn {
    let mut outbound = Vec::new();
    let result = persist_then_publish(core, recorder, |out| {
        outbound.push(out.clone());
        Ok(())
    });
    match result {
        Ok(Persisted::Published) => {
            *held = false;
            Turn::Published(outbound)
        }
        Ok(Persisted::Held) => {
            assert!(outbound.is_empty(), "nothing is published before its commit");
            *held = true;
            Turn::Held
        }
        Err(error) => Turn::Died(format!("{error:#}")),
    }
}

impl Sim {
    /// Intake is read only while the journal can take it: no commit held
    /// back by a full disk, and the next segment reserved (the broker's
    /// backpressure on a full disk).
    pub(crate) fn journal_takes_intake(&self) -> bool {
        !self.held && self.recorder.as_ref().is_some_and(|r| r.log.journal.space() == SpaceState::Ok)
    }

    /// Starts a broker process: a new incarnation opens the journal on the
    /// simulated disk and replays it. The model is folded again from what
    /// the journal still holds; nothing that was durable may be missing.
    pub(crate) fn start_broker(&mut self) -> Check {
        let incarnation = loop {
            let incarnation = self.rng.next_u64();
            if incarnation != self.broker_incarnation {
                break incarnation;
            }
        };
        self.broker_incarnation = incarnation;
        let clock = virtual_instant(self.clock_base, self.now);
        let options = journal_options(self.params.disk.segment_bytes, self.params.disk.zero_ahead_bytes);
        let opened = match open(&self.disk, options, self.config(incarnation), self.now, clock) {
            Ok(opened) => opened,
            Err(error) => return self.open_failed(error),
        };
        let Opened { mut core, recorder, recovery, replayed } = opened;
        let survived = recorder.log.journal.next_seq() - 1;
        let flipped = self.flipped.take();
        if survived < self.durable_seq {
            return Err(format!(
                "the reopened journal ends at seq {survived}, but every record up to seq {} was durable \
                 (flip: {flipped:?}, torn tail cut: {:?})",
                self.durable_seq, recovery.truncated
            ));
        }
        if let Some(flip) = flipped {
            self.stats.flips_survived += 1;
            log!(
                self,
                "broker: the journal opened despite the flip {flip:?} (torn tail cut: {:?})",
                recovery.truncated
            );
        }
        if let Some(torn) = &recovery.truncated {
            self.stats.torn_tails_cut += 1;
            log!(self, "broker: cut a torn tail at {} of {} ({})", torn.offset, torn.file.display(), torn.reason);
        }
        self.refold(survived, &replayed)?;
        let replayed_status = core.status();
        self.stats.recoveries_with_partials += u32::from(replayed_status.partial_orders > 0);
        self.stats.recoveries_with_in_flight += u32::from(replayed_status.in_flight_orders > 0);
        core.finish_recovery(self.now);
        // Open made durable everything it replays.
        self.durable_seq = survived;
        self.core = Some(core);
        self.recorder = Some(recorder);
        self.held = false;
        self.unsynced_since = None;
        self.check_all = true;
        let records = replayed.len();
        log!(self, "broker: started, incarnation {incarnation:#x}, replayed {records} records up to seq {survived}");
        Ok(())
    }

    /// The journal refused to open: after a flip, corruption reported is
    /// the right answer and ends the run; an IO error (an fsync failing
    /// during open) is retried by the next start; anything else is a bug.
    fn open_failed(&mut self, error: JournalError) -> Check {
        match error {
            JournalError::Corrupt { .. } | JournalError::UnsupportedVersion { .. } if self.flipped.is_some() => {
                self.stats.corruption_reported += 1;
                log!(self, "broker: the journal refuses to open after the flip {:?}: {error}", self.flipped);
                self.outcome = Outcome::CorruptionReported(error.to_string());
                Ok(())
            }
            // A full disk where open needs a new segment or a marker: the
            // broker cannot start until there is room.
            JournalError::Io { .. } | JournalError::NoSpace { .. } => {
                self.stats.open_failures += 1;
                log!(self, "broker: open failed ({error:#}); the process starts again");
                self.restart_at = self.now + self.rng.range(100, 2_000);
                Ok(())
            }
            error => Err(format!("the journal refused to open without a flip: {error}")),
        }
    }

    /// What the reopened journal holds is what was recorded, up to seq
    /// `survived` (a power cut takes only what was never fsynced): the
    /// history loses the rest, every replayed record must equal the one
    /// recorded under its seq, and the model is folded again from it.
    fn refold(&mut self, survived: u64, replayed: &[Appended]) -> Check {
        // A lost Requeued takes its delay with it.
        self.not_before.clear();
        let before = self.history.len();
        self.history.retain(|h| match h {
            History::Event(r) | History::Copy(r) => r.at.seq <= survived,
            History::Recovery => true,
        });
        self.stats.records_lost += (before - self.history.len()) as u64;
        self.history.push(History::Recovery);
        let recorded: BTreeMap<u64, &Event> = self
            .history
            .iter()
            .filter_map(|h| match h {
                History::Event(r) | History::Copy(r) => Some((r.at.seq, &r.event)),
                History::Recovery => None,
            })
            .collect();
        for r in replayed {
            match recorded.get(&r.at.seq) {
                Some(event) if **event == r.event => {}
                other => {
                    return Err(format!("replayed record {} is {:?}, recorded was {other:?}", r.at.seq, r.event));
                }
            }
        }
        let before: Vec<(Option<u64>, bool)> =
            self.model.orders.iter().map(|o| (o.partial.then_some(o.partial_bytes), o.dropped)).collect();
        self.model.reset_events();
        for h in &self.history {
            match h {
                History::Event(r) => {
                    for order in r.per_order() {
                        let folded = self.model.on_event(&order.event);
                        folded.map_err(|e| format!("folding the journal again: {e}"))?;
                        self.model.note_proof(&order);
                    }
                }
                History::Copy(r) => self.model.note_proof(r),
                History::Recovery => self.model.on_recovery(),
            }
        }
        for (o, (partial_bytes, dropped)) in self.model.orders.iter_mut().zip(before) {
            let stream_cut = partial_bytes.is_some_and(|bytes| !o.partial || o.partial_bytes < bytes);
            if stream_cut || (dropped && !o.dropped) {
                o.stream_cut = true;
                self.stats.streams_cut += 1;
            }
        }
        self.model.check_confirmed_kept()
    }

    /// The broker stops: its core and journal handle go; what was in
    /// transit may be lost. A power cut keeps only durable data (and a
    /// seeded part of the rest); a flip changes one bit of durable data.
    pub(crate) fn crash_broker(&mut self, downtime_ms: u64, crash: Crash) {
        // Answers the core had not yet published die with it.
        if let Some(core) = self.core.as_mut() {
            let unpublished: Vec<Outbound> = std::iter::from_fn(|| core.poll_outbound()).collect();
            for out in unpublished {
                self.unpublished(out);
            }
        }
        self.stats.acks_refused += self.core.as_ref().map_or(0, |core| core.counters().acks_refused);
        self.core = None;
        self.recorder = None;
        self.held = false;
        self.unsynced_since = None;
        self.restart_at = self.now + downtime_ms;
        self.stats.broker_crashes += 1;
        match crash {
            Crash::Process => {}
            Crash::PowerCut => {
                self.disk.power_cut();
                self.stats.power_cuts += 1;
            }
            Crash::BitFlip => {
                self.flipped = self.disk.flip_bit();
                self.stats.bit_flips += u32::from(self.flipped.is_some());
            }
        }
        log!(self, "CHAOS broker crashes ({crash:?}), down for {downtime_ms} ms; flip {:?}", self.flipped);
        // What was on its way may be lost with the process and its sockets;
        // intake waits in the producers' queues.
        let loss = self.params.crash_loss;
        let keys: Vec<(Millis, u64)> = self.network.keys().copied().collect();
        for key in keys {
            if self.rng.chance(loss) {
                let packet = self.network.remove(&key).expect("listed");
                self.stats.packets_lost_in_crash += 1;
                self.lost(&packet);
            }
        }
    }

    /// A reply the dead broker never published excuses its absence.
    fn unpublished(&mut self, out: Outbound) {
        let Some(id) = std::str::from_utf8(&out.topic).ok().and_then(|t| t.strip_prefix("p/")?.strip_suffix('/'))
        else {
            return;
        };
        let Some(producer) = self.producers.iter().position(|p| p.id == id) else { return };
        if let Ok(msg) = FanoutMsg::decode(&out.body) {
            self.lost(&super::Packet::ToProducer { producer, msg });
        }
    }

    /// The disk fills up (little room left) until a random later time.
    pub(crate) fn fill_disk(&mut self) {
        if self.disk_full_until.is_some() {
            return;
        }
        let room = self.rng.range(0, self.params.disk.segment_bytes);
        self.disk.set_capacity(Some(self.disk.used_bytes() + room));
        let until = self.now + self.rng.range(500, 10_000);
        self.disk_full_until = Some(until);
        self.stats.disk_full_episodes += 1;
        log!(self, "CHAOS the disk is full ({room} bytes left) until {until}");
    }

    /// The core's snapshot of `key`, with items read back from the journal
    /// when only the journal holds them.
    pub(crate) fn snapshot_filled(&mut self, key: &OrderKey) -> Result<Option<Event>, String> {
        let Some(core) = &self.core else { return Ok(None) };
        let mut snapshot = core.snapshot(key);
        let from = core.payload_ref(key);
        if let (Some(from), Some(items)) = (from, snapshot.as_mut().and_then(Event::payload_mut)) {
            *items = self.read_items(from, key)?;
        }
        Ok(snapshot)
    }

    /// The items the journal record at `at` holds (the broker's read-back);
    /// from the history while the record waits in a batch held back by a
    /// full disk (nothing reads it then but these checks).
    fn read_items(&mut self, at: RecordAt, key: &OrderKey) -> Result<Payload, String> {
        let recorder = self.recorder.as_mut().expect("a core reads back through its journal");
        if at.seq > committed(&recorder.log.journal).0 {
            let held = self.history.iter_mut().rev().find_map(|h| match h {
                History::Event(r) | History::Copy(r) if r.at.seq == at.seq => {
                    r.event.payload_of_mut(key).map(|items| items.clone())
                }
                _ => None,
            });
            return held.ok_or_else(|| format!("read-back of unwritten record {}", at.seq));
        }
        recorder.read_items(at, key).map_err(|e| format!("read-back of record {}: {e}", at.seq))
    }
}
