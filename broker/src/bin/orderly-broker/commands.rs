//! The subcommands other than `run`: each prints for a person (or, with
//! `--json`, the admin endpoint's raw answer) and returns the exit code.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use orderly_broker::admin::schema::{DeadLetterPage, OrderInfo, OrderView};
use orderly_broker::admin::{self, order_ref, AdminClient, AdminError, StatusReport};
use orderly_broker::ops;
use orderly_cli::exit;
use orderly_common::text::Escaped;
use orderly_common::OrderKey;

use crate::flags::{AdminArgs, DlqCommand, DlqListArgs, GroupCommand, GroupStatusArgs, JournalCommand, OrdersCommand};

/// Characters of a reason `dlq list` prints at most (`--json` has it all).
const LIST_REASON_CHARS_MAX: usize = 60;

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
        let state = match (w.ready, w.broken.is_some(), w.draining) {
            (_, true, _) => "broken",
            (_, _, true) => "draining",
            (true, _, _) => "alive",
            (false, _, _) => "joining",
        };
        println!(
            "  {:<24} {state:<8} credits {:>4} free of {:>4}  in flight {}",
            // Validated by the broker, but everything printed here passed
            // through the network: escape it all the same.
            Escaped(&w.id).to_string(),
            w.credits,
            w.capacity,
            w.in_flight
        );
        if let Some(why) = &w.broken {
            println!("  {:<24} its handler cannot run: {}", "", Escaped(why));
        }
    }
    for (label, value) in [
        ("partial orders", status.partial_orders as u64),
        ("pending orders", status.pending_orders as u64),
        ("  delayed", status.delayed_orders as u64),
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
        DlqCommand::Show { admin, id, info } => show(&admin, &id, true, info),
        DlqCommand::Retry { admin: args, id, all } => dlq_retry(&args, id.as_deref(), all),
        DlqCommand::Delete { admin, id, all } => dlq_delete(&admin, id.as_deref(), all),
    }
}

pub fn orders(command: OrdersCommand) -> anyhow::Result<ExitCode> {
    match command {
        OrdersCommand::Show { admin, id } => show(&admin, &id, false, true),
    }
}

fn dlq_list(args: &DlqListArgs) -> anyhow::Result<ExitCode> {
    let client = args.admin.client()?;
    let after = args.after.as_deref().map(admin::parse_order_ref).transpose()?;
    if args.admin.json {
        // The array of `GET /dlq`, as before paging.
        print!("{}", client.request("GET", &format!("/dlq{}", admin::page_query(after.as_ref(), args.limit)))?);
        return Ok(ExitCode::from(exit::OK));
    }
    let page = client.dead_letters_page(after.as_ref(), args.limit)?;
    print!("{}", dead_letter_table(&page, args.limit));
    Ok(ExitCode::from(exit::OK))
}

/// The `dlq list` table: one line a dead letter, tab-separated: the order,
/// `attempts N` (the first two columns as before paging, for scripts),
/// first seen, dead since, last worker, and last the reason (cut to fit);
/// then the count and, when more remain, the command for the next page.
/// Everything from peers (ids, reasons, worker ids) is escaped.
fn dead_letter_table(page: &DeadLetterPage, limit: Option<usize>) -> String {
    let mut out = String::new();
    for letter in &page.dead_letters {
        let key = OrderKey::new(letter.producer.as_str(), letter.id.as_str());
        let worker = letter.last_worker.as_deref().map_or("-".to_owned(), |w| Escaped(w).to_string());
        out += &format!(
            "{key}\tattempts {}\tfirst seen {}\tdead since {}\tlast worker {worker}\t{}\n",
            letter.attempts,
            utc(letter.first_seen_unix_ms),
            utc(letter.dead_since_unix_ms),
            truncate(&Escaped(&letter.reason).to_string(), LIST_REASON_CHARS_MAX),
        );
    }
    out += &format!("showing {} of {} dead letters\n", page.dead_letters.len(), page.total);
    if let Some(next) = &page.next_after {
        let limit = limit.map(|n| format!(" --limit {n}")).unwrap_or_default();
        out += &format!("next page: orderly-broker dlq list --after {}{limit}\n", shell_word(&order_ref(next)));
    }
    out
}

/// A Unix-ms timestamp as RFC 3339 UTC to the second; `-` when unknown.
fn utc(unix_ms: Option<u64>) -> String {
    match unix_ms {
        Some(ms) => humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string(),
        None => "-".to_owned(),
    }
}

/// `text` cut to `chars_max` characters, the cut marked with `…`.
fn truncate(text: &str, chars_max: usize) -> String {
    if text.chars().count() <= chars_max {
        return text.to_owned();
    }
    text.chars().take(chars_max.saturating_sub(1)).chain(['…']).collect()
}

