//! The open journal: append, group commit, roll, replay, compaction support.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{JournalError, ReplayError};
use crate::format::{
    encode_record, frame_in_place, framed_len, record_header_bytes, sector_ceil, RecordHeader, FORMAT_VERSION_V1,
    MARKER_SEQ, RECORD_HEADER_BYTES, SECTOR_BYTES, SEGMENT_ID_FIRST, SEQ_FIRST,
};
use crate::fs::{fsync_dir, lock_dir};
use crate::inspect::{inspect, SegmentInfo};
use crate::limits::BATCH_BUFFER_RETAINED_BYTES_MAX;
use crate::options::{FsyncPolicy, Options};
use crate::recover::{recover, Recovery};
use crate::scan::{scan_segment, ScanSpec};
use crate::space::{self, Reserve, SpaceState};
use crate::storage::{LockGuard, Storage, StorageFile};

/// Under `always`, records of a lazy commit are fsynced at the latest this
/// long after the previous fsync (by a later commit).
pub const LAZY_SYNC_MAX: std::time::Duration = std::time::Duration::from_millis(10);

/// Whether a commit's records must be durable before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// As the fsync policy says (`always`: fsynced).
    Now,
    /// See [`Journal::commit_lazily`].
    Lazy,
}

/// What one `commit` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// Records written.
    pub records: u64,
    /// Bytes written (framing included), in one write.
    pub bytes: u64,
    /// Whether the segment was fsynced: with `FsyncPolicy::Always`, true
    /// whenever something was written.
    pub fsynced: bool,
    /// Whether a new segment was started first.
    pub rolled: bool,
    /// The segment written to (the active segment after the commit).
    pub segment_id: u64,
}

/// Where the batch being buffered will be written, decided at its first
/// append so that `append` can say which segment a record lands in.
#[derive(Debug, Clone, Copy)]
struct BatchTarget {
    segment_id: u64,
    /// A new segment is created for this batch.
    fresh: bool,
    /// The durable watermark the batch's frames carry: every byte of the
    /// target segment below it is durable already.
    durable: u64,
}

/// Records appended since the last commit, already framed.
#[derive(Debug, Default)]
struct Batch {
    bytes: Vec<u8>,
    records: u64,
    target: Option<BatchTarget>,
}

/// A segmented, append-only log of opaque byte records in one directory,
/// held exclusively (see the crate docs for the format and the rules).
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    options: Options,
    storage: Arc<dyn Storage>,
    /// Holds the directory lock while the journal is open.
    _lock: LockGuard,
    /// Every segment on disk, oldest first; never empty. The last is active.
    segments: Vec<SegmentInfo>,
    active_file: Box<dyn StorageFile>,
    /// Bytes of the active segment known durable: the watermark new frames
    /// carry.
    active_synced: u64,
    /// Length the active segment is preallocated to.
    active_allocated: u64,
    /// Below this offset the active segment's blocks have been written
    /// (records, or zeros written ahead: see `Options::zero_ahead_bytes`).
    active_zeroed: u64,
    /// Commits of at most `ZERO_AHEAD_COMMIT_BYTES_MAX` in a row (up to
    /// `ZERO_AHEAD_AFTER_SMALL_COMMITS`): zeros are written ahead only
    /// once the journal is quiet enough for its commits to be small.
    small_commits: u32,
    /// The next segment, preallocated ahead of need.
    reserve: Reserve,
    /// Seq the next `append` gets.
    next_seq: u64,
    batch: Batch,
    roll_requested: bool,
    /// The active segment has writes not yet fsynced.
    unsynced: bool,
    last_sync: Instant,
    /// A write or fsync failed: see `JournalError::Poisoned`.
    poisoned: bool,
    /// Where the last marker of the active segment says everything before
    /// is durable (0: none yet).
    marker_at: u64,
    /// Read handles for [`Journal::read_at`], by segment id.
    readers: HashMap<u64, Box<dyn StorageFile>>,
}

/// Empties a batch buffer for the next batch, keeping its allocation only
/// up to `BATCH_BUFFER_RETAINED_BYTES_MAX`. A larger one (a burst, a
/// compaction's copies) is dropped, not shrunk: an allocator may keep a
/// block shrunk to over half its size whole (mimalloc does), so one burst
/// of 12 MiB would stay 12 MiB of RSS for good.
fn recycle(bytes: &mut Vec<u8>) {
    bytes.clear();
    if bytes.capacity() > BATCH_BUFFER_RETAINED_BYTES_MAX {
        *bytes = Vec::with_capacity(BATCH_BUFFER_RETAINED_BYTES_MAX);
    }
}

