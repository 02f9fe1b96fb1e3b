//! Snapshots between group members, outside raft-rs's single message (see
//! docs/REPLICATION.md, "Compaction and catch-up").
//!
//! **Leader**: a raft `MsgSnapshot` for member X is not sent as is. At the
//! end of the turn the leader takes a view of its event journal: every
//! segment file opened (the fd held, so a later removal does not matter)
//! and its committed length (segments are append-only: the bytes below it
//! never change; later appends go beyond it). The journal then holds
//! exactly the committed batches up to the member's applied index (and the
//! compaction copies of committed state), so the message's metadata is
//! rewritten to that index and its term. The bytes go in chunks of
//! [`SNAPSHOT_CHUNK_BYTES`], [`SNAPSHOT_CHUNKS_PER_TURN`] a turn, as
//! orderly peer frames; the last carries the raft message. raft-rs hears
//! `report_snapshot` Finish once all is queued, Failure when the stream
//! stalls for [`SNAPSHOT_STALL_MS`] (it sends another snapshot later).
//!
//! **Follower**: chunks are written to `DATA_DIR/snapshot.tmp/`; complete,
//! the files are fsynced, the directory renamed `snapshot.ready` (and the
//! data directory fsynced), and the raft message stepped into the node.
//! When raft installs it (the raft journal records it durably first), the
//! io swaps the journals: `journal` → `journal.old`, `snapshot.ready` →
//! `journal`, fsync of the data directory, `journal.old` removed; then the
//! core is rebuilt from the new journal. [`recover_staged`] finishes or
//! undoes this after a crash at any step, before the journal is opened.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use orderly_peer::envelope::{wrap, Kind};
use orderly_peer::{MemberId, Peers, Sent};
use orderly_replication::Message;
use protobuf::Message as _;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tracing::{info, warn};

use super::config::journal_dir;
use super::error::BrokerError;
use crate::core::Millis;

/// Bytes of journal in one chunk: well under a peer payload
/// (`PEER_PAYLOAD_BYTES_MAX`), large enough that a GiB is a thousand chunks.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// Chunks sent per turn and stream: the loop never blocks on a stream,
/// and the peer queue (`PEER_QUEUE_MESSAGES_MAX`) keeps room for raft.
pub const SNAPSHOT_CHUNKS_PER_TURN: usize = 4;
/// A stream that makes no progress this long (the follower's queue is
/// full, or it is gone) is abandoned and raft told it failed; on the
/// follower, a staging that long without a chunk is dropped.
pub const SNAPSHOT_STALL_MS: Millis = 10_000;
const _: () = assert!(SNAPSHOT_CHUNK_BYTES + 4096 <= orderly_peer::limits::PEER_PAYLOAD_BYTES_MAX);

const STAGING: &str = "snapshot.tmp";
const READY: &str = "snapshot.ready";
const OLD_JOURNAL: &str = "journal.old";

/// One chunk on the wire (MessagePack, in an orderly peer frame).
#[derive(Debug, Serialize, Deserialize)]
struct Chunk {
    /// The leader's id for this stream; a new one restarts the staging.
    stream: u64,
    /// Chunk number in the stream, from 0: a gap abandons the stream.
    seq: u64,
    /// The segment file's name (`journal`'s naming).
    file: String,
    offset: u64,
    data: ByteBuf,
    /// On the last chunk: the raft `MsgSnapshot` to step once staged.
    done: Option<ByteBuf>,
}

/// A stream to one follower.
struct Outgoing {
    to: u64,
    stream: u64,
    seq: u64,
    /// Files to send: name, open file, committed length, bytes sent.
    files: VecDeque<(String, File, u64, u64)>,
    message: Message,
    progress_ms: Millis,
}

/// A stream being staged.
struct Incoming {
    from: u64,
    stream: u64,
    next_seq: u64,
    progress_ms: Millis,
}

/// A member's snapshot streams, both ways.
pub(super) struct Snapshots {
    data_dir: PathBuf,
    outgoing: Vec<Outgoing>,
    incoming: Option<Incoming>,
    next_stream: u64,
    /// Snapshots installed (for the log and `/status`).
    pub(super) installed: u64,
}

/// What the leader's turn hands over to start a stream: its event
/// journal's segments (path and committed length) and its snapshot point.
pub(super) struct View<'a> {
    pub segments: &'a [orderly_journal::SegmentInfo],
    pub index: u64,
    pub term: u64,
}

