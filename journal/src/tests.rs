//! Unit tests of the journal against real files in temporary directories.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::format::{encode_header, encode_record, encode_record_v1, segment_file_name, SegmentHeader};
use crate::*;

/// Options that roll often and skip fsync (the tests crash nothing).
fn small_options() -> Options {
    Options { fsync: FsyncPolicy::Never, segment_bytes_target: 256, ..Options::default() }
}

fn body(index: usize) -> Vec<u8> {
    format!("record-{index}-{}", "x".repeat(index % 40)).into_bytes()
}

/// Appends `count` records, committing every `commit_every`; returns what
/// `append` said for each.
fn write_records(journal: &mut Journal, count: usize, commit_every: usize) -> Vec<(u64, u64)> {
    let mut placed = Vec::new();
    for index in 0..count {
        placed.push(journal.append(&body(index)).expect("append"));
        if (index + 1) % commit_every == 0 {
            journal.commit().expect("commit");
        }
    }
    journal.commit().expect("commit");
    placed
}

fn replay_all(journal: &Journal) -> Vec<(u64, u64, Vec<u8>)> {
    let mut records = Vec::new();
    journal
        .replay(|seq, segment_id, body| {
            records.push((seq, segment_id, body.to_vec()));
            Ok::<(), std::convert::Infallible>(())
        })
        .expect("replay");
    records
}

fn segment_path(dir: &Path, segment_id: u64) -> PathBuf {
    dir.join(segment_file_name(segment_id))
}

fn last_segment(dir: &Path) -> SegmentInfo {
    verify(dir, RECORD_BYTES_MAX).expect("verify").segments.pop().expect("a segment")
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new().append(true).open(path).expect("open").write_all(bytes).expect("write");
}

/// A version-1 segment header (hand-built files of the old format).
fn v1_header(segment_id: u64, first_seq: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    encode_header(SegmentHeader { segment_id, first_seq, version: FORMAT_VERSION_V1 })
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).expect("read");
    bytes[offset] ^= 0x40;
    fs::write(path, bytes).expect("write");
}

/// A journal of 4+ segments with 60 records, closed.
fn closed_journal(dir: &Path) -> Vec<(u64, u64)> {
    let (mut journal, _) = Journal::open(dir, small_options()).expect("open");
    let placed = write_records(&mut journal, 60, 5);
    assert!(journal.segments().len() >= 4, "small target should roll: {:?}", journal.segments());
    placed
}

#[test]
fn fresh_directory_gets_segment_one() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("journal");
    let (journal, recovery) = Journal::open(&dir, small_options()).expect("open");
    assert_eq!(recovery, Recovery { records: 0, segments: 0, truncated: None });
    assert_eq!(journal.active_segment(), SEGMENT_ID_FIRST);
    assert_eq!(journal.next_seq(), SEQ_FIRST);
    assert!(segment_path(&dir, 1).is_file());
    assert!(dir.join(LOCK_FILE_NAME).is_file());
}

#[test]
fn round_trip_across_segments_after_reopen() {
    let temp = tempfile::tempdir().expect("tempdir");
    let placed = closed_journal(temp.path());
    let (journal, recovery) = Journal::open(temp.path(), small_options()).expect("reopen");
    assert_eq!(recovery.records, 60);
    assert_eq!(recovery.truncated, None);
    let records = replay_all(&journal);
    assert_eq!(records.len(), 60);
    for (index, (seq, segment_id, bytes)) in records.iter().enumerate() {
        assert_eq!((*seq, *segment_id), placed[index], "append said where record {index} goes");
        assert_eq!(bytes, &body(index));
    }
    assert_eq!(journal.next_seq(), 61);
    let segments = journal.segments();
    for pair in segments.windows(2) {
        assert_eq!(pair[0].id + 1, pair[1].id);
        assert_eq!(pair[0].next_seq(), pair[1].first_seq);
    }
}

#[test]
fn appends_continue_after_reopen() {
    let temp = tempfile::tempdir().expect("tempdir");
    closed_journal(temp.path());
    let (mut journal, _) = Journal::open(temp.path(), small_options()).expect("reopen");
    let (seq, _) = journal.append(b"more").expect("append");
    assert_eq!(seq, 61);
    journal.commit().expect("commit");
    drop(journal);
    let (journal, recovery) = Journal::open(temp.path(), small_options()).expect("reopen");
    assert_eq!(recovery.records, 61);
    assert_eq!(replay_all(&journal).last().map(|record| record.2.clone()), Some(b"more".to_vec()));
}

