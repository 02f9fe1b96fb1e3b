//! Typed errors of the producer library.
//!
//! Errors that wrap another (ZeroMQ, the journal) expose it as their
//! `source()` rather than repeating it in their message, so printing the
//! chain (`{:#}` with anyhow) shows each cause once.

use std::path::PathBuf;
use std::time::Duration;

use orderly_common::ids::IdError;
use orderly_common::protocol::RejectReason;
use orderly_journal::JournalError;

/// The broker refused an order, and why.
///
/// `reason` is a typed enum, so a caller can `match` it:
///
/// ```
/// use orderly_producer::{RejectError, RejectReason};
///
/// fn retry_later(error: &RejectError) -> bool {
///     match error.reason {
///         RejectReason::LimitReached { .. } | RejectReason::Expired { .. } => true,
///         RejectReason::Gap { .. } | RejectReason::TooLarge { .. } => false,
///         _ => false,
///     }
/// }
/// # let error = RejectError { order_id: "o-1".into(), reason: RejectReason::Gap { missing: 3 } };
/// # assert!(!retry_later(&error));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("order {order_id:?} rejected: {reason}")]
pub struct RejectError {
    /// The order's id.
    pub order_id: String,
    /// The broker's reason.
    pub reason: RejectReason,
}

/// Everything that can go wrong connecting, sending or waiting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    /// A `ProducerConfig` that cannot work.
    #[error("invalid producer configuration: {0}")]
    Config(String),

    /// The producer id is not a valid peer id.
    #[error("invalid producer id: {0}")]
    Id(IdError),

    /// The order (or item) breaks a limit or has a bad id; nothing was sent.
    #[error("invalid order {id:?}: {reason}")]
    InvalidOrder {
        /// The order's id.
        id: String,
        /// What is wrong.
        reason: String,
    },

    /// An order with this id is already in the outbox awaiting its answer.
    #[error("order {id:?} is already in the outbox awaiting an answer; order ids must be unique per producer")]
    DuplicateOrder {
        /// The order's id.
        id: String,
    },

    /// No broker answered the handshake.
    #[error(
        "no answer from a broker at intake {intake} / fanout {fanout} within {waited:?}; is the broker running there?"
    )]
    NoBroker {
        /// The intake endpoint tried.
        intake: String,
        /// The fanout endpoint tried.
        fanout: String,
        /// How long the handshake waited.
        waited: Duration,
    },

    /// Like [`ProducerError::NoBroker`], [`ProducerError::Backpressure`] or
    /// [`ProducerError::Unanswered`], but the broker said why: it announced
    /// `backpressure` (docs/PROTOCOL.md) — it is up and not reading intake
    /// (its disk is full, or it holds as many orders as it may). It resumes
    /// by itself; orders in the outbox stay there and are resent.
    #[error(
        "the broker is up but not taking orders: {reason}: {detail} (it said so while we waited {waited:?} {waiting_for}); \
         it resumes by itself when that clears — try again later"
    )]
    BrokerBusy {
        /// The announced reason, machine-readable: `disk_full`,
        /// `pending_orders`, `pending_bytes`, `partial_orders`,
        /// `partial_bytes`, or a newer one.
        reason: String,
        /// The broker's words, for people.
        detail: String,
        /// How long we waited.
        waited: Duration,
        /// What for: "for its welcome", "for room in the outbox", "for
        /// answers".
        waiting_for: &'static str,
        /// Orders in the outbox awaiting an answer.
        unanswered: usize,
    },

    /// The outbox stayed full for the whole send timeout: nothing was
    /// answered, so nothing could be added.
    #[error(
        "backpressure: the outbox stayed full for {waited:?} ({orders} orders and {bytes} bytes awaiting answers; \
         the bounds are {orders_max} orders and {bytes_max} bytes): the broker is at one of its limits and not \
         reading intake, or it is unreachable; try again later, or raise the timeout or the outbox bounds"
    )]
    Backpressure {
        /// How long the send waited for room.
        waited: Duration,
        /// Orders in the outbox.
        orders: usize,
        /// Item bytes in the outbox.
        bytes: u64,
        /// The outbox's order bound.
        orders_max: usize,
        /// The outbox's byte bound.
        bytes_max: u64,
    },

    /// `flush` (or `close`) timed out with orders still unanswered.
    #[error(
        "timed out after {waited:?} with {unanswered} orders unanswered: backpressure (the broker is at one of its \
         limits and not reading intake) or the broker is unreachable; they stay in the outbox and are resent"
    )]
    Unanswered {
        /// Orders still awaiting an answer.
        unanswered: usize,
        /// How long the flush waited.
        waited: Duration,
    },

    /// `Receipt::wait` timed out.
    #[error(
        "no answer for order {id:?} within {waited:?} ({attempts} attempts so far): backpressure or an unreachable \
         broker; it stays in the outbox and is resent"
    )]
    ReceiptTimeout {
        /// The order's id.
        id: String,
        /// How long the wait lasted.
        waited: Duration,
        /// Complete transmissions of the order so far.
        attempts: u32,
    },

    /// A receipt whose order is neither awaiting an answer nor answered
    /// with the answer still kept.
    #[error(
        "order {id:?} is not awaiting an answer and no answer for it is kept: it was already collected \
         (poll_receipts, wait), dropped as the oldest uncollected answer, or abandoned"
    )]
    UnknownReceipt {
        /// The order's id.
        id: String,
    },

    /// The broker rejected a streamed order before its Finish: its items
    /// are no longer accepted.
    #[error(transparent)]
    Rejected(#[from] RejectError),

    /// Another producer holds the on-disk outbox.
    #[error(
        "outbox directory {} is in use by another producer (its LOCK file is held): two producers cannot share an \
         outbox; give each its own outbox directory",
        dir.display()
    )]
    OutboxLocked {
        /// The outbox directory.
        dir: PathBuf,
    },

    /// The on-disk outbox failed (IO, corruption).
    #[error("on-disk outbox {}", dir.display())]
    Outbox {
        /// The outbox directory.
        dir: PathBuf,
        /// What the journal reported.
        #[source]
        source: JournalError,
    },

    /// A record of the on-disk outbox does not decode.
    #[error(
        "cannot read record {seq} of the outbox in {}: {detail}; it was written by an incompatible version or is \
         damaged",
        dir.display()
    )]
    OutboxRecord {
        /// The outbox directory.
        dir: PathBuf,
        /// The record's sequence number.
        seq: u64,
        /// The decoder's complaint.
        detail: String,
    },

    /// A ZeroMQ call failed.
    #[error("ZeroMQ: {during} failed")]
    Zmq {
        /// What was being done.
        during: &'static str,
        /// The ZeroMQ error.
        #[source]
        source: zmq::Error,
    },
}

impl ProducerError {
    /// True for the errors that mean "gave up waiting for the broker" (no
    /// broker, backpressure, unanswered orders): worth retrying later.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            ProducerError::NoBroker { .. }
                | ProducerError::BrokerBusy { .. }
                | ProducerError::Backpressure { .. }
                | ProducerError::Unanswered { .. }
                | ProducerError::ReceiptTimeout { .. }
        )
    }
}

pub(crate) fn zmq_error(during: &'static str) -> impl FnOnce(zmq::Error) -> ProducerError {
    move |source| ProducerError::Zmq { during, source }
}