impl Snapshots {
    pub(super) fn new(data_dir: &Path, id: u64) -> Snapshots {
        Snapshots {
            data_dir: data_dir.to_path_buf(),
            outgoing: Vec::new(),
            incoming: None,
            // Distinct from earlier runs of this member and from others.
            next_stream: (id << 48) | (super::wall_clock_ms() & 0xffff_ffff_ffff),
            installed: 0,
        }
    }

    /// A `MsgSnapshot` the leader's node wants sent: a stream starts from
    /// `view` (one stream per follower at a time: raft sends no second
    /// before it hears how the first went).
    pub(super) fn start(&mut self, mut message: Message, view: View<'_>, now: Millis) -> Result<(), BrokerError> {
        let to = message.to;
        if self.outgoing.iter().any(|o| o.to == to) {
            return Ok(());
        }
        let mut files = VecDeque::new();
        for segment in view.segments {
            let name = segment.path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            let file =
                File::open(&segment.path).map_err(|e| io_error("opening a segment to send", &segment.path, e))?;
            files.push_back((name, file, segment.bytes, 0));
        }
        let meta = message.mut_snapshot().mut_metadata();
        meta.index = view.index;
        meta.term = view.term;
        let bytes: u64 = view.segments.iter().map(|s| s.bytes).sum();
        info!(to, index = view.index, term = view.term, bytes, segments = files.len(), "sending a snapshot");
        self.next_stream += 1;
        self.outgoing.push(Outgoing { to, stream: self.next_stream, seq: 0, files, message, progress_ms: now });
        Ok(())
    }

    /// Sends the next chunks of every stream; `report(to, delivered)` for
    /// each stream that ended (raft's `report_snapshot`).
    pub(super) fn pump(&mut self, peers: &mut Peers, now: Millis, mut report: impl FnMut(u64, bool)) {
        let mut ended = Vec::new();
        for (i, out) in self.outgoing.iter_mut().enumerate() {
            match send_some(out, peers, now) {
                Ok(Some(delivered)) => ended.push((i, delivered)),
                Ok(None) if now.saturating_sub(out.progress_ms) > SNAPSHOT_STALL_MS => {
                    warn!(to = out.to, "snapshot stream stalled; raft will send another");
                    ended.push((i, false));
                }
                Ok(None) => {}
                Err(error) => {
                    warn!(to = out.to, %error, "snapshot stream failed; raft will send another");
                    ended.push((i, false));
                }
            }
        }
        for (i, delivered) in ended.into_iter().rev() {
            let out = self.outgoing.remove(i);
            if delivered {
                info!(to = out.to, chunks = out.seq, "snapshot sent");
            }
            report(out.to, delivered);
        }
    }

