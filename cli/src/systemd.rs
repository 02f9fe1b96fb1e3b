//! systemd's service notifications (`Type=notify`): READY=1 when the
//! service is ready, STATUS= lines at state changes, and WATCHDOG=1 at half
//! of `WATCHDOG_USEC`. All of it is a no-op without `NOTIFY_SOCKET` (not
//! under systemd), so the binaries call it unconditionally.
//!
//! Readiness is read from the library's own log events (the libraries do
//! not know about systemd): [`Notifier`] is a tracing layer that sends
//! READY=1 on the first event whose message is one of its `ready`
//! messages, e.g. the broker's "broker listening", logged once the journal
//! is recovered, the admin endpoint is up and the sockets are bound.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::Context;
use tracing_subscriber::{Layer, Registry};

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

/// Sends WATCHDOG=1 every [`watchdog_interval`] from a thread, while
/// `alive()` says the main loop still turns (it may block up to the
/// interval). No thread without a watchdog.
pub fn spawn_watchdog(alive: impl Fn() -> bool + Send + 'static) -> std::io::Result<()> {
    let Some(interval) = watchdog_interval() else { return Ok(()) };
    std::thread::Builder::new().name("watchdog".into()).spawn(move || loop {
        let started = std::time::Instant::now();
        if alive() {
            watchdog();
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    })?;
    Ok(())
}

/// A tracing layer that turns the libraries' log events into READY=1 and
/// STATUS= lines (see the module's documentation).
pub struct Notifier {
    /// Messages that mean "ready" (the first one seen sends READY=1).
    ready: &'static [&'static str],
    /// Messages worth a STATUS line when they occur later.
    status: &'static [&'static str],
    sent: AtomicBool,
}

impl Notifier {
    /// A notifier for events of `targets` (module prefixes, at INFO and
    /// above, whatever `--log-level` says) into a boxed layer.
    pub fn layer(
        targets: &[&'static str],
        ready: &'static [&'static str],
        status: &'static [&'static str],
    ) -> Box<dyn Layer<Registry> + Send + Sync> {
        let filter = Targets::new().with_targets(targets.iter().map(|t| (*t, tracing::Level::INFO)));
        Notifier { ready, status, sent: AtomicBool::new(false) }.with_filter(filter).boxed()
    }
}

impl<S: tracing::Subscriber> Layer<S> for Notifier {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let message = message.0;
        if self.ready.contains(&message.as_str()) && !self.sent.swap(true, Ordering::Relaxed) {
            ready(&message);
        } else if self.status.contains(&message.as_str()) || self.ready.contains(&message.as_str()) {
            status(&message);
        }
    }
}

struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_owned();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}
