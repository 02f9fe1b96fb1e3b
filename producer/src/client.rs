//! The producer's connection to a broker: the only module with sockets and
//! a clock.

use std::time::{Duration, Instant};

use orderly_common::ids::{producer_topic, validate_peer_id, IdError};
use orderly_common::limits::{FANOUT_FRAME_BYTES_MAX, SOCKET_HWM_DEFAULT, SOCKET_LINGER_MS};
use orderly_common::protocol::{split_frames, Begin, FanoutMsg, Finish, IntakeMsg, Item};
use orderly_common::Endpoint;
use serde_bytes::ByteBuf;

use crate::core::{Micros, Receipt, Tracker};
use crate::orders::Order;

/// Where and who to connect as.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub producer: String,
    pub intake: Endpoint,
    pub fanout: Endpoint,
    /// How long one send may block at the high-water mark before it is
    /// reported as backpressure.
    pub send_timeout: Duration,
}

/// Failures a producer meets.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid producer id: {0}")]
    Id(#[from] IdError),
    #[error(
        "no answer from a broker at intake {intake} / fanout {fanout} within {waited:?}; is the broker running there?"
    )]
    NoBroker { intake: String, fanout: String, waited: Duration },
    #[error("backpressure: the broker accepted nothing for {0:?} (it is at a limit or not reading); try again later or raise --timeout")]
    Backpressure(Duration),
    #[error("ZeroMQ {during} failed: {source}")]
    Zmq { during: &'static str, source: zmq::Error },
}

fn zmq_err(during: &'static str) -> impl FnOnce(zmq::Error) -> ClientError {
    move |source| ClientError::Zmq { during, source }
}

/// A connected producer. Send orders with [`Client::send`], collect answers
/// with [`Client::poll`] and [`Client::next_receipt`].
pub struct Client {
    // Field order matters: sockets drop (and linger) before the context.
    push: zmq::Socket,
    sub: zmq::Socket,
    _context: zmq::Context,
    config: ClientConfig,
    topic: Vec<u8>,
    tracker: Tracker,
    started: Instant,
    /// Fanout messages that failed to decode.
    pub decode_errors: u64,
}

impl Client {
    /// Connects and waits (up to `handshake_timeout`) until the broker has
    /// proved that our subscription for confirms works.
    pub fn connect(config: ClientConfig, handshake_timeout: Duration) -> Result<Client, ClientError> {
        validate_peer_id("producer id", &config.producer)?;
        let context = zmq::Context::new();
        let push = context.socket(zmq::PUSH).map_err(zmq_err("creating the intake socket"))?;
        push.set_sndhwm(SOCKET_HWM_DEFAULT).map_err(zmq_err("setting SNDHWM"))?;
        // Queue only to completed connections, so a send blocks (and times
        // out as backpressure) rather than piling up for a missing broker.
        push.set_immediate(true).map_err(zmq_err("setting IMMEDIATE"))?;
        let timeout_ms = i32::try_from(config.send_timeout.as_millis()).unwrap_or(i32::MAX);
        push.set_sndtimeo(timeout_ms).map_err(zmq_err("setting SNDTIMEO"))?;
        let sub = context.socket(zmq::SUB).map_err(zmq_err("creating the fanout socket"))?;
        sub.set_rcvhwm(SOCKET_HWM_DEFAULT).map_err(zmq_err("setting RCVHWM"))?;
        sub.set_maxmsgsize(FANOUT_FRAME_BYTES_MAX as i64).map_err(zmq_err("setting MAXMSGSIZE"))?;
        let topic = producer_topic(&config.producer);
        sub.set_subscribe(&topic).map_err(zmq_err("subscribing"))?;
        for socket in [&push, &sub] {
            socket.set_linger(SOCKET_LINGER_MS).map_err(zmq_err("setting LINGER"))?;
            socket.set_reconnect_ivl(100).map_err(zmq_err("setting RECONNECT_IVL"))?;
            socket.set_reconnect_ivl_max(5000).map_err(zmq_err("setting RECONNECT_IVL_MAX"))?;
        }
        push.connect(config.intake.as_str()).map_err(zmq_err("connecting to intake"))?;
        sub.connect(config.fanout.as_str()).map_err(zmq_err("connecting to fanout"))?;
        let mut client = Client {
            tracker: Tracker::new(config.producer.clone(), rand::random()),
            push,
            sub,
            _context: context,
            topic,
            config,
            started: Instant::now(),
            decode_errors: 0,
        };
        client.handshake(handshake_timeout)?;
        Ok(client)
    }

