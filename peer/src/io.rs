//! The thin socket part: one ROUTER bound on this member's peer endpoint,
//! one DEALER connected to each peer, every option set on purpose.

use std::time::{Duration, Instant};

use orderly_common::Endpoint;
use orderly_security::keys::{KeyPair, KEY_BYTES};
use orderly_security::zap::{ZapHandler, DOMAIN_PEER};

use crate::core::frame::{self, FrameError};
use crate::core::members::{MemberId, MemberTable, Refused, TableError};
use crate::limits::{
    PEER_HANDSHAKE_TIMEOUT_MS, PEER_HEARTBEAT_INTERVAL_MS, PEER_HEARTBEAT_TIMEOUT_MS, PEER_LINGER_MS,
    PEER_QUEUE_MESSAGES_MAX, PEER_RECONNECT_INTERVAL_MAX_MS, PEER_RECONNECT_INTERVAL_MS, PEER_SOCKET_MESSAGE_BYTES_MAX,
    RECV_SKIPPED_MAX, REMOVED_PEER_LINGER_MS,
};

/// Another member: where its peer socket listens and, with CURVE, its
/// public key (the key of its `broker` line in authorized_keys).
#[derive(Debug, Clone)]
pub struct PeerAddress {
    pub id: MemberId,
    pub endpoint: Endpoint,
    pub public_key: Option<[u8; KEY_BYTES]>,
}

/// A received payload, still in its frame (see [`Peers::try_recv_frame`]).
pub struct Received {
    frame: zmq::Message,
    start: usize,
}

impl std::ops::Deref for Received {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.frame[self.start..]
    }
}

/// So that it can own a shared buffer (`bytes::Bytes::from_owner`).
impl AsRef<[u8]> for Received {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// What [`Peers::start`] needs.
#[derive(Debug)]
pub struct PeerConfig {
    pub me: MemberId,
    /// This member's peer endpoint, bound.
    pub bind: Endpoint,
    pub peers: Vec<PeerAddress>,
    /// This member's key pair: the server key of its ROUTER and the client
    /// key of its DEALERs. `None`: no CURVE (loopback only, unless
    /// `allow_insecure`).
    pub curve: Option<KeyPair>,
    pub allow_insecure: bool,
}

/// Why the transport cannot start or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("refusing to use {endpoint} for peer traffic without CURVE: anyone who can reach it could speak as a member. Configure broker keys (see docs/SECURITY.md), use loopback, or allow insecure")]
    Insecure { endpoint: String },
    #[error("member {0} has no public key, and CURVE is on")]
    NoPublicKey(MemberId),
    #[error("CURVE needs the ZAP handler running on this context, or any key would be admitted")]
    NoZapHandler,
    #[error("cannot bind the peer socket to {endpoint}: {source}")]
    Bind { endpoint: String, source: zmq::Error },
    #[error("zmq error while {during}: {source}")]
    Zmq { during: &'static str, source: zmq::Error },
}

/// Why a message was not sent (a full queue is not an error: see [`Sent`]).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("member {0} is not a peer of this member")]
    NotAPeer(MemberId),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("zmq error while sending: {0}")]
    Zmq(zmq::Error),
}

/// What became of a message handed to [`Peers::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// The peer is unreachable or its queue is full: dropped and counted
    /// (raft retransmits).
    Dropped,
}

/// Counts of what the transport did; see each field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub sent: u64,
    /// Sends dropped: peer unreachable or its queue at the high-water mark.
    pub send_dropped: u64,
    pub received: u64,
    /// Frames that are not a version-1 frame within the size limit.
    pub malformed: u64,
    /// With CURVE: frames whose claimed sender is not the key's member.
    pub sender_mismatch: u64,
    /// Frames from a member not in this member's table (or with no member
    /// id bound to their key).
    pub unknown_sender: u64,
}

/// The transport of one member.
pub struct Peers {
    table: MemberTable,
    router: zmq::Socket,
    /// One per peer, in the table's order.
    dealers: Vec<zmq::Socket>,
    /// Kept to connect peers added at run time.
    context: zmq::Context,
    keys: Option<KeyPair>,
    allow_insecure: bool,
    curve: bool,
    stats: PeerStats,
}

