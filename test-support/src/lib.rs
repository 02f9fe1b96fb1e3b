//! What orderly's process tests share: locating the project's binaries,
//! a child process killed when the test ends, a broker started on ipc
//! endpoints in the test's directory, a plain `GET`, `promtool`, and the
//! operator cases every CLI runs against itself.
//!
//! A dev-dependency only (never a normal one): it starts processes and
//! panics on failure, as a test should. Tests that run a binary of their
//! own package take its path from `env!("CARGO_BIN_EXE_…")`; tests of
//! another package call [`built_binary`], which builds it once.

pub mod operator;
mod promtool;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use promtool::{promtool, promtool_check, PROMTOOL_WAIT};

/// How long one `GET` may wait for its answer.
const GET_TIMEOUT: Duration = Duration::from_secs(10);

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("test-support/ is in the workspace").to_path_buf()
}

/// Binary `bin` of package `package` in this build's target/<profile>/,
/// built once per test process: cargo builds only a package's own
/// binaries before its tests. The profile is the test binary's (a
/// `--release` test run uses the release broker).
pub fn built_binary(package: &str, bin: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if !built.iter().any(|name| name == bin) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build.current_dir(workspace()).args(["build", "-q", "-p", package, "--bin", bin]);
        if profile_dir.file_name().is_some_and(|name| name == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "cannot build {bin} (package {package}) for these tests");
        built.push(bin.to_owned());
    }
    profile_dir.join(bin)
}

/// The broker binary of this build, for tests outside the broker's package.
pub fn broker_binary() -> PathBuf {
    built_binary("orderly-broker", "orderly-broker")
}

/// A TCP port free on loopback now, chosen at run time.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The ipc endpoint `name` inside `dir` (no TCP port to collide on).
pub fn ep(dir: &Path, name: &str) -> String {
    format!("ipc://{}", dir.join(name).display())
}

/// A child process a test started, killed (by its PID) and reaped when
/// dropped, whether the test passed or not.
#[derive(Debug)]
pub struct Running(pub Child);

impl Running {
    /// Waits for the child to exit, at most `within`; past it, panics with
    /// `what` (the child is then killed on drop).
    pub fn exit_within(&mut self, within: Duration, what: &str) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().expect("wait for the child") {
                return status;
            }
            assert!(Instant::now() < deadline, "{what}: still running after {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `BINARY run` for a broker in `dir`: its journal in `dir/data`, ipc
/// endpoints `intake`, `fanout` and `control` in `dir`, heartbeats every
/// 200 ms, no admin token or systemd socket taken from the environment,
/// stdout discarded and stderr appended to `dir/broker.log`
/// (`SHOW_BROKER=1`: to the terminal). The caller adds `--admin` and its
/// own flags, and spawns it.
pub fn broker_command(binary: &Path, dir: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["run", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--intake", &ep(dir, "intake"), "--fanout", &ep(dir, "fanout"), "--control", &ep(dir, "control")])
        .args(["--heartbeat-interval-ms", "200"]);
    quiet_broker(&mut command, &dir.join("broker.log"));
    command
}

/// `BINARY run` for member `id` of the group file `group`: its data in
/// `dir/data-ID`, heartbeats every 100 ms, the same environment and output
/// as [`broker_command`], stderr appended to `dir/broker-ID.log`. The
/// caller adds its own flags and spawns it.
pub fn group_member_command(binary: &Path, dir: &Path, group: &Path, id: u64) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["run", "--group"])
        .arg(group)
        .args(["--node-id", &id.to_string(), "--heartbeat-interval-ms", "100", "--data-dir"])
        .arg(dir.join(format!("data-{id}")));
    quiet_broker(&mut command, &dir.join(format!("broker-{id}.log")));
    command
}

/// No admin token or systemd socket from the environment, stdout
/// discarded, stderr appended to `log` (`SHOW_BROKER=1`: the terminal).
fn quiet_broker(command: &mut Command, log: &Path) {
    command.env_remove("ORDERLY_BROKER_ADMIN_TOKEN").env_remove("NOTIFY_SOCKET").stdout(Stdio::null());
    if std::env::var_os("SHOW_BROKER").is_some() {
        command.stderr(Stdio::inherit());
    } else {
        let log = OpenOptions::new().create(true).append(true).open(log).expect("broker log");
        command.stderr(log);
    }
}

/// `GET path` on `addr` (`host:port`): the status, the head and the body;
/// status 0 if the connection failed.
pub fn get_with_head(addr: &str, path: &str) -> (u16, String, String) {
    let Ok(mut stream) = TcpStream::connect(addr) else { return (0, String::new(), String::new()) };
    stream.set_read_timeout(Some(GET_TIMEOUT)).expect("timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    if stream.write_all(request.as_bytes()).is_err() || stream.read_to_string(&mut response).is_err() {
        return (0, String::new(), String::new());
    }
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_owned(), body.to_owned())
}

/// `GET path` on `addr`: the status and the body; status 0 if the
/// connection failed.
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let (status, _, body) = get_with_head(addr, path);
    (status, body)
}