/// Where a record is: its seq, its segment and its byte offset there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordAt {
    pub seq: u64,
    pub segment: u64,
    pub offset: u64,
}

impl Journal {
    /// Takes the directory lock (fails at once with `Locked` if it is held),
    /// creates the directory if needed, recovers (cutting off a torn tail,
    /// refusing corruption), makes durable everything it will replay, and
    /// returns the journal ready to append with a report of what recovery
    /// did. On the real file system: see [`Journal::open_on`].
    pub fn open(dir: &Path, options: Options) -> Result<(Journal, Recovery), JournalError> {
        Journal::open_on(crate::storage::os(), dir, options)
    }

    /// [`Journal::open`] on any [`Storage`] (the simulation's disk).
    pub fn open_on(
        storage: Arc<dyn Storage>,
        dir: &Path,
        options: Options,
    ) -> Result<(Journal, Recovery), JournalError> {
        options.validate()?;
        create_dir_if_missing(storage.as_ref(), dir)?;
        let lock = lock_dir(storage.as_ref(), dir)?;
        let inspection = inspect(storage.as_ref(), dir, options.record_bytes_max)?;
        let recovered = recover(storage.as_ref(), dir, inspection)?;
        let recovery = Recovery {
            records: recovered.segments.iter().map(|segment| segment.records).sum(),
            segments: recovered.segments.len(),
            truncated: recovered.truncated,
        };
        // What recovery read may sit in the page cache only (a process killed
        // before its fsync): make it durable before anything is confirmed
        // from it. After a failed fsync Linux marks the unwritten pages clean
        // ("fsyncgate"): an fsync now would succeed without writing them, so
        // the last segment (the only one written after its last good fsync)
        // is written again first.
        let last = recovered.segments.len().saturating_sub(1);
        for (i, segment) in recovered.segments.iter().enumerate() {
            let file = storage.open(&segment.path, i == last).map_err(JournalError::io(&segment.path))?;
            if i == last {
                rewrite(file.as_ref(), segment.bytes).map_err(JournalError::io(&segment.path))?;
            }
            file.sync_all().map_err(JournalError::io(&segment.path))?;
        }
        fsync_dir(storage.as_ref(), dir)?;
        let mut journal = Journal {
            dir: dir.to_path_buf(),
            reserve: Reserve::new(dir),
            storage,
            _lock: lock,
            active_file: Box::new(space::Closed),
            active_synced: 0,
            active_allocated: 0,
            active_zeroed: 0,
            small_commits: 0,
            next_seq: SEQ_FIRST,
            segments: Vec::new(),
            batch: Batch::default(),
            roll_requested: false,
            unsynced: false,
            last_sync: Instant::now(),
            poisoned: false,
            marker_at: 0,
            readers: HashMap::new(),
            options,
        };
        journal.take_segments(recovered.segments, recovered.removed_segment_id)?;
        tracing::info!(
            dir = %dir.display(), records = recovery.records, segments = journal.segments.len(),
            next_seq = journal.next_seq, "journal: opened"
        );
        Ok((journal, recovery))
    }

    /// Continues from the recovered segments: appends go to the last one, or
    /// to a new one if there is none or the last is of format version 1
    /// (only version 2 is written). A marker then witnesses that everything
    /// replayed is durable, so damage to it later is corruption, never a cut.
    fn take_segments(&mut self, segments: Vec<SegmentInfo>, removed: Option<u64>) -> Result<(), JournalError> {
        self.segments = segments;
        self.reserve.find(self.storage.as_ref(), self.options.segment_bytes_target);
        match self.segments.last() {
            Some(last) if last.version != FORMAT_VERSION_V1 => {
                self.active_file = self.storage.open(&last.path, true).map_err(JournalError::io(&last.path))?;
                self.active_allocated = self.active_file.len().map_err(JournalError::io(&last.path))?;
                self.active_synced = sector_ceil(last.bytes);
                self.active_zeroed = sector_ceil(last.bytes);
                self.next_seq = last.next_seq();
                if last.records > 0 {
                    self.seal()?;
                }
            }
            Some(last) => {
                let (id, first_seq) = (last.id + 1, last.next_seq());
                self.start_segment(id, first_seq)?;
            }
            None => self.start_segment(removed.unwrap_or(SEGMENT_ID_FIRST), SEQ_FIRST)?,
        }
        self.reserve.refill(self.storage.as_ref(), self.options.segment_bytes_target);
        Ok(())
    }

