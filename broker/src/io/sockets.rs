//! The broker's three ZeroMQ sockets: every option set on purpose, and
//! bounded receiving.

use orderly_common::limits::{CONTROL_FRAME_BYTES_MAX, INTAKE_FRAME_BYTES_MAX, SOCKET_HWM_DEFAULT, SOCKET_LINGER_MS};
use orderly_common::Endpoint;
use orderly_security::zap::{DOMAIN_CONTROL, DOMAIN_FANOUT, DOMAIN_INTAKE};

use super::config::BrokerConfig;
use super::error::{zmq_err, BrokerError};

/// Frames of one received message kept (the protocol uses two).
const FRAMES_KEPT_MAX: usize = 3;

pub(super) struct Sockets {
    pub intake: zmq::Socket,
    pub fanout: zmq::Socket,
    pub control: zmq::Socket,
}

pub(super) fn bind_sockets(context: &zmq::Context, config: &BrokerConfig) -> Result<Sockets, BrokerError> {
    let intake = context.socket(zmq::PULL).map_err(zmq_err("creating the intake socket"))?;
    intake.set_rcvhwm(SOCKET_HWM_DEFAULT).map_err(zmq_err("setting RCVHWM"))?;
    intake.set_maxmsgsize(INTAKE_FRAME_BYTES_MAX as i64).map_err(zmq_err("setting MAXMSGSIZE"))?;
    let fanout = context.socket(zmq::PUB).map_err(zmq_err("creating the fanout socket"))?;
    // Credits bound dispatches per worker, so the queue to a subscriber stays
    // far below this; a drop at the mark is repaired by redelivery.
    fanout.set_sndhwm(SOCKET_HWM_DEFAULT * 10).map_err(zmq_err("setting SNDHWM"))?;
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

/// One received message: its frames and the sender's ZAP User-Id.
pub(super) type Received = (Vec<zmq::Message>, Option<String>);

/// Receives one whole message without blocking, with the ZAP User-Id of
/// its sender (CURVE only); `None` when none waits. Frames past the third
/// are read and discarded, so a message of a million frames cannot make
/// the broker hold them (such a message then fails decoding).
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