#[test]
fn second_open_is_refused_while_locked() {
    let temp = tempfile::tempdir().expect("tempdir");
    let (journal, _) = Journal::open(temp.path(), small_options()).expect("open");
    match Journal::open(temp.path(), small_options()) {
        Err(JournalError::Locked { dir }) => assert_eq!(dir, temp.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(matches!(repair(temp.path(), RECORD_BYTES_MAX), Err(JournalError::Locked { .. })));
    assert_eq!(verify(temp.path(), RECORD_BYTES_MAX).expect("verify needs no lock").problem, None);
    drop(journal);
    Journal::open(temp.path(), small_options()).expect("open after the first is dropped");
}

#[test]
fn commit_reports_fsync_per_policy() {
    let temp = tempfile::tempdir().expect("tempdir");
    let options = Options { fsync: FsyncPolicy::Always, ..Options::default() };
    let (mut journal, _) = Journal::open(temp.path(), options).expect("open");
    journal.append(b"a").expect("append");
    journal.append(b"bc").expect("append");
    let info = journal.commit().expect("commit");
    assert_eq!(info, CommitInfo { records: 2, bytes: SECTOR_BYTES, fsynced: true, rolled: false, segment_id: 1 });
    let empty = journal.commit().expect("empty commit");
    assert_eq!((empty.records, empty.fsynced), (0, false));
}

#[test]
fn interval_policy_fsyncs_once_the_interval_has_passed() {
    let temp = tempfile::tempdir().expect("tempdir");
    let interval = Duration::from_secs(10);
    let options = Options { fsync: FsyncPolicy::Interval(interval), ..Options::default() };
    let (mut journal, _) = Journal::open(temp.path(), options).expect("open");
    let start = Instant::now();
    journal.append(b"a").expect("append");
    assert!(!journal.commit_at(start).expect("commit").fsynced);
    // Nothing new, but the earlier write is still unsynced.
    assert!(journal.commit_at(start + interval * 2).expect("commit").fsynced);
    assert!(!journal.sync().expect("sync"), "nothing left to sync");
}

#[test]
fn oversized_record_is_refused_on_write() {
    let temp = tempfile::tempdir().expect("tempdir");
    let options = Options { record_bytes_max: 100, batch_bytes_max: 300, ..small_options() };
    let (mut journal, _) = Journal::open(temp.path(), options).expect("open");
    match journal.append(&[0u8; 101]) {
        Err(JournalError::RecordTooLarge { len: 101, max: 100 }) => {}
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    journal.append(&[1u8; 100]).expect("at the limit");
    journal.append(&[1u8; 100]).expect("second");
    assert!(matches!(journal.append(&[1u8; 100]), Err(JournalError::BatchFull { .. })));
    journal.commit().expect("commit");
    journal.append(&[1u8; 100]).expect("room again after commit");
    assert_eq!(journal.next_seq(), 4, "refused appends take no seq");
}

#[test]
fn torn_record_in_last_segment_is_cut_off() {
    let temp = tempfile::tempdir().expect("tempdir");
    closed_journal(temp.path());
    let last_path = last_segment(temp.path()).path;
    let good_len = fs::metadata(&last_path).expect("stat").len();
    // Half a record: framing for 50 bytes, then only 10.
    let mut torn = Vec::new();
    encode_record(61, 0, &[7u8; 50], &mut torn);
    append_bytes(&last_path, &torn[..26]);
    let (journal, recovery) = Journal::open(temp.path(), small_options()).expect("open");
    let truncated = recovery.truncated.expect("torn tail reported");
    assert_eq!(
        (truncated.file.as_path(), truncated.offset, truncated.dropped_bytes),
        (last_path.as_path(), good_len, 26)
    );
    assert_eq!(replay_all(&journal).len(), 60);
}

#[test]
fn zero_filled_tail_is_the_clean_end() {
    let temp = tempfile::tempdir().expect("tempdir");
    let (mut journal, _) = Journal::open(temp.path(), small_options()).expect("open");
    write_records(&mut journal, 3, 3);
    let active = journal.segments().last().cloned().expect("active");
    drop(journal);
    append_bytes(&active.path, &[0u8; 4096]);
    let (journal, recovery) = Journal::open(temp.path(), small_options()).expect("open");
    assert_eq!(recovery.truncated, None, "preallocated zeros are not a defect");
    assert_eq!(replay_all(&journal).len(), 3);
}

#[test]
fn zero_filled_tail_of_a_version_1_segment_is_cut_off() {
    let temp = tempfile::tempdir().expect("tempdir");
    let mut bytes = v1_header(1, 1).to_vec();
    encode_record_v1(1, b"one", &mut bytes);
    let good = bytes.len() as u64;
    bytes.extend_from_slice(&[0u8; 4096]);
    fs::write(segment_path(temp.path(), 1), bytes).expect("write");
    let (journal, recovery) = Journal::open(temp.path(), small_options()).expect("open");
    let truncated = recovery.truncated.expect("zero tail reported");
    assert_eq!((truncated.offset, truncated.dropped_bytes), (good, 4096));
    assert!(truncated.reason.contains("zero bytes"), "{}", truncated.reason);
    assert_eq!(replay_all(&journal).len(), 1);
    assert_eq!(journal.active_segment(), 2, "a version-1 segment is never appended to");
}

#[test]
fn torn_header_of_new_last_segment_is_removed() {
    let temp = tempfile::tempdir().expect("tempdir");
    let (mut journal, _) = Journal::open(temp.path(), small_options()).expect("open");
    write_records(&mut journal, 3, 3);
    let next_id = journal.active_segment() + 1;
    drop(journal);
    let torn = segment_path(temp.path(), next_id);
    fs::write(&torn, &encode_header(SegmentHeader::current(next_id, 4))[..10]).expect("write");
    let (mut journal, recovery) = Journal::open(temp.path(), small_options()).expect("open");
    assert_eq!(recovery.truncated.map(|tail| (tail.offset, tail.dropped_bytes)), Some((0, 10)));
    assert!(!torn.exists());
    journal.roll();
    assert_eq!(journal.append(b"next").expect("append"), (4, next_id), "the removed id is reused");
    journal.commit().expect("commit");
}

#[test]
fn bad_record_in_earlier_segment_is_corruption() {
    let temp = tempfile::tempdir().expect("tempdir");
    closed_journal(temp.path());
    let first = segment_path(temp.path(), 1);
    let offset = FIRST_RECORD_OFFSET_V2 as usize + RECORD_HEADER_BYTES + 2; // inside the first body
    flip_byte(&first, offset);
    let error = Journal::open(temp.path(), small_options()).expect_err("corrupt");
    match &error {
        JournalError::Corrupt { file, offset, reason } => {
            assert_eq!((file.as_path(), *offset), (first.as_path(), FIRST_RECORD_OFFSET_V2));
            assert!(reason.contains("CRC"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("00000000000000000001.seg") && message.contains("offset 512"), "{message}");
}

#[test]
fn bad_header_in_earlier_segment_is_corruption() {
    let temp = tempfile::tempdir().expect("tempdir");
    closed_journal(temp.path());
    flip_byte(&segment_path(temp.path(), 2), 14); // inside the segment id
    match Journal::open(temp.path(), small_options()) {
        Err(JournalError::Corrupt { offset: 0, reason, .. }) => assert!(reason.contains("CRC"), "{reason}"),
        other => panic!("expected Corrupt at the header, got {other:?}"),
    }
}

#[test]
fn sequence_gap_between_segments_is_corruption() {
    let temp = tempfile::tempdir().expect("tempdir");
    closed_journal(temp.path());
    let (journal, _) = Journal::open(temp.path(), small_options()).expect("open");
    let second = journal.segments()[1].clone();
    drop(journal);
    // A header that checks out but skips five seqs.
    let header = encode_header(SegmentHeader::current(second.id, second.first_seq + 5));
    let mut bytes = fs::read(&second.path).expect("read");
    bytes[..SEGMENT_HEADER_BYTES].copy_from_slice(&header);
    fs::write(&second.path, bytes).expect("write");
    let error = Journal::open(temp.path(), small_options()).expect_err("gap");
    assert!(error.to_string().contains("sequence gap"), "{error}");
}

#[test]
fn sequence_gap_inside_earlier_segment_is_corruption() {
    let temp = tempfile::tempdir().expect("tempdir");
    let mut bytes = v1_header(1, 1).to_vec();
    encode_record_v1(1, b"one", &mut bytes);
    let gap_at = bytes.len() as u64;
    encode_record_v1(3, b"three", &mut bytes); // intact, but seq 2 is missing
    fs::write(segment_path(temp.path(), 1), bytes).expect("write");
    let mut next = v1_header(2, 4).to_vec();
    encode_record_v1(4, b"four", &mut next);
    fs::write(segment_path(temp.path(), 2), next).expect("write");
    match Journal::open(temp.path(), small_options()) {
        Err(JournalError::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, gap_at);
            assert!(reason.contains("seq 3 where seq 2"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn missing_middle_segment_is_corruption() {
    let temp = tempfile::tempdir().expect("tempdir");
    closed_journal(temp.path());
    fs::remove_file(segment_path(temp.path(), 2)).expect("rm");
    let error = Journal::open(temp.path(), small_options()).expect_err("missing segment");
    assert!(error.to_string().contains("00000000000000000003.seg"), "{error}");
}

/// A length far above the limit: reading must fail cleanly (a torn tail when
/// it is the last segment, corruption before), not try to allocate it.
#[test]
fn huge_length_is_rejected_on_read() {
    let temp = tempfile::tempdir().expect("tempdir");
    let mut bytes = v1_header(1, 1).to_vec();
    bytes.extend_from_slice(&(u32::MAX - 1).to_le_bytes());
    bytes.extend_from_slice(&[0xAB; 12 + 64]);
    fs::write(segment_path(temp.path(), 1), &bytes).expect("write");
    fs::write(segment_path(temp.path(), 2), v1_header(2, 1)).expect("write");
    assert!(matches!(Journal::open(temp.path(), small_options()), Err(JournalError::Corrupt { offset: 32, .. })));
    let report = verify(temp.path(), RECORD_BYTES_MAX).expect("verify");
    assert_eq!(report.problem.map(|problem| problem.kind), Some(ProblemKind::Corrupt));
    // As the last segment it is a torn tail.
    fs::remove_file(segment_path(temp.path(), 2)).expect("rm");
    let (_, recovery) = Journal::open(temp.path(), small_options()).expect("open");
    assert_eq!(recovery.truncated.map(|tail| tail.offset), Some(32));
}

#[test]
fn intact_record_above_a_lowered_limit_is_refused_not_cut() {
    let temp = tempfile::tempdir().expect("tempdir");
    let (mut journal, _) = Journal::open(temp.path(), small_options()).expect("open");
    journal.append(&[5u8; 500]).expect("append");
    journal.commit().expect("commit");
    drop(journal);
    let lowered = Options { record_bytes_max: 100, ..small_options() };
    match Journal::open(temp.path(), lowered) {
        Err(JournalError::Corrupt { reason, .. }) => assert!(reason.contains("intact"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let (journal, recovery) = Journal::open(temp.path(), small_options()).expect("open with the old limit");
    assert_eq!((recovery.records, replay_all(&journal).len()), (1, 1));
}

#[test]
fn unsupported_version_is_refused_by_open_and_repair() {
    let temp = tempfile::tempdir().expect("tempdir");
    closed_journal(temp.path());
    let first = segment_path(temp.path(), 1);
    let mut bytes = fs::read(&first).expect("read");
    bytes[8] = 3;
    fs::write(&first, bytes).expect("write");
    let expect_version = |result: Result<(), JournalError>| match result {
        Err(JournalError::UnsupportedVersion { file, version: 3 }) => assert_eq!(file, first),
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    };
    expect_version(Journal::open(temp.path(), small_options()).map(drop));
    expect_version(repair(temp.path(), RECORD_BYTES_MAX).map(drop));
}

#[test]
fn io_error_is_not_corruption() {
    let temp = tempfile::tempdir().expect("tempdir");
    closed_journal(temp.path());
    // A directory where a segment should be: reading it fails with EISDIR.
    let next_id = last_segment(temp.path()).id + 1;
    fs::create_dir(segment_path(temp.path(), next_id)).expect("mkdir");
    assert!(matches!(Journal::open(temp.path(), small_options()), Err(JournalError::Io { .. })));
    assert!(matches!(verify(temp.path(), RECORD_BYTES_MAX), Err(JournalError::Io { .. })));
}

#[test]
fn remove_oldest_segment_only_removes_the_oldest() {
    let temp = tempfile::tempdir().expect("tempdir");
    closed_journal(temp.path());
    let (mut journal, _) = Journal::open(temp.path(), small_options()).expect("open");
    let count = journal.segments().len();
    assert!(matches!(journal.remove_oldest_segment(2), Err(JournalError::RemoveRefused { segment_id: 2, .. })));
    let removed = journal.remove_oldest_segment(1).expect("remove");
    assert!(!removed.path.exists());
    assert_eq!(journal.segments().len(), count - 1);
    drop(journal);
    let (mut journal, recovery) = Journal::open(temp.path(), small_options()).expect("reopen");
    assert_eq!(recovery.records, 60 - removed.records);
    let records = replay_all(&journal);
    assert_eq!(records.first().map(|record| record.0), Some(removed.next_seq()));
    for id in 2..count as u64 {
        journal.remove_oldest_segment(id).expect("remove");
    }
    let active = journal.active_segment();
    match journal.remove_oldest_segment(active) {
        Err(JournalError::RemoveRefused { reason, .. }) => assert!(reason.contains("active"), "{reason}"),
        other => panic!("expected RemoveRefused, got {other:?}"),
    }
}

/// The compaction sequence the broker runs: roll, copy live records forward,
/// commit, drop the old segments.
#[test]
fn roll_then_compact() {
    let temp = tempfile::tempdir().expect("tempdir");
    let options = Options { segment_bytes_target: SEGMENT_BYTES_TARGET_DEFAULT, ..small_options() };
    let (mut journal, _) = Journal::open(temp.path(), options.clone()).expect("open");
    write_records(&mut journal, 10, 10);
    journal.roll();
    let (seq, segment_id) = journal.append(b"live").expect("append");
    assert_eq!((seq, segment_id), (11, 2));
    let info = journal.commit().expect("commit");
    assert!(info.rolled && !info.fsynced && info.segment_id == 2);
    journal.remove_oldest_segment(1).expect("remove");
    // A roll with nothing buffered still starts a segment.
    journal.roll();
    assert!(journal.commit().expect("commit").rolled);
    assert_eq!(journal.active_segment(), 3);
    journal.remove_oldest_segment(2).expect("remove");
    drop(journal);
    let (journal, recovery) = Journal::open(temp.path(), options).expect("reopen");
    assert_eq!((recovery.records, journal.next_seq()), (0, 12));
}

#[test]
fn replay_stops_at_the_callback_error() {
    let temp = tempfile::tempdir().expect("tempdir");
    closed_journal(temp.path());
    let (journal, _) = Journal::open(temp.path(), small_options()).expect("open");
    let result = journal.replay(|seq, _, _| if seq == 7 { Err("no") } else { Ok(()) });
    assert!(matches!(result, Err(ReplayError::Callback { seq: 7, error: "no" })));
}

#[test]
fn verify_and_repair_a_damaged_journal() {
    let temp = tempfile::tempdir().expect("tempdir");
    closed_journal(temp.path());
    let clean = verify(temp.path(), RECORD_BYTES_MAX).expect("verify");
    assert_eq!((clean.problem.as_ref(), clean.records()), (None, 60));
    let segment_count = clean.segments.len() as u64;
    let damaged = &clean.segments[1];
    let second_record_at = damaged.bytes as usize - 1; // inside its last record
    flip_byte(&damaged.path, second_record_at);

    let report = verify(temp.path(), RECORD_BYTES_MAX).expect("verify");
    let problem = report.problem.clone().expect("problem found");
    assert_eq!((problem.segment_id, problem.kind), (2, ProblemKind::Corrupt));
    let kept = report.records();

    let repaired = repair(temp.path(), RECORD_BYTES_MAX).expect("repair");
    let quarantine = repaired.quarantine_dir.clone().expect("quarantine");
    assert!(quarantine.starts_with(temp.path()));
    assert_eq!(repaired.truncated, Some((damaged.path.clone(), problem.offset)));
    assert_eq!(repaired.moved.len() as u64, 1 + segment_count - 2, "the tail, then every later segment");
    let tail = &repaired.moved[0];
    assert_eq!((tail.from_offset, tail.bytes), (problem.offset, problem.file_bytes - problem.offset));
    for moved in &repaired.moved {
        assert!(moved.to.starts_with(&quarantine) && moved.to.is_file(), "{moved:?}");
        assert_eq!(fs::metadata(&moved.to).expect("stat").len(), moved.bytes);
    }
    assert!(repaired.moved[1..].iter().all(|moved| !moved.from.exists()), "moved, not copied");

    let after = verify(temp.path(), RECORD_BYTES_MAX).expect("verify");
    assert_eq!((after.records(), after.problem), (kept, None));
    let (journal, recovery) = Journal::open(temp.path(), small_options()).expect("open after repair");
    assert_eq!(recovery.truncated, None);
    let records = replay_all(&journal);
    assert_eq!(records.len() as u64, kept);
    assert!(records.iter().enumerate().all(|(index, record)| record.2 == body(index)));
}

#[test]
fn repair_moves_a_segment_with_a_bad_header_whole() {
    let temp = tempfile::tempdir().expect("tempdir");
    closed_journal(temp.path());
    let second = segment_path(temp.path(), 2);
    let second_bytes = fs::metadata(&second).expect("stat").len();
    flip_byte(&second, 0);
    let repaired = repair(temp.path(), RECORD_BYTES_MAX).expect("repair");
    assert_eq!(repaired.truncated, None);
    assert_eq!((&repaired.moved[0].from, repaired.moved[0].bytes), (&second, second_bytes));
    assert!(!second.exists());
    assert_eq!(verify(temp.path(), RECORD_BYTES_MAX).expect("verify").problem, None);
    assert_eq!(repair(temp.path(), RECORD_BYTES_MAX).expect("second repair").moved, Vec::new());
}

#[test]
fn records_are_read_back_where_append_and_replay_say_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), small_options()).unwrap();
    let mut placed = Vec::new();
    for index in 0..300 {
        placed.push((journal.append_located(&body(index)).unwrap(), body(index)));
        if index % 7 == 0 {
            journal.commit().unwrap();
        }
    }
    journal.commit().unwrap();
    assert!(journal.segments().len() > 1, "the test wants records in several segments");
    for (at, expected) in &placed {
        assert_eq!(&journal.read_at(*at).unwrap(), expected, "record at {at:?}");
    }
    let mut replayed = Vec::new();
    journal
        .replay_located(|at, _| {
            replayed.push(at);
            Ok::<(), ()>(())
        })
        .unwrap();
    assert_eq!(replayed, placed.iter().map(|(at, _)| *at).collect::<Vec<_>>());
    // A wrong place or a changed byte is an error, never wrong data.
    let (first, _) = placed[0];
    let wrong = RecordAt { seq: first.seq + 1, ..first };
    assert!(matches!(journal.read_at(wrong), Err(JournalError::Corrupt { .. })));
    let (last, _) = placed[placed.len() - 1];
    let path = journal.segments().last().unwrap().path.clone();
    let mut bytes = fs::read(&path).unwrap();
    bytes[last.offset as usize + RECORD_HEADER_BYTES] ^= 0x40;
    fs::write(&path, bytes).unwrap();
    assert!(matches!(journal.read_at(last), Err(JournalError::Corrupt { .. })));
}

#[test]
fn a_lazy_commit_is_written_at_once_and_fsynced_later() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options { fsync: FsyncPolicy::Always, ..Options::default() };
    let (mut journal, _) = Journal::open(dir.path(), options).unwrap();
    // The clock is given, not read: a slow fsync under a loaded test run
    // must not make "just now" longer than LAZY_SYNC_MAX.
    let start = Instant::now();
    journal.append(b"durable").unwrap();
    assert!(journal.commit_at(start).unwrap().fsynced);
    let at = journal.append_located(b"lazy").unwrap();
    let info = journal.commit_lazily_at(start + Duration::from_millis(1)).unwrap();
    assert!(!info.fsynced, "fsynced although the last fsync was just now");
    assert_eq!(journal.read_at(at).unwrap(), b"lazy", "written at once");
    journal.append(b"later").unwrap();
    assert!(
        journal.commit_lazily_at(start + LAZY_SYNC_MAX).unwrap().fsynced,
        "not fsynced LAZY_SYNC_MAX after the last fsync"
    );
}

/// `{:#}` (anyhow's chain format, as the binaries print errors) names the OS
/// error once: the message says what failed, the source says why.
#[test]
fn io_error_cause_is_printed_once() {
    let error = JournalError::Io {
        path: "/data/journal/00000000000000000001.seg".into(),
        source: std::io::Error::from_raw_os_error(28),
    };
    let text = format!("{:#}", ChainDisplay(&error));
    assert_eq!(text.matches("No space left on device").count(), 1, "{text}");
    assert!(text.contains("00000000000000000001.seg"), "{text}");
}

/// What `anyhow`'s `{:#}` prints: each error in the chain, joined by ": ".
struct ChainDisplay<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ChainDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// The segment files of a fixed run of appends and commits, as bytes:
/// records of many lengths (frames padded off sector boundaries), commits
/// of one and of several records, fsyncs that move the durable watermark,
/// and rolls into new segments. `in_place`: bodies encoded into the batch
/// buffer by [`Journal::append_located_with`], else copied from a slice.
fn fixed_run_bytes(dir: &Path, in_place: bool) -> Vec<u8> {
    let options = Options { fsync: FsyncPolicy::Always, segment_bytes_target: 4096, ..Options::default() };
    let (mut journal, _) = Journal::open(dir, options).expect("open");
    for index in 0..120usize {
        let len = (index * 37) % 700;
        let body: Vec<u8> = (0..len).map(|i| (i + index) as u8).collect();
        let append = |journal: &mut Journal| {
            if in_place {
                journal.append_located_with(|buffer| buffer.extend_from_slice(&body))
            } else {
                journal.append_located(&body)
            }
        };
        match append(&mut journal) {
            Ok(_) => {}
            Err(JournalError::BatchFull { .. }) => {
                // Past the preallocated room: commit, as the broker does.
                journal.commit().expect("commit");
                append(&mut journal).expect("append after a commit");
            }
            Err(error) => panic!("append: {error}"),
        }
        if index % 3 != 1 {
            journal.commit().expect("commit");
        }
    }
    journal.commit().expect("commit");
    let paths: Vec<PathBuf> = journal.segments().iter().map(|segment| segment.path.clone()).collect();
    assert!(paths.len() >= 3, "the run should roll: {paths:?}");
    paths.iter().flat_map(|path| fs::read(path).expect("read segment")).collect()
}

/// The journal's bytes on disk, pinned: the digest was taken from the
/// 0.5.0 journal (main e3f7b25, bodies copied into the batch), so neither
/// way of appending may change a byte of the format.
#[test]
fn segment_bytes_are_those_of_0_5_whichever_way_bodies_are_appended() {
    const GOLDEN_CRC32C: u32 = 0xc518_1c0b;
    let copied = tempfile::tempdir().expect("tempdir");
    let in_place = tempfile::tempdir().expect("tempdir");
    let copied = fixed_run_bytes(copied.path(), false);
    assert_eq!(crc32c::crc32c(&copied), GOLDEN_CRC32C, "{} bytes", copied.len());
    assert!(copied == fixed_run_bytes(in_place.path(), true), "encoding in place changed the bytes on disk");
}

#[test]
fn a_body_encoded_in_place_over_a_limit_is_taken_out_again() {
    let temp = tempfile::tempdir().expect("tempdir");
    let options = Options { record_bytes_max: 100, batch_bytes_max: 300, ..small_options() };
    let (mut journal, _) = Journal::open(temp.path(), options).expect("open");
    let kept = journal.append_located_with(|buffer| buffer.extend_from_slice(b"kept")).expect("append");
    match journal.append_located_with(|buffer| buffer.extend_from_slice(&[0u8; 101])) {
        Err(JournalError::RecordTooLarge { len: 101, max: 100 }) => {}
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    journal.append_located_with(|buffer| buffer.extend_from_slice(&[1u8; 100])).expect("at the limit");
    journal.append_located_with(|buffer| buffer.extend_from_slice(&[2u8; 100])).expect("second");
    match journal.append_located_with(|buffer| buffer.extend_from_slice(&[3u8; 100])) {
        Err(JournalError::BatchFull { .. }) => {}
        other => panic!("expected BatchFull, got {other:?}"),
    }
    let info = journal.commit().expect("commit");
    assert_eq!(info.records, 3, "refused bodies are not written");
    assert_eq!(journal.read_at(kept).expect("read back"), b"kept");
    let bodies: Vec<Vec<u8>> = replay_all(&journal).into_iter().map(|(_, _, body)| body).collect();
    assert_eq!(bodies, vec![b"kept".to_vec(), vec![1u8; 100], vec![2u8; 100]]);
    assert_eq!(journal.next_seq(), 4, "refused appends take no seq");
}

/// A burst's batch buffer is given back after its commit, down to the
/// retained bound, while an ordinary batch's buffer is kept for the next.
#[test]
fn batch_buffer_is_bounded_after_a_burst() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options { fsync: FsyncPolicy::Never, ..Options::default() };
    let (mut journal, _) = Journal::open(dir.path(), options).unwrap();
    let retained = crate::limits::BATCH_BUFFER_RETAINED_BYTES_MAX;
    let record = vec![7u8; 1024 * 1024];
    for _ in 0..(2 * retained / record.len() + 1) {
        journal.append(&record).unwrap();
    }
    journal.commit().unwrap();
    assert!(journal.batch_capacity() <= retained, "kept {} bytes after a burst", journal.batch_capacity());
    journal.append(&record).unwrap();
    journal.commit().unwrap();
    let kept = journal.batch_capacity();
    assert!(kept > record.len(), "an ordinary batch's buffer is reused, not dropped");
    journal.append(&record).unwrap();
    journal.commit().unwrap();
    assert_eq!(journal.batch_capacity(), kept);
    assert_eq!(replay_all(&journal).len(), 2 * retained / record.len() + 3);
}

/// Records every write to a segment file (offset, length, all zeros past
/// `zeros_from` bytes in) over the real file system.
#[derive(Debug, Default)]
struct WriteLog(std::sync::Mutex<Vec<(u64, usize, bool)>>);

#[derive(Debug)]
struct Recording(std::sync::Arc<WriteLog>);

#[derive(Debug)]
struct RecordingFile {
    inner: Box<dyn StorageFile>,
    log: Option<std::sync::Arc<WriteLog>>,
}

impl StorageFile for RecordingFile {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if let Some(log) = &self.log {
            let zero_tail = buf.iter().rposition(|&b| b != 0).map_or(buf.len(), |last| buf.len() - last - 1);
            log.0.lock().unwrap().push((offset, buf.len(), zero_tail >= SECTOR_BYTES as usize));
        }
        self.inner.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn allocate(&self, len: u64) -> std::io::Result<()> {
        self.inner.allocate(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.inner.sync_data()
    }
    fn sync_all(&self) -> std::io::Result<()> {
        self.inner.sync_all()
    }
}

impl Recording {
    fn wrap(&self, path: &Path, inner: Box<dyn StorageFile>) -> Box<dyn StorageFile> {
        let segment = path.extension().is_some_and(|ext| ext == "seg");
        Box::new(RecordingFile { inner, log: segment.then(|| self.0.clone()) })
    }
}

impl Storage for Recording {
    fn is_dir(&self, dir: &Path) -> bool {
        OsStorage.is_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        OsStorage.create_dir_all(dir)
    }
    fn create_dir(&self, dir: &Path) -> std::io::Result<()> {
        OsStorage.create_dir(dir)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        OsStorage.sync_dir(dir)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        OsStorage.list(dir)
    }
    fn create_new(&self, path: &Path) -> std::io::Result<Box<dyn StorageFile>> {
        Ok(self.wrap(path, OsStorage.create_new(path)?))
    }
    fn open(&self, path: &Path, writable: bool) -> std::io::Result<Box<dyn StorageFile>> {
        Ok(self.wrap(path, OsStorage.open(path, writable)?))
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        OsStorage.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        OsStorage.rename(from, to)
    }
    fn lock(&self, dir: &Path) -> std::io::Result<LockGuard> {
        OsStorage.lock(dir)
    }
}

/// Once the journal is quiet (`ZERO_AHEAD_AFTER_SMALL_COMMITS` small
/// commits in a row), a small commit past the zeros written so far writes
/// zeros ahead in the same write, `zero_ahead_bytes` of them; the commits
/// that follow inside them write their frames only. A large commit writes
/// none, and the journal is not quiet again until as many small commits
/// have followed it. The records read back the same, also after a reopen.
#[test]
fn small_commits_write_zeros_ahead_once_the_journal_is_quiet() {
    let temp = tempfile::tempdir().expect("tempdir");
    let log = std::sync::Arc::new(WriteLog::default());
    let ahead = 8 * 1024;
    let segment = 1024 * 1024;
    let options = Options {
        fsync: FsyncPolicy::Never,
        segment_bytes_target: segment,
        zero_ahead_bytes: ahead,
        ..Options::default()
    };
    let storage = std::sync::Arc::new(Recording(log.clone()));
    let (mut journal, _) = Journal::open_on(storage, temp.path(), options).expect("open");
    let quiet = ZERO_AHEAD_AFTER_SMALL_COMMITS as usize;
    let mut bodies = Vec::new();
    let small_commits = |journal: &mut Journal, bodies: &mut Vec<Vec<u8>>, count: usize| {
        log.0.lock().unwrap().clear();
        for index in 0..count {
            bodies.push(body(index));
            journal.append(&body(index)).expect("append");
            journal.commit().expect("commit");
        }
        std::mem::take(&mut *log.0.lock().unwrap())
    };
    let sector = SECTOR_BYTES as usize;
    // Not quiet yet: frames only.
    let writes = small_commits(&mut journal, &mut bodies, quiet - 1);
    assert!(writes.iter().all(|w| w.1 == sector && !w.2), "zeros before the journal was quiet: {writes:?}");
    // Quiet: the next commit writes zeros ahead, and the ones inside them do not.
    let writes = small_commits(&mut journal, &mut bodies, 40);
    let mut zeroed = 0;
    let mut zero_writes = 0;
    for &(offset, len, zero_tail) in &writes {
        if offset + SECTOR_BYTES > zeroed {
            assert_eq!(len, sector + ahead as usize, "a commit past the zeros writes {ahead} ahead");
            assert!(zero_tail);
            zeroed = offset + len as u64;
            zero_writes += 1;
        } else {
            assert_eq!(len, sector, "a commit inside the zeros writes its sector only");
        }
    }
    assert_eq!(zero_writes, 3, "40 sectors past 8 KiB of zeros at a time: {writes:?}");
    // A large commit writes no zeros, and the journal is not quiet again
    // until as many small commits have followed it.
    let large = vec![9u8; ZERO_AHEAD_COMMIT_BYTES_MAX as usize + 1];
    journal.append(&large).expect("append");
    journal.commit().expect("commit");
    bodies.push(large);
    let writes = small_commits(&mut journal, &mut bodies, quiet - 1);
    assert!(writes.iter().all(|w| w.1 == sector), "zeros right after a large commit: {writes:?}");
    let writes = small_commits(&mut journal, &mut bodies, 1);
    assert_eq!(writes[0].1, sector + ahead as usize, "quiet again");
    assert_eq!(replay_all(&journal).into_iter().map(|(_, _, body)| body).collect::<Vec<_>>(), bodies);
    drop(journal);
    let (journal, _) = Journal::open(temp.path(), options_after(segment)).expect("reopen");
    assert_eq!(replay_all(&journal).len(), bodies.len());
}

fn options_after(segment: u64) -> Options {
    Options { fsync: FsyncPolicy::Never, segment_bytes_target: segment, ..Options::default() }
}

/// The rule, on its own.
#[test]
fn zero_ahead_ends_where_the_rule_says() {
    let options = |zero_ahead_bytes| Options { zero_ahead_bytes, ..Options::default() };
    let rule = crate::journal::zero_ahead_end;
    let quiet = ZERO_AHEAD_AFTER_SMALL_COMMITS;
    // Quiet, past the zeros: zeros ahead, whole sectors.
    assert_eq!(rule(1024, quiet, 512, 1 << 20, &options(4096)), 1024 + 4096);
    assert_eq!(rule(1024, quiet, 512, 1 << 20, &options(1000)), 1536);
    // Inside the zeros: nothing more.
    assert_eq!(rule(1024, quiet, 4096, 1 << 20, &options(4096)), 1024);
    // Off, or not quiet (after a large commit, or too few small ones).
    assert_eq!(rule(1024, quiet, 512, 1 << 20, &options(0)), 1024);
    assert_eq!(rule(1024, 0, 512, 1 << 20, &options(4096)), 1024);
    assert_eq!(rule(1024, quiet - 1, 512, 1 << 20, &options(4096)), 1024);
    // Never past the preallocated end (nor before the commit's own end).
    assert_eq!(rule(1024, quiet, 512, 2048, &options(4096)), 2048);
    assert_eq!(rule(4096, quiet, 512, 3000, &options(4096)), 4096);
}
