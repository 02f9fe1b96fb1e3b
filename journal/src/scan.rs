//! Reading one segment file from start to end, checking every byte, and
//! deciding whether a defect may be a torn tail (see the case table in the
//! crate docs).
//!
//! The scan streams: one reusable body buffer (at most one record) and a
//! fixed read buffer, however large the segment. It stops at the first
//! defect and says where the last good record ended.

use std::path::Path;

use crate::error::{JournalError, ReplayError};
use crate::format::{
    decode_header, first_record_offset, record_header_bytes, sector_ceil, HeaderDefect, RecordHeader, SegmentHeader,
    FORMAT_VERSION_V1, MARKER_SEQ, SECTOR_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::limits::READ_BUFFER_BYTES;
use crate::storage::{Storage, StorageFile};

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
    /// May be the unsynced end of the log: a torn tail if it is in the last
    /// segment, corruption anywhere else.
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
#[derive(Clone, Copy)]
pub struct ScanSpec<'a> {
    pub storage: &'a dyn Storage,
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

/// Positioned reads through a fixed buffer: sequential scans cost one read
/// per `READ_BUFFER_BYTES`, and a look-ahead can jump without reopening.
struct PosReader<'a> {
    file: &'a dyn StorageFile,
    path: &'a Path,
    /// The scan never reads at or past this.
    end: u64,
    buf: Vec<u8>,
    buf_at: u64,
}

impl<'a> PosReader<'a> {
    fn new(file: &'a dyn StorageFile, path: &'a Path, end: u64) -> PosReader<'a> {
        PosReader { file, path, end, buf: Vec::new(), buf_at: 0 }
    }

    /// Reads `out.len()` bytes at `offset` (the caller keeps within `end`).
    fn read(&mut self, offset: u64, out: &mut [u8]) -> Result<(), JournalError> {
        let len = out.len() as u64;
        let buf_end = self.buf_at + self.buf.len() as u64;
        if offset >= self.buf_at && offset + len <= buf_end {
            let at = (offset - self.buf_at) as usize;
            out.copy_from_slice(&self.buf[at..at + out.len()]);
            return Ok(());
        }
        if out.len() > READ_BUFFER_BYTES {
            return self.file.read_exact_at(out, offset).map_err(JournalError::io(self.path));
        }
        let fill = (self.end - offset).min(READ_BUFFER_BYTES as u64).max(len) as usize;
        self.buf.resize(fill, 0);
        self.buf_at = offset;
        self.file.read_exact_at(&mut self.buf, offset).map_err(JournalError::io(self.path))?;
        out.copy_from_slice(&self.buf[..out.len()]);
        Ok(())
    }

    /// Whether every byte in `from..to` is zero.
    fn all_zero(&mut self, from: u64, to: u64) -> Result<bool, JournalError> {
        let mut chunk = vec![0u8; CRC_CHUNK_BYTES];
        let mut at = from;
        while at < to {
            let take = (to - at).min(CRC_CHUNK_BYTES as u64) as usize;
            self.read(at, &mut chunk[..take])?;
            if chunk[..take].iter().any(|&byte| byte != 0) {
                return Ok(false);
            }
            at += take as u64;
        }
        Ok(true)
    }

    /// CRC of a record's body read in chunks (never held in memory whole).
    fn streamed_crc(&mut self, header: &RecordHeader, version: u16, at: u64) -> Result<bool, JournalError> {
        let mut body = vec![0u8; (header.len as usize).min(CRC_CHUNK_BYTES)];
        if header.len as usize <= CRC_CHUNK_BYTES {
            self.read(at, &mut body)?;
            return Ok(header.expected_crc(version, &body) == header.crc);
        }
        // Large: compute by hand in chunks (same fields as expected_crc).
        let mut crc = if version == FORMAT_VERSION_V1 {
            crc32c::crc32c(&header.seq.to_le_bytes())
        } else {
            let mut fields = [0u8; 20];
            fields[..4].copy_from_slice(&header.len.to_le_bytes());
            fields[4..12].copy_from_slice(&header.seq.to_le_bytes());
            fields[12..].copy_from_slice(&header.durable.to_le_bytes());
            crc32c::crc32c(&fields)
        };
        let mut left = u64::from(header.len);
        let mut offset = at;
        while left > 0 {
            let take = left.min(CRC_CHUNK_BYTES as u64) as usize;
            self.read(offset, &mut body[..take])?;
            crc = crc32c::crc32c_append(crc, &body[..take]);
            left -= take as u64;
            offset += take as u64;
        }
        Ok(crc == header.crc)
    }
}

