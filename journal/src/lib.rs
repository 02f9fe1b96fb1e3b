//! A segmented, append-only, checksummed log of opaque byte records.
//!
//! The broker encodes its events and hands the bytes to this crate; the
//! producer reuses it for its on-disk outbox. The crate knows nothing about
//! what the records mean.
//!
//! # Using it
//!
//! [`Journal::open`] locks the directory and recovers; [`Journal::replay`]
//! streams every record to rebuild state; [`Journal::append`] buffers a
//! record and says its sequence number and segment; [`Journal::commit`]
//! writes the batch with one write and (by [`FsyncPolicy`]) one fsync —
//! acknowledge only after a commit under `FsyncPolicy::Always`. Compaction:
//! commit, [`Journal::roll`], append the live records, commit, then
//! [`Journal::remove_oldest_segment`] for each old segment. Offline:
//! [`verify`] (read-only) and [`repair`] (moves damage to a quarantine
//! directory, never deletes).
//!
//! # On-disk format (version 1)
//!
//! A journal is one directory holding:
//!
//! - segment files named `<segment id, 20 digits zero-padded>.seg`
//!   (e.g. `00000000000000000001.seg`); ids start at 1 and increase by
//!   exactly 1 — compaction removes only the oldest, so the ids on disk
//!   are always contiguous;
//! - `LOCK`, an empty file whose exclusive lock (`flock` through std's
//!   `File::try_lock`) the open journal or a running `repair` holds;
//! - after a repair, `quarantine-<unix-time>[-n]/` directories with the
//!   data it moved aside. Nothing else in the directory is read.
//!
//! Every segment starts with a 32-byte header (integers little-endian):
//!
//! | offset | bytes | field                                           |
//! |--------|-------|-------------------------------------------------|
//! | 0      | 8     | magic `ORDRLYJ\0`                               |
//! | 8      | 2     | format version, u16 = 1 (others refused)        |
//! | 10     | 2     | reserved, u16 = 0                               |
//! | 12     | 8     | segment id, u64 (must match the file name)      |
//! | 20     | 8     | seq of the segment's first record, u64 (≥ 1)    |
//! | 28     | 4     | CRC-32C of bytes 0..28, u32                     |
//!
//! Records follow back to back, each framed as:
//!
//! | bytes | field                                                        |
//! |-------|--------------------------------------------------------------|
//! | 4     | `len`: body length, u32 LE (at most [`RECORD_BYTES_MAX`])    |
//! | 4     | `crc`: CRC-32C (Castagnoli) over the 8 `seq` bytes, then the body, u32 LE |
//! | 8     | `seq`: sequence number, u64 LE                               |
//! | `len` | body                                                         |
//!
//! Sequence numbers start at 1, are global across segments and increase by
//! exactly 1: a segment's first record has its header's first seq, which is
//! the previous segment's last seq + 1. A reader checks `len` against the
//! limit (and against the bytes left in the file) *before* allocating, then
//! the CRC, then the seq.
//!
//! # Durability
//!
//! A commit is one `write` of every buffered record and, under
//! `FsyncPolicy::Always`, one `fdatasync`. A new segment is created with its
//! header, fsynced, and the directory fsynced, before any record is written
//! to it; the segment it closes is fsynced first, whatever the policy, so
//! only the last segment can ever hold a torn record. Removing a segment
//! fsyncs the directory.
//!
//! # Recovery rules (`Journal::open`)
//!
//! - A bad record in the **last** segment — cut short, a length above the
//!   limit or past the end of the file, a CRC mismatch, a seq that is not the
//!   previous + 1, or zero bytes where a record should start (an unwritten or
//!   preallocated tail) — is a torn tail: the file is truncated at that
//!   record's start, fsynced, logged with `tracing::warn!`, and reported in
//!   [`Recovery::truncated`]. So is a last segment whose header is shorter
//!   than 32 bytes or all zeros (a crash while it was created): it never
//!   held a record, so it is removed.
//! - The same anywhere else, a bad header (wrong magic, CRC, id or first
//!   seq) in any segment, a missing segment id, or a gap in sequence numbers
//!   between segments is corruption: [`JournalError::Corrupt`] names the
//!   file and offset and the journal does not open (run `repair`). A segment
//!   of another version is [`JournalError::UnsupportedVersion`].
//! - An IO error is always [`JournalError::Io`], never corruption.
//! - An empty (or missing) directory becomes a fresh journal: segment 1,
//!   first seq 1, created at open.

mod check;
mod error;
mod format;
mod fs;
mod inspect;
mod journal;
mod limits;
mod options;
mod recover;
mod scan;
mod sim;
mod space;
mod storage;

pub use check::{repair, repair_on, verify, verify_on, MovedData, RepairReport, VerifyReport, QUARANTINE_DIR_PREFIX};
pub use error::{JournalError, ParseFsyncPolicyError, ReplayError};
pub use format::{
    FIRST_RECORD_OFFSET_V2, FORMAT_VERSION, FORMAT_VERSION_V1, MAGIC, RECORD_HEADER_BYTES, RECORD_HEADER_BYTES_V1,
    SECTOR_BYTES, SEGMENT_HEADER_BYTES, SEGMENT_ID_FIRST, SEQ_FIRST,
};
pub use fs::LOCK_FILE_NAME;
pub use inspect::{read_records, read_records_on, Inspection, Problem, ProblemKind, SegmentInfo};
pub use journal::{CommitInfo, Journal, RecordAt, LAZY_SYNC_MAX};
pub use limits::{BATCH_BYTES_MAX_DEFAULT, READ_BUFFER_BYTES, RECORD_BYTES_MAX, SEGMENT_BYTES_TARGET_DEFAULT};
pub use options::{FsyncPolicy, Options};
pub use recover::{Recovery, TruncatedTail};
pub use sim::{FlipReport, SimCounters, SimStorage};
pub use space::{SpaceState, RESERVE_FILE_NAME};
pub use storage::{is_no_space, LockGuard, OsStorage, Storage, StorageFile};

#[cfg(test)]
mod tests;
