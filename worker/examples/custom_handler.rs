//! A worker with a handler written in Rust: a closure that sums the `qty`
//! of an order's JSON items, acks orders whose items say so, asks for a
//! retry in 5 s when an item says `"busy": true`, and fails for good an
//! order with an item that is not a JSON object.
//!
//! Run it against a broker:
//!
//! ```text
//! cargo run -p orderly-worker --example custom_handler -- \
//!     --fanout tcp://127.0.0.1:5571 --control tcp://127.0.0.1:5572 [--id w-example] [--concurrency 4]
//! ```
//!
//! Each flag may also come from the environment: ORDERLY_WORKER_FANOUT,
//! ORDERLY_WORKER_CONTROL, ORDERLY_WORKER_ID, ORDERLY_WORKER_CONCURRENCY.
//! Ctrl-C drains (running orders finish) and exits.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use orderly_common::protocol::Dispatch;
use orderly_worker::core::Failure;
use orderly_worker::io::{self, Config};

/// The handler: any `Fn(&Dispatch) -> Result<(), Failure> + Send + Sync`.
fn handle(order: &Dispatch) -> Result<(), Failure> {
    let mut qty = 0u64;
    for (index, item) in order.items.iter().enumerate() {
        let value: serde_json::Value =
            serde_json::from_slice(item).map_err(|e| Failure::permanent(format!("item {index} is not JSON: {e}")))?;
        let object = value.as_object().ok_or_else(|| Failure::permanent(format!("item {index} is not an object")))?;
        if object.get("busy") == Some(&serde_json::Value::Bool(true)) {
            return Err(Failure::retry_later("the stock service is busy", Some(5000)));
        }
        qty += object.get("qty").and_then(serde_json::Value::as_u64).unwrap_or(1);
    }
    println!("order {} (attempt {}): {} items, qty {qty}", order.order, order.attempt, order.items.len());
    Ok(())
}

/// `--name value` from the arguments, else the environment variable.
fn setting(args: &[String], name: &str, env: &str) -> Option<String> {
    let flag = format!("--{name}");
    args.windows(2).find(|pair| pair[0] == flag).map(|pair| pair[1].clone()).or_else(|| std::env::var(env).ok())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!("usage: custom_handler --fanout EP --control EP [--id ID] [--concurrency N]");
        return Ok(());
    }
    let required = |name: &str, env: &str| {
        setting(&args, name, env)
            .ok_or_else(|| format!("--{name} (or {env}) is required, e.g. --{name} tcp://127.0.0.1:5571"))
    };
    let fanout = required("fanout", "ORDERLY_WORKER_FANOUT")?.parse()?;
    let control = required("control", "ORDERLY_WORKER_CONTROL")?.parse()?;
    let worker = setting(&args, "id", "ORDERLY_WORKER_ID").unwrap_or_else(|| "w-example".to_owned());
    orderly_common::ids::validate_peer_id("worker id", &worker)?;
    let concurrency: u32 = setting(&args, "concurrency", "ORDERLY_WORKER_CONCURRENCY").map_or(Ok(4), |n| n.parse())?;
    if !(1..=orderly_common::limits::WORKER_CONCURRENCY_MAX).contains(&concurrency) {
        return Err(format!(
            "--concurrency is 1 to {}, not {concurrency}",
            orderly_common::limits::WORKER_CONCURRENCY_MAX
        )
        .into());
    }
    let config = Config {
        worker,
        incarnation: rand::random(),
        fanout,
        control,
        concurrency,
        handler: Arc::new(handle),
        heartbeat_interval_ms: orderly_common::limits::HEARTBEAT_INTERVAL_MS_DEFAULT,
        heartbeat_liveness: orderly_common::limits::HEARTBEAT_LIVENESS_DEFAULT,
        drain_timeout_ms: 30_000,
        dispatches_max: orderly_common::limits::WORKER_DISPATCHES_MAX_DEFAULT,
        curve: None,
    };
    // A flag the loop watches; set by Ctrl-C or SIGTERM (a real binary
    // would use signal-hook, as orderly-worker does).
    let shutdown = Arc::new(AtomicBool::new(false));
    install_signal_flag(&shutdown);
    let exit = io::run(config, &shutdown)?;
    println!("stopped: {exit:?}");
    Ok(())
}

/// Sets `flag` on SIGINT or SIGTERM, with plain libc (no extra crate).
fn install_signal_flag(flag: &Arc<AtomicBool>) {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    let _ = FLAG.set(Arc::clone(flag));
    extern "C" fn on_signal(_: libc::c_int) {
        if let Some(flag) = FLAG.get() {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; `on_signal` has the signature signal() wants.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
}
