//! The on-disk outbox: an `orderly-journal` journal of [`record`] records in
//! a directory of its own, so orders survive a crash of the producer.
//!
//! - A Sent record is committed (fsynced) before an order's first message
//!   goes out (for a stream: before its Finish), so an order the caller was
//!   handed a receipt for is on disk whatever happens next.
//! - An Answered record is appended when the broker answers and committed
//!   at the end of that poll. It need not be durable first: if it is lost,
//!   the order is resent after a restart, and the broker confirms it again
//!   without processing it twice.
//! - Compaction: each live order is anchored in the segment of its latest
//!   Sent record. Only the oldest segment is ever removed (so an Answered
//!   never outlives the Sent it answers, which would resurrect the order):
//!   when nothing in it is live; or, when at most half of it is live (or
//!   the outbox is over its disk budget), after its live orders' Sent
//!   records are copied forward to the active segment and committed.
//!
//! [`record`]: crate::record

use std::path::{Path, PathBuf};

use orderly_journal::{FsyncPolicy, Journal, JournalError, Options, ReplayError};

use crate::core::Outbox;
use crate::error::ProducerError;
use crate::record::{self, compaction_step, Anchors, CompactStep, Recovered, Replay};

/// The open on-disk outbox (holds the directory lock).
#[derive(Debug)]
pub(crate) struct DiskOutbox {
    journal: Journal,
    dir: PathBuf,
    anchors: Anchors,
    /// Compaction copies forward regardless of the live share while the
    /// journal is larger than this.
    budget_bytes: u64,
}

impl DiskOutbox {
    /// Opens (creating if needed) the outbox in `dir` and returns it with
    /// the live orders found, oldest first.
    pub fn open(
        dir: &Path,
        segment_bytes_target: u64,
        budget_bytes: u64,
    ) -> Result<(DiskOutbox, Vec<Recovered>), ProducerError> {
        let options = Options { fsync: FsyncPolicy::Always, segment_bytes_target, ..Options::default() };
        let (journal, recovery) = Journal::open(dir, options).map_err(|source| journal_error(dir, source))?;
        if let Some(tail) = &recovery.truncated {
            tracing::warn!(file = %tail.file.display(), offset = tail.offset, "outbox: cut off a torn tail (a crash while writing)");
        }
        let mut replay = Replay::default();
        let replayed = journal.replay(|seq, segment_id, body| {
            let record = record::decode(body).map_err(|e| e.to_string())?;
            replay.apply(seq, segment_id, body.len() as u64, record);
            Ok::<(), String>(())
        });
        match replayed {
            Ok(()) => {}
            Err(ReplayError::Journal(source)) => return Err(journal_error(dir, source)),
            Err(ReplayError::Callback { seq, error }) => {
                return Err(ProducerError::OutboxRecord { dir: dir.to_path_buf(), seq, detail: error })
            }
        }
        let live = replay.finish();
        let mut anchors = Anchors::default();
        for order in &live {
            anchors.anchor(&order.id, order.segment_id, order.record_bytes);
        }
        let disk = DiskOutbox { journal, dir: dir.to_path_buf(), anchors, budget_bytes };
        Ok((disk, live))
    }

