//! The open journal: append, group commit, roll, replay, compaction support.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{JournalError, ReplayError};
use crate::format::{
    encode_header, encode_record, framed_len, record_crc, segment_file_name, RecordHeader, SegmentHeader,
    RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SEGMENT_ID_FIRST, SEQ_FIRST,
};
use crate::fs::{fsync_dir, lock_dir};
use crate::inspect::{inspect, SegmentInfo};
use crate::options::{FsyncPolicy, Options};
use crate::recover::{recover, Recovery};
use crate::scan::{scan_segment, ScanSpec};

/// Capacity the batch buffer keeps between commits; a larger one (after a
/// batch of big records) is given back, so one burst does not pin memory.
const BATCH_BUFFER_RETAINED_BYTES_MAX: usize = 8 * 1024 * 1024;

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
    /// Holds the directory lock while the journal is open.
    _lock: File,
    /// Every segment on disk, oldest first; never empty. The last is active.
    segments: Vec<SegmentInfo>,
    active_file: File,
    /// Seq the next `append` gets.
    next_seq: u64,
    batch: Batch,
    roll_requested: bool,
    /// The active segment has writes not yet fsynced.
    unsynced: bool,
    last_sync: Instant,
    /// A write or fsync failed: see `JournalError::Poisoned`.
    poisoned: bool,
    /// Read handles for [`Journal::read_at`], by segment id.
    readers: std::collections::HashMap<u64, File>,
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
    /// refusing corruption), and returns the journal ready to append with a
    /// report of what recovery did.
    pub fn open(dir: &Path, options: Options) -> Result<(Journal, Recovery), JournalError> {
        options.validate()?;
        create_dir_if_missing(dir)?;
        let lock = lock_dir(dir)?;
        let recovered = recover(dir, inspect(dir, options.record_bytes_max)?)?;
        let recovery = Recovery {
            records: recovered.segments.iter().map(|segment| segment.records).sum(),
            segments: recovered.segments.len(),
            truncated: recovered.truncated,
        };
        let mut segments = recovered.segments;
        let active_file = match segments.last() {
            Some(last) => open_for_append(&last.path)?,
            None => {
                let segment_id = recovered.removed_segment_id.unwrap_or(SEGMENT_ID_FIRST);
                let (file, info) = create_segment(dir, segment_id, SEQ_FIRST)?;
                segments.push(info);
                file
            }
        };
        let next_seq = segments.last().map_or(SEQ_FIRST, SegmentInfo::next_seq);
        tracing::info!(dir = %dir.display(), records = recovery.records, segments = segments.len(), next_seq, "journal: opened");
        let journal = Journal {
            dir: dir.to_path_buf(),
            options,
            _lock: lock,
            segments,
            active_file,
            next_seq,
            batch: Batch::default(),
            roll_requested: false,
            unsynced: false,
            last_sync: Instant::now(),
            poisoned: false,
            readers: std::collections::HashMap::new(),
        };
        Ok((journal, recovery))
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
        self.check_usable()?;
        let max = self.options.record_bytes_max;
        if body.len() as u64 > u64::from(max) {
            return Err(JournalError::RecordTooLarge { len: body.len() as u64, max });
        }
        let pending_bytes = self.batch.bytes.len() as u64;
        let record_bytes = framed_len(body.len());
        if pending_bytes + record_bytes > self.options.batch_bytes_max {
            return Err(JournalError::BatchFull { pending_bytes, record_bytes, max: self.options.batch_bytes_max });
        }
        let target = self.batch_target();
        let seq = self.next_seq;
        encode_record(seq, body, &mut self.batch.bytes);
        self.batch.records += 1;
        self.next_seq += 1;
        Ok((seq, target.segment_id))
    }

    /// [`Journal::append`], returning where the record will be once
    /// committed (for [`Journal::read_at`]).
    pub fn append_located(&mut self, body: &[u8]) -> Result<RecordAt, JournalError> {
        let before = self.batch.bytes.len() as u64;
        let (seq, segment) = self.append(body)?;
        let base = match self.batch.target {
            Some(BatchTarget { fresh: true, .. }) => SEGMENT_HEADER_BYTES as u64,
            _ => self.active().bytes,
        };
        Ok(RecordAt { seq, segment, offset: base + before })
    }

    /// Reads back one committed record, checking its framing and CRC (a
    /// mismatch is `Corrupt`: the bytes changed since they were written).
    /// One positioned read; the file handle of a segment is kept open for
    /// the next read.
    pub fn read_at(&mut self, at: RecordAt) -> Result<Vec<u8>, JournalError> {
        use std::os::unix::fs::FileExt;
        let Some(info) = self.segments.iter().find(|s| s.id == at.segment) else {
            return Err(JournalError::Corrupt {
                file: self.dir.join(crate::format::segment_file_name(at.segment)),
                offset: at.offset,
                reason: format!("record {} is in segment {}, which no longer exists", at.seq, at.segment),
            });
        };
        let path = info.path.clone();
        let committed = info.bytes;
        let corrupt = |reason: String| JournalError::Corrupt { file: path.clone(), offset: at.offset, reason };
        if at.offset + RECORD_HEADER_BYTES as u64 > committed {
            return Err(corrupt(format!("record {} is past the committed end ({committed} bytes)", at.seq)));
        }
        let file = match self.readers.entry(at.segment) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(File::open(&path).map_err(JournalError::io(&path))?)
            }
        };
        let mut framing = [0u8; RECORD_HEADER_BYTES];
        file.read_exact_at(&mut framing, at.offset).map_err(JournalError::io(&path))?;
        let header = RecordHeader::decode(&framing);
        if header.seq != at.seq {
            return Err(corrupt(format!("expected record {} here, found seq {}", at.seq, header.seq)));
        }
        let end = at.offset + framed_len(header.len as usize);
        if header.len > self.options.record_bytes_max || end > committed {
            return Err(corrupt(format!("record {} has a bad length {}", at.seq, header.len)));
        }
        let mut body = vec![0u8; header.len as usize];
        file.read_exact_at(&mut body, at.offset + RECORD_HEADER_BYTES as u64).map_err(JournalError::io(&path))?;
        let computed = record_crc(header.seq, &body);
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
        self.commit_with(Instant::now(), Durability::Lazy)
    }

    /// Under `always`: fsyncs what lazy commits left unsynced once
    /// [`LAZY_SYNC_MAX`] has passed since the last fsync (a caller that may
    /// go idle calls this now and then). Returns whether it fsynced.
    pub fn sync_lazy_due(&mut self) -> Result<bool, JournalError> {
        if self.options.fsync != FsyncPolicy::Always || !self.unsynced {
            return Ok(false);
        }
        if self.last_sync.elapsed() < LAZY_SYNC_MAX {
            return Ok(false);
        }
        self.sync()
    }

    /// Written records await an fsync.
    pub fn has_unsynced(&self) -> bool {
        self.unsynced
    }

    fn commit_with(&mut self, now: Instant, durability: Durability) -> Result<CommitInfo, JournalError> {
        self.check_usable()?;
        let result = self.write_batch(now, durability);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    /// Fsyncs the active segment if it has unsynced writes (for `Interval` or
    /// `Never`, e.g. at shutdown). Returns whether it fsynced.
    pub fn sync(&mut self) -> Result<bool, JournalError> {
        self.check_usable()?;
        if !self.unsynced {
            return Ok(false);
        }
        let result = self.sync_active(Instant::now());
        if result.is_err() {
            self.poisoned = true;
        }
        result.map(|()| true)
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
    /// the active one, and fsyncs the directory. Naming the segment guards
    /// against deleting one the caller did not mean (after copying its live
    /// records forward). Returns what was deleted.
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
        fs::remove_file(&oldest.path).map_err(JournalError::io(&oldest.path))?;
        self.readers.remove(&segment_id);
        let removed = self.segments.remove(0);
        fsync_dir(&self.dir)?;
        tracing::info!(segment_id, records = removed.records, "journal: removed oldest segment");
        Ok(removed)
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
    fn batch_target(&mut self) -> BatchTarget {
        if let Some(target) = self.batch.target {
            return target;
        }
        let active = self.active();
        let full = active.records > 0 && active.bytes >= self.options.segment_bytes_target;
        let fresh = self.roll_requested || full;
        let target = BatchTarget { segment_id: if fresh { active.id + 1 } else { active.id }, fresh };
        self.roll_requested &= !fresh;
        self.batch.target = Some(target);
        target
    }

    fn write_batch(&mut self, now: Instant, durability: Durability) -> Result<CommitInfo, JournalError> {
        let mut batch = std::mem::take(&mut self.batch);
        let rolled = match batch.target {
            Some(target) => target.fresh,
            None => std::mem::take(&mut self.roll_requested),
        };
        if rolled {
            self.roll_now()?;
        }
        if !batch.bytes.is_empty() {
            let active = self.segments.last_mut().expect("a journal always has an active segment");
            self.active_file.write_all(&batch.bytes).map_err(JournalError::io(&active.path))?;
            active.bytes += batch.bytes.len() as u64;
            active.records += batch.records;
            self.unsynced = true;
        }
        let fsynced = self.sync_per_policy(now, durability)?;
        let info = CommitInfo {
            records: batch.records,
            bytes: batch.bytes.len() as u64,
            fsynced,
            rolled,
            segment_id: self.active().id,
        };
        // Keep the allocation for the next batch, within bounds.
        batch.bytes.clear();
        batch.bytes.shrink_to(BATCH_BUFFER_RETAINED_BYTES_MAX);
        self.batch.bytes = batch.bytes;
        Ok(info)
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
        self.last_sync = now;
        Ok(())
    }

    /// Closes the active segment and starts the next. The closing segment is
    /// fsynced first whatever the policy: once a later segment exists, a torn
    /// record in it would be corruption, not a torn tail.
    fn roll_now(&mut self) -> Result<(), JournalError> {
        if self.unsynced {
            self.sync_active(Instant::now())?;
        }
        let active = self.active();
        let (file, info) = create_segment(&self.dir, active.id + 1, active.next_seq())?;
        tracing::debug!(segment_id = info.id, first_seq = info.first_seq, "journal: new segment");
        self.segments.push(info);
        self.active_file = file;
        Ok(())
    }
}

/// Creates a segment: a new file with its header, fsynced, then the
/// directory fsynced, before any record is written to it.
fn create_segment(dir: &Path, segment_id: u64, first_seq: u64) -> Result<(File, SegmentInfo), JournalError> {
    let path = dir.join(segment_file_name(segment_id));
    let io = JournalError::io(&path);
    let mut file = OpenOptions::new().append(true).create_new(true).open(&path).map_err(io)?;
    let header = encode_header(SegmentHeader { segment_id, first_seq });
    file.write_all(&header).map_err(JournalError::io(&path))?;
    file.sync_all().map_err(JournalError::io(&path))?;
    fsync_dir(dir)?;
    let info = SegmentInfo { id: segment_id, path, bytes: SEGMENT_HEADER_BYTES as u64, first_seq, records: 0 };
    Ok((file, info))
}

fn open_for_append(path: &Path) -> Result<File, JournalError> {
    OpenOptions::new().append(true).open(path).map_err(JournalError::io(path))
}

/// Creates the journal directory (and its parents) if it does not exist, and
/// fsyncs the parent so the directory itself survives a crash.
fn create_dir_if_missing(dir: &Path) -> Result<(), JournalError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(JournalError::io(dir))?;
    match dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        Some(parent) => fsync_dir(parent),
        None => fsync_dir(Path::new(".")),
    }
}
