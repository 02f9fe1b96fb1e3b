//! The orderly worker: a sans-IO [`core`] that decides what to run and what
//! to tell the broker, the [`handler`]s that process one order, and the
//! [`io`] loop that owns the sockets and the thread pool.
//!
//! A handler is anything implementing [`handler::Handler`], a closure
//! included; the built-in ones are [`handler::Exec`] (a command per order),
//! [`serve::Serve`] (long-running commands fed JSON lines),
//! [`handler::Sink`] (files) and [`handler::Noop`]. A worker with a Rust
//! closure as its handler:
//!
//! ```no_run
//! use std::sync::{atomic::AtomicBool, Arc};
//! use orderly_common::protocol::Dispatch;
//! use orderly_worker::{core::Failure, io};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let handler = |order: &Dispatch| -> Result<(), Failure> {
//!     println!("{} has {} items", order.order, order.items.len());
//!     Ok(())
//! };
//! let config = io::Config {
//!     worker: "w1".into(),
//!     incarnation: rand::random(),
//!     fanout: "tcp://127.0.0.1:5571".parse()?,
//!     control: "tcp://127.0.0.1:5572".parse()?,
//!     concurrency: 4,
//!     handler: Arc::new(handler),
//!     heartbeat_interval_ms: 1000,
//!     heartbeat_liveness: 3,
//!     drain_timeout_ms: 30_000,
//!     dispatches_max: orderly_common::limits::WORKER_DISPATCHES_MAX_DEFAULT,
//!     curve: None,
//! };
//! io::run(config, &AtomicBool::new(false))?; // set the flag to drain and stop
//! # Ok(())
//! # }
//! ```
//!
//! `examples/custom_handler.rs` is the same as a runnable program:
//! `cargo run -p orderly-worker --example custom_handler -- --fanout
//! tcp://127.0.0.1:5571 --control tcp://127.0.0.1:5572`.
//!
//! Invariant: only `io` touches sockets and reads the clock; `handler` and
//! `serve` touch files and processes but know nothing of ZeroMQ.

pub mod core;
pub mod handler;
pub mod inbox;
pub mod io;
pub mod metrics;
pub mod serve;
