//! Property tests: round trip; truncation past the durable point at any byte
//! keeps every record before the cut; a flipped byte in durable data is
//! corruption (refused by open, reported by verify), never a silent cut; a
//! flipped byte anywhere is never replayed as different data and never
//! loses a record silently.

use std::convert::Infallible;
use std::fs;
use std::path::Path;

use orderly_journal::{
    verify, FsyncPolicy, Journal, JournalError, Options, ProblemKind, RecordAt, RECORD_BYTES_MAX, RECORD_HEADER_BYTES,
    SECTOR_BYTES,
};
use proptest::prelude::*;
use proptest::sample::Index;

/// Cases per property: enough to hit every region of the format (headers,
/// framing, bodies, segment boundaries) while the crate's tests stay fast.
const CASES: u32 = 64;
/// Small segments, so a case spans several.
const SEGMENT_BYTES_TARGET: u64 = 3000;
const RECORDS_MAX: usize = 40;
const BODY_BYTES_MAX: usize = 2000;

/// A record body and whether to commit after appending it.
type Step = (Vec<u8>, bool);

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec((prop::collection::vec(any::<u8>(), 0..BODY_BYTES_MAX), any::<bool>()), 1..RECORDS_MAX)
}

fn options() -> Options {
    // No fsync: these tests cut files themselves instead of crashing.
    Options { fsync: FsyncPolicy::Never, segment_bytes_target: SEGMENT_BYTES_TARGET, ..Options::default() }
}

/// Writes the steps and closes the journal cleanly (everything durable, the
/// end sealed); returns where each record is.
fn write(dir: &Path, steps: &[Step]) -> Vec<RecordAt> {
    let (mut journal, _) = Journal::open(dir, options()).expect("open");
    let mut placed = Vec::new();
    for (body, commit) in steps {
        let at = match journal.append_located(body) {
            // The batch reached the segment's preallocated end: commit first.
            Err(orderly_journal::JournalError::BatchFull { .. }) => {
                journal.commit().expect("commit");
                journal.append_located(body).expect("append")
            }
            other => other.expect("append"),
        };
        placed.push(at);
        if *commit {
            journal.commit().expect("commit");
        }
    }
    journal.commit().expect("commit");
    journal.close().expect("close");
    placed
}

/// End of a record's frame.
fn frame_end(at: &RecordAt, body: &[u8]) -> u64 {
    at.offset + (RECORD_HEADER_BYTES + body.len()) as u64
}

fn replay(journal: &Journal) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    journal
        .replay(|_, _, body| {
            bodies.push(body.to_vec());
            Ok::<(), Infallible>(())
        })
        .expect("replay");
    bodies
}

fn bodies(steps: &[Step]) -> Vec<Vec<u8>> {
    steps.iter().map(|(body, _)| body.clone()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn records_round_trip_through_reopen(steps in steps()) {
        let temp = tempfile::tempdir().expect("tempdir");
        write(temp.path(), &steps);
        let (journal, recovery) = Journal::open(temp.path(), options()).expect("reopen");
        prop_assert_eq!(recovery.records, steps.len() as u64);
        prop_assert_eq!(recovery.truncated, None);
        prop_assert_eq!(replay(&journal), bodies(&steps));
        prop_assert_eq!(journal.next_seq(), steps.len() as u64 + 1);
    }

    #[test]
    fn cutting_the_last_segment_anywhere_keeps_the_records_before_the_cut(steps in steps(), at in any::<Index>()) {
        let temp = tempfile::tempdir().expect("tempdir");
        let placed = write(temp.path(), &steps);
        let last = verify(temp.path(), RECORD_BYTES_MAX).expect("verify").segments.pop().expect("segment");
        // Under `never`, nothing of the last segment but its header is
        // durable: a cut anywhere past the header is a power cut's doing.
        let cut = SECTOR_BYTES + at.index((last.bytes - SECTOR_BYTES) as usize + 1) as u64;
        fs::OpenOptions::new().write(true).open(&last.path).expect("open").set_len(cut).expect("cut");

        let (journal, recovery) = Journal::open(temp.path(), options()).expect("recovers");
        let kept = placed
            .iter()
            .zip(&steps)
            .take_while(|(at, (body, _))| at.segment != last.id || frame_end(at, body) <= cut)
            .count();
        prop_assert_eq!(replay(&journal), bodies(&steps[..kept]));
        prop_assert_eq!(recovery.records, kept as u64);
        if let Some(tail) = &recovery.truncated {
            prop_assert_eq!(&tail.file, &last.path);
        }
    }

    #[test]
    fn a_flipped_byte_in_durable_data_is_corruption_never_a_cut(
        steps in steps(), file in any::<Index>(), at in any::<Index>(), mask in 1u8..,
    ) {
        let temp = tempfile::tempdir().expect("tempdir");
        let placed = write(temp.path(), &steps);
        let segments = verify(temp.path(), RECORD_BYTES_MAX).expect("verify").segments;
        let target = &segments[file.index(segments.len())];
        // Every byte up to the last frame holding data (the seal's marker
        // after it carries no record).
        let data_end = placed
            .iter()
            .zip(&steps)
            .filter(|(at, _)| at.segment == target.id)
            .map(|(at, (body, _))| frame_end(at, body))
            .max()
            .unwrap_or(target.bytes)
            .max(orderly_journal::SEGMENT_HEADER_BYTES as u64);
        let limit = if target.id == segments.last().expect("segment").id { data_end } else { target.bytes };
        let offset = at.index(limit as usize);
        flip(&target.path, offset, mask);

        let report = verify(temp.path(), RECORD_BYTES_MAX).expect("verify reads");
        let problem = report.problem.expect("verify finds the flip");
        prop_assert!(
            matches!(problem.kind, ProblemKind::Corrupt | ProblemKind::UnsupportedVersion { .. }),
            "a flip at {} offset {} classed {:?}: {}", target.path.display(), offset, problem.kind, problem.description
        );
        match Journal::open(temp.path(), options()) {
            Err(error @ (JournalError::Corrupt { .. } | JournalError::UnsupportedVersion { .. })) => {
                let name = target.path.file_name().expect("name").to_string_lossy().into_owned();
                prop_assert!(error.to_string().contains(&name), "{} does not name {}", error, name);
            }
            other => prop_assert!(false, "expected a refusal, got {:?}", other.map(|(_, recovery)| recovery)),
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_is_never_replayed_nor_silently_loses_a_record(
        steps in steps(), file in any::<Index>(), at in any::<Index>(), mask in 1u8..,
    ) {
        let temp = tempfile::tempdir().expect("tempdir");
        write(temp.path(), &steps);
        let segments = verify(temp.path(), RECORD_BYTES_MAX).expect("verify").segments;
        let target = &segments[file.index(segments.len())];
        let length = fs::metadata(&target.path).expect("stat").len();
        let offset = at.index(length as usize);
        flip(&target.path, offset, mask);

        match Journal::open(temp.path(), options()) {
            // Only a flip in bytes holding no record (preallocated space,
            // the seal's marker) may open: then every record is there.
            Ok((journal, _)) => prop_assert_eq!(replay(&journal), bodies(&steps)),
            Err(JournalError::Corrupt { .. } | JournalError::UnsupportedVersion { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {:?}", other),
        }
    }
}

fn flip(path: &Path, offset: usize, mask: u8) {
    let mut bytes = fs::read(path).expect("read");
    bytes[offset] ^= mask;
    fs::write(path, bytes).expect("write");
}
