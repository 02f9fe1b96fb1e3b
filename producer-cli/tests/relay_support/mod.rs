//! What the relay tests share: a real broker and worker on free loopback
//! ports, relays as child processes, and waiting with a deadline. Every
//! process is killed (by its own handle, so by PID) when its guard drops,
//! even when the test fails.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Guard(pub Child);

impl Guard {
    /// kill -9, and wait for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback endpoint on a port free a moment ago.
pub fn free_endpoint() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("tcp://127.0.0.1:{port}")
}

/// A binary of the workspace, next to this package's (the broker and the
/// worker are other packages: build them first).
pub fn workspace_bin(name: &str) -> PathBuf {
    let producer = assert_cmd::cargo::cargo_bin("orderly-producer");
    let path = producer.parent().unwrap().join(name);
    assert!(path.exists(), "{} is missing: run `cargo build -p {name}` first", path.display());
    path
}

pub struct Broker {
    pub intake: String,
    pub fanout: String,
    pub control: String,
    process: Guard,
}

impl Broker {
    /// SIGSTOP: the broker takes nothing and confirms nothing until
    /// [`Broker::resume`], so what a relay sends stays unconfirmed.
    pub fn pause(&self) {
        signal(self.process.0.id(), "STOP");
    }

    /// SIGCONT after [`Broker::pause`].
    pub fn resume(&self) {
        signal(self.process.0.id(), "CONT");
    }
}

/// Sends a signal to a process this test started, by its PID.
fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A broker with its journal in `dir`; ready when the relay's handshake
/// is answered (the producer library waits for it).
pub fn start_broker(dir: &Path) -> Broker {
    let (intake, fanout, control) = (free_endpoint(), free_endpoint(), free_endpoint());
    let child = Command::new(workspace_bin("orderly-broker"))
        .args(["run", "--admin", "off", "--data-dir"])
        .arg(dir)
        .args(["--intake", &intake, "--fanout", &fanout, "--control", &control])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the broker");
    Broker { intake, fanout, control, process: Guard(child) }
}

/// A worker writing each order to `sink/<producer>/<order id>.json`.
pub fn start_worker(broker: &Broker, sink: &Path) -> Guard {
    let child = Command::new(workspace_bin("orderly-worker"))
        .args(["run", "--id", "w1", "--fanout", &broker.fanout, "--control", &broker.control, "--sink"])
        .arg(sink)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the worker");
    Guard(child)
}

/// `orderly-producer relay` on `database`, with a short lease so a killed
/// relay's rows come back within a second.
pub fn start_relay(broker: &Broker, database: &str, extra: &[&str]) -> Guard {
    let child = Command::new(assert_cmd::cargo::cargo_bin("orderly-producer"))
        .args(["relay", "--id", "shop-1", "--intake", &broker.intake, "--fanout", &broker.fanout])
        .args(["--database", database, "--poll-interval", "0.05", "--claim-lease", "1", "--confirm-timeout", "1"])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the relay");
    Guard(child)
}

/// The relay's `--print-schema` for `database`.
pub fn schema(database: &str) -> String {
    let output = Command::new(assert_cmd::cargo::cargo_bin("orderly-producer"))
        .args(["relay", "--print-schema", "--database", database])
        .output()
        .expect("run --print-schema");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// Polls `check` every 50 ms until it holds; panics with `what` at the
/// deadline.
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Order ids the worker wrote to the sink for producer `shop-1`.
pub fn delivered(sink: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(sink.join("shop-1")) else { return BTreeSet::new() };
    entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".json").map(str::to_owned)).collect()
}
