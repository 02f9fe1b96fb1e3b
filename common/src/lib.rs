//! Shared by every orderly role: the wire protocol, identifiers, endpoints,
//! limits and the CLI/config helpers.
//!
//! Invariant: this crate does no IO (no sockets, no files, no clock).

pub mod cli;
pub mod endpoint;
pub mod ids;
pub mod limits;
pub mod protocol;

pub use endpoint::Endpoint;
pub use ids::OrderKey;
