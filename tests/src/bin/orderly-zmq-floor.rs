//! The wire's floor: how many orders a second libzmq alone moves from one
//! process to another on this machine, as the producer's own intake
//! messages (`orderly_producer::core::encode_order`: per item a Begin, one
//! Item an item and a Finish; packed one frame an order; encoded once and
//! sent again and again), over TCP loopback, plaintext or CURVE — and
//! nothing else: no encoding, no broker core, no journal, no dispatch, no
//! confirms. `bench/run.sh` can never beat it
//! here; `bench/floor.sh` prints it beside the targets (issue 20).
//!
//! usage: orderly-zmq-floor --orders N --items K --item-bytes S
//!                          --framing per-item|packed [--curve]
//!
//! The process receives (PULL, bound, as the broker's intake) and starts a
//! copy of itself that sends (PUSH, as a producer), each with its own
//! libzmq context, socket options as the broker and producer set them.
//! Prints one JSON line: orders/s and messages/s from the first message
//! received to the last, and each side's CPU µs an order.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use orderly_common::limits::{INTAKE_FRAME_BYTES_MAX, SOCKET_HWM_DEFAULT};

/// Longest a run may take before it is called failed (a lost sender).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// The sender's keys (CURVE) reach it through the environment, not argv.
const ENV_SERVER_PUBLIC: &str = "ORDERLY_FLOOR_SERVER_PUBLIC";

struct Args {
    orders: u64,
    items: usize,
    item_bytes: usize,
    pack: bool,
    curve: bool,
    send_to: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args { orders: 100_000, items: 10, item_bytes: 100, pack: false, curve: false, send_to: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--orders" => args.orders = value()?.parse().map_err(|e| format!("--orders: {e}"))?,
            "--items" => args.items = value()?.parse().map_err(|e| format!("--items: {e}"))?,
            "--item-bytes" => args.item_bytes = value()?.parse().map_err(|e| format!("--item-bytes: {e}"))?,
            "--framing" => {
                args.pack = match value()?.as_str() {
                    "per-item" => false,
                    "packed" => true,
                    other => return Err(format!("--framing {other:?}: give per-item or packed")),
                }
            }
            "--curve" => args.curve = true,
            "--send-to" => args.send_to = Some(value()?),
            other => return Err(format!("unknown flag {other:?} (see the usage in the source's header)")),
        }
    }
    if args.orders == 0 || args.items == 0 {
        return Err("--orders and --items must be at least 1".into());
    }
    Ok(args)
}

/// The frames of order `n`, as the producer library encodes them.
fn frames(args: &Args, n: u64) -> std::collections::VecDeque<Vec<u8>> {
    let items = vec![vec![b'x'; args.item_bytes]; args.items];
    orderly_producer::core::encode_order("floor-p", &format!("bench-{n}"), &items, args.pack)
}

/// This process's CPU time (user + system), or its waited-for children's.
fn cpu(who: libc::c_int) -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn send(args: &Args, endpoint: &str) -> Result<(), String> {
    let context = zmq::Context::new();
    let push = context.socket(zmq::PUSH).map_err(|e| e.to_string())?;
    push.set_linger(-1).map_err(|e| e.to_string())?;
    push.set_sndhwm(SOCKET_HWM_DEFAULT).map_err(|e| e.to_string())?;
    if args.curve {
        let server = std::env::var(ENV_SERVER_PUBLIC).map_err(|_| format!("{ENV_SERVER_PUBLIC} is not set"))?;
        let client = zmq::CurveKeyPair::new().map_err(|e| e.to_string())?;
        push.set_curve_serverkey(&zmq::z85_decode(&server).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        push.set_curve_publickey(&client.public_key).map_err(|e| e.to_string())?;
        push.set_curve_secretkey(&client.secret_key).map_err(|e| e.to_string())?;
    }
    push.connect(endpoint).map_err(|e| e.to_string())?;
    let topic = orderly_common::ids::producer_topic("floor-p");
    // Encoded once: the floor is libzmq's, not the encoder's.
    let order = frames(args, 0);
    for _ in 0..args.orders {
        for body in &order {
            push.send_multipart([topic.as_slice(), body.as_slice()], 0).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn receive(args: &Args) -> Result<(), String> {
    let context = zmq::Context::new();
    let pull = context.socket(zmq::PULL).map_err(|e| e.to_string())?;
    pull.set_rcvhwm(SOCKET_HWM_DEFAULT).map_err(|e| e.to_string())?;
    pull.set_maxmsgsize(INTAKE_FRAME_BYTES_MAX as i64).map_err(|e| e.to_string())?;
    pull.set_rcvtimeo(RUN_TIMEOUT.as_millis() as i32).map_err(|e| e.to_string())?;
    let mut sender = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    if args.curve {
        let server = zmq::CurveKeyPair::new().map_err(|e| e.to_string())?;
        pull.set_curve_server(true).map_err(|e| e.to_string())?;
        pull.set_curve_secretkey(&server.secret_key).map_err(|e| e.to_string())?;
        sender.env(ENV_SERVER_PUBLIC, zmq::z85_encode(&server.public_key).map_err(|e| e.to_string())?);
    }
    pull.bind("tcp://127.0.0.1:*").map_err(|e| e.to_string())?;
    let endpoint =
        pull.get_last_endpoint().map_err(|e| e.to_string())?.map_err(|_| "endpoint not UTF-8".to_string())?;
    let framing = if args.pack { "packed" } else { "per-item" };
    sender.args(["--orders", &args.orders.to_string(), "--items", &args.items.to_string()]);
    sender.args(["--item-bytes", &args.item_bytes.to_string(), "--framing", framing, "--send-to", &endpoint]);
    if args.curve {
        sender.arg("--curve");
    }
    let mut child = sender.spawn().map_err(|e| format!("starting the sender: {e}"))?;
    let messages = args.orders * frames(args, 0).len() as u64;
    let cpu_before = cpu(libc::RUSAGE_SELF);
    let mut first = None;
    let mut bytes = 0u64;
    for _ in 0..messages {
        let frames = match pull.recv_multipart(0) {
            Ok(frames) => frames,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("receiving: {e} (no message within {RUN_TIMEOUT:?})"));
            }
        };
        first.get_or_insert_with(Instant::now);
        bytes += frames.iter().map(|f| f.len() as u64).sum::<u64>();
    }
    let elapsed = first.map_or(Duration::ZERO, |t| t.elapsed()).as_secs_f64().max(1e-9);
    let receiver_cpu = cpu(libc::RUSAGE_SELF) - cpu_before;
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("the sender failed: {status}"));
    }
    let sender_cpu = cpu(libc::RUSAGE_CHILDREN);
    let per_order = |d: Duration| d.as_secs_f64() * 1e6 / args.orders as f64;
    println!(
        "{{\"framing\":\"{framing}\",\"curve\":{},\"orders\":{},\"messages\":{messages},\"bytes\":{bytes},\
         \"orders_per_s\":{:.0},\"messages_per_s\":{:.0},\"receiver_cpu_us_per_order\":{:.2},\
         \"sender_cpu_us_per_order\":{:.2}}}",
        args.curve,
        args.orders,
        args.orders as f64 / elapsed,
        messages as f64 / elapsed,
        per_order(receiver_cpu),
        per_order(sender_cpu),
    );
    Ok(())
}

fn main() -> ExitCode {
    let result = parse().and_then(|args| match args.send_to.clone() {
        Some(endpoint) => send(&args, &endpoint),
        None => receive(&args),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("orderly-zmq-floor: {error}");
            ExitCode::from(2)
        }
    }
}
