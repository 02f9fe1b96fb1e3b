//! The broker's three ZeroMQ sockets: every option set on purpose, and
//! bounded receiving.

use orderly_common::limits::{
    CONTROL_FRAME_BYTES_MAX, INTAKE_FRAME_BYTES_MAX, SOCKET_HWM_DEFAULT, SOCKET_LINGER_MS, TOPIC_BYTES_MAX,
};
use orderly_common::Endpoint;
use orderly_security::zap::{DOMAIN_CONTROL, DOMAIN_FANOUT, DOMAIN_INTAKE};

use super::config::BrokerConfig;
use super::error::{zmq_err, BrokerError};

/// Frames of one received message kept (the protocol uses two).
const FRAMES_KEPT_MAX: usize = 3;
/// The largest message the fanout (XPUB) takes from a subscriber; a larger
/// one drops the connection. A subscription is a flag byte and a topic,
/// but libzmq applies this limit to the handshake too: CURVE's INITIATE
/// command with its metadata is about 300 bytes (and every CURVE message
/// carries ~40 bytes of box overhead).
const FANOUT_RECEIVED_BYTES_MAX: usize = 1024;
/// Subscription messages queued from subscribers: far more than the two
/// each legitimate client sends per connection.
const FANOUT_RCVHWM: i32 = 1000;
const _: () = assert!(FANOUT_RECEIVED_BYTES_MAX > 1 + TOPIC_BYTES_MAX + 64);

pub(super) struct Sockets {
    pub intake: zmq::Socket,
    pub fanout: zmq::Socket,
    pub control: zmq::Socket,
}

pub(super) fn bind_sockets(context: &zmq::Context, config: &BrokerConfig) -> Result<Sockets, BrokerError> {
    let intake = context.socket(zmq::PULL).map_err(zmq_err("creating the intake socket"))?;
    intake.set_rcvhwm(SOCKET_HWM_DEFAULT).map_err(zmq_err("setting RCVHWM"))?;
    intake.set_maxmsgsize(INTAKE_FRAME_BYTES_MAX as i64).map_err(zmq_err("setting MAXMSGSIZE"))?;
    // XPUB: PUB that hands the broker each subscription (see `Subscription`).
    let mut fanout = context.socket(zmq::XPUB).map_err(zmq_err("creating the fanout socket"))?;
    // Credits bound dispatches per worker, so the queue to a subscriber stays
    // far below this; a drop at the mark is repaired by redelivery.
    fanout.set_sndhwm(SOCKET_HWM_DEFAULT * 10).map_err(zmq_err("setting SNDHWM"))?;
    fanout.set_rcvhwm(FANOUT_RCVHWM).map_err(zmq_err("setting RCVHWM"))?;
    fanout.set_maxmsgsize(FANOUT_RECEIVED_BYTES_MAX as i64).map_err(zmq_err("setting MAXMSGSIZE"))?;
    if config.curve.is_some() {
        // Under CURVE no subscription takes effect until the loop has
        // checked it against the sender's key and applied it. Without
        // CURVE there is no key to check: plain PUB semantics.
        set_xpub_manual(&mut fanout)?;
    }
    let control = context.socket(zmq::PULL).map_err(zmq_err("creating the control socket"))?;
    control.set_rcvhwm(SOCKET_HWM_DEFAULT).map_err(zmq_err("setting RCVHWM"))?;
    control.set_maxmsgsize(CONTROL_FRAME_BYTES_MAX as i64).map_err(zmq_err("setting MAXMSGSIZE"))?;
    for socket in [&intake, &fanout, &control] {
        socket.set_linger(SOCKET_LINGER_MS).map_err(zmq_err("setting LINGER"))?;
    }
    if let Some(curve) = &config.curve {
        for (socket, domain) in [(&intake, DOMAIN_INTAKE), (&fanout, DOMAIN_FANOUT), (&control, DOMAIN_CONTROL)] {
            socket.set_curve_server(true).map_err(zmq_err("setting CURVE_SERVER"))?;
            socket.set_curve_secretkey(&curve.keys.secret).map_err(zmq_err("setting CURVE_SECRETKEY"))?;
            // The domain tells the ZAP handler which role may connect here.
            socket.set_zap_domain(domain).map_err(zmq_err("setting ZAP_DOMAIN"))?;
        }
    }
    let bind = |socket: &zmq::Socket, name: &'static str, endpoint: &Endpoint| {
        socket.bind(endpoint.as_str()).map_err(|source| BrokerError::Bind {
            socket: name,
            endpoint: endpoint.to_string(),
            source,
        })
    };
    bind(&intake, "intake", &config.intake)?;
    bind(&fanout, "fanout", &config.fanout)?;
    bind(&control, "control", &config.control)?;
    Ok(Sockets { intake, fanout, control })
}

