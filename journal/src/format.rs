//! The on-disk layout: segment names, the segment header and record framing.
//!
//! Pure functions only (no IO), so every check here is unit-tested without
//! files. The layout is described for readers in the crate-level docs.

use std::fmt;

/// First bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"ORDRLYJ\0";
/// The format version this build writes (it also reads [`FORMAT_VERSION_V1`]).
pub const FORMAT_VERSION: u16 = 2;
/// The first format: 16-byte framing, no durable watermark, records back to
/// back. Still read; never written.
pub const FORMAT_VERSION_V1: u16 = 1;
/// Bytes in the segment header.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// Bytes of framing before each record body: len, crc, seq, durable.
pub const RECORD_HEADER_BYTES: usize = 24;
/// Bytes of framing of a version-1 record: len, crc, seq.
pub const RECORD_HEADER_BYTES_V1: usize = 16;
/// The unit a disk writes atomically (or not at all) and a power cut tears
/// at. Version-2 commits start on a sector boundary and are padded with
/// zeros to the next one, so a commit never rewrites a sector that holds
/// durable data, and a lost sector is recognisable as zeros.
pub const SECTOR_BYTES: u64 = 512;
/// Where the first commit of a version-2 segment starts: the sector after
/// the header's.
pub const FIRST_RECORD_OFFSET_V2: u64 = SECTOR_BYTES;
/// A frame with this seq is a marker, not a record: it carries only a
/// durable watermark and is never handed to the caller.
pub const MARKER_SEQ: u64 = 0;
/// Sequence number of the first record of a new journal (0 is never used, so
/// it can mean "none").
pub const SEQ_FIRST: u64 = 1;
/// Id of the first segment of a new journal.
pub const SEGMENT_ID_FIRST: u64 = 1;
/// Digits in a segment file name: enough for any u64.
const SEGMENT_NAME_DIGITS: usize = 20;
/// Extension of a segment file.
const SEGMENT_EXTENSION: &str = ".seg";

// Header field offsets. The CRC covers every byte before it.
const HEADER_VERSION_AT: usize = 8;
const HEADER_RESERVED_AT: usize = 10;
const HEADER_SEGMENT_ID_AT: usize = 12;
const HEADER_FIRST_SEQ_AT: usize = 20;
const HEADER_CRC_AT: usize = 28;

const _: () = assert!(HEADER_CRC_AT + 4 == SEGMENT_HEADER_BYTES);
const _: () = assert!(u64::MAX.ilog10() as usize + 1 == SEGMENT_NAME_DIGITS);

/// The decoded, checked segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub segment_id: u64,
    pub first_seq: u64,
    /// [`FORMAT_VERSION`] or [`FORMAT_VERSION_V1`].
    pub version: u16,
}

impl SegmentHeader {
    /// A header of the version this build writes.
    pub fn current(segment_id: u64, first_seq: u64) -> SegmentHeader {
        SegmentHeader { segment_id, first_seq, version: FORMAT_VERSION }
    }
}

/// Why a segment header is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderDefect {
    /// Fewer bytes than a header: a crash right after creating the file.
    Short {
        bytes: usize,
    },
    /// A full header of zeros: the file was extended but never written.
    Zeroed,
    BadMagic,
    UnsupportedVersion {
        version: u16,
    },
    BadCrc {
        stored: u32,
        computed: u32,
    },
    ReservedNotZero {
        value: u16,
    },
}

impl HeaderDefect {
    /// Whether this defect may be the result of a crash while the segment was
    /// being created (and so is a torn tail when it is the last segment).
    /// A full header is fsynced before any record is written to the segment,
    /// so such a segment never holds a confirmed record.
    pub fn is_torn(&self) -> bool {
        matches!(self, HeaderDefect::Short { .. } | HeaderDefect::Zeroed)
    }
}

impl fmt::Display for HeaderDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderDefect::Short { bytes } => {
                write!(f, "segment header cut short ({bytes} of {SEGMENT_HEADER_BYTES} bytes)")
            }
            HeaderDefect::Zeroed => write!(f, "segment header is all zero bytes"),
            HeaderDefect::BadMagic => write!(f, "segment header has wrong magic bytes"),
            HeaderDefect::UnsupportedVersion { version } => {
                write!(f, "segment format version {version} is not supported (this build reads 1 and {FORMAT_VERSION})")
            }
            HeaderDefect::BadCrc { stored, computed } => {
                write!(f, "segment header CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")
            }
            HeaderDefect::ReservedNotZero { value } => write!(f, "segment header reserved field is {value}, not 0"),
        }
    }
}

