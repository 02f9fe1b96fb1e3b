//! The peer transport over real libzmq on loopback: members exchange
//! messages, CURVE binds `from` to the sending key, strangers and other
//! roles are refused, restarts reconnect, bad frames are counted, sends
//! never block.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use orderly_common::Endpoint;
use orderly_peer::limits::{
    PEER_HEARTBEAT_TIMEOUT_MS, PEER_PAYLOAD_BYTES_MAX, PEER_QUEUE_MESSAGES_MAX, PEER_SOCKET_MESSAGE_BYTES_MAX,
};
use orderly_peer::{core::frame, FrameError, MemberId, PeerAddress, PeerConfig, PeerError, Peers, SendError, Sent};
use orderly_security::keys::{encode, KeyPair};
use orderly_security::zap::ZapHandler;
use orderly_security::AuthorizedKeys;

/// Long enough for a loopback (re)connection with a CURVE handshake.
const DELIVERY_WAIT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched.
const QUIET: Duration = Duration::from_millis(1500);

fn id(n: u64) -> MemberId {
    MemberId::new(n).unwrap()
}

fn free_endpoint() -> Endpoint {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("tcp://127.0.0.1:{port}").parse().unwrap()
}

/// The static description of a group of three: endpoints, broker keys, and
/// a worker key (authorized as `worker 2`) that must not get in.
struct Group {
    endpoints: Vec<Endpoint>,
    keys: Vec<KeyPair>,
    worker: KeyPair,
    curve: bool,
}

impl Group {
    fn new(curve: bool) -> Group {
        let keys = (0..3).map(|_| KeyPair::generate().unwrap()).collect();
        Group {
            endpoints: (0..3).map(|_| free_endpoint()).collect(),
            keys,
            worker: KeyPair::generate().unwrap(),
            curve,
        }
    }

    fn authorized(&self) -> AuthorizedKeys {
        let mut text = format!("{} worker 2\n", encode(&self.worker.public));
        for (index, key) in self.keys.iter().enumerate() {
            text.push_str(&format!("{} broker {}\n", encode(&key.public), index + 1));
        }
        AuthorizedKeys::parse(&text, "test").unwrap()
    }

    fn config(&self, me: u64) -> PeerConfig {
        let index = (me - 1) as usize;
        let peers = (1..=3u64)
            .filter(|other| *other != me)
            .map(|other| PeerAddress {
                id: id(other),
                endpoint: self.endpoints[(other - 1) as usize].clone(),
                public_key: self.curve.then_some(self.keys[(other - 1) as usize].public),
            })
            .collect();
        let curve = self.curve.then(|| KeyPair { public: self.keys[index].public, secret: self.keys[index].secret });
        PeerConfig { me: id(me), bind: self.endpoints[index].clone(), peers, curve, allow_insecure: false }
    }

    /// Member `me` in its own context, as in its own process.
    fn start(&self, me: u64) -> Member {
        let context = zmq::Context::new();
        let zap = self.curve.then(|| ZapHandler::start(&context, Arc::new(RwLock::new(self.authorized()))).unwrap());
        let peers = Peers::start(&context, self.config(me), zap.as_ref()).unwrap();
        Member { peers, zap, _context: context }
    }
}

/// Fields drop in order: sockets, then the ZAP thread, then the context.
struct Member {
    peers: Peers,
    zap: Option<ZapHandler>,
    _context: zmq::Context,
}

impl Member {
    fn zap_refused(&self) -> u64 {
        self.zap.as_ref().unwrap().stats.refused.load(Ordering::Relaxed)
    }
}

/// Sends `payload` from `from` to `to` every 20 ms (sends to a peer not yet
/// connected are dropped, as raft's would be) until `to` receives it;
/// returns the sender `to` saw.
fn deliver(from: &mut Member, to: &mut Member, payload: &[u8]) -> MemberId {
    let deadline = Instant::now() + DELIVERY_WAIT;
    let target = to.peers.me();
    while Instant::now() < deadline {
        from.peers.send(target, payload).unwrap();
        while let Some((sender, bytes)) = to.peers.recv(Duration::from_millis(20)).unwrap() {
            if bytes == payload {
                return sender;
            }
        }
    }
    panic!("{payload:?} did not reach member {target} within {DELIVERY_WAIT:?}");
}

