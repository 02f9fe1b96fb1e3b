//! The orderly broker: a sans-IO [`core`] and the [`io`] loop that owns the
//! sockets.

pub mod admin;
pub mod compaction;
pub mod core;
pub mod io;
pub mod ops;
