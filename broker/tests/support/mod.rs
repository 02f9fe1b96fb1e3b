//! What the process tests of the broker binary share: a broker child that
//! is killed when the test ends (pass or fail), ipc endpoints in the test's
//! directory, free admin ports, and a broker started with CURVE on.
//!
//! Each test file is its own crate and uses a part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use orderly_security::keys::{encode, write_pair, KeyPair};
use orderly_test_support::broker_command;
// Each test file is its own crate and uses a part of these.
#[allow(unused_imports)]
pub use orderly_test_support::{ep, free_port};

pub const BROKER: &str = env!("CARGO_BIN_EXE_orderly-broker");
/// How long a broker may take to start answering its admin endpoint.
const START_WAIT: Duration = Duration::from_secs(20);

/// A running broker on ipc endpoints in `dir`, killed on drop.
pub struct Broker {
    pub child: Child,
    pub dir: PathBuf,
    /// The admin endpoint, `127.0.0.1:PORT`.
    pub admin: String,
    /// The broker's CURVE public key (what clients set as the server key);
    /// all zero without CURVE.
    pub public: [u8; 32],
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of an authorized-keys file.
pub fn authorized_line(key: &KeyPair, role: &str, id: &str) -> String {
    format!("{} {role} {id}\n", encode(&key.public))
}

/// A broker without CURVE: heartbeats every 200 ms, `extra` flags last.
/// Returns once its admin endpoint answers. Its log is `dir/broker.log`
/// (`SHOW_BROKER=1`: the terminal).
pub fn start_broker(dir: &Path, extra: &[&str]) -> Broker {
    spawn(dir, &[], extra, [0; 32])
}

/// A broker with CURVE on: secret key `server`, admitting the lines of
/// `authorized`, heartbeats every 200 ms, `extra` flags last. Returns once
/// its admin endpoint answers (after recovery, with every socket bound).
/// Its log is `dir/broker.log` (`SHOW_BROKER=1`: the terminal).
pub fn start_curve_broker(dir: &Path, server: &KeyPair, authorized: &str, extra: &[&str]) -> Broker {
    let (secret, _) = write_pair(server, &dir.join("broker")).unwrap();
    std::fs::write(dir.join("authorized"), authorized).unwrap();
    let authorized = dir.join("authorized");
    let curve = ["--curve-secret-key", secret.to_str().unwrap(), "--authorized-keys", authorized.to_str().unwrap()];
    spawn(dir, &curve, extra, server.public)
}

/// Starts a broker on ipc endpoints in `dir` with `flags` then `extra`,
/// and waits for its admin endpoint.
fn spawn(dir: &Path, flags: &[&str], extra: &[&str], public: [u8; 32]) -> Broker {
    let admin = format!("127.0.0.1:{}", free_port());
    let child =
        broker_command(Path::new(BROKER), dir).args(["--admin", &admin]).args(flags).args(extra).spawn().unwrap();
    // Built before the wait, so a broker that never answers is killed on drop.
    let broker = Broker { child, dir: dir.to_path_buf(), admin, public };
    wait_started(&broker);
    broker
}

/// Waits until the broker's admin endpoint answers.
pub fn wait_started(broker: &Broker) {
    let deadline = Instant::now() + START_WAIT;
    while orderly_broker::admin::request(&broker.admin, "GET", "/status").is_err() {
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}