/// Every ordered pair of a group of three exchanges a message.
fn exchange_all(curve: bool) {
    let group = Group::new(curve);
    let mut members: Vec<Member> = (1..=3).map(|me| group.start(me)).collect();
    for from in 0..3 {
        for to in (0..3).filter(|to| *to != from) {
            let payload = format!("{from}->{to}").into_bytes();
            let (low, high) = members.split_at_mut(from.max(to));
            let (a, b) = if from < to { (&mut low[from], &mut high[0]) } else { (&mut high[0], &mut low[to]) };
            assert_eq!(deliver(a, b, &payload), id(from as u64 + 1));
        }
    }
    for member in &members {
        let stats = member.peers.stats();
        assert_eq!((stats.malformed, stats.sender_mismatch, stats.unknown_sender), (0, 0, 0), "{stats:?}");
    }
}

#[test]
fn three_members_exchange_messages_both_ways() {
    exchange_all(false);
}

#[test]
fn three_members_exchange_messages_both_ways_with_curve() {
    exchange_all(true);
}

/// A raw DEALER on `endpoint`, a CURVE client with `key` when given.
fn raw_client(context: &zmq::Context, endpoint: &Endpoint, key: Option<(&KeyPair, &KeyPair)>) -> zmq::Socket {
    let socket = context.socket(zmq::DEALER).unwrap();
    socket.set_linger(0).unwrap();
    if let Some((me, server)) = key {
        socket.set_curve_serverkey(&server.public).unwrap();
        socket.set_curve_publickey(&me.public).unwrap();
        socket.set_curve_secretkey(&me.secret).unwrap();
    }
    socket.connect(endpoint.as_str()).unwrap();
    socket
}

#[test]
fn from_is_the_keys_member_id_not_the_claim() {
    let group = Group::new(true);
    let mut member_1 = group.start(1);
    // A client holding member 2's key, claiming to be member 3 in the
    // frame's header, then a frame whose payload claims 3.
    let context = zmq::Context::new();
    let client = raw_client(&context, &group.endpoints[0], Some((&group.keys[1], &group.keys[0])));
    client.send(frame::encode(id(3), b"header claims 3").unwrap(), 0).unwrap();
    client.send(frame::encode(id(2), b"from: 3 (says the payload)").unwrap(), 0).unwrap();
    let received = member_1.peers.recv(DELIVERY_WAIT).unwrap();
    assert_eq!(received, Some((id(2), b"from: 3 (says the payload)".to_vec())));
    let stats = member_1.peers.stats();
    assert_eq!((stats.sender_mismatch, stats.received), (1, 1), "{stats:?}");
}

#[test]
fn a_worker_key_cannot_reach_the_peer_socket() {
    let group = Group::new(true);
    let mut member_1 = group.start(1);
    let context = zmq::Context::new();
    let stranger = KeyPair::generate().unwrap();
    let clients = [
        raw_client(&context, &group.endpoints[0], Some((&group.worker, &group.keys[0]))),
        raw_client(&context, &group.endpoints[0], Some((&stranger, &group.keys[0]))),
        raw_client(&context, &group.endpoints[0], None),
    ];
    for client in &clients {
        client.send(frame::encode(id(2), b"let me in").unwrap(), zmq::DONTWAIT).unwrap();
    }
    assert_eq!(member_1.peers.recv(QUIET).unwrap(), None);
    // The worker's and the stranger's keys reach ZAP and are refused; the
    // plain client fails the CURVE handshake before ZAP.
    assert!(member_1.zap_refused() >= 2, "refused {}", member_1.zap_refused());
    assert_eq!(member_1.peers.stats().received, 0);
    // The socket itself works: member 2's key gets in.
    let mut member_2 = group.start(2);
    assert_eq!(deliver(&mut member_2, &mut member_1, b"member 2"), id(2));
}

#[test]
fn a_restarted_peer_is_reached_again_within_bounded_time() {
    let group = Group::new(true);
    let mut member_1 = group.start(1);
    let mut member_2 = group.start(2);
    assert_eq!(deliver(&mut member_1, &mut member_2, b"before"), id(1));
    drop(member_2);
    // While it is down, sends to it are dropped at once.
    assert_eq!(member_1.peers.send(id(2), b"while down").unwrap(), Sent::Dropped);
    std::thread::sleep(Duration::from_millis(1500)); // let the backoff grow
    let restarted = Instant::now();
    let mut member_2 = group.start(2);
    assert_eq!(deliver(&mut member_1, &mut member_2, b"after"), id(1));
    let took = restarted.elapsed();
    // Reconnect backoff is at most 1 s, plus a CURVE handshake.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert_eq!(deliver(&mut member_2, &mut member_1, b"and back"), id(2));
}

