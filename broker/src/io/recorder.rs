//! The journal side of the loop: where events go, and the end of every
//! turn (record, commit, then publish).

use std::time::{Duration, Instant};

use orderly_common::protocol::encode_dispatch;
use orderly_journal::{Journal, JournalError, RecordAt};
use serde_bytes::ByteBuf;

use super::error::{journal_err, BrokerError};
use crate::compaction::Anchors;
use crate::core::codec::{decode_payload, encode_event};
use crate::core::{Core, Event};

/// Where events go: the journal, or a double in tests.
pub trait EventLog {
    /// Buffers one record; returns where it will be.
    fn append(&mut self, body: &[u8]) -> Result<RecordAt, JournalError>;
    /// Writes (and per policy fsyncs) everything buffered.
    fn commit(&mut self) -> Result<orderly_journal::CommitInfo, JournalError>;
    /// Writes everything buffered; fsyncs it later unless it is due (see
    /// [`Journal::commit_lazily`]): for a turn that promises nothing.
    fn commit_lazily(&mut self) -> Result<orderly_journal::CommitInfo, JournalError>;
    /// Reads back a committed record.
    fn read_at(&mut self, at: RecordAt) -> Result<Vec<u8>, JournalError>;
}

impl EventLog for Journal {
    fn append(&mut self, body: &[u8]) -> Result<RecordAt, JournalError> {
        Journal::append_located(self, body)
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

/// The journal side of the loop: the log, the compaction anchors, and how
/// much was written.
pub struct Recorder<L> {
    pub log: L,
    pub anchors: Anchors,
    pub bytes_written: u64,
    pub commits: u64,
    pub commit_time: Duration,
    pub payload_reads: u64,
}

impl<L: EventLog> Recorder<L> {
    /// A recorder over `log`, nothing written yet.
    pub fn new(log: L, anchors: Anchors) -> Self {
        Recorder { log, anchors, bytes_written: 0, commits: 0, commit_time: Duration::ZERO, payload_reads: 0 }
    }

    fn append(&mut self, event: &Event) -> Result<RecordAt, BrokerError> {
        let body = encode_event(event);
        let at = match self.log.append(&body) {
            Err(JournalError::BatchFull { .. }) => {
                // A huge turn: commit what is buffered and go on.
                self.commit()?;
                self.log.append(&body).map_err(journal_err("append"))?
            }
            other => other.map_err(journal_err("append"))?,
        };
        self.anchors.observe(event, at.segment);
        Ok(at)
    }

    /// Appends `event` and, when its record holds an order's whole payload,
    /// tells the core where: every append of the loop goes through here, so
    /// no payload record goes unreported.
    pub fn record(&mut self, core: &mut Core, event: &Event) -> Result<(), BrokerError> {
        let at = self.append(event)?;
        if let Some(key) = event.payload_key() {
            core.payload_stored(key, at);
        }
        Ok(())
    }

    /// The items of the order whose whole payload the record at `at` holds.
    pub fn read_items(&mut self, at: RecordAt) -> Result<Vec<ByteBuf>, BrokerError> {
        let body = self.log.read_at(at).map_err(journal_err("read-back"))?;
        self.payload_reads += 1;
        Ok(decode_payload(at.seq, &body)?)
    }

    pub fn commit(&mut self) -> Result<(), BrokerError> {
        self.commit_as(true)
    }

    /// A commit; `durable`: fsynced (per policy) before it returns.
    fn commit_as(&mut self, durable: bool) -> Result<(), BrokerError> {
        let started = Instant::now();
        let info = if durable { self.log.commit() } else { self.log.commit_lazily() };
        let info = info.map_err(journal_err("commit"))?;
        self.bytes_written += info.bytes;
        self.commits += 1;
        self.commit_time += started.elapsed();
        Ok(())
    }
}

/// The end of every turn. Group commit: every event of the turn is
/// appended, then written with one write and — when the turn confirms an
/// order — (policy `always`) one fsync, and only then is anything the core
/// promised published: a confirm never precedes the fsync of its records
/// (nor of any record before them: the journal is sequential). A failed commit stops the
/// broker: the journal's state is unknown, and a restart recovers what is
/// durable (nothing unrecorded was promised).
pub fn persist_then_publish<L: EventLog>(
    core: &mut Core,
    recorder: &mut Recorder<L>,
    mut publish: impl FnMut(&crate::core::Outbound) -> Result<(), BrokerError>,
) -> Result<(), BrokerError> {
    let mut appended = false;
    while let Some(event) = core.poll_event() {
        recorder.record(core, &event)?;
        appended = true;
    }
    if appended {
        // Only a confirm promises durability; a turn without one (acks,
        // dispatches, heartbeats) is written now and fsynced with the next
        // confirm or within `LAZY_SYNC_MAX`, so acknowledgements do not
        // queue fsyncs in front of the next order's confirm.
        recorder.commit_as(core.confirms_waiting())?;
    }
    while let Some(mut out) = core.poll_outbound() {
        if let Some(fill) = out.fill.take() {
            // Committed above or in an earlier turn: readable now.
            let items = recorder.read_items(fill.from)?;
            out.body = encode_dispatch(&fill.key, fill.attempt, fill.attempt > 1, &items);
        }
        publish(&out)?;
    }
    Ok(())
}