    /// A chunk from member `from`; returns the raft message to step once
    /// the stream is complete and staged.
    pub(super) fn receive(&mut self, from: u64, body: &[u8], now: Millis) -> Result<Option<Message>, BrokerError> {
        let chunk: Chunk = match rmp_serde::from_slice(body) {
            Ok(chunk) => chunk,
            Err(error) => {
                warn!(from, %error, "an undecodable snapshot chunk; dropped");
                return Ok(None);
            }
        };
        let staging = self.data_dir.join(STAGING);
        let current = self.incoming.as_ref().is_some_and(|i| i.from == from && i.stream == chunk.stream);
        if !current {
            if chunk.seq != 0 {
                return Ok(None);
            }
            remove_dir_if_any(&staging)?;
            std::fs::create_dir_all(&staging).map_err(|e| io_error("creating", &staging, e))?;
            info!(from, stream = chunk.stream, "receiving a snapshot");
            self.incoming = Some(Incoming { from, stream: chunk.stream, next_seq: 0, progress_ms: now });
        }
        let incoming = self.incoming.as_mut().expect("set above");
        if chunk.seq != incoming.next_seq {
            warn!(
                from,
                expected = incoming.next_seq,
                got = chunk.seq,
                "a snapshot chunk was lost; abandoning the stream"
            );
            self.incoming = None;
            remove_dir_if_any(&staging)?;
            return Ok(None);
        }
        incoming.next_seq += 1;
        incoming.progress_ms = now;
        if !chunk.file.is_empty() {
            if chunk.file.contains('/') || chunk.file.starts_with('.') {
                return Err(BrokerError::Group(format!("a snapshot chunk names the file {:?}", chunk.file)));
            }
            let path = staging.join(&chunk.file);
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| io_error("staging", &path, e))?;
            file.seek(SeekFrom::Start(chunk.offset)).map_err(|e| io_error("staging", &path, e))?;
            file.write_all(&chunk.data).map_err(|e| io_error("staging", &path, e))?;
        }
        let Some(done) = chunk.done else { return Ok(None) };
        self.incoming = None;
        let message = Message::parse_from_bytes(&done)
            .map_err(|e| BrokerError::Group(format!("a snapshot's raft message does not decode: {e}")))?;
        // Everything durable, then the name that says "complete".
        for entry in std::fs::read_dir(&staging).map_err(|e| io_error("listing", &staging, e))? {
            let path = entry.map_err(|e| io_error("listing", &staging, e))?.path();
            File::open(&path).and_then(|f| f.sync_all()).map_err(|e| io_error("fsync", &path, e))?;
        }
        fsync_dir(&staging)?;
        let ready = self.data_dir.join(READY);
        remove_dir_if_any(&ready)?;
        std::fs::rename(&staging, &ready).map_err(|e| io_error("renaming", &staging, e))?;
        fsync_dir(&self.data_dir)?;
        let meta = message.get_snapshot().get_metadata();
        info!(from, index = meta.index, term = meta.term, "snapshot staged; stepping it into raft");
        Ok(Some(message))
    }

    /// Drops a staging that has not moved for [`SNAPSHOT_STALL_MS`].
    pub(super) fn expire(&mut self, now: Millis) -> Result<(), BrokerError> {
        if self.incoming.as_ref().is_some_and(|i| now.saturating_sub(i.progress_ms) > SNAPSHOT_STALL_MS) {
            warn!("a snapshot stream stalled; dropping what was staged");
            self.incoming = None;
            remove_dir_if_any(&self.data_dir.join(STAGING))?;
        }
        Ok(())
    }

    /// Raft installed the staged snapshot: the staged journal replaces the
    /// event journal on disk (see the module docs); the caller then opens
    /// it, at the path returned.
    pub(super) fn swap_in(&mut self) -> Result<PathBuf, BrokerError> {
        let ready = self.data_dir.join(READY);
        if !ready.is_dir() {
            return Err(BrokerError::Group("raft installed a snapshot that was not staged".into()));
        }
        let journal = journal_dir(&self.data_dir);
        let old = self.data_dir.join(OLD_JOURNAL);
        remove_dir_if_any(&old)?;
        std::fs::rename(&journal, &old).map_err(|e| io_error("renaming", &journal, e))?;
        std::fs::rename(&ready, &journal).map_err(|e| io_error("renaming", &ready, e))?;
        fsync_dir(&self.data_dir)?;
        remove_dir_if_any(&old)?;
        self.installed += 1;
        Ok(journal)
    }
}

/// Sends up to [`SNAPSHOT_CHUNKS_PER_TURN`] chunks; `Some(true)` once the
/// last (with the raft message) is queued.
fn send_some(out: &mut Outgoing, peers: &mut Peers, now: Millis) -> Result<Option<bool>, BrokerError> {
    let to = MemberId::new(out.to).ok_or_else(|| BrokerError::Group("member 0".into()))?;
    for _ in 0..SNAPSHOT_CHUNKS_PER_TURN {
        while out.files.front().is_some_and(|(_, _, len, sent)| sent >= len) {
            out.files.pop_front();
        }
        let chunk = match out.files.front_mut() {
            Some((name, file, len, sent)) => {
                let size = (*len - *sent).min(SNAPSHOT_CHUNK_BYTES as u64) as usize;
                let mut data = vec![0; size];
                file.seek(SeekFrom::Start(*sent)).map_err(|e| io_error("reading", Path::new(name), e))?;
                file.read_exact(&mut data).map_err(|e| io_error("reading", Path::new(name), e))?;
                Chunk {
                    stream: out.stream,
                    seq: out.seq,
                    file: name.clone(),
                    offset: *sent,
                    data: data.into(),
                    done: None,
                }
            }
            None => {
                let message = out
                    .message
                    .write_to_bytes()
                    .map_err(|e| BrokerError::Group(format!("encoding a raft message: {e}")))?;
                Chunk {
                    stream: out.stream,
                    seq: out.seq,
                    file: String::new(),
                    offset: 0,
                    data: ByteBuf::new(),
                    done: Some(message.into()),
                }
            }
        };
        let body = rmp_serde::to_vec(&chunk).expect("encoding into memory cannot fail");
        match peers.send(to, &wrap(Kind::SnapshotChunk, &body)) {
            Ok(Sent::Queued) => {}
            // The queue is full or the member unreachable: later.
            Ok(_) => return Ok(None),
            Err(error) => return Err(BrokerError::Group(format!("sending a snapshot chunk: {error}"))),
        }
        out.seq += 1;
        out.progress_ms = now;
        if let Some((_, _, _, sent)) = out.files.front_mut() {
            *sent += chunk.data.len() as u64;
        } else {
            return Ok(Some(true));
        }
    }
    Ok(None)
}

