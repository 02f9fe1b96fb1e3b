//! The journal side of the loop: where events go, and the end of every
//! turn (record, commit, then publish).

use std::time::{Duration, Instant};

use orderly_journal::{Journal, JournalError, RecordAt};

use orderly_common::OrderKey;

use super::error::{journal_err, BrokerError};
use super::COMPACTION_LIVE_PERCENT_MAX;
use crate::compaction::{Anchors, Plan};
use crate::core::codec::{decode_event, encode_event, encode_event_into, take_payload};
use crate::core::{AcceptedOrder, Core, Event, Histogram, Payload};

/// Where events go: the journal, or a double in tests.
pub trait EventLog {
    /// Buffers one record; returns where it will be.
    fn append(&mut self, body: &[u8]) -> Result<RecordAt, JournalError>;
    /// Buffers `event`'s record ([`encode_event`]); returns where it will be.
    fn append_event(&mut self, event: &Event) -> Result<RecordAt, JournalError> {
        self.append(&encode_event(event))
    }
    /// Writes (and per policy fsyncs) everything buffered.
    fn commit(&mut self) -> Result<orderly_journal::CommitInfo, JournalError>;
    /// Writes everything buffered; fsyncs it later unless it is due (see
    /// [`Journal::commit_lazily`]): for a turn that promises nothing.
    fn commit_lazily(&mut self) -> Result<orderly_journal::CommitInfo, JournalError>;
    /// Reads back a committed record.
    fn read_at(&mut self, at: RecordAt) -> Result<Vec<u8>, JournalError>;
}

/// An [`EventLog`] of segments that compaction can remove.
pub trait SegmentedLog: EventLog {
    /// The segments on disk, oldest first.
    fn segments(&self) -> &[orderly_journal::SegmentInfo];
    /// Fsyncs everything written.
    fn sync(&mut self) -> Result<bool, JournalError>;
    /// Records written since the last fsync (lazy commits) await one.
    fn has_unsynced(&self) -> bool;
    /// Bytes appended and not yet committed.
    fn pending_bytes(&self) -> u64;
    /// Removes the oldest segment (see [`Journal::remove_oldest_segment`]).
    fn remove_oldest_segment(&mut self, segment_id: u64) -> Result<orderly_journal::SegmentInfo, JournalError>;
    /// The journal itself, to replay (a group member rebuilding its core).
    fn journal(&self) -> &Journal;
}

impl EventLog for Journal {
    fn append(&mut self, body: &[u8]) -> Result<RecordAt, JournalError> {
        Journal::append_located(self, body)
    }

    /// Encoded straight into the journal's batch buffer: no record-sized
    /// allocation or copy per event.
    fn append_event(&mut self, event: &Event) -> Result<RecordAt, JournalError> {
        Journal::append_located_with(self, |buffer| encode_event_into(event, buffer))
    }

    fn commit(&mut self) -> Result<orderly_journal::CommitInfo, JournalError> {
        Journal::commit(self)
    }

    fn commit_lazily(&mut self) -> Result<orderly_journal::CommitInfo, JournalError> {
        Journal::commit_lazily(self)
    }

    fn read_at(&mut self, at: RecordAt) -> Result<Vec<u8>, JournalError> {
        Journal::read_at(self, at)
    }
}

impl SegmentedLog for Journal {
    fn segments(&self) -> &[orderly_journal::SegmentInfo] {
        Journal::segments(self)
    }

    fn sync(&mut self) -> Result<bool, JournalError> {
        Journal::sync(self)
    }

    fn has_unsynced(&self) -> bool {
        Journal::has_unsynced(self)
    }

    fn pending_bytes(&self) -> u64 {
        Journal::pending_bytes(self)
    }

    fn remove_oldest_segment(&mut self, segment_id: u64) -> Result<orderly_journal::SegmentInfo, JournalError> {
        Journal::remove_oldest_segment(self, segment_id)
    }

    fn journal(&self) -> &Journal {
        self
    }
}

/// What the end of a turn did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persisted {
    /// Everything recorded (durable as promised), then published.
    Published,
    /// The journal's disk is full ([`JournalError::NoSpace`]): the records
    /// wait in the journal's batch, the messages in the core, and nothing
    /// was published. Call [`persist_then_publish`] again later: it retries
    /// the same commit first.
    Held,
}

