//! The ZAP handler (RFC 27): libzmq asks it, over
//! `inproc://zeromq.zap.01`, whether each connecting CURVE client may in.
//!
//! The broker sets a ZAP domain per socket; a key is admitted when it is in
//! the authorized-keys file and its role fits the socket: `intake` takes
//! producers, `control` takes workers, `fanout` takes both, and `peer` (the
//! broker-to-broker socket of a group) takes only broker keys, whose
//! User-Id there is the member id. The reply's
//! User-Id, which libzmq attaches to every message from that connection,
//! names the key: on intake and control its id (the broker checks that a
//! message's claimed producer or worker id is the key's); on fanout, which
//! serves both roles, `ROLE:ID` (see [`fanout_user_id`]), because ids are
//! unique only within a role and the subscriptions a key may make depend
//! on its role.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use crate::authorized::{AuthorizedKeys, Role};
use crate::keys::encode;

/// The endpoint libzmq sends ZAP requests to.
pub const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";
/// ZAP domains of the broker's sockets.
pub const DOMAIN_INTAKE: &str = "intake";
pub const DOMAIN_CONTROL: &str = "control";
pub const DOMAIN_FANOUT: &str = "fanout";
/// The peer socket of a broker group member (`orderly-peer`).
pub const DOMAIN_PEER: &str = "peer";

/// Separates role and id in a fanout User-Id; ids never contain it.
const FANOUT_USER_ID_SEPARATOR: char = ':';

/// The User-Id the handler gives a key on the fanout socket: `worker:w1`,
/// `producer:shop`.
pub fn fanout_user_id(role: Role, id: &str) -> String {
    format!("{}{FANOUT_USER_ID_SEPARATOR}{id}", role.name())
}

/// The role and id of a fanout User-Id made by [`fanout_user_id`].
pub fn parse_fanout_user_id(user: &str) -> Option<(Role, &str)> {
    let (role, id) = user.split_once(FANOUT_USER_ID_SEPARATOR)?;
    Some((Role::from_name(role)?, id))
}

/// Shared view of the authorized keys; replaced whole on reload (SIGHUP).
pub type SharedKeys = Arc<RwLock<AuthorizedKeys>>;

/// Counts of the handler's decisions.
#[derive(Debug, Default)]
pub struct ZapStats {
    pub admitted: AtomicU64,
    pub refused: AtomicU64,
}

/// The running handler thread; stops when dropped.
pub struct ZapHandler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<ZapStats>,
}

impl ZapHandler {
    /// Binds the ZAP endpoint on `context` (before any CURVE server socket
    /// accepts a connection) and serves it on a thread.
    pub fn start(context: &zmq::Context, keys: SharedKeys) -> Result<ZapHandler, zmq::Error> {
        let socket = context.socket(zmq::REP)?;
        socket.set_linger(0)?;
        socket.bind(ZAP_ENDPOINT)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ZapStats::default());
        let (thread_stop, thread_stats) = (Arc::clone(&stop), Arc::clone(&stats));
        let thread = std::thread::Builder::new()
            .name("zap".into())
            .spawn(move || serve(socket, keys, thread_stop, thread_stats))
            .map_err(|_| zmq::Error::EMFILE)?;
        Ok(ZapHandler { stop, thread: Some(thread), stats })
    }
}

impl Drop for ZapHandler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(socket: zmq::Socket, keys: SharedKeys, stop: Arc<AtomicBool>, stats: Arc<ZapStats>) {
    while !stop.load(Ordering::Relaxed) {
        match socket.poll(zmq::POLLIN, 100) {
            Ok(0) | Err(zmq::Error::EINTR) => continue,
            Ok(_) => {}
            Err(error) => {
                tracing::error!(%error, "ZAP handler stopped");
                return;
            }
        }
        let Ok(request) = socket.recv_multipart(0) else { continue };
        let reply = decide(&request, &keys, &stats);
        if let Err(error) = socket.send_multipart(reply, 0) {
            tracing::warn!(%error, "ZAP reply failed");
        }
    }
}