/// Before the event journal is opened: finishes or undoes what a crash
/// left of a snapshot (see the module docs). `raft_snapshot_index`: the
/// index raft's journal has recorded a snapshot at (or compacted to).
pub fn recover_staged(
    data_dir: &Path,
    options: &orderly_journal::Options,
    raft_snapshot_index: impl FnOnce() -> Result<u64, BrokerError>,
) -> Result<(), BrokerError> {
    remove_dir_if_any(&data_dir.join(STAGING))?;
    let ready = data_dir.join(READY);
    let journal = journal_dir(data_dir);
    let old = data_dir.join(OLD_JOURNAL);
    if ready.is_dir() {
        let staged = staged_index(&ready, options)?;
        let raft = raft_snapshot_index()?;
        if staged > 0 && staged == raft {
            info!(index = staged, "completing the swap of a snapshot raft installed before a crash");
            if journal.exists() {
                remove_dir_if_any(&old)?;
                std::fs::rename(&journal, &old).map_err(|e| io_error("renaming", &journal, e))?;
            }
            std::fs::rename(&ready, &journal).map_err(|e| io_error("renaming", &ready, e))?;
            fsync_dir(data_dir)?;
        } else {
            info!(staged, raft, "dropping a staged snapshot raft did not install");
            remove_dir_if_any(&ready)?;
        }
    }
    remove_dir_if_any(&old)?;
    Ok(())
}

/// The last applied marker of a staged journal (0: none).
fn staged_index(dir: &Path, options: &orderly_journal::Options) -> Result<u64, BrokerError> {
    let (journal, _) = orderly_journal::Journal::open(dir, options.clone())
        .map_err(|source| BrokerError::Journal { during: "opening a staged snapshot", source })?;
    let mut index = 0;
    journal
        .replay(|_, _, body| {
            if let Some(marker) = super::recover::decode_applied_marker(body) {
                index = marker;
            }
            Ok::<(), BrokerError>(())
        })
        .map_err(|e| match e {
            orderly_journal::ReplayError::Journal(source) => BrokerError::Journal { during: "replay", source },
            orderly_journal::ReplayError::Callback { error, .. } => error,
        })?;
    Ok(index)
}

fn remove_dir_if_any(dir: &Path) -> Result<(), BrokerError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error("removing", dir, e)),
        _ => Ok(()),
    }
}

fn fsync_dir(dir: &Path) -> Result<(), BrokerError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("fsync", dir, e))
}

