//! What `Journal::open` does about the problem `inspect` found: cut off a
//! torn tail in the last segment, refuse anything else.

use std::path::PathBuf;

use crate::error::JournalError;
use crate::fs::fsync_dir;
use crate::inspect::{Inspection, Problem, ProblemKind, SegmentInfo};
use crate::storage::{is_no_space, Storage};

/// What recovery did when the journal was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Good records found (before any append).
    pub records: u64,
    /// Segment files kept.
    pub segments: usize,
    /// The torn tail cut off the last segment, if there was one.
    pub truncated: Option<TruncatedTail>,
}

/// A torn tail recovery cut off: the bytes from `offset` to the end of `file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedTail {
    pub file: PathBuf,
    /// Where the file now ends (0: the whole segment was removed, because its
    /// header never made it to disk, so it held no record).
    pub offset: u64,
    pub dropped_bytes: u64,
    pub reason: String,
}

/// The segments to continue from, and what was cut off.
#[derive(Debug)]
pub struct Recovered {
    pub segments: Vec<SegmentInfo>,
    pub truncated: Option<TruncatedTail>,
    /// Id of a last segment removed for a torn header (the next segment
    /// created takes its place).
    pub removed_segment_id: Option<u64>,
}

/// Applies the recovery rules to an inspection: a torn tail in the last
/// segment is cut off (and fsynced); any other problem refuses to open.
pub fn recover(
    storage: &dyn Storage,
    dir: &std::path::Path,
    inspection: Inspection,
) -> Result<Recovered, JournalError> {
    let Inspection { segments, problem } = inspection;
    let Some(problem) = problem else {
        return Ok(Recovered { segments, truncated: None, removed_segment_id: None });
    };
    if problem.kind != ProblemKind::TornTail {
        return Err(problem.to_error());
    }
    let header_is_good = segments.last().is_some_and(|last| last.id == problem.segment_id);
    let removed_segment_id = if header_is_good {
        // Version 1 read zeros as damage: give back no preallocation there.
        let preallocated = segments.last().is_some_and(|last| last.version != crate::format::FORMAT_VERSION_V1);
        truncate_at(storage, &problem, preallocated)?;
        None
    } else {
        // A segment's header is fsynced before any record is written to it:
        // a torn header means the segment never held a record.
        storage.remove_file(&problem.file).map_err(JournalError::io(&problem.file))?;
        fsync_dir(storage, dir)?;
        Some(problem.segment_id)
    };
    let dropped_bytes = problem.file_bytes - problem.offset;
    tracing::warn!(
        file = %problem.file.display(),
        offset = problem.offset,
        dropped_bytes,
        reason = %problem.description,
        "journal: cut off a torn tail (a crash while appending)"
    );
    let truncated =
        TruncatedTail { file: problem.file, offset: problem.offset, dropped_bytes, reason: problem.description };
    Ok(Recovered { segments, truncated: Some(truncated), removed_segment_id })
}

/// Cuts the file at the problem and gives back the preallocated length
/// (zeros), so appends there still cannot meet a full disk.
fn truncate_at(storage: &dyn Storage, problem: &Problem, preallocated: bool) -> Result<(), JournalError> {
    let path = &problem.file;
    let file = storage.open(path, true).map_err(JournalError::io(path))?;
    file.set_len(problem.offset).map_err(JournalError::io(path))?;
    let length = if preallocated { problem.file_bytes } else { problem.offset };
    match file.allocate(length.max(1)) {
        Ok(()) => {}
        // The cut gave the blocks back and someone took them: appends may
        // extend the file instead (and meet ENOSPC as any write would).
        Err(error) if is_no_space(&error) => {}
        Err(source) => return Err(JournalError::Io { path: path.clone(), source }),
    }
    file.sync_all().map_err(JournalError::io(path))
}