#[test]
fn garbage_and_oversized_frames_are_dropped_and_counted() {
    let group = Group::new(false);
    let mut member_1 = group.start(1);
    let context = zmq::Context::new();
    let client = raw_client(&context, &group.endpoints[0], None);
    client.send(&b""[..], 0).unwrap();
    client.send(&b"\x09not a peer frame"[..], 0).unwrap();
    client.send_multipart([frame::encode(id(2), b"a").unwrap(), b"second frame".to_vec()], 0).unwrap();
    let mut over = frame::encode(id(2), b"").unwrap();
    over.resize(over.len() + PEER_PAYLOAD_BYTES_MAX + 1, 0);
    client.send(over, 0).unwrap();
    client.send(frame::encode(id(2), b"good").unwrap(), 0).unwrap();
    assert_eq!(member_1.peers.recv(DELIVERY_WAIT).unwrap(), Some((id(2), b"good".to_vec())));
    assert_eq!(member_1.peers.stats().malformed, 4, "{:?}", member_1.peers.stats());
    // Over the socket's limit: libzmq drops the connection before
    // buffering the frame; nothing arrives, and the socket still works.
    client.send(vec![1u8; PEER_SOCKET_MESSAGE_BYTES_MAX + 1], 0).unwrap();
    assert_eq!(member_1.peers.recv(QUIET).unwrap(), None);
    let mut member_2 = group.start(2);
    assert_eq!(deliver(&mut member_2, &mut member_1, b"still open"), id(2));
}

#[test]
fn send_to_an_unknown_member_or_too_large_is_an_error() {
    let group = Group::new(false);
    let mut member_1 = group.start(1);
    assert!(matches!(member_1.peers.send(id(9), b"x"), Err(SendError::NotAPeer(m)) if m == id(9)));
    assert!(matches!(member_1.peers.send(id(1), b"x"), Err(SendError::NotAPeer(m)) if m == id(1)));
    let over = vec![0; PEER_PAYLOAD_BYTES_MAX + 1];
    assert!(matches!(member_1.peers.send(id(2), &over), Err(SendError::Frame(FrameError::TooLarge { .. }))));
    assert_eq!(member_1.peers.stats().sent + member_1.peers.stats().send_dropped, 0);
}