    /// Streams every committed record in order to `f(seq, segment_id, body)`,
    /// reading the segments again and checking every CRC: memory use is one
    /// record, whatever the journal's size. Records appended but not yet
    /// committed are not replayed.
    pub fn replay<E>(&self, mut f: impl FnMut(u64, u64, &[u8]) -> Result<(), E>) -> Result<(), ReplayError<E>> {
        self.replay_located(|at, body| f(at.seq, at.segment, body))
    }

    /// [`Journal::replay`], telling where each record is (for
    /// [`Journal::read_at`]).
    pub fn replay_located<E>(&self, mut f: impl FnMut(RecordAt, &[u8]) -> Result<(), E>) -> Result<(), ReplayError<E>> {
        let mut expected_first_seq = None;
        for segment in &self.segments {
            let spec = ScanSpec {
                storage: self.storage.as_ref(),
                path: &segment.path,
                segment_id: segment.id,
                expected_first_seq,
                bytes_limit: Some(segment.bytes),
                record_bytes_max: self.options.record_bytes_max,
            };
            let scan =
                scan_segment(&spec, &mut |seq, offset, body| f(RecordAt { seq, segment: segment.id, offset }, body))?;
            // These bytes were good when the journal was opened or written:
            // a defect now means they changed under us.
            if let Some(defect) = scan.defect {
                let file = segment.path.clone();
                return Err(JournalError::Corrupt { file, offset: defect.offset, reason: defect.reason }.into());
            }
            expected_first_seq = Some(segment.next_seq());
        }
        Ok(())
    }

    /// Buffers one record (validated against the limits first) and returns
    /// `(seq, segment_id)`: its sequence number and the segment it will be
    /// written to by the next `commit`. Nothing is written until then.
    pub fn append(&mut self, body: &[u8]) -> Result<(u64, u64), JournalError> {
        self.append_located(body).map(|at| (at.seq, at.segment))
    }

    /// [`Journal::append`], returning where the record will be once
    /// committed (for [`Journal::read_at`]).
    pub fn append_located(&mut self, body: &[u8]) -> Result<RecordAt, JournalError> {
        self.append_located_with(|buffer| buffer.extend_from_slice(body))
    }

    /// [`Journal::append_located`] for a body that `encode` appends to the
    /// batch buffer itself (it must only append), so the body is written
    /// once, where it will be framed, instead of built in a `Vec` of its own
    /// and copied. The framing is written around it afterwards. A body over
    /// a limit is taken out again and refused with the same error as by
    /// [`Journal::append`]: nothing of it reaches the disk.
    pub fn append_located_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<RecordAt, JournalError> {
        self.check_usable()?;
        let pending = self.batch.bytes.len();
        let frame_at = pending + frame_padding(pending as u64);
        let body_at = frame_at + RECORD_HEADER_BYTES;
        self.batch.bytes.resize(body_at, 0);
        encode(&mut self.batch.bytes);
        assert!(self.batch.bytes.len() >= body_at, "an append's encoder may only append to the batch");
        let body_len = self.batch.bytes.len() - body_at;
        if let Err(error) = self.check_room(pending as u64, body_len) {
            self.batch.bytes.truncate(pending);
            if pending == 0 {
                recycle(&mut self.batch.bytes);
            } else {
                self.batch.bytes.shrink_to(BATCH_BUFFER_RETAINED_BYTES_MAX);
            }
            return Err(error);
        }
        let record_bytes = (self.batch.bytes.len() - pending) as u64;
        let target = self.batch_target(record_bytes);
        let seq = self.next_seq;
        let base = if target.fresh {
            sector_ceil(crate::format::SEGMENT_HEADER_BYTES as u64)
        } else {
            sector_ceil(self.active().bytes)
        };
        frame_in_place(seq, target.durable, &mut self.batch.bytes[frame_at..]);
        self.batch.records += 1;
        self.next_seq += 1;
        Ok(RecordAt { seq, segment: target.segment_id, offset: base + frame_at as u64 })
    }

