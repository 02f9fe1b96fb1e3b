//! A simulated disk for the deterministic simulation: in memory, no clock,
//! every choice drawn from a seeded generator, and it knows which bytes and
//! which directory entries are durable.
//!
//! Model (after TigerBeetle's VOPR storage and Iggy's `MemStorage`):
//! - each file has what reads see (the page cache) and what is durable; a
//!   write or a length change is pending until `sync_data`/`sync_all`;
//! - directory operations (create, remove, rename, mkdir) are pending until
//!   a `sync_dir` of a directory they touch, which makes every operation up
//!   to the last one touching it durable (the file system's journal
//!   commits in order);
//! - [`SimStorage::power_cut`] keeps the durable state plus a seeded subset
//!   of the pending operations, in order; a kept write keeps a seeded subset
//!   of its 512-byte sectors (a torn write). Handles and locks of the dead
//!   process fail or vanish;
//! - [`SimStorage::flip_bit`] changes one bit of durable data;
//! - past [`SimStorage::set_capacity`] bytes, growing a file or creating one
//!   fails with ENOSPC (nothing written);
//! - a failing sync ([`SimStorage::fail_next_syncs`],
//!   [`SimStorage::set_sync_failure_rate`]) returns EIO and, as Linux does,
//!   forgets the pending writes: they stay readable but never become durable
//!   ("fsyncgate");
//! - [`SimStorage::counters`] counts every fault injected.
//!
//! Files are sparse in memory: preallocated zeros cost nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::format::SECTOR_BYTES;
use crate::storage::{LockGuard, Storage, StorageFile};

const ENOSPC: i32 = 28;
const EIO: i32 = 5;
/// A pending write (or length change, or directory operation) survives a
/// power cut with probability 1/KEEP_ONE_IN... of 2.
const PENDING_KEPT_PER_MILLE: u64 = 500;
/// A sector of a kept write survives with this probability.
const SECTOR_KEPT_PER_MILLE: u64 = 750;
const PER_MILLION: u64 = 1_000_000;

/// Faults injected so far (for the simulation's report).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimCounters {
    pub power_cuts: u64,
    /// Pending writes and length changes dropped whole by power cuts.
    pub writes_lost: u64,
    /// Kept writes of which some sectors were dropped.
    pub writes_torn: u64,
    pub sectors_lost: u64,
    /// Pending directory operations dropped by power cuts.
    pub dir_ops_lost: u64,
    pub bit_flips: u64,
    pub no_space: u64,
    pub sync_failures: u64,
}

/// Where [`SimStorage::flip_bit`] flipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlipReport {
    pub path: PathBuf,
    pub offset: u64,
    pub bit: u8,
}

/// The simulated disk. Cloning gives another handle to the same disk: keep
/// one to inject faults, and give the journal `Arc::new(sim.clone())`.
#[derive(Debug, Clone)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

/// File contents: `bytes`, then zeros up to `len`.
#[derive(Debug, Clone, Default)]
struct Content {
    bytes: Vec<u8>,
    len: u64,
}

impl Content {
    fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset + buf.len() as u64 > self.len {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        buf.fill(0);
        let start = (offset as usize).min(self.bytes.len());
        let end = (offset as usize + buf.len()).min(self.bytes.len());
        buf[..end - start].copy_from_slice(&self.bytes[start..end]);
        Ok(())
    }

    fn write(&mut self, data: &[u8], offset: u64) {
        let end = offset as usize + data.len();
        if end > self.bytes.len() {
            self.bytes.resize(end, 0);
        }
        self.bytes[offset as usize..end].copy_from_slice(data);
        self.len = self.len.max(end as u64);
    }

    fn set_len(&mut self, len: u64) {
        self.len = len;
        self.bytes.truncate(len as usize);
    }
}