#[test]
fn send_never_blocks_when_a_peer_is_down_or_not_reading() {
    let group = Group::new(false);
    let mut member_1 = group.start(1);
    // Member 2 is down: every send returns at once, dropped.
    let sends = 10 * PEER_QUEUE_MESSAGES_MAX as u64;
    let started = Instant::now();
    for _ in 0..sends {
        assert_eq!(member_1.peers.send(id(2), b"to nobody").unwrap(), Sent::Dropped);
    }
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert_eq!(member_1.peers.stats().send_dropped, sends);
    // Member 2 is up but reads nothing: queues fill, then sends drop;
    // none waits.
    let mut member_2 = group.start(2);
    deliver(&mut member_1, &mut member_2, b"connected");
    let payload = vec![7u8; 64 * 1024];
    let (mut slowest, mut dropped) = (Duration::ZERO, false);
    for _ in 0..20_000 {
        let started = Instant::now();
        let sent = member_1.peers.send(id(2), &payload).unwrap();
        slowest = slowest.max(started.elapsed());
        if sent == Sent::Dropped {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "20000 messages of 64 KiB queued without a drop");
    assert!(slowest < Duration::from_millis(100), "a send took {slowest:?}");
}

#[test]
fn insecure_or_half_configured_groups_are_refused() {
    let group = Group::new(false);
    let context = zmq::Context::new();
    let mut open = group.config(1);
    open.peers[0].endpoint = "tcp://192.0.2.1:5580".parse().unwrap();
    assert!(matches!(Peers::start(&context, open, None), Err(PeerError::Insecure { .. })));
    let curve = Group::new(true);
    assert!(matches!(Peers::start(&context, curve.config(1), None), Err(PeerError::NoZapHandler)));
    let zap = ZapHandler::start(&context, Arc::new(RwLock::new(curve.authorized()))).unwrap();
    let mut keyless = curve.config(1);
    keyless.peers[1].public_key = None;
    assert!(matches!(Peers::start(&context, keyless, Some(&zap)), Err(PeerError::NoPublicKey(m)) if m == id(3)));
}

/// A TCP relay to a member that can go silent: it stops forwarding and
/// accepting but keeps its connections open, as a peer whose host froze or
/// lost its network looks (no FIN, no RST).
struct Relay {
    endpoint: Endpoint,
    silent: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(target: &Endpoint) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("tcp://{}", listener.local_addr().unwrap()).parse().unwrap();
        let target = target.as_str().strip_prefix("tcp://").unwrap().to_owned();
        let (silent, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (thread_silent, thread_stop) = (Arc::clone(&silent), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !thread_stop.load(Ordering::Relaxed) {
                let accepted = if thread_silent.load(Ordering::Relaxed) { None } else { listener.accept().ok() };
                let Some((inbound, _)) = accepted else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let outbound = TcpStream::connect(&target).unwrap();
                for (from, to) in [(inbound.try_clone().unwrap(), outbound.try_clone().unwrap()), (outbound, inbound)] {
                    let (silent, stop) = (Arc::clone(&thread_silent), Arc::clone(&thread_stop));
                    std::thread::spawn(move || pump(from, to, &silent, &stop));
                }
            }
        });
        Relay { endpoint, silent, stop }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, silent: &AtomicBool, stop: &AtomicBool) {
    from.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    from.set_nonblocking(false).unwrap();
    let mut buffer = [0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        if silent.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        match from.read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

#[test]
fn a_silent_peer_is_noticed_by_heartbeats() {
    let mut group = Group::new(true);
    let mut member_2 = group.start(2);
    let relay = Relay::start(&group.endpoints[1]);
    group.endpoints[1] = relay.endpoint.clone();
    let mut member_1 = group.start(1);
    assert_eq!(deliver(&mut member_1, &mut member_2, b"through the relay"), id(1));
    relay.silent.store(true, Ordering::Relaxed);
    let went_silent = Instant::now();
    // TCP alone would keep queueing for minutes (these few small messages
    // fit its buffers); the heartbeat timeout drops the connection, and
    // with no connection sends are dropped.
    let limit = Duration::from_millis(PEER_HEARTBEAT_TIMEOUT_MS as u64 + 1500);
    while member_1.peers.send(id(2), b"are you there").unwrap() == Sent::Queued {
        assert!(went_silent.elapsed() < limit, "still queueing to a silent peer after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(went_silent.elapsed() >= Duration::from_millis(PEER_HEARTBEAT_TIMEOUT_MS as u64 / 2));
}

/// A member removed at run time is refused both ways; added back (as a
/// member added to the group would be) it is reached and heard again.
fn remove_then_add_a_peer(curve: bool) {
    let group = Group::new(curve);
    let (mut one, mut three) = (group.start(1), group.start(3));
    assert_eq!(deliver(&mut three, &mut one, b"before"), id(3));
    assert!(one.peers.remove_peer(id(3)));
    assert!(!one.peers.remove_peer(id(3)));
    assert!(matches!(one.peers.send(id(3), b"x"), Err(orderly_peer::SendError::NotAPeer(_))));
    let deadline = Instant::now() + QUIET;
    while Instant::now() < deadline {
        three.peers.send(id(1), b"removed").unwrap();
        assert_eq!(one.peers.recv(Duration::from_millis(50)).unwrap(), None, "a removed member is refused");
    }
    assert!(one.peers.stats().unknown_sender > 0);
    let address = group.config(1).peers.into_iter().find(|p| p.id == id(3)).unwrap();
    one.peers.add_peer(address).unwrap();
    assert_eq!(one.peers.peers(), &[id(2), id(3)]);
    assert_eq!(deliver(&mut three, &mut one, b"added again"), id(3));
    assert_eq!(deliver(&mut one, &mut three, b"and back"), id(1));
}

#[test]
fn a_peer_removed_then_added_at_run_time() {
    remove_then_add_a_peer(false);
}

#[test]
fn a_peer_removed_then_added_at_run_time_with_curve() {
    remove_then_add_a_peer(true);
}
