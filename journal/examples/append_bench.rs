//! Append throughput and commit latency with group commit.
//!
//! Appends `--records` records of `--bytes` bytes in batches of `--batch`,
//! one commit (one write + one fsync under `--fsync always`) per batch, into
//! a temporary journal under `--dir` (default: the current directory, so the
//! figures are for the disk the project lives on, not a tmpfs).
//!
//! ```text
//! cargo run --release -p orderly-journal --example append_bench -- \
//!     [--records 200000] [--bytes 200] [--batch 64] [--fsync always] [--dir .]
//! ```

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use orderly_journal::{FsyncPolicy, Journal, Options};

const RECORDS_DEFAULT: u64 = 200_000;
const RECORD_BYTES_DEFAULT: usize = 200;
const BATCH_LEN_DEFAULT: u64 = 64;
const BYTES_PER_MB: f64 = 1_000_000.0;

struct Args {
    records: u64,
    record_bytes: usize,
    batch_len: u64,
    fsync: FsyncPolicy,
    dir: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        records: RECORDS_DEFAULT,
        record_bytes: RECORD_BYTES_DEFAULT,
        batch_len: BATCH_LEN_DEFAULT,
        fsync: FsyncPolicy::Always,
        dir: PathBuf::from("."),
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let value = words.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<u64>().map_err(|error| format!("{flag} {value}: {error}"));
        match flag.as_str() {
            "--records" => args.records = number()?,
            "--bytes" => args.record_bytes = number()? as usize,
            "--batch" => args.batch_len = number()?.max(1),
            "--fsync" => args.fsync = value.parse().map_err(|error| format!("{error}"))?,
            "--dir" => args.dir = PathBuf::from(value),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// Latency at quantile `q` (0..=1) of sorted samples.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let index = ((sorted.len().saturating_sub(1)) as f64 * q).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let temp = tempfile::Builder::new().prefix(".append-bench-").tempdir_in(&args.dir)?;
    let options = Options { fsync: args.fsync, ..Options::default() };
    let (mut journal, _) = Journal::open(temp.path(), options)?;
    let body = vec![0x5Au8; args.record_bytes];
    let mut latencies = Vec::with_capacity((args.records / args.batch_len + 1) as usize);
    let (mut fsyncs, mut disk_bytes, mut appended) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    while appended < args.records {
        let batch = args.batch_len.min(args.records - appended);
        let commit_start = Instant::now();
        for _ in 0..batch {
            journal.append(&body)?;
        }
        let info = journal.commit()?;
        latencies.push(commit_start.elapsed());
        fsyncs += u64::from(info.fsynced);
        disk_bytes += info.bytes;
        appended += batch;
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    println!(
        "{} records x {} bytes, batches of {}, fsync {}, in {} ({} segments)",
        args.records,
        args.record_bytes,
        args.batch_len,
        args.fsync,
        temp.path().display(),
        journal.segments().len()
    );
    println!("elapsed        {elapsed:.3} s");
    println!("records/s      {:.0}", args.records as f64 / elapsed);
    println!("payload MB/s   {:.2}", (args.records as f64 * args.record_bytes as f64) / BYTES_PER_MB / elapsed);
    println!("disk MB/s      {:.2} (framing included)", disk_bytes as f64 / BYTES_PER_MB / elapsed);
    println!("fsyncs/s       {:.0} ({fsyncs} fsyncs)", fsyncs as f64 / elapsed);
    println!(
        "commit latency p50 {:?}  p99 {:?}  max {:?} (append + write + fsync per batch)",
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("append_bench: {message}");
            eprintln!("usage: append_bench [--records N] [--bytes S] [--batch B] [--fsync always|never|interval:MS] [--dir D]");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("append_bench: {error}");
            ExitCode::FAILURE
        }
    }
}