impl Peers {
    /// Binds this member's ROUTER and connects a DEALER to each peer. With
    /// CURVE, `zap` must be the ZAP handler started on `context` (libzmq
    /// admits every key when no handler answers).
    pub fn start(context: &zmq::Context, config: PeerConfig, zap: Option<&ZapHandler>) -> Result<Peers, PeerError> {
        let ids: Vec<MemberId> = config.peers.iter().map(|peer| peer.id).collect();
        let table = MemberTable::new(config.me, &ids, config.curve.is_some())?;
        check_security(&config, zap)?;
        let router = context.socket(zmq::ROUTER).map_err(zmq_err("creating the peer ROUTER"))?;
        set_common_options(&router)?;
        // Per connection: what one peer may have queued here unread.
        router.set_rcvhwm(PEER_QUEUE_MESSAGES_MAX).map_err(zmq_err("setting RCVHWM"))?;
        if let Some(keys) = &config.curve {
            router.set_curve_server(true).map_err(zmq_err("setting CURVE_SERVER"))?;
            router.set_curve_secretkey(&keys.secret).map_err(zmq_err("setting CURVE_SECRETKEY"))?;
            // Tells the ZAP handler that only broker keys may connect here.
            router.set_zap_domain(DOMAIN_PEER).map_err(zmq_err("setting ZAP_DOMAIN"))?;
        }
        router
            .bind(config.bind.as_str())
            .map_err(|source| PeerError::Bind { endpoint: config.bind.to_string(), source })?;
        let mut dealers = Vec::with_capacity(config.peers.len());
        for peer in &config.peers {
            dealers.push(connect_dealer(context, peer, config.curve.as_ref())?);
        }
        Ok(Peers {
            table,
            router,
            dealers,
            context: context.clone(),
            curve: config.curve.is_some(),
            keys: config.curve,
            allow_insecure: config.allow_insecure,
            stats: PeerStats::default(),
        })
    }

    /// Connects to a member added to the group while this one runs (with
    /// the same checks as at start: a public key with CURVE, a local
    /// endpoint without it unless insecure is allowed).
    pub fn add_peer(&mut self, peer: PeerAddress) -> Result<(), PeerError> {
        match (&self.keys, &peer.public_key) {
            (Some(_), None) => return Err(PeerError::NoPublicKey(peer.id)),
            (None, _) if !self.allow_insecure && !peer.endpoint.is_local() => {
                return Err(PeerError::Insecure { endpoint: peer.endpoint.to_string() })
            }
            _ => {}
        }
        let dealer = connect_dealer(&self.context, &peer, self.keys.as_ref())?;
        let index = self.table.add(peer.id)?;
        debug_assert_eq!(index, self.dealers.len());
        self.dealers.push(dealer);
        Ok(())
    }

    /// Disconnects from a member removed from the group; its frames are
    /// refused from now on. False when it was not a peer.
    pub fn remove_peer(&mut self, id: MemberId) -> bool {
        let Some(index) = self.table.remove(id) else { return false };
        let dealer = self.dealers.remove(index);
        // The last messages to it (the commit of its own removal, so it
        // learns it is out) still go: libzmq flushes them in the
        // background after the close, for a bounded time.
        if let Err(error) = dealer.set_linger(REMOVED_PEER_LINGER_MS) {
            tracing::debug!(%error, "peer DEALER: setting LINGER before closing it");
        }
        drop(dealer);
        true
    }

    pub fn me(&self) -> MemberId {
        self.table.me()
    }

    pub fn peers(&self) -> &[MemberId] {
        self.table.peers()
    }

    pub fn stats(&self) -> PeerStats {
        self.stats
    }

    /// The socket messages arrive on, for the caller's `zmq::poll`.
    pub fn router(&self) -> &zmq::Socket {
        &self.router
    }

    /// Queues `payload` for member `to` without ever blocking: when `to` is
    /// unreachable or its queue is full the message is dropped and counted.
    pub fn send(&mut self, to: MemberId, payload: &[u8]) -> Result<Sent, SendError> {
        let index = self.table.index_of(to).ok_or(SendError::NotAPeer(to))?;
        let frame = frame::encode(self.table.me(), payload)?;
        self.send_frame(index, frame)
    }