/// The journal side of the loop: the log, the compaction anchors, and how
/// much was written.
pub struct Recorder<L> {
    pub log: L,
    pub anchors: Anchors,
    pub bytes_written: u64,
    pub commits: u64,
    pub commit_time: Duration,
    /// Each commit's time, write and fsync included (`/metrics`).
    pub commit_seconds: Histogram,
    pub payload_reads: u64,
    /// A commit the disk refused (the error, for people): its records are
    /// still buffered in the log, and must be committed before anything
    /// else is published.
    held: Option<String>,
    /// An event taken from the core but not appended (the commit that had
    /// to make room for it found the disk full): it goes first next time.
    stashed: Option<Event>,
    /// A group member's applied marker, appended after compaction's
    /// copies in their commit: a member's replay applies events only at a
    /// marker (`recover::replay_member`), so copies without one would be
    /// dropped once the segment they replace is gone.
    pub copies_marker: Option<Vec<u8>>,
    /// Compaction's copies are written in commits of about this many
    /// bytes ([`COPY_FORWARD_CHUNK_BYTES`]; the simulation makes it small
    /// so that power cuts fall between chunks).
    pub copy_chunk_bytes: u64,
    /// The batch record read back last. Its orders are dispatched one by
    /// one, mostly in the order they arrived, so without it every order
    /// of a batch would read and decode the whole record again (a
    /// million pending orders in batches of 1024 took 164 s instead of
    /// ~30 s to dispatch after a restart).
    batch: Option<BatchRead>,
}

/// A decoded batch record and where the last lookup in it ended.
struct BatchRead {
    seq: u64,
    orders: Vec<AcceptedOrder>,
    cursor: usize,
}

impl BatchRead {
    /// `key`'s items, looked for from the order after the last one found
    /// (orders are read back in arrival order, so usually the next one).
    fn items_of(&mut self, key: &OrderKey) -> Option<Payload> {
        let n = self.orders.len();
        let found = (0..n).map(|i| (self.cursor + i) % n).find(|&i| &self.orders[i].key == key)?;
        self.cursor = found + 1;
        Some(self.orders[found].items.clone()) // shared, not copied
    }
}

impl<L: EventLog> Recorder<L> {
    /// A recorder over `log`, nothing written yet.
    pub fn new(log: L, anchors: Anchors) -> Self {
        Recorder {
            log,
            anchors,
            bytes_written: 0,
            commits: 0,
            commit_time: Duration::ZERO,
            commit_seconds: Histogram::default(),
            payload_reads: 0,
            held: None,
            stashed: None,
            copies_marker: None,
            copy_chunk_bytes: COPY_FORWARD_CHUNK_BYTES,
            batch: None,
        }
    }

    /// Why a commit waits for disk space, if one does.
    pub fn held(&self) -> Option<&str> {
        self.held.as_deref()
    }

    /// `None`: the disk is full (nothing appended; see [`Persisted::Held`]).
    fn append(&mut self, event: &Event) -> Result<Option<RecordAt>, BrokerError> {
        // Encoded again after a full batch: rare, and cheaper than a copy
        // of every record.
        self.append_retrying(|log| log.append_event(event))
    }

    /// Appends with `put`; when the batch is full (a huge turn), commits
    /// what is buffered and puts again. `None`: the disk is full, nothing
    /// appended.
    fn append_retrying(
        &mut self,
        mut put: impl FnMut(&mut L) -> Result<RecordAt, JournalError>,
    ) -> Result<Option<RecordAt>, BrokerError> {
        let at = match put(&mut self.log) {
            Err(JournalError::BatchFull { .. }) => {
                if !self.commit()? {
                    return Ok(None);
                }
                put(&mut self.log).map_err(journal_err("append"))?
            }
            other => other.map_err(journal_err("append"))?,
        };
        Ok(Some(at))
    }

    /// Appends a group member's marker (see `recover::applied_marker`),
    /// committing what is buffered first when the batch is full, as for
    /// events. False: the disk is full and nothing was appended.
    pub fn append_marker(&mut self, body: &[u8]) -> Result<bool, BrokerError> {
        Ok(self.append_body(body)?.is_some())
    }

    /// Appends a record body as it is, committing what is buffered first
    /// when the batch is full. `None`: the disk is full, nothing appended.
    fn append_body(&mut self, body: &[u8]) -> Result<Option<RecordAt>, BrokerError> {
        self.append_retrying(|log| log.append(body))
    }

