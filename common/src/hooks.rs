//! What an io loop tells the program around it (the broker's and the
//! worker's alike), for a service manager and for monitoring: closures
//! the binaries point at systemd's READY=1, STATUS= and WATCHDOG=1. The
//! libraries know nothing of systemd; this module only holds the closures
//! (no IO), so both loops share one definition.

/// [`Hooks::on_ready`]: called once, with a short line saying what is ready.
pub type ReadyHook = Box<dyn FnOnce(&str)>;
/// [`Hooks::on_turn`]: a sign of life from the loop.
pub type TurnHook = Box<dyn FnMut()>;
/// [`Hooks::on_status`]: a state change, as a short line.
pub type StatusHook = Box<dyn FnMut(&str)>;

/// An io loop's hooks; all optional ([`Hooks::default`] is none). The
/// callbacks run on the loop's thread: keep them short. What "ready" and
/// which state changes mean is said by each loop's `run_with`.
#[derive(Default)]
pub struct Hooks {
    /// Called once, when the loop is ready to serve, with a short line
    /// saying so. systemd's READY=1.
    pub on_ready: Option<ReadyHook>,
    /// Called between turns, at most once per the loop's
    /// `TURN_HOOK_INTERVAL_MS`, so only while the loop turns: a hung loop
    /// stops calling it. systemd's WATCHDOG=1.
    pub on_turn: Option<TurnHook>,
    /// Later state changes worth a status line. systemd's STATUS=.
    pub on_status: Option<StatusHook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("on_ready", &self.on_ready.is_some())
            .field("on_turn", &self.on_turn.is_some())
            .field("on_status", &self.on_status.is_some())
            .finish()
    }
}
