//! One read-only pass over a journal directory: which segments are good and
//! where the first problem is. `Journal::open`, `verify` and `repair` all
//! start from it, so they can never disagree about what is wrong.

use std::convert::Infallible;
use std::path::{Path, PathBuf};

use crate::error::{JournalError, ReplayError};
use crate::fs::list_segments;
use crate::scan::{scan_segment, DefectKind, ScanSpec, SegmentScan};
use crate::storage::{OsStorage, Storage};

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub id: u64,
    pub path: PathBuf,
    /// Bytes of the segment that hold good data (header and records).
    pub bytes: u64,
    /// Seq of the segment's first record (or of the record it will get
    /// first, while it is empty).
    pub first_seq: u64,
    pub records: u64,
    /// Format version of the segment (1 or 2).
    pub version: u16,
}

impl SegmentInfo {
    /// Seq of the segment's last record, `None` while it is empty.
    pub fn last_seq(&self) -> Option<u64> {
        self.records.checked_sub(1).map(|last| self.first_seq + last)
    }

    /// Seq the record after this segment's last gets.
    pub fn next_seq(&self) -> u64 {
        self.first_seq + self.records
    }
}

/// The first thing wrong in a journal directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub segment_id: u64,
    pub file: PathBuf,
    /// Where the bad bytes start (0: the segment header).
    pub offset: u64,
    /// The file's length when it was read.
    pub file_bytes: u64,
    pub description: String,
    pub kind: ProblemKind,
}

/// What opening the journal would do about a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// In the last segment: `Journal::open` cuts it off by itself (what a
    /// crash while appending leaves).
    TornTail,
    /// `Journal::open` refuses: `repair` moves the damage aside.
    Corrupt,
    /// Written by another format version: neither `open` nor `repair`
    /// touches it.
    UnsupportedVersion { version: u16 },
}

impl Problem {
    /// The error `Journal::open` refuses with.
    pub fn to_error(&self) -> JournalError {
        match self.kind {
            ProblemKind::UnsupportedVersion { version } => {
                JournalError::UnsupportedVersion { file: self.file.clone(), version }
            }
            ProblemKind::TornTail | ProblemKind::Corrupt => {
                JournalError::Corrupt { file: self.file.clone(), offset: self.offset, reason: self.description.clone() }
            }
        }
    }
}

/// Result of [`inspect`].
#[derive(Debug)]
pub struct Inspection {
    /// Segments with a good header, in order; the last may be good only up
    /// to the problem's offset (its `bytes`).
    pub segments: Vec<SegmentInfo>,
    pub problem: Option<Problem>,
}

/// Reads every segment in `dir` in order, checking headers, records, CRCs,
/// and that segment ids and seqs continue; stops at the first problem.
pub fn inspect(storage: &dyn Storage, dir: &Path, record_bytes_max: u32) -> Result<Inspection, JournalError> {
    read_records_on(storage, dir, record_bytes_max, |_, _, _| Ok::<(), Infallible>(())).map_err(into_journal_error)
}

/// Like [`inspect`], and hands every good record (seq, segment id, body) to
/// `visit` on the way. Read-only and lock-free, so it works beside a running
/// journal (it sees what was committed when it reads each segment); it
/// stops at the first problem, which it reports rather than repairs.
pub fn read_records<E>(
    dir: &Path,
    record_bytes_max: u32,
    visit: impl FnMut(u64, u64, &[u8]) -> Result<(), E>,
) -> Result<Inspection, ReplayError<E>> {
    read_records_on(&OsStorage, dir, record_bytes_max, visit)
}

/// [`read_records`] on any [`Storage`] (the simulation's disk).
pub fn read_records_on<E>(
    storage: &dyn Storage,
    dir: &Path,
    record_bytes_max: u32,
    mut visit: impl FnMut(u64, u64, &[u8]) -> Result<(), E>,
) -> Result<Inspection, ReplayError<E>> {
    let listed = list_segments(storage, dir)?;
    let mut inspection = Inspection { segments: Vec::with_capacity(listed.len()), problem: None };
    for (index, (segment_id, path)) in listed.iter().enumerate() {
        let is_last = index + 1 == listed.len();
        let previous = inspection.segments.last();
        if let Some(previous) = previous.filter(|previous| previous.id + 1 != *segment_id) {
            inspection.problem = Some(id_gap(storage, *segment_id, path, previous.id)?);
            break;
        }
        let spec = ScanSpec {
            storage,
            path,
            segment_id: *segment_id,
            expected_first_seq: previous.map(SegmentInfo::next_seq),
            bytes_limit: None,
            record_bytes_max,
        };
        let scan = scan_segment(&spec, &mut |seq, _offset, body: &[u8]| visit(seq, *segment_id, body))?;
        if let Some(header) = scan.header {
            let records = scan.records;
            let info = SegmentInfo {
                id: *segment_id,
                path: path.clone(),
                bytes: scan.valid_bytes,
                first_seq: header.first_seq,
                records,
                version: header.version,
            };
            inspection.segments.push(info);
        }
        if let Some(problem) = problem_of(*segment_id, path, &scan, is_last) {
            inspection.problem = Some(problem);
            break;
        }
    }
    Ok(inspection)
}

fn problem_of(segment_id: u64, path: &Path, scan: &SegmentScan, is_last: bool) -> Option<Problem> {
    let defect = scan.defect.as_ref()?;
    let kind = match defect.kind {
        DefectKind::TornIfLast if is_last => ProblemKind::TornTail,
        DefectKind::TornIfLast | DefectKind::Corrupt => ProblemKind::Corrupt,
        DefectKind::UnsupportedVersion { version } => ProblemKind::UnsupportedVersion { version },
    };
    Some(Problem {
        segment_id,
        file: path.to_path_buf(),
        offset: defect.offset,
        file_bytes: scan.scanned_bytes,
        description: defect.reason.clone(),
        kind,
    })
}

/// A missing segment between two others: records are missing.
fn id_gap(storage: &dyn Storage, segment_id: u64, path: &Path, previous_id: u64) -> Result<Problem, JournalError> {
    let file_bytes = storage.open(path, false).and_then(|file| file.len()).map_err(JournalError::io(path))?;
    Ok(Problem {
        segment_id,
        file: path.to_path_buf(),
        offset: 0,
        file_bytes,
        description: format!("segment {segment_id} follows segment {previous_id}: segments in between are missing"),
        kind: ProblemKind::Corrupt,
    })
}

fn into_journal_error(error: ReplayError<Infallible>) -> JournalError {
    match error {
        ReplayError::Journal(error) => error,
        ReplayError::Callback { error, .. } => match error {},
    }
}