    /// Whether a body of `body_len` bytes may join a batch of `pending_bytes`:
    /// the record limit, the batch limit, and the preallocated room.
    fn check_room(&self, pending_bytes: u64, body_len: usize) -> Result<(), JournalError> {
        let max = self.options.record_bytes_max;
        if body_len as u64 > u64::from(max) {
            return Err(JournalError::RecordTooLarge { len: body_len as u64, max });
        }
        let record_bytes = framed_len(body_len) + frame_padding(pending_bytes) as u64;
        if pending_bytes + record_bytes > self.options.batch_bytes_max {
            return Err(JournalError::BatchFull { pending_bytes, record_bytes, max: self.options.batch_bytes_max });
        }
        if let Some(target) = self.batch.target {
            // Inside the preallocated space a commit cannot meet a full disk:
            // a batch that would pass its end is cut here (the next batch
            // starts a new segment, from the reserve), not extended.
            let room = self.preallocated_room(target);
            if sector_ceil(pending_bytes) <= room && sector_ceil(pending_bytes + record_bytes) > room {
                return Err(JournalError::BatchFull { pending_bytes, record_bytes, max: room });
            }
        }
        Ok(())
    }

    /// The batch buffer's capacity (tests of its bound).
    #[cfg(test)]
    pub(crate) fn batch_capacity(&self) -> usize {
        self.batch.bytes.capacity()
    }

