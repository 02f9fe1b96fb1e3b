//! The dashboard's routes through the real broker binary: the page and its
//! files with their content types and Content-Security-Policy, 404 for a
//! file that is not there, and the token rules (the files never need it;
//! beyond loopback the page's reads do; its own POSTs pass the Origin
//! check, another page's do not). The page in a browser: tests/browser/.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{ep, free_port, BROKER};

mod support;

const TOKEN: &str = "dashboard-token-0123456789abcdef";
/// How long a broker may take to answer, and a request at most.
const WAIT: Duration = Duration::from_secs(20);

struct Broker {
    child: Child,
    /// `127.0.0.1:PORT`, whatever address it listens on.
    admin: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A broker with `--admin-token`, its admin on loopback or (with
/// `bind_all`) on every interface; the test talks to 127.0.0.1 only.
fn start_broker(dir: &Path, bind_all: bool) -> Broker {
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port();
    let bind = if bind_all { format!("0.0.0.0:{port}") } else { format!("127.0.0.1:{port}") };
    let child = Command::new(BROKER)
        .args(["run", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--intake", &ep(dir, "intake"), "--fanout", &ep(dir, "fanout"), "--control", &ep(dir, "control")])
        .args(["--admin", &bind, "--fsync", "never", "--admin-token"])
        .arg(&token_file)
        .env_remove("ORDERLY_BROKER_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let broker = Broker { child, admin: format!("127.0.0.1:{port}") };
    let deadline = Instant::now() + WAIT;
    while get(&broker, "/healthz", &[]).status != 200 {
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    broker
}

struct Reply {
    status: u16,
    /// Header lines, names lowercased.
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':').map(str::trim))
    }
}

/// One request with `headers` (`Name: value`, no CRLF); status 0 when the
/// connection failed.
fn request(broker: &Broker, method: &str, path: &str, headers: &[&str]) -> Reply {
    let failed = Reply { status: 0, head: String::new(), body: String::new() };
    let Ok(mut stream) = TcpStream::connect(&broker.admin) else { return failed };
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|h| h.starts_with("Host:")) {
        head += &format!("Host: {}\r\n", broker.admin);
    }
    for header in headers {
        head += &format!("{header}\r\n");
    }
    let mut response = String::new();
    if stream.write_all(format!("{head}\r\n").as_bytes()).is_err() || stream.read_to_string(&mut response).is_err() {
        return failed;
    }
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Reply { status, head: head.to_ascii_lowercase(), body: body.to_owned() }
}

fn get(broker: &Broker, path: &str, headers: &[&str]) -> Reply {
    request(broker, "GET", path, headers)
}

/// The files the page names (`src="/…"`, `href="/…"`).
fn referenced(html: &str) -> Vec<String> {
    ["src=\"", "href=\""]
        .iter()
        .flat_map(|attr| html.split(attr).skip(1).map(|rest| rest.split('"').next().unwrap().to_owned()))
        .collect()
}

#[test]
fn the_page_and_its_files_are_served_with_their_types_and_policy() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), false);
    let page = get(&broker, "/", &[]);
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let policy = page.header("content-security-policy").expect("the page has a CSP");
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(get(&broker, "/dashboard", &[]).body, page.body, "/dashboard is the same page");

    let files = referenced(&page.body);
    assert_eq!(files, ["/dashboard/app.js", "/dashboard/style.css"], "{}", page.body);
    for (path, content_type) in [("/dashboard/app.js", "text/javascript"), ("/dashboard/style.css", "text/css")] {
        let file = get(&broker, path, &[]);
        assert_eq!(file.status, 200, "{path}: {}", file.body);
        assert_eq!(file.header("content-type"), Some(&*format!("{content_type}; charset=utf-8")), "{path}");
        assert!(file.header("content-security-policy").is_some(), "{path}");
        assert!(file.body.len() > 500, "{path} is nearly empty");
    }
}

#[test]
fn a_file_that_is_not_there_is_404_and_the_page_is_get_only() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), false);
    for path in ["/dashboard/nope.js", "/dashboard/", "/dashboard/app.js.map", "/favicon.ico", "/index.html"] {
        let reply = get(&broker, path, &[]);
        assert_eq!(reply.status, 404, "{path}: {}", reply.body);
        assert!(reply.body.starts_with(&format!("no route {path}")), "{path}: {}", reply.body);
    }
    let bearer = format!("Authorization: Bearer {TOKEN}");
    assert_eq!(request(&broker, "POST", "/", &[&bearer]).status, 405);
    assert_eq!(request(&broker, "POST", "/dashboard/app.js", &[&bearer]).status, 405);
}

#[test]
fn beyond_loopback_the_files_need_no_token_but_the_page_s_reads_do() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), true);
    let bearer = format!("Authorization: Bearer {TOKEN}");
    for path in ["/", "/dashboard", "/dashboard/app.js", "/dashboard/style.css"] {
        assert_eq!(get(&broker, path, &[]).status, 200, "{path}");
    }
    for path in ["/status", "/metrics", "/dlq/page?limit=100"] {
        let refused = get(&broker, path, &[]);
        assert_eq!(refused.status, 401, "{path}: {}", refused.body);
        assert_eq!(refused.header("www-authenticate"), Some("bearer"), "{path}");
        assert_eq!(get(&broker, path, &[&bearer]).status, 200, "{path}");
    }
    // The page's POSTs carry its own origin and pass; another page's do not,
    // token or not; nor does a name that is not this endpoint's (DNS rebinding).
    let own = format!("Origin: http://{}", broker.admin);
    assert_eq!(request(&broker, "POST", "/dlq/retry?all=1", &[&bearer, &own]).status, 200);
    let other = request(&broker, "POST", "/dlq/retry?all=1", &[&bearer, "Origin: http://evil.example"]);
    assert_eq!(other.status, 403, "{}", other.body);
    assert_eq!(get(&broker, "/", &["Host: evil.example"]).status, 403);
}
