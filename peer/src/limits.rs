//! Named limits and timings of the peer transport, with the relations
//! between them checked at compile time.

use orderly_common::limits::INTAKE_FRAME_BYTES_MAX;

use crate::core::frame::FRAME_HEADER_BYTES;

/// Members of a broker group, at most: groups are 3 or 5, and 7 leaves
/// room to add a replacement before removing the member it replaces.
pub const GROUP_MEMBERS_MAX: usize = 7;

/// Bytes of one message's payload, at most: a raft message carrying a
/// batch of journal events (each from one intake frame). Raft's
/// `max_size_per_msg` must stay below it; snapshots go in chunks below it.
pub const PEER_PAYLOAD_BYTES_MAX: usize = 4 * 1024 * 1024;
const _: () = assert!(PEER_PAYLOAD_BYTES_MAX >= 2 * INTAKE_FRAME_BYTES_MAX);

/// Bytes of one frame (header and payload), at most.
pub const PEER_FRAME_BYTES_MAX: usize = FRAME_HEADER_BYTES + PEER_PAYLOAD_BYTES_MAX;

/// Room for CURVE's box (flags, nonce, MAC) that libzmq counts against
/// `ZMQ_MAXMSGSIZE`, and for the handshake's INITIATE (about 300 bytes,
/// also checked against it).
pub const CURVE_OVERHEAD_BYTES: usize = 512;

/// `ZMQ_MAXMSGSIZE` of every peer socket: a larger message makes libzmq
/// drop the connection before the frame is buffered whole.
pub const PEER_SOCKET_MESSAGE_BYTES_MAX: usize = PEER_FRAME_BYTES_MAX + CURVE_OVERHEAD_BYTES;

/// Messages queued towards one peer (DEALER SNDHWM) and from one peer
/// (ROUTER RCVHWM, per connection) before sends are dropped: raft keeps at
/// most `max_inflight_msgs` (256 by default) appends in flight per
/// follower, plus a few heartbeats and votes. Worst case per direction and
/// peer: this many messages of `PEER_FRAME_BYTES_MAX`; raft's
/// `max_size_per_msg` keeps the real figure far lower.
pub const PEER_QUEUE_MESSAGES_MAX: i32 = 512;

/// Frames skipped (malformed or refused) in one `try_recv` before it
/// returns, so a flood of garbage cannot hold the caller's loop.
pub const RECV_SKIPPED_MAX: usize = 1024;

/// ZMTP heartbeat: a PING every this often on each peer connection...
pub const PEER_HEARTBEAT_INTERVAL_MS: i32 = 500;
/// ...and the connection is dropped when no traffic came for this long,
/// so a peer whose host died or was cut off (no FIN, no RST) is noticed,
/// queued messages to it are discarded and the DEALER reconnects.
pub const PEER_HEARTBEAT_TIMEOUT_MS: i32 = 3 * PEER_HEARTBEAT_INTERVAL_MS;
/// First reconnect attempt after a connection is lost: short, so a
/// restarted member is reached again at once.
pub const PEER_RECONNECT_INTERVAL_MS: i32 = 100;
/// Reconnect backoff ceiling: a member that is down is retried at least
/// this often, so its return costs at most this much of a failover.
pub const PEER_RECONNECT_INTERVAL_MAX_MS: i32 = 1000;
/// A connection that has not finished its (CURVE) handshake by then is
/// dropped (libzmq's default is 30 s): a half-open or stalled peer must
/// not hold a connection slot for long.
pub const PEER_HANDSHAKE_TIMEOUT_MS: i32 = 2000;
/// Nothing waits on close: a raft message not yet sent when a member stops
/// is worthless (raft retransmits), and a stopping member must not hang.
pub const PEER_LINGER_MS: i32 = 0;
/// A removed member's connection is closed with this linger: what was
/// queued to it (the commit of its removal) is still sent, and a stopping
/// member waits at most this long for it.
pub const REMOVED_PEER_LINGER_MS: i32 = 1000;

/// The failover target: a dead peer is noticed and a restarted one
/// reached again well within it.
const FAILOVER_TARGET_MS: i32 = 3000;
const _: () = assert!(PEER_HEARTBEAT_TIMEOUT_MS > 2 * PEER_HEARTBEAT_INTERVAL_MS);
const _: () = assert!(PEER_HEARTBEAT_TIMEOUT_MS + PEER_RECONNECT_INTERVAL_MAX_MS < FAILOVER_TARGET_MS);
const _: () = assert!(PEER_RECONNECT_INTERVAL_MS <= PEER_RECONNECT_INTERVAL_MAX_MS);
const _: () = assert!(GROUP_MEMBERS_MAX >= 3 && GROUP_MEMBERS_MAX % 2 == 1);