/// Scans one segment, handing each good record to `visit(seq, offset,
/// body)` in order.
pub fn scan_segment<E>(
    spec: &ScanSpec<'_>,
    visit: &mut impl FnMut(u64, u64, &[u8]) -> Result<(), E>,
) -> Result<SegmentScan, ReplayError<E>> {
    let file = spec.storage.open(spec.path, false).map_err(JournalError::io(spec.path))?;
    let scanned_bytes = match spec.bytes_limit {
        Some(limit) => limit,
        None => file.len().map_err(JournalError::io(spec.path))?,
    };
    let mut reader = PosReader::new(file.as_ref(), spec.path, scanned_bytes);
    let header = match read_header(&mut reader, spec, scanned_bytes)? {
        Ok(header) => header,
        Err(defect) => {
            return Ok(SegmentScan { header: None, scanned_bytes, valid_bytes: 0, records: 0, defect: Some(defect) })
        }
    };
    let mut cursor = Cursor {
        version: header.version,
        offset: SEGMENT_HEADER_BYTES as u64,
        good_end: SEGMENT_HEADER_BYTES as u64,
        next_seq: header.first_seq,
        records: 0,
        durable_mark: first_record_offset(header.version),
    };
    let mut body = Vec::new();
    let defect = loop {
        match read_record(&mut reader, spec, &mut cursor, &mut body)? {
            Step::End => break None,
            Step::Skip => {}
            Step::Defect(reason, kind) => break Some(Defect { offset: cursor.offset, reason, kind }),
            Step::Good { seq } => {
                visit(seq, cursor.offset, &body).map_err(|error| ReplayError::Callback { seq, error })?;
                cursor.advance(body.len());
            }
        }
    };
    let defect = match defect {
        Some(defect) if defect.kind == DefectKind::TornIfLast && cursor.version != FORMAT_VERSION_V1 => {
            Some(classify(&mut reader, spec, &cursor, defect)?)
        }
        other => other,
    };
    Ok(SegmentScan {
        header: Some(header),
        scanned_bytes,
        valid_bytes: cursor.good_end,
        records: cursor.records,
        defect,
    })
}

/// Reads and checks the header, including that it belongs where it is.
fn read_header(
    reader: &mut PosReader<'_>,
    spec: &ScanSpec<'_>,
    scanned_bytes: u64,
) -> Result<Result<SegmentHeader, Defect>, JournalError> {
    let available = scanned_bytes.min(SEGMENT_HEADER_BYTES as u64) as usize;
    let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
    reader.read(0, &mut bytes[..available])?;
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
    version: u16,
    offset: u64,
    /// End of the last good record or marker (or of the header).
    good_end: u64,
    next_seq: u64,
    records: u64,
    /// Highest durable watermark read so far: every byte below it was
    /// durable before the scan's last good frame was written.
    durable_mark: u64,
}

impl Cursor {
    fn advance(&mut self, body_len: usize) {
        self.offset += (record_header_bytes(self.version) + body_len) as u64;
        self.good_end = self.offset;
        self.next_seq += 1;
        self.records += 1;
    }
}

enum Step {
    End,
    /// Padding or a marker: nothing for the caller, the cursor moved.
    Skip,
    /// The record is in the caller's body buffer.
    Good {
        seq: u64,
    },
    Defect(String, DefectKind),
}

fn torn(reason: String) -> Result<Step, JournalError> {
    Ok(Step::Defect(reason, DefectKind::TornIfLast))
}

