//! Offline tools: `verify` (read-only) and `repair` (moves damage aside,
//! never deletes it).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::JournalError;
use crate::fs::{fsync_dir, list_segments, lock_dir};
use crate::inspect::{inspect, Problem, ProblemKind, SegmentInfo};
use crate::limits::{QUARANTINE_NAME_ATTEMPTS_MAX, READ_BUFFER_BYTES, RECORD_BYTES_MAX};
use crate::storage::{OsStorage, Storage};

/// Prefix of the directories `repair` moves damaged data into.
pub const QUARANTINE_DIR_PREFIX: &str = "quarantine-";

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segments read, in order, up to and including the one with the
    /// problem (whose `bytes` then stop at the problem). A segment whose
    /// header is the problem is not listed.
    pub segments: Vec<SegmentInfo>,
    /// The first problem; `None` when every byte checked out. Verification
    /// stops there.
    pub problem: Option<Problem>,
}

impl VerifyReport {
    /// Good records read.
    pub fn records(&self) -> u64 {
        self.segments.iter().map(|segment| segment.records).sum()
    }
}

/// Bytes `repair` moved into the quarantine directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedData {
    pub from: PathBuf,
    /// Offset in `from` where the moved bytes started (0: the whole file).
    pub from_offset: u64,
    pub to: PathBuf,
    pub bytes: u64,
}

/// What `repair` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The problem repaired; `None` if there was nothing to do.
    pub problem: Option<Problem>,
    /// Where the damaged data went (`DIR/quarantine-<unix-time>[-n]`).
    pub quarantine_dir: Option<PathBuf>,
    /// The segment cut at the problem, and where, if it kept its good records.
    pub truncated: Option<(PathBuf, u64)>,
    /// Everything moved, in order: the cut-off tail, then whole segments.
    pub moved: Vec<MovedData>,
}

/// Checks every header and record, CRCs, and segment id and seq continuity,
/// without taking the lock or changing anything. IO errors are `Err`; what is
/// wrong with the data is `Ok(report)` with `report.problem`.
pub fn verify(dir: &Path, record_bytes_max: u32) -> Result<VerifyReport, JournalError> {
    verify_on(&OsStorage, dir, record_bytes_max)
}

/// [`verify`] on any [`Storage`] (the simulation's disk).
pub fn verify_on(storage: &dyn Storage, dir: &Path, record_bytes_max: u32) -> Result<VerifyReport, JournalError> {
    check_record_bytes_max(record_bytes_max)?;
    let inspection = inspect(storage, dir, record_bytes_max)?;
    Ok(VerifyReport { segments: inspection.segments, problem: inspection.problem })
}

/// Takes the lock, finds the first problem, and makes the journal open
/// again without it: the bad segment is cut at the problem (its tail saved
/// first) or, if its header is bad, moved whole; every later segment is
/// moved. Nothing is deleted: all of it goes to `DIR/quarantine-<unix-time>/`.
/// A segment of another format version is refused, not moved.
pub fn repair(dir: &Path, record_bytes_max: u32) -> Result<RepairReport, JournalError> {
    repair_on(&OsStorage, dir, record_bytes_max)
}

/// [`repair`] on any [`Storage`] (the simulation's disk).
pub fn repair_on(storage: &dyn Storage, dir: &Path, record_bytes_max: u32) -> Result<RepairReport, JournalError> {
    check_record_bytes_max(record_bytes_max)?;
    let _lock = lock_dir(storage, dir)?;
    let inspection = inspect(storage, dir, record_bytes_max)?;
    let Some(problem) = inspection.problem else {
        return Ok(RepairReport { problem: None, quarantine_dir: None, truncated: None, moved: Vec::new() });
    };
    if let ProblemKind::UnsupportedVersion { version } = problem.kind {
        return Err(JournalError::UnsupportedVersion { file: problem.file, version });
    }
    let quarantine = create_quarantine_dir(storage, dir, unix_time_secs())?;
    let header_is_good = inspection.segments.last().is_some_and(|last| last.id == problem.segment_id);
    // Order matters for a crash part-way: copies are durable before anything
    // is cut, and a rerun finds what is left to do.
    let mut moved = Vec::new();
    if header_is_good {
        moved.push(save_tail(storage, &problem, &quarantine)?);
    } else {
        moved.push(move_segment(storage, &problem.file, &quarantine)?);
    }
    for (_, path) in list_segments(storage, dir)?.into_iter().filter(|(id, _)| *id > problem.segment_id) {
        moved.push(move_segment(storage, &path, &quarantine)?);
    }
    fsync_dir(storage, &quarantine)?;
    fsync_dir(storage, dir)?;
    let truncated = if header_is_good { Some(truncate(storage, &problem.file, problem.offset)?) } else { None };
    tracing::warn!(dir = %dir.display(), quarantine = %quarantine.display(), moved = moved.len(), "journal: repaired");
    Ok(RepairReport { problem: Some(problem), quarantine_dir: Some(quarantine), truncated, moved })
}