fn io_error(during: &str, path: &Path, error: std::io::Error) -> BrokerError {
    BrokerError::Group(format!("snapshot: {during} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::recover::applied_marker;

    fn options() -> orderly_journal::Options {
        orderly_journal::Options { segment_bytes_target: 64 * 1024, ..orderly_journal::Options::default() }
    }

    /// A journal in `dir` of a few segments whose last marker is `index`.
    fn journal_at(dir: &Path, index: u64, filler: u8) {
        let (mut journal, _) = orderly_journal::Journal::open(dir, options()).unwrap();
        for _ in 0..100 {
            journal.append(&[filler; 1000]).unwrap();
            journal.commit().unwrap();
        }
        journal.append(&applied_marker(index)).unwrap();
        journal.commit().unwrap();
        journal.close().unwrap();
    }

    fn chunk(stream: u64, seq: u64, file: &str, offset: u64, data: &[u8], done: Option<&Message>) -> Vec<u8> {
        let done = done.map(|m| ByteBuf::from(m.write_to_bytes().unwrap()));
        let chunk = Chunk { stream, seq, file: file.into(), offset, data: ByteBuf::from(data.to_vec()), done };
        rmp_serde::to_vec(&chunk).unwrap()
    }

    #[test]
    fn chunks_are_staged_in_order_and_a_gap_abandons_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let mut snapshots = Snapshots::new(dir.path(), 1);
        let mut message = Message { from: 2, ..Message::default() };
        message.mut_snapshot().mut_metadata().index = 9;
        // A gap: chunk 1 without chunk 0 of a new stream is ignored; 0 then 2 abandons.
        assert!(snapshots.receive(2, &chunk(5, 1, "a.seg", 0, b"x", None), 0).unwrap().is_none());
        assert!(!dir.path().join(STAGING).exists());
        assert!(snapshots.receive(2, &chunk(5, 0, "a.seg", 0, b"x", None), 0).unwrap().is_none());
        assert!(dir.path().join(STAGING).join("a.seg").exists());
        assert!(snapshots.receive(2, &chunk(5, 2, "a.seg", 1, b"y", None), 0).unwrap().is_none());
        assert!(!dir.path().join(STAGING).exists(), "the stream is abandoned");
        // A whole stream: two files, the second in two chunks.
        let body = [
            chunk(6, 0, "1.seg", 0, b"first", None),
            chunk(6, 1, "2.seg", 0, b"sec", None),
            chunk(6, 2, "2.seg", 3, b"ond", None),
            chunk(6, 3, "", 0, b"", Some(&message)),
        ];
        let mut stepped = None;
        for (n, body) in body.iter().enumerate() {
            stepped = snapshots.receive(2, body, n as u64).unwrap();
        }
        assert_eq!(stepped.map(|m| m.get_snapshot().get_metadata().index), Some(9));
        let ready = dir.path().join(READY);
        assert_eq!(std::fs::read(ready.join("1.seg")).unwrap(), b"first");
        assert_eq!(std::fs::read(ready.join("2.seg")).unwrap(), b"second");
        assert!(!dir.path().join(STAGING).exists());
        // A file name that leaves the staging directory stops the member.
        snapshots.receive(2, &chunk(7, 0, "", 0, b"", None), 0).unwrap();
        assert!(snapshots.receive(2, &chunk(7, 1, "../evil", 0, b"x", None), 0).is_err());
    }

    #[test]
    fn a_staging_that_stalls_is_dropped_and_the_next_stream_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let mut snapshots = Snapshots::new(dir.path(), 1);
        snapshots.receive(2, &chunk(5, 0, "1.seg", 0, b"old", None), 0).unwrap();
        snapshots.expire(SNAPSHOT_STALL_MS).unwrap();
        assert!(dir.path().join(STAGING).join("1.seg").exists(), "not stalled yet");
        snapshots.expire(SNAPSHOT_STALL_MS + 1).unwrap();
        assert!(!dir.path().join(STAGING).exists(), "stalled: dropped");
        // The rest of the old stream is ignored; a new one (seq 0) stages.
        assert!(snapshots.receive(2, &chunk(5, 1, "1.seg", 3, b"x", None), 0).unwrap().is_none());
        assert!(!dir.path().join(STAGING).exists());
        snapshots.receive(2, &chunk(6, 0, "1.seg", 0, b"new", None), 0).unwrap();
        assert_eq!(std::fs::read(dir.path().join(STAGING).join("1.seg")).unwrap(), b"new");
    }

    /// Every state a crash can leave during staging and the swap, and what
    /// a restart makes of it.
    #[test]
    fn a_restart_finishes_or_drops_a_swap_whatever_step_the_crash_hit() {
        let cases: [(&str, bool, bool, bool, u64, bool); 6] = [
            // (case, journal, ready, old, raft index, expect the staged journal)
            ("staged, raft did not install", true, true, false, 3, false),
            ("raft installed, swap not begun", true, true, false, 7, true),
            ("between the renames", false, true, true, 7, true),
            ("swapped, old not removed", true, false, true, 7, false),
            ("nothing staged", true, false, false, 7, false),
            ("staging only", true, false, false, 7, false),
        ];
        for (case, journal, ready, old, raft, staged) in cases {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path();
            if journal {
                journal_at(&journal_dir(data), 3, b'j');
            }
            if ready {
                journal_at(&data.join(READY), 7, b's');
            }
            if old {
                journal_at(&data.join(OLD_JOURNAL), 3, b'o');
            }
            if case == "staging only" {
                std::fs::create_dir_all(data.join(STAGING)).unwrap();
            }
            recover_staged(data, &options(), || Ok(raft)).unwrap();
            // The journal's last marker tells which one it is.
            let index = staged_index(&journal_dir(data), &options()).unwrap();
            assert_eq!(index, if staged { 7 } else { 3 }, "{case}");
            for gone in [STAGING, READY, OLD_JOURNAL] {
                assert!(!data.join(gone).exists(), "{case}: {gone} left");
            }
        }
    }
}
