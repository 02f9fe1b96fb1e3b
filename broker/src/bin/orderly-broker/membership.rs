//! `group add` and `group remove`: ask the group's leader, through its
//! admin endpoint, to change the members (see
//! `orderly_replication::membership` and docs/REPLICATION.md, "Changing the
//! members"). The leader is found by asking every member of the group file
//! for its status, and found again when it changes under the command.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use orderly_broker::admin::schema::{GroupReport, MembershipReport};
use orderly_broker::admin::{self, percent_encode, AdminClient, AdminError};
use orderly_cli::exit;
use orderly_common::text::Escaped;
use orderly_replication::{Group, MemberRecord};

use crate::flags::GroupChangeArgs;

/// Between two looks for the leader (an election takes 2 s and up).
const RETRY_INTERVAL: Duration = Duration::from_millis(300);
/// Between two looks at whether an added member has become a voter.
const PROMOTION_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The leader's answer to a change.
enum Asked {
    Done(MembershipReport),
    /// The group refused: the HTTP status and why.
    Refused(u16, String),
    /// No leader took it before the deadline: the last error seen.
    TimedOut(String),
}

pub fn add(args: &GroupChangeArgs) -> anyhow::Result<ExitCode> {
    let group = Group::load(&args.group)?;
    let id = args.node_id;
    let Some(member) = group.member(id) else {
        eprintln!(
            "member {id} is not in {}: add its [[member]] table (id, intake, fanout, control, peer, admin) first",
            args.group.display()
        );
        return Ok(ExitCode::from(exit::USAGE));
    };
    let record = MemberRecord::of(member);
    let mut path = format!(
        "/group/add?id={id}&intake={}&fanout={}&control={}&peer={}&admin={}",
        percent_encode(&record.intake),
        percent_encode(&record.fanout),
        percent_encode(&record.control),
        percent_encode(&record.peer),
        percent_encode(&record.admin)
    );
    if let Some(key) = &record.public_key {
        path.push_str(&format!("&public_key={}", percent_encode(key)));
    }
    let token = args.admin_token.as_deref().map(admin::AdminToken::load).transpose()?;
    if let Some(reason) = started_without_join(&group, member, token.as_ref()) {
        eprintln!("{reason}");
        return Ok(ExitCode::from(exit::REJECTED));
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    match ask_leader(&group, id, token.as_ref(), &path, deadline) {
        Asked::Done(report) => println!(
            "member {id} added as a learner (entry {}); it becomes a voter once it has caught up",
            report.index
        ),
        // Already a member: a repeated command waits for the promotion.
        Asked::Refused(409, reason) if reason.contains("already in the group") => {
            println!("member {id} is already in the group")
        }
        Asked::Refused(status, reason) => return Ok(refused(status, &reason)),
        Asked::TimedOut(last) => {
            eprintln!("no leader took the change within {}s (last: {})", args.timeout_secs, Escaped(&last));
            return Ok(ExitCode::from(exit::FAILURE));
        }
    }
    loop {
        let leader = find_leader(&group, id, token.as_ref());
        if let Some((_, report)) = &leader {
            if report.voters.contains(&id) {
                println!("member {id} is a voter; the voters are {:?}", report.voters);
                return Ok(ExitCode::from(exit::OK));
            }
        }
        if Instant::now() >= deadline {
            let state = match leader {
                Some((_, report)) => {
                    format!("leader {} at commit {}; learners {:?}", report.member, report.commit, report.learners)
                }
                None => "no leader answering".to_owned(),
            };
            eprintln!(
                "member {id} is not a voter after {}s ({state}): is it running with --join? It is promoted when it catches up; see `orderly-broker group status`",
                args.timeout_secs
            );
            return Ok(ExitCode::from(exit::TIMEOUT));
        }
        std::thread::sleep(PROMOTION_POLL_INTERVAL);
    }
}

pub fn remove(args: &GroupChangeArgs) -> anyhow::Result<ExitCode> {
    let group = Group::load(&args.group)?;
    let id = args.node_id;
    let token = args.admin_token.as_deref().map(admin::AdminToken::load).transpose()?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    // The member being removed may lead: it hands over, so it is not
    // asked again once it said so (see `ask_leader`).
    match ask_leader(&group, 0, token.as_ref(), &format!("/group/remove?id={id}"), deadline) {
        Asked::Done(report) => {
            println!(
                "member {id} removed (entry {}); remove its [[member]] table from {} and give the file to producers and workers",
                report.index,
                args.group.display()
            );
            Ok(ExitCode::from(exit::OK))
        }
        Asked::Refused(status, reason) => Ok(refused(status, &reason)),
        Asked::TimedOut(last) => {
            eprintln!("no leader took the change within {}s (last: {})", args.timeout_secs, Escaped(&last));
            Ok(ExitCode::from(exit::TIMEOUT))
        }
    }
}

/// A new member started without `--join` on an empty data directory
/// took the group file's members as its voters: added, it would not agree
/// with the group's configuration. Refused while the leader does not count
/// it yet (a member that does not answer is not checked).
fn started_without_join(
    group: &Group,
    member: &orderly_replication::Member,
    token: Option<&admin::AdminToken>,
) -> Option<String> {
    let client = AdminClient { addr: member.admin.clone(), token: token.cloned() };
    let own = client.status().ok()?.group?;
    let (_, leader) = find_leader(group, member.id, token)?;
    let known = leader.voters.contains(&member.id) || leader.learners.contains(&member.id);
    (!known && !own.voters.is_empty()).then(|| {
        format!(
            "member {} runs with its own configuration (voters {:?}): it was started without --join. Stop it, \
             empty its data directory, start it with `run --join`, then add it",
            member.id, own.voters
        )
    })
}

fn refused(status: u16, reason: &str) -> ExitCode {
    eprintln!("the group refused the change ({status}): {}", Escaped(reason.trim()));
    ExitCode::from(exit::REJECTED)
}

/// The member that says it leads (not `skip`), with its report.
fn find_leader(group: &Group, skip: u64, token: Option<&admin::AdminToken>) -> Option<(AdminClient, GroupReport)> {
    group.members().iter().filter(|m| m.id != skip).find_map(|member| {
        let client = AdminClient { addr: member.admin.clone(), token: token.cloned() };
        let report = client.status().ok()?.group?;
        (report.role == "leader").then_some((client, report))
    })
}

/// POSTs `path` to the leader until one answers other than "not the
/// leader" (503: an election, a handover) or `deadline` passes.
fn ask_leader(group: &Group, skip: u64, token: Option<&admin::AdminToken>, path: &str, deadline: Instant) -> Asked {
    let mut last = "no member answered as the leader".to_owned();
    while Instant::now() < deadline {
        if let Some((client, _)) = find_leader(group, skip, token) {
            match client.request("POST", path).and_then(|body| parse(&client, &body)) {
                Ok(report) => return Asked::Done(report),
                Err(AdminError::Status { status, body, .. }) if status != 503 => return Asked::Refused(status, body),
                Err(error) => last = format!("{error:#}"),
            }
        }
        std::thread::sleep(RETRY_INTERVAL);
    }
    Asked::TimedOut(last)
}

fn parse(client: &AdminClient, body: &str) -> Result<MembershipReport, AdminError> {
    serde_json::from_str(body).map_err(|source| AdminError::Schema {
        addr: client.addr.clone(),
        what: "a membership report",
        source,
    })
}
