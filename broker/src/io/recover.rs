//! Start-up: open the journal and replay it into a fresh core.

use std::path::Path;

use orderly_journal::{Journal, RecordAt};
use tracing::warn;

use super::config::journal_dir;
use super::error::BrokerError;
use crate::compaction::Anchors;
use crate::core::codec::decode_event;
use crate::core::{Core, CoreConfig, Event, Millis};

/// Orders the tables are sized for before a replay, at most (beyond it
/// they grow as needed).
const REPLAY_RESERVE_MAX: usize = 4_000_000;

/// Opens the journal and replays it into a fresh core.
pub fn recover(
    data_dir: &Path,
    options: orderly_journal::Options,
    core_config: CoreConfig,
    now_ms: Millis,
) -> Result<(Journal, Core, Anchors), BrokerError> {
    let (journal, recovery) =
        Journal::open(&journal_dir(data_dir), options).map_err(|e| BrokerError::from_open(data_dir, e))?;
    let (core, anchors) = replay(&journal, core_config, now_ms, |_, _, _| {})?;
    warn_torn(&recovery);
    Ok((journal, core, anchors))
}

/// A group member's start: opens the journal, replays it as a member
/// does ([`replay_member`]) and, when the replay found an interrupted
/// apply's leftovers, fences them off (durably) before anything else is
/// written. Returns the applied index for raft.
pub fn recover_member(
    data_dir: &Path,
    options: orderly_journal::Options,
    core_config: CoreConfig,
    now_ms: Millis,
) -> Result<(Journal, Core, Anchors, u64), BrokerError> {
    let (mut journal, recovery) =
        Journal::open(&journal_dir(data_dir), options).map_err(|e| BrokerError::from_open(data_dir, e))?;
    warn_torn(&recovery);
    let replayed = replay_member(&journal, core_config, now_ms, |_, _, _| {})?;
    if replayed.leftovers > 0 {
        fence(&mut journal)?;
        warn!(
            events = replayed.leftovers,
            applied = replayed.applied,
            "journal: fenced off the events of an apply a crash interrupted (raft hands their entry out again)"
        );
    }
    Ok((journal, replayed.core, replayed.anchors, replayed.applied))
}

/// Appends a fence and commits it with fsync.
pub fn fence<L: super::recorder::EventLog>(log: &mut L) -> Result<(), BrokerError> {
    log.append(&fence_marker()).map_err(super::error::journal_err("append"))?;
    log.commit().map_err(super::error::journal_err("commit"))?;
    Ok(())
}

fn warn_torn(recovery: &orderly_journal::Recovery) {
    if let Some(torn) = &recovery.truncated {
        warn!(file = %torn.file.display(), offset = torn.offset, dropped_bytes = torn.dropped_bytes,
              reason = %torn.reason, "journal: cut off a torn tail (a write the crash interrupted; it was never confirmed)");
    }
}

/// First byte of a group member's applied-index marker record (see
/// [`applied_marker`]): 0xc1 is the one byte MessagePack never uses, so no
/// event body starts with it.
const APPLIED_MARKER_TAG: u8 = 0xc1;

/// The body of a marker record: "the Raft entries up to `index` are in
/// this journal". A group member appends one after each committed batch's
/// events, in the same commit, so the journal says itself how far it got
/// (a restart passes it to raft as `applied`). A single broker never
/// writes one.
pub fn applied_marker(index: u64) -> Vec<u8> {
    let mut body = vec![APPLIED_MARKER_TAG];
    body.extend_from_slice(&index.to_be_bytes());
    body
}

/// The index of an applied-index marker, or `None` for any other record.
pub fn decode_applied_marker(body: &[u8]) -> Option<u64> {
    match body {
        [APPLIED_MARKER_TAG, rest @ ..] => rest.try_into().ok().map(u64::from_be_bytes),
        _ => None,
    }
}

/// The body of a fence record: "the events since the last marker are the
/// leftovers of an apply a crash interrupted: not applied". A commit is
/// atomic per record only (a power cut may keep a prefix of its records),
/// and a huge entry is committed in parts, so a group member may come back
/// with some of an entry's events durable and no marker after them; raft
/// hands it the entry again, and without the fence a later replay would
/// apply those events twice. Written (and fsynced) at start, before
/// anything else, when the replay found such leftovers.
pub fn fence_marker() -> Vec<u8> {
    vec![APPLIED_MARKER_TAG, FENCE_KIND]
}

