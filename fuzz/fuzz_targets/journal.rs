//! The journal reader on an arbitrary segment file: verify (read-only),
//! read_records, and open (recovery, which may truncate) must return
//! errors, never panic or allocate past the record limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Keeps the fuzzer's allocations small: lengths above this are refused
/// before any allocation, which is what is being checked.
const RECORD_BYTES_MAX: u32 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    if std::fs::write(dir.path().join("00000000000000000001.seg"), data).is_err() {
        return;
    }
    let _ = orderly_journal::verify(dir.path(), RECORD_BYTES_MAX);
    let _ = orderly_journal::read_records(dir.path(), RECORD_BYTES_MAX, |_, _, _| Ok::<(), ()>(()));
    let options = orderly_journal::Options {
        record_bytes_max: RECORD_BYTES_MAX,
        batch_bytes_max: 1024 * 1024,
        ..orderly_journal::Options::default()
    };
    if let Ok((journal, _)) = orderly_journal::Journal::open(dir.path(), options) {
        let _ = journal.replay(|_, _, _| Ok::<(), ()>(()));
    }
});