/// `text` as one shell word: as it is when it is plain, else single-quoted
/// (and escaped, so nothing in it can rewrite the terminal).
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-:@+=,%".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_owned();
    }
    format!("'{}'", Escaped(&text.replace('\'', "'\\''")))
}

/// `dlq show` (`dead_only`) and `orders show`: the details (with `info`)
/// and the handler's view, the one JSON line a handler reads.
fn show(args: &AdminArgs, id: &str, dead_only: bool, info: bool) -> anyhow::Result<ExitCode> {
    let key = admin::parse_order_ref(id)?;
    let client = args.client()?;
    if args.json {
        let route = if dead_only { "/dlq/show" } else { "/orders/show" };
        let path = format!("{route}?id={}", admin::percent_encode(id));
        return not_found_fails(client.request("GET", &path).map(|body| print!("{body}")));
    }
    let view = match client.show(&key, dead_only) {
        Ok(view) => view,
        Err(error) => return not_found_fails(Err(error)),
    };
    if info || view.handler_view.is_none() {
        print!("{}", order_details(&view.order));
    }
    print_handler_view(&view);
    Ok(ExitCode::from(exit::OK))
}

/// A 404 (no such order, or not a dead letter) is the broker's one-line
/// message and exit 1; other errors go up.
fn not_found_fails(result: Result<(), AdminError>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(()) => Ok(ExitCode::from(exit::OK)),
        Err(AdminError::Status { status: 404, body, .. }) => {
            eprintln!("{}", Escaped(&body));
            Ok(ExitCode::from(exit::FAILURE))
        }
        Err(error) => Err(error.into()),
    }
}

/// The JSON line, exactly as a handler reads it on stdin. On a terminal it
/// is escaped (a JSON string may hold raw C1 or bidi characters); piped,
/// it is the bytes themselves.
fn print_handler_view(view: &OrderView) {
    match &view.handler_view {
        Some(json) if std::io::stdout().is_terminal() => println!("{}", Escaped(json.get())),
        Some(json) => {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(json.get().as_bytes()).and_then(|()| stdout.write_all(b"\n"));
        }
        None => println!("handler view     none"),
    }
}

/// One `label value` line a fact of the order.
fn order_details(order: &OrderInfo) -> String {
    let place = serde_json::to_value(order.place).ok().and_then(|v| v.as_str().map(str::to_owned));
    let or_dash = |text: Option<&str>| text.map_or("-".to_owned(), |t| Escaped(t).to_string());
    let retry_in = order.retry_in_ms.map(|ms| humantime::format_duration(Duration::from_millis(ms)).to_string());
    let lines = [
        ("order", OrderKey::new(order.producer.as_str(), order.id.as_str()).to_string()),
        ("place", place.unwrap_or_else(|| "?".into()).replace('_', " ")),
        ("attempts", order.attempts.to_string()),
        ("items", format!("{} ({} bytes)", order.items, order.bytes)),
        ("worker", or_dash(order.worker.as_deref())),
        ("last reason", or_dash(order.last_reason.as_deref())),
        ("first seen", utc(order.first_seen_unix_ms)),
        ("dead since", utc(order.dead_since_unix_ms)),
        ("retry in", retry_in.unwrap_or_else(|| "-".into())),
    ];
    lines.iter().map(|(label, value)| format!("{label:<16} {value}\n")).collect()
}

fn dlq_delete(args: &AdminArgs, id: Option<&str>, all: bool) -> anyhow::Result<ExitCode> {
    let key = match (id, all) {
        (_, true) => None,
        (Some(id), false) => Some(admin::parse_order_ref(id)?),
        (None, false) => unreachable!("clap requires an id or --all"),
    };
    let client: AdminClient = args.client()?;
    let deleted = client.delete(key.as_ref())?.deleted;
    println!("{deleted} dead letters deleted");
    if let (0, Some(key)) = (deleted, &key) {
        eprintln!("no dead letter {key} (see `orderly-broker dlq list`)");
        return Ok(ExitCode::from(exit::FAILURE));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use orderly_broker::core::DeadLetter;

    fn letter(id: &str, reason: &str) -> DeadLetter {
        DeadLetter {
            producer: "shop".into(),
            id: id.into(),
            attempts: 5,
            reason: reason.into(),
            items: 1,
            bytes: 3,
            last_worker: Some("w1".into()),
            first_seen_unix_ms: Some(1_700_000_000_123),
            dead_since_unix_ms: None,
        }
    }

    #[test]
    fn the_table_shows_times_in_utc_escapes_and_cuts_reasons_and_says_where_to_go_on() {
        let long = format!("bad\x1b[2J{}", "x".repeat(100));
        let page = DeadLetterPage {
            total: 3,
            dead_letters: vec![letter("o1", "exit 3"), letter("o 2", &long)],
            next_after: Some(OrderKey::new("shop", "o 2")),
        };
        let table = dead_letter_table(&page, Some(2));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "shop/o1\tattempts 5\tfirst seen 2023-11-14T22:13:20Z\tdead since -\tlast worker w1\texit 3"
        );
        assert!(lines[1].starts_with("shop/o 2\tattempts 5\t"), "{table}");
        assert!(lines[1].contains("bad\\x1b[2J") && !lines[1].contains('\x1b') && lines[1].ends_with('…'), "{table}");
        assert!(lines[1].chars().count() < 200, "{table}");
        assert_eq!(lines[2], "showing 2 of 3 dead letters");
        assert_eq!(lines[3], "next page: orderly-broker dlq list --after 'shop/o 2' --limit 2");
        let empty = DeadLetterPage { total: 0, dead_letters: vec![], next_after: None };
        assert_eq!(dead_letter_table(&empty, None), "showing 0 of 0 dead letters\n");
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("shop/o-1"), "shop/o-1");
        assert_eq!(shell_word("shop/it's"), "'shop/it'\\''s'");
    }
}

