//! What the core records ([`Event`], [`Snapshot`]) and what it wants
//! published ([`Outbound`], [`Fill`]).

use std::sync::Arc;

use orderly_common::protocol::{dispatch_body_bytes, encode_dispatch, DispatchesEncoder, RejectReason};
use orderly_common::OrderKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::ByteBuf;

use super::{Millis, Payload, PayloadRef};

/// A change of order state: what the journal records and replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A partial order was opened by Begin.
    Begun { key: OrderKey, at_ms: Millis },
    /// One item of a partial order arrived. The key is the partial order's
    /// own, shared (recorded as a key, as ever).
    ItemStored {
        #[serde(with = "shared_key")]
        key: Arc<OrderKey>,
        seq: u32,
        data: ByteBuf,
    },
    /// Finish arrived and every item 0..count is present: the order is
    /// complete and pending.
    Sealed {
        key: OrderKey,
        count: u32,
        /// When (Unix ms; 0 in journals older than 0.3).
        #[serde(default)]
        at_unix_ms: u64,
    },
    /// A whole order arrived in one `items` message: complete and pending,
    /// with its items, in one record (no Begun/ItemStored before it). The
    /// items are the order's own payload, shared (recorded as a list of
    /// byte strings, as ever).
    Accepted {
        key: OrderKey,
        items: Payload,
        /// When (Unix ms; 0 in journals older than 0.3).
        #[serde(default)]
        at_unix_ms: u64,
    },
    /// A partial order was discarded and the producer told why.
    Dropped { key: OrderKey, reason: RejectReason },
    /// A pending order was sent to a worker.
    Dispatched {
        key: OrderKey,
        /// The worker's id, shared with its entry (no copy per dispatch);
        /// recorded as a string.
        #[serde(with = "shared_str")]
        worker: Arc<str>,
        attempt: u32,
    },
    /// A worker acknowledged the order: it is done and forgotten.
    Acked { key: OrderKey },
    /// An in-flight order goes back to the queue.
    Requeued {
        key: OrderKey,
        reason: String,
        /// The attempt did not count (the worker returned the order
        /// unrun, or never received it): the next dispatch reuses its
        /// number.
        #[serde(default)]
        refunded: bool,
        /// The order waits this long before its next dispatch (retry
        /// backoff); a replay restarts the wait in full from its own time.
        #[serde(default)]
        delay_ms: u64,
    },
    /// An order failed `max_attempts` times (or was refused for good).
    DeadLettered {
        key: OrderKey,
        reason: String,
        /// When (Unix ms; 0 in journals older than 0.3).
        #[serde(default)]
        at_unix_ms: u64,
    },
    /// The whole state of one live order, written when compaction copies it
    /// out of an old journal segment. Replay replaces whatever it knew of
    /// the order with this; live, it changes nothing.
    Restored { key: OrderKey, snapshot: Snapshot },
    /// An operator sent a dead letter back to the queue with fresh attempts.
    Revived { key: OrderKey },
    /// An acknowledged order's key left the dedup window.
    Forgotten { key: OrderKey },
    /// An operator deleted a dead letter (`dlq delete`): it is gone, and
    /// its key is remembered for the dedup window like an acknowledged
    /// order's, so a late resend is confirmed, not processed.
    Discarded { key: OrderKey },
    /// Several whole orders arrived in one `orders` message (since 0.4):
    /// each complete and pending, as if each were an `Accepted`, in one
    /// record. A journal holding one cannot be replayed by an older broker
    /// (it names the record it does not understand and refuses to start).
    AcceptedBatch { orders: Vec<AcceptedOrder>, at_unix_ms: u64 },
}

/// A shared string (`Arc<str>`) recorded as a plain string, so the bytes
/// are those of a `String` (serde's `rc` feature would do the same for every
/// `Rc` and `Arc` of the build).
mod shared_str {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(deserializer).map(Arc::from)
    }
}

/// A shared key (`Arc<OrderKey>`) recorded as the key itself.
mod shared_key {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Arc<OrderKey>, serializer: S) -> Result<S::Ok, S::Error> {
        OrderKey::serialize(value, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<OrderKey>, D::Error> {
        OrderKey::deserialize(deserializer).map(Arc::new)
    }
}

/// One order of an [`Event::AcceptedBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedOrder {
    pub key: OrderKey,
    /// Shared with the order, as in [`Event::Accepted`].
    pub items: Payload,
}

impl Event {
    /// The order whose whole payload this event's record holds: an
    /// `Accepted`, or a `Restored` copy of a sealed order.
    pub fn payload_key(&self) -> Option<&OrderKey> {
        match self {
            Event::Accepted { key, .. } | Event::Restored { key, snapshot: Snapshot::Sealed { .. } } => Some(key),
            _ => None,
        }
    }

    /// Calls `f` for every order whose whole payload this event's record
    /// holds: the one of [`Event::payload_key`], or each of a batch.
    pub fn for_each_payload_key(&self, mut f: impl FnMut(&OrderKey)) {
        match self {
            Event::AcceptedBatch { orders, .. } => orders.iter().for_each(|o| f(&o.key)),
            other => other.payload_key().into_iter().for_each(f),
        }
    }