/// `ZMQ_XPUB_MANUAL`, which the zmq crate has no setter for.
fn set_xpub_manual(socket: &mut zmq::Socket) -> Result<(), BrokerError> {
    let on: std::ffi::c_int = 1;
    // SAFETY: the handle is a live socket owned by `socket`; the option
    // value is a c_int read during the call, its size given.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            zmq_sys::ZMQ_XPUB_MANUAL as std::ffi::c_int,
            (&on as *const std::ffi::c_int).cast(),
            std::mem::size_of::<std::ffi::c_int>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: zmq_errno only reads the calling thread's errno.
    let errno = unsafe { zmq_sys::zmq_errno() };
    Err(BrokerError::Zmq { during: "setting XPUB_MANUAL", source: zmq::Error::from_raw(errno) })
}

/// What a subscriber sent to the fanout.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Subscription {
    Subscribe(Vec<u8>),
    Unsubscribe(Vec<u8>),
    /// Not a subscription (a hostile XSUB may send anything): ignored.
    Other,
}

/// Reads one message from the fanout (XPUB) without blocking, with the
/// sender's ZAP User-Id (CURVE only); `None` when none waits. In manual
/// mode the socket then points at that sender, so a `ZMQ_SUBSCRIBE` set
/// next applies to it alone.
pub(super) fn recv_subscription(
    socket: &zmq::Socket,
    curve: bool,
) -> Result<Option<(Subscription, Option<String>)>, BrokerError> {
    let Some((mut frames, user)) = recv(socket, curve)? else { return Ok(None) };
    let first = frames.swap_remove(0);
    let subscription = match (frames.is_empty(), first.split_first()) {
        (true, Some((&1, topic))) => Subscription::Subscribe(topic.to_vec()),
        (true, Some((&0, topic))) => Subscription::Unsubscribe(topic.to_vec()),
        _ => Subscription::Other,
    };
    Ok(Some((subscription, user)))
}

/// One received message: its frames and the sender's ZAP User-Id.
pub(super) type Received = (Vec<zmq::Message>, Option<String>);

/// Receives one whole message without blocking, with the ZAP User-Id of
/// its sender (CURVE only); `None` when none waits. Frames past the third
/// are read and discarded, so the broker's own copy stays small (such a
/// message then fails decoding). This does not bound memory: libzmq hands
/// over a multipart message only once its last frame has arrived and
/// buffers every frame until then, with no limit on their number
/// (`ZMQ_MAXMSGSIZE` bounds each frame). A sender that never ends its
/// message grows the broker until it dies; see docs/SECURITY.md.
pub(super) fn recv(socket: &zmq::Socket, curve: bool) -> Result<Option<Received>, BrokerError> {
    let mut first = zmq::Message::new();
    match socket.recv(&mut first, zmq::DONTWAIT) {
        Ok(()) => {}
        Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => return Ok(None),
        Err(source) => return Err(BrokerError::Zmq { during: "receiving", source }),
    }
    // Without CURVE there is no User-Id: skip the lookup (a syscall-free
    // but not free property query per message).
    let user = if curve { first.gets("User-Id").map(str::to_owned) } else { None };
    let mut more = first.get_more();
    let mut frames = vec![first];
    while more {
        let part = socket.recv_msg(0).map_err(zmq_err("receiving"))?;
        more = part.get_more();
        if frames.len() < FRAMES_KEPT_MAX {
            frames.push(part);
        }
    }
    Ok(Some((frames, user)))
}

/// Publishes `out` on the fanout: the topic frame (short: copied into the
/// message itself, no allocation), then the body handed to libzmq without a
/// copy (`zmq::Message` from a `Vec` takes the buffer and frees it when
/// sent; a borrowed slice would be copied into a new message).
pub(super) fn publish(fanout: &zmq::Socket, out: crate::core::Outbound) -> Result<(), BrokerError> {
    fanout.send(&*out.topic, zmq::SNDMORE).map_err(zmq_err("publishing"))?;
    fanout.send(out.body, 0).map_err(zmq_err("publishing"))
}
