//! Full-disk support: every segment is preallocated (appends inside it
//! cannot meet ENOSPC), and the next segment waits preallocated in
//! `RESERVE`, so when the disk fills up the journal still has a whole
//! segment of room (see the crate docs, "Full disk").

use std::io;
use std::path::{Path, PathBuf};

use crate::error::JournalError;
use crate::format::{encode_header, segment_file_name, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::inspect::SegmentInfo;
use crate::storage::{is_no_space, Storage, StorageFile};

/// Name of the preallocated file that becomes the next segment.
pub const RESERVE_FILE_NAME: &str = "RESERVE";

/// What the journal can still write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpaceState {
    /// The next segment is reserved: nothing the journal writes can meet a
    /// full disk before another reserve is attempted.
    Ok,
    /// The reserve is gone and could not be made again. Appends still fit
    /// in the `reserve_bytes_left` preallocated bytes left in the active
    /// segment; the commit that needs a new segment after that fails with
    /// [`JournalError::NoSpace`] (nothing written, journal still usable).
    Low { reserve_bytes_left: u64, reason: String },
}

/// The reserve file and whether it is ready.
#[derive(Debug)]
pub struct Reserve {
    dir: PathBuf,
    path: PathBuf,
    ready: bool,
    /// Why the last attempt to make it failed.
    failure: Option<String>,
}

impl Reserve {
    pub fn new(dir: &Path) -> Reserve {
        Reserve { dir: dir.to_path_buf(), path: dir.join(RESERVE_FILE_NAME), ready: false, failure: None }
    }

    /// At open: a reserve an earlier run left is used (and completed).
    pub fn find(&mut self, storage: &dyn Storage, length: u64) {
        if storage.open(&self.path, true).is_ok() {
            self.refill(storage, length);
        }
    }

    /// Makes the reserve if it is not ready; a failure is remembered for
    /// [`Reserve::state`], never an error (the journal can go on without).
    pub fn refill(&mut self, storage: &dyn Storage, length: u64) {
        if self.ready {
            return;
        }
        match self.make(storage, length) {
            Ok(()) => {
                self.ready = true;
                self.failure = None;
            }
            Err(error) => {
                // Give back whatever a partial allocation took.
                let _ = storage.remove_file(&self.path);
                if self.failure.is_none() {
                    tracing::warn!(dir = %self.dir.display(), %error, "journal: cannot preallocate the next segment");
                }
                self.failure = Some(format!("cannot preallocate the next segment: {error}"));
            }
        }
    }

    fn make(&self, storage: &dyn Storage, length: u64) -> io::Result<()> {
        let file = match storage.create_new(&self.path) {
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => storage.open(&self.path, true)?,
            other => other?,
        };
        file.allocate(length)?;
        file.sync_all()?;
        storage.sync_dir(&self.dir)
    }

    pub fn state(&self, room: u64) -> SpaceState {
        if self.ready {
            return SpaceState::Ok;
        }
        let reason = self.failure.clone().unwrap_or_else(|| "no reserve yet".to_string());
        SpaceState::Low { reserve_bytes_left: room, reason }
    }
}

/// A new segment `segment_id`: the reserve renamed into place (or a new file
/// preallocated to `length`), its header written, the file and the directory
/// fsynced, before any record is written to it. Returns the file, its info
/// and its allocated length. A full disk is `NoSpace`, with nothing left
/// behind.
pub fn create_segment(
    storage: &dyn Storage,
    reserve: &mut Reserve,
    segment_id: u64,
    first_seq: u64,
    length: u64,
) -> Result<(Box<dyn StorageFile>, SegmentInfo, u64), JournalError> {
    let path = reserve.dir.join(segment_file_name(segment_id));
    let file = if reserve.ready {
        storage.rename(&reserve.path, &path).map_err(JournalError::io(&reserve.path))?;
        reserve.ready = false;
        storage.open(&path, true).map_err(JournalError::io(&path))?
    } else {
        let file = storage.create_new(&path).map_err(|source| no_space_or_io(&path, source))?;
        if let Err(source) = file.allocate(length.max(SEGMENT_HEADER_BYTES as u64)) {
            let _ = storage.remove_file(&path);
            return Err(no_space_or_io(&path, source));
        }
        file
    };
    let header = SegmentHeader::current(segment_id, first_seq);
    file.write_all_at(&encode_header(header), 0).map_err(JournalError::io(&path))?;
    file.sync_all().map_err(JournalError::io(&path))?;
    crate::fs::fsync_dir(storage, &reserve.dir)?;
    let allocated = file.len().map_err(JournalError::io(&path))?;
    let info = SegmentInfo {
        id: segment_id,
        path,
        bytes: SEGMENT_HEADER_BYTES as u64,
        first_seq,
        records: 0,
        version: header.version,
    };
    Ok((file, info, allocated))
}

/// `NoSpace` for a full disk (or quota), `Io` for anything else.
pub fn no_space_or_io(path: &Path, source: io::Error) -> JournalError {
    if is_no_space(&source) {
        JournalError::NoSpace { path: path.to_path_buf(), source }
    } else {
        JournalError::Io { path: path.to_path_buf(), source }
    }
}

/// Placeholder for the active file while `open` builds the journal.
#[derive(Debug)]
pub struct Closed;

impl StorageFile for Closed {
    fn len(&self) -> io::Result<u64> {
        Err(closed())
    }
    fn read_exact_at(&self, _: &mut [u8], _: u64) -> io::Result<()> {
        Err(closed())
    }
    fn write_all_at(&self, _: &[u8], _: u64) -> io::Result<()> {
        Err(closed())
    }
    fn set_len(&self, _: u64) -> io::Result<()> {
        Err(closed())
    }
    fn allocate(&self, _: u64) -> io::Result<()> {
        Err(closed())
    }
    fn sync_data(&self) -> io::Result<()> {
        Err(closed())
    }
    fn sync_all(&self) -> io::Result<()> {
        Err(closed())
    }
}

fn closed() -> io::Error {
    io::Error::other("no active segment yet")
}
