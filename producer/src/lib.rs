//! The orderly producer library: read or generate orders ([`orders`]),
//! track which the broker confirmed ([`core`], sans-IO), and talk to the
//! broker ([`client`], the only module with sockets and a clock).

pub mod client;
pub mod core;
pub mod orders;