#[derive(Debug, Clone)]
enum Change {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Inode {
    data: Content,
    durable: Content,
    pending: Vec<Change>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir,
}

#[derive(Debug, Clone)]
enum DirOp {
    Insert(PathBuf, Entry),
    Remove(PathBuf),
    Rename(PathBuf, PathBuf),
}

impl DirOp {
    fn touches(&self, dir: &Path) -> bool {
        let parent_is = |path: &PathBuf| path.parent() == Some(dir);
        match self {
            DirOp::Insert(path, _) | DirOp::Remove(path) => parent_is(path),
            DirOp::Rename(from, to) => parent_is(from) || parent_is(to),
        }
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, Entry>) {
        match self {
            DirOp::Insert(path, entry) => {
                if path.parent().is_none_or(|parent| parent.as_os_str().is_empty() || names.contains_key(parent)) {
                    names.insert(path.clone(), *entry);
                }
            }
            DirOp::Remove(path) => {
                names.remove(path);
            }
            DirOp::Rename(from, to) => {
                if let Some(entry) = names.remove(from) {
                    names.insert(to.clone(), entry);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    rng: u64,
    /// Bumped by each power cut: handles of the dead process fail.
    epoch: u64,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    names: BTreeMap<PathBuf, Entry>,
    durable_names: BTreeMap<PathBuf, Entry>,
    dir_pending: Vec<DirOp>,
    locks: BTreeSet<PathBuf>,
    capacity: Option<u64>,
    sync_failures_due: u32,
    sync_failure_per_million: u64,
    counters: SimCounters,
}

impl State {
    /// splitmix64: small, fast, and good enough to pick faults.
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn chance(&mut self, per: u64, out_of: u64) -> bool {
        self.next() % out_of < per
    }

    /// Bytes of the files that have a name now (an unlinked file's blocks
    /// are free, though a power cut may bring the name back).
    fn used(&self) -> u64 {
        let named = self.names.values().filter_map(|entry| match entry {
            Entry::File(inode) => self.inodes.get(inode),
            Entry::Dir => None,
        });
        named.map(|inode| inode.data.len).sum()
    }

    /// ENOSPC if growing the disk's use by `more` bytes passes the capacity.
    fn reserve_space(&mut self, more: u64) -> io::Result<()> {
        match self.capacity {
            Some(capacity) if more > 0 && self.used() + more > capacity => {
                self.counters.no_space += 1;
                Err(io::Error::from_raw_os_error(ENOSPC))
            }
            _ => Ok(()),
        }
    }

    fn sync_fails(&mut self) -> bool {
        if self.sync_failures_due > 0 {
            self.sync_failures_due -= 1;
        } else if !(self.sync_failure_per_million > 0 && self.chance(self.sync_failure_per_million, PER_MILLION)) {
            return false;
        }
        self.counters.sync_failures += 1;
        true
    }

    fn inode_of(&self, path: &Path) -> io::Result<u64> {
        match self.names.get(path) {
            Some(Entry::File(inode)) => Ok(*inode),
            Some(Entry::Dir) => Err(io::Error::other("is a directory")),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    fn parent_exists(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() && self.names.get(parent) != Some(&Entry::Dir) => {
                Err(io::Error::from(io::ErrorKind::NotFound))
            }
            _ => Ok(()),
        }
    }

    fn dir_op(&mut self, op: DirOp) {
        op.apply(&mut self.names);
        self.dir_pending.push(op);
    }

    /// The pending changes of one file, each kept (a seeded subset of its
    /// sectors for writes) or dropped.
    fn settle(&mut self, inode: u64) {
        let Some(mut file) = self.inodes.remove(&inode) else { return };
        let mut content = file.durable.clone();
        for change in std::mem::take(&mut file.pending) {
            if !self.chance(PENDING_KEPT_PER_MILLE, 1000) {
                self.counters.writes_lost += 1;
                continue;
            }
            match change {
                Change::SetLen(len) => content.set_len(len),
                Change::Write { offset, data } => self.apply_torn(&mut content, offset, &data),
            }
        }
        file.data = content.clone();
        file.durable = content;
        self.inodes.insert(inode, file);
    }

    fn apply_torn(&mut self, content: &mut Content, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        let mut lost = 0;
        let mut at = offset;
        while at < end {
            let piece_end = ((at / SECTOR_BYTES + 1) * SECTOR_BYTES).min(end);
            if self.chance(SECTOR_KEPT_PER_MILLE, 1000) {
                content.write(&data[(at - offset) as usize..(piece_end - offset) as usize], at);
            } else {
                lost += 1;
                // The file still grows to cover a kept later sector; a lost
                // sector at the end leaves the length where it was.
            }
            at = piece_end;
        }
        if lost > 0 {
            self.counters.writes_torn += 1;
            self.counters.sectors_lost += lost;
        }
    }
}

impl SimStorage {
    /// An empty disk whose every fault choice follows `seed`.
    pub fn new(seed: u64) -> SimStorage {
        let state = State { rng: seed, next_inode: 1, ..State::default() };
        SimStorage { state: Arc::new(Mutex::new(state)) }
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock poisons it; the disk is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Bytes the disk may hold (`None`: unbounded). Growing a file or
    /// creating one past it fails with ENOSPC.
    pub fn set_capacity(&self, capacity: Option<u64>) {
        self.lock_state().capacity = capacity;
    }

    /// Bytes the files take (their lengths, preallocation included).
    pub fn used_bytes(&self) -> u64 {
        self.lock_state().used()
    }

    /// The next `count` syncs (file or directory) fail with EIO.
    pub fn fail_next_syncs(&self, count: u32) {
        self.lock_state().sync_failures_due = count;
    }

    /// Each sync fails with EIO with this probability (per million).
    pub fn set_sync_failure_rate(&self, per_million: u32) {
        self.lock_state().sync_failure_per_million = u64::from(per_million);
    }

    pub fn counters(&self) -> SimCounters {
        self.lock_state().counters
    }

    /// The power fails: only durable state survives, plus a seeded subset
    /// of what was pending (in order; writes torn at sector granularity).
    /// Handles and locks of the running process are gone.
    pub fn power_cut(&self) {
        let mut state = self.lock_state();
        state.counters.power_cuts += 1;
        state.epoch += 1;
        state.locks.clear();
        let mut names = state.durable_names.clone();
        for op in std::mem::take(&mut state.dir_pending) {
            if state.chance(PENDING_KEPT_PER_MILLE, 1000) {
                op.apply(&mut names);
            } else {
                state.counters.dir_ops_lost += 1;
            }
        }
        let inodes: Vec<u64> = state.inodes.keys().copied().collect();
        for inode in inodes {
            state.settle(inode);
        }
        let live: BTreeSet<u64> = names
            .values()
            .filter_map(|entry| if let Entry::File(inode) = entry { Some(*inode) } else { None })
            .collect();
        state.inodes.retain(|inode, _| live.contains(inode));
        state.durable_names = names.clone();
        state.names = names;
    }

    /// Flips one seeded bit of durable, written data (not of preallocated
    /// zeros) in a seeded file; `None` if no file holds written data.
    pub fn flip_bit(&self) -> Option<FlipReport> {
        let mut state = self.lock_state();
        let candidates: Vec<(PathBuf, u64)> = state
            .names
            .iter()
            .filter_map(|(path, entry)| match entry {
                Entry::File(inode) => Some((path.clone(), *inode)),
                Entry::Dir => None,
            })
            .filter(|(_, inode)| state.inodes.get(inode).is_some_and(|file| !file.durable.bytes.is_empty()))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let (path, inode) = candidates[(state.next() % candidates.len() as u64) as usize].clone();
        let written = state.inodes[&inode].durable.bytes.len() as u64;
        let offset = state.next() % written;
        let bit = (state.next() % 8) as u8;
        drop(state);
        self.flip_bit_at(&path, offset, bit).ok()?;
        Some(FlipReport { path, offset, bit })
    }

    /// Flips bit `bit` of the byte at `offset` of `path`, on disk and in the
    /// page cache.
    pub fn flip_bit_at(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let mut state = self.lock_state();
        let inode = state.inode_of(path)?;
        let file = state.inodes.get_mut(&inode).expect("named inodes exist");
        for content in [&mut file.durable, &mut file.data] {
            let mut byte = [0u8];
            content.read(&mut byte, offset)?;
            content.write(&[byte[0] ^ (1 << (bit % 8))], offset);
        }
        state.counters.bit_flips += 1;
        Ok(())
    }

    /// What a read of the whole of `path` returns now (for tests).
    pub fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.lock_state();
        let file = &state.inodes[&state.inode_of(path)?];
        let mut bytes = vec![0u8; file.data.len as usize];
        file.data.read(&mut bytes, 0)?;
        Ok(bytes)
    }

    /// Whether the `len` bytes at `offset` of `path` would survive a power
    /// cut as they read now: the name is durable (for the same file) and
    /// the durable bytes equal what reads see.
    pub fn is_durable(&self, path: &Path, offset: u64, len: u64) -> bool {
        let state = self.lock_state();
        let (Some(Entry::File(now)), Some(Entry::File(durable))) =
            (state.names.get(path), state.durable_names.get(path))
        else {
            return false;
        };
        let Some(file) = state.inodes.get(now).filter(|_| now == durable) else { return false };
        let (mut seen, mut kept) = (vec![0u8; len as usize], vec![0u8; len as usize]);
        file.data.read(&mut seen, offset).is_ok() && file.durable.read(&mut kept, offset).is_ok() && seen == kept
    }

    /// Whether `path` names a file or directory now.
    pub fn exists(&self, path: &Path) -> bool {
        self.lock_state().names.contains_key(path)
    }
}

/// A handle on a simulated file, valid until the next power cut.
#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    inode: u64,
    epoch: u64,
    writable: bool,
}

impl SimFile {
    fn with<T>(&self, write: bool, f: impl FnOnce(&mut State, u64) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.epoch != self.epoch || !state.inodes.contains_key(&self.inode) {
            return Err(io::Error::other("simulated file handle is gone (power cut)"));
        }
        if write && !self.writable {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        f(&mut state, self.inode)
    }

    fn grow(&self, end: u64, change: Change) -> io::Result<()> {
        self.with(true, |state, inode| {
            let len = state.inodes[&inode].data.len;
            state.reserve_space(end.saturating_sub(len))?;
            let file = state.inodes.get_mut(&inode).expect("checked");
            match &change {
                Change::Write { offset, data } => file.data.write(data, *offset),
                Change::SetLen(len) => file.data.set_len(*len),
            }
            file.pending.push(change);
            Ok(())
        })
    }

    fn sync(&self) -> io::Result<()> {
        self.with(false, |state, inode| {
            let fails = state.sync_fails();
            let file = state.inodes.get_mut(&inode).expect("checked");
            if fails {
                // Linux marks the pages clean after a failed writeback: they
                // are never written, though reads still see them.
                file.pending.clear();
                return Err(io::Error::from_raw_os_error(EIO));
            }
            for change in file.pending.drain(..) {
                match change {
                    Change::Write { offset, data } => file.durable.write(&data, offset),
                    Change::SetLen(len) => file.durable.set_len(len),
                }
            }
            Ok(())
        })
    }
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.with(false, |state, inode| Ok(state.inodes[&inode].data.len))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(false, |state, inode| state.inodes[&inode].data.read(buf, offset))
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.grow(offset + buf.len() as u64, Change::Write { offset, data: buf.to_vec() })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.grow(len, Change::SetLen(len))
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let current = self.len()?;
        if len <= current {
            return Ok(());
        }
        self.grow(len, Change::SetLen(len))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }
}

struct SimLock {
    state: Arc<Mutex<State>>,
    dir: PathBuf,
    epoch: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.epoch == self.epoch {
            state.locks.remove(&self.dir);
        }
    }
}

impl SimStorage {
    fn handle(&self, state: &State, inode: u64, writable: bool) -> Box<dyn StorageFile> {
        Box::new(SimFile { state: Arc::clone(&self.state), inode, epoch: state.epoch, writable })
    }
}

impl Storage for SimStorage {
    fn is_dir(&self, dir: &Path) -> bool {
        self.lock_state().names.get(dir) == Some(&Entry::Dir)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock_state();
        let mut path = PathBuf::new();
        for part in dir.components() {
            path.push(part);
            match state.names.get(&path) {
                Some(Entry::Dir) => {}
                Some(Entry::File(_)) => return Err(io::Error::from(io::ErrorKind::AlreadyExists)),
                None => state.dir_op(DirOp::Insert(path.clone(), Entry::Dir)),
            }
        }
        Ok(())
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock_state();
        state.parent_exists(dir)?;
        if state.names.contains_key(dir) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        state.dir_op(DirOp::Insert(dir.to_path_buf(), Entry::Dir));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock_state();
        if state.names.get(dir) != Some(&Entry::Dir) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        if state.sync_fails() {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        let Some(last) = state.dir_pending.iter().rposition(|op| op.touches(dir)) else { return Ok(()) };
        let done: Vec<DirOp> = state.dir_pending.drain(..=last).collect();
        for op in done {
            op.apply(&mut state.durable_names);
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock_state();
        if state.names.get(dir) != Some(&Entry::Dir) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let names = state.names.keys().filter(|path| path.parent() == Some(dir));
        Ok(names.filter_map(|path| path.file_name()?.to_str().map(str::to_string)).collect())
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut state = self.lock_state();
        state.parent_exists(path)?;
        if state.names.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        if state.capacity.is_some_and(|capacity| state.used() >= capacity) {
            state.counters.no_space += 1;
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        let inode = state.next_inode;
        state.next_inode += 1;
        state.inodes.insert(inode, Inode::default());
        state.dir_op(DirOp::Insert(path.to_path_buf(), Entry::File(inode)));
        Ok(self.handle(&state, inode, true))
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Box<dyn StorageFile>> {
        let state = self.lock_state();
        let inode = state.inode_of(path)?;
        Ok(self.handle(&state, inode, writable))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock_state();
        state.inode_of(path)?;
        state.dir_op(DirOp::Remove(path.to_path_buf()));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock_state();
        state.inode_of(from)?;
        state.parent_exists(to)?;
        state.dir_op(DirOp::Rename(from.to_path_buf(), to.to_path_buf()));
        Ok(())
    }

    fn lock(&self, dir: &Path) -> io::Result<LockGuard> {
        let mut state = self.lock_state();
        if !state.locks.insert(dir.to_path_buf()) {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        Ok(Box::new(SimLock { state: Arc::clone(&self.state), dir: dir.to_path_buf(), epoch: state.epoch }))
    }
}
