//! One run of `send` or `bench`: a connected [`Producer`], the answers it
//! has taken so far, and the waits between sending.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use orderly_producer::{Order, Outcome, Producer, ProducerError};

use crate::flags::SessionSettings;
use crate::progress::{Progress, Tally};

/// Orders the CLI hands to the library in one batch (one outbox commit):
/// enough to amortise an fsync, small enough to keep the pipe moving.
const BATCH_ORDERS_MAX: usize = 256;
/// Longest wait for input or answers before the loop looks around again
/// (signals, resends, progress).
pub(crate) const IDLE_POLL: Duration = Duration::from_millis(50);

/// Sends orders through the producer and collects the answers. Gives up
/// when no answer arrives for `timeout`.
pub(crate) struct Session<'a> {
    pub(crate) producer: Producer,
    pub(crate) timeout: Duration,
    /// Orders handed to the library at once: [`BATCH_ORDERS_MAX`], at most
    /// the window.
    pub(crate) batch_orders_max: usize,
    pub(crate) tally: Tally,
    confirmed_log: Option<File>,
    pub(crate) progress: Progress,
    pub(crate) stop: &'a AtomicBool,
    last_answer: Instant,
    pub(crate) started: Instant,
}

impl<'a> Session<'a> {
    pub(crate) fn start(
        settings: SessionSettings,
        confirmed_log: Option<File>,
        stop: &'a AtomicBool,
    ) -> anyhow::Result<Session<'a>> {
        let batch_orders_max = BATCH_ORDERS_MAX.min(settings.producer.outbox_orders_max);
        let producer = Producer::connect(settings.producer)?;
        let progress = Progress::new();
        if producer.recovered() > 0 {
            let dir = producer.outbox_dir().map(|dir| dir.display().to_string()).unwrap_or_default();
            progress.println(&format!("resending {} orders recovered from the outbox {dir}", producer.recovered()));
        }
        // Recovered orders are this run's to see answered.
        let tally = Tally { sent: producer.recovered(), ..Tally::default() };
        Ok(Session {
            producer,
            timeout: settings.answer_timeout,
            batch_orders_max,
            tally,
            confirmed_log,
            progress,
            stop,
            last_answer: Instant::now(),
            started: Instant::now(),
        })
    }

    fn take_answers(&mut self) -> anyhow::Result<()> {
        for answer in self.producer.poll_receipts() {
            self.last_answer = Instant::now();
            match answer.outcome {
                Outcome::Confirmed => {
                    self.tally.confirmed += 1;
                    self.tally.latencies_us.push(u64::try_from(answer.latency.as_micros()).unwrap_or(u64::MAX));
                    if let Some(log) = &mut self.confirmed_log {
                        writeln!(log, "{}", answer.order_id).context("cannot write the confirmed log")?;
                    }
                }
                Outcome::Rejected(error) => self.tally.rejected.push((answer.order_id, error.reason.to_string())),
            }
        }
        self.progress.update(&self.tally, self.producer.pending(), self.started);
        Ok(())
    }

    /// Sends a batch; false if the window stayed full for the timeout.
    pub(crate) fn send(&mut self, batch: Vec<Order>) -> anyhow::Result<bool> {
        // Recovered from the outbox (or repeated in the input) and still
        // awaiting its answer: it is already being sent. Repeats within the
        // batch through a set (a scan of the batch so far was quadratic:
        // 11 % of the bench producer's CPU at 256 orders a batch).
        let keep: Vec<bool> = {
            let mut seen = std::collections::HashSet::with_capacity(batch.len());
            batch.iter().map(|o| !self.producer.is_pending(&o.id) && seen.insert(o.id.as_str())).collect()
        };
        let mut fresh = Vec::with_capacity(batch.len());
        for (order, keep) in batch.into_iter().zip(keep) {
            if keep {
                fresh.push(order);
            } else {
                self.tally.already_pending += 1;
            }
        }
        if fresh.is_empty() {
            return Ok(true);
        }
        let count = fresh.len() as u64;
        match self.producer.send_batch(fresh) {
            Ok(_) => {}
            Err(ProducerError::Backpressure { .. } | ProducerError::BrokerBusy { .. }) => return Ok(false),
            Err(error) => return Err(error.into()),
        }
        self.tally.sent += count;
        self.take_answers()?;
        Ok(true)
    }

    /// Takes answers and does what is due while there is nothing to send.
    pub(crate) fn idle(&mut self) -> anyhow::Result<()> {
        self.producer.poll(Duration::ZERO)?;
        self.take_answers()
    }

    /// Takes answers (and resends what is due) until `deadline`, so a paced
    /// sender sees each answer when it arrives, not when it next sends. The
    /// wait wakes up to about a millisecond late (poll granularity). False
    /// if interrupted.
    pub(crate) fn wait_until(&mut self, deadline: Instant) -> anyhow::Result<bool> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(true);
            }
            self.producer.poll((deadline - now).min(IDLE_POLL))?;
            self.take_answers()?;
        }
    }

    /// Waits for every answer; false if none came for the timeout.
    pub(crate) fn finish(&mut self) -> anyhow::Result<bool> {
        self.last_answer = Instant::now();
        while self.producer.pending() > 0 {
            if self.last_answer.elapsed() >= self.timeout {
                return Ok(false);
            }
            self.producer.poll(IDLE_POLL)?;
            self.take_answers()?;
        }
        Ok(true)
    }
}
