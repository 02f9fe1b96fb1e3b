//! Small file-system helpers over [`Storage`]: directory fsync, the
//! directory lock, listing segments.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::JournalError;
use crate::format::parse_segment_file_name;
use crate::storage::{LockGuard, Storage};

/// Name of the lock file inside a journal directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Fsyncs a directory, so that files created, renamed or removed in it stay
/// so after a crash.
pub fn fsync_dir(storage: &dyn Storage, dir: &Path) -> Result<(), JournalError> {
    storage.sync_dir(dir).map_err(JournalError::io(dir))
}

/// Takes the exclusive lock on `DIR/LOCK`, failing at once if it is held. The
/// lock belongs to the returned guard: it is released when the guard is
/// dropped, or when the process dies.
pub fn lock_dir(storage: &dyn Storage, dir: &Path) -> Result<LockGuard, JournalError> {
    match storage.lock(dir) {
        Ok(guard) => Ok(guard),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Err(JournalError::Locked { dir: dir.to_path_buf() }),
        Err(source) => Err(JournalError::Io { path: dir.join(LOCK_FILE_NAME), source }),
    }
}

/// The segment files in `dir`, sorted by id. Other entries (the lock file,
/// the reserve, quarantine directories, anything an operator left) are not
/// segments.
pub fn list_segments(storage: &dyn Storage, dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut segments = Vec::new();
    for name in storage.list(dir).map_err(JournalError::io(dir))? {
        if let Some(segment_id) = parse_segment_file_name(&name) {
            segments.push((segment_id, dir.join(name)));
        }
    }
    segments.sort_unstable_by_key(|(segment_id, _)| *segment_id);
    Ok(segments)
}
