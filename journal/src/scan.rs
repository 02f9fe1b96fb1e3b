//! Reading one segment file from start to end, checking every byte.
//!
//! The scan streams: one reusable body buffer (at most one record) and a
//! fixed read buffer, however large the segment. It stops at the first
//! defect and says where the last good record ended; the caller decides
//! whether that is a torn tail or corruption.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::{JournalError, ReplayError};
use crate::format::{
    decode_header, record_crc, HeaderDefect, RecordHeader, SegmentHeader, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::limits::READ_BUFFER_BYTES;

/// Chunk for checking the CRC of a record too large to hold in memory.
const CRC_CHUNK_BYTES: usize = 64 * 1024;

/// What is wrong at one place in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defect {
    pub offset: u64,
    pub reason: String,
    pub kind: DefectKind,
}

/// How a defect may be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefectKind {
    /// What a crash while appending leaves behind: a torn tail if it is in
    /// the last segment, corruption anywhere else.
    TornIfLast,
    /// Wrong whatever the segment's position.
    Corrupt,
    /// A segment of another format version: not ours to judge.
    UnsupportedVersion { version: u16 },
}

/// What one segment scan found.
#[derive(Debug)]
pub struct SegmentScan {
    /// `None` when the header itself is the defect.
    pub header: Option<SegmentHeader>,
    /// Bytes the scan looked at (the file's length, or the caller's bound).
    pub scanned_bytes: u64,
    /// End of the last good record (or of the header): where a torn tail is cut.
    pub valid_bytes: u64,
    /// Good records before `valid_bytes`.
    pub records: u64,
    pub defect: Option<Defect>,
}

/// Which segment to scan and what it must contain.
#[derive(Debug, Clone, Copy)]
pub struct ScanSpec<'a> {
    pub path: &'a Path,
    pub segment_id: u64,
    /// The seq the previous segment ends before (`None` for the first
    /// segment, which may start anywhere after compaction).
    pub expected_first_seq: Option<u64>,
    /// Read only this many bytes (replay reads only what was committed);
    /// `None` reads the whole file.
    pub bytes_limit: Option<u64>,
    pub record_bytes_max: u32,
}

/// Scans one segment, handing each good record to `visit(seq, offset,
/// body)` in order.
pub fn scan_segment<E>(
    spec: &ScanSpec<'_>,
    visit: &mut impl FnMut(u64, u64, &[u8]) -> Result<(), E>,
) -> Result<SegmentScan, ReplayError<E>> {
    let file = File::open(spec.path).map_err(JournalError::io(spec.path))?;
    let scanned_bytes = match spec.bytes_limit {
        Some(limit) => limit,
        None => file.metadata().map_err(JournalError::io(spec.path))?.len(),
    };
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    let header = match read_header(&mut reader, spec, scanned_bytes)? {
        Ok(header) => header,
        Err(defect) => {
            return Ok(SegmentScan { header: None, scanned_bytes, valid_bytes: 0, records: 0, defect: Some(defect) })
        }
    };
    let mut cursor = Cursor { offset: SEGMENT_HEADER_BYTES as u64, next_seq: header.first_seq, records: 0 };
    let mut body = Vec::new();
    let defect = loop {
        match read_record(&mut reader, spec, &cursor, scanned_bytes, &mut body)? {
            RecordRead::End => break None,
            RecordRead::Defect(reason, kind) => break Some(Defect { offset: cursor.offset, reason, kind }),
            RecordRead::Good { seq } => {
                visit(seq, cursor.offset, &body).map_err(|error| ReplayError::Callback { seq, error })?;
                cursor.advance(body.len());
            }
        }
    };
    Ok(SegmentScan { header: Some(header), scanned_bytes, valid_bytes: cursor.offset, records: cursor.records, defect })
}

/// Reads and checks the header, including that it belongs where it is.
fn read_header(
    reader: &mut impl Read,
    spec: &ScanSpec<'_>,
    scanned_bytes: u64,
) -> Result<Result<SegmentHeader, Defect>, JournalError> {
    let available =
        usize::try_from(scanned_bytes).map_or(SEGMENT_HEADER_BYTES, |bytes| bytes.min(SEGMENT_HEADER_BYTES));
    let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
    reader.read_exact(&mut bytes[..available]).map_err(JournalError::io(spec.path))?;
    let header = match decode_header(&bytes[..available]) {
        Ok(header) => header,
        Err(defect) => return Ok(Err(header_defect(defect))),
    };
    let corrupt = |reason: String| Ok(Err(Defect { offset: 0, reason, kind: DefectKind::Corrupt }));
    if header.segment_id != spec.segment_id {
        return corrupt(format!(
            "header names segment {} but the file name says {}",
            header.segment_id, spec.segment_id
        ));
    }
    if header.first_seq == 0 {
        return corrupt("header first seq is 0 (sequence numbers start at 1)".to_string());
    }
    match spec.expected_first_seq {
        Some(expected) if header.first_seq != expected => corrupt(format!(
            "sequence gap between segments: this segment starts at seq {}, the previous one ends before seq {expected}",
            header.first_seq
        )),
        _ => Ok(Ok(header)),
    }
}

