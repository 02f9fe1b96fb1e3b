//! Every bound of the journal, named, in one place.
//!
//! A limit reached is a typed error, never unbounded growth. The compile-time
//! assertions at the bottom state how the limits relate.

use crate::format::RECORD_HEADER_BYTES;

/// Largest record body, in bytes. Readers reject a larger length *before*
/// allocating, so a corrupt length cannot make them allocate gigabytes;
/// `Options::record_bytes_max` may lower it, never raise it.
pub const RECORD_BYTES_MAX: u32 = 32 * 1024 * 1024;

/// Default size at which the active segment is closed and the next commit
/// starts a new one. Small enough that compaction can drop old segments
/// often, large enough that rolling (two extra fsyncs) stays rare.
pub const SEGMENT_BYTES_TARGET_DEFAULT: u64 = 64 * 1024 * 1024;

/// Largest segment size a caller may ask for. A segment ends at most one
/// batch past it, so every record's offset fits a `u32` (as does a segment
/// id): the broker's index packs a payload's place in 16 bytes (issue 20).
/// 1 GiB is 16 times the default.
pub const SEGMENT_BYTES_TARGET_MAX: u64 = 1024 * 1024 * 1024;

/// Default bound on the bytes buffered between two commits (framing
/// included). One batch is one `write`; the bound keeps a caller that forgets
/// to commit from growing memory without end.
pub const BATCH_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;

/// Capacity the batch buffer keeps between commits; a larger one is given
/// back, so one burst (a compaction's copies, a large turn) does not pin
/// memory. 4 MiB (8 in 0.5.1) holds a broker turn's batch at its
/// intake bound (2 MiB of intake a turn, `INTAKE_BATCH_BYTES_MAX`, and its
/// acks and dispatches), so a busy broker still reuses one buffer.
pub(crate) const BATCH_BUFFER_RETAINED_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Default for `Options::zero_ahead_bytes`: how far past a commit's end the
/// journal writes zeros over the preallocated space. Preallocated blocks
/// are "unwritten" extents (ext4, XFS): the first write into one changes
/// the file's extent map, so its `fdatasync` writes metadata too (the
/// inode here, where ext4 runs without a journal; a journal commit
/// elsewhere). Zeros written ahead make the next small commits land in
/// written blocks, whose `fdatasync` flushes data only, as PostgreSQL's
/// zero-filled WAL segments do (`wal_init_zero`). Measured here: a 4 KiB
/// commit's `fdatasync` p50 0.25 → 0.18 ms. The commit that writes the
/// zeros fsyncs them too, so they are kept small: 128 KiB is about 100
/// orders of a 1,000 orders/s broker between two zero writes, each a
/// fraction of a millisecond (1 MiB, ~2 ms each, put more orders in the
/// confirm p99: 1.19 → 1.10 ms, medians of 8 interleaved pairs).
pub const ZERO_AHEAD_BYTES_DEFAULT: u64 = 128 * 1024;

/// Zeros are written ahead only after this many small commits in a row.
/// A loaded broker alternates large intake commits with small ones (its
/// acks): zeros written ahead there would be overwritten by the next
/// large commit, every byte written twice where the device is busiest.
/// A broker at 1,000 orders/s makes about two small commits an order.
pub const ZERO_AHEAD_AFTER_SMALL_COMMITS: u32 = 16;

/// Largest `Options::zero_ahead_bytes`: the zeros ride in the batch buffer.
pub const ZERO_AHEAD_BYTES_MAX: u64 = 1024 * 1024;

/// Zeros are written ahead only by commits of at most this many bytes
/// (the data; 0 in `Options::zero_ahead_bytes` turns it off), and only
/// after `ZERO_AHEAD_AFTER_SMALL_COMMITS` of them in a row. A large commit
/// (a loaded broker's batch) pays the metadata change once for its many
/// records.
pub const ZERO_AHEAD_COMMIT_BYTES_MAX: u64 = 64 * 1024;

/// Read buffer for scanning segments: large sequential reads, small memory.
pub const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Attempts at a fresh `quarantine-<unix-time>[-n]` name before `repair`
/// gives up (two repairs in the same second are already unusual).
pub const QUARANTINE_NAME_ATTEMPTS_MAX: u32 = 100;

const _: () = assert!(RECORD_BYTES_MAX as u64 + RECORD_HEADER_BYTES as u64 <= BATCH_BYTES_MAX_DEFAULT);
// A record's length must fit the framing's u32 length field with room to
// spare, and a whole frame must fit in memory on 32-bit targets too.
const _: () = assert!((RECORD_BYTES_MAX as u64) < (u32::MAX as u64) / 2);
const _: () = assert!(READ_BUFFER_BYTES >= RECORD_HEADER_BYTES);
const _: () = assert!(BATCH_BUFFER_RETAINED_BYTES_MAX as u64 <= BATCH_BYTES_MAX_DEFAULT);
const _: () = assert!(SEGMENT_BYTES_TARGET_DEFAULT <= SEGMENT_BYTES_TARGET_MAX);
const _: () = assert!(SEGMENT_BYTES_TARGET_MAX + BATCH_BYTES_MAX_DEFAULT <= u32::MAX as u64);
const _: () = assert!(QUARANTINE_NAME_ATTEMPTS_MAX >= 1);
// A zero write stays a small part of the batch buffer that holds it.
const _: () = assert!(ZERO_AHEAD_BYTES_DEFAULT <= ZERO_AHEAD_BYTES_MAX);
const _: () = assert!(ZERO_AHEAD_AFTER_SMALL_COMMITS >= 1);
const _: () = assert!(ZERO_AHEAD_BYTES_MAX + ZERO_AHEAD_COMMIT_BYTES_MAX <= BATCH_BUFFER_RETAINED_BYTES_MAX as u64);