/// Encodes a segment header.
pub fn encode_header(header: SegmentHeader) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
    bytes[..HEADER_VERSION_AT].copy_from_slice(&MAGIC);
    bytes[HEADER_VERSION_AT..HEADER_RESERVED_AT].copy_from_slice(&header.version.to_le_bytes());
    // Reserved bytes stay zero.
    bytes[HEADER_SEGMENT_ID_AT..HEADER_FIRST_SEQ_AT].copy_from_slice(&header.segment_id.to_le_bytes());
    bytes[HEADER_FIRST_SEQ_AT..HEADER_CRC_AT].copy_from_slice(&header.first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..HEADER_CRC_AT]);
    bytes[HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Decodes and checks a segment header from the first bytes of a file
/// (fewer than a header's worth is a `Short` defect). The version is checked
/// before the CRC: a future version may place its CRC elsewhere.
pub fn decode_header(bytes: &[u8]) -> Result<SegmentHeader, HeaderDefect> {
    let Some(bytes) = bytes.get(..SEGMENT_HEADER_BYTES) else {
        return Err(HeaderDefect::Short { bytes: bytes.len() });
    };
    if bytes.iter().all(|&byte| byte == 0) {
        return Err(HeaderDefect::Zeroed);
    }
    if bytes[..HEADER_VERSION_AT] != MAGIC {
        return Err(HeaderDefect::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[HEADER_VERSION_AT], bytes[HEADER_VERSION_AT + 1]]);
    if version != FORMAT_VERSION && version != FORMAT_VERSION_V1 {
        return Err(HeaderDefect::UnsupportedVersion { version });
    }
    let stored = read_u32(bytes, HEADER_CRC_AT);
    let computed = crc32c::crc32c(&bytes[..HEADER_CRC_AT]);
    if stored != computed {
        return Err(HeaderDefect::BadCrc { stored, computed });
    }
    let reserved = u16::from_le_bytes([bytes[HEADER_RESERVED_AT], bytes[HEADER_RESERVED_AT + 1]]);
    if reserved != 0 {
        return Err(HeaderDefect::ReservedNotZero { value: reserved });
    }
    Ok(SegmentHeader {
        segment_id: read_u64(bytes, HEADER_SEGMENT_ID_AT),
        first_seq: read_u64(bytes, HEADER_FIRST_SEQ_AT),
        version,
    })
}

/// The framing before a record body, as read (not yet checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub len: u32,
    pub crc: u32,
    pub seq: u64,
    /// Version 2: the segment offset below which every byte was durable
    /// when this record was written (0 in version 1).
    pub durable: u64,
}

impl RecordHeader {
    /// Decodes the framing bytes of a record of `version` (the slice holds
    /// at least [`record_header_bytes`]).
    pub fn decode(version: u16, bytes: &[u8]) -> RecordHeader {
        let durable = if version == FORMAT_VERSION_V1 { 0 } else { read_u64(bytes, 16) };
        RecordHeader { len: read_u32(bytes, 0), crc: read_u32(bytes, 4), seq: read_u64(bytes, 8), durable }
    }

    /// The CRC this framing's body must have.
    pub fn expected_crc(&self, version: u16, body: &[u8]) -> u32 {
        if version == FORMAT_VERSION_V1 {
            record_crc(self.seq, body)
        } else {
            record_crc_v2(self.len, self.seq, self.durable, body)
        }
    }
}

/// Framing bytes of a record in a segment of `version`.
pub fn record_header_bytes(version: u16) -> usize {
    if version == FORMAT_VERSION_V1 {
        RECORD_HEADER_BYTES_V1
    } else {
        RECORD_HEADER_BYTES
    }
}

/// Where the first record of a segment of `version` may start.
pub fn first_record_offset(version: u16) -> u64 {
    if version == FORMAT_VERSION_V1 {
        SEGMENT_HEADER_BYTES as u64
    } else {
        FIRST_RECORD_OFFSET_V2
    }
}

/// `offset` rounded up to a sector boundary.
pub fn sector_ceil(offset: u64) -> u64 {
    offset.div_ceil(SECTOR_BYTES) * SECTOR_BYTES
}

/// CRC-32C of a version-1 record: over the seq bytes, then the body.
pub fn record_crc(seq: u64, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&seq.to_le_bytes()), body)
}