    /// The items of `key` in this event's record, if it holds its whole
    /// payload (see [`Event::for_each_payload_key`]), to take.
    pub fn payload_of_mut(&mut self, key: &OrderKey) -> Option<&mut Payload> {
        match self {
            Event::AcceptedBatch { orders, .. } => orders.iter_mut().find(|o| &o.key == key).map(|o| &mut o.items),
            other if other.payload_key() == Some(key) => other.payload_mut(),
            _ => None,
        }
    }

    /// The items of such an event (see [`Event::payload_key`]).
    pub fn payload(&self) -> Option<&Payload> {
        match self {
            Event::Accepted { items, .. } | Event::Restored { snapshot: Snapshot::Sealed { items, .. }, .. } => {
                Some(items)
            }
            _ => None,
        }
    }

    /// [`Event::payload`], to fill in or take.
    pub fn payload_mut(&mut self) -> Option<&mut Payload> {
        match self {
            Event::Accepted { items, .. } | Event::Restored { snapshot: Snapshot::Sealed { items, .. }, .. } => {
                Some(items)
            }
            _ => None,
        }
    }
}

/// One live order, as compaction copies it forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Snapshot {
    Partial {
        items: Vec<(u32, ByteBuf)>,
    },
    Sealed {
        items: Payload,
        attempts: u32,
        dead: Option<String>,
        /// Left of its retry delay when copied (0: none).
        #[serde(default)]
        retry_in_ms: u64,
        /// Unix ms; 0 when unknown.
        #[serde(default)]
        first_seen_unix_ms: u64,
        /// Unix ms; 0 when unknown or not dead.
        #[serde(default)]
        dead_since_unix_ms: u64,
        /// The last failure's reason, if it failed before.
        #[serde(default)]
        last_reason: Option<String>,
    },
    /// Acknowledged at `at_ms`; remembered for the dedup window.
    Acked {
        at_ms: Millis,
    },
}

/// A message the broker wants published on its fanout socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Shared with the worker's entry for dispatches (no copy per message).
    pub topic: Arc<[u8]>,
    /// Empty when `fill` or `batch` is set.
    pub body: Vec<u8>,
    /// A dispatch whose items are only in the journal: the IO loop reads
    /// them and encodes the body ([`Outbound::fill_with`]).
    pub fill: Option<Fill>,
    /// A `dispatches` message some of whose orders are only in the
    /// journal: its entries, in order, to encode once those are read
    /// ([`Outbound::fill_with`]). Empty otherwise. Since 0.5.
    pub batch: Vec<BatchEntry>,
}

/// One order of a `dispatches` message waiting for the journal (see
/// [`Outbound::batch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchEntry {
    /// Its dispatch body, encoded from RAM.
    Encoded(Vec<u8>),
    /// Its items are to be read from the journal.
    Fill(Fill),
}

impl Outbound {
    pub fn new(topic: impl Into<Arc<[u8]>>, body: Vec<u8>) -> Self {
        Outbound { topic: topic.into(), body, fill: None, batch: Vec::new() }
    }

    /// Whether the body still waits for items from the journal.
    pub fn needs_fill(&self) -> bool {
        self.fill.is_some() || !self.batch.is_empty()
    }

    /// Encodes the body of a dispatch or batch whose items are (partly)
    /// only in the journal: `read` returns the items a [`Fill`] names.
    /// Nothing to do for any other message.
    pub fn fill_with<E>(&mut self, mut read: impl FnMut(&Fill) -> Result<Payload, E>) -> Result<(), E> {
        if let Some(fill) = self.fill.take() {
            let items = read(&fill)?;
            self.body = encode_dispatch(&fill.key, fill.attempt, fill.attempt > 1, &items);
        }
        if !self.batch.is_empty() {
            let entries = std::mem::take(&mut self.batch);
            // All read first, so the message's buffer is sized once.
            let read: Vec<Option<Payload>> = entries
                .iter()
                .map(|entry| match entry {
                    BatchEntry::Encoded(_) => Ok(None),
                    BatchEntry::Fill(fill) => read(fill).map(Some),
                })
                .collect::<Result<_, E>>()?;
            let bytes = entries
                .iter()
                .zip(&read)
                .map(|(entry, items)| match (entry, items) {
                    (BatchEntry::Encoded(body), _) => body.len(),
                    (BatchEntry::Fill(fill), items) => dispatch_body_bytes((&fill.key).into(), items_read(items)),
                })
                .sum();
            let mut encoder = DispatchesEncoder::new(entries.len(), bytes);
            for (entry, items) in entries.iter().zip(&read) {
                match entry {
                    BatchEntry::Encoded(body) => encoder.push_encoded(body),
                    BatchEntry::Fill(fill) => {
                        encoder.push(&fill.key, fill.attempt, fill.attempt > 1, items_read(items))
                    }
                }
            }
            self.body = encoder.finish();
        }
        Ok(())
    }
}

/// The items read for a [`BatchEntry::Fill`].
fn items_read(items: &Option<Payload>) -> &Payload {
    items.as_ref().expect("read for every entry to fill")
}

/// A dispatch to encode from the journal (see [`Outbound::fill`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    pub key: OrderKey,
    pub attempt: u32,
    pub from: PayloadRef,
}
