//! The one time type of every sans-IO core.
//!
//! A core never reads a clock: each `handle_*` takes `now`, and
//! `poll_timeout` answers in the same unit. [`Millis`] is milliseconds on a
//! monotonic clock whose zero the caller picks (the io loops count from
//! their start; the simulation from its virtual zero), so only differences
//! between two values mean anything. Wall-clock time never enters a core.

/// Milliseconds on the caller's monotonic clock (see the module docs).
pub type Millis = u64;