    /// [`Peers::send`] of a payload that `write` puts straight into the
    /// frame, after its header (`payload_bytes`: its size, a hint): a raft
    /// append's entries are copied into the frame once, where encoding
    /// them apart and then framing them copied them twice (a leader's
    /// largest copy, once per follower). `write`'s error is returned as
    /// it is, and nothing is sent.
    pub fn send_with<E>(
        &mut self,
        to: MemberId,
        payload_bytes: usize,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<Result<Sent, SendError>, E> {
        let Some(index) = self.table.index_of(to) else { return Ok(Err(SendError::NotAPeer(to))) };
        let mut frame = frame::start(self.table.me(), payload_bytes);
        write(&mut frame)?;
        Ok(frame::finish(frame).map_err(SendError::from).and_then(|frame| self.send_frame(index, frame)))
    }

    fn send_frame(&mut self, index: usize, frame: Vec<u8>) -> Result<Sent, SendError> {
        match self.dealers[index].send(frame, zmq::DONTWAIT) {
            Ok(()) => {
                self.stats.sent += 1;
                Ok(Sent::Queued)
            }
            // EAGAIN: no connection (IMMEDIATE) or the high-water mark.
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {
                self.stats.send_dropped += 1;
                Ok(Sent::Dropped)
            }
            Err(error) => Err(SendError::Zmq(error)),
        }
    }

    /// The next message `(from, payload)` if one waits, without blocking.
    /// Frames that are refused are counted and skipped.
    pub fn try_recv(&mut self) -> Result<Option<(MemberId, Vec<u8>)>, PeerError> {
        Ok(self.try_recv_frame()?.map(|(from, payload)| (from, payload.to_vec())))
    }

    /// [`Peers::try_recv`] lending the payload where libzmq received it:
    /// a raft append carries whole entries, and a group member's copies
    /// of them (frame, then payload) were a fifth of a follower's time.
    pub fn try_recv_frame(&mut self) -> Result<Option<(MemberId, Received)>, PeerError> {
        for _ in 0..RECV_SKIPPED_MAX {
            let Some((frame, user)) = self.recv_raw()? else { return Ok(None) };
            let Some(frame) = frame else {
                self.stats.malformed += 1;
                continue;
            };
            match self.table.accept(&frame, user.as_deref()) {
                Ok((from, payload)) => {
                    self.stats.received += 1;
                    // The payload is the frame's tail (`frame::decode`).
                    let start = frame.len() - payload.len();
                    return Ok(Some((from, Received { frame, start })));
                }
                Err(refused) => self.count(&refused),
            }
        }
        Ok(None)
    }

    /// The next message, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<(MemberId, Vec<u8>)>, PeerError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(message) = self.try_recv()? {
                return Ok(Some(message));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let left_ms = left.as_millis().clamp(1, i64::MAX as u128) as i64;
            match self.router.poll(zmq::POLLIN, left_ms) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(source) => return Err(PeerError::Zmq { during: "polling", source }),
            }
        }
    }

    fn count(&mut self, refused: &Refused) {
        match refused {
            Refused::Malformed(_) => self.stats.malformed += 1,
            Refused::SenderMismatch { .. } => self.stats.sender_mismatch += 1,
            Refused::Unauthenticated(_) | Refused::UnknownSender(_) => self.stats.unknown_sender += 1,
        }
        tracing::debug!(%refused, "peer frame dropped");
    }

    /// One whole message from the ROUTER: its single data frame (`None`
    /// when it had another number of frames) and the sender's User-Id.
    /// `Ok(None)` when nothing waits.
    #[allow(clippy::type_complexity)]
    fn recv_raw(&self) -> Result<Option<(Option<zmq::Message>, Option<String>)>, PeerError> {
        let mut routing_id = zmq::Message::new();
        match self.router.recv(&mut routing_id, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => return Ok(None),
            Err(source) => return Err(PeerError::Zmq { during: "receiving", source }),
        }
        let mut frames = Vec::new();
        let mut user = None;
        let mut more = routing_id.get_more();
        while more {
            let mut part = self.router.recv_msg(0).map_err(zmq_err("receiving"))?;
            more = part.get_more();
            // The User-Id rides on the frames the peer sent, not on the
            // routing id the ROUTER made up.
            if self.curve && user.is_none() {
                user = part.gets("User-Id").map(str::to_owned);
            }
            // Only one frame is kept: a message of more frames is refused.
            if frames.len() < 2 {
                frames.push(part);
            }
        }
        let frame = if frames.len() == 1 { frames.pop() } else { None };
        Ok(Some((frame, user)))
    }
}