pub fn group(command: GroupCommand) -> anyhow::Result<ExitCode> {
    match command {
        GroupCommand::Status(args) => group_status(&args),
        GroupCommand::Add(args) => crate::membership::add(&args),
        GroupCommand::Remove(args) => crate::membership::remove(&args),
    }
}

/// One member as `group status` saw it.
#[derive(serde::Serialize)]
struct MemberView {
    member: u64,
    admin: String,
    /// `leader`, `catching_up`, `follower` or `unreachable`.
    role: String,
    leader: Option<u64>,
    term: Option<u64>,
    commit: Option<u64>,
    applied: Option<u64>,
    /// Why it could not be asked, when unreachable.
    error: Option<String>,
    /// The voters and learners in its configuration.
    voters: Option<Vec<u64>>,
    learners: Option<Vec<u64>>,
}

fn group_status(args: &GroupStatusArgs) -> anyhow::Result<ExitCode> {
    let group = orderly_replication::Group::load(&args.group)?;
    let token = args.admin_token.as_deref().map(admin::AdminToken::load).transpose()?;
    let views: Vec<MemberView> = group
        .members()
        .iter()
        .map(|member| {
            let client = AdminClient { addr: member.admin.clone(), token: token.clone() };
            member_view(member.id, &member.admin, client.status())
        })
        .collect();
    if args.json {
        orderly_cli::println_lossy!("{}", serde_json::to_string_pretty(&views)?);
    } else {
        for v in &views {
            let num = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
            orderly_cli::println_lossy!(
                "member {:<3} {:<12} leader {:<3} term {:<6} commit {:<8} applied {:<8} admin {}{}",
                v.member,
                v.role,
                num(v.leader),
                num(v.term),
                num(v.commit),
                num(v.applied),
                v.admin,
                v.error.as_ref().map_or_else(String::new, |e| format!(" ({})", Escaped(e)))
            );
        }
    }
    // The configuration as the leader has it (the file may list a member
    // being added, or one removed but not yet taken out of the file).
    if let Some(leader) = views.iter().find(|v| v.role == "leader").filter(|_| !args.json) {
        let ids = |ids: &Option<Vec<u64>>| match ids.as_deref() {
            Some([]) | None => "-".to_owned(),
            Some(ids) => ids.iter().map(u64::to_string).collect::<Vec<_>>().join(" "),
        };
        orderly_cli::println_lossy!("voters {}  learners {}", ids(&leader.voters), ids(&leader.learners));
    }
    let leaders = views.iter().filter(|v| v.role == "leader").count();
    let answering = views.iter().filter(|v| v.role != "unreachable").count();
    Ok(ExitCode::from(if leaders == 1 && answering * 2 > views.len() { exit::OK } else { exit::FAILURE }))
}

fn member_view(id: u64, admin: &str, status: Result<StatusReport, AdminError>) -> MemberView {
    let unreachable = |error: String| MemberView {
        member: id,
        admin: admin.to_owned(),
        role: "unreachable".to_owned(),
        leader: None,
        term: None,
        commit: None,
        applied: None,
        error: Some(error),
        voters: None,
        learners: None,
    };
    match status {
        Err(error) => unreachable(format!("{error:#}")),
        Ok(report) => match report.group {
            None => unreachable("it answers as a single broker, not a group member".to_owned()),
            Some(g) => MemberView {
                member: id,
                admin: admin.to_owned(),
                role: g.role,
                leader: g.leader,
                term: Some(g.term),
                commit: Some(g.commit),
                applied: Some(g.applied),
                error: None,
                voters: Some(g.voters),
                learners: Some(g.learners),
            },
        },
    }
}
