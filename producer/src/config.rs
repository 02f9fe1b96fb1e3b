//! How a [`Producer`](crate::Producer) connects, resends and bounds its
//! outbox.

use std::path::PathBuf;
use std::time::Duration;

use orderly_common::ids::validate_peer_id;
use orderly_common::limits::ORDER_BYTES_MAX;
use orderly_common::members::Members;
use orderly_common::Endpoint;

use crate::core::{millis, OutboxConfig};
use crate::error::ProducerError;
use crate::limits::{
    ANSWERS_KEPT_MAX_DEFAULT, BATCH_BYTES_MAX, BATCH_LINGER_DEFAULT, BATCH_LINGER_MAX, CONFIRM_TIMEOUT_DEFAULT,
    HANDSHAKE_TIMEOUT_DEFAULT, OUTBOX_BYTES_MAX_DEFAULT, OUTBOX_DISK_FACTOR_MAX, OUTBOX_ORDERS_MAX_DEFAULT,
    OUTBOX_SEGMENT_BYTES_TARGET, RESEND_BACKOFF_MAX_DEFAULT, SEND_TIMEOUT_DEFAULT, TRANSMIT_RETRY_DELAY,
};

/// Where and who to connect as, and the producer's timeouts and bounds.
/// [`ProducerConfig::new`] fills in the defaults; change fields as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// This producer's id (`[A-Za-z0-9._-]`, 1–64 bytes). With the order id
    /// it forms the key the broker deduplicates on, so a producer that
    /// restarts must keep its id to have its resends recognised.
    pub producer: String,
    /// The broker's intake endpoint (PUSH connects there).
    pub intake: Endpoint,
    /// The broker's fanout endpoint (SUB connects there, topic `p/<id>/`).
    pub fanout: Endpoint,
    /// A group of brokers instead of one ([`ProducerConfig::with_members`]):
    /// the SUB connects to every member's fanout, and orders go to the
    /// intake of the member the heartbeats announce as leader, following
    /// it when it changes. `intake` and `fanout` are then unused.
    pub members: Option<Members>,
    /// How long `connect` waits for the broker's Welcome.
    pub handshake_timeout: Duration,
    /// How long sending waits for room in a full outbox before it fails
    /// with [`ProducerError::Backpressure`].
    pub send_timeout: Duration,
    /// How long an order may wait for its answer before it is sent again.
    pub confirm_timeout: Duration,
    /// Cap of the doubling wait between resends (at least `confirm_timeout`).
    pub resend_backoff_max: Duration,
    /// Orders the outbox holds at most (sent, not yet answered).
    pub outbox_orders_max: usize,
    /// Item bytes the outbox holds at most.
    pub outbox_bytes_max: u64,
    /// Keep the outbox on disk in this directory (an `orderly-journal`
    /// journal), so unanswered orders survive a crash and are resent by the
    /// next `connect`. One producer per directory (it is locked).
    pub outbox_dir: Option<PathBuf>,
    /// Answers received but not yet collected, at most; beyond it the
    /// oldest is dropped and counted in [`Stats::answers_dropped`](crate::Stats).
    pub answers_kept_max: usize,
    /// CURVE client keys (our key pair and the broker's public key);
    /// `None` is plaintext.
    pub curve: Option<orderly_security::keys::CurveClient>,
    /// Send a whole order's items packed into as few `items` frames as fit
    /// (one, for orders up to 256 KiB): far fewer messages, and a whole
    /// order in one frame is one journal record at the broker. `false`
    /// sends Begin, one Item per item, and Finish. Streams
    /// ([`Producer::begin`](crate::Producer::begin)) always send items one
    /// by one, as they come.
    pub pack_items: bool,
    /// With `pack_items`, several whole orders due together go in one
    /// `orders` message of at most this many bytes (items, ids and
    /// framing), when the broker announced it takes them (0.4 and later;
    /// older brokers get `items` frames). An order larger goes alone. 0:
    /// never batch. At most [`BATCH_BYTES_MAX`] (the default).
    pub batch_bytes_max: usize,
    /// How long a batch that is not full may wait for more orders while
    /// orders keep coming (Kafka's `linger.ms`); a lone order after a quiet
    /// spell goes at once. Default 0: batch only what is at hand. At most
    /// [`BATCH_LINGER_MAX`].
    pub linger: Duration,
}

