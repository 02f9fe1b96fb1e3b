//! The journal's append path with group commit: one iteration appends a
//! batch of N records of 1,100 bytes (about one order of 10 × 100-byte items
//! with its framing) and commits them: one write, and under fsync `always`
//! one fsync. Throughput is in records and in payload bytes.
//!
//! The journal lives in a temporary directory under `CARGO_TARGET_TMPDIR`
//! (inside `target/`), so the figures are for the disk the project is on,
//! not a tmpfs. Old segments are deleted between samples, untimed, so a long
//! run does not fill the disk.
//!
//! ```text
//! cargo bench -p orderly-journal --bench append [-- DIVAN_ARGS]
//! ```

use std::cell::RefCell;
use std::path::Path;

use divan::counter::{BytesCount, ItemsCount};
use divan::Bencher;
use orderly_journal::{FsyncPolicy, Journal, Options};

const RECORD_BYTES: usize = 1_100;
const BATCH_LENS: [usize; 3] = [1, 64, 1024];
/// Segments kept on disk: older ones are removed between samples.
const SEGMENTS_KEPT_MAX: usize = 2;

fn main() {
    divan::main();
}

#[divan::bench(args = BATCH_LENS)]
fn fsync_always(bencher: Bencher, batch_len: usize) {
    append_commit(bencher, FsyncPolicy::Always, batch_len);
}

#[divan::bench(args = BATCH_LENS)]
fn fsync_never(bencher: Bencher, batch_len: usize) {
    append_commit(bencher, FsyncPolicy::Never, batch_len);
}

fn append_commit(bencher: Bencher, fsync: FsyncPolicy, batch_len: usize) {
    let temp = tempfile::Builder::new()
        .prefix("journal-append-")
        .tempdir_in(Path::new(env!("CARGO_TARGET_TMPDIR")))
        .expect("create a temporary directory under CARGO_TARGET_TMPDIR");
    let options = Options { fsync, ..Options::default() };
    let (journal, _) = Journal::open(temp.path(), options).expect("open a fresh journal");
    let journal = RefCell::new(journal);
    let body = vec![0x5Au8; RECORD_BYTES];
    bencher
        .counter(ItemsCount::new(batch_len))
        .counter(BytesCount::new(batch_len * RECORD_BYTES))
        // Input generation runs before each sample and is not timed.
        .with_inputs(|| remove_old_segments(&mut journal.borrow_mut()))
        .bench_local_values(|()| {
            let mut journal = journal.borrow_mut();
            for _ in 0..batch_len {
                journal.append(&body).expect("append");
            }
            let info = journal.commit().expect("commit");
            assert_eq!(info.records, batch_len as u64);
            info
        });
}

fn remove_old_segments(journal: &mut Journal) {
    while journal.segments().len() > SEGMENTS_KEPT_MAX {
        let oldest = journal.segments()[0].id;
        journal.remove_oldest_segment(oldest).expect("remove the oldest segment");
    }
}
