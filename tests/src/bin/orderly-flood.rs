//! A hostile producer for tests: floods a broker's intake with garbage —
//! random bytes, truncated and wrong-version MessagePack, wrong frame
//! counts, oversized frames, Finishes for orders nobody began — as fast as
//! it can for a while, then prints how many messages it sent.
//!
//! usage: orderly-flood INTAKE_ENDPOINT SECONDS

use std::time::{Duration, Instant};

use orderly_common::limits::INTAKE_FRAME_BYTES_MAX;
use orderly_common::protocol::{Finish, IntakeMsg, Item};
use rand::{Rng, SeedableRng};
use serde_bytes::ByteBuf;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, seconds] = &args[..] else {
        eprintln!("usage: orderly-flood INTAKE_ENDPOINT SECONDS");
        std::process::exit(2);
    };
    let seconds: f64 = seconds.parse().expect("SECONDS is a number");
    let context = zmq::Context::new();
    let push = context.socket(zmq::PUSH).expect("socket");
    push.set_linger(0).expect("linger");
    push.set_sndhwm(10_000).expect("hwm");
    push.connect(endpoint).expect("connect");
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261121);
    let valid = IntakeMsg::Item(Item {
        producer: "rogue".into(),
        order: "o".into(),
        seq: 1,
        data: ByteBuf::from(vec![b'x'; 200]),
    })
    .encode();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let (mut sent, mut oversized) = (0u64, 0u64);
    while Instant::now() < deadline {
        let frames: Vec<Vec<u8>> = match rng.gen_range(0..100) {
            0..=29 => vec![b"t".to_vec(), (0..rng.gen_range(0..2000)).map(|_| rng.gen()).collect()],
            30..=49 => vec![b"t".to_vec(), valid[..rng.gen_range(0..valid.len())].to_vec()],
            50..=59 => {
                let mut wrong = valid.clone();
                // The envelope's `v` value follows the key "v" (0xa1 0x76).
                if let Some(at) = wrong.windows(2).position(|w| w == [0xa1, b'v']) {
                    wrong[at + 2] = 7;
                }
                vec![b"t".to_vec(), wrong]
            }
            60..=69 => (0..rng.gen_range(3..8)).map(|_| b"frame".to_vec()).collect(),
            70..=71 if rng.gen_ratio(1, 50) => {
                // Over ZMQ_MAXMSGSIZE: libzmq drops the connection; we reconnect.
                oversized += 1;
                vec![b"t".to_vec(), vec![0u8; INTAKE_FRAME_BYTES_MAX + 1]]
            }
            70..=79 => vec![(0..200).map(|_| rng.gen()).collect(), valid.clone()],
            _ => {
                let finish = IntakeMsg::Finish(Finish {
                    producer: format!("rogue{}", rng.gen_range(0..1000)),
                    order: format!("o{}", rng.gen::<u32>()),
                    count: 3,
                });
                vec![b"t".to_vec(), finish.encode()]
            }
        };
        if push.send_multipart(frames, zmq::DONTWAIT).is_ok() {
            sent += 1;
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    println!("flood: sent {sent} garbage messages ({oversized} oversized) in {seconds} s");
}
