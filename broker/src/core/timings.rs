//! How long orders wait, measured by the core on its own input times (no
//! clock read): [`Timings`] holds fixed-bucket [`Histogram`]s that cost a
//! few comparisons per order and never grow. The IO loop renders them on
//! `/metrics`, beside the ones it measures itself (journal commits,
//! confirm latency), which use the same buckets.

use super::Millis;

/// Upper bounds of the latency histograms' buckets, in microseconds: from
/// 100 µs (a lazy commit) to 60 s (a handler near its ack timeout), about
/// ×2.5 apart. Times the core measures have millisecond resolution: one
/// under 1 ms reads 0 and lands in the first bucket.
pub const LATENCY_BUCKETS_US: [u64; 18] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

const _: () = {
    let mut i = 1;
    while i < LATENCY_BUCKETS_US.len() {
        assert!(LATENCY_BUCKETS_US[i - 1] < LATENCY_BUCKETS_US[i], "bucket bounds ascend");
        i += 1;
    }
};

/// A latency histogram over [`LATENCY_BUCKETS_US`]: observations per
/// bucket (the last slot is above every bound), their count and sum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: [u64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: u64,
}

impl Histogram {
    pub fn observe_us(&mut self, us: u64) {
        let bucket = LATENCY_BUCKETS_US.partition_point(|&bound| bound < us);
        self.counts[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    pub fn observe_ms(&mut self, ms: Millis) {
        self.observe_us(ms.saturating_mul(1000));
    }

    /// `times` observations of the same value (the orders of one message).
    pub fn observe_us_times(&mut self, us: u64, times: u64) {
        let bucket = LATENCY_BUCKETS_US.partition_point(|&bound| bound < us);
        self.counts[bucket] += times;
        self.sum_us = self.sum_us.saturating_add(us.saturating_mul(times));
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    /// Observations at or below each bound of [`LATENCY_BUCKETS_US`], in
    /// order (Prometheus' cumulative buckets; `+Inf` is [`Self::count`]).
    pub fn cumulative(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        LATENCY_BUCKETS_US
            .iter()
            .zip(self.counts.iter().scan(0, |total, n| {
                *total += n;
                Some(*total)
            }))
            .map(|(&bound, total)| (bound, total))
    }
}

/// What the core measures of every order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timings {
    /// Sealed (or requeued, or past its retry delay, or revived) until
    /// dispatched.
    pub queue_wait: Histogram,
    /// Dispatched until the worker's ack.
    pub handler: Histogram,
}

/// The confirms of one turn, for the loop's confirm-latency histogram:
/// how many orders, and when the message that completed the first of them
/// was read (all of a turn's input shares one time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfirmTiming {
    pub read_ms: Millis,
    pub orders: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let mut h = Histogram::default();
        h.observe_us(100); // on a bound: that bucket (le is inclusive)
        h.observe_us(101);
        h.observe_ms(60_000);
        h.observe_ms(61_000); // above every bound: only +Inf
        let cumulative: Vec<(u64, u64)> = h.cumulative().collect();
        assert_eq!(cumulative[0], (100, 1));
        assert_eq!(cumulative[1], (250, 2));
        assert_eq!(cumulative[LATENCY_BUCKETS_US.len() - 1], (60_000_000, 3));
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum_us(), 100 + 101 + 121_000_000);
        h.observe_us_times(1_000, 3);
        assert_eq!(h.count(), 7);
        assert_eq!(h.cumulative().nth(3), Some((1_000, 5)));
    }
}