    /// [`Recorder::record`] of an event whose record body is at hand
    /// already, `encode_event(event)`'s bytes (a group member applying a
    /// committed entry holds them): the bytes are appended as they are,
    /// not encoded again, and `event` is observed as `record` does.
    pub fn record_encoded(&mut self, core: &mut Core, event: &Event, body: &[u8]) -> Result<bool, BrokerError> {
        let Some(at) = self.append_body(body)? else { return Ok(false) };
        self.anchors.observe(core, event, at);
        Ok(true)
    }

    /// Appends `event` and, when its record holds an order's whole payload,
    /// tells the core where: every append of the loop goes through here, so
    /// no payload record goes unreported. False: the disk is full and
    /// nothing was appended (see [`Persisted::Held`]).
    pub fn record(&mut self, core: &mut Core, event: &Event) -> Result<bool, BrokerError> {
        let Some(at) = self.append(event)? else { return Ok(false) };
        self.anchors.observe(core, event, at);
        Ok(true)
    }

    /// The items of `key`, whose whole payload the record at `at` holds
    /// (alone, or in a batch).
    pub fn read_items(&mut self, at: RecordAt, key: &OrderKey) -> Result<Payload, BrokerError> {
        if let Some(batch) = self.batch.as_mut().filter(|batch| batch.seq == at.seq) {
            if let Some(items) = batch.items_of(key) {
                return Ok(items);
            }
        }
        let body = self.log.read_at(at).map_err(journal_err("read-back"))?;
        self.payload_reads += 1;
        match decode_event(at.seq, &body)? {
            Event::AcceptedBatch { orders, at_unix_ms } => {
                let mut batch = BatchRead { seq: at.seq, orders, cursor: 0 };
                match batch.items_of(key) {
                    Some(items) => {
                        self.batch = Some(batch);
                        Ok(items)
                    }
                    // The error that names what the record holds.
                    None => Ok(take_payload(at.seq, Event::AcceptedBatch { orders: batch.orders, at_unix_ms }, key)?),
                }
            }
            event => Ok(take_payload(at.seq, event, key)?),
        }
    }

    /// A durable commit; false when the disk is full (see [`Persisted::Held`]).
    pub fn commit(&mut self) -> Result<bool, BrokerError> {
        self.commit_as(true)
    }

    /// A lazy commit (see [`Journal::commit_lazily`]): written now, fsynced
    /// within `LAZY_SYNC_MAX`; false when the disk is full.
    pub fn commit_lazily(&mut self) -> Result<bool, BrokerError> {
        self.commit_as(false)
    }

    /// A commit; `durable`: fsynced (per policy) before it returns. False
    /// when the disk is full: nothing was written, the records stay
    /// buffered for the next commit. Any other failure stops the broker.
    fn commit_as(&mut self, durable: bool) -> Result<bool, BrokerError> {
        let started = Instant::now();
        let info = match if durable { self.log.commit() } else { self.log.commit_lazily() } {
            Ok(info) => info,
            Err(error @ JournalError::NoSpace { .. }) => {
                self.held = Some(error_chain(&error));
                return Ok(false);
            }
            Err(error) => return Err(journal_err("commit")(error)),
        };
        self.held = None;
        self.bytes_written += info.bytes;
        self.commits += 1;
        let elapsed = started.elapsed();
        self.commit_time += elapsed;
        self.commit_seconds.observe_us(elapsed.as_micros() as u64);
        Ok(true)
    }
}