    /// Appends a Sent record for each order and commits them with one
    /// fsync. After `Ok`, every one of them survives a crash. They are
    /// anchored (counted as live on disk) only once committed, so a failed
    /// commit leaves no live order on disk that the outbox does not hold.
    pub fn record_sent<'a>(
        &mut self,
        orders: impl IntoIterator<Item = (&'a str, &'a [Vec<u8>])>,
    ) -> Result<(), ProducerError> {
        let mut written = Vec::new();
        for (id, items) in orders {
            let (segment_id, record_bytes) = self.append_sent(id, items)?;
            written.push((id, segment_id, record_bytes));
        }
        self.commit()?;
        for (id, segment_id, record_bytes) in written {
            self.anchors.anchor(id, segment_id, record_bytes);
        }
        Ok(())
    }

    /// Appends a Sent record; returns its segment and size.
    fn append_sent(&mut self, id: &str, items: &[Vec<u8>]) -> Result<(u64, u64), ProducerError> {
        let body = record::encode_sent(id, items);
        let segment_id = self.append(&body)?;
        Ok((segment_id, body.len() as u64))
    }

    /// Appends one record; returns its segment. A batch at the journal's
    /// bound (its buffer, or the room left in the active segment) is
    /// written first, then the record goes on: every record kind, or a
    /// burst of answers would fail the producer.
    fn append(&mut self, body: &[u8]) -> Result<u64, ProducerError> {
        let (_, segment_id) = match self.journal.append(body) {
            Err(JournalError::BatchFull { .. }) => {
                self.commit()?;
                self.journal.append(body)
            }
            other => other,
        }
        .map_err(|source| journal_error(&self.dir, source))?;
        Ok(segment_id)
    }

    /// Appends an Answered record if the order is on disk (a stream the
    /// broker rejected before its Finish never was). Committed by the next
    /// [`DiskOutbox::commit`].
    pub fn record_answered(&mut self, id: &str, confirmed: bool) -> Result<(), ProducerError> {
        if !self.anchors.release(id) {
            return Ok(());
        }
        self.append(&record::encode_answered(id, confirmed))?;
        Ok(())
    }

    /// Commits what was appended (one write, one fsync), if anything.
    pub fn commit(&mut self) -> Result<(), ProducerError> {
        if self.journal.pending_records() == 0 {
            return Ok(());
        }
        self.journal.commit().map_err(|source| journal_error(&self.dir, source))?;
        Ok(())
    }

    /// Removes old segments as the compaction rule allows (see the module
    /// docs), copying live orders forward from `outbox`, which holds the
    /// items of every live order.
    pub fn compact(&mut self, outbox: &Outbox) -> Result<(), ProducerError> {
        // Each round removes the oldest segment or stops: at most as many
        // rounds as there are segments now.
        for _ in 0..self.journal.segments().len() {
            let segments = self.journal.segments();
            if segments.len() < 2 {
                return Ok(());
            }
            let oldest = segments[0].clone();
            let journal_bytes = segments.iter().map(|segment| segment.bytes).sum();
            let live = self.anchors.live(oldest.id);
            match compaction_step(oldest.bytes, live, journal_bytes, self.budget_bytes) {
                CompactStep::Keep => return Ok(()),
                CompactStep::Remove => {}
                CompactStep::CopyForward => {
                    let ids = self.anchors.ids_in(oldest.id);
                    let orders = ids.iter().map(|id| {
                        let items = outbox.items(id).expect("every live order on disk is in the outbox");
                        (id.as_str(), items)
                    });
                    self.record_sent(orders)?;
                    tracing::debug!(segment_id = oldest.id, orders = live.orders, "outbox: copied live orders forward");
                }
            }
            self.journal.remove_oldest_segment(oldest.id).map_err(|source| journal_error(&self.dir, source))?;
        }
        Ok(())
    }

    /// Live orders on disk.
    #[cfg(test)]
    pub fn live_orders(&self) -> usize {
        self.anchors.len()
    }

    /// Segment files on disk and their total bytes.
    pub fn footprint(&self) -> (usize, u64) {
        let segments = self.journal.segments();
        (segments.len(), segments.iter().map(|segment| segment.bytes).sum())
    }

    /// The outbox directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn journal_error(dir: &Path, source: JournalError) -> ProducerError {
    match source {
        JournalError::Locked { .. } => ProducerError::OutboxLocked { dir: dir.to_path_buf() },
        source => ProducerError::Outbox { dir: dir.to_path_buf(), source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::OutboxConfig;

    const SEGMENT_BYTES: u64 = 4096;

    fn open(dir: &Path) -> (DiskOutbox, Vec<Recovered>) {
        DiskOutbox::open(dir, SEGMENT_BYTES, 1 << 30).expect("the outbox opens")
    }

    /// An order of about 1 KiB: four fit in a test segment.
    fn order(index: usize) -> (String, Vec<Vec<u8>>) {
        (format!("o-{index}"), vec![format!("item {index:<500}").into_bytes(); 2])
    }

    #[test]
    fn sent_but_not_answered_orders_are_recovered_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut disk, live) = open(dir.path());
        assert!(live.is_empty());
        let orders: Vec<_> = (0..3).map(order).collect();
        disk.record_sent(orders.iter().map(|(id, items)| (id.as_str(), items.as_slice()))).unwrap();
        disk.record_answered("o-1", true).unwrap();
        disk.commit().unwrap();
        drop(disk);
        let (_, live) = open(dir.path());
        let ids: Vec<&str> = live.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["o-0", "o-2"]);
        assert_eq!(live[1].items, orders[2].1, "items come back byte for byte");
    }

    #[test]
    fn a_second_open_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path());
        let error = DiskOutbox::open(dir.path(), SEGMENT_BYTES, 1 << 30).unwrap_err();
        assert!(matches!(error, ProducerError::OutboxLocked { .. }), "{error:?}");
        assert!(error.to_string().contains("two producers cannot share an outbox"), "{error}");
    }

    #[test]
    fn compaction_keeps_disk_use_small_and_live_orders_recoverable() {
        let dir = tempfile::tempdir().unwrap();
        let (mut disk, _) = open(dir.path());
        let mut outbox = Outbox::new(OutboxConfig { orders_max: 100_000, ..OutboxConfig::default() });
        // One order never answered, 300 answered behind it (about 75
        // segments' worth): the old one must be copied forward, not pin
        // every segment.
        let stuck = order(0);
        disk.record_sent([(stuck.0.as_str(), stuck.1.as_slice())]).unwrap();
        outbox.insert(stuck.0.clone(), stuck.1.clone(), 0);
        for index in 1..300 {
            let (id, items) = order(index);
            disk.record_sent([(id.as_str(), items.as_slice())]).unwrap();
            outbox.insert(id.clone(), items, 0);
            outbox.answer(&id, Ok(()));
            disk.record_answered(&id, true).unwrap();
            disk.commit().unwrap();
            disk.compact(&outbox).unwrap();
        }
        let (segments, bytes) = disk.footprint();
        assert!(segments <= 3 && bytes <= 3 * SEGMENT_BYTES + 1024, "{segments} segments, {bytes} bytes");
        assert_eq!(disk.live_orders(), 1);
        drop(disk);
        let (_, live) = open(dir.path());
        assert_eq!(live.len(), 1);
        assert_eq!((live[0].id.as_str(), &live[0].items), (stuck.0.as_str(), &stuck.1));
        assert!(live[0].segment_id > 1, "the unanswered order was copied forward out of segment 1");
    }

    /// Answers for more orders than the active segment has room left for,
    /// before any commit (a restart resending a large outbox gets them in
    /// bursts): the full batch is written first, none is refused. Failed
    /// with "batch … cannot take … more: commit first" when only Sent
    /// records were appended that way.
    #[test]
    fn a_burst_of_answers_past_the_segments_room_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (mut disk, _) = open(dir.path());
        let orders: Vec<_> = (0..400).map(|index| (format!("o-{index}"), vec![b"x".to_vec()])).collect();
        disk.record_sent(orders.iter().map(|(id, items)| (id.as_str(), items.as_slice()))).unwrap();
        for (id, _) in &orders {
            disk.record_answered(id, true).unwrap();
        }
        disk.commit().unwrap();
        drop(disk);
        let (_, live) = open(dir.path());
        assert!(live.is_empty(), "every order was answered");
    }

    #[test]
    fn answered_records_for_streams_never_written_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut disk, _) = open(dir.path());
        disk.record_answered("never-on-disk", false).unwrap();
        disk.commit().unwrap();
        assert_eq!(disk.footprint().1, orderly_journal::SEGMENT_HEADER_BYTES as u64);
    }
}
