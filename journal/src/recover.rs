//! What `Journal::open` does about the problem `inspect` found: cut off a
//! torn tail in the last segment, refuse anything else.

use std::fs::{self, OpenOptions};
use std::path::PathBuf;

use crate::error::JournalError;
use crate::fs::fsync_dir;
use crate::inspect::{Inspection, Problem, ProblemKind, SegmentInfo};

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
pub fn recover(dir: &std::path::Path, inspection: Inspection) -> Result<Recovered, JournalError> {
    let Inspection { segments, problem } = inspection;
    let Some(problem) = problem else {
        return Ok(Recovered { segments, truncated: None, removed_segment_id: None });
    };
    if problem.kind != ProblemKind::TornTail {
        return Err(problem.to_error());
    }
    let header_is_good = segments.last().is_some_and(|last| last.id == problem.segment_id);
    let removed_segment_id = if header_is_good {
        truncate_at(&problem)?;
        None
    } else {
        // A segment's header is fsynced before any record is written to it:
        // a torn header means the segment never held a record.
        fs::remove_file(&problem.file).map_err(JournalError::io(&problem.file))?;
        fsync_dir(dir)?;
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

fn truncate_at(problem: &Problem) -> Result<(), JournalError> {
    let path = &problem.file;
    let file = OpenOptions::new().write(true).open(path).map_err(JournalError::io(path))?;
    file.set_len(problem.offset).map_err(JournalError::io(path))?;
    file.sync_all().map_err(JournalError::io(path))
}
