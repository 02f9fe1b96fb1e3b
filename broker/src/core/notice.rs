//! [`Notice`]: what the broker tells its operator (the IO loop logs them).
//! Not state: nothing is recorded or replayed, and a notice no one polls
//! costs a bounded queue.

use orderly_common::OrderKey;

use super::Core;

/// Notices kept for [`Core::poll_notice`] at most; beyond it they are
/// counted and reported as one [`Notice::Omitted`].
pub const NOTICES_QUEUED_MAX: usize = 4096;

/// Why the broker stopped counting on a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostWhy {
    /// It missed its heartbeats.
    Silence,
    /// It came back with another incarnation.
    Restart,
    /// It said bye.
    Bye,
}

impl LostWhy {
    pub fn as_str(self) -> &'static str {
        match self {
            LostWhy::Silence => "missed its heartbeats",
            LostWhy::Restart => "restarted",
            LostWhy::Bye => "said bye",
        }
    }
}

/// Something an operator wants to see in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A worker completed its welcome: it is sent orders from now on.
    WorkerJoined {
        worker: String,
        capacity: u32,
    },
    /// A worker is gone; the orders it held went back to the queue.
    WorkerLost {
        worker: String,
        why: LostWhy,
        requeued: usize,
    },
    /// A worker's handler cannot run: it is sent nothing until it recovers.
    WorkerBroken {
        worker: String,
        reason: String,
    },
    WorkerRecovered {
        worker: String,
    },
    /// An order was dead-lettered.
    DeadLettered {
        key: OrderKey,
        attempts: u32,
        reason: String,
    },
    /// This many notices did not fit in the queue.
    Omitted {
        count: u64,
    },
}

impl Core {
    /// The next notice for the operator's log, oldest first.
    pub fn poll_notice(&mut self) -> Option<Notice> {
        if let Some(notice) = self.notices.pop_front() {
            return Some(notice);
        }
        let count = std::mem::take(&mut self.notices_omitted);
        (count > 0).then_some(Notice::Omitted { count })
    }

    pub(super) fn notify(&mut self, notice: Notice) {
        if self.notices.len() < NOTICES_QUEUED_MAX {
            self.notices.push_back(notice);
        } else {
            self.notices_omitted += 1;
        }
    }
}