impl ProducerConfig {
    /// A configuration with the defaults: handshake 10 s, send timeout 30 s,
    /// confirm timeout 5 s, backoff cap 60 s, outbox 10,000 orders and
    /// 256 MiB, in memory only.
    pub fn new(producer: impl Into<String>, intake: Endpoint, fanout: Endpoint) -> Self {
        ProducerConfig {
            producer: producer.into(),
            intake,
            fanout,
            members: None,
            handshake_timeout: HANDSHAKE_TIMEOUT_DEFAULT,
            send_timeout: SEND_TIMEOUT_DEFAULT,
            confirm_timeout: CONFIRM_TIMEOUT_DEFAULT,
            resend_backoff_max: RESEND_BACKOFF_MAX_DEFAULT,
            outbox_orders_max: OUTBOX_ORDERS_MAX_DEFAULT,
            outbox_bytes_max: OUTBOX_BYTES_MAX_DEFAULT,
            outbox_dir: None,
            answers_kept_max: ANSWERS_KEPT_MAX_DEFAULT,
            pack_items: true,
            batch_bytes_max: BATCH_BYTES_MAX,
            linger: BATCH_LINGER_DEFAULT,
            curve: None,
        }
    }

    /// Like [`ProducerConfig::new`], for a group of brokers; `intake` and
    /// `fanout` are the first member's (unused).
    pub fn with_members(producer: impl Into<String>, members: Members) -> Self {
        let first = members.iter().next().expect("a group has a member").clone();
        ProducerConfig { members: Some(members), ..ProducerConfig::new(producer, first.intake, first.fanout) }
    }

    /// Checks the fields and how they relate; `Producer::connect` calls it.
    pub fn validate(&self) -> Result<(), ProducerError> {
        validate_peer_id("producer id", &self.producer).map_err(ProducerError::Id)?;
        let invalid = |reason: String| Err(ProducerError::Config(reason));
        for (name, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("send_timeout", self.send_timeout),
            ("confirm_timeout", self.confirm_timeout),
        ] {
            if value < Duration::from_millis(1) {
                return invalid(format!("{name} is {value:?}; it must be at least 1 ms"));
            }
        }
        if self.resend_backoff_max < self.confirm_timeout {
            return invalid(format!(
                "resend_backoff_max ({:?}) is below confirm_timeout ({:?})",
                self.resend_backoff_max, self.confirm_timeout
            ));
        }
        if self.outbox_orders_max == 0 || self.outbox_bytes_max == 0 || self.answers_kept_max == 0 {
            return invalid("outbox_orders_max, outbox_bytes_max and answers_kept_max must be positive".to_string());
        }
        if self.batch_bytes_max > BATCH_BYTES_MAX {
            return invalid(format!(
                "batch_bytes_max is {}; it must be at most {BATCH_BYTES_MAX} (0 turns batching off)",
                self.batch_bytes_max
            ));
        }
        if self.linger > BATCH_LINGER_MAX {
            return invalid(format!("linger is {:?}; it must be at most {BATCH_LINGER_MAX:?}", self.linger));
        }
        Ok(())
    }

    /// The outbox core's view of these settings.
    pub(crate) fn outbox_config(&self) -> OutboxConfig {
        OutboxConfig {
            confirm_timeout_ms: millis(self.confirm_timeout),
            resend_backoff_max_ms: millis(self.resend_backoff_max),
            orders_max: self.outbox_orders_max,
            bytes_max: self.outbox_bytes_max,
            transmit_retry_ms: millis(TRANSMIT_RETRY_DELAY),
        }
    }

    /// Bytes the on-disk outbox may hold before compaction copies forward
    /// whatever the live share: the live data it may hold, a factor of
    /// slack for dead records, and two segments (the active one and one
    /// being compacted).
    pub(crate) fn outbox_disk_budget_bytes(&self) -> u64 {
        let live_max = self.outbox_bytes_max.max(ORDER_BYTES_MAX as u64);
        live_max.saturating_mul(OUTBOX_DISK_FACTOR_MAX).saturating_add(2 * OUTBOX_SEGMENT_BYTES_TARGET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ProducerConfig {
        let endpoint: Endpoint = "tcp://127.0.0.1:5570".parse().unwrap();
        ProducerConfig::new("p-1", endpoint.clone(), endpoint)
    }

    #[test]
    fn defaults_are_valid() {
        assert!(config().validate().is_ok());
        assert_eq!(config().confirm_timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_settings_are_named() {
        let bad_id = ProducerConfig { producer: "a/b".into(), ..config() };
        assert!(matches!(bad_id.validate(), Err(ProducerError::Id(_))));
        let zero = ProducerConfig { confirm_timeout: Duration::ZERO, ..config() };
        assert!(zero.validate().unwrap_err().to_string().contains("confirm_timeout"));
        let backoff = ProducerConfig { resend_backoff_max: Duration::from_secs(1), ..config() };
        assert!(backoff.validate().unwrap_err().to_string().contains("resend_backoff_max"));
        let empty = ProducerConfig { outbox_orders_max: 0, ..config() };
        assert!(empty.validate().is_err());
        let batch = ProducerConfig { batch_bytes_max: BATCH_BYTES_MAX + 1, ..config() };
        assert!(batch.validate().unwrap_err().to_string().contains("batch_bytes_max"));
        let linger = ProducerConfig { linger: Duration::from_secs(1), ..config() };
        assert!(linger.validate().unwrap_err().to_string().contains("linger"));
    }
}
