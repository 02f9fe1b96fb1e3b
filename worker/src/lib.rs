//! The orderly worker: a sans-IO [`core`] that decides what to run and what
//! to tell the broker, the [`handler`]s that process one order, and the
//! [`io`] loop that owns the sockets and the thread pool.
//!
//! Invariant: only `io` touches sockets and reads the clock; `handler`
//! touches files and processes but knows nothing of ZeroMQ.

pub mod core;
pub mod handler;
pub mod io;
pub mod serve;