    fn handshake(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let deadline = Instant::now() + timeout;
        while !self.tracker.welcomed() {
            if Instant::now() >= deadline {
                return Err(ClientError::NoBroker {
                    intake: self.config.intake.to_string(),
                    fanout: self.config.fanout.to_string(),
                    waited: timeout,
                });
            }
            // Repeat the hello: one sent before our subscription reached the
            // broker gets a welcome we never see.
            let hello = self.tracker.hello();
            match self.push.send_multipart([self.topic.as_slice(), &hello.encode()], zmq::DONTWAIT) {
                Ok(()) | Err(zmq::Error::EAGAIN) => {}
                Err(source) => return Err(ClientError::Zmq { during: "sending hello", source }),
            }
            self.poll(Duration::from_millis(100))?;
        }
        Ok(())
    }

    fn now(&self) -> Micros {
        self.started.elapsed().as_micros() as Micros
    }

    fn send_msg(&self, msg: &IntakeMsg) -> Result<(), ClientError> {
        match self.push.send_multipart([self.topic.as_slice(), &msg.encode()], 0) {
            Ok(()) => Ok(()),
            Err(zmq::Error::EAGAIN) => Err(ClientError::Backpressure(self.config.send_timeout)),
            Err(source) => Err(ClientError::Zmq { during: "sending", source }),
        }
    }

    /// Sends one order (Begin, its items numbered from 0, Finish) and starts
    /// waiting for its answer.
    pub fn send(&mut self, order: &Order) -> Result<(), ClientError> {
        let producer = &self.config.producer;
        self.send_msg(&IntakeMsg::Begin(Begin { producer: producer.clone(), order: order.id.clone() }))?;
        for (seq, data) in order.items.iter().enumerate() {
            let item = Item {
                producer: producer.clone(),
                order: order.id.clone(),
                seq: seq as u32,
                data: ByteBuf::from(data.clone()),
            };
            self.send_msg(&IntakeMsg::Item(item))?;
        }
        let count = order.items.len() as u32;
        self.send_msg(&IntakeMsg::Finish(Finish { producer: producer.clone(), order: order.id.clone(), count }))?;
        let now = self.now();
        self.tracker.sent(&order.id, now);
        Ok(())
    }

    /// Waits up to `timeout` for broker messages and takes all that arrived.
    pub fn poll(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let mut items = [self.sub.as_poll_item(zmq::POLLIN)];
        match zmq::poll(&mut items, timeout.as_millis().min(i64::MAX as u128) as i64) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(source) => return Err(ClientError::Zmq { during: "poll", source }),
        }
        loop {
            let frames = match self.sub.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => return Ok(()),
                Err(source) => return Err(ClientError::Zmq { during: "receiving", source }),
            };
            match split_frames(&frames).and_then(|(_, body)| FanoutMsg::decode(body)) {
                Ok(msg) => {
                    let now = self.now();
                    self.tracker.handle_fanout(msg, now);
                }
                Err(_) => self.decode_errors += 1,
            }
        }
    }

    pub fn next_receipt(&mut self) -> Option<Receipt> {
        self.tracker.poll_receipt()
    }

    /// Orders sent and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.tracker.outstanding()
    }

    pub fn outstanding_ids(&self) -> Vec<String> {
        self.tracker.outstanding_ids()
    }
}
