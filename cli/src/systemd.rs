//! systemd's service notifications (`Type=notify`): READY=1 when the
//! service is ready, STATUS= lines at state changes, and WATCHDOG=1 while
//! the service's loop turns. All of it is a no-op without `NOTIFY_SOCKET`
//! (not under systemd), so the binaries call it unconditionally.
//!
//! The libraries know nothing of systemd: their io loops take hooks
//! ([`orderly_common::hooks::Hooks`], the broker's and the worker's
//! alike) that [`hooks`] points at [`ready`], [`status`] and
//! [`Watchdog::turned`]. So READY=1 follows the loop's
//! own state, not a log line, and the watchdog pings stop when the loop
//! hangs, not only when the process dies.

use std::time::{Duration, Instant};

use orderly_common::hooks::{Hooks, TurnHook};
use sd_notify::NotifyState;

/// A loop's hooks sending systemd's notifications: READY=1 with a STATUS
/// line when the loop is ready, STATUS= at its state changes, and
/// WATCHDOG=1 at half of WatchdogSec while it turns (none without a
/// watchdog).
pub fn hooks() -> Hooks {
    let mut watchdog = Watchdog::from_env();
    Hooks {
        on_ready: Some(Box::new(ready)),
        on_turn: watchdog.enabled().then(|| Box::new(move || watchdog.turned()) as TurnHook),
        on_status: Some(Box::new(status)),
    }
}

/// Sends `READY=1` and a STATUS line; failures are ignored (systemd then
/// times the start out, which says more than a log line could).
pub fn ready(status: &str) {
    let _ = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Sends a STATUS line (shown by `systemctl status`).
pub fn status(status: &str) {
    let _ = sd_notify::notify(false, &[NotifyState::Status(status)]);
}

/// Sends `STOPPING=1`: a SIGTERM is being handled.
pub fn stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}

/// Sends `WATCHDOG=1`.
pub fn watchdog() {
    let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
}

/// How often to send WATCHDOG=1: half of `WATCHDOG_USEC` (systemd's
/// advice, so one late ping is not a restart), or `None` when systemd
/// set no watchdog for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
}

/// WATCHDOG=1 from a loop's turn hook, at most once per
/// [`watchdog_interval`]; nothing without a watchdog. The hook is called
/// only while the loop turns, so a hung loop stops the pings and systemd
/// restarts the service.
#[derive(Debug)]
pub struct Watchdog {
    interval: Option<Duration>,
    last: Option<Instant>,
}

impl Watchdog {
    /// From the environment systemd set (`WATCHDOG_USEC`, `WATCHDOG_PID`).
    pub fn from_env() -> Watchdog {
        Watchdog { interval: watchdog_interval(), last: None }
    }

    /// Whether systemd asked for pings.
    pub fn enabled(&self) -> bool {
        self.interval.is_some()
    }

    /// The loop turned: ping if the interval has passed since the last one.
    pub fn turned(&mut self) {
        let Some(interval) = self.interval else { return };
        if self.last.is_none_or(|last| last.elapsed() >= interval) {
            watchdog();
            self.last = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watchdog_without_an_interval_does_nothing() {
        let mut dog = Watchdog { interval: None, last: None };
        dog.turned();
        assert!(!dog.enabled());
        assert!(dog.last.is_none());
    }

    #[test]
    fn a_watchdog_pings_at_most_once_per_interval() {
        let mut dog = Watchdog { interval: Some(Duration::from_secs(3600)), last: None };
        dog.turned();
        let first = dog.last.expect("pinged");
        dog.turned();
        assert_eq!(dog.last, Some(first), "a second ping inside the interval");
    }
}