/// Without CURVE, only endpoints that cannot leave the machine (as the
/// broker's other sockets); with it, every peer's key and a ZAP handler.
fn check_security(config: &PeerConfig, zap: Option<&ZapHandler>) -> Result<(), PeerError> {
    if config.curve.is_none() {
        if config.allow_insecure {
            return Ok(());
        }
        let endpoints = std::iter::once(&config.bind).chain(config.peers.iter().map(|peer| &peer.endpoint));
        return match endpoints.into_iter().find(|endpoint| !endpoint.is_local()) {
            Some(open) => Err(PeerError::Insecure { endpoint: open.to_string() }),
            None => Ok(()),
        };
    }
    if let Some(peer) = config.peers.iter().find(|peer| peer.public_key.is_none()) {
        return Err(PeerError::NoPublicKey(peer.id));
    }
    zap.map(|_| ()).ok_or(PeerError::NoZapHandler)
}

fn connect_dealer(
    context: &zmq::Context,
    peer: &PeerAddress,
    curve: Option<&KeyPair>,
) -> Result<zmq::Socket, PeerError> {
    let dealer = context.socket(zmq::DEALER).map_err(zmq_err("creating a peer DEALER"))?;
    set_common_options(&dealer)?;
    dealer.set_sndhwm(PEER_QUEUE_MESSAGES_MAX).map_err(zmq_err("setting SNDHWM"))?;
    // Queue nothing for a peer that is not connected: sends to it fail at
    // once (dropped, counted) instead of piling up stale raft messages
    // that would be delivered after it returns.
    dealer.set_immediate(true).map_err(zmq_err("setting IMMEDIATE"))?;
    dealer.set_reconnect_ivl(PEER_RECONNECT_INTERVAL_MS).map_err(zmq_err("setting RECONNECT_IVL"))?;
    dealer.set_reconnect_ivl_max(PEER_RECONNECT_INTERVAL_MAX_MS).map_err(zmq_err("setting RECONNECT_IVL_MAX"))?;
    if let (Some(keys), Some(server)) = (curve, &peer.public_key) {
        dealer.set_curve_serverkey(server).map_err(zmq_err("setting CURVE_SERVERKEY"))?;
        dealer.set_curve_publickey(&keys.public).map_err(zmq_err("setting CURVE_PUBLICKEY"))?;
        dealer.set_curve_secretkey(&keys.secret).map_err(zmq_err("setting CURVE_SECRETKEY"))?;
    }
    // connect() returns at once; libzmq connects (and reconnects) behind it.
    dealer.connect(peer.endpoint.as_str()).map_err(zmq_err("connecting to a peer"))?;
    Ok(dealer)
}

/// Options both socket types take.
fn set_common_options(socket: &zmq::Socket) -> Result<(), PeerError> {
    socket.set_linger(PEER_LINGER_MS).map_err(zmq_err("setting LINGER"))?;
    // A larger message drops the connection before it is buffered whole.
    socket.set_maxmsgsize(PEER_SOCKET_MESSAGE_BYTES_MAX as i64).map_err(zmq_err("setting MAXMSGSIZE"))?;
    socket.set_handshake_ivl(PEER_HANDSHAKE_TIMEOUT_MS).map_err(zmq_err("setting HANDSHAKE_IVL"))?;
    // ZMTP PINGs find a dead peer (host lost, cable cut) that TCP would
    // not report for minutes; TTL tells the other side the same timeout.
    socket.set_heartbeat_ivl(PEER_HEARTBEAT_INTERVAL_MS).map_err(zmq_err("setting HEARTBEAT_IVL"))?;
    socket.set_heartbeat_timeout(PEER_HEARTBEAT_TIMEOUT_MS).map_err(zmq_err("setting HEARTBEAT_TIMEOUT"))?;
    socket.set_heartbeat_ttl(PEER_HEARTBEAT_TIMEOUT_MS).map_err(zmq_err("setting HEARTBEAT_TTL"))?;
    Ok(())
}

fn zmq_err(during: &'static str) -> impl Fn(zmq::Error) -> PeerError {
    move |source| PeerError::Zmq { during, source }
}
