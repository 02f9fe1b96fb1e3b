//! What a send hands back ([`Receipt`]) and what the broker answers
//! ([`Outcome`], [`Answer`]).

use std::time::{Duration, Instant};

use crate::error::{ProducerError, RejectError};
use crate::io::Producer;
use crate::limits::POLL_SLICE;

/// The broker's answer to one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The broker sealed the order and made it durable: it will be
    /// delivered to a worker at least once.
    Confirmed,
    /// The broker refused the order; it will not be delivered.
    Rejected(RejectError),
}

impl Outcome {
    /// True for [`Outcome::Confirmed`].
    pub fn is_confirmed(&self) -> bool {
        matches!(self, Outcome::Confirmed)
    }

    /// `Ok` for a confirm, the typed rejection otherwise.
    pub fn into_result(self) -> Result<(), RejectError> {
        match self {
            Outcome::Confirmed => Ok(()),
            Outcome::Rejected(error) => Err(error),
        }
    }
}

/// An answer received for an order of this producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The order's id.
    pub order_id: String,
    /// Confirmed or rejected.
    pub outcome: Outcome,
    /// From the order's first complete transmission to its answer.
    pub latency: Duration,
    /// Complete transmissions of the order (1 = no resend was needed).
    pub attempts: u32,
}

impl Answer {
    /// `(order id, Ok | Err(reject))`, the answer as a pair.
    pub fn into_pair(self) -> (String, Result<(), RejectError>) {
        (self.order_id, self.outcome.into_result())
    }
}

/// Where an order stands, as seen through its [`Receipt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptState {
    /// In the outbox, awaiting an answer (resent as needed).
    Pending {
        /// Complete transmissions so far.
        attempts: u32,
    },
    /// Answered; the answer is still kept (not yet collected).
    Answered(Outcome),
    /// Neither pending nor with a kept answer: the answer was collected
    /// already (by `poll_receipts` or `wait`), or dropped as the oldest
    /// uncollected answer.
    Unknown,
}

/// A handle on a sent order: ask for its state, or wait for its answer.
///
/// A receipt is only the order's id: it borrows nothing, so it can be kept
/// while the producer sends more. Each answer is handed out once, to
/// whichever of [`Receipt::wait`] or [`Producer::poll_receipts`] takes it
/// first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Receipt {
    order_id: String,
}

impl Receipt {
    pub(crate) fn new(order_id: String) -> Self {
        Receipt { order_id }
    }

    /// The order's id.
    pub fn order_id(&self) -> &str {
        &self.order_id
    }

    /// The order's state now (does not poll the broker).
    pub fn state(&self, producer: &Producer) -> ReceiptState {
        producer.receipt_state(&self.order_id)
    }

    /// Waits up to `timeout` for the order's answer, polling the broker and
    /// resending due orders meanwhile, and takes the answer.
    ///
    /// Errors: [`ProducerError::ReceiptTimeout`] if no answer came (the
    /// order stays in the outbox and keeps being resent; wait again or
    /// `flush`), [`ProducerError::UnknownReceipt`] if its answer was already
    /// collected, and IO errors.
    pub fn wait(&self, producer: &mut Producer, timeout: Duration) -> Result<Outcome, ProducerError> {
        let started = Instant::now();
        loop {
            if let Some(answer) = producer.take_answer(&self.order_id) {
                return Ok(answer.outcome);
            }
            if !producer.is_pending(&self.order_id) {
                return Err(ProducerError::UnknownReceipt { id: self.order_id.clone() });
            }
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                let attempts = match producer.receipt_state(&self.order_id) {
                    ReceiptState::Pending { attempts } => attempts,
                    _ => 0,
                };
                return Err(ProducerError::ReceiptTimeout { id: self.order_id.clone(), waited: timeout, attempts });
            }
            producer.poll((timeout - elapsed).min(POLL_SLICE))?;
        }
    }
}

/// What a successful [`Producer::flush`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushReport {
    /// Answers received while flushing (they are kept for
    /// `poll_receipts`).
    pub answered: u64,
    /// Orders sent again while flushing.
    pub resent: u64,
    /// How long the flush took.
    pub waited: Duration,
}