    /// Reads back one committed record, checking its framing and CRC (a
    /// mismatch is `Corrupt`: the bytes changed since they were written).
    /// One positioned read; the file handle of a segment is kept open for
    /// the next read.
    pub fn read_at(&mut self, at: RecordAt) -> Result<Vec<u8>, JournalError> {
        let Some(info) = self.segments.iter().find(|s| s.id == at.segment) else {
            return Err(JournalError::Corrupt {
                file: self.dir.join(crate::format::segment_file_name(at.segment)),
                offset: at.offset,
                reason: format!("record {} is in segment {}, which no longer exists", at.seq, at.segment),
            });
        };
        let path = info.path.clone();
        let committed = info.bytes;
        let version = info.version;
        let framing_len = record_header_bytes(version);
        let corrupt = |reason: String| JournalError::Corrupt { file: path.clone(), offset: at.offset, reason };
        if at.offset + framing_len as u64 > committed {
            return Err(corrupt(format!("record {} is past the committed end ({committed} bytes)", at.seq)));
        }
        let file = match self.readers.entry(at.segment) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(self.storage.open(&path, false).map_err(JournalError::io(&path))?)
            }
        };
        let mut framing = [0u8; RECORD_HEADER_BYTES];
        let framing = &mut framing[..framing_len];
        file.read_exact_at(framing, at.offset).map_err(JournalError::io(&path))?;
        let header = RecordHeader::decode(version, framing);
        if header.seq != at.seq {
            return Err(corrupt(format!("expected record {} here, found seq {}", at.seq, header.seq)));
        }
        let end = at.offset + (framing_len + header.len as usize) as u64;
        if header.len > self.options.record_bytes_max || end > committed {
            return Err(corrupt(format!("record {} has a bad length {}", at.seq, header.len)));
        }
        let mut body = vec![0u8; header.len as usize];
        file.read_exact_at(&mut body, at.offset + framing_len as u64).map_err(JournalError::io(&path))?;
        let computed = header.expected_crc(version, &body);
        if computed != header.crc {
            return Err(corrupt(format!("record {} CRC {:#010x} != stored {:#010x}", at.seq, computed, header.crc)));
        }
        Ok(body)
    }

    /// Group commit with the wall clock: see [`Journal::commit_at`].
    pub fn commit(&mut self) -> Result<CommitInfo, JournalError> {
        self.commit_at(Instant::now())
    }

    /// Group commit: starts a new segment first if the batch needs one, then
    /// ONE write of everything buffered and, as the fsync policy says (`now`
    /// is compared with the last fsync for `Interval`), ONE fsync. With
    /// `FsyncPolicy::Always`, every appended record is durable after `Ok`.
    /// After an error the buffered records are lost, the journal refuses
    /// further use (`Poisoned`) and must be reopened.
    pub fn commit_at(&mut self, now: Instant) -> Result<CommitInfo, JournalError> {
        self.commit_with(now, Durability::Now)
    }

    /// A commit whose records nobody waits on: written at once, but under
    /// `always` fsynced only if the last fsync is older than
    /// [`LAZY_SYNC_MAX`] (the next [`Journal::commit`] or
    /// [`Journal::sync`] covers them anyway, the journal being sequential).
    /// For records that promise nothing (an acknowledgement, a dispatch):
    /// a power loss can lose the last few milliseconds of them, which means
    /// a redelivery, never a lost order. `interval` and `never` behave as in
    /// [`Journal::commit`].
    pub fn commit_lazily(&mut self) -> Result<CommitInfo, JournalError> {
        self.commit_lazily_at(Instant::now())
    }

    /// [`Journal::commit_lazily`] with the caller's clock (the simulation's
    /// virtual time, so whether it fsyncs follows the seed).
    pub fn commit_lazily_at(&mut self, now: Instant) -> Result<CommitInfo, JournalError> {
        self.commit_with(now, Durability::Lazy)
    }

    /// Under `always`: fsyncs what lazy commits left unsynced once
    /// [`LAZY_SYNC_MAX`] has passed since the last fsync (a caller that may
    /// go idle calls this now and then). Returns whether it fsynced.
    pub fn sync_lazy_due(&mut self) -> Result<bool, JournalError> {
        self.sync_lazy_due_at(Instant::now())
    }

    /// [`Journal::sync_lazy_due`] with the caller's clock.
    pub fn sync_lazy_due_at(&mut self, now: Instant) -> Result<bool, JournalError> {
        if self.options.fsync != FsyncPolicy::Always || !self.unsynced {
            return Ok(false);
        }
        if now.saturating_duration_since(self.last_sync) < LAZY_SYNC_MAX {
            return Ok(false);
        }
        self.sync_at(now)
    }

    /// Written records await an fsync.
    pub fn has_unsynced(&self) -> bool {
        self.unsynced
    }

    fn commit_with(&mut self, now: Instant, durability: Durability) -> Result<CommitInfo, JournalError> {
        self.check_usable()?;
        let result = self.write_batch(now, durability);
        // NoSpace is returned before anything was written (the batch is kept):
        // the state is known, so the journal stays usable.
        if matches!(result, Err(ref error) if !matches!(error, JournalError::NoSpace { .. })) {
            self.poisoned = true;
        }
        result
    }

    /// Fsyncs the active segment if it has unsynced writes (for `Interval` or
    /// `Never`, e.g. at shutdown). Returns whether it fsynced. An error
    /// poisons the journal: the kernel may have dropped the pages.
    pub fn sync(&mut self) -> Result<bool, JournalError> {
        self.sync_at(Instant::now())
    }

    fn sync_at(&mut self, now: Instant) -> Result<bool, JournalError> {
        self.check_usable()?;
        if !self.unsynced {
            return Ok(false);
        }
        let result = self.sync_active(now);
        if result.is_err() {
            self.poisoned = true;
        }
        result.map(|()| true)
    }

    /// Fsyncs what is unsynced, then writes and fsyncs a marker frame saying
    /// that everything before it is durable, so a later flip anywhere in the
    /// segment is corruption rather than a torn tail. For a clean shutdown
    /// (`open` seals too). Returns whether it wrote a marker.
    pub fn seal(&mut self) -> Result<bool, JournalError> {
        self.check_usable()?;
        let result = self.write_marker();
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    /// [`Journal::seal`], then releases the journal and its lock.
    pub fn close(mut self) -> Result<(), JournalError> {
        self.seal().map(drop)
    }

    /// Makes the next batch (the records appended after the current batch is
    /// committed) go to a fresh segment, and a `commit` with nothing buffered
    /// create that segment anyway. For compaction: commit, `roll`, append the
    /// live records, commit, then remove the old segments. If records are
    /// buffered when it is called, they (and any appended before the next
    /// commit) stay in the segment `append` named.
    pub fn roll(&mut self) {
        self.roll_requested = true;
    }

    /// Deletes the oldest segment, which must be `segment_id` and must not be
    /// the active one, and fsyncs the directory. Everything committed before
    /// (the copies that replace the segment's live records, even those of a
    /// lazy commit) is fsynced first, whatever the policy. Naming the segment
    /// guards against deleting one the caller did not mean. Returns what was
    /// deleted; the freed space is offered to the reserve.
    pub fn remove_oldest_segment(&mut self, segment_id: u64) -> Result<SegmentInfo, JournalError> {
        self.check_usable()?;
        let oldest = &self.segments[0];
        let refuse = |reason: String| Err(JournalError::RemoveRefused { segment_id, reason });
        if oldest.id != segment_id {
            return refuse(format!("the oldest segment is {}", oldest.id));
        }
        if self.segments.len() == 1 {
            return refuse("it is the active segment".to_string());
        }
        let result = self.remove_oldest();
        if result.is_err() {
            self.poisoned = true;
        }
        let removed = result?;
        self.reserve.refill(self.storage.as_ref(), self.options.segment_bytes_target);
        tracing::info!(segment_id, records = removed.records, "journal: removed oldest segment");
        Ok(removed)
    }

    fn remove_oldest(&mut self) -> Result<SegmentInfo, JournalError> {
        if self.unsynced {
            self.sync_active(Instant::now())?;
        }
        let path = self.segments[0].path.clone();
        self.storage.remove_file(&path).map_err(JournalError::io(&path))?;
        self.readers.remove(&self.segments[0].id);
        let removed = self.segments.remove(0);
        fsync_dir(self.storage.as_ref(), &self.dir)?;
        Ok(removed)
    }

    /// Whether the journal can still take new segments: `Low` once the
    /// reserve is used up and could not be made again (the disk is full).
    /// See the crate docs ("Full disk").
    pub fn space(&self) -> SpaceState {
        let room = self.active_allocated.saturating_sub(sector_ceil(self.active().bytes));
        self.reserve.state(room)
    }

    /// Tries again to preallocate the reserve (after space was freed) and
    /// says the space state after the attempt. Never poisons.
    pub fn retry_reserve(&mut self) -> SpaceState {
        self.reserve.refill(self.storage.as_ref(), self.options.segment_bytes_target);
        self.space()
    }

    /// Segments on disk, oldest first; the last is the active one. Sizes and
    /// record counts cover committed records only.
    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    /// Id of the segment on disk that commits currently write to.
    pub fn active_segment(&self) -> u64 {
        self.active().id
    }

    /// Seq the next `append` returns.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes appended and not yet committed (framing included).
    pub fn pending_bytes(&self) -> u64 {
        self.batch.bytes.len() as u64
    }

    /// Records appended and not yet committed.
    pub fn pending_records(&self) -> u64 {
        self.batch.records
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Whether an earlier write or fsync failed (every call now fails with
    /// `Poisoned`; reopen to recover).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn check_usable(&self) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned { dir: self.dir.clone() });
        }
        Ok(())
    }

    fn active(&self) -> &SegmentInfo {
        self.segments.last().expect("a journal always has an active segment")
    }

    /// Decides, at the first append of a batch, where the batch goes. An
    /// empty segment never rolls for size (that would only leave an empty
    /// segment behind).
    /// A record that would pass the active segment's preallocated end
    /// starts a new segment too (so the commit needs no extension).
    fn batch_target(&mut self, record_bytes: u64) -> BatchTarget {
        if let Some(target) = self.batch.target {
            return target;
        }
        let active = self.active();
        let room = self.active_allocated.saturating_sub(sector_ceil(active.bytes));
        let overflows = room > 0 && sector_ceil(record_bytes) > room;
        let full = active.records > 0 && (active.bytes >= self.options.segment_bytes_target || overflows);
        let fresh = self.roll_requested || full;
        let target = if fresh {
            BatchTarget { segment_id: active.id + 1, fresh, durable: crate::format::FIRST_RECORD_OFFSET_V2 }
        } else {
            BatchTarget { segment_id: active.id, fresh, durable: self.active_synced }
        };
        self.roll_requested &= !fresh;
        self.batch.target = Some(target);
        target
    }

    /// Preallocated bytes a batch for `target` can take without extending
    /// its segment.
    fn preallocated_room(&self, target: BatchTarget) -> u64 {
        if target.fresh {
            self.options.segment_bytes_target.saturating_sub(crate::format::FIRST_RECORD_OFFSET_V2)
        } else {
            self.active_allocated.saturating_sub(sector_ceil(self.active().bytes))
        }
    }

    fn write_batch(&mut self, now: Instant, durability: Durability) -> Result<CommitInfo, JournalError> {
        let mut batch = std::mem::take(&mut self.batch);
        let rolled = match batch.target {
            Some(target) => target.fresh,
            None => std::mem::take(&mut self.roll_requested),
        };
        if rolled {
            if let Err(error) = self.roll_now() {
                self.batch = batch;
                self.roll_requested |= self.batch.target.is_none();
                return Err(error);
            }
            // Rolled: a retry after a failure below must not roll again.
            if let Some(target) = batch.target.as_mut() {
                target.fresh = false;
            }
        }
        if !batch.bytes.is_empty() {
            if let Err(error) = self.write_frames(&mut batch.bytes, batch.records) {
                self.batch = batch;
                return Err(error);
            }
        }
        let fsynced = self.sync_per_policy(now, durability)?;
        let info = CommitInfo {
            records: batch.records,
            bytes: batch.bytes.len() as u64,
            fsynced,
            rolled,
            segment_id: self.active().id,
        };
        recycle(&mut batch.bytes);
        self.batch.bytes = batch.bytes;
        Ok(info)
    }

    /// One write of whole sectors at the next sector boundary. Past the
    /// preallocated length the file is extended first; a full disk there is
    /// `NoSpace` with nothing written. A small commit past the zeros
    /// written so far writes zeros ahead in the same write.
    fn write_frames(&mut self, bytes: &mut Vec<u8>, records: u64) -> Result<(), JournalError> {
        bytes.resize(sector_ceil(bytes.len() as u64) as usize, 0);
        let at = sector_ceil(self.active().bytes);
        let end = at + bytes.len() as u64;
        let path = self.active().path.clone();
        if end > self.active_allocated {
            self.active_file.allocate(end).map_err(|source| space::no_space_or_io(&path, source))?;
            self.active_allocated = end;
        }
        let frames = bytes.len();
        self.small_commits = match frames as u64 <= crate::limits::ZERO_AHEAD_COMMIT_BYTES_MAX {
            true => (self.small_commits + 1).min(crate::limits::ZERO_AHEAD_AFTER_SMALL_COMMITS),
            false => 0,
        };
        let zeros_to =
            zero_ahead_end(end, self.small_commits, self.active_zeroed, self.active_allocated, &self.options);
        bytes.resize((zeros_to - at) as usize, 0);
        let written = self.active_file.write_all_at(bytes, at);
        bytes.truncate(frames);
        written.map_err(JournalError::io(&path))?;
        self.active_zeroed = self.active_zeroed.max(zeros_to);
        let active = self.segments.last_mut().expect("a journal always has an active segment");
        active.bytes = end;
        active.records += records;
        self.unsynced = true;
        Ok(())
    }

    /// Syncs, then writes a marker frame carrying the durable end, and syncs
    /// it. Nothing to do when the last frame already says all there is.
    fn write_marker(&mut self) -> Result<bool, JournalError> {
        if self.unsynced {
            self.sync_active(Instant::now())?;
        }
        let end = sector_ceil(self.active().bytes);
        if self.active().records == 0 || self.active_witnessed() >= end {
            return Ok(false);
        }
        let mut frame = Vec::with_capacity(SECTOR_BYTES as usize);
        encode_record(MARKER_SEQ, end, &[], &mut frame);
        self.write_frames(&mut frame, 0)?;
        self.sync_active(Instant::now())?;
        self.marker_at = end;
        Ok(true)
    }

    fn active_witnessed(&self) -> u64 {
        self.marker_at
    }

    fn sync_per_policy(&mut self, now: Instant, durability: Durability) -> Result<bool, JournalError> {
        let due = match self.options.fsync {
            FsyncPolicy::Always if durability == Durability::Lazy => {
                now.saturating_duration_since(self.last_sync) >= LAZY_SYNC_MAX
            }
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(interval) => now.saturating_duration_since(self.last_sync) >= interval,
            FsyncPolicy::Never => false,
        };
        if !(self.unsynced && due) {
            return Ok(false);
        }
        self.sync_active(now)?;
        Ok(true)
    }

    fn sync_active(&mut self, now: Instant) -> Result<(), JournalError> {
        // fdatasync: the data and the file size, which is all a reader needs.
        self.active_file.sync_data().map_err(JournalError::io(&self.active().path))?;
        self.unsynced = false;
        self.active_synced = self.active().bytes;
        self.last_sync = now;
        Ok(())
    }

    /// Closes the active segment and starts the next. The closing segment is
    /// fsynced first whatever the policy: once a later segment exists, a torn
    /// record in it would be corruption, not a torn tail. `NoSpace` (no
    /// reserve, and no room for a new segment) leaves everything as it was.
    fn roll_now(&mut self) -> Result<(), JournalError> {
        if self.unsynced {
            self.sync_active(Instant::now())?;
        }
        let active = self.active();
        let (id, first_seq) = (active.id + 1, active.next_seq());
        self.start_segment(id, first_seq)?;
        self.reserve.refill(self.storage.as_ref(), self.options.segment_bytes_target);
        Ok(())
    }

    /// Creates segment `id` (from the reserve if there is one) and makes it
    /// the active segment.
    fn start_segment(&mut self, id: u64, first_seq: u64) -> Result<(), JournalError> {
        let target = self.options.segment_bytes_target;
        let (file, info, allocated) =
            space::create_segment(self.storage.as_ref(), &mut self.reserve, id, first_seq, target)?;
        tracing::debug!(segment_id = info.id, first_seq = info.first_seq, "journal: new segment");
        self.segments.push(info);
        self.active_file = file;
        self.active_allocated = allocated;
        self.active_synced = crate::format::FIRST_RECORD_OFFSET_V2;
        self.active_zeroed = crate::format::FIRST_RECORD_OFFSET_V2;
        self.marker_at = 0;
        self.next_seq = first_seq.max(self.next_seq);
        Ok(())
    }
}