/// An error and its causes on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The end of every turn. Group commit: every event of the turn is
/// appended, then written with one write and — when the turn confirms an
/// order — (policy `always`) one fsync, and only then is anything the core
/// promised published: a confirm never precedes the fsync of its records
/// (nor of any record before them: the journal is sequential).
///
/// A full disk holds the turn ([`Persisted::Held`]): its records stay
/// buffered, its messages stay in the core, and the next call retries the
/// commit (with whatever the core recorded meanwhile) before publishing
/// anything. Any other failed commit stops the broker: the journal's state
/// is unknown, and a restart recovers what is durable (nothing unrecorded
/// was promised).
pub fn persist_then_publish<L: EventLog>(
    core: &mut Core,
    recorder: &mut Recorder<L>,
    mut publish: impl FnMut(crate::core::Outbound) -> Result<(), BrokerError>,
) -> Result<Persisted, BrokerError> {
    let mut appended = recorder.held.is_some();
    while let Some(event) = recorder.stashed.take().or_else(|| core.poll_event()) {
        if !recorder.record(core, &event)? {
            recorder.stashed = Some(event);
            return Ok(Persisted::Held);
        }
        appended = true;
    }
    // Only a confirm promises durability; a turn without one (acks,
    // dispatches, heartbeats) is written now and fsynced with the next
    // confirm or within `LAZY_SYNC_MAX`, so acknowledgements do not queue
    // fsyncs in front of the next order's confirm. (The confirms of a held
    // turn are still waiting in the core, so its retry is durable too.)
    if appended && !recorder.commit_as(core.confirms_waiting())? {
        return Ok(Persisted::Held);
    }
    while let Some(mut out) = core.poll_outbound() {
        // Committed above or in an earlier turn: readable now.
        out.fill_with(|fill| recorder.read_items(fill.from, &fill.key))?;
        publish(out)?;
    }
    Ok(Persisted::Published)
}

/// Compaction after a turn: removes the oldest segment while it holds no
/// live order, copying its live orders forward first when few are left
/// (`Plan::CopyForward`). The copies are committed and fsynced before the
/// original goes, whatever the fsync policy. With `disk_full` nothing is
/// copied (removals still free space); a copy that meets a full disk stops
/// compaction and waits with the held commit. Returns the segments removed.
pub fn compact<L: SegmentedLog>(
    core: &mut Core,
    recorder: &mut Recorder<L>,
    disk_full: bool,
) -> Result<u32, BrokerError> {
    let mut removed = 0;
    while recorder.log.segments().len() >= 2 {
        let oldest = recorder.log.segments()[0].id;
        match recorder.anchors.plan(core, oldest, COMPACTION_LIVE_PERCENT_MAX) {
            Plan::Keep => break,
            Plan::Remove => {}
            Plan::CopyForward(_) if disk_full => break,
            Plan::CopyForward(keys) => {
                if !copy_forward(core, recorder, keys)? {
                    break;
                }
                tracing::info!(segment = oldest, "journal: copied live orders forward");
            }
        }
        let segment = recorder.log.remove_oldest_segment(oldest).map_err(journal_err("segment removal"))?;
        recorder.anchors.forget_segment(oldest);
        removed += 1;
        tracing::info!(segment = oldest, bytes = segment.bytes, "journal: removed a resolved segment");
    }
    Ok(removed)
}

/// Bytes of compaction's copies written per commit. A segment's live
/// orders (under load mostly the dedup window's acknowledged keys) were
/// one batch of 12–64 MiB, the largest transient allocation of a loaded
/// broker (heap profile, issue 20); in chunks the journal's batch buffer
/// stays within `BATCH_BUFFER_RETAINED_BYTES_MAX`.
pub const COPY_FORWARD_CHUNK_BYTES: u64 = 2 * 1024 * 1024;

/// Writes copies of these live orders and makes them durable; false if the
/// disk is full (the copies wait with the held commit). The copies go in
/// lazy commits of `copy_chunk_bytes`, all fsynced at the end, before the
/// segment goes: a power cut between chunks leaves a prefix of copies and
/// the original segment, as a cut before removal always could (a copy
/// supersedes the records it copies; the next compaction copies again;
/// a group member's copies without a marker after them are fenced off).
fn copy_forward<L: SegmentedLog>(
    core: &mut Core,
    recorder: &mut Recorder<L>,
    keys: Vec<OrderKey>,
) -> Result<bool, BrokerError> {
    for key in keys {
        let Some(mut event) = core.snapshot(&key) else { continue };
        if let (Some(from), Some(items)) = (core.payload_ref(&key), event.payload_mut()) {
            // Only the journal holds the items: copy them from there.
            *items = recorder.read_items(from, &key)?;
        }
        if !recorder.record(core, &event)? {
            return Ok(false);
        }
        if recorder.log.pending_bytes() >= recorder.copy_chunk_bytes && !recorder.commit_lazily()? {
            return Ok(false);
        }
    }
    if let Some(marker) = recorder.copies_marker.clone() {
        if !recorder.append_marker(&marker)? {
            return Ok(false);
        }
    }
    if !recorder.commit()? {
        return Ok(false);
    }
    recorder.log.sync().map_err(journal_err("fsync"))?;
    Ok(true)
}

#[cfg(test)]
mod tests;