fn check_record_bytes_max(record_bytes_max: u32) -> Result<(), JournalError> {
    if record_bytes_max > RECORD_BYTES_MAX {
        let reason = format!("record_bytes_max {record_bytes_max} is above {RECORD_BYTES_MAX}");
        return Err(JournalError::InvalidOptions { reason });
    }
    Ok(())
}

/// Seconds since the epoch, for the quarantine directory's name only (a
/// clock before 1970 gives 0; a name clash only adds a suffix).
fn unix_time_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

fn create_quarantine_dir(storage: &dyn Storage, dir: &Path, unix_time: u64) -> Result<PathBuf, JournalError> {
    for attempt in 0..QUARANTINE_NAME_ATTEMPTS_MAX {
        let name = match attempt {
            0 => format!("{QUARANTINE_DIR_PREFIX}{unix_time}"),
            _ => format!("{QUARANTINE_DIR_PREFIX}{unix_time}-{attempt}"),
        };
        let path = dir.join(name);
        match storage.create_dir(&path) {
            Ok(()) => {
                fsync_dir(storage, dir)?;
                return Ok(path);
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(JournalError::Io { path, source }),
        }
    }
    let source = io::Error::new(io::ErrorKind::AlreadyExists, "no free quarantine directory name");
    Err(JournalError::Io { path: dir.join(format!("{QUARANTINE_DIR_PREFIX}{unix_time}")), source })
}

/// Copies the bytes from the problem's offset to the end of its segment into
/// `<segment name>.tail-at-<offset>` in the quarantine, fsynced.
fn save_tail(storage: &dyn Storage, problem: &Problem, quarantine: &Path) -> Result<MovedData, JournalError> {
    let from = &problem.file;
    let source = storage.open(from, false).map_err(JournalError::io(from))?;
    let end = source.len().map_err(JournalError::io(from))?;
    let name = from.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let to = quarantine.join(format!("{name}.tail-at-{}", problem.offset));
    let target = storage.create_new(&to).map_err(JournalError::io(&to))?;
    let mut chunk = vec![0u8; READ_BUFFER_BYTES];
    let mut at = problem.offset;
    while at < end {
        let take = (end - at).min(READ_BUFFER_BYTES as u64) as usize;
        source.read_exact_at(&mut chunk[..take], at).map_err(JournalError::io(from))?;
        target.write_all_at(&chunk[..take], at - problem.offset).map_err(JournalError::io(&to))?;
        at += take as u64;
    }
    target.sync_all().map_err(JournalError::io(&to))?;
    let bytes = end.saturating_sub(problem.offset);
    Ok(MovedData { from: from.clone(), from_offset: problem.offset, to, bytes })
}

/// Renames a whole segment into the quarantine (same file system, so no
/// copy; the caller fsyncs both directories).
fn move_segment(storage: &dyn Storage, from: &Path, quarantine: &Path) -> Result<MovedData, JournalError> {
    let bytes = storage.open(from, false).and_then(|file| file.len()).map_err(JournalError::io(from))?;
    let to = quarantine.join(from.file_name().unwrap_or_default());
    storage.rename(from, &to).map_err(JournalError::io(from))?;
    Ok(MovedData { from: from.to_path_buf(), from_offset: 0, to, bytes })
}

fn truncate(storage: &dyn Storage, path: &Path, offset: u64) -> Result<(PathBuf, u64), JournalError> {
    let file = storage.open(path, true).map_err(JournalError::io(path))?;
    file.set_len(offset).map_err(JournalError::io(path))?;
    file.sync_all().map_err(JournalError::io(path))?;
    Ok((path.to_path_buf(), offset))
}