/// Reads the frame at the cursor. Lengths are checked against the limit and
/// the bytes left *before* the body buffer grows, so a corrupt length never
/// allocates; short reads are found from the known length, so an IO error
/// stays an IO error.
fn read_record(
    reader: &mut PosReader<'_>,
    spec: &ScanSpec<'_>,
    cursor: &mut Cursor,
    body: &mut Vec<u8>,
) -> Result<Step, JournalError> {
    let end = reader.end;
    let remaining = end.saturating_sub(cursor.offset);
    if remaining == 0 {
        return Ok(Step::End);
    }
    let v1 = cursor.version == FORMAT_VERSION_V1;
    if !v1 && !cursor.offset.is_multiple_of(SECTOR_BYTES) {
        if let Some(step) = padding(reader, cursor)? {
            return Ok(step);
        }
    }
    let framing_len = record_header_bytes(cursor.version);
    if remaining < framing_len as u64 {
        return torn(format!("record framing cut short ({remaining} of {framing_len} bytes)"));
    }
    let mut framing = [0u8; 32];
    let framing = &mut framing[..framing_len];
    reader.read(cursor.offset, framing)?;
    if framing.iter().all(|&byte| byte == 0) {
        if !v1 && reader.all_zero(cursor.offset, end)? {
            // Preallocated space never written: the clean end.
            return Ok(Step::End);
        }
        return torn("zero bytes where a record should start (unwritten or preallocated tail)".to_string());
    }
    let header = RecordHeader::decode(cursor.version, framing);
    let body_at = cursor.offset + framing_len as u64;
    let body_available = remaining - framing_len as u64;
    if u64::from(header.len) > body_available {
        let reason =
            format!("record length {} runs past the end of the file ({body_available} bytes left)", header.len);
        return torn(reason);
    }
    if header.len > spec.record_bytes_max {
        return over_limit(reader, spec, cursor, &header, body_at);
    }
    body.clear();
    body.resize(header.len as usize, 0);
    reader.read(body_at, body)?;
    check_record(cursor, &header, body)
}

/// At an offset inside a sector (version 2): the rest of the sector is
/// padding if the frame there is zeros (a real frame's seq is never 0, and
/// a frame never starts less than a frame's length before a boundary).
fn padding(reader: &mut PosReader<'_>, cursor: &mut Cursor) -> Result<Option<Step>, JournalError> {
    let sector_end = sector_ceil(cursor.offset);
    let framing_len = record_header_bytes(cursor.version) as u64;
    if sector_end - cursor.offset >= framing_len {
        let framing_end = cursor.offset + framing_len;
        // A frame cut short by the end of the file is the caller's to judge.
        if framing_end > reader.end || !reader.all_zero(cursor.offset, framing_end)? {
            return Ok(None);
        }
    }
    let boundary = sector_end.min(reader.end);
    if reader.all_zero(cursor.offset, boundary)? {
        cursor.offset = boundary;
        return Ok(Some(Step::Skip));
    }
    // Sectors are written whole, so a power cut cannot leave this: a flip.
    Ok(Some(Step::Defect("non-zero bytes in the padding after a commit".to_string(), DefectKind::Corrupt)))
}

/// A length above the limit, with the bytes present. Usually garbage; but a
/// record that checks out was written under a larger limit, and cutting it
/// off would lose confirmed data, so that is refused instead.
fn over_limit(
    reader: &mut PosReader<'_>,
    spec: &ScanSpec<'_>,
    cursor: &Cursor,
    header: &RecordHeader,
    body_at: u64,
) -> Result<Step, JournalError> {
    let limit = spec.record_bytes_max;
    if reader.streamed_crc(header, cursor.version, body_at)? && header.seq == cursor.next_seq {
        let reason = format!(
            "record seq {} of {} bytes is intact but above the limit of {limit} bytes (was it written with a larger \
             record_bytes_max?)",
            header.seq, header.len
        );
        return Ok(Step::Defect(reason, DefectKind::Corrupt));
    }
    torn(format!("record length {} is above the limit of {limit} bytes", header.len))
}

/// The pair assertion after a read: CRC, then the sequence number. A good
/// marker (version 2, seq 0, no body) only raises the durable watermark.
fn check_record(cursor: &mut Cursor, header: &RecordHeader, body: &[u8]) -> Result<Step, JournalError> {
    let computed = header.expected_crc(cursor.version, body);
    if computed != header.crc {
        let reason = format!("record CRC mismatch (stored {:#010x}, computed {computed:#010x})", header.crc);
        return torn(reason);
    }
    if cursor.version != FORMAT_VERSION_V1 && header.seq == MARKER_SEQ && header.len == 0 {
        cursor.durable_mark = cursor.durable_mark.max(header.durable);
        cursor.offset += record_header_bytes(cursor.version) as u64;
        cursor.good_end = cursor.offset;
        return Ok(Step::Skip);
    }
    if header.seq != cursor.next_seq {
        return torn(format!("record seq {} where seq {} was expected", header.seq, cursor.next_seq));
    }
    cursor.durable_mark = cursor.durable_mark.max(header.durable);
    Ok(Step::Good { seq: header.seq })
}