/// Builds the reply to one ZAP request:
/// `[version, request id, domain, address, identity, mechanism, credentials...]`.
fn decide(request: &[Vec<u8>], keys: &SharedKeys, stats: &ZapStats) -> Vec<Vec<u8>> {
    let request_id = request.get(1).cloned().unwrap_or_default();
    let reply = |code: &str, text: &str, user: &str| {
        vec![b"1.0".to_vec(), request_id.clone(), code.into(), text.into(), user.into(), Vec::new()]
    };
    if request.len() < 7 || request[0] != b"1.0" || request[5] != b"CURVE" {
        stats.refused.fetch_add(1, Ordering::Relaxed);
        return reply("400", "CURVE required", "");
    }
    let domain = String::from_utf8_lossy(&request[2]).into_owned();
    let address = String::from_utf8_lossy(&request[3]).into_owned();
    let key = &request[6];
    let keys = keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    let decision = match keys.lookup(key) {
        None => Err("unknown key".to_string()),
        Some((role, id)) => user_id(*role, id, &domain),
    };
    let key_text: Option<[u8; 32]> = key.as_slice().try_into().ok();
    let key_text = key_text.map(|k| encode(&k)).unwrap_or_else(|| "?".into());
    match decision {
        Ok(id) => {
            stats.admitted.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%domain, %address, %id, "ZAP: admitted");
            reply("200", "OK", &id)
        }
        Err(why) => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%domain, %address, key = %key_text, %why, "ZAP: refused a connection");
            reply("400", &why, "")
        }
    }
}

/// The User-Id a key bound to `role` and `id` gets on the socket of
/// `domain`, or why it may not connect there.
fn user_id(role: Role, id: &str, domain: &str) -> Result<String, String> {
    let fits = match domain {
        DOMAIN_INTAKE => role == Role::Producer,
        DOMAIN_CONTROL => role == Role::Worker,
        DOMAIN_FANOUT => matches!(role, Role::Producer | Role::Worker),
        DOMAIN_PEER => role == Role::Broker,
        _ => false,
    };
    if !fits {
        Err(format!("a {} key may not connect to {domain}", role.name()))
    } else if domain == DOMAIN_FANOUT {
        Ok(fanout_user_id(role, id))
    } else {
        Ok(id.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_is_admitted_only_on_its_sockets() {
        let all = [DOMAIN_INTAKE, DOMAIN_CONTROL, DOMAIN_FANOUT, DOMAIN_PEER, "other"];
        let admitted = |role: Role| all.iter().copied().filter(|d| user_id(role, "2", d).is_ok()).collect::<Vec<_>>();
        assert_eq!(admitted(Role::Producer), [DOMAIN_INTAKE, DOMAIN_FANOUT]);
        assert_eq!(admitted(Role::Worker), [DOMAIN_CONTROL, DOMAIN_FANOUT]);
        assert_eq!(admitted(Role::Broker), [DOMAIN_PEER]);
        assert_eq!(user_id(Role::Broker, "2", DOMAIN_PEER), Ok("2".to_string()));
    }

    #[test]
    fn a_request_on_the_peer_domain_is_decided_by_the_keys_role() {
        let (broker, worker) = (crate::KeyPair::generate().unwrap(), crate::KeyPair::generate().unwrap());
        let text = format!("{} broker 2\n{} worker 2\n", encode(&broker.public), encode(&worker.public));
        let keys: SharedKeys = Arc::new(RwLock::new(AuthorizedKeys::parse(&text, "ak").unwrap()));
        let stats = ZapStats::default();
        let request = |key: &[u8; 32], domain: &str| {
            let head = ["1.0", "7", domain, "127.0.0.1", "", "CURVE"].map(|f| f.as_bytes().to_vec());
            decide(&[head.to_vec(), vec![key.to_vec()]].concat(), &keys, &stats)
        };
        let reply = request(&broker.public, DOMAIN_PEER);
        assert_eq!((reply[2].as_slice(), reply[4].as_slice()), (&b"200"[..], &b"2"[..]));
        assert_eq!(request(&worker.public, DOMAIN_PEER)[2], b"400");
        assert_eq!(request(&broker.public, DOMAIN_FANOUT)[2], b"400");
        assert_eq!(request(&broker.public, DOMAIN_INTAKE)[2], b"400");
        assert_eq!((stats.admitted.load(Ordering::Relaxed), stats.refused.load(Ordering::Relaxed)), (1, 3));
    }

    #[test]
    fn fanout_user_ids_round_trip() {
        let user = fanout_user_id(Role::Worker, "w-1.a_b");
        assert_eq!(user, "worker:w-1.a_b");
        assert_eq!(parse_fanout_user_id(&user), Some((Role::Worker, "w-1.a_b")));
        assert_eq!(parse_fanout_user_id("producer:shop"), Some((Role::Producer, "shop")));
        assert_eq!(parse_fanout_user_id("shop"), None);
        assert_eq!(parse_fanout_user_id("admin:x"), None);
    }
}