/// Writes the first `len` bytes of `file` again, as they read now: pages
/// a failed fsync left clean become dirty, so the next fsync writes them.
fn rewrite(file: &dyn StorageFile, len: u64) -> std::io::Result<()> {
    let mut buffer = vec![0u8; crate::limits::READ_BUFFER_BYTES.min(len as usize)];
    let mut at = 0;
    while at < len {
        let take = (len - at).min(buffer.len() as u64) as usize;
        let chunk = &mut buffer[..take];
        file.read_exact_at(chunk, at)?;
        file.write_all_at(chunk, at)?;
        at += chunk.len() as u64;
    }
    Ok(())
}

/// Where a commit ending at `end` ends its write: at `end`, or, when the
/// journal is quiet (`small_commits`, this one included, reached
/// `ZERO_AHEAD_AFTER_SMALL_COMMITS`) and the commit runs past the zeros
/// written so far (`zeroed`), `zero_ahead_bytes` further (whole sectors,
/// never past the preallocated length): see `Options::zero_ahead_bytes`.
pub(crate) fn zero_ahead_end(end: u64, small_commits: u32, zeroed: u64, allocated: u64, options: &Options) -> u64 {
    let ahead = options.zero_ahead_bytes;
    if ahead == 0 || end <= zeroed || small_commits < crate::limits::ZERO_AHEAD_AFTER_SMALL_COMMITS {
        return end;
    }
    let to = (end + ahead).min(allocated);
    (to - to % SECTOR_BYTES).max(end)
}

/// Zeros needed before a frame at `pending` bytes into a batch (which starts
/// on a sector boundary) so the frame does not straddle a boundary: a torn
/// write then never splits a frame's fields.
fn frame_padding(pending: u64) -> usize {
    let into_sector = pending % SECTOR_BYTES;
    let left = SECTOR_BYTES - into_sector;
    if into_sector != 0 && left < RECORD_HEADER_BYTES as u64 {
        left as usize
    } else {
        0
    }
}

/// Creates the journal directory (and its parents) if it does not exist, and
/// fsyncs the parent so the directory itself survives a crash.
fn create_dir_if_missing(storage: &dyn Storage, dir: &Path) -> Result<(), JournalError> {
    if storage.is_dir(dir) {
        return Ok(());
    }
    storage.create_dir_all(dir).map_err(JournalError::io(dir))?;
    match dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        Some(parent) => fsync_dir(storage, parent),
        None => fsync_dir(storage, Path::new(".")),
    }
}
