//! The orderly producer library: send orders to a broker and learn, for
//! each, whether the broker confirmed (sealed and made durable) or
//! rejected it — without losing any on the way.
//!
//! ```no_run
//! use std::time::Duration;
//! use orderly_producer::{Order, Outcome, Producer, ProducerConfig, RejectReason};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config =
//!     ProducerConfig::new("shop-1", "tcp://127.0.0.1:5570".parse()?, "tcp://127.0.0.1:5571".parse()?);
//! config.outbox_dir = Some("/var/lib/shop-1/outbox".into()); // survive crashes
//! let mut producer = Producer::connect(config)?;
//!
//! // A whole order...
//! producer.send(Order::new("order-1", vec![br#"{"sku": "A1", "qty": 2}"#.to_vec()]))?;
//! // ...or a streamed one.
//! let mut stream = producer.begin("order-2")?;
//! stream.item(br#"{"sku": "B7"}"#.to_vec())?;
//! stream.item(br#"{"sku": "C3"}"#.to_vec())?;
//! let receipt = stream.finish()?;
//!
//! match receipt.wait(&mut producer, Duration::from_secs(10))? {
//!     Outcome::Confirmed => println!("order-2 is durable"),
//!     Outcome::Rejected(e) if matches!(e.reason, RejectReason::LimitReached { .. }) => println!("retry later: {e}"),
//!     Outcome::Rejected(e) => println!("refused: {e}"),
//! }
//! producer.flush(Duration::from_secs(30))?;
//! for answer in producer.poll_receipts() {
//!     println!("{}: {:?}", answer.order_id, answer.outcome);
//! }
//! producer.close(Duration::from_secs(5))?;
//! # Ok(())
//! # }
//! ```
//!
//! # How it stays reliable
//!
//! Every order goes into an **outbox** ([`core::Outbox`]) before its first
//! message is sent, and stays there until the broker answers. An order
//! unanswered after the confirm timeout (5 s) is sent again — Begin, every
//! item, Finish — with the wait doubling up to 60 s. Resending is always
//! safe: the broker keys orders by (producer id, order id), confirms again
//! an order it already sealed, and fills a partial order's gaps.
//!
//! The outbox is bounded (10,000 orders, 256 MiB): when it is full, a send
//! waits for answers up to the send timeout and then fails with
//! [`ProducerError::Backpressure`] — a clear, timed error, never an
//! endless block.
//!
//! With [`ProducerConfig::outbox_dir`] the outbox is also kept on disk (an
//! `orderly-journal` journal): a `Sent` record is fsynced before an order's
//! first message, an `Answered` record follows its answer, and the next
//! [`Producer::connect`] resends every order sent but not answered, even
//! after a `kill -9`. The directory is locked: two producers cannot share
//! it ([`ProducerError::OutboxLocked`]).
//!
//! # Modules
//!
//! [`core`] is the sans-IO state (handshake, outbox) driven with a virtual
//! clock in tests; [`orders`] reads JSON-lines orders and generates
//! benchmark ones; [`limits`] names every bound. The socket and clock code
//! is private (`io`), as are the on-disk records (`record`, `disk`).

#![warn(missing_docs)]

mod config;
pub mod core;
mod disk;
mod error;
mod io;
pub mod limits;
pub mod orders;
mod receipt;
mod record;

pub use config::ProducerConfig;
pub use error::{ProducerError, RejectError};
pub use io::{OrderStream, Producer, Stats};
pub use orderly_common::protocol::{Backpressure, RejectReason};
pub use orderly_common::Endpoint;
pub use orders::Order;
pub use receipt::{Answer, FlushReport, Outcome, Receipt, ReceiptState};

/// Maps and sets keyed by order ids, hashed with foldhash (randomly
/// seeded) instead of SipHash: hashing ids was ~5 % of the bench
/// producer's CPU.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