/// CRC-32C of a version-2 frame: over len, seq, durable, then the body.
pub fn record_crc_v2(len: u32, seq: u64, durable: u64, body: &[u8]) -> u32 {
    let mut fields = [0u8; 20];
    fields[..4].copy_from_slice(&len.to_le_bytes());
    fields[4..12].copy_from_slice(&seq.to_le_bytes());
    fields[12..].copy_from_slice(&durable.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&fields), body)
}

/// Appends one version-2 frame to `out`. The caller has checked the body's
/// length against the record limit.
pub fn encode_record(seq: u64, durable: u64, body: &[u8], out: &mut Vec<u8>) {
    let at = out.len();
    out.reserve(RECORD_HEADER_BYTES + body.len());
    out.resize(at + RECORD_HEADER_BYTES, 0);
    out.extend_from_slice(body);
    frame_in_place(seq, durable, &mut out[at..]);
}

/// Writes the framing of a version-2 frame into its first
/// [`RECORD_HEADER_BYTES`], around the body that follows them in `frame`
/// (encoded there in place, so it is never copied). The caller has checked
/// the body's length against the record limit.
pub fn frame_in_place(seq: u64, durable: u64, frame: &mut [u8]) {
    let (header, body) = frame.split_at_mut(RECORD_HEADER_BYTES);
    let len = u32::try_from(body.len()).expect("record length checked against RECORD_BYTES_MAX by the caller");
    header[..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&record_crc_v2(len, seq, durable, body).to_le_bytes());
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    header[16..].copy_from_slice(&durable.to_le_bytes());
}

/// Appends one version-1 record to `out` (tests of the old format only).
#[cfg(test)]
pub fn encode_record_v1(seq: u64, body: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(body.len()).expect("record length checked by the caller");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record_crc(seq, body).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(body);
}

/// Bytes a version-2 record of `body_len` takes on disk.
pub fn framed_len(body_len: usize) -> u64 {
    RECORD_HEADER_BYTES as u64 + body_len as u64
}

/// File name of a segment: `<20-digit zero-padded id>.seg`.
pub fn segment_file_name(segment_id: u64) -> String {
    format!("{segment_id:0width$}{SEGMENT_EXTENSION}", width = SEGMENT_NAME_DIGITS)
}

/// The id in a segment file name, or `None` if the name is not exactly a
/// segment name (other files in the directory are not segments).
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_EXTENSION)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let header = SegmentHeader::current(7, 1234);
        assert_eq!(decode_header(&encode_header(header)), Ok(header));
    }

    #[test]
    fn header_defects_are_named() {
        let good = encode_header(SegmentHeader::current(1, 1));
        assert_eq!(decode_header(&good[..10]), Err(HeaderDefect::Short { bytes: 10 }));
        assert_eq!(decode_header(&[0u8; SEGMENT_HEADER_BYTES]), Err(HeaderDefect::Zeroed));
        let mut bad = good;
        bad[0] ^= 1;
        assert_eq!(decode_header(&bad), Err(HeaderDefect::BadMagic));
        let mut bad = good;
        bad[HEADER_VERSION_AT] = 3;
        assert_eq!(decode_header(&bad), Err(HeaderDefect::UnsupportedVersion { version: 3 }));
        let mut bad = good;
        bad[HEADER_FIRST_SEQ_AT] ^= 1;
        assert!(matches!(decode_header(&bad), Err(HeaderDefect::BadCrc { .. })));
    }

    #[test]
    fn record_framing_is_len_crc_seq_durable_body() {
        let mut out = Vec::new();
        encode_record(5, 512, b"abc", &mut out);
        assert_eq!(out.len() as u64, framed_len(3));
        let header = RecordHeader::decode(FORMAT_VERSION, &out[..RECORD_HEADER_BYTES]);
        assert_eq!(header, RecordHeader { len: 3, crc: record_crc_v2(3, 5, 512, b"abc"), seq: 5, durable: 512 });
        assert_eq!(header.expected_crc(FORMAT_VERSION, b"abc"), header.crc);
        assert_eq!(&out[RECORD_HEADER_BYTES..], b"abc");
    }

    #[test]
    fn segment_names_round_trip_and_reject_strangers() {
        assert_eq!(segment_file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_segment_file_name(&segment_file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_file_name("42.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.seg"), None);
        assert_eq!(parse_segment_file_name("00000000000000000042.seg.tail"), None);
        assert_eq!(parse_segment_file_name("99999999999999999999.seg"), None);
        assert_eq!(parse_segment_file_name("LOCK"), None);
    }
}
