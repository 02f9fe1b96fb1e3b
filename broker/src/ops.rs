//! Offline journal operations behind `orderly-broker journal ...`.
//! They print for a person and return the exit code.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use orderly_cli::exit;
use orderly_journal::{ProblemKind, ReplayError, RECORD_BYTES_MAX};

use crate::core::codec::{decode_event, EventDecodeError};
use crate::core::{Core, CoreConfig};
use crate::io::journal_dir;

/// `journal verify`: exit 0 when sound (a torn tail is reported, and sound:
/// start-up cuts it off), 1 when corrupt.
pub fn verify(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let dir = journal_dir(data_dir);
    let report = orderly_journal::verify(&dir, RECORD_BYTES_MAX)
        .with_context(|| format!("cannot read the journal in {}", dir.display()))?;
    for segment in &report.segments {
        println!(
            "segment {:>6}  {:>12} bytes  {:>10} records  first seq {}",
            segment.id, segment.bytes, segment.records, segment.first_seq
        );
    }
    println!("{} segments, {} records", report.segments.len(), report.records());
    match &report.problem {
        None => {
            println!("journal OK");
            Ok(ExitCode::from(exit::OK))
        }
        Some(problem) if problem.kind == ProblemKind::TornTail => {
            println!(
                "torn tail in {} at offset {}: {} (an interrupted write; the broker cuts it off at start-up)",
                problem.file.display(),
                problem.offset,
                problem.description
            );
            println!("journal OK");
            Ok(ExitCode::from(exit::OK))
        }
        Some(problem) => {
            println!("CORRUPT: {} at offset {}: {}", problem.file.display(), problem.offset, problem.description);
            println!("repair with: orderly-broker journal repair --data-dir {}", data_dir.display());
            Ok(ExitCode::from(exit::FAILURE))
        }
    }
}

/// `journal repair`: cut at the first bad record, moving (never deleting)
/// the rest aside.
pub fn repair(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let dir = journal_dir(data_dir);
    let report = orderly_journal::repair(&dir, RECORD_BYTES_MAX)
        .with_context(|| format!("cannot repair the journal in {}", dir.display()))?;
    let Some(problem) = &report.problem else {
        println!("journal OK: nothing to repair");
        return Ok(ExitCode::from(exit::OK));
    };
    println!("first bad record: {} at offset {}: {}", problem.file.display(), problem.offset, problem.description);
    if let Some((file, offset)) = &report.truncated {
        println!("cut {} at offset {offset}", file.display());
    }
    for moved in &report.moved {
        println!(
            "moved {} bytes of {} (from offset {}) to {}",
            moved.bytes,
            moved.from.display(),
            moved.from_offset,
            moved.to.display()
        );
    }
    if let Some(quarantine) = &report.quarantine_dir {
        println!("quarantine: {} (inspect it, then delete it yourself)", quarantine.display());
    }
    println!("journal repaired; orders recorded only in the moved data are not in the journal any more");
    Ok(ExitCode::from(exit::OK))
}

/// `journal inspect`: order counts by state and segment sizes, read-only.
pub fn inspect(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let dir = journal_dir(data_dir);
    let mut core = Core::new(CoreConfig::with_incarnation(0));
    core.start_replay(crate::io::wall_clock_ms());
    let mut records = 0u64;
    let outcome = orderly_journal::read_records(&dir, RECORD_BYTES_MAX, |seq, _segment, body| {
        records += 1;
        // A group member's applied-index markers are not events.
        if !crate::io::is_marker(body) {
            core.apply(&decode_event(seq, body)?);
        }
        Ok::<(), EventDecodeError>(())
    })
    .map_err(|e| match e {
        // The decoder's cause is a source: keep it in the chain.
        ReplayError::Callback { seq, error } => {
            anyhow::Error::new(error).context(format!("replay callback failed at seq {seq}"))
        }
        ReplayError::Journal(error) => anyhow::anyhow!("{error}"),
    })
    .with_context(|| format!("cannot read the journal in {}", dir.display()))?;
    let status = core.status();
    for segment in &outcome.segments {
        println!("segment {:>6}  {:>12} bytes  {:>10} records", segment.id, segment.bytes, segment.records);
    }
    let bytes: u64 = outcome.segments.iter().map(|s| s.bytes).sum();
    println!("journal: {} segments, {bytes} bytes, {records} records", outcome.segments.len());
    println!("partial orders:      {}", status.partial_orders);
    println!("pending orders:      {}", status.pending_orders);
    println!("in-flight orders:    {}", status.in_flight_orders);
    println!("acknowledged orders: {} (in the retained segments)", status.counters.orders_acked);
    println!("dead-lettered:       {}", status.dead_letters);
    println!("dedup keys:          {} (acknowledged orders in the dedup window)", core.remembered_keys());
    println!("item bytes held:     {}", status.held_bytes);
    if let Some(problem) = &outcome.problem {
        println!("stopped at {} offset {}: {}", problem.file.display(), problem.offset, problem.description);
    }
    Ok(ExitCode::from(exit::OK))
}
