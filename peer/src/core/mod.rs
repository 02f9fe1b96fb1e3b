//! The sans-IO part of the transport: the frame format and the member
//! table that decides who a received frame is from. No sockets, no clock.

pub mod frame;
pub mod members;
