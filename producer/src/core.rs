//! The producer's sans-IO bookkeeping: which orders await a confirm, and
//! what the broker answered. Time is passed in (microseconds on the
//! caller's monotonic clock).

use std::collections::{HashMap, VecDeque};

use orderly_common::protocol::{FanoutMsg, IntakeMsg, ProducerHello, RejectReason};

/// Microseconds on the caller's monotonic clock.
pub type Micros = u64;

/// The broker's answer for one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// Sealed by the broker; `latency_us` runs from Finish sent to Confirm.
    Confirmed { id: String, latency_us: Micros },
    /// Refused, with the broker's reason.
    Rejected { id: String, reason: RejectReason },
}

/// Tracks the handshake and the orders awaiting an answer.
#[derive(Debug)]
pub struct Tracker {
    producer: String,
    nonce: u64,
    welcomed: bool,
    /// Order id → when its Finish was sent.
    outstanding: HashMap<String, Micros>,
    receipts: VecDeque<Receipt>,
    /// Answers for orders not outstanding (repeats of earlier answers).
    pub unexpected_answers: u64,
}

impl Tracker {
    pub fn new(producer: String, nonce: u64) -> Self {
        Tracker {
            producer,
            nonce,
            welcomed: false,
            outstanding: HashMap::new(),
            receipts: VecDeque::new(),
            unexpected_answers: 0,
        }
    }

    /// The Hello that asks the broker to prove our subscription works.
    pub fn hello(&self) -> IntakeMsg {
        IntakeMsg::Hello(ProducerHello { producer: self.producer.clone(), nonce: self.nonce })
    }

    /// True once the broker's Welcome reached us: confirms will too.
    pub fn welcomed(&self) -> bool {
        self.welcomed
    }

    /// Records that an order's Finish went out at `now`.
    pub fn sent(&mut self, id: &str, now: Micros) {
        self.outstanding.insert(id.to_owned(), now);
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Ids of the orders still awaiting an answer, sorted.
    pub fn outstanding_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.outstanding.keys().cloned().collect();
        ids.sort();
        ids
    }

    pub fn handle_fanout(&mut self, msg: FanoutMsg, now: Micros) {
        match msg {
            FanoutMsg::Welcome(w) if w.nonce == self.nonce => self.welcomed = true,
            FanoutMsg::Confirm(c) => match self.outstanding.remove(&c.order) {
                Some(sent) => {
                    self.receipts.push_back(Receipt::Confirmed { id: c.order, latency_us: now.saturating_sub(sent) })
                }
                None => self.unexpected_answers += 1,
            },
            FanoutMsg::Reject(r) => match self.outstanding.remove(&r.order) {
                Some(_) => self.receipts.push_back(Receipt::Rejected { id: r.order, reason: r.reason }),
                None => self.unexpected_answers += 1,
            },
            _ => {}
        }
    }

    pub fn poll_receipt(&mut self) -> Option<Receipt> {
        self.receipts.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderly_common::protocol::{Confirm, Reject, Welcome};

    #[test]
    fn handshake_needs_our_nonce() {
        let mut t = Tracker::new("p".into(), 7);
        t.handle_fanout(FanoutMsg::Welcome(Welcome { nonce: 8 }), 0);
        assert!(!t.welcomed());
        t.handle_fanout(FanoutMsg::Welcome(Welcome { nonce: 7 }), 0);
        assert!(t.welcomed());
    }

    #[test]
    fn confirms_and_rejects_become_receipts_once() {
        let mut t = Tracker::new("p".into(), 1);
        t.sent("a", 100);
        t.sent("b", 100);
        t.handle_fanout(FanoutMsg::Confirm(Confirm { order: "a".into() }), 350);
        t.handle_fanout(FanoutMsg::Confirm(Confirm { order: "a".into() }), 400);
        t.handle_fanout(FanoutMsg::Reject(Reject { order: "b".into(), reason: RejectReason::Gap { missing: 2 } }), 500);
        assert_eq!(t.poll_receipt(), Some(Receipt::Confirmed { id: "a".into(), latency_us: 250 }));
        assert_eq!(
            t.poll_receipt(),
            Some(Receipt::Rejected { id: "b".into(), reason: RejectReason::Gap { missing: 2 } })
        );
        assert_eq!(t.poll_receipt(), None);
        assert_eq!((t.outstanding(), t.unexpected_answers), (0, 1));
    }
}