/// Second byte of a fence (a marker is 9 bytes, a fence 2).
const FENCE_KIND: u8 = b'F';

/// A group member's bookkeeping record (first byte 0xc1): never an event.
pub fn is_marker(body: &[u8]) -> bool {
    body.first() == Some(&APPLIED_MARKER_TAG)
}

fn is_fence(body: &[u8]) -> bool {
    body == [APPLIED_MARKER_TAG, FENCE_KIND]
}

/// What a group member's replay found ([`replay_member`]).
pub struct ReplayedMember {
    pub core: Core,
    pub anchors: Anchors,
    /// The last applied-index marker's index (0 if none).
    pub applied: u64,
    /// Events after the last marker, not applied (see [`fence_marker`]).
    pub leftovers: usize,
}

/// Replays an open journal into a fresh core and the compaction anchors;
/// `observe(at, body_len, event)` sees each record as it is applied (the
/// simulation rebuilds its model from them). The caller then calls
/// `finish_recovery`.
pub fn replay(
    journal: &Journal,
    core_config: CoreConfig,
    now_ms: Millis,
    observe: impl FnMut(RecordAt, usize, &Event),
) -> Result<(Core, Anchors), BrokerError> {
    let mut observe = observe;
    replay_journal(journal, core_config, now_ms, false, &mut observe).map(|r| (r.core, r.anchors))
}

/// [`replay`], and the last applied-index marker's index (0 if none).
pub fn replay_applied(
    journal: &Journal,
    core_config: CoreConfig,
    now_ms: Millis,
    observe: impl FnMut(RecordAt, usize, &Event),
) -> Result<(Core, Anchors, u64), BrokerError> {
    replay_member(journal, core_config, now_ms, observe).map(|r| (r.core, r.anchors, r.applied))
}

/// A group member's replay: an entry's events are applied at the marker
/// that follows them, never before; a fence drops the events since the
/// last marker, and so does the journal's end (see [`fence_marker`]).
/// Compaction's copies are followed by a marker too, so they apply.
pub fn replay_member(
    journal: &Journal,
    core_config: CoreConfig,
    now_ms: Millis,
    mut observe: impl FnMut(RecordAt, usize, &Event),
) -> Result<ReplayedMember, BrokerError> {
    replay_journal(journal, core_config, now_ms, true, &mut observe)
}

/// Replays `journal`; `held`: a group member's (events wait for their
/// marker), else a single broker's (every event applies as read).
fn replay_journal(
    journal: &Journal,
    core_config: CoreConfig,
    now_ms: Millis,
    held: bool,
    observe: &mut dyn FnMut(RecordAt, usize, &Event),
) -> Result<ReplayedMember, BrokerError> {
    let mut applied = 0;
    let mut waiting: Vec<(RecordAt, usize, Event)> = Vec::new();
    let mut core = Core::new(core_config);
    core.start_replay(now_ms);
    let mut anchors = Anchors::default();
    // At most one order per record: sized once rather than rehashed as
    // they come (a replay of a million orders otherwise rehashes ~20 times).
    let records = journal.segments().iter().map(|s| s.records).sum::<u64>();
    let records = usize::try_from(records).unwrap_or(usize::MAX).min(REPLAY_RESERVE_MAX);
    core.reserve(records);
    let mut apply = |core: &mut Core, anchors: &mut Anchors, at: RecordAt, len: usize, event: &Event| {
        core.apply(event);
        anchors.observe(core, event, at);
        observe(at, len, event);
    };
    journal
        .replay_located(|at, body| {
            if let Some(index) = decode_applied_marker(body) {
                for (at, len, event) in waiting.drain(..) {
                    apply(&mut core, &mut anchors, at, len, &event);
                }
                applied = index;
                return Ok(());
            }
            if is_fence(body) {
                waiting.clear();
                return Ok(());
            }
            let event = decode_event(at.seq, body)?;
            if held {
                waiting.push((at, body.len(), event));
            } else {
                apply(&mut core, &mut anchors, at, body.len(), &event);
            }
            Ok::<(), BrokerError>(())
        })
        .map_err(|e| match e {
            orderly_journal::ReplayError::Journal(source) => BrokerError::Journal { during: "replay", source },
            orderly_journal::ReplayError::Callback { error, .. } => error,
        })?;
    Ok(ReplayedMember { core, anchors, applied, leftovers: waiting.len() })
}
