//! Small file-system helpers: directory fsync, the directory lock, listing.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::JournalError;
use crate::format::parse_segment_file_name;

/// Name of the lock file inside a journal directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Fsyncs a directory, so that files created, renamed or removed in it stay
/// so after a crash.
pub fn fsync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|handle| handle.sync_all()).map_err(JournalError::io(dir))
}

/// Takes the exclusive lock on `DIR/LOCK`, failing at once if it is held. The
/// lock belongs to the returned handle (to its open file description): it is
/// released when the handle is dropped, or when the process dies.
pub fn lock_dir(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join(LOCK_FILE_NAME);
    let file =
        OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(JournalError::io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(JournalError::Locked { dir: dir.to_path_buf() }),
        Err(TryLockError::Error(source)) => Err(JournalError::Io { path, source }),
    }
}

/// The segment files in `dir`, sorted by id. Other entries (the lock file,
/// quarantine directories, anything an operator left) are not segments.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(JournalError::io(dir))? {
        let entry = entry.map_err(JournalError::io(dir))?;
        let Some(segment_id) = entry.file_name().to_str().and_then(parse_segment_file_name) else {
            continue;
        };
        segments.push((segment_id, entry.path()));
    }
    segments.sort_unstable_by_key(|(segment_id, _)| *segment_id);
    Ok(segments)
}
