//! Property tests: round trip, truncation at any byte, and a flipped byte
//! anywhere is never replayed as different data.

use std::convert::Infallible;
use std::fs;
use std::path::Path;

use orderly_journal::{
    verify, FsyncPolicy, Journal, JournalError, Options, RECORD_BYTES_MAX, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
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

/// Writes the steps and closes the journal; returns each record's segment.
fn write(dir: &Path, steps: &[Step]) -> Vec<u64> {
    let (mut journal, _) = Journal::open(dir, options()).expect("open");
    let mut segments = Vec::new();
    for (body, commit) in steps {
        segments.push(journal.append(body).expect("append").1);
        if *commit {
            journal.commit().expect("commit");
        }
    }
    journal.commit().expect("commit");
    segments
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

/// Where record boundaries fall in the last segment: after the header, then
/// after each of its records; and how many records precede that segment.
fn last_segment_layout(steps: &[Step], segments: &[u64]) -> (usize, Vec<u64>) {
    let last = *segments.last().expect("at least one record");
    let earlier = segments.iter().filter(|segment| **segment != last).count();
    let mut boundaries = vec![SEGMENT_HEADER_BYTES as u64];
    for (body, _) in &steps[earlier..] {
        let end = boundaries.last().copied().unwrap_or_default() + (RECORD_HEADER_BYTES + body.len()) as u64;
        boundaries.push(end);
    }
    (earlier, boundaries)
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
        let segments = write(temp.path(), &steps);
        let last = verify(temp.path(), RECORD_BYTES_MAX).expect("verify").segments.pop().expect("segment");
        let cut = at.index(last.bytes as usize + 1) as u64;
        fs::OpenOptions::new().write(true).open(&last.path).expect("open").set_len(cut).expect("cut");

        let (journal, recovery) = Journal::open(temp.path(), options()).expect("recovers");
        let (earlier, boundaries) = last_segment_layout(&steps, &segments);
        prop_assert_eq!(boundaries.last().copied(), Some(last.bytes));
        let kept = earlier + boundaries[1..].iter().filter(|end| **end <= cut).count();
        prop_assert_eq!(replay(&journal), bodies(&steps[..kept]));
        prop_assert_eq!(recovery.records, kept as u64);
        // A cut inside the header or a record is a torn tail; one between
        // records leaves nothing to cut.
        let torn = !boundaries.contains(&cut);
        prop_assert_eq!(recovery.truncated.as_ref().map(|tail| &tail.file), torn.then_some(&last.path));
    }

    #[test]
    fn a_flipped_byte_is_detected_never_replayed(steps in steps(), file in any::<Index>(), at in any::<Index>(), mask in 1u8..) {
        let temp = tempfile::tempdir().expect("tempdir");
        write(temp.path(), &steps);
        let segments = verify(temp.path(), RECORD_BYTES_MAX).expect("verify").segments;
        let target = &segments[file.index(segments.len())];
        let mut bytes = fs::read(&target.path).expect("read");
        let offset = at.index(bytes.len());
        bytes[offset] ^= mask;
        fs::write(&target.path, bytes).expect("write");

        let report = verify(temp.path(), RECORD_BYTES_MAX).expect("verify reads");
        prop_assert!(report.problem.is_some(), "verify missed a flip at {} offset {}", target.path.display(), offset);
        match Journal::open(temp.path(), options()) {
            Ok((journal, recovery)) => {
                let tail = recovery.truncated.expect("a flip that opens is a torn tail");
                prop_assert_eq!(&tail.file, &target.path);
                prop_assert_eq!(target.id, segments.last().expect("segment").id, "only the last segment is cut");
                let replayed = replay(&journal);
                let originals = bodies(&steps);
                prop_assert!(replayed.len() < originals.len());
                prop_assert_eq!(&replayed[..], &originals[..replayed.len()]);
            }
            Err(error @ (JournalError::Corrupt { .. } | JournalError::UnsupportedVersion { .. })) => {
                let name = target.path.file_name().expect("name").to_string_lossy().into_owned();
                prop_assert!(error.to_string().contains(&name), "{} does not name {}", error, name);
            }
            Err(other) => prop_assert!(false, "unexpected error {:?}", other),
        }
    }
}
