//! The subcommands other than `run`: each prints for a person (or, with
//! `--json`, the admin endpoint's raw answer) and returns the exit code.

use std::path::Path;
use std::process::ExitCode;

use orderly_broker::admin::{self, StatusReport};
use orderly_broker::ops;
use orderly_cli::exit;
use orderly_common::text::Escaped;

use crate::flags::{AdminArgs, DlqCommand, JournalCommand};

pub fn journal(command: JournalCommand) -> anyhow::Result<ExitCode> {
    match command {
        JournalCommand::Verify(args) => ops::verify(&args.data_dir),
        JournalCommand::Repair(args) => ops::repair(&args.data_dir),
        JournalCommand::Inspect(args) => ops::inspect(&args.data_dir),
    }
}

pub fn keygen(prefix: &Path) -> anyhow::Result<ExitCode> {
    print!("{}", orderly_security::keys::keygen(prefix)?);
    Ok(ExitCode::from(exit::OK))
}

pub fn status(args: &AdminArgs) -> anyhow::Result<ExitCode> {
    let client = args.client()?;
    if args.json {
        print!("{}", client.request("GET", "/status")?);
        return Ok(ExitCode::from(exit::OK));
    }
    print_status(&client.status()?);
    Ok(ExitCode::from(exit::OK))
}

fn print_status(report: &StatusReport) {
    let status = &report.status;
    println!("workers:");
    if status.workers.is_empty() {
        println!("  (none connected)");
    }
    for w in &status.workers {
        let ready = if w.ready { "alive" } else { "joining" };
        println!(
            "  {:<24} {ready:<8} credits {:>4} free of {:>4}  in flight {}",
            // Validated by the broker, but everything printed here passed
            // through the network: escape it all the same.
            Escaped(&w.id).to_string(),
            w.capacity.saturating_sub(w.in_flight),
            w.capacity,
            w.in_flight
        );
    }
    for (label, value) in [
        ("partial orders", status.partial_orders as u64),
        ("pending orders", status.pending_orders as u64),
        ("in-flight orders", status.in_flight_orders as u64),
        ("dead letters", status.dead_letters as u64),
        ("held bytes", status.held_bytes),
        ("journal segments", report.journal_segments as u64),
        ("journal bytes", report.journal_bytes),
    ] {
        println!("{label:<17} {value}");
    }
    // Only while closed: the lines above stay as they were.
    if let Some(closed) = &report.intake_closed {
        println!("{:<17} closed ({}): {}", "intake", Escaped(&closed.reason), Escaped(&closed.detail));
    }
}

pub fn dlq(command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List(args) => dlq_list(&args),
        DlqCommand::Retry { admin: args, id, all } => dlq_retry(&args, id.as_deref(), all),
    }
}

fn dlq_list(args: &AdminArgs) -> anyhow::Result<ExitCode> {
    let client = args.client()?;
    if args.json {
        print!("{}", client.request("GET", "/dlq")?);
        return Ok(ExitCode::from(exit::OK));
    }
    let letters = client.dead_letters()?;
    for l in &letters {
        // Ids and reasons are what peers sent: escaped, so an ESC or a
        // newline in them cannot rewrite the terminal or forge a line.
        let (producer, id, reason) = (Escaped(&l.producer), Escaped(&l.id), Escaped(&l.reason));
        println!("{producer}/{id}\tattempts {}\t{reason}", l.attempts);
    }
    println!("{} dead letters", letters.len());
    Ok(ExitCode::from(exit::OK))
}

fn dlq_retry(args: &AdminArgs, id: Option<&str>, all: bool) -> anyhow::Result<ExitCode> {
    let order = match (id, all) {
        (_, true) => None,
        (Some(id), false) => {
            admin::parse_order_ref(id)?;
            Some(id)
        }
        (None, false) => unreachable!("clap requires an id or --all"),
    };
    let revived = args.client()?.retry(order)?.revived;
    println!("{revived} dead letters returned to the queue");
    if revived == 0 && id.is_some() {
        eprintln!("no dead letter {} (see `orderly-broker dlq list`)", id.unwrap_or_default());
        return Ok(ExitCode::from(exit::FAILURE));
    }
    Ok(ExitCode::from(exit::OK))
}