fn header_defect(defect: HeaderDefect) -> Defect {
    let kind = match defect {
        HeaderDefect::UnsupportedVersion { version } => DefectKind::UnsupportedVersion { version },
        _ if defect.is_torn() => DefectKind::TornIfLast,
        _ => DefectKind::Corrupt,
    };
    Defect { offset: 0, reason: defect.to_string(), kind }
}

/// Position of the scan within the segment.
struct Cursor {
    offset: u64,
    next_seq: u64,
    records: u64,
}

impl Cursor {
    fn advance(&mut self, body_len: usize) {
        self.offset += crate::format::framed_len(body_len);
        self.next_seq += 1;
        self.records += 1;
    }
}

enum RecordRead {
    End,
    /// The record is in the caller's body buffer.
    Good {
        seq: u64,
    },
    Defect(String, DefectKind),
}

fn torn(reason: String) -> Result<RecordRead, JournalError> {
    Ok(RecordRead::Defect(reason, DefectKind::TornIfLast))
}

/// Reads the record at the cursor. Lengths are checked against the limit and
/// the bytes left *before* the body buffer grows, so a corrupt length never
/// allocates; short reads are found from the known length, so an IO error
/// stays an IO error.
fn read_record(
    reader: &mut impl Read,
    spec: &ScanSpec<'_>,
    cursor: &Cursor,
    scanned_bytes: u64,
    body: &mut Vec<u8>,
) -> Result<RecordRead, JournalError> {
    let remaining = scanned_bytes.saturating_sub(cursor.offset);
    if remaining == 0 {
        return Ok(RecordRead::End);
    }
    if remaining < RECORD_HEADER_BYTES as u64 {
        return torn(format!("record framing cut short ({remaining} of {RECORD_HEADER_BYTES} bytes)"));
    }
    let mut framing = [0u8; RECORD_HEADER_BYTES];
    reader.read_exact(&mut framing).map_err(JournalError::io(spec.path))?;
    if framing.iter().all(|&byte| byte == 0) {
        return torn("zero bytes where a record should start (unwritten or preallocated tail)".to_string());
    }
    let header = RecordHeader::decode(&framing);
    let body_available = remaining - RECORD_HEADER_BYTES as u64;
    if u64::from(header.len) > body_available {
        let reason =
            format!("record length {} runs past the end of the file ({body_available} bytes left)", header.len);
        return torn(reason);
    }
    if header.len > spec.record_bytes_max {
        return over_limit(reader, spec, &header, cursor.next_seq);
    }
    read_body(reader, spec.path, header.len, body)?;
    check_record(&header, cursor.next_seq, body)
}

/// A length above the limit, with the bytes present. Usually garbage (a torn
/// tail); but a record that checks out was written under a larger limit, and
/// cutting it off would lose confirmed data, so that is refused instead. The
/// CRC is computed in fixed-size chunks: the body is never held in memory.
fn over_limit(
    reader: &mut impl Read,
    spec: &ScanSpec<'_>,
    header: &RecordHeader,
    expected_seq: u64,
) -> Result<RecordRead, JournalError> {
    let limit = spec.record_bytes_max;
    let crc = streamed_crc(reader, spec.path, header.seq, header.len)?;
    if crc == header.crc && header.seq == expected_seq {
        let reason = format!(
            "record seq {} of {} bytes is intact but above the limit of {limit} bytes (was it written with a larger \
             record_bytes_max?)",
            header.seq, header.len
        );
        return Ok(RecordRead::Defect(reason, DefectKind::Corrupt));
    }
    torn(format!("record length {} is above the limit of {limit} bytes", header.len))
}

fn streamed_crc(reader: &mut impl Read, path: &Path, seq: u64, len: u32) -> Result<u32, JournalError> {
    let mut crc = crc32c::crc32c(&seq.to_le_bytes());
    let mut chunk = [0u8; CRC_CHUNK_BYTES];
    let mut left = u64::from(len);
    while left > 0 {
        let take = usize::try_from(left).map_or(CRC_CHUNK_BYTES, |left| left.min(CRC_CHUNK_BYTES));
        reader.read_exact(&mut chunk[..take]).map_err(JournalError::io(path))?;
        crc = crc32c::crc32c_append(crc, &chunk[..take]);
        left -= take as u64;
    }
    Ok(crc)
}

fn read_body(reader: &mut impl Read, path: &Path, len: u32, body: &mut Vec<u8>) -> Result<(), JournalError> {
    // `len` is at most the record limit here, so this allocation is bounded.
    let len = usize::try_from(len).map_err(|_| JournalError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other("record length does not fit in memory on this platform"),
    })?;
    body.clear();
    body.resize(len, 0);
    reader.read_exact(body).map_err(JournalError::io(path))
}

/// The pair assertion after a read: CRC, then the sequence number.
fn check_record(header: &RecordHeader, expected_seq: u64, body: &[u8]) -> Result<RecordRead, JournalError> {
    let computed = record_crc(header.seq, body);
    if computed != header.crc {
        let reason = format!("record CRC mismatch (stored {:#010x}, computed {computed:#010x})", header.crc);
        return torn(reason);
    }
    if header.seq != expected_seq {
        return torn(format!("record seq {} where seq {expected_seq} was expected", header.seq));
    }
    Ok(RecordRead::Good { seq: header.seq })
}
