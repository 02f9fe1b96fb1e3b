//! A power cut *inside* a call: [`CrashPointDisk`] wraps a [`SimStorage`]
//! and, once armed, cuts the power at the n-th fsync from then on — after
//! the write it would have made durable, before it does. Under
//! `FsyncPolicy::Always` every commit of a group member (its event journal
//! and its raft journal) is fsynced before the call returns, so a power
//! cut *between* two turns loses nothing; this is how the group simulation
//! reaches the windows that matter (a batch written but not durable, a
//! raft entry appended but its hard state not). The fsync that meets the
//! cut fails with an IO error and so does everything after it: the
//! "process" notices and the simulation takes the member down.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use orderly_journal::{LockGuard, SimStorage, Storage, StorageFile};

/// Armed with `n`: the n-th fsync from now cuts the power. 0: disarmed.
#[derive(Debug, Clone, Default)]
pub struct CrashPoint(Arc<AtomicU64>);

/// Set once the power was cut: every later fsync fails.
const FIRED: u64 = u64::MAX;

impl CrashPoint {
    pub fn arm(&self, syncs: u64) {
        assert!(syncs > 0 && syncs < FIRED);
        self.0.store(syncs, Ordering::Relaxed);
    }

    pub fn disarm(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    pub fn armed(&self) -> bool {
        self.0.load(Ordering::Relaxed) != 0 && !self.fired()
    }

    pub fn fired(&self) -> bool {
        self.0.load(Ordering::Relaxed) == FIRED
    }

    /// One fsync about to happen on `disk`: false if the power fails first.
    fn sync_survives(&self, disk: &SimStorage) -> bool {
        match self.0.load(Ordering::Relaxed) {
            0 => true,
            FIRED => false,
            1 => {
                self.0.store(FIRED, Ordering::Relaxed);
                disk.power_cut();
                false
            }
            n => {
                self.0.store(n - 1, Ordering::Relaxed);
                true
            }
        }
    }
}

fn cut() -> io::Error {
    io::Error::other("simulated power cut at this fsync")
}

/// A [`SimStorage`] with a [`CrashPoint`] on its fsyncs.
#[derive(Debug, Clone)]
pub struct CrashPointDisk {
    pub disk: SimStorage,
    pub point: CrashPoint,
}

#[derive(Debug)]
struct CrashPointFile {
    file: Box<dyn StorageFile>,
    disk: SimStorage,
    point: CrashPoint,
}

impl StorageFile for CrashPointFile {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.file.allocate(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        if !self.point.sync_survives(&self.disk) {
            return Err(cut());
        }
        self.file.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        if !self.point.sync_survives(&self.disk) {
            return Err(cut());
        }
        self.file.sync_all()
    }
}

impl CrashPointDisk {
    fn wrap(&self, file: Box<dyn StorageFile>) -> Box<dyn StorageFile> {
        Box::new(CrashPointFile { file, disk: self.disk.clone(), point: self.point.clone() })
    }
}

impl Storage for CrashPointDisk {
    fn is_dir(&self, dir: &Path) -> bool {
        self.disk.is_dir(dir)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.disk.create_dir_all(dir)
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        self.disk.create_dir(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if !self.point.sync_survives(&self.disk) {
            return Err(cut());
        }
        self.disk.sync_dir(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.disk.list(dir)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        self.disk.create_new(path).map(|file| self.wrap(file))
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Box<dyn StorageFile>> {
        self.disk.open(path, writable).map(|file| self.wrap(file))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.disk.remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.disk.rename(from, to)
    }

    fn lock(&self, dir: &Path) -> io::Result<LockGuard> {
        self.disk.lock(dir)
    }
}
