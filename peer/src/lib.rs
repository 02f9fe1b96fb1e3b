//! The broker-to-broker transport of a broker group: each member sends
//! opaque byte messages (raft's protobuf messages) to the others and
//! receives them with the sender authenticated.
//!
//! # Shape: a ROUTER in, a DEALER out to each peer
//!
//! A member binds one ROUTER on its `peer` endpoint and connects one
//! DEALER to every other member; A's messages to B travel A.DEALER →
//! B.ROUTER, B's to A on B's own connection. Chosen over ROUTER-ROUTER
//! because:
//! - Sending never routes by an identity: a DEALER has one peer, so its
//!   high-water mark, reconnect backoff and heartbeats are per peer, and
//!   `ZMQ_IMMEDIATE` makes a send to an unreachable peer fail at once
//!   (dropped and counted) instead of queueing stale messages.
//! - ROUTER-ROUTER needs each side to name itself (`ZMQ_ROUTING_ID`, a
//!   value the peer claims) and the connecting side to learn the other's
//!   identity before it can send; a restarted peer's reconnection with the
//!   same identity is refused or needs `ROUTER_HANDOVER`.
//! - Raft messages are one-way (a response is just another message), so
//!   nothing needs a reply on the same connection. The cost, two TCP
//!   connections per pair, is nothing for 3 or 5 members.
//!
//! # Who sent a message
//!
//! With CURVE the ROUTER's ZAP domain is `peer`, where the ZAP handler
//! admits only `broker` keys and gives each the User-Id of its member id;
//! libzmq attaches that to every message, and it is the `from` that
//! [`Peers::recv`] returns. A frame whose header names another member is
//! dropped and counted. Without CURVE (loopback only, as the broker's
//! other sockets) the header's id is all there is.
//!
//! The logic is sans-IO in [`core`] (the frame format, the member table
//! that decides who a frame is from); [`io`] is the thin socket part.

pub mod core;
pub mod envelope;
pub mod io;
pub mod limits;

pub use crate::core::frame::{FrameError, FRAME_VERSION};
pub use crate::core::members::{MemberId, MemberTable, Refused, TableError};
pub use crate::io::{PeerAddress, PeerConfig, PeerError, PeerStats, Peers, Received, SendError, Sent};
