//! The narrow storage interface: every file operation of the journal goes
//! through [`Storage`] and [`StorageFile`], so the deterministic simulation
//! can put the journal on [`crate::SimStorage`] (power cuts, torn writes,
//! bit flips, a full disk, failing fsyncs) while production uses
//! [`OsStorage`]. Both traits are object-safe: the journal holds an
//! `Arc<dyn Storage>`, so no generic parameter spreads into its callers.
//! One call per commit goes through the vtable, never one per record.

use std::any::Any;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Held while a directory is locked; dropping it releases the lock.
pub type LockGuard = Box<dyn Any + Send + Sync>;

/// One open file. Positioned reads and writes only (no shared cursor), so
/// `&self` suffices and the simulation can reason about each write.
// `len` is a file length, fallible; an `is_empty` would add nothing.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Reads exactly `buf.len()` bytes at `offset` (`UnexpectedEof` past the end).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Truncates or extends (sparse, no blocks reserved) to `len`.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserves blocks so the file is at least `len` bytes long, zeros past
    /// the old end (`posix_fallocate`): later writes below `len` cannot fail
    /// with ENOSPC.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// `fdatasync`: the data and the length.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync`: data and all metadata.
    fn sync_all(&self) -> io::Result<()>;
}

/// A file system as the journal uses it.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Whether `dir` exists and is a directory.
    fn is_dir(&self, dir: &Path) -> bool;
    /// Creates `dir` and its parents (what exists already is fine).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates one directory; `AlreadyExists` if it does.
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    /// Fsyncs a directory: entries created, renamed or removed in it stay so
    /// after a power cut.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries of `dir` (files and directories), any order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new, empty file for reading and writing; `AlreadyExists` if
    /// the name is taken.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Opens an existing file, read-only or for reading and writing.
    fn open(&self, path: &Path, writable: bool) -> io::Result<Box<dyn StorageFile>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Atomic rename within one file system.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Takes the exclusive lock of `dir` (on `dir/LOCK`), failing at once
    /// with `WouldBlock` if another holder has it.
    fn lock(&self, dir: &Path) -> io::Result<LockGuard>;
}

/// The storage the journal uses unless told otherwise: the real file system.
pub fn os() -> Arc<dyn Storage> {
    Arc::new(OsStorage)
}

/// The operating system's file system (std, plus `posix_fallocate`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsStorage;

#[derive(Debug)]
struct OsFile(File);

impl StorageFile for OsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.0, buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let len = libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // posix_fallocate returns the error number instead of setting errno.
        // glibc emulates it by writing zeros where the file system lacks
        // fallocate, so blocks are reserved either way.
        match unsafe { libc::posix_fallocate(self.0.as_raw_fd(), 0, len) } {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}

impl Storage for OsStorage {
    fn is_dir(&self, dir: &Path) -> bool {
        dir.is_dir()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            // A name that is not UTF-8 is nothing of ours.
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        Ok(Box::new(OsFile(file)))
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        Ok(Box::new(OsFile(file)))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn lock(&self, dir: &Path) -> io::Result<LockGuard> {
        let path: PathBuf = dir.join(crate::fs::LOCK_FILE_NAME);
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(file)),
            Err(TryLockError::WouldBlock) => Err(io::Error::from(io::ErrorKind::WouldBlock)),
            Err(TryLockError::Error(error)) => Err(error),
        }
    }
}

/// Whether an IO error says the disk (or the quota) is full.
pub fn is_no_space(error: &io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    error.kind() == io::ErrorKind::StorageFull || matches!(error.raw_os_error(), Some(ENOSPC | EDQUOT))
}
