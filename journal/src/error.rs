//! Typed errors. An IO error is never reported as corruption: `Io` means the
//! operating system failed us, `Corrupt` means the bytes on disk are wrong.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong opening, writing, verifying or repairing a
/// journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The operating system failed a file operation (the OS error is the
    /// source, printed once by `{:#}`, not repeated in this message).
    #[error("IO error on {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The bytes on disk are wrong somewhere recovery may not cut them off.
    #[error("journal corrupt: {} at offset {offset}: {reason}", file.display())]
    Corrupt { file: PathBuf, offset: u64, reason: String },
    /// Another `Journal` (this process or another) holds the directory lock.
    #[error("journal directory {} is locked by another process (or another handle in this one)", dir.display())]
    Locked { dir: PathBuf },
    /// A record body above the limit.
    #[error("record of {len} bytes is above the limit of {max} bytes")]
    RecordTooLarge { len: u64, max: u32 },
    /// The records buffered since the last commit would exceed the batch
    /// limit, or the preallocated end of their segment (`max` is then the
    /// room there): commit first.
    #[error("batch of {pending_bytes} buffered bytes cannot take {record_bytes} more (limit {max}): commit first")]
    BatchFull { pending_bytes: u64, record_bytes: u64, max: u64 },
    /// A segment written by a newer (or unknown) format version.
    #[error("{}: segment format version {version} is not supported (this build reads {})", file.display(), crate::format::FORMAT_VERSION)]
    UnsupportedVersion { file: PathBuf, version: u16 },
    /// `Options` that cannot work.
    #[error("invalid journal options: {reason}")]
    InvalidOptions { reason: String },
    /// `remove_oldest_segment` refused (only the oldest, never the active).
    #[error("cannot remove segment {segment_id}: {reason}")]
    RemoveRefused { segment_id: u64, reason: String },
    /// The disk (or quota) is full where a new segment (or the extension of
    /// the active one) was needed. Nothing was written and the buffered
    /// records are kept: the journal stays usable, and the same commit can
    /// be retried once space is freed (see [`crate::Journal::space`]).
    #[error("no space on the journal's disk for {}: nothing was written; free space, then commit again", path.display())]
    NoSpace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An earlier write or fsync failed, so what is on disk is unknown (and a
    /// retried fsync may report success for lost data): reopen to recover.
    #[error("journal {} is unusable after an earlier write or fsync error: reopen it to recover", dir.display())]
    Poisoned { dir: PathBuf },
}

impl JournalError {
    /// Wraps an IO error with the path it concerns.
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
        move |source| JournalError::Io { path: path.to_path_buf(), source }
    }
}

/// Failure of [`crate::Journal::replay`]: the journal's or the callback's.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError<E> {
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The callback refused the record `seq`.
    #[error("replay callback failed at seq {seq}: {error}")]
    Callback { seq: u64, error: E },
}

/// A string that is not a fsync policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fsync policy {input:?}: expected \"always\", \"never\" or \"interval:MS\" (MS a positive integer)")]
pub struct ParseFsyncPolicyError {
    pub input: String,
}
