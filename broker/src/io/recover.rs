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
    recover_applied(data_dir, options, core_config, now_ms).map(|(journal, core, anchors, _)| (journal, core, anchors))
}

/// [`recover`], and the Raft index the journal holds up to (a group
/// member's last applied-index marker; 0 without one).
pub fn recover_applied(
    data_dir: &Path,
    options: orderly_journal::Options,
    core_config: CoreConfig,
    now_ms: Millis,
) -> Result<(Journal, Core, Anchors, u64), BrokerError> {
    let (journal, recovery) =
        Journal::open(&journal_dir(data_dir), options).map_err(|e| BrokerError::from_open(data_dir, e))?;
    let (core, anchors, applied) = replay_applied(&journal, core_config, now_ms, |_, _, _| {})?;
    if let Some(torn) = &recovery.truncated {
        warn!(file = %torn.file.display(), offset = torn.offset, dropped_bytes = torn.dropped_bytes,
              reason = %torn.reason, "journal: cut off a torn tail (a write the crash interrupted; it was never confirmed)");
    }
    Ok((journal, core, anchors, applied))
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

/// The index of a marker record, or `None` for an event record.
pub fn decode_applied_marker(body: &[u8]) -> Option<u64> {
    match body {
        [APPLIED_MARKER_TAG, rest @ ..] => rest.try_into().ok().map(u64::from_be_bytes),
        _ => None,
    }
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
    replay_applied(journal, core_config, now_ms, observe).map(|(core, anchors, _)| (core, anchors))
}

/// [`replay`], and the last applied-index marker's index (0 if none).
pub fn replay_applied(
    journal: &Journal,
    core_config: CoreConfig,
    now_ms: Millis,
    mut observe: impl FnMut(RecordAt, usize, &Event),
) -> Result<(Core, Anchors, u64), BrokerError> {
    let mut applied = 0;
    let mut core = Core::new(core_config);
    core.start_replay(now_ms);
    let mut anchors = Anchors::default();
    // At most one order per record: sized once rather than rehashed as
    // they come (a replay of a million orders otherwise rehashes ~20 times).
    let records = journal.segments().iter().map(|s| s.records).sum::<u64>();
    let records = usize::try_from(records).unwrap_or(usize::MAX).min(REPLAY_RESERVE_MAX);
    core.reserve(records);
    anchors.reserve(records);
    journal
        .replay_located(|at, body| {
            if let Some(index) = decode_applied_marker(body) {
                applied = index;
                return Ok(());
            }
            let event = decode_event(at.seq, body)?;
            core.apply(&event);
            if let Some(key) = event.payload_key() {
                core.payload_stored(key, at);
            }
            anchors.observe(&event, at.segment);
            observe(at, body.len(), &event);
            Ok::<(), BrokerError>(())
        })
        .map_err(|e| match e {
            orderly_journal::ReplayError::Journal(source) => BrokerError::Journal { during: "replay", source },
            orderly_journal::ReplayError::Callback { error, .. } => error,
        })?;
    Ok((core, anchors, applied))
}
