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
    /// The process id (a relay's `claimed_by` is `ID:PID`).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

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

    /// kill -9 (restart it with [`start_broker_on`] and its endpoints).
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

/// Sends a signal to a process this test started, by its PID.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A broker with its journal in `dir`; ready when the relay's handshake
/// is answered (the producer library waits for it).
pub fn start_broker(dir: &Path) -> Broker {
    start_broker_on(dir, free_endpoint(), free_endpoint(), free_endpoint())
}

/// A broker on these endpoints: [`start_broker`], or a restart after
/// [`Broker::kill`] on the same data dir and ports.
pub fn start_broker_on(dir: &Path, intake: String, fanout: String, control: String) -> Broker {
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

/// `orderly-producer relay` on `database`, looking at the table every
/// `poll_interval` seconds when idle, with a short lease so a killed
/// relay's rows come back within a second.
pub fn start_relay(broker: &Broker, database: &str, poll_interval: &str) -> Guard {
    start_relay_to(broker, database, poll_interval, Stdio::null())
}

/// [`start_relay`] with its stdout (the closing tally) sent to `stdout`.
pub fn start_relay_to(broker: &Broker, database: &str, poll_interval: &str, stdout: Stdio) -> Guard {
    let child = Command::new(assert_cmd::cargo::cargo_bin("orderly-producer"))
        .args(["relay", "--id", "shop-1", "--intake", &broker.intake, "--fanout", &broker.fanout])
        .args([
            "--database",
            database,
            "--poll-interval",
            poll_interval,
            "--claim-lease",
            "1",
            "--confirm-timeout",
            "1",
        ])
        .env_remove("RUST_LOG")
        .stdout(stdout)
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

/// A private PostgreSQL (Debian's `postgresql` package): `initdb` on a
/// fresh directory and `pg_ctl start` on a free port, as the `postgres`
/// user when the test runs as root (PostgreSQL refuses root); stopped
/// (`pg_ctl stop -m immediate`) on drop, even when the test fails.
pub struct Postgres {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub url: String,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

/// The PostgreSQL server programs: on PATH, or Debian's versioned
/// directory.
fn pg_bin(name: &str) -> PathBuf {
    if let Ok(output) = Command::new("sh").args(["-c", &format!("command -v {name}")]).output() {
        let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if output.status.success() && !path.is_empty() {
            return PathBuf::from(path);
        }
    }
    let found = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|versions| versions.filter_map(|v| Some(v.ok()?.path().join("bin").join(name))).find(|p| p.exists()));
    found.unwrap_or_else(|| {
        panic!("{name} not found: install PostgreSQL (apt-get install -y postgresql, as scripts/setup.sh does)")
    })
}

/// Runs a PostgreSQL program as `postgres` when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        // The postgres user must reach and own its directories.
        let chown = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status();
        assert!(chown.is_ok_and(|s| s.success()) || !is_root(), "cannot chown the PostgreSQL directory to postgres");
        let status = as_postgres(&pg_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off",
            dir.path().display()
        );
        let status = as_postgres(&pg_bin("pg_ctl"))
            .args(["-w", "-t", "30", "-o", &options, "-l"])
            .arg(dir.path().join("server.log"))
            .arg("-D")
            .arg(&data)
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .expect("run pg_ctl start");
        let postgres = Postgres { url: format!("postgres://postgres@127.0.0.1:{port}/postgres"), data, _dir: dir };
        assert!(status.success(), "pg_ctl start failed (see server.log in the test's directory)");
        postgres
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(&pg_bin("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .stdout(Stdio::null())
            .status();
    }
}

/// `orderly-producer relay` as [`start_relay`] (polling every 50 ms), with
/// `extra` flags after the usual ones (e.g. `--table`, `--retention`).
pub fn start_relay_with(broker: &Broker, database: &str, extra: &[&str]) -> Guard {
    let child = Command::new(assert_cmd::cargo::cargo_bin("orderly-producer"))
        .args(["relay", "--id", "shop-1", "--intake", &broker.intake, "--fanout", &broker.fanout])
        .args(["--database", database, "--poll-interval", "0.05", "--claim-lease", "1", "--confirm-timeout", "1"])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the relay");
    Guard(child)
}

/// The relay's `--print-schema` for `database` with `extra` flags
/// (`--table`, `--archive-table`).
pub fn schema_with(database: &str, extra: &[&str]) -> String {
    let output = Command::new(assert_cmd::cargo::cargo_bin("orderly-producer"))
        .args(["relay", "--print-schema", "--database", database])
        .args(extra)
        .output()
        .expect("run --print-schema");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// A free loopback `HOST:PORT` (for `--metrics`).
pub fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("127.0.0.1:{port}")
}

/// `GET /metrics` from `addr`: the body, or `None` while nothing answers.
pub fn scrape(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    if !response.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(response.split_once("\r\n\r\n")?.1.to_owned())
}

/// The value of the sample `name` (no labels) in a scrape.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `promtool check metrics` on `text`, bounded to 20 s: `None` when
/// promtool is not installed (Debian's `prometheus` package), else whether
/// it passed and what it said.
pub fn promtool_check(text: &str) -> Option<(bool, String)> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("promtool check metrics took over 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Some((output.status.success(), said))
}

/// Certificates for a TLS test, made with the `openssl` command line in a
/// directory of the test's: a CA, a server certificate it signed for
/// `localhost` and `127.0.0.1`, and a second CA that signed nothing.
pub struct TestCerts {
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Runs `openssl` with `args` in `dir`; panics with what it said.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl (Debian: openssl)");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Makes [`TestCerts`] in `dir` (P-256 keys: quick to make).
pub fn make_certs(dir: &Path) -> TestCerts {
    std::fs::create_dir_all(dir).unwrap();
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let ca_extensions =
        ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"];
    for (name, subject) in [("ca", "/CN=orderly test CA"), ("other-ca", "/CN=orderly other CA")] {
        let (key_out, cert_out) = (format!("{name}.key"), format!("{name}.crt"));
        let mut args = vec!["req", "-x509", "-days", "2", "-subj", subject, "-keyout", &key_out, "-out", &cert_out];
        args.extend(key);
        args.extend(ca_extensions);
        openssl(dir, &args);
    }
    let mut args = vec!["req", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"];
    args.extend(key);
    openssl(dir, &args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName = DNS:localhost, IP:127.0.0.1\nbasicConstraints = CA:FALSE\n\
         keyUsage = digitalSignature\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
    TestCerts {
        ca: dir.join("ca.crt"),
        other_ca: dir.join("other-ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    }
}

impl Postgres {
    /// Turns TLS on with `certs`' server certificate (copied into the data
    /// directory, owned by postgres, key mode 0600 as PostgreSQL demands),
    /// replaces pg_hba.conf with `hba`, and restarts the server (`pg_ctl
    /// restart` keeps the first start's options).
    pub fn enable_tls(&self, certs: &TestCerts, hba: &str) {
        use std::os::unix::fs::PermissionsExt;
        let (cert, key) = (self.data.join("server.crt"), self.data.join("server.key"));
        std::fs::copy(&certs.server_cert, &cert).unwrap();
        std::fs::copy(&certs.server_key, &key).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut conf = std::fs::OpenOptions::new().append(true).open(self.data.join("postgresql.conf")).unwrap();
        std::io::Write::write_all(
            &mut conf,
            b"\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )
        .unwrap();
        std::fs::write(self.data.join("pg_hba.conf"), hba).unwrap();
        if is_root() {
            let status = Command::new("chown").args(["postgres:postgres"]).args([&cert, &key]).status();
            assert!(status.is_ok_and(|s| s.success()), "cannot chown the server certificate to postgres");
        }
        let status = as_postgres(&pg_bin("pg_ctl"))
            .args(["-w", "-t", "30", "-m", "fast", "-l"])
            .arg(self.data.parent().unwrap().join("server.log"))
            .arg("-D")
            .arg(&self.data)
            .arg("restart")
            .stdout(Stdio::null())
            .status()
            .expect("run pg_ctl restart");
        assert!(status.success(), "pg_ctl restart with ssl = on failed (see server.log in the test's directory)");
    }

    /// The server's port (from [`Postgres::url`]).
    pub fn port(&self) -> u16 {
        let after_host = self.url.rsplit_once(':').unwrap().1;
        after_host.split('/').next().unwrap().parse().unwrap()
    }
}

/// `orderly-producer relay` as [`start_relay_with`], its stderr (the log,
/// at info) written to `log`.
pub fn start_relay_logged(broker: &Broker, database: &str, log: &Path) -> Guard {
    let child = Command::new(assert_cmd::cargo::cargo_bin("orderly-producer"))
        .args(["relay", "--id", "shop-1", "--intake", &broker.intake, "--fanout", &broker.fanout])
        .args(["--database", database, "--poll-interval", "0.05", "--claim-lease", "1", "--confirm-timeout", "1"])
        .args(["--log-level", "info"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start the relay");
    Guard(child)
}

/// Runs `orderly-producer relay --database DATABASE` against endpoints
/// where no broker listens, which a relay that fails at the database never
/// reaches: its exit code and stderr, or a panic when it is still running
/// after `timeout` (it is killed then).
pub fn relay_fails(database: &str, timeout: Duration) -> (i32, String) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Guard(
        Command::new(assert_cmd::cargo::cargo_bin("orderly-producer"))
            .args(["relay", "--id", "shop-1", "--intake", &free_endpoint(), "--fanout", &free_endpoint()])
            .args(["--database", database])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("start the relay"),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        let said = std::fs::read_to_string(log.path()).unwrap_or_default();
        assert!(Instant::now() < deadline, "the relay still runs after {timeout:?} (it should have failed): {said}");
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code().unwrap_or(-1), std::fs::read_to_string(log.path()).unwrap())
}
