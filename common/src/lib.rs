//! Shared by every orderly role: the wire protocol, identifiers, endpoints,
//! limits and the cores' time type.
//!
//! Invariant: this crate does no IO (no sockets, no files, no clock).

pub mod endpoint;
pub mod hooks;
pub mod ids;
pub mod limits;
pub mod members;
pub mod order_json;
pub mod protocol;
pub mod rng;
pub mod text;
pub mod time;

pub use endpoint::Endpoint;
pub use ids::OrderKey;
