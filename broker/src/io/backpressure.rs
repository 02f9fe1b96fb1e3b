//! Saying no to producers (sans-IO, driven by the loop's clock):
//! [`DiskMode`], the full-disk mode, and [`Announcer`], which tells
//! producers on `b/` why intake is closed.
//!
//! The full-disk mode, from the journal's space state and a held commit:
//!
//! ```text
//!   open ──(space Low, or a commit got NoSpace)──▶ full ──(space Ok, nothing held)──▶ open
//! ```
//!
//! While full the loop reads no intake, and every
//! [`DISK_RETRY_INTERVAL_MS`] it asks the journal for its reserve again and
//! retries a held commit. In `Low` (the reserve is gone; the active segment
//! still has room) the loop goes on recording acks, dispatches and
//! timeouts; once a commit is held (no room at all) it stops taking any
//! input until that commit succeeds. One warning when the mode starts, one
//! info line when it ends.

use orderly_common::protocol::{backpressure, Backpressure, FanoutMsg};
use orderly_common::time::Millis;
use orderly_journal::SpaceState;
use tracing::{info, warn};

/// Why intake is closed: a `backpressure` kind and a detail for people.
pub use crate::core::IntakeClosed as Closed;

/// While the disk is full, how often the journal tries again to reserve
/// its next segment and a held commit is retried.
pub const DISK_RETRY_INTERVAL_MS: u64 = 1000;

/// The full-disk mode. See the module docs.
#[derive(Debug, Default)]
pub struct DiskMode {
    /// Why the disk counts as full; `None`: it does not.
    full: Option<String>,
    retry_due_ms: Millis,
}

impl DiskMode {
    /// Why the disk counts as full, if it does.
    pub fn full(&self) -> Option<&str> {
        self.full.as_deref()
    }

    /// Intake closed by the disk, if it is.
    pub fn closed(&self) -> Option<Closed> {
        self.full.as_ref().map(|detail| Closed { reason: backpressure::DISK_FULL, detail: detail.clone() })
    }

    /// Whether the space retry is due at `now_ms` (then the next one is
    /// scheduled). Never while the disk is fine.
    pub fn retry_due(&mut self, now_ms: Millis) -> bool {
        if self.full.is_none() || now_ms < self.retry_due_ms {
            return false;
        }
        self.retry_due_ms = now_ms + DISK_RETRY_INTERVAL_MS;
        true
    }

    /// The mode after a turn, from the journal's space and the error of a
    /// commit held for space (if any). Logs when it changes.
    pub fn update(&mut self, space: &SpaceState, held: Option<&str>, now_ms: Millis) {
        let full = match (held, space) {
            (Some(error), _) => Some(format!("a commit waits for space: {error}")),
            (None, SpaceState::Low { reserve_bytes_left, reason }) => {
                Some(format!("{reason} ({reserve_bytes_left} bytes left for acks and dispatches)"))
            }
            (None, SpaceState::Ok) => None,
        };
        match (&self.full, &full) {
            (None, Some(why)) => {
                warn!(
                    why = %why,
                    "disk full: not reading intake (producers are told: backpressure disk_full); acks and dispatches \
                     are still recorded; retrying every second"
                );
                self.retry_due_ms = now_ms + DISK_RETRY_INTERVAL_MS;
            }
            (Some(_), None) => info!("disk space is back: reading intake again"),
            _ => {}
        }
        self.full = full;
    }
}

/// Announces `backpressure` on `b/` every `interval_ms` while intake is
/// closed (the first at once).
#[derive(Debug)]
pub struct Announcer {
    interval_ms: u64,
    due_ms: Millis,
}

impl Announcer {
    pub fn new(interval_ms: u64) -> Self {
        Announcer { interval_ms, due_ms: 0 }
    }

    /// The body to publish now, if intake is `closed` and an announcement
    /// is due. A bound that closes and opens within an interval is
    /// announced once, not once per closing.
    /// `closed` is asked only when one is due (it formats the detail).
    pub fn poll(&mut self, now_ms: Millis, closed: impl FnOnce() -> Option<Closed>) -> Option<Vec<u8>> {
        if now_ms < self.due_ms {
            return None;
        }
        let closed = closed()?;
        self.due_ms = now_ms + self.interval_ms;
        let mut detail = closed.detail;
        truncate_at_char(&mut detail, orderly_common::limits::REASON_BYTES_MAX);
        let message = Backpressure { reason: closed.reason.to_string(), detail, interval_ms: self.interval_ms };
        Some(FanoutMsg::Backpressure(message).encode())
    }
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
fn truncate_at_char(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn low() -> SpaceState {
        SpaceState::Low { reserve_bytes_left: 4096, reason: "cannot preallocate the next segment: ENOSPC".into() }
    }

    #[test]
    fn the_disk_mode_follows_the_space_and_a_held_commit() {
        let mut mode = DiskMode::default();
        mode.update(&SpaceState::Ok, None, 0);
        assert_eq!(mode.full(), None);
        assert!(!mode.retry_due(5_000), "no retries while the disk is fine");
        mode.update(&low(), None, 100);
        assert!(mode.full().unwrap().contains("4096 bytes left"), "{:?}", mode.full());
        assert_eq!(mode.closed().unwrap().reason, backpressure::DISK_FULL);
        assert!(!mode.retry_due(500));
        assert!(mode.retry_due(1_100));
        assert!(!mode.retry_due(1_200), "once per interval");
        // A held commit keeps it full even if the reserve came back.
        mode.update(&SpaceState::Ok, Some("no space on the journal's disk"), 1_300);
        assert!(mode.full().unwrap().starts_with("a commit waits for space"));
        mode.update(&SpaceState::Ok, None, 2_200);
        assert_eq!(mode.full(), None);
        assert!(!mode.retry_due(9_000));
    }

    #[test]
    fn backpressure_is_announced_once_per_interval_while_closed() {
        let mut announcer = Announcer::new(1000);
        let closed = || Some(Closed { reason: backpressure::DISK_FULL, detail: "é".repeat(2000) });
        assert_eq!(announcer.poll(0, || None), None);
        let body = announcer.poll(10, closed).expect("announced at once");
        let FanoutMsg::Backpressure(message) = FanoutMsg::decode(&body).unwrap() else { panic!("not backpressure") };
        assert_eq!(message.reason, "disk_full");
        assert_eq!(message.interval_ms, 1000);
        assert!(message.detail.len() <= orderly_common::limits::REASON_BYTES_MAX);
        assert_eq!(announcer.poll(500, closed), None);
        assert_eq!(announcer.poll(1_500, || None), None);
        assert!(announcer.poll(1_600, closed).is_some());
    }
}