/// Decides whether a version-2 defect may be the unsynced end (the case
/// table in the crate docs): it must lie past the durable watermark, no
/// later frame may say it was durable, and the damage must look like a
/// power cut (a sector of zeros, or the file ending inside the frame) —
/// never like a flipped bit.
fn classify(
    reader: &mut PosReader<'_>,
    spec: &ScanSpec<'_>,
    cursor: &Cursor,
    defect: Defect,
) -> Result<Defect, JournalError> {
    let corrupt = |why: String| Defect {
        reason: format!("{}; {why}", defect.reason),
        kind: DefectKind::Corrupt,
        ..defect.clone()
    };
    if defect.offset < cursor.durable_mark {
        return Ok(corrupt(format!("the bytes below offset {} were durable", cursor.durable_mark)));
    }
    if let Some((at, seq, durable)) = find_witness(reader, spec, cursor, defect.offset)? {
        return Ok(corrupt(format!(
            "the frame of seq {seq} at offset {at}, written later, says the bytes below offset {durable} were durable"
        )));
    }
    if looks_torn(reader, spec, cursor, defect.offset)? {
        return Ok(defect);
    }
    Ok(corrupt("the damage is not a torn write (no sector of zeros): a changed bit".to_string()))
}

/// A good frame at a sector boundary after `damaged` whose watermark is
/// above it: `(offset, seq, durable)`.
fn find_witness(
    reader: &mut PosReader<'_>,
    spec: &ScanSpec<'_>,
    cursor: &Cursor,
    damaged: u64,
) -> Result<Option<(u64, u64, u64)>, JournalError> {
    let framing_len = record_header_bytes(cursor.version) as u64;
    let mut at = sector_ceil(damaged + 1);
    let mut framing = [0u8; 32];
    while at + framing_len <= reader.end {
        let framing = &mut framing[..framing_len as usize];
        reader.read(at, framing)?;
        let header = RecordHeader::decode(cursor.version, framing);
        let plausible = framing.iter().any(|&byte| byte != 0)
            && header.durable > damaged
            && header.len <= spec.record_bytes_max
            && at + framing_len + u64::from(header.len) <= reader.end;
        if plausible && reader.streamed_crc(&header, cursor.version, at + framing_len)? {
            return Ok(Some((at, header.seq, header.durable)));
        }
        at += SECTOR_BYTES;
    }
    Ok(None)
}

/// etcd's `isTornEntry`, on the frame at `at`: the frame runs past the end
/// of the file, or some sector-sized piece of it is all zeros (a sector the
/// disk never wrote). Its extent is its length field's when that is
/// plausible, else the framing alone.
fn looks_torn(reader: &mut PosReader<'_>, spec: &ScanSpec<'_>, cursor: &Cursor, at: u64) -> Result<bool, JournalError> {
    let framing_len = record_header_bytes(cursor.version) as u64;
    if at + framing_len > reader.end {
        return Ok(true);
    }
    let mut framing = [0u8; 32];
    reader.read(at, &mut framing[..framing_len as usize])?;
    let header = RecordHeader::decode(cursor.version, &framing[..framing_len as usize]);
    let mut extent_end = at + framing_len;
    if header.len <= spec.record_bytes_max {
        extent_end += u64::from(header.len);
        if extent_end > reader.end {
            return Ok(true);
        }
    }
    let mut piece_at = at;
    while piece_at < extent_end {
        let piece_end = (piece_at / SECTOR_BYTES + 1).saturating_mul(SECTOR_BYTES).min(extent_end);
        if reader.all_zero(piece_at, piece_end)? {
            return Ok(true);
        }
        piece_at = piece_end;
    }
    Ok(false)
}
