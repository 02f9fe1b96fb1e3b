//! The on-disk layout: segment names, the segment header and record framing.
//!
//! Pure functions only (no IO), so every check here is unit-tested without
//! files. The layout is described for readers in the crate-level docs.

use std::fmt;

/// First bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"ORDRLYJ\0";
/// The only format version this build reads or writes.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes in the segment header.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// Bytes of framing before each record body: len, crc, seq.
pub const RECORD_HEADER_BYTES: usize = 16;
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
                write!(f, "segment format version {version} is not supported (this build reads {FORMAT_VERSION})")
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
    bytes[HEADER_VERSION_AT..HEADER_RESERVED_AT].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
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
    if version != FORMAT_VERSION {
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
    })
}

/// The framing before a record body, as read (not yet checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub len: u32,
    pub crc: u32,
    pub seq: u64,
}

impl RecordHeader {
    /// Decodes the 16 framing bytes.
    pub fn decode(bytes: &[u8; RECORD_HEADER_BYTES]) -> RecordHeader {
        RecordHeader { len: read_u32(bytes, 0), crc: read_u32(bytes, 4), seq: read_u64(bytes, 8) }
    }
}

/// CRC-32C of a record: over the seq bytes, then the body.
pub fn record_crc(seq: u64, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&seq.to_le_bytes()), body)
}

/// Appends one framed record to `out`. The caller has checked the body's
/// length against the record limit.
pub fn encode_record(seq: u64, body: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(body.len()).expect("record length checked against RECORD_BYTES_MAX by the caller");
    out.reserve(RECORD_HEADER_BYTES + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record_crc(seq, body).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(body);
}

/// Bytes a record of `body_len` takes on disk.
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
        let header = SegmentHeader { segment_id: 7, first_seq: 1234 };
        assert_eq!(decode_header(&encode_header(header)), Ok(header));
    }

    #[test]
    fn header_defects_are_named() {
        let good = encode_header(SegmentHeader { segment_id: 1, first_seq: 1 });
        assert_eq!(decode_header(&good[..10]), Err(HeaderDefect::Short { bytes: 10 }));
        assert_eq!(decode_header(&[0u8; SEGMENT_HEADER_BYTES]), Err(HeaderDefect::Zeroed));
        let mut bad = good;
        bad[0] ^= 1;
        assert_eq!(decode_header(&bad), Err(HeaderDefect::BadMagic));
        let mut bad = good;
        bad[HEADER_VERSION_AT] = 2;
        assert_eq!(decode_header(&bad), Err(HeaderDefect::UnsupportedVersion { version: 2 }));
        let mut bad = good;
        bad[HEADER_FIRST_SEQ_AT] ^= 1;
        assert!(matches!(decode_header(&bad), Err(HeaderDefect::BadCrc { .. })));
    }

    #[test]
    fn record_framing_is_len_crc_seq_body() {
        let mut out = Vec::new();
        encode_record(5, b"abc", &mut out);
        assert_eq!(out.len() as u64, framed_len(3));
        let mut framing = [0u8; RECORD_HEADER_BYTES];
        framing.copy_from_slice(&out[..RECORD_HEADER_BYTES]);
        let header = RecordHeader::decode(&framing);
        assert_eq!(header, RecordHeader { len: 3, crc: record_crc(5, b"abc"), seq: 5 });
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
